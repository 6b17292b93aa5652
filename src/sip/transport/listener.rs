//! The accept loop shared by every stream listener (TCP, TLS, WS, WSS): connection limit,
//! TLS handshake with a deadline, per-connection span and gauge; then the framing-specific
//! connection handler takes over.

use std::net::SocketAddr;
use std::sync::Arc;
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

/// What every stream listener needs besides its socket.
#[derive(Clone)]
pub struct StreamContext {
    pub server: Arc<SipServer>,
    pub limits: Limits,
    pub connections: Arc<Semaphore>,
    pub idle_timeout: Duration,
    pub shutdown: CancellationToken,
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
        let Ok(permit) = Arc::clone(&ctx.connections).try_acquire_owned() else {
            ctx.server
                .metrics
                .sip_connections_refused
                .with_label_values(&["limit"])
                .inc();
            continue;
        };
        let _ = sock.set_nodelay(true);
        let ctx = ctx.clone();
        let tls = tls.clone();
        let span = tracing::debug_span!("sip_conn", %peer, transport = transport.as_str());
        tokio::spawn(
            async move {
                let _permit = permit;
                let gauge = ctx
                    .server
                    .metrics
                    .sip_connections_active
                    .with_label_values(&[transport.as_str()]);
                gauge.inc();
                match tls {
                    None => handle(sock, framing, transport, peer, local, &ctx).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(ctx.idle_timeout, acceptor.accept(sock)).await {
                            Ok(Ok(stream)) => {
                                handle(stream, framing, transport, peer, local, &ctx).await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                ctx.server
                                    .metrics
                                    .sip_connections_refused
                                    .with_label_values(&["tls_handshake"])
                                    .inc();
                            }
                            Err(_) => ctx
                                .server
                                .metrics
                                .sip_connections_refused
                                .with_label_values(&["tls_handshake"])
                                .inc(),
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
