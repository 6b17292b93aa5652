//! A scripted HTTP/1.1 sink standing in for the grid platform, plus the CDR documents the
//! outbox tests post (`#[path]`-included by `e2e_outbox.rs` and `crash_outbox.rs`; std only,
//! no HTTP crate).
//!
//! * [`Sink`] listens on an ephemeral loopback port, speaks HTTP/1.1 with keep-alive (one
//!   thread per connection, requests parsed by hand: `Content-Length` or chunked bodies), and
//!   records every request: arrival time, connection, method, target, headers, body, parsed
//!   JSON, what it answered and when the answer was written.
//! * What it answers is scripted: a per-key queue of [`Answer`]s (consumed first), then a
//!   script closure that sees the request and how many earlier requests carried the same
//!   idempotency key (so "500 twice, then 200" is one line). Answers: 200 with `code` "200" or
//!   200, any status with a body and an optional `Retry-After`, a 2xx with another envelope
//!   `code`, hanging without answering, answering 200 only after a delay (past the client's
//!   timeout: the sink accepts, the client never hears it, so the same key comes again and is
//!   answered 200 again), and resetting the connection (RST).
//! * [`Sink::stop`] closes the port and every open connection; [`Sink::restart`] listens on
//!   the same port again (the log is kept across restarts). Accepted connections are counted
//!   with their time, so a test can bound how hard a client hit the port.
//! * [`CallDoc`] builds mod_json_cdr documents (the layout of the real ones in
//!   `tests/fixtures/freeswitch/`) for a one-leg inbound call with a unique caller number,
//!   optionally queued (mod_callcenter variables), which the daemon turns into one record
//!   (IVR) or two (IVR, then queue).
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

// ------------------------------------------------------------------------------------------
// Answers
// ------------------------------------------------------------------------------------------

/// What the sink does with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 200 `{"code":"200","msg":"ok"}`.
    Ok,
    /// 200 `{"code":200,"msg":"ok"}` (the envelope code as a number).
    OkIntCode,
    /// Any status with a body (sent as `application/json` when it parses as JSON, else
    /// `text/plain`) and an optional `Retry-After` value.
    Status {
        status: u16,
        body: String,
        retry_after: Option<String>,
    },
    /// Reads the request and answers nothing for this long, then closes the connection.
    Hang(Duration),
    /// Answers 200 `{"code":"200"}` only after this delay (the sink accepts the record even
    /// if the client gave up waiting).
    SlowOk(Duration),
    /// Reads the request, then resets the connection (RST, no answer).
    Reset,
}

impl Answer {
    /// A status with a small JSON body naming it.
    pub fn status(status: u16) -> Answer {
        Answer::Status {
            status,
            body: format!("{{\"code\":\"{status}\",\"msg\":\"scripted {status}\"}}"),
            retry_after: None,
        }
    }

    /// A status with `Retry-After: <secs>`.
    pub fn retry_after(status: u16, secs: u64) -> Answer {
        Answer::Status {
            status,
            body: format!("{{\"code\":\"{status}\",\"msg\":\"scripted {status}\"}}"),
            retry_after: Some(secs.to_string()),
        }
    }

    /// A status with this exact body.
    pub fn with_body(status: u16, body: &str) -> Answer {
        Answer::Status {
            status,
            body: body.to_string(),
            retry_after: None,
        }
    }

    /// HTTP 200 whose envelope `code` is `code` (a string, as the contract types it).
    pub fn envelope(code: &str) -> Answer {
        Answer::Status {
            status: 200,
            body: format!("{{\"code\":\"{code}\",\"msg\":\"scripted envelope {code}\"}}"),
            retry_after: None,
        }
    }

    /// Whether the contract calls this answer a delivery (2xx with envelope code 200).
    pub fn is_success(&self) -> bool {
        match self {
            Answer::Ok | Answer::OkIntCode | Answer::SlowOk(_) => true,
            Answer::Status { status, body, .. } => {
                (200..300).contains(status)
                    && serde_json::from_str::<Value>(body)
                        .ok()
                        .is_some_and(|v| v["code"] == json!("200") || v["code"] == json!(200))
            }
            Answer::Hang(_) | Answer::Reset => false,
        }
    }
}

/// The script: `(request, earlier requests with the same idempotency key) -> answer`.
pub type Script = Arc<dyn Fn(&Request, usize) -> Answer + Send + Sync>;

// ------------------------------------------------------------------------------------------
// Requests
// ------------------------------------------------------------------------------------------

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Request {
    /// Position in the sink's log (0-based, across restarts).
    pub seq: usize,
    /// Which accepted connection carried it (0-based, across restarts).
    pub conn: usize,
    /// Requests that came before this one on the same connection (keep-alive reuse).
    pub nth_on_conn: usize,
    pub arrived: Instant,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub json: Option<Value>,
    /// What the sink was scripted to do (set once decided).
    pub answer: Option<Answer>,
    /// When the answer was completely written (None: no answer, or the write failed).
    pub answered: Option<Instant>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Idempotency-Key` header ("" when absent).
    pub fn key(&self) -> &str {
        self.header("idempotency-key").unwrap_or("")
    }

    /// A string field of the JSON body ("" when absent or not a string).
    pub fn field(&self, name: &str) -> &str {
        self.json
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// Whether the sink accepted it: a success was scripted and its answer is out (for a
    /// delayed 200, once the delay is over, whether or not the client still listened).
    pub fn accepted(&self) -> bool {
        match &self.answer {
            Some(a) => a.is_success() && self.answered.is_some(),
            None => false,
        }
    }

    /// Whether the sink is done with it (answered, or hung up / reset as scripted).
    pub fn finished(&self) -> bool {
        self.answered.is_some()
            || matches!(self.answer, Some(Answer::Hang(_)) | Some(Answer::Reset))
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A one-line description for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "#{} conn {} key {:?} USERNUMBER {:?} callId {:?} answer {:?} answered {}",
            self.seq,
            self.conn,
            self.key(),
            self.field("USERNUMBER"),
            self.field("callId"),
            self.answer,
            self.answered.is_some()
        )
    }
}

// ------------------------------------------------------------------------------------------
// The sink
// ------------------------------------------------------------------------------------------

struct Shared {
    log: Mutex<Vec<Request>>,
    script: Mutex<Script>,
    per_key: Mutex<HashMap<String, VecDeque<Answer>>>,
    /// Accept time of every connection, in order.
    conns: Mutex<Vec<Instant>>,
    /// Open connections (clones), shut down on stop; a connection removes itself when done.
    open: Mutex<HashMap<usize, TcpStream>>,
    next_conn: AtomicUsize,
    /// Bumped by every stop, so connection threads of an earlier run give up.
    epoch: AtomicU64,
}

struct Running {
    stop: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

/// A scripted HTTP/1.1 server on 127.0.0.1 (see the module docs).
pub struct Sink {
    shared: Arc<Shared>,
    pub addr: SocketAddr,
    running: Option<Running>,
}

impl Sink {
    /// Starts on an ephemeral port answering [`Answer::Ok`] to everything.
    pub fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("sink: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("sink: local_addr");
        let shared = Arc::new(Shared {
            log: Mutex::new(Vec::new()),
            script: Mutex::new(Arc::new(|_: &Request, _: usize| Answer::Ok)),
            per_key: Mutex::new(HashMap::new()),
            conns: Mutex::new(Vec::new()),
            open: Mutex::new(HashMap::new()),
            next_conn: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
        });
        let mut sink = Sink {
            shared,
            addr,
            running: None,
        };
        sink.serve(listener);
        sink
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    fn serve(&mut self, listener: TcpListener) {
        listener
            .set_nonblocking(true)
            .expect("sink: listener nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let shared = self.shared.clone();
        let stop2 = stop.clone();
        let accept = std::thread::Builder::new()
            .name("sink-accept".into())
            .spawn(move || accept_loop(listener, shared, stop2))
            .expect("sink: spawn accept thread");
        self.running = Some(Running { stop, accept });
    }

    /// Closes the port and every open connection (a sink that went away). Idempotent.
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop.store(true, Ordering::SeqCst);
            let _ = r.accept.join(); // the listener is dropped: the port is closed
            self.shared.epoch.fetch_add(1, Ordering::SeqCst);
            for (_, s) in self.shared.open.lock().unwrap().drain() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Listens on the same port again (the log and the script are kept).
    pub fn restart(&mut self) {
        assert!(self.running.is_none(), "sink: restart while running");
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("sink: cannot listen on {} again: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    /// Replaces the script.
    pub fn script(&self, f: impl Fn(&Request, usize) -> Answer + Send + Sync + 'static) {
        *self.shared.script.lock().unwrap() = Arc::new(f);
    }

    /// Queues answers for the next requests carrying `key` (used before the script).
    pub fn push_for_key(&self, key: &str, answers: impl IntoIterator<Item = Answer>) {
        self.shared
            .per_key
            .lock()
            .unwrap()
            .entry(key.to_string())
            .or_default()
            .extend(answers);
    }

    /// A snapshot of every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.log.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.log.lock().unwrap().len()
    }

    /// The requests carrying idempotency key `key`, in arrival order.
    pub fn requests_for(&self, key: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.key() == key)
            .collect()
    }

    /// Connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.shared.conns.lock().unwrap().len()
    }

    /// Connections accepted in `[from, to)`.
    pub fn connections_between(&self, from: Instant, to: Instant) -> usize {
        self.shared
            .conns
            .lock()
            .unwrap()
            .iter()
            .filter(|&&t| t >= from && t < to)
            .count()
    }

    /// Polls (every 20 ms) until `pred` holds over the log; returns the log then.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[Request]) -> bool,
    ) -> Result<Vec<Request>, Vec<Request>> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.requests();
            if pred(&log) {
                return Ok(log);
            }
            if Instant::now() >= deadline {
                return Err(log);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let conn = shared.next_conn.fetch_add(1, Ordering::SeqCst);
                shared.conns.lock().unwrap().push(Instant::now());
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_nodelay(true);
                if let Ok(c) = stream.try_clone() {
                    shared.open.lock().unwrap().insert(conn, c);
                }
                let shared = shared.clone();
                let epoch = shared.epoch.load(Ordering::SeqCst);
                let _ = std::thread::Builder::new()
                    .name(format!("sink-conn-{conn}"))
                    .spawn(move || {
                        let _ = serve_conn(stream, conn, &shared, epoch);
                        shared.open.lock().unwrap().remove(&conn);
                    });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// Reads one request head; `None` on a clean EOF before any byte.
fn read_head(r: &mut BufReader<TcpStream>) -> io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line)?;
        if n == 0 {
            return if lines.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof in head"))
            };
        }
        total += n;
        if total > 64 * 1024 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too long"));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // stray CRLF between requests
            }
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

fn read_chunked(r: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size)?;
        let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if n == 0 {
            // trailers until the empty line
            loop {
                let mut t = String::new();
                if r.read_line(&mut t)? == 0 || t.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + n, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Sleeps `d` in small steps; false if the sink was stopped meanwhile.
fn nap(d: Duration, shared: &Shared, epoch: u64) -> bool {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        if shared.epoch.load(Ordering::SeqCst) != epoch {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10).min(deadline - Instant::now()));
    }
    shared.epoch.load(Ordering::SeqCst) == epoch
}

fn serve_conn(stream: TcpStream, conn: usize, shared: &Shared, epoch: u64) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut nth = 0;
    loop {
        let Some(head) = read_head(&mut reader)? else {
            return Ok(());
        };
        let arrived = Instant::now();
        let mut parts = head[0].split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = head[1..]
            .iter()
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        let body = if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            read_chunked(&mut reader)?
        } else {
            let n = get("content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            let mut b = vec![0u8; n];
            reader.read_exact(&mut b)?;
            b
        };
        let close_after = get("connection").is_some_and(|v| v.contains("close"));
        let json = serde_json::from_slice(&body).ok();
        let mut req = Request {
            seq: 0,
            conn,
            nth_on_conn: nth,
            arrived,
            method,
            target,
            headers,
            body,
            json,
            answer: None,
            answered: None,
        };
        nth += 1;
        // Log it (and count earlier requests with its key) atomically.
        let (seq, earlier) = {
            let mut log = shared.log.lock().unwrap();
            let key = req.key().to_string();
            let earlier = log.iter().filter(|r| r.key() == key).count();
            req.seq = log.len();
            log.push(req.clone());
            (req.seq, earlier)
        };
        let queued = shared
            .per_key
            .lock()
            .unwrap()
            .get_mut(req.key())
            .and_then(VecDeque::pop_front);
        let answer = match queued {
            Some(a) => a,
            None => {
                let script = shared.script.lock().unwrap().clone();
                script(&req, earlier)
            }
        };
        shared.log.lock().unwrap()[seq].answer = Some(answer.clone());

        let (status, body, retry_after) = match &answer {
            Answer::Ok | Answer::SlowOk(_) => {
                (200, r#"{"code":"200","msg":"ok"}"#.to_string(), None)
            }
            Answer::OkIntCode => (200, r#"{"code":200,"msg":"ok"}"#.to_string(), None),
            Answer::Status {
                status,
                body,
                retry_after,
            } => (*status, body.clone(), retry_after.clone()),
            Answer::Hang(d) => {
                nap(*d, shared, epoch);
                let _ = writer.shutdown(std::net::Shutdown::Both);
                return Ok(());
            }
            Answer::Reset => {
                shared.open.lock().unwrap().remove(&conn);
                let _ = socket2::SockRef::from(&writer).set_linger(Some(Duration::ZERO));
                drop(writer);
                drop(reader);
                return Ok(());
            }
        };
        if let Answer::SlowOk(d) = &answer {
            if !nap(*d, shared, epoch) {
                return Ok(());
            }
            // Accepted now, whether or not the client is still there to hear it.
            shared.log.lock().unwrap()[seq].answered = Some(Instant::now());
        }
        if shared.epoch.load(Ordering::SeqCst) != epoch {
            return Ok(());
        }
        let ctype = if serde_json::from_str::<Value>(&body).is_ok() {
            "application/json; charset=utf-8"
        } else {
            "text/plain; charset=utf-8"
        };
        let mut resp = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n",
            reason(status),
            body.len()
        );
        if let Some(ra) = retry_after {
            resp.push_str(&format!("Retry-After: {ra}\r\n"));
        }
        resp.push_str(if close_after {
            "Connection: close\r\n\r\n"
        } else {
            "Connection: keep-alive\r\n\r\n"
        });
        resp.push_str(&body);
        let wrote = writer
            .write_all(resp.as_bytes())
            .and_then(|_| writer.flush());
        if wrote.is_ok() && !matches!(answer, Answer::SlowOk(_)) {
            shared.log.lock().unwrap()[seq].answered = Some(Instant::now());
        }
        if wrote.is_err() || close_after {
            let _ = writer.shutdown(std::net::Shutdown::Both);
            return Ok(());
        }
    }
}

// ------------------------------------------------------------------------------------------
// CDR documents
// ------------------------------------------------------------------------------------------

/// One mod_json_cdr document for a one-leg inbound call.
#[derive(Debug, Clone)]
pub struct CallDoc {
    pub core: String,
    pub uuid: String,
    /// The caller's number: the `USERNUMBER` of every record of the call.
    pub caller: String,
    /// With mod_callcenter variables: the call waited in a queue after the IVR, so it has two
    /// records (IVR, then queue); without, one (IVR).
    pub queued: bool,
    pub body: Vec<u8>,
}

static DOC_COUNTER: AtomicU64 = AtomicU64::new(0);

fn random_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

impl CallDoc {
    /// A call from `caller`; `queued` adds a queue wait (see [`CallDoc::queued`]).
    pub fn new(caller: &str, queued: bool) -> CallDoc {
        let core = random_uuid();
        let uuid = random_uuid();
        let n = DOC_COUNTER.fetch_add(1, Ordering::Relaxed);
        let now_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // Created 40 s ago; answered by the switch 1 s later; queued 5 s after that; gone
        // (caller hung up) 30 s after creation.
        let start = now_s - 40;
        let answer = start + 1;
        let join = answer + 5;
        let end = start + 30;
        let us = |s: u64, frac: u64| (s * 1_000_000 + frac).to_string();
        let start_us = us(start, 123_456 + n % 1000);
        let answer_us = us(answer, 234_567);
        let end_us = us(end, 345_678);
        let mut vars = json!({
            "direction": "inbound",
            "uuid": uuid,
            "call_uuid": uuid,
            "session_id": (100 + n).to_string(),
            "sip_from_user": caller,
            "sip_from_uri": format!("{caller}@10.9.8.7"),
            "sip_from_host": "10.9.8.7",
            "sip_to_user": "95598",
            "sip_req_user": "95598",
            "sip_call_id": format!("{uuid}@10.9.8.7"),
            "sip_network_ip": "10.9.8.7",
            "caller_id": format!("\"{caller}\" <{caller}>"),
            "effective_caller_id_name": caller,
            "effective_caller_id_number": caller,
            "destination_number": "95598",
            "start_epoch": start.to_string(),
            "start_uepoch": start_us,
            "profile_start_epoch": start.to_string(),
            "profile_start_uepoch": start_us,
            "answer_epoch": answer.to_string(),
            "answer_uepoch": answer_us,
            "progress_epoch": "0",
            "progress_uepoch": "0",
            "progress_media_epoch": "0",
            "progress_media_uepoch": "0",
            "end_epoch": end.to_string(),
            "end_uepoch": end_us,
            "duration": (end - start).to_string(),
            "billsec": (end - answer).to_string(),
            "hangup_cause": "NORMAL_CLEARING",
            "hangup_cause_q850": "16",
            "proto_specific_hangup_cause": "sip:200",
            "sip_hangup_disposition": "recv_bye",
            "last_app": if queued { "callcenter" } else { "playback" },
            "last_arg": if queued { "support@default" } else { "ivr/menu.wav" },
        });
        if queued {
            let v = vars.as_object_mut().unwrap();
            v.insert("cc_queue".into(), json!("support@default"));
            v.insert("cc_side".into(), json!("member"));
            v.insert("cc_member_uuid".into(), json!(random_uuid()));
            v.insert("cc_queue_joined_epoch".into(), json!(join.to_string()));
            v.insert("cc_queue_canceled_epoch".into(), json!(end.to_string()));
            v.insert("cc_cause".into(), json!("cancel"));
            v.insert("cc_cancel_reason".into(), json!("BREAK_OUT"));
        }
        let doc = json!({
            "core-uuid": core,
            "switchname": "fs-edge-test",
            "channel_data": {
                "state": "CS_REPORTING",
                "state_number": "11",
                "flags": "0=1;1=1;3=1;37=1;39=1;42=1;47=1;52=1;73=1;75=1;94=1",
                "caps": "1=1;2=1;3=1;4=1;5=1;6=1",
                "direction": "inbound"
            },
            "variables": vars,
            "app_log": {
                "applications": [
                    {"app_name": "answer", "app_data": ""},
                    {"app_name": "playback", "app_data": "ivr/menu.wav"},
                    {"app_name": if queued { "callcenter" } else { "hangup" },
                     "app_data": if queued { "support@default" } else { "" }}
                ]
            },
            "callflow": [{
                "dialplan": "XML",
                "profile_index": "1",
                "extension": {
                    "name": "inbound",
                    "number": "95598",
                    "applications": [{"app_name": "answer", "app_data": ""}]
                },
                "caller_profile": {
                    "username": caller,
                    "dialplan": "XML",
                    "caller_id_name": caller,
                    "ani": caller,
                    "aniii": "",
                    "caller_id_number": caller,
                    "network_addr": "10.9.8.7",
                    "rdnis": "",
                    "destination_number": "95598",
                    "uuid": uuid,
                    "source": "mod_sofia",
                    "context": "public",
                    "chan_name": format!("sofia/external/{caller}@10.9.8.7")
                },
                "times": {
                    "created_time": start_us,
                    "profile_created_time": start_us,
                    "progress_time": "0",
                    "progress_media_time": "0",
                    "answered_time": answer_us,
                    "bridged_time": "0",
                    "last_hold_time": "0",
                    "hold_accum_time": "0",
                    "hangup_time": end_us,
                    "resurrect_time": "0",
                    "transfer_time": "0"
                }
            }]
        });
        CallDoc {
            core,
            uuid,
            caller: caller.to_string(),
            queued,
            body: serde_json::to_vec(&doc).unwrap(),
        }
    }

    /// How many records the daemon builds from it.
    pub fn records(&self) -> usize {
        if self.queued {
            2
        } else {
            1
        }
    }
}

/// Posts a document the way mod_json_cdr does (`encode=false`); returns the HTTP status
/// (or the connection error).
pub fn post_doc(addr: SocketAddr, doc: &CallDoc, timeout: Duration) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let head = format!(
        "POST /freeswitch/cdr?uuid={} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: freeswitch-json/1.0\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        doc.uuid,
        doc.body.len()
    );
    let mut msg = head.into_bytes();
    msg.extend_from_slice(&doc.body);
    s.write_all(&msg)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no header end: {text:?}"),
        )
    })?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("bad status {head:?}"))
        })?;
    Ok((status, body.to_string()))
}
