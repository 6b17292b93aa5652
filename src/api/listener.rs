//! The HTTP accept loop's connection cap (`http.max_connections`): a listener that takes a
//! semaphore permit before each accept and hands it to the connection, so the permit returns
//! when the connection closes. At the cap, new connections wait in the kernel's backlog instead
//! of consuming file descriptors and memory.
//!
//! Two things keep the cap from being a lock-out:
//! - a connection that sends nothing for `http.idle_timeout_secs` is closed (hyper's own
//!   header timeout needs a timer `axum::serve` does not install), so idle or trickling sockets
//!   cannot sit on every permit;
//! - a connection upgraded to the event stream gives its permit back and is exempt from the
//!   idle rule (the stream has its own cap, `management.max_stream_connections`, and its own
//!   liveness: STOMP heart-beats), so connected agent desktops never starve the API and
//!   `/metrics`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle: Duration,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, max_connections: usize, idle: Duration) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max_connections)),
            idle,
        }
    }
}

/// What a connection's handlers may change about it.
#[derive(Debug, Default)]
pub struct ConnState {
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    long_lived: AtomicBool,
}

impl ConnState {
    /// The connection became an event stream: release its HTTP permit and lift the idle rule.
    pub fn became_stream(&self) {
        self.long_lived.store(true, Ordering::Release);
        self.permit.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// A connection, the permit it holds and its idle deadline.
pub struct LimitedStream {
    stream: TcpStream,
    conn: Arc<ConnState>,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = loop {
            if let Ok(p) = Arc::clone(&self.permits).acquire_owned().await {
                break p;
            }
        };
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    // Small JSON answers must not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    let conn = Arc::new(ConnState {
                        permit: Mutex::new(Some(permit)),
                        long_lived: AtomicBool::new(false),
                    });
                    return (
                        LimitedStream {
                            stream,
                            conn,
                            idle: self.idle,
                            deadline: Box::pin(tokio::time::sleep(self.idle)),
                        },
                        addr,
                    );
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// The client's address and its connection, as handlers see them through `ConnectInfo<Peer>`.
#[derive(Debug, Clone)]
pub struct Peer(pub SocketAddr, pub Arc<ConnState>);

impl Connected<IncomingStream<'_, LimitedListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, LimitedListener>) -> Self {
        Peer(*stream.remote_addr(), Arc::clone(&stream.io().conn))
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    let next = Instant::now() + self.idle;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if !self.conn.long_lived.load(Ordering::Acquire)
                    && self.deadline.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "http connection idle",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
