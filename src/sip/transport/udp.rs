//! SIP over UDP: one datagram in, at most one datagram out.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::sip::location::{Flow, Transport};
use crate::sip::server::SipServer;

/// Binds a UDP socket with large kernel buffers. A registration storm after an outage arrives
/// in bursts; the default buffer (about 200 KiB) overflows and every dropped REGISTER costs the
/// phone a 500 ms retransmission. The kernel caps the request at `net.core.rmem_max`; the
/// effective size is logged.
pub fn bind(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if buffer_bytes > 0 {
        // Best effort: a smaller buffer is a performance matter, not a reason to refuse to run.
        let _ = sock.set_recv_buffer_size(buffer_bytes);
        let _ = sock.set_send_buffer_size(buffer_bytes);
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    tracing::debug!(
        %addr,
        recv_buffer = sock.recv_buffer_size().unwrap_or(0),
        send_buffer = sock.send_buffer_size().unwrap_or(0),
        "udp socket bound"
    );
    UdpSocket::from_std(sock.into())
}

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
