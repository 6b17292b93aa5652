//! SIP over TCP and TLS: `Content-Length` framing over a byte stream (RFC 3261 §18.3) and
//! RFC 5626 CRLF keep-alives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::sip::framing::{Frame, FrameScanner};
use crate::sip::location::{Flow, Transport};
use crate::sip::message::Limits;
use crate::sip::server::SipServer;
use crate::sip::transport::next_connection_id;

/// What every stream listener needs besides its socket.
#[derive(Clone)]
pub struct StreamContext {
    pub server: Arc<SipServer>,
    pub limits: Limits,
    pub connections: Arc<Semaphore>,
    pub idle_timeout: Duration,
    pub shutdown: CancellationToken,
}

/// Accepts TCP (or, with `tls`, TLS) connections until shutdown.
pub async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, ctx: StreamContext) {
    let transport = if tls.is_some() {
        Transport::Tls
    } else {
        Transport::Tcp
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
            drop(sock);
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
                    None => connection(sock, transport, peer, local, &ctx).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(ctx.idle_timeout, acceptor.accept(sock)).await {
                            Ok(Ok(stream)) => {
                                connection(stream, transport, peer, local, &ctx).await
                            }
                            Ok(Err(e)) => {
                                ctx.server
                                    .metrics
                                    .sip_connections_refused
                                    .with_label_values(&["tls_handshake"])
                                    .inc();
                                tracing::debug!(error = %e, %peer, "TLS handshake failed");
                            }
                            Err(_) => {
                                ctx.server
                                    .metrics
                                    .sip_connections_refused
                                    .with_label_values(&["tls_handshake"])
                                    .inc();
                            }
                        }
                    }
                }
                gauge.dec();
            }
            .instrument(span),
        );
    }
}

/// Serves one connection until EOF, error, idle timeout, a framing violation or shutdown.
pub async fn connection<S>(
    mut stream: S,
    transport: Transport,
    peer: SocketAddr,
    local: SocketAddr,
    ctx: &StreamContext,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn = next_connection_id();
    let flow = Flow {
        transport,
        source: peer,
        local,
        connection: Some(conn),
    };
    let mut buf = BytesMut::with_capacity(4096);
    // Resumable framing: a peer trickling one byte at a time costs linear, not quadratic, work.
    let mut scanner = FrameScanner::new();
    'conn: loop {
        // Drain every complete frame already buffered before reading more.
        loop {
            match scanner.next_frame(&buf, &ctx.limits) {
                Ok(None) => break,
                Ok(Some(Frame::KeepAlivePing)) => {
                    buf.advance(Frame::KeepAlivePing.wire_len());
                    // RFC 5626 §4.4.1: a double-CRLF ping is answered with a single CRLF pong.
                    if stream.write_all(b"\r\n").await.is_err() {
                        break 'conn;
                    }
                }
                Ok(Some(Frame::KeepAlivePong)) => buf.advance(Frame::KeepAlivePong.wire_len()),
                Ok(Some(Frame::Message(len))) => {
                    let msg = buf.split_to(len);
                    if let Some((reply, _)) = ctx.server.handle(&msg, &flow) {
                        if stream.write_all(&reply).await.is_err() {
                            break 'conn;
                        }
                    }
                }
                Err(e) => {
                    // The stream cannot be resynchronised after a framing error: close it.
                    tracing::debug!(error = %e, "closing stream after framing error");
                    ctx.server
                        .metrics
                        .sip_connections_refused
                        .with_label_values(&["framing"])
                        .inc();
                    break 'conn;
                }
            }
        }
        if buf.len() > ctx.limits.max_message_bytes {
            ctx.server
                .metrics
                .sip_connections_refused
                .with_label_values(&["framing"])
                .inc();
            break;
        }
        buf.reserve(4096);
        let read = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = tokio::time::timeout(ctx.idle_timeout, stream.read_buf(&mut buf)) => r,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => {
                ctx.server
                    .metrics
                    .sip_connections_refused
                    .with_label_values(&["idle"])
                    .inc();
                break;
            }
        }
    }
    let _ = stream.shutdown().await;
    ctx.server.connection_closed(conn);
}
