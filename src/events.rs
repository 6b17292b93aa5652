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

/// Which way a call goes, seen from the contact center.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallDirection {
    /// A customer called in (ACD, IVR transfer, direct dial to an extension).
    Inbound,
    /// The agent or the dialer called out.
    Outbound,
}

/// What happened to an agent's leg of a call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum CallPhase {
    /// The agent's phone rings (or, for a call the agent dials, the call is being set up).
    Ringing,
    /// The agent's leg is answered and bridged to the other party.
    Answered,
    /// The agent put the call on hold.
    Held,
    /// The agent took the call off hold.
    Resumed,
    /// The agent's leg is gone.
    Ended {
        /// Q.850 cause of the hang-up (16 normal clearing), when known.
        q850: Option<u16>,
        /// Whether the agent's side hung up first, when known.
        agent_hung_up: Option<bool>,
    },
}

/// A softswitch call event concerning one agent extension, normalized from whatever adapter saw
/// it (the FreeSWITCH ESL client, mod_json_cdr, the dialer). Presence turns these into
/// ringing, talking, hold and after-call work.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallEvent {
    /// The softswitch's identifier of the call (FreeSWITCH: the agent leg's call UUID).
    pub call_id: crate::agents::state::CallId,
    /// The agent's extension number (the user part of its AoR).
    pub extension: String,
    pub direction: CallDirection,
    pub phase: CallPhase,
    /// The other party's number (caller for inbound, callee for outbound), when known.
    pub remote_number: Option<String>,
    /// The outbound task (seed 004 `callTaskCode`) the call belongs to, if any.
    pub task_code: Option<String>,
    /// When it happened (Unix ms).
    pub at_ms: u64,
}
