//! Transport shells: they move bytes between sockets and the [`SipServer`], nothing more.
//!
//! UDP datagrams are one message each; TCP and TLS are framed by `Content-Length`
//! ([`crate::sip::framing`]); WebSocket carries one message per frame (RFC 7118). Every stream
//! connection holds a permit from one shared semaphore, so the connection count is bounded.

pub mod listener;
pub mod stream;
pub mod tls;
pub mod udp;
pub mod ws;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::sip::location::ConnectionId;

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// A process-unique id for a new stream connection.
pub fn next_connection_id() -> ConnectionId {
    ConnectionId(NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed))
}
