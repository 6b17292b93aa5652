//! SIP over TCP and TLS: `Content-Length` framing over a byte stream (RFC 3261 §18.3) and
//! RFC 5626 CRLF keep-alives.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::sip::framing::{Frame, FrameScanner};
use crate::sip::location::{Flow, Transport};
use crate::sip::transport::listener::{StreamContext, WRITE_TIMEOUT};
use crate::sip::transport::next_connection_id;

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
                    if !write(&mut stream, b"\r\n").await {
                        break 'conn;
                    }
                }
                Ok(Some(Frame::KeepAlivePong)) => buf.advance(Frame::KeepAlivePong.wire_len()),
                Ok(Some(Frame::Message(len))) => {
                    let msg = buf.split_to(len);
                    if let Some((reply, _)) = ctx.server.handle(&msg, &flow) {
                        if !write(&mut stream, &reply).await {
                            break 'conn;
                        }
                    }
                }
                Err(e) => {
                    // The stream cannot be resynchronised after a framing error: close it.
                    tracing::debug!(error = %e, "closing stream after framing error");
                    ctx.refused("framing");
                    break 'conn;
                }
            }
        }
        if buf.len() > ctx.limits.max_message_bytes {
            ctx.refused("framing");
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
            // Silence is fine while a binding lives on this flow: the phone may rely on the
            // registration alone, and closing would silently unregister it.
            Err(_) if ctx.server.connection_in_use(conn) => {}
            Err(_) => {
                ctx.refused("idle");
                break;
            }
        }
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.shutdown()).await;
    ctx.server.connection_closed(conn);
}

/// Writes everything or gives up after [`WRITE_TIMEOUT`]; false means drop the connection.
async fn write<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(bytes)).await,
        Ok(Ok(()))
    )
}
