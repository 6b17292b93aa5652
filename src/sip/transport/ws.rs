//! SIP over WebSocket and secure WebSocket (RFC 7118): one SIP message per WebSocket message,
//! subprotocol `sip`. This is what WebRTC softphones (JsSIP, SIP.js) register over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tracing::Instrument;

use crate::sip::location::{Flow, Transport};
use crate::sip::transport::next_connection_id;
use crate::sip::transport::stream::StreamContext;

/// Accepts WS (or, with `tls`, WSS) connections until shutdown.
pub async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, ctx: StreamContext) {
    let transport = if tls.is_some() {
        Transport::Wss
    } else {
        Transport::Ws
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
                    None => connection(sock, transport, peer, local, &ctx).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(ctx.idle_timeout, acceptor.accept(sock)).await {
                            Ok(Ok(stream)) => {
                                connection(stream, transport, peer, local, &ctx).await
                            }
                            _ => ctx
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

/// Checks the upgrade request offers the `sip` subprotocol and echoes it (RFC 7118 §4.1).
#[allow(clippy::result_large_err)] // the signature is tungstenite's callback type
fn negotiate(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offers_sip = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("sip"));
    if !offers_sip {
        let mut err = ErrorResponse::new(Some(
            "the 'sip' WebSocket subprotocol is required (RFC 7118)".into(),
        ));
        *err.status_mut() = StatusCode::BAD_REQUEST;
        return Err(err);
    }
    resp.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
    Ok(resp)
}

async fn connection<S>(
    stream: S,
    transport: Transport,
    peer: SocketAddr,
    local: SocketAddr,
    ctx: &StreamContext,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // tungstenite's defaults (64 MiB messages) would let one client pin that much memory.
    let config = WebSocketConfig {
        max_message_size: Some(ctx.limits.max_message_bytes),
        max_frame_size: Some(ctx.limits.max_message_bytes),
        max_write_buffer_size: 4 * ctx.limits.max_message_bytes,
        ..Default::default()
    };
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, negotiate, Some(config));
    let mut ws = match tokio::time::timeout(ctx.idle_timeout, handshake).await {
        Ok(Ok(ws)) => ws,
        _ => {
            ctx.server
                .metrics
                .sip_connections_refused
                .with_label_values(&["ws_handshake"])
                .inc();
            return;
        }
    };
    let conn = next_connection_id();
    let flow = Flow {
        transport,
        source: peer,
        local,
        connection: Some(conn),
    };
    loop {
        let next = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = tokio::time::timeout(ctx.idle_timeout, ws.next()) => r,
        };
        let msg = match next {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => {
                // Oversized frames and protocol violations end up here.
                tracing::debug!(error = %e, "websocket error");
                ctx.server
                    .metrics
                    .sip_connections_refused
                    .with_label_values(&["framing"])
                    .inc();
                break;
            }
            Ok(None) => break,
            Err(_) => {
                ctx.server
                    .metrics
                    .sip_connections_refused
                    .with_label_values(&["idle"])
                    .inc();
                break;
            }
        };
        let payload = match msg {
            Message::Text(t) => t.into_bytes(),
            Message::Binary(b) => b,
            Message::Close(_) => break,
            // tungstenite queues the pong itself; it goes out with the next write or flush.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                if ws.flush().await.is_err() {
                    break;
                }
                continue;
            }
        };
        // A CRLF keep-alive inside a WebSocket message carries no SIP.
        if payload.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            continue;
        }
        if let Some((reply, _)) = ctx.server.handle(&payload, &flow) {
            let out = match String::from_utf8(reply) {
                Ok(text) => Message::Text(text),
                Err(e) => Message::Binary(e.into_bytes()),
            };
            if ws.send(out).await.is_err() {
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    ctx.server.connection_closed(conn);
}
