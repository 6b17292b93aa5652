//! Typed domain events through which modules talk to each other.

use std::net::SocketAddr;

use crate::sip::location::Transport;

/// Why a binding appeared, changed or went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationChange {
    Added,
    Refreshed,
    /// The phone removed it (Expires: 0 or `Contact: *`).
    Unregistered,
    Expired,
    /// The TCP/TLS/WS connection that carried it closed (RFC 5626 flow failure).
    ConnectionClosed,
    /// A newer REGISTER with the same +sip.instance and reg-id took its place (RFC 5626 §6).
    Replaced,
    /// The contact stopped answering OPTIONS.
    QualifyFailed,
    /// Removed by an operator or because the extension was disabled.
    Administrative,
}

impl RegistrationChange {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Refreshed => "refreshed",
            Self::Unregistered => "unregistered",
            Self::Expired => "expired",
            Self::ConnectionClosed => "connection_closed",
            Self::Replaced => "replaced",
            Self::QualifyFailed => "qualify_failed",
            Self::Administrative => "administrative",
        }
    }
}

/// Emitted by the registrar on every binding change; presence turns it into "extension online".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationChanged {
    /// The address-of-record's user part: the extension number.
    pub aor: String,
    pub contact: String,
    pub change: RegistrationChange,
    /// Whether the AoR still has at least one binding after this change.
    pub online: bool,
    pub transport: Transport,
    pub source: SocketAddr,
    /// Expiry (Unix seconds) after the change; 0 when removed.
    pub expires_at: u64,
    pub user_agent: Option<String>,
}
