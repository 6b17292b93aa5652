//! SIP over UDP: one datagram in, at most one datagram out.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::sip::location::{Flow, Transport};
use crate::sip::server::SipServer;

/// Receives on `socket` until shutdown. Several of these may share one socket.
pub async fn serve(
    socket: Arc<UdpSocket>,
    server: Arc<SipServer>,
    max_message: usize,
    shutdown: CancellationToken,
) {
    let local = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    // One byte more than the limit tells an oversized datagram from one exactly at it.
    let mut buf = vec![0u8; max_message + 1];
    loop {
        let (len, source) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP port-unreachable from an earlier send surfaces here on Linux; it says
                // nothing about this socket's health.
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive error");
                    continue;
                }
            },
        };
        if len == 0 || len > max_message {
            server
                .metrics
                .sip_dropped
                .with_label_values(&["oversized"])
                .inc();
            continue;
        }
        let bytes = &buf[..len];
        // RFC 5626 §3.5.1 keep-alives over UDP are STUN; a bare CRLF is what many phones send
        // instead. Neither needs an answer from a registrar that is not an edge proxy.
        if bytes.iter().all(|b| matches!(b, b'\r' | b'\n' | 0)) {
            continue;
        }
        let flow = Flow {
            transport: Transport::Udp,
            source,
            local,
            connection: None,
        };
        if let Some((reply, to)) = server.handle(bytes, &flow) {
            if let Err(e) = socket.send_to(&reply, to).await {
                tracing::debug!(error = %e, to = %to, "udp send failed");
            }
        }
    }
}
