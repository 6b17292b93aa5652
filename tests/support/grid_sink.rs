//! A stand-in for the grid platform's push receivers: a real HTTP/1.1 server on an ephemeral
//! loopback port (std only, one thread per connection, keep-alive), recording the method,
//! path, headers and body of every request in arrival order.
//!
//! * [`Mode::Answer`] answers each request `200` with the contract's envelope
//!   `{"code":"200","msg":"ok"}` (seed 000: every push returns `code` "200" on success).
//! * [`Mode::Silent`] reads the request, records it (`answered: false`) and never answers:
//!   the TCP connection stays open until the client gives up. Switching back to `Answer`
//!   makes the next request on any connection get its answer.
//!
//! Every wait is a poll with a deadline. Dropping the sink stops it.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The envelope a successful push gets.
pub const OK_BODY: &str = r#"{"code":"200","msg":"ok"}"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Answer,
    Silent,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target as sent (path and query).
    pub path: String,
    /// Header names lower-cased, values trimmed, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body parsed as JSON, when it is JSON.
    pub json: Option<Value>,
    /// Whether the sink answered it (false in [`Mode::Silent`]).
    pub answered: bool,
    /// Which TCP connection carried it (counted from 1).
    pub conn: u64,
    pub at: Instant,
}

impl Request {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The JSON body; panics (naming the request) when the body is not JSON.
    pub fn body_json(&self) -> &Value {
        self.json.as_ref().unwrap_or_else(|| {
            panic!(
                "{} {}: body is not JSON: {:?}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A string field of the JSON body.
    pub fn str_field(&self, key: &str) -> Option<&str> {
        self.json
            .as_ref()
            .and_then(|v| v.get(key))
            .and_then(Value::as_str)
    }
}

struct Shared {
    requests: Mutex<Vec<Request>>,
    mode: AtomicU8,
    stop: AtomicBool,
    conns: AtomicU64,
    streams: Mutex<Vec<TcpStream>>,
}

pub struct GridSink {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl GridSink {
    /// Starts a sink answering every request.
    pub fn start() -> GridSink {
        Self::start_in(Mode::Answer)
    }

    pub fn start_in(mode: Mode) -> GridSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the grid sink");
        let addr = listener.local_addr().expect("sink address");
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            mode: AtomicU8::new(mode as u8),
            stop: AtomicBool::new(false),
            conns: AtomicU64::new(0),
            streams: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name("grid-sink-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if s.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let id = s.conns.fetch_add(1, Ordering::SeqCst) + 1;
                    if let Ok(c) = stream.try_clone() {
                        s.streams.lock().unwrap().push(c);
                    }
                    let s2 = Arc::clone(&s);
                    let _ = std::thread::Builder::new()
                        .name(format!("grid-sink-conn-{id}"))
                        .spawn(move || serve(stream, id, &s2));
                }
            })
            .expect("spawn the sink's accept thread");
        GridSink {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:<port>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{}", self.addr, name.trim_start_matches('/'))
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.conns.load(Ordering::SeqCst)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The requests whose path is `/<name>` (query ignored).
    pub fn to(&self, name: &str) -> Vec<Request> {
        let want = format!("/{}", name.trim_start_matches('/'));
        self.requests()
            .into_iter()
            .filter(|r| r.path.split('?').next() == Some(want.as_str()))
            .collect()
    }

    /// Polls until `f` over the requests to `/<name>` returns `Some`, or `timeout` passes.
    pub fn wait_for<T>(
        &self,
        name: &str,
        timeout: Duration,
        mut f: impl FnMut(&[Request]) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f(&self.to(name)) {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until at least `n` requests to `/<name>` arrived; returns them all.
    pub fn wait_count(&self, name: &str, n: usize, timeout: Duration) -> Option<Vec<Request>> {
        self.wait_for(name, timeout, |r| (r.len() >= n).then(|| r.to_vec()))
    }

    /// A readable digest of what arrived, for failure messages.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for r in self.requests() {
            s.push_str(&format!(
                "#{} {} {} answered={} {}\n",
                r.conn,
                r.method,
                r.path,
                r.answered,
                String::from_utf8_lossy(&r.body)
            ));
        }
        s
    }
}

impl Drop for GridSink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in self.shared.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One parsed request head and the total length of head + body, if complete in `buf`.
fn parse_request(buf: &[u8]) -> io::Result<Option<(Request, usize)>> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too long"));
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or("");
    let mut parts = start.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for line in lines {
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let body_start = head_end + 4;
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let (body, total) = if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        // Chunked: decode chunk by chunk until the zero chunk and the final CRLF.
        let mut pos = body_start;
        let mut body = Vec::new();
        loop {
            let Some(eol) = find(&buf[pos..], b"\r\n") else {
                return Ok(None);
            };
            let size_text = String::from_utf8_lossy(&buf[pos..pos + eol]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            pos += eol + 2;
            if size == 0 {
                // Trailers end with an empty line.
                let Some(end) = find(&buf[pos..], b"\r\n") else {
                    return Ok(None);
                };
                if end == 0 {
                    break (body, pos + 2);
                }
                let Some(t_end) = find(&buf[pos..], b"\r\n\r\n") else {
                    return Ok(None);
                };
                break (body, pos + t_end + 4);
            }
            if buf.len() < pos + size + 2 {
                return Ok(None);
            }
            body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
        }
    } else {
        let len: usize = get("content-length")
            .map(|v| v.parse())
            .transpose()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?
            .unwrap_or(0);
        if buf.len() < body_start + len {
            return Ok(None);
        }
        (buf[body_start..body_start + len].to_vec(), body_start + len)
    };
    let json = serde_json::from_slice(&body).ok();
    Ok(Some((
        Request {
            method,
            path,
            headers,
            body,
            json,
            answered: false,
            conn: 0,
            at: Instant::now(),
        },
        total,
    )))
}

fn serve(mut stream: TcpStream, id: u64, s: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    // Once silent on a request, the connection stays silent: the client's answer slot for
    // that request is gone.
    let mut silenced = false;
    loop {
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        match parse_request(&buf) {
            Err(_) => {
                let _ = stream.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return;
            }
            Ok(Some((mut req, used))) => {
                buf.drain(..used);
                req.conn = id;
                let answer = !silenced && s.mode.load(Ordering::SeqCst) == Mode::Answer as u8;
                req.answered = answer;
                let close = req
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                s.requests.lock().unwrap().push(req);
                if answer {
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json;charset=UTF-8\r\n\
                         Content-Length: {}\r\n\r\n{OK_BODY}",
                        OK_BODY.len()
                    );
                    if stream.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                    if close {
                        let _ = stream.shutdown(Shutdown::Write);
                        return;
                    }
                } else {
                    silenced = true;
                }
                continue;
            }
            Ok(None) => {}
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::TimedOut
                    || e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
