//! The accept loop shared by every stream listener (TCP, TLS, WS, WSS): connection limit,
//! TLS handshake with a deadline, per-connection span and gauge; then the framing-specific
//! connection handler takes over.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::sip::location::Transport;
use crate::sip::message::Limits;
use crate::sip::server::SipServer;
use crate::sip::transport::{stream, ws};

/// A write (or close) that cannot complete within this long means the peer stopped reading;
/// the connection is dropped rather than left holding its slot forever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every stream listener needs besides its socket.
#[derive(Clone)]
pub struct StreamContext {
    pub server: Arc<SipServer>,
    pub limits: Limits,
    /// Bound on all stream connections together.
    pub connections: Arc<Semaphore>,
    /// Open connections per source IP, so one host cannot take every slot.
    pub per_ip: Arc<Mutex<HashMap<IpAddr, u32>>>,
    pub max_per_ip: u32,
    /// A connection carrying no binding that stays silent this long is closed; one that
    /// carries a binding is kept for as long as the binding lives.
    pub idle_timeout: Duration,
    /// Deadline for the TLS and WebSocket handshakes.
    pub handshake_timeout: Duration,
    pub shutdown: CancellationToken,
}

impl StreamContext {
    /// Counts a connection refused or closed for cause.
    pub fn refused(&self, reason: &str) {
        self.server
            .metrics
            .sip_connections_refused
            .with_label_values(&[reason])
            .inc();
    }
}

/// Holds one per-IP slot for the life of a connection.
struct IpSlot {
    table: Arc<Mutex<HashMap<IpAddr, u32>>>,
    ip: IpAddr,
}

impl IpSlot {
    fn take(ctx: &StreamContext, ip: IpAddr) -> Option<IpSlot> {
        let mut t = ctx.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = t.entry(ip).or_insert(0);
        if *n >= ctx.max_per_ip {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: Arc::clone(&ctx.per_ip),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

/// How SIP messages are delimited on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// RFC 3261 §18.3: Content-Length over a byte stream (TCP, TLS).
    ContentLength,
    /// RFC 7118: one SIP message per WebSocket message (WS, WSS).
    WebSocket,
}

/// Accepts connections until shutdown; with `tls`, each is a TLS session first.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    framing: Framing,
    ctx: StreamContext,
) {
    let transport = match (framing, tls.is_some()) {
        (Framing::ContentLength, false) => Transport::Tcp,
        (Framing::ContentLength, true) => Transport::Tls,
        (Framing::WebSocket, false) => Transport::Ws,
        (Framing::WebSocket, true) => Transport::Wss,
    };
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    loop {
        let (sock, peer) = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = IpSlot::take(&ctx, peer.ip()) else {
            ctx.refused("per_ip_limit");
            continue;
        };
        let Ok(permit) = Arc::clone(&ctx.connections).try_acquire_owned() else {
            ctx.refused("limit");
            continue;
        };
        let _ = sock.set_nodelay(true);
        let ctx = ctx.clone();
        let tls = tls.clone();
        let span = tracing::debug_span!("sip_conn", %peer, transport = transport.as_str());
        tokio::spawn(
            async move {
                let _permit = permit;
                let _slot = slot;
                let gauge = ctx
                    .server
                    .metrics
                    .sip_connections_active
                    .with_label_values(&[transport.as_str()]);
                gauge.inc();
                match tls {
                    None => handle(sock, framing, transport, peer, local, &ctx).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(ctx.handshake_timeout, acceptor.accept(sock))
                            .await
                        {
                            Ok(Ok(stream)) => {
                                handle(stream, framing, transport, peer, local, &ctx).await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                ctx.refused("tls_handshake");
                            }
                            Err(_) => ctx.refused("tls_handshake"),
                        }
                    }
                }
                gauge.dec();
            }
            .instrument(span),
        );
    }
}

async fn handle<S>(
    io: S,
    framing: Framing,
    transport: Transport,
    peer: SocketAddr,
    local: SocketAddr,
    ctx: &StreamContext,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match framing {
        Framing::ContentLength => stream::connection(io, transport, peer, local, ctx).await,
        Framing::WebSocket => ws::connection(io, transport, peer, local, ctx).await,
    }
}
