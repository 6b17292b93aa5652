//! The durable outbox (issue 5) end to end: CDR documents posted to the real daemon become
//! grid CDR records that are POSTed to a scripted sink (`support/sink.rs`), and every record
//! ends delivered or dead-lettered with its reason, checked on the sink, through the admin
//! API, through the `gridedge outbox` CLI and on `/metrics`.
//!
//! Expectations come from the outbox specification (the brief of issue 5), not from the code:
//! the wire format of a delivery, how answers are judged (2xx + envelope code 200 delivered;
//! timeouts, connection errors, 5xx, 408, 429 and envelope 5xx retried with `Retry-After`
//! honoured as a minimum; other 4xx and envelope codes dead at once; exhausted retries dead
//! with "exhausted: <last error>"), per-call order, independence of calls, the target-level
//! probe during an outage and the full-speed drain after it, and the dead-letter API / CLI.
//!
//! Every wait polls a condition with a deadline; every listener is on an ephemeral port.

mod common;
#[path = "support/mgmt.rs"]
mod mgmt;
#[path = "support/sink.rs"]
mod sink;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;
use sink::{post_doc, Answer, CallDoc, Request, Sink};

const SINK_PATH: &str = "/grid/v1/cdr";
const TOKEN: &str = "tok-7f3a";
/// The contract's CDR object has 38 keys (seed 000 话单推送 after the deletions).
const CDR_KEYS: usize = 38;

// ------------------------------------------------------------------------------------------
// Config
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Opts {
    concurrency: u32,
    max_attempts: u32,
    backoff_base_ms: u64,
    backoff_max_ms: u64,
    timeout_ms: u64,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            concurrency: 64,
            max_attempts: 4,
            backoff_base_ms: 20,
            backoff_max_ms: 200,
            timeout_ms: 1000,
        }
    }
}

/// The overrides: management API (for the admin routes), settle 1 s, the outbox, the CDR push.
fn config(sink: &Sink, o: Opts) -> String {
    format!(
        r#"{mgmt}
[cdr]
settle_secs = 1

[outbox]
max_records = 500000
max_bytes = 536870912
concurrency = {concurrency}
max_attempts = {max_attempts}
max_age_secs = 604800
backoff_base_ms = {backoff_base_ms}
backoff_max_ms = {backoff_max_ms}

[grid]
ent_id = "ent-1"

[grid.push.cdr]
enabled = true
url = "{url}"
timeout_ms = {timeout_ms}
bearer_token = "{TOKEN}"
idempotency_header = "Idempotency-Key"
"#,
        mgmt = mgmt::default_config(),
        concurrency = o.concurrency,
        max_attempts = o.max_attempts,
        backoff_base_ms = o.backoff_base_ms,
        backoff_max_ms = o.backoff_max_ms,
        timeout_ms = o.timeout_ms,
        url = sink.url(SINK_PATH),
    )
}

// ------------------------------------------------------------------------------------------
// Posting
// ------------------------------------------------------------------------------------------

static CALLER_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A caller number unique in this test binary (`USERNUMBER` identifies a call's records).
fn caller(prefix: &str) -> String {
    let n = CALLER_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}{:05}{n:04}", std::process::id() % 100_000)
}

/// Posts the document and asserts the daemon stored it (200).
fn post(d: &Daemon, doc: &CallDoc) {
    match post_doc(d.listeners.http, doc, Duration::from_secs(10)) {
        Ok((200, _)) => {}
        other => d.fail(&format!("POST CDR of {}: {other:?}", doc.caller)),
    }
}

// ------------------------------------------------------------------------------------------
// Admin API
// ------------------------------------------------------------------------------------------

/// How a request is signed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Auth {
    Good,
    /// Signed, the triple in the query string only.
    QueryOnly,
    /// Signed, the triple in the headers only.
    HeadersOnly,
    Unsigned,
    WrongSign,
    Stale,
    UnknownAccount,
}

/// The signed admin routes. The auth triple goes both into the query string (as the outbox
/// brief says) and into the headers (as seed 004 says), always with the same values, so the
/// request is right (or wrong) whichever place the daemon reads.
struct Admin {
    addr: SocketAddr,
}

impl Admin {
    fn request(
        &self,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
        auth: Auth,
    ) -> mgmt::HttpResponse {
        let ts = match auth {
            Auth::Stale => (mgmt::now_ms() - 3_600_000).to_string(),
            _ => mgmt::next_timestamp().to_string(),
        };
        let account = match auth {
            Auth::UnknownAccount => "nobody",
            _ => mgmt::ACCOUNT,
        };
        let sign = match auth {
            Auth::WrongSign => mgmt::sign(account, &ts, "not-the-secret"),
            Auth::UnknownAccount => mgmt::sign(account, &ts, mgmt::SECRET),
            _ => mgmt::sign(account, &ts, mgmt::SECRET),
        };
        let mut query: Vec<(&str, &str)> = params.to_vec();
        let mut headers = Vec::new();
        if !matches!(auth, Auth::Unsigned | Auth::HeadersOnly) {
            query.push(("account", account));
            query.push(("timestamp", &ts));
            query.push(("sign", &sign));
        }
        if !matches!(auth, Auth::Unsigned | Auth::QueryOnly) {
            headers = vec![
                ("account".to_string(), account.to_string()),
                ("timestamp".to_string(), ts.clone()),
                ("sign".to_string(), sign.clone()),
            ];
        }
        let target = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{}", mgmt::form(&query))
        };
        mgmt::http_request(self.addr, method, &target, &headers, b"")
            .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
    }

    /// A signed request that must answer 200 with a JSON object.
    fn ok(&self, method: &str, path: &str, params: &[(&str, &str)]) -> Value {
        let r = self.request(method, path, params, Auth::Good);
        assert_eq!(
            r.status, 200,
            "{method} {path} {params:?}: {} {}",
            r.status, r.body
        );
        let v: Value = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("{method} {path}: body is not JSON ({e}): {}", r.body));
        assert!(v.is_object(), "{method} {path}: not an object: {v}");
        v
    }

    fn dead_list(&self, limit: usize) -> Value {
        self.ok(
            "GET",
            "/admin/outbox/dead",
            &[("target", "cdr"), ("limit", &limit.to_string())],
        )
    }

    fn dead_items(&self) -> Vec<Value> {
        let v = self.dead_list(1000);
        v["items"]
            .as_array()
            .unwrap_or_else(|| panic!("dead list without items: {v}"))
            .clone()
    }

    fn show(&self, id: &str) -> Value {
        self.ok("GET", &format!("/admin/outbox/dead/{id}"), &[])
    }

    fn stats(&self) -> Value {
        self.ok("GET", "/admin/outbox/stats", &[])
    }
}

/// An id as it appears in a URL (ids may be numbers or strings in the JSON).
fn id_of(item: &Value) -> String {
    match &item["id"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("dead letter without an id: {other} in {item}"),
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

// ------------------------------------------------------------------------------------------
// CLI
// ------------------------------------------------------------------------------------------

fn cli(d: &Daemon, args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gridedge"));
    cmd.arg("outbox")
        .arg("--config")
        .arg(&d.config_path)
        .args(args);
    run_with_timeout(&mut cmd, Duration::from_secs(30))
}

/// Runs the CLI, asserts success and one JSON object on stdout.
fn cli_json(d: &Daemon, args: &[&str]) -> Value {
    let (status, out, err) = cli(d, args);
    assert!(
        status.success(),
        "gridedge outbox {args:?} failed: {status}\nstdout: {out}\nstderr: {err}"
    );
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
        panic!(
            "gridedge outbox {args:?}: stdout is not one JSON object ({e}): {out:?}\nstderr: {err}"
        )
    });
    assert!(
        v.is_object(),
        "gridedge outbox {args:?}: not an object: {v}"
    );
    v
}

/// Every object with an `id` found anywhere in `v` (the CLI's list, whatever its nesting).
fn objects_with_id(v: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::Object(m) => {
                if m.contains_key("id") && m.contains_key("reason") {
                    out.push(v.clone());
                }
                m.values().for_each(|x| walk(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

// ------------------------------------------------------------------------------------------
// Checks on what the sink received
// ------------------------------------------------------------------------------------------

/// Checks the wire format of one delivery against the spec.
fn check_wire(r: &Request) -> Result<(), String> {
    let ctx = r.describe();
    if r.method != "POST" {
        return Err(format!("{ctx}: method {}", r.method));
    }
    if r.target != SINK_PATH {
        return Err(format!("{ctx}: target {} (want {SINK_PATH})", r.target));
    }
    let ct = r.header("content-type").unwrap_or("").to_ascii_lowercase();
    if ct.replace(' ', "") != "application/json;charset=utf-8" {
        return Err(format!("{ctx}: Content-Type {ct:?}"));
    }
    match r.header("authorization") {
        Some(a) if a == format!("Bearer {TOKEN}") => {}
        other => return Err(format!("{ctx}: Authorization {other:?}")),
    }
    let v = r
        .json
        .as_ref()
        .ok_or_else(|| format!("{ctx}: body is not JSON: {}", r.body_text()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{ctx}: body is not an object"))?;
    if obj.len() != CDR_KEYS {
        return Err(format!(
            "{ctx}: {} keys, want {CDR_KEYS}: {:?}",
            obj.len(),
            obj.keys().collect::<Vec<_>>()
        ));
    }
    if let Some((k, v)) = obj.iter().find(|(_, v)| !v.is_string()) {
        return Err(format!("{ctx}: {k} is not a string: {v}"));
    }
    let sn = r.field("streamnumber");
    if sn.is_empty() || !sn.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{ctx}: streamnumber {sn:?}"));
    }
    if r.key() != sn {
        return Err(format!(
            "{ctx}: Idempotency-Key {:?} != streamnumber {sn}",
            r.key()
        ));
    }
    if r.field("callId").is_empty() {
        return Err(format!("{ctx}: no callId"));
    }
    Ok(())
}

/// Requests grouped by idempotency key, in arrival order.
fn by_key(log: &[Request]) -> BTreeMap<String, Vec<Request>> {
    let mut m: BTreeMap<String, Vec<Request>> = BTreeMap::new();
    for r in log {
        m.entry(r.key().to_string()).or_default().push(r.clone());
    }
    m
}

/// The keys of one caller's records, ordered by streamnumber.
fn keys_of(log: &[Request], caller: &str) -> Vec<String> {
    let mut keys: Vec<String> = log
        .iter()
        .filter(|r| r.field("USERNUMBER") == caller)
        .map(|r| r.key().to_string())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    keys.sort();
    keys
}

/// All attempts of one key carry the same body, byte for byte.
fn check_same_body(reqs: &[Request]) -> Result<(), String> {
    let first = &reqs[0];
    for r in &reqs[1..] {
        if r.body != first.body {
            return Err(format!(
                "key {}: attempt #{} body differs from #{}:\n{}\n{}",
                first.key(),
                r.seq,
                first.seq,
                first.body_text(),
                r.body_text()
            ));
        }
    }
    Ok(())
}

/// Per-call order: the records of one call (same callId) are served one at a time: every
/// attempt of one record arrives before the first attempt of the next, and the next one's
/// first attempt comes only after the sink answered the previous record's last attempt (its
/// acknowledgement, or the answer that killed it). The order must be the enqueue order,
/// which for one call's records is their segment order: the ordinal that ends the stream
/// number (`..00`, `..01`).
fn check_call_order(log: &[Request], upto_seq: usize) -> Result<usize, String> {
    let log: Vec<&Request> = log.iter().filter(|r| r.seq < upto_seq).collect();
    let mut calls: HashMap<String, BTreeMap<String, Vec<&Request>>> = HashMap::new();
    for r in &log {
        calls
            .entry(r.field("callId").to_string())
            .or_default()
            .entry(r.key().to_string())
            .or_default()
            .push(r);
    }
    let mut multi = 0;
    for (call, records) in &calls {
        if records.len() < 2 {
            continue;
        }
        multi += 1;
        // Serve order = order of first arrival.
        let mut served: Vec<(&String, &Vec<&Request>)> = records.iter().collect();
        served.sort_by_key(|(_, reqs)| reqs[0].arrived);
        // A stream number ends with the record's two-digit ordinal within its call.
        let mut by_sn: Vec<&String> = records.keys().collect();
        by_sn.sort_by_key(|k| (k[k.len().saturating_sub(2)..].to_string(), (*k).clone()));
        let served_keys: Vec<&String> = served.iter().map(|(k, _)| *k).collect();
        if served_keys != by_sn {
            return Err(format!(
                "call {call}: records first sent in order {served_keys:?}, enqueue (stream \
                 number) order is {by_sn:?}"
            ));
        }
        for w in served.windows(2) {
            let (k0, r0) = w[0];
            let (k1, r1) = w[1];
            let last0 = r0.last().unwrap();
            let first1 = r1[0];
            if last0.arrived > first1.arrived {
                return Err(format!(
                    "call {call}: record {k1} was sent (#{}) while record {k0} was still being \
                     retried (#{} came later)",
                    first1.seq, last0.seq
                ));
            }
            let done0 = last0.answered.unwrap_or(last0.arrived);
            if first1.arrived < done0 {
                return Err(format!(
                    "call {call}: record {k1} was sent (#{}) {:?} before the sink answered the \
                     last attempt of {k0} (#{})",
                    first1.seq,
                    done0 - first1.arrived,
                    last0.seq
                ));
            }
        }
    }
    Ok(multi)
}

/// Runs each check, collecting failures so one run reports every wrong answer.
struct Checks {
    failures: Vec<String>,
}

impl Checks {
    fn new() -> Checks {
        Checks {
            failures: Vec::new(),
        }
    }

    fn run(&mut self, name: &str, f: impl FnOnce()) {
        if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            eprintln!("CHECK FAILED [{name}] {msg}");
            self.failures.push(format!("[{name}] {msg}"));
        }
    }

    fn finish(self, d: &Daemon) {
        if !self.failures.is_empty() {
            d.fail(&format!(
                "{} check(s) failed:\n{}",
                self.failures.len(),
                self.failures.join("\n\n")
            ));
        }
    }
}

fn metric0(d: &Daemon, name: &str, labels: &[&str]) -> f64 {
    d.metric(name, labels).unwrap_or(0.0)
}

/// The `gridedge_outbox_*` lines of `/metrics` (for failure messages).
fn outbox_metrics(d: &Daemon) -> String {
    d.metrics()
        .lines()
        .filter(|l| l.starts_with("gridedge_outbox") && !l.contains("_bucket"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits (up to 5 s: gauges may be refreshed on a timer) until the gauge reads `want`.
fn assert_gauge(d: &Daemon, name: &str, want: f64, ctx: &str) {
    let ok = poll_until(Duration::from_secs(5), || {
        (metric0(d, name, &["target=\"cdr\""]) == want).then_some(())
    });
    assert!(
        ok.is_some(),
        "{ctx}: {name}{{target=\"cdr\"}} is {} after 5 s, want {want}\n{}",
        metric0(d, name, &["target=\"cdr\""]),
        outbox_metrics(d)
    );
}

fn deliveries(d: &Daemon, result: &str) -> f64 {
    metric0(
        d,
        "gridedge_outbox_deliveries_total",
        &["target=\"cdr\"", &format!("result=\"{result}\"")],
    )
}

// ------------------------------------------------------------------------------------------
// 0. The sink itself
// ------------------------------------------------------------------------------------------

/// One request on an open connection; returns (status, headers, body).
/// (status, headers with lower-case names, body).
type Reply = (u16, Vec<(String, String)>, String);

fn roundtrip(s: &mut TcpStream, key: &str, body: &str) -> io::Result<Reply> {
    write!(
        s,
        "POST /t HTTP/1.1\r\nHost: x\r\nIdempotency-Key: {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof"));
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let n: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; n];
    s.read_exact(&mut body)?;
    Ok((status, headers, String::from_utf8(body).unwrap()))
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect to sink");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

#[test]
fn sink_answers_as_scripted_keeps_alive_and_restarts_on_the_same_port() {
    let mut sink = Sink::start();
    sink.script(|r: &Request, earlier: usize| match r.key() {
        "ok" => Answer::Ok,
        "int" => Answer::OkIntCode,
        "500" => Answer::status(500),
        "503" => Answer::retry_after(503, 2),
        "429" => Answer::retry_after(429, 1),
        "408" => Answer::status(408),
        "400" => Answer::with_body(400, "bad field X"),
        "env" => Answer::envelope("500"),
        "hang" => Answer::Hang(Duration::from_millis(1500)),
        "reset" => Answer::Reset,
        "slow" => Answer::SlowOk(Duration::from_millis(300)),
        "twice" if earlier < 2 => Answer::Ok,
        _ => Answer::status(418),
    });
    let addr = sink.addr;

    // Keep-alive: eight answers on one connection.
    let mut c = connect(addr);
    let cases: [(&str, u16, Option<&str>, &str); 8] = [
        ("ok", 200, None, r#""code":"200""#),
        ("int", 200, None, r#""code":200"#),
        ("500", 500, None, "500"),
        ("503", 503, Some("2"), "503"),
        ("429", 429, Some("1"), "429"),
        ("408", 408, None, "408"),
        ("400", 400, None, "bad field X"),
        ("env", 200, None, r#""code":"500""#),
    ];
    for (key, status, retry_after, body_has) in cases {
        let (st, headers, body) = roundtrip(&mut c, key, "{\"a\":\"1\"}").expect(key);
        assert_eq!(st, status, "{key}: {body}");
        let ra = headers
            .iter()
            .find(|(n, _)| n == "retry-after")
            .map(|(_, v)| v.as_str());
        assert_eq!(ra, retry_after, "{key}: Retry-After");
        assert!(body.contains(body_has), "{key}: body {body}");
    }
    let log = sink.requests();
    assert_eq!(log.len(), 8);
    assert!(
        log.iter().all(|r| r.conn == log[0].conn),
        "one connection: {log:?}"
    );
    assert_eq!(
        log.iter().map(|r| r.nth_on_conn).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    assert_eq!(log[0].json.as_ref().unwrap()["a"], "1");
    assert!(log[0].accepted() && log[1].accepted() && !log[2].accepted() && !log[7].accepted());

    // Hang: nothing comes back before the client gives up.
    let mut h = connect(addr);
    h.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let t = Instant::now();
    let e = roundtrip(&mut h, "hang", "{}").expect_err("hang answered");
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{e:?}"
    );
    assert!(t.elapsed() >= Duration::from_millis(350));

    // Reset: an error, no answer.
    let mut r = connect(addr);
    let e = roundtrip(&mut r, "reset", "{}").expect_err("reset answered");
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
        ),
        "{e:?}"
    );

    // A late 200, and the same key accepted twice (duplicates recorded).
    let mut s = connect(addr);
    let t = Instant::now();
    assert_eq!(roundtrip(&mut s, "slow", "{}").unwrap().0, 200);
    assert!(t.elapsed() >= Duration::from_millis(290));
    assert_eq!(roundtrip(&mut s, "twice", "{\"n\":1}").unwrap().0, 200);
    assert_eq!(roundtrip(&mut s, "twice", "{\"n\":1}").unwrap().0, 200);
    assert_eq!(roundtrip(&mut s, "twice", "{\"n\":1}").unwrap().0, 418);
    let twice = sink.requests_for("twice");
    assert_eq!(twice.len(), 3);
    assert!(twice[0].accepted() && twice[1].accepted() && !twice[2].accepted());

    // Per-key queue before the script; chunked bodies.
    sink.push_for_key("q", [Answer::status(503), Answer::Ok]);
    assert_eq!(roundtrip(&mut s, "q", "{}").unwrap().0, 503);
    assert_eq!(roundtrip(&mut s, "q", "{}").unwrap().0, 200);
    assert_eq!(roundtrip(&mut s, "q", "{}").unwrap().0, 418);
    write!(
        s,
        "POST /c HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ok\r\nTransfer-Encoding: chunked\r\n\r\n\
         4\r\n{{\"b\"\r\n5\r\n:\"2\"}}\r\n0\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let last = sink.requests().pop().unwrap();
    assert_eq!(last.target, "/c");
    assert_eq!(last.json.unwrap()["b"], "2");

    // Stop: the port is closed and open connections are cut; restart: same port, log kept.
    let before = sink.request_count();
    let conns = sink.connection_count();
    sink.stop();
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "the port is still open after stop"
    );
    let mut buf = [0u8; 16];
    assert!(
        matches!(s.read(&mut buf), Ok(0) | Err(_)),
        "connection not cut"
    );
    sink.restart();
    assert_eq!(sink.addr, addr);
    let mut c = connect(addr);
    assert_eq!(roundtrip(&mut c, "ok", "{}").unwrap().0, 200);
    assert_eq!(sink.request_count(), before + 1);
    assert_eq!(sink.connection_count(), conns + 1);
}

// ------------------------------------------------------------------------------------------
// 1. Every answer the grid can give
// ------------------------------------------------------------------------------------------

/// How the sink treats one call's records (each record on its own: `earlier` counts earlier
/// attempts of the same record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Behaviour {
    Ok,
    OkIntCode,
    Http500Twice,
    Http503RetryAfter2,
    Http429RetryAfter1,
    Http408Once,
    HangOnce,
    ResetOnce,
    Envelope500Once,
    /// 200 after the client's timeout, then 200 again to the retry: the sink accepts twice.
    DuplicateOk,
    /// 400 until replayed.
    Http400,
    /// 2xx with envelope code 4001 until replayed.
    EnvelopeBad,
    /// 500 until switched to Ok.
    Http500Always,
}

const BAD_BODY: &str = "invalid field ENDTIME: 2099-13-45";

fn answer_for(b: Behaviour, earlier: usize, timeout: Duration) -> Answer {
    use Behaviour::*;
    match b {
        Ok => Answer::Ok,
        OkIntCode => Answer::OkIntCode,
        Http500Twice if earlier < 2 => Answer::status(500),
        Http503RetryAfter2 if earlier < 1 => Answer::retry_after(503, 2),
        Http429RetryAfter1 if earlier < 1 => Answer::retry_after(429, 1),
        Http408Once if earlier < 1 => Answer::status(408),
        HangOnce if earlier < 1 => Answer::Hang(timeout * 5 / 2),
        ResetOnce if earlier < 1 => Answer::Reset,
        Envelope500Once if earlier < 1 => Answer::envelope("500"),
        DuplicateOk if earlier < 1 => Answer::SlowOk(timeout * 8 / 5),
        Http400 => Answer::with_body(400, BAD_BODY),
        EnvelopeBad => Answer::envelope("4001"),
        Http500Always => Answer::status(500),
        _ => Answer::Ok,
    }
}

/// Callers and their behaviours, shared with the sink's script (tests flip behaviours).
type Plan = Arc<Mutex<HashMap<String, Behaviour>>>;

fn scripted_sink(timeout: Duration) -> (Sink, Plan) {
    let sink = Sink::start();
    let plan: Plan = Arc::new(Mutex::new(HashMap::new()));
    let p = plan.clone();
    sink.script(move |r: &Request, earlier: usize| {
        let b = p
            .lock()
            .unwrap()
            .get(r.field("USERNUMBER"))
            .copied()
            .unwrap_or(Behaviour::Ok);
        answer_for(b, earlier, timeout)
    });
    (sink, plan)
}

/// Every key seen, each either accepted by the sink or listed as a dead letter.
fn settled(sink: &Sink, admin: &Admin, want_keys: usize) -> Option<(Vec<Request>, Vec<Value>)> {
    let log = sink.requests();
    let keys = by_key(&log);
    if keys.len() < want_keys || !log.iter().all(Request::finished) {
        return None;
    }
    let dead = admin.dead_items();
    let dead_keys: HashSet<String> = dead
        .iter()
        .map(|i| i["idempotencyKey"].as_str().unwrap_or("").to_string())
        .collect();
    keys.iter()
        .all(|(k, reqs)| reqs.iter().any(Request::accepted) || dead_keys.contains(k))
        .then_some((log, dead))
}

#[test]
fn every_record_ends_delivered_or_dead_lettered_with_its_reason() {
    let o = Opts::default();
    let timeout = Duration::from_millis(o.timeout_ms);
    let (sink, plan) = scripted_sink(timeout);
    let d = Daemon::start(&config(&sink, o));
    let admin = Admin {
        addr: d.listeners.http,
    };
    use Behaviour::*;
    let behaviours = [
        Ok,
        OkIntCode,
        Http500Twice,
        Http503RetryAfter2,
        Http429RetryAfter1,
        Http408Once,
        HangOnce,
        ResetOnce,
        Envelope500Once,
        DuplicateOk,
        Http400,
        EnvelopeBad,
        Http500Always,
    ];
    // Every behaviour on a two-record call (IVR then queue); plus one one-record call.
    let mut docs: Vec<(CallDoc, Behaviour)> = behaviours
        .iter()
        .map(|&b| (CallDoc::new(&caller("139"), true), b))
        .collect();
    docs.push((CallDoc::new(&caller("137"), false), Ok));
    for (doc, b) in &docs {
        plan.lock().unwrap().insert(doc.caller.clone(), *b);
    }
    let original: HashMap<String, Behaviour> = plan.lock().unwrap().clone();
    let behaviour_of = |caller: &str| original.get(caller).copied();
    let want_keys: usize = docs.iter().map(|(d, _)| d.records()).sum();
    let started = Instant::now();
    for (doc, _) in &docs {
        post(&d, doc);
    }

    // Phase 1: everything ends delivered or dead.
    let (log, dead) = poll_until(Duration::from_secs(60), || {
        settled(&sink, &admin, want_keys)
    })
    .unwrap_or_else(|| {
        d.fail(&format!(
            "records not settled within 60 s: {} keys seen of {want_keys}\n{}",
            by_key(&sink.requests()).len(),
            sink.requests()
                .iter()
                .map(Request::describe)
                .collect::<Vec<_>>()
                .join("\n")
        ))
    });
    eprintln!(
        "phase 1: {} requests for {} records settled in {:?}; {} dead letters",
        log.len(),
        want_keys,
        started.elapsed(),
        dead.len()
    );
    let phase1_end = log.len();
    let keys = by_key(&log);
    let mut c = Checks::new();

    c.run("wire format of every delivery", || {
        let bad: Vec<String> = log.iter().filter_map(|r| check_wire(r).err()).collect();
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    });
    c.run("records per call, USERNUMBER, callId", || {
        assert_eq!(keys.len(), want_keys, "distinct keys");
        let mut call_ids = HashSet::new();
        for (doc, _) in &docs {
            let ks = keys_of(&log, &doc.caller);
            assert_eq!(ks.len(), doc.records(), "records of caller {}", doc.caller);
            let ids: HashSet<&str> = log
                .iter()
                .filter(|r| r.field("USERNUMBER") == doc.caller)
                .map(|r| r.field("callId"))
                .collect();
            assert_eq!(ids.len(), 1, "one callId per call: {ids:?}");
            assert!(call_ids.insert(ids.into_iter().next().unwrap().to_string()));
        }
    });
    c.run("every attempt of a record carries the same body", || {
        for reqs in keys.values() {
            check_same_body(reqs).unwrap();
        }
    });
    c.run("per-call order", || {
        let multi = check_call_order(&log, phase1_end).unwrap();
        assert_eq!(multi, behaviours.len(), "calls with two records");
    });

    // What each behaviour must have led to, on the sink.
    let dead_by_key: HashMap<String, Value> = dead
        .iter()
        .map(|i| {
            (
                i["idempotencyKey"].as_str().unwrap_or("").to_string(),
                i.clone(),
            )
        })
        .collect();
    for (doc, b) in &docs {
        let b = *b;
        c.run(&format!("{b:?} ({})", doc.caller), || {
            for k in keys_of(&log, &doc.caller) {
                let reqs = &keys[&k];
                let accepted = reqs.iter().filter(|r| r.accepted()).count();
                let n = reqs.len();
                let gap = || reqs[1].arrived - reqs[0].answered.unwrap_or(reqs[0].arrived);
                let dead = dead_by_key.get(&k);
                let reason = dead
                    .map(|i| i["reason"].as_str().unwrap_or("").to_string())
                    .unwrap_or_default();
                let ctx = format!(
                    "{b:?} key {k}: {n} requests, {accepted} accepted, dead {dead:?}\n{}",
                    reqs.iter()
                        .map(Request::describe)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                match b {
                    Ok | OkIntCode => assert!(n == 1 && accepted == 1 && dead.is_none(), "{ctx}"),
                    Http500Twice => assert!(n == 3 && accepted == 1 && dead.is_none(), "{ctx}"),
                    Http503RetryAfter2 => {
                        assert!(n == 2 && accepted == 1 && dead.is_none(), "{ctx}");
                        assert!(
                            gap() >= Duration::from_millis(1950),
                            "{ctx}\nRetry-After: 2 not honoured: retried after {:?}",
                            gap()
                        );
                    }
                    Http429RetryAfter1 => {
                        assert!(n == 2 && accepted == 1 && dead.is_none(), "{ctx}");
                        assert!(
                            gap() >= Duration::from_millis(950),
                            "{ctx}\nRetry-After: 1 not honoured: retried after {:?}",
                            gap()
                        );
                    }
                    Http408Once | ResetOnce | Envelope500Once => {
                        assert!(n == 2 && accepted == 1 && dead.is_none(), "{ctx}")
                    }
                    HangOnce => {
                        assert!(n == 2 && accepted == 1 && dead.is_none(), "{ctx}");
                        let waited = reqs[1].arrived - reqs[0].arrived;
                        assert!(
                            waited >= timeout * 9 / 10,
                            "{ctx}\nretried {waited:?} after a request that was still hanging \
                             (timeout_ms {})",
                            o.timeout_ms
                        );
                    }
                    DuplicateOk => {
                        // The first 200 came after the client's timeout: the record was
                        // sent again with the same key and body and accepted again.
                        assert!(n == 2 && accepted == 2 && dead.is_none(), "{ctx}");
                    }
                    Http400 => {
                        assert!(n == 1 && accepted == 0, "{ctx}");
                        assert!(
                            reason.contains("400") && reason.contains("invalid field ENDTIME"),
                            "{ctx}\nreason {reason:?} must name the status and quote the body"
                        );
                    }
                    EnvelopeBad => {
                        assert!(n == 1 && accepted == 0, "{ctx}");
                        assert!(reason.contains("4001"), "{ctx}\nreason {reason:?}");
                    }
                    Http500Always => {
                        // At least max_attempts requests: failures while the target was
                        // down (several calls failing at once, as here) are probes and do
                        // not count (see outbox/scheduler.rs), so there may be more.
                        assert!(n >= o.max_attempts as usize && accepted == 0, "{ctx}");
                        assert!(
                            reason.starts_with("exhausted") && reason.contains("500"),
                            "{ctx}\nreason {reason:?}"
                        );
                    }
                }
            }
        });
    }

    // The dead letters, through the API.
    let dead_behaviours = [Http400, EnvelopeBad, Http500Always];
    let want_dead = 2 * dead_behaviours.len();
    let caller_of_key: HashMap<String, String> = log
        .iter()
        .map(|r| (r.key().to_string(), r.field("USERNUMBER").to_string()))
        .collect();
    let dead_ids_of = |b: Behaviour, items: &[Value]| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = items
            .iter()
            .filter(|i| {
                let k = i["idempotencyKey"].as_str().unwrap_or("");
                caller_of_key
                    .get(k)
                    .and_then(|c| behaviour_of(c))
                    .is_some_and(|x| x == b)
            })
            .map(|i| (id_of(i), i["idempotencyKey"].as_str().unwrap().to_string()))
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1));
        v
    };
    c.run("API: dead list", || {
        let v = admin.dead_list(100);
        let items = v["items"].as_array().expect("items");
        assert_eq!(items.len(), want_dead, "{v:#}");
        assert_eq!(num(&v["count"]), Some(want_dead as f64), "count: {v:#}");
        let now = mgmt::now_ms() as f64;
        let ids: HashSet<String> = items.iter().map(id_of).collect();
        assert_eq!(ids.len(), want_dead, "ids unique");
        for i in items {
            let k = i["idempotencyKey"].as_str().expect("idempotencyKey");
            let reqs = keys
                .get(k)
                .unwrap_or_else(|| panic!("dead key {k} never sent: {i}"));
            assert_eq!(i["target"], "cdr", "{i}");
            assert!(
                i["key"].as_str().is_some_and(|s| !s.is_empty()),
                "no ordering key: {i}"
            );
            // Counted attempts never exceed the requests the sink saw (probes sent while
            // the target was down are not counted).
            assert!(
                num(&i["attempts"]).is_some_and(|a| a >= 1.0 && a <= reqs.len() as f64),
                "attempts of {i}"
            );
            let enq = num(&i["enqueuedMs"]).expect("enqueuedMs");
            let dead_ms = num(&i["deadMs"]).expect("deadMs");
            assert!(enq <= dead_ms && dead_ms <= now + 1000.0, "times of {i}");
            assert!(now - dead_ms < 300_000.0, "deadMs not recent: {i}");
        }
        // Both records of one call share the ordering key; different calls do not.
        for b in dead_behaviours {
            let ks: HashSet<&str> = items
                .iter()
                .filter(|i| {
                    caller_of_key
                        .get(i["idempotencyKey"].as_str().unwrap())
                        .and_then(|c| behaviour_of(c))
                        == Some(b)
                })
                .map(|i| i["key"].as_str().unwrap())
                .collect();
            assert_eq!(ks.len(), 1, "{b:?}: ordering keys {ks:?}");
        }
        let limited = admin.dead_list(1);
        assert_eq!(
            limited["items"].as_array().map(Vec::len),
            Some(1),
            "limit=1: {limited}"
        );
    });
    c.run("API: dead show", || {
        for i in admin.dead_items() {
            let id = id_of(&i);
            let shown = admin.show(&id);
            let k = i["idempotencyKey"].as_str().unwrap();
            assert_eq!(shown["idempotencyKey"], i["idempotencyKey"], "{shown}");
            assert_eq!(shown["reason"], i["reason"], "{shown}");
            let payload = match &shown["payload"] {
                Value::String(s) => serde_json::from_str(s).expect("payload string is JSON"),
                p => p.clone(),
            };
            let sent = keys[k][0].json.clone().unwrap();
            assert_eq!(
                payload, sent,
                "payload of dead letter {id} is not the body sent"
            );
        }
    });
    c.run("API: stats", || {
        let s = admin.stats();
        assert_eq!(num(&s["dead"]), Some(want_dead as f64), "{s}");
        assert_eq!(num(&s["depth"]), Some(0.0), "{s}");
        assert!(num(&s["oldestAgeMs"]).is_some(), "{s}");
    });
    c.run("metrics after phase 1", || {
        let ctx = format!("after phase 1 (stats {})", admin.stats());
        assert_gauge(&d, "gridedge_outbox_dead_letters", want_dead as f64, &ctx);
        assert_gauge(&d, "gridedge_outbox_depth", 0.0, &ctx);
        assert_gauge(&d, "gridedge_outbox_oldest_age_seconds", 0.0, &ctx);
        assert_eq!(
            deliveries(&d, "dead"),
            want_dead as f64,
            "{ctx}\n{}",
            outbox_metrics(&d)
        );
    });

    // The CLI sees the same dead letters (same state database, daemon running).
    c.run("CLI: dead list, show, stats", || {
        let v = cli_json(&d, &["dead", "list", "--target", "cdr", "--limit", "100"]);
        let api: HashSet<String> = admin.dead_items().iter().map(id_of).collect();
        let listed: HashSet<String> = objects_with_id(&v).iter().map(id_of).collect();
        assert_eq!(listed, api, "CLI list vs API list: {v:#}");
        let limited = cli_json(&d, &["dead", "list", "--limit", "1"]);
        assert_eq!(objects_with_id(&limited).len(), 1, "--limit 1: {limited}");
        let (id, k) = dead_ids_of(Http400, &admin.dead_items())[0].clone();
        let shown = cli_json(&d, &["dead", "show", &id]);
        let payload = match &shown["payload"] {
            Value::String(s) => serde_json::from_str(s).expect("payload string is JSON"),
            p => p.clone(),
        };
        assert_eq!(
            payload,
            keys[&k][0].json.clone().unwrap(),
            "CLI show payload: {shown}"
        );
        assert_eq!(shown["idempotencyKey"], k.as_str(), "{shown}");
        let st = cli_json(&d, &["stats"]);
        assert_eq!(num(&st["dead"]), Some(want_dead as f64), "CLI stats: {st}");
        assert_eq!(num(&st["depth"]), Some(0.0), "CLI stats: {st}");
    });

    // Replays. Each one is delivered again with the same idempotency key and body.
    let redelivered = |k: &str, after: usize| -> Option<Request> {
        sink.requests()
            .into_iter()
            .find(|r| r.seq >= after && r.key() == k && r.accepted())
    };
    let expect_redelivery = |k: &str, after: usize, since: Instant, how: &str| {
        let r =
            poll_until(Duration::from_secs(10), || redelivered(k, after)).unwrap_or_else(|| {
                panic!("{how}: record {k} not delivered again within 10 s of its replay")
            });
        let first = &keys[k][0];
        assert_eq!(r.body, first.body, "{how}: replayed body differs");
        check_wire(&r).unwrap();
        let took = r.arrived.saturating_duration_since(since);
        eprintln!("{how}: record {k} delivered again {took:?} after the replay");
        assert!(
            took < Duration::from_secs(3),
            "{how}: replay picked up after {took:?}"
        );
    };
    let http400 = dead_ids_of(Http400, &dead);
    let envbad = dead_ids_of(EnvelopeBad, &dead);
    let always = dead_ids_of(Http500Always, &dead);
    for caller in docs
        .iter()
        .filter(|(_, b)| *b == Http400)
        .map(|(d, _)| &d.caller)
    {
        plan.lock().unwrap().insert(caller.clone(), Ok);
    }
    c.run("API: replay one", || {
        let (id, k) = &http400[0];
        let mark = sink.request_count();
        let t = Instant::now();
        let v = admin.ok("POST", &format!("/admin/outbox/dead/{id}/replay"), &[]);
        assert_eq!(num(&v["replayed"]), Some(1.0), "{v}");
        expect_redelivery(k, mark, t, "API replay");
        let ids: HashSet<String> = admin.dead_items().iter().map(id_of).collect();
        assert!(!ids.contains(id), "replayed {id} still listed");
    });
    c.run("CLI: replay one", || {
        let (id, k) = &http400[1];
        let mark = sink.request_count();
        let t = Instant::now();
        cli_json(&d, &["dead", "replay", id]);
        expect_redelivery(k, mark, t, "CLI replay");
        let ids: HashSet<String> = admin.dead_items().iter().map(id_of).collect();
        assert!(!ids.contains(id), "replayed {id} still listed");
    });
    for caller in docs
        .iter()
        .filter(|(_, b)| *b == EnvelopeBad)
        .map(|(d, _)| &d.caller)
    {
        plan.lock().unwrap().insert(caller.clone(), Ok);
    }
    c.run("API: replay all (one target)", || {
        // The envelope-4001 records now succeed; the always-500 ones die again.
        let mark = sink.request_count();
        let t = Instant::now();
        let v = admin.ok("POST", "/admin/outbox/dead/replay", &[("target", "cdr")]);
        assert_eq!(num(&v["replayed"]), Some(4.0), "{v}");
        for (_, k) in &envbad {
            expect_redelivery(k, mark, t, "API replay all");
        }
        let back = poll_until(Duration::from_secs(20), || {
            let items = admin.dead_items();
            (items.len() == 2
                && always
                    .iter()
                    .all(|(_, k)| sink.requests_for(k).len() >= 2 * o.max_attempts as usize))
            .then_some(items)
        })
        .unwrap_or_else(|| {
            panic!(
                "the always-500 records did not die again: {:?}",
                admin.dead_items()
            )
        });
        for i in back {
            let reason = i["reason"].as_str().unwrap_or("");
            assert!(
                reason.starts_with("exhausted") && reason.contains("500"),
                "{i}"
            );
            assert!(
                always
                    .iter()
                    .any(|(_, k)| i["idempotencyKey"] == k.as_str()),
                "{i}"
            );
        }
    });
    for caller in docs
        .iter()
        .filter(|(_, b)| *b == Http500Always)
        .map(|(d, _)| &d.caller)
    {
        plan.lock().unwrap().insert(caller.clone(), Ok);
    }
    c.run("CLI: replay --all", || {
        let mark = sink.request_count();
        let t = Instant::now();
        let v = cli_json(&d, &["dead", "replay", "--all", "--target", "cdr"]);
        assert_eq!(num(&v["replayed"]), Some(2.0), "{v}");
        for (_, k) in &always {
            expect_redelivery(k, mark, t, "CLI replay --all");
        }
        // Per-call order holds for the replayed pair too: the second record only after the
        // first was acknowledged.
        let reqs: Vec<Request> = sink
            .requests()
            .into_iter()
            .filter(|r| r.seq >= mark)
            .collect();
        let a = reqs
            .iter()
            .find(|r| r.key() == always[0].1 && r.accepted())
            .unwrap();
        let b = reqs.iter().find(|r| r.key() == always[1].1).unwrap();
        assert!(
            b.arrived >= a.answered.unwrap(),
            "replayed records of one call sent out of order"
        );
    });

    // The end: nothing dead, nothing queued, and the numbers add up.
    c.run("final state", || {
        let s = poll_until(Duration::from_secs(10), || {
            let s = admin.stats();
            (num(&s["dead"]) == Some(0.0) && num(&s["depth"]) == Some(0.0)).then_some(s)
        })
        .unwrap_or_else(|| panic!("stats never reached dead 0, depth 0: {}", admin.stats()));
        assert_eq!(num(&s["oldestAgeMs"]), Some(0.0), "{s}");
        let st = cli_json(&d, &["stats"]);
        assert_eq!(num(&st["dead"]), Some(0.0), "CLI stats {st}");
        let log = sink.requests();
        for (k, reqs) in by_key(&log) {
            assert!(reqs.iter().any(Request::accepted), "{k} never delivered");
            check_same_body(&reqs).unwrap();
        }
    });
    let log = sink.requests();
    let attempts = log.len() as f64;
    let m = d.metrics();
    let delivered = deliveries(&d, "delivered");
    let retry = deliveries(&d, "retry");
    let dead_results = deliveries(&d, "dead");
    c.run("final metrics: deliveries_total{result=delivered}", || {
        assert_eq!(delivered, want_keys as f64, "delivered\n{m}");
    });
    c.run("final metrics: deliveries_total{result=dead}", || {
        assert_eq!(
            dead_results,
            (want_dead + 2) as f64,
            "dead results (6, then 2 again)"
        );
    });
    c.run("final metrics: one result per attempt", || {
        assert_eq!(
            delivered + retry + dead_results,
            attempts,
            "delivered {delivered} + retry {retry} + dead {dead_results} vs {attempts} \
             attempts that reached the sink"
        );
    });
    c.run("final metrics: retries_total", || {
        assert_eq!(
            metric0(&d, "gridedge_outbox_retries_total", &["target=\"cdr\""]),
            retry,
            "retries_total vs deliveries_total{{result=retry}}"
        );
    });
    c.run("final metrics: enqueued_total", || {
        let enq = metric0(&d, "gridedge_outbox_enqueued_total", &["target=\"cdr\""]);
        assert!(
            enq >= want_keys as f64 && enq <= (want_keys + 8) as f64,
            "enqueued_total {enq} (records {want_keys}, replays 8)"
        );
    });
    c.run("final metrics: gauges", || {
        let ctx = format!("at the end (stats {})", admin.stats());
        assert_gauge(&d, "gridedge_outbox_depth", 0.0, &ctx);
        assert_gauge(&d, "gridedge_outbox_oldest_age_seconds", 0.0, &ctx);
        assert_gauge(&d, "gridedge_outbox_dead_letters", 0.0, &ctx);
        assert_eq!(
            metric0(&d, "gridedge_outbox_refused_total", &["target=\"cdr\""]),
            0.0,
            "refused_total"
        );
    });
    c.run("final metrics: push_seconds", || {
        let pushes = d
            .metric("gridedge_outbox_push_seconds_count", &["target=\"cdr\""])
            .unwrap_or_else(|| panic!("no gridedge_outbox_push_seconds histogram\n{m}"));
        assert!(
            pushes >= delivered && pushes <= attempts,
            "push_seconds_count {pushes}: attempts {attempts}, delivered {delivered}"
        );
        assert!(
            m.contains("gridedge_outbox_push_seconds_bucket"),
            "push_seconds is not a histogram"
        );
    });
    c.finish(&d);
}

// ------------------------------------------------------------------------------------------
// 2. Independence of calls
// ------------------------------------------------------------------------------------------

#[test]
fn a_call_stuck_on_500_does_not_block_other_calls() {
    let o = Opts {
        max_attempts: 1000,
        backoff_base_ms: 20,
        backoff_max_ms: 300,
        ..Opts::default()
    };
    let (sink, plan) = scripted_sink(Duration::from_millis(o.timeout_ms));
    let d = Daemon::start(&config(&sink, o));
    let stuck = CallDoc::new(&caller("135"), true);
    plan.lock()
        .unwrap()
        .insert(stuck.caller.clone(), Behaviour::Http500Always);
    post(&d, &stuck);
    let first = sink
        .wait_until(Duration::from_secs(20), |log| {
            log.iter()
                .filter(|r| r.field("USERNUMBER") == stuck.caller)
                .count()
                >= 2
        })
        .unwrap_or_else(|_| d.fail("the stuck call's first record was not tried twice"));
    let stuck_key = first
        .iter()
        .find(|r| r.field("USERNUMBER") == stuck.caller)
        .unwrap()
        .key()
        .to_string();

    let others: Vec<CallDoc> = (0..15)
        .map(|_| CallDoc::new(&caller("136"), true))
        .collect();
    let t = Instant::now();
    for doc in &others {
        post(&d, doc);
    }
    let log = sink
        .wait_until(Duration::from_secs(30), |log| {
            others
                .iter()
                .all(|doc| keys_of(log, &doc.caller).len() == 2)
                && by_key(log)
                    .iter()
                    .filter(|(k, _)| **k != stuck_key)
                    .filter(|(_, r)| r[0].field("USERNUMBER") != stuck.caller)
                    .all(|(_, r)| r.iter().any(Request::accepted))
        })
        .unwrap_or_else(|log| {
            d.fail(&format!(
                "other calls not delivered within 30 s while one call is stuck on 500:\n{}",
                log.iter()
                    .map(Request::describe)
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
        });
    eprintln!(
        "30 records of 15 other calls delivered in {:?} while one call got 500s",
        t.elapsed()
    );
    let stuck_keys = keys_of(&log, &stuck.caller);
    assert_eq!(
        stuck_keys,
        vec![stuck_key.clone()],
        "the stuck call's second record was sent before its first was acknowledged"
    );
    let tries = sink.requests_for(&stuck_key).len();
    assert!(tries >= 2, "stuck record tried {tries} times");
    check_call_order(&log, usize::MAX).unwrap_or_else(|e| d.fail(&e));

    // Unstuck: both records go, in order.
    plan.lock()
        .unwrap()
        .insert(stuck.caller.clone(), Behaviour::Ok);
    let log = sink
        .wait_until(Duration::from_secs(20), |log| {
            let ks = keys_of(log, &stuck.caller);
            ks.len() == 2
                && ks
                    .iter()
                    .all(|k| log.iter().any(|r| r.key() == k && r.accepted()))
        })
        .unwrap_or_else(|_| d.fail("the stuck call was not delivered once the sink recovered"));
    check_call_order(&log, usize::MAX).unwrap_or_else(|e| d.fail(&e));
    for reqs in by_key(&log).values() {
        check_same_body(reqs).unwrap_or_else(|e| d.fail(&e));
        check_wire(&reqs[0]).unwrap_or_else(|e| d.fail(&e));
    }
}

/// One call answered 500 for ever, and nothing else going on: its record is dead-lettered
/// after `max_attempts` attempts, each of which reached the sink, and the next record of the
/// call follows the same way (exhausted retries are dead-lettered; an attempt that reached
/// the receiver is an attempt).
#[test]
fn a_record_always_answered_500_is_dead_lettered_after_max_attempts() {
    let o = Opts {
        max_attempts: 4,
        backoff_base_ms: 20,
        backoff_max_ms: 200,
        ..Opts::default()
    };
    let (sink, plan) = scripted_sink(Duration::from_millis(o.timeout_ms));
    let d = Daemon::start(&config(&sink, o));
    let admin = Admin {
        addr: d.listeners.http,
    };
    let doc = CallDoc::new(&caller("134"), true);
    plan.lock()
        .unwrap()
        .insert(doc.caller.clone(), Behaviour::Http500Always);
    post(&d, &doc);
    let dead = poll_until(Duration::from_secs(20), || {
        let items = admin.dead_items();
        (items.len() == 2).then_some(items)
    });
    let log = sink.requests();
    let per_key: Vec<(String, usize)> = by_key(&log)
        .into_iter()
        .map(|(k, r)| (k, r.len()))
        .collect();
    let Some(dead) = dead else {
        d.fail(&format!(
            "both records of a call answered 500 for ever should be dead after {} attempts \
             each; after 20 s the sink saw {per_key:?} and the dead letters are {:?}; stats {}",
            o.max_attempts,
            admin.dead_items(),
            admin.stats()
        ));
    };
    for item in &dead {
        let k = item["idempotencyKey"].as_str().unwrap_or("");
        let sent = sink.requests_for(k).len();
        let reason = item["reason"].as_str().unwrap_or("");
        assert!(
            reason.starts_with("exhausted") && reason.contains("500"),
            "reason {reason:?}"
        );
        assert_eq!(
            sent, o.max_attempts as usize,
            "record {k}: the sink got {sent} attempts, max_attempts is {}: {item}",
            o.max_attempts
        );
        assert_eq!(
            num(&item["attempts"]),
            Some(sent as f64),
            "attempts field of {item}"
        );
    }
    check_call_order(&log, usize::MAX).unwrap_or_else(|e| d.fail(&e));
}

/// A call stuck on 500 for a long time (its retries backing off towards a long maximum) must
/// not hold back the records of other calls: they are delivered promptly, not when the stuck
/// record's next retry (or a probe on its behalf) happens to come round.
#[test]
fn a_long_stuck_call_does_not_delay_new_calls() {
    let o = Opts {
        max_attempts: 1000,
        backoff_base_ms: 500,
        backoff_max_ms: 60_000,
        ..Opts::default()
    };
    let (sink, plan) = scripted_sink(Duration::from_millis(o.timeout_ms));
    let d = Daemon::start(&config(&sink, o));
    let stuck = CallDoc::new(&caller("138"), false);
    plan.lock()
        .unwrap()
        .insert(stuck.caller.clone(), Behaviour::Http500Always);
    post(&d, &stuck);
    // Let it fail for a while, so its backoff has grown.
    let t = Instant::now();
    let tries = sink
        .wait_until(Duration::from_secs(40), |log| {
            log.iter()
                .filter(|r| r.field("USERNUMBER") == stuck.caller)
                .count()
                >= 8
        })
        .map(|l| l.len())
        .unwrap_or_else(|l| l.len());
    eprintln!("stuck record tried {tries} times in {:?}", t.elapsed());
    assert!(
        tries >= 4,
        "the stuck record was tried only {tries} times in 40 s"
    );

    // New calls arrive: each must be delivered within a few seconds of its post (the
    // document is stored at once; with settle_secs = 1 a one-leg call is built at once or
    // within about a second).
    let others: Vec<CallDoc> = (0..3)
        .map(|_| CallDoc::new(&caller("138"), false))
        .collect();
    let posted = Instant::now();
    for doc in &others {
        post(&d, doc);
    }
    let delivered = |log: &[Request]| {
        others.iter().all(|doc| {
            log.iter()
                .any(|r| r.field("USERNUMBER") == doc.caller && r.accepted())
        })
    };
    let took = match sink.wait_until(Duration::from_secs(30), delivered) {
        Ok(_) => posted.elapsed(),
        Err(log) => d.fail(&format!(
            "new calls not delivered within 30 s while another call is stuck on 500 \
             (backoff_max {} ms): one stuck call held back the others\n{}",
            o.backoff_max_ms,
            log.iter()
                .filter(|r| r.arrived >= posted)
                .map(Request::describe)
                .collect::<Vec<_>>()
                .join("\n")
        )),
    };
    eprintln!("new calls delivered {took:?} after their post while another call was stuck");
    assert!(
        took <= Duration::from_secs(4),
        "new calls took {took:?} to be delivered while one call was stuck on 500 (backoff_max \
         {} ms): one stuck call held back the others",
        o.backoff_max_ms
    );
}

/// `Retry-After` is a minimum, whatever else happens meanwhile: a record answered 503 with
/// `Retry-After: 4` is not sent again sooner, even when other calls' failures and then their
/// successes (which bring a target back and release what waits on it) come in between.
#[test]
fn retry_after_is_a_minimum_even_when_other_deliveries_succeed_meanwhile() {
    let o = Opts {
        max_attempts: 100,
        backoff_base_ms: 20,
        backoff_max_ms: 200,
        ..Opts::default()
    };
    let sink = Sink::start();
    let d = Daemon::start(&config(&sink, o));
    let a = CallDoc::new(&caller("130"), false);
    let others: Vec<CallDoc> = (0..2)
        .map(|_| CallDoc::new(&caller("130"), false))
        .collect();
    let (ac, oc): (String, Vec<String>) = (
        a.caller.clone(),
        others.iter().map(|d| d.caller.clone()).collect(),
    );
    sink.script(move |r: &Request, earlier: usize| {
        let who = r.field("USERNUMBER");
        if who == ac && earlier == 0 {
            Answer::retry_after(503, 4)
        } else if oc.iter().any(|c| c == who) && earlier < 2 {
            Answer::status(500)
        } else {
            Answer::Ok
        }
    });
    post(&d, &a);
    let first = sink
        .wait_until(Duration::from_secs(20), |log| {
            log.iter()
                .any(|r| r.field("USERNUMBER") == a.caller && r.answered.is_some())
        })
        .unwrap_or_else(|_| d.fail("the record was not sent"));
    let answered = first
        .iter()
        .find(|r| r.field("USERNUMBER") == a.caller)
        .and_then(|r| r.answered)
        .unwrap();
    // Meanwhile other calls fail a few times, then go through.
    for doc in &others {
        post(&d, doc);
    }
    let log = sink
        .wait_until(Duration::from_secs(30), |log| {
            log.iter()
                .filter(|r| r.field("USERNUMBER") == a.caller)
                .any(Request::accepted)
                && others.iter().all(|doc| {
                    log.iter()
                        .any(|r| r.field("USERNUMBER") == doc.caller && r.accepted())
                })
        })
        .unwrap_or_else(|log| {
            d.fail(&format!(
                "not all delivered within 30 s:\n{}",
                log.iter()
                    .map(Request::describe)
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
        });
    let mine: Vec<&Request> = log
        .iter()
        .filter(|r| r.field("USERNUMBER") == a.caller)
        .collect();
    let gap = mine[1].arrived - answered;
    eprintln!(
        "503 Retry-After: 4 -> next attempt after {gap:?} ({} requests in all)",
        log.len()
    );
    assert!(
        gap >= Duration::from_millis(3950),
        "Retry-After: 4 not honoured: the record was sent again {gap:?} after the 503 \
         (other calls failed then succeeded meanwhile)\n{}",
        log.iter()
            .map(|r| format!(
                "{:>6} ms {}",
                r.arrived.saturating_duration_since(answered).as_millis(),
                r.describe()
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ------------------------------------------------------------------------------------------
// 3. Bad admin requests
// ------------------------------------------------------------------------------------------

#[test]
fn bad_admin_requests_get_4xx_and_change_nothing() {
    let o = Opts::default();
    let (sink, plan) = scripted_sink(Duration::from_millis(o.timeout_ms));
    let d = Daemon::start(&config(&sink, o));
    let admin = Admin {
        addr: d.listeners.http,
    };
    let doc = CallDoc::new(&caller("133"), false);
    plan.lock()
        .unwrap()
        .insert(doc.caller.clone(), Behaviour::Http400);
    post(&d, &doc);
    let items = poll_until(Duration::from_secs(20), || {
        let i = admin.dead_items();
        (!i.is_empty()).then_some(i)
    })
    .unwrap_or_else(|| d.fail("the 400 record was not dead-lettered within 20 s"));
    assert_eq!(items.len(), 1, "{items:?}");
    let item = items[0].clone();
    let id = id_of(&item);
    let key = item["idempotencyKey"].as_str().unwrap().to_string();
    // From now on the sink would accept it: any replay would show.
    plan.lock()
        .unwrap()
        .insert(doc.caller.clone(), Behaviour::Ok);
    let before_stats = admin.stats();
    let before_requests = sink.request_count();

    let dead = "/admin/outbox/dead";
    let one = format!("/admin/outbox/dead/{id}");
    let replay_one = format!("/admin/outbox/dead/{id}/replay");
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, Auth);
    let cases: Vec<Case> = vec![
        ("GET", dead.into(), vec![("target", "cdr")], Auth::Unsigned),
        ("GET", dead.into(), vec![("target", "cdr")], Auth::WrongSign),
        ("GET", dead.into(), vec![("target", "cdr")], Auth::Stale),
        (
            "GET",
            dead.into(),
            vec![("target", "cdr")],
            Auth::UnknownAccount,
        ),
        (
            "GET",
            dead.into(),
            vec![("target", "cdr"), ("limit", "abc")],
            Auth::Good,
        ),
        ("GET", one.clone(), vec![], Auth::Unsigned),
        ("GET", one.clone(), vec![], Auth::WrongSign),
        (
            "GET",
            "/admin/outbox/dead/not-an-id".into(),
            vec![],
            Auth::Good,
        ),
        (
            "GET",
            "/admin/outbox/dead/987654321".into(),
            vec![],
            Auth::Good,
        ),
        ("GET", "/admin/outbox/stats".into(), vec![], Auth::Unsigned),
        ("GET", "/admin/outbox/stats".into(), vec![], Auth::WrongSign),
        ("POST", replay_one.clone(), vec![], Auth::Unsigned),
        ("POST", replay_one.clone(), vec![], Auth::WrongSign),
        ("POST", replay_one.clone(), vec![], Auth::Stale),
        (
            "POST",
            "/admin/outbox/dead/987654321/replay".into(),
            vec![],
            Auth::Good,
        ),
        (
            "POST",
            "/admin/outbox/dead/not-an-id/replay".into(),
            vec![],
            Auth::Good,
        ),
        (
            "POST",
            "/admin/outbox/dead/replay".into(),
            vec![("target", "cdr")],
            Auth::Unsigned,
        ),
        (
            "POST",
            "/admin/outbox/dead/replay".into(),
            vec![("target", "cdr")],
            Auth::WrongSign,
        ),
        ("GET", replay_one.clone(), vec![], Auth::Good),
    ];
    let mut c = Checks::new();
    for (method, path, params, auth) in &cases {
        c.run(&format!("{method} {path} {params:?} {auth:?}"), || {
            let r = admin.request(method, path, params, *auth);
            assert!(
                (400..500).contains(&r.status),
                "want 4xx, got {} {}",
                r.status,
                r.body
            );
        });
    }
    // The brief puts the signature in the query string, seed 004 in the headers: both work.
    for auth in [Auth::QueryOnly, Auth::HeadersOnly] {
        c.run(&format!("signed with {auth:?}"), || {
            let r = admin.request("GET", "/admin/outbox/stats", &[], auth);
            assert_eq!(r.status, 200, "{auth:?}: {} {}", r.status, r.body);
            let r = admin.request("GET", &one, &[], auth);
            assert_eq!(r.status, 200, "{auth:?}: {} {}", r.status, r.body);
        });
    }
    // An unknown target replays nothing (4xx or zero).
    c.run("replay all of an unknown target", || {
        let r = admin.request(
            "POST",
            "/admin/outbox/dead/replay",
            &[("target", "nosuch")],
            Auth::Good,
        );
        assert!(r.status < 500, "{} {}", r.status, r.body);
        if r.status == 200 {
            let v: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(num(&v["replayed"]), Some(0.0), "{v}");
        }
    });
    // The CLI refuses bad ids too, with a non-zero exit.
    for args in [
        vec!["dead", "show", "987654321"],
        vec!["dead", "show", "not-an-id"],
        vec!["dead", "replay", "987654321"],
        vec!["dead", "replay", "not-an-id"],
    ] {
        c.run(&format!("CLI {args:?}"), || {
            let (status, out, err) = cli(&d, &args);
            assert!(
                !status.success(),
                "exit {status}\nstdout {out}\nstderr {err}"
            );
            assert!(
                !err.trim().is_empty() || !out.trim().is_empty(),
                "no message"
            );
        });
    }
    c.run("nothing changed", || {
        // Anything a bad request might have replayed would be delivered within ~1 s.
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_millis(1500) {
            assert_eq!(
                sink.request_count(),
                before_requests,
                "a bad request replayed something"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let after = admin.dead_items();
        assert_eq!(after.len(), 1, "{after:?}");
        assert_eq!(after[0], item, "the dead letter changed");
        let s = admin.stats();
        assert_eq!(s["dead"], before_stats["dead"], "{s}");
        assert_eq!(s["depth"], before_stats["depth"], "{s}");
        assert_eq!(sink.requests_for(&key).len(), 1);
        assert_gauge(
            &d,
            "gridedge_outbox_dead_letters",
            1.0,
            "after bad requests",
        );
    });
    c.finish(&d);
}

// ------------------------------------------------------------------------------------------
// 4. A long outage
// ------------------------------------------------------------------------------------------

#[test]
fn a_long_outage_is_probed_not_hammered_and_the_backlog_drains_at_full_speed() {
    // Time compressed: attempts start 50 ms apart and back off to 10 s. Per-record backoff
    // would spread the backlog's resumption over up to 10 s after recovery; releasing every
    // waiting record on the first success drains it in a moment.
    let o = Opts {
        concurrency: 16,
        max_attempts: 20,
        backoff_base_ms: 50,
        backoff_max_ms: 10_000,
        timeout_ms: 2000,
    };
    let mut sink = Sink::start();
    let d = Daemon::start(&config(&sink, o));
    let admin = Admin {
        addr: d.listeners.http,
    };

    // Warm-up: the target works.
    let warm: Vec<CallDoc> = (0..3)
        .map(|_| CallDoc::new(&caller("131"), false))
        .collect();
    for doc in &warm {
        post(&d, doc);
    }
    sink.wait_until(Duration::from_secs(20), |log| {
        warm.iter().all(|doc| {
            log.iter()
                .any(|r| r.field("USERNUMBER") == doc.caller && r.accepted())
        })
    })
    .unwrap_or_else(|_| d.fail("warm-up records not delivered"));

    // Outage: the port is closed while 150 calls (300 records) pile up.
    let retry_before = deliveries(&d, "retry");
    let dead_before = deliveries(&d, "dead");
    let requests_before = sink.request_count();
    sink.stop();
    let down_at = Instant::now();
    let backlog: Vec<CallDoc> = (0..150)
        .map(|_| CallDoc::new(&caller("132"), true))
        .collect();
    for doc in &backlog {
        post(&d, doc);
    }
    let posted_in = down_at.elapsed();
    let want = backlog.len() * 2;
    // Wait until every record is built and queued, then keep the sink down for a while.
    poll_until(Duration::from_secs(30), || {
        (metric0(&d, "gridedge_outbox_depth", &["target=\"cdr\""]) >= want as f64).then_some(())
    })
    .unwrap_or_else(|| {
        d.fail(&format!(
            "depth never reached {want} during the outage\n{}",
            d.metrics()
        ))
    });
    let outage = Duration::from_secs(12);
    while down_at.elapsed() < outage {
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = admin.stats();
    let tries = deliveries(&d, "retry") - retry_before;
    let outage_secs = down_at.elapsed().as_secs_f64();
    eprintln!(
        "outage {outage_secs:.1} s: {want} records queued (posted in {posted_in:?}), {tries} \
         failed attempts, stats {s}"
    );
    let mut c = Checks::new();
    c.run("the sink was not hammered during the outage", || {
        // A target-level probe: the in-flight window at most, then about one attempt per
        // backoff step. Per-record retries would be thousands here.
        let bound = o.concurrency as f64 + 3.0 * outage_secs + 10.0;
        assert!(tries > 0.0, "no attempt at all during the outage");
        assert!(
            tries <= bound,
            "{tries} attempts in {outage_secs:.1} s of outage (bound {bound})"
        );
        assert_eq!(
            deliveries(&d, "dead"),
            dead_before,
            "dead letters during the outage"
        );
        assert_eq!(num(&s["depth"]), Some(want as f64), "stats {s}");
        assert!(
            num(&s["oldestAgeMs"]).is_some_and(|a| a >= 5000.0),
            "oldestAgeMs during the outage: {s}"
        );
        let age = metric0(
            &d,
            "gridedge_outbox_oldest_age_seconds",
            &["target=\"cdr\""],
        );
        assert!(age >= 5.0, "oldest_age_seconds {age}");
    });

    // Recovery on the same port.
    sink.restart();
    let up_at = Instant::now();
    let done = |log: &[Request]| {
        backlog.iter().all(|doc| {
            let ks = keys_of(log, &doc.caller);
            ks.len() == 2
                && ks
                    .iter()
                    .all(|k| log.iter().any(|r| r.key() == k && r.accepted()))
        })
    };
    let log = sink
        .wait_until(Duration::from_secs(40), done)
        .unwrap_or_else(|log| {
            let got = by_key(&log[requests_before..]).len();
            d.fail(&format!(
                "backlog not delivered within 40 s of recovery: {got} of {want} keys\n{}",
                d.metrics()
            ))
        });
    let after: Vec<&Request> = log.iter().filter(|r| r.arrived >= up_at).collect();
    let first = after.first().expect("no request after recovery").arrived;
    let first_ok = after
        .iter()
        .find(|r| r.accepted())
        .expect("nothing accepted after recovery")
        .arrived;
    let last = after
        .iter()
        .filter(|r| r.accepted())
        .map(|r| r.arrived)
        .max()
        .unwrap();
    eprintln!(
        "recovery: first attempt {:?} after the port reopened, backlog of {want} drained {:?} \
         after the first success ({} requests, {} connections)",
        first - up_at,
        last - first_ok,
        after.len(),
        sink.connections_between(up_at, Instant::now())
    );
    c.run(
        "the probe found the sink back within one backoff step",
        || {
            assert!(
                first - up_at <= Duration::from_millis(o.backoff_max_ms + 3000),
                "first attempt {:?} after recovery",
                first - up_at
            );
        },
    );
    c.run("the backlog drained at full speed", || {
        assert!(
            last - first_ok <= Duration::from_secs(4),
            "drain took {:?} after the first success (backoff_max {} ms)",
            last - first_ok,
            o.backoff_max_ms
        );
    });
    c.run("everything delivered, nothing dead, order kept", || {
        assert!(done(&log));
        check_call_order(&log, usize::MAX).unwrap();
        for reqs in by_key(&log).values() {
            check_same_body(reqs).unwrap();
            check_wire(&reqs[0]).unwrap();
        }
        let s = poll_until(Duration::from_secs(10), || {
            let s = admin.stats();
            (num(&s["depth"]) == Some(0.0)).then_some(s)
        })
        .unwrap_or_else(|| panic!("depth not 0: {}", admin.stats()));
        assert_eq!(num(&s["dead"]), Some(0.0), "{s}");
        assert!(admin.dead_items().is_empty());
        assert_eq!(deliveries(&d, "dead"), dead_before);
        assert_gauge(&d, "gridedge_outbox_dead_letters", 0.0, "after the outage");
        assert_gauge(&d, "gridedge_outbox_depth", 0.0, "after the outage");
    });
    c.finish(&d);
}
