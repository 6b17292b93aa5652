//! SIP over WebSocket and secure WebSocket (RFC 7118): one SIP message per WebSocket message,
//! subprotocol `sip`. This is what WebRTC softphones (JsSIP, SIP.js) register over.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::sip::location::{Flow, Transport};
use crate::sip::transport::listener::{StreamContext, WRITE_TIMEOUT};
use crate::sip::transport::next_connection_id;

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

pub async fn connection<S>(
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
    let mut ws = match tokio::time::timeout(ctx.handshake_timeout, handshake).await {
        Ok(Ok(ws)) => ws,
        _ => {
            ctx.refused("ws_handshake");
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
                ctx.refused("framing");
                break;
            }
            Ok(None) => break,
            // A binding on this flow keeps it open however quiet it is.
            Err(_) if ctx.server.connection_in_use(conn) => continue,
            Err(_) => {
                ctx.refused("idle");
                break;
            }
        };
        let payload = match msg {
            Message::Text(t) => t.into_bytes(),
            Message::Binary(b) => b,
            Message::Close(_) => break,
            // tungstenite queues the pong itself; it goes out with the next write or flush.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                if !matches!(
                    tokio::time::timeout(WRITE_TIMEOUT, ws.flush()).await,
                    Ok(Ok(()))
                ) {
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
            if !matches!(
                tokio::time::timeout(WRITE_TIMEOUT, ws.send(out)).await,
                Ok(Ok(()))
            ) {
                break;
            }
        }
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.close(None)).await;
    ctx.server.connection_closed(conn);
}
