//! Client helpers for the seed 004 management API and the STOMP event stream, shared by
//! `e2e_mgmt_api.rs` and `e2e_presence.rs` (`#[path]`-included; no HTTP client crate).
//!
//! * [`Mgmt`] signs every request the way the management system does
//!   (`sign = md5(account + timestamp + secret)`, lower-case hex, timestamp in Unix ms) and
//!   speaks HTTP/1.1 by hand over `std::net::TcpStream` with `Connection: close`.
//! * [`ApiResp`] is one answer with helpers for the `{"data", "reqResult"}` envelope and the
//!   assertions every test makes on it (status, `reqResult.code` == status, JSON, a message
//!   naming the problem).
//! * [`Stomp`] is a minimal synchronous STOMP 1.2 client over tokio-tungstenite, framed either
//!   directly in WebSocket text messages or in SockJS's `o` / `a[...]` / `["..."]` envelope. It
//!   owns a current-thread runtime (like the harness's `WsConn`), so tests stay plain `#[test]`
//!   functions that can mix it with the blocking harness.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use serde_json::Value;

// ------------------------------------------------------------------------------------------
// Config
// ------------------------------------------------------------------------------------------

pub const ACCOUNT: &str = "ops";
/// The brief's example secret was "s3cret"; the daemon requires at least 8 characters.
pub const SECRET: &str = "s3cret-ops";
pub const SERVERS: &str = "wss://gridedge.test:7443";
pub const NATIVE_SERVERS: &str = "gridedge.test:5060";
pub const NATIVE_HOST: &str = "gridedge.test";
/// First and last extension of the configured range.
pub const RANGE_FIRST: u32 = 8000;
pub const RANGE_LAST: u32 = 8099;

/// The management/presence overrides for `Daemon::start`, with `allow` as the management
/// allow-list (a TOML array body, e.g. `"127.0.0.1/32"`).
pub fn mgmt_config(allow: &str) -> String {
    format!(
        r#"
[directory]
ranges = ["{RANGE_FIRST}-{RANGE_LAST}"]
servers = "{SERVERS}"
native_servers = "{NATIVE_SERVERS}"

[presence]
timezone = "Asia/Shanghai"
acw_secs = 0

[management]
allow = [{allow}]
timestamp_window_secs = 300

[[management.accounts]]
account = "{ACCOUNT}"
secret = "{SECRET}"
"#
    )
}

/// The default overrides: management allowed from 127.0.0.1.
pub fn default_config() -> String {
    mgmt_config("\"127.0.0.1/32\"")
}

// ------------------------------------------------------------------------------------------
// Routes
// ------------------------------------------------------------------------------------------

pub const CREATE_PROJECT: &str = "/callcenter/callProject/api/createProject/v1";
pub const GET_BY_CERTIFICATE: &str = "/callcenter/callProject/api/getByCertificate/v1";
pub const GET_EXTENSIONS: &str = "/callcenter/callProject/api/getExtentionByProject/v1";
pub const SET_WORK_STATUS: &str = "/callcenter/callProject/api/setWorkStatus/v1";
pub const SET_WORK_STATUS_BY_PROJECT: &str =
    "/callcenter/callProject/api/setWorkStatusByProjectCode/v1";
pub const SET_EXTENSION_STATUS: &str = "/callcenter/callProject/api/setExtensionStatus/v1";
pub const FINISH_PROJECT: &str = "/callcenter/callProject/api/finishProject/v1";
pub const DISTRIBUTION_SEAT: &str = "/callcenter/callProject/api/distributionSeat/v1";
pub const SEND_TO_USER: &str = "/callcenter/callProject/api/sendToUser/v1";

pub const WS_PATH: &str = "/callcenter/ws";

// ------------------------------------------------------------------------------------------
// Signing
// ------------------------------------------------------------------------------------------

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A fresh timestamp (Unix ms), strictly increasing within this process, so two requests
/// never carry identical auth headers (the daemon refuses a replay).
pub fn next_timestamp() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = now_ms();
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let ts = now.max(prev + 1);
        match LAST.compare_exchange(prev, ts, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return ts,
            Err(p) => prev = p,
        }
    }
}

/// `md5(account + timestamp + secret)`, lower-case hex.
pub fn sign(account: &str, timestamp: &str, secret: &str) -> String {
    let mut h = Md5::new();
    h.update(account.as_bytes());
    h.update(timestamp.as_bytes());
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

/// `account`, `timestamp`, `sign` headers for `timestamp`.
pub fn auth_headers_at(account: &str, secret: &str, timestamp: &str) -> Vec<(String, String)> {
    vec![
        ("account".into(), account.into()),
        ("timestamp".into(), timestamp.into()),
        ("sign".into(), sign(account, timestamp, secret)),
    ]
}

/// Auth headers of the configured account with a fresh timestamp.
pub fn auth_headers() -> Vec<(String, String)> {
    auth_headers_at(ACCOUNT, SECRET, &next_timestamp().to_string())
}

// ------------------------------------------------------------------------------------------
// Form encoding
// ------------------------------------------------------------------------------------------

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `application/x-www-form-urlencoded` body or query string.
pub fn form(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=UTF-8";

// ------------------------------------------------------------------------------------------
// Raw HTTP/1.1
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a complete (or connection-close terminated) HTTP/1.1 response.
pub fn parse_http_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad(format!("no header end: {:?}", String::from_utf8_lossy(raw))))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut body = raw[end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad(format!("bad status line: {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        body = dechunk(&body);
    } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.truncate(n);
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = s.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&s[..eol]);
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        let rest = &s[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        s = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// One HTTP/1.1 request with `Connection: close`. The body is written from a second thread
/// while this one reads, so a server that answers (413) and closes before reading a large
/// body is still observed; bytes received before a reset are kept.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut msg = head.into_bytes();
    let writer = if body.len() <= 64 * 1024 {
        msg.extend_from_slice(body);
        s.write_all(&msg)?;
        None
    } else {
        s.write_all(&msg)?;
        let mut w = s.try_clone()?;
        let body = body.to_vec();
        Some(std::thread::spawn(move || {
            // The server may refuse and close early: a write error here is expected.
            let _ = w.write_all(&body);
        }))
    };
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let read_err = loop {
        match s.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Some(e),
        }
    };
    if let Some(w) = writer {
        let _ = s.shutdown(std::net::Shutdown::Both);
        let _ = w.join();
    }
    match (parse_http_response(&raw), read_err) {
        (Ok(r), _) => Ok(r),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(e),
    }
}

// ------------------------------------------------------------------------------------------
// The management API
// ------------------------------------------------------------------------------------------

/// One management API answer.
#[derive(Debug, Clone)]
pub struct ApiResp {
    pub what: String,
    pub http: HttpResponse,
    pub json: Option<Value>,
}

impl ApiResp {
    pub fn new(what: String, http: HttpResponse) -> ApiResp {
        let json = serde_json::from_str(&http.body).ok();
        ApiResp { what, http, json }
    }

    pub fn status(&self) -> u16 {
        self.http.status
    }

    pub fn code(&self) -> Option<i64> {
        self.json.as_ref()?.pointer("/reqResult/code")?.as_i64()
    }

    pub fn msg(&self) -> Option<&str> {
        self.json.as_ref()?.pointer("/reqResult/msg")?.as_str()
    }

    pub fn data(&self) -> Option<&Value> {
        self.json.as_ref()?.get("data")
    }

    fn describe(&self) -> String {
        format!(
            "{}\n  -> HTTP {} content-type {:?}\n  body: {}",
            self.what,
            self.http.status,
            self.http.header("content-type"),
            crate_tail(&self.http.body, 2000)
        )
    }

    /// Asserts a JSON envelope (content-type, parseable, never HTML or a stack trace).
    fn assert_json(&self, ctx: &str) {
        let ct = self.http.header("content-type").unwrap_or("");
        assert!(
            ct.to_ascii_lowercase().starts_with("application/json"),
            "{ctx}: content-type is not application/json\n{}",
            self.describe()
        );
        assert!(
            self.json.as_ref().is_some_and(|v| v.is_object()),
            "{ctx}: body is not a JSON object\n{}",
            self.describe()
        );
        let lower = self.http.body.to_ascii_lowercase();
        for bad in ["<html", "panicked", "stack backtrace", "at src/"] {
            assert!(
                !lower.contains(bad),
                "{ctx}: body contains {bad:?}\n{}",
                self.describe()
            );
        }
    }

    /// Asserts HTTP 200 with `reqResult {code: 1, msg: "成功"}`; returns `data` (Null if absent).
    pub fn ok(&self, ctx: &str) -> Value {
        assert_eq!(
            self.http.status,
            200,
            "{ctx}: expected HTTP 200\n{}",
            self.describe()
        );
        self.assert_json(ctx);
        assert_eq!(
            self.code(),
            Some(1),
            "{ctx}: reqResult.code\n{}",
            self.describe()
        );
        assert_eq!(
            self.msg(),
            Some("成功"),
            "{ctx}: reqResult.msg\n{}",
            self.describe()
        );
        self.data().cloned().unwrap_or(Value::Null)
    }

    /// Asserts a failure: HTTP `status`, JSON `reqResult.code == status`, no `data`, and a
    /// message that contains at least one of `any_of` (case-insensitive; empty = any message).
    pub fn err(&self, status: u16, any_of: &[&str], ctx: &str) -> String {
        assert_eq!(
            self.http.status,
            status,
            "{ctx}: expected HTTP {status}\n{}",
            self.describe()
        );
        self.assert_json(ctx);
        assert_eq!(
            self.code(),
            Some(i64::from(status)),
            "{ctx}: reqResult.code must equal the HTTP status\n{}",
            self.describe()
        );
        let msg = self.msg().unwrap_or("").to_string();
        assert!(
            !msg.trim().is_empty() && msg != "成功",
            "{ctx}: reqResult.msg must say what is wrong\n{}",
            self.describe()
        );
        let lower = msg.to_lowercase();
        assert!(
            any_of.is_empty() || any_of.iter().any(|k| lower.contains(&k.to_lowercase())),
            "{ctx}: reqResult.msg {msg:?} does not name the problem (want one of {any_of:?})\n{}",
            self.describe()
        );
        assert!(
            self.data().is_none_or(Value::is_null),
            "{ctx}: a failure carries no data\n{}",
            self.describe()
        );
        msg
    }
}

fn crate_tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// A signed management API client.
#[derive(Debug, Clone)]
pub struct Mgmt {
    pub addr: SocketAddr,
    pub account: String,
    pub secret: String,
}

impl Mgmt {
    pub fn new(addr: SocketAddr) -> Mgmt {
        Mgmt {
            addr,
            account: ACCOUNT.into(),
            secret: SECRET.into(),
        }
    }

    pub fn auth(&self) -> Vec<(String, String)> {
        auth_headers_at(&self.account, &self.secret, &next_timestamp().to_string())
    }

    /// A request with explicit headers (auth included by the caller) and a raw body.
    pub fn raw(
        &self,
        method: &str,
        target: &str,
        headers: Vec<(String, String)>,
        body: &[u8],
    ) -> ApiResp {
        let what = format!(
            "{method} {target} headers {headers:?} body {:?}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
        let http = http_request(self.addr, method, target, &headers, body)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        ApiResp::new(what, http)
    }

    /// A signed POST with a form body.
    pub fn post(&self, route: &str, params: &[(&str, &str)]) -> ApiResp {
        self.post_with(route, self.auth(), form(params).as_bytes())
    }

    /// A POST with the given auth headers and raw form body.
    pub fn post_with(&self, route: &str, auth: Vec<(String, String)>, body: &[u8]) -> ApiResp {
        let mut headers = auth;
        headers.push(("Content-Type".into(), FORM_CONTENT_TYPE.into()));
        self.raw("POST", route, headers, body)
    }

    /// A signed GET with the parameters in the query string.
    pub fn get(&self, route: &str, params: &[(&str, &str)]) -> ApiResp {
        self.get_with(route, self.auth(), params)
    }

    pub fn get_with(
        &self,
        route: &str,
        auth: Vec<(String, String)>,
        params: &[(&str, &str)],
    ) -> ApiResp {
        let target = if params.is_empty() {
            route.to_string()
        } else {
            format!("{route}?{}", form(params))
        };
        self.raw("GET", &target, auth, b"")
    }

    pub fn create_project(&self, code: &str, seats: &str) -> ApiResp {
        self.post(CREATE_PROJECT, &[("projectCode", code), ("seats", seats)])
    }

    /// createProject that must succeed; returns the certificate.
    pub fn create_ok(&self, code: &str, seats: u32) -> String {
        let data = self
            .create_project(code, &seats.to_string())
            .ok(&format!("createProject {code} seats={seats}"));
        data["certificate"]
            .as_str()
            .unwrap_or_else(|| panic!("createProject {code}: no certificate in {data}"))
            .to_string()
    }

    pub fn get_by_certificate(&self, cert: &str, username: Option<&str>, typ: &str) -> ApiResp {
        let mut p = vec![("certificate", cert), ("type", typ)];
        if let Some(u) = username {
            p.push(("username", u));
        }
        self.get(GET_BY_CERTIFICATE, &p)
    }

    /// Claims the next extension of the project (type 2): (username, password).
    pub fn claim(&self, cert: &str) -> (String, String) {
        let d = self
            .get_by_certificate(cert, None, "2")
            .ok("getByCertificate (claim next)");
        let user = d["username"].as_str().map(str::to_string);
        let pw = d["password"].as_str().map(str::to_string);
        match (user, pw) {
            (Some(u), Some(p)) if !p.is_empty() => (u, p),
            _ => panic!("getByCertificate: no username/password in {d}"),
        }
    }

    pub fn extensions(&self, project: &str) -> ApiResp {
        self.get(GET_EXTENSIONS, &[("projectCode", project)])
    }

    /// getExtentionByProject that must succeed: the list, sorted by username.
    pub fn extensions_ok(&self, project: &str) -> Vec<Value> {
        let data = self
            .extensions(project)
            .ok(&format!("getExtentionByProject {project}"));
        let mut list = data
            .as_array()
            .unwrap_or_else(|| {
                panic!("getExtentionByProject {project}: data is not a list: {data}")
            })
            .clone();
        list.sort_by_key(|e| e["username"].as_str().unwrap_or("").to_string());
        list
    }

    /// The entry of `user` in the project's extension list.
    pub fn extension(&self, project: &str, user: &str) -> Value {
        let list = self.extensions_ok(project);
        list.iter()
            .find(|e| e["username"].as_str() == Some(user))
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "{user} not in getExtentionByProject {project}: {}",
                    Value::Array(list.clone())
                )
            })
    }

    pub fn set_work_status(&self, user: &str, work_status: &str) -> ApiResp {
        self.post(
            SET_WORK_STATUS,
            &[("workStatus", work_status), ("username", user)],
        )
    }

    pub fn set_work_status_by_project(&self, project: &str, work_status: &str) -> ApiResp {
        self.post(
            SET_WORK_STATUS_BY_PROJECT,
            &[("workStatus", work_status), ("projectCode", project)],
        )
    }

    pub fn set_extension_status(&self, user: &str, work_status: &str) -> ApiResp {
        self.post(
            SET_EXTENSION_STATUS,
            &[("workStatus", work_status), ("username", user)],
        )
    }

    pub fn finish_project(&self, project: &str) -> ApiResp {
        self.post(FINISH_PROJECT, &[("projectCode", project)])
    }

    pub fn distribution_seat(&self, project: &str, user: &str) -> ApiResp {
        self.post(
            DISTRIBUTION_SEAT,
            &[("projectCode", project), ("username", user)],
        )
    }

    pub fn send_to_user(&self, project: &str, user: Option<&str>, content: &str) -> ApiResp {
        let mut p = vec![("projectCode", project), ("content", content)];
        if let Some(u) = user {
            p.push(("username", u));
        }
        self.post(SEND_TO_USER, &p)
    }
}

/// Usernames of an extension list, in order.
pub fn usernames(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|e| e["username"].as_str().unwrap_or("?").to_string())
        .collect()
}

// ------------------------------------------------------------------------------------------
// STOMP 1.2 over WebSocket / SockJS
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub command: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Frame {
    pub fn new(command: &str, headers: &[(&str, &str)], body: &str) -> Frame {
        Frame {
            command: command.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.into(),
        }
    }

    /// The first header of that name (STOMP 1.2 §"Repeated Header Entries").
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// Wire form; header values are escaped except in CONNECT/CONNECTED (STOMP 1.2).
    pub fn encode(&self) -> String {
        let raw = matches!(self.command.as_str(), "CONNECT" | "CONNECTED" | "STOMP");
        let mut s = format!("{}\n", self.command);
        for (k, v) in &self.headers {
            if raw {
                s.push_str(&format!("{k}:{v}\n"));
            } else {
                s.push_str(&format!("{}:{}\n", escape(k), escape(v)));
            }
        }
        s.push('\n');
        s.push_str(&self.body);
        s.push('\0');
        s
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\r', "\\r")
        .replace('\n', "\\n")
        .replace(':', "\\c")
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('c') => out.push(':'),
            Some('\\') => out.push('\\'),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Takes the first complete frame off `buf` (skipping heart-beat EOLs); `None` if incomplete.
pub fn take_frame(buf: &mut Vec<u8>) -> Option<Frame> {
    let lead = buf
        .iter()
        .position(|&b| b != b'\n' && b != b'\r')
        .unwrap_or(buf.len());
    buf.drain(..lead);
    if buf.is_empty() {
        return None;
    }
    let head_end = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let head_end_crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let (he, sep) = match (head_end, head_end_crlf) {
        (Some(a), Some(b)) => {
            if a.0 <= b.0 {
                a
            } else {
                b
            }
        }
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => return None,
    };
    let head = String::from_utf8_lossy(&buf[..he]).into_owned();
    let mut lines = head.split('\n').map(|l| l.trim_end_matches('\r'));
    let command = lines.next().unwrap_or("").to_string();
    let raw = command == "CONNECTED" || command == "CONNECT";
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            if raw {
                (k.to_string(), v.to_string())
            } else {
                (unescape(k), unescape(v))
            }
        })
        .collect();
    let body_start = he + sep;
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    let body_end = match len {
        Some(n) => {
            if buf.len() < body_start + n + 1 {
                return None;
            }
            body_start + n
        }
        None => body_start + buf[body_start..].iter().position(|&b| b == 0)?,
    };
    let body = String::from_utf8_lossy(&buf[body_start..body_end]).into_owned();
    // the NUL terminator (if present where expected)
    let mut consumed = body_end;
    if buf.get(consumed) == Some(&0) {
        consumed += 1;
    }
    buf.drain(..consumed);
    Some(Frame {
        command,
        headers,
        body,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One STOMP frame per WebSocket text message at `/callcenter/ws`.
    Raw,
    /// SockJS at `/callcenter/ws/{server}/{session}/websocket`.
    SockJs,
}

type WsStream = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A synchronous STOMP client.
pub struct Stomp {
    rt: tokio::runtime::Runtime,
    ws: WsStream,
    pub framing: Framing,
    buf: Vec<u8>,
    pending: VecDeque<Frame>,
    closed: bool,
    /// Every frame received so far, for failure messages.
    pub log: Vec<String>,
    /// The CONNECTED frame (after a successful `connect`).
    pub connected: Option<Frame>,
    next_receipt: u32,
}

/// CONNECT headers of an agent desktop.
pub fn agent_login(user: &str, password: &str) -> Vec<(String, String)> {
    vec![
        ("login".into(), user.into()),
        ("passcode".into(), password.into()),
    ]
}

/// CONNECT headers of a supervisor (management account signature).
pub fn supervisor_login() -> Vec<(String, String)> {
    auth_headers()
}

impl Stomp {
    /// Opens the WebSocket (and, for SockJS, waits for the `o` frame); no STOMP yet.
    pub fn open(addr: SocketAddr, framing: Framing) -> Result<Stomp, String> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let path = match framing {
            Framing::Raw => WS_PATH.to_string(),
            Framing::SockJs => format!(
                "{WS_PATH}/{:03}/{:08x}/websocket",
                rand_u32() % 1000,
                rand_u32()
            ),
        };
        let ws = rt.block_on(async {
            let tcp =
                tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
                    .await
                    .map_err(|_| "TCP connect timed out".to_string())?
                    .map_err(|e| e.to_string())?;
            let req = format!("ws://{addr}{path}")
                .into_client_request()
                .map_err(|e| e.to_string())?;
            let (ws, _resp) = tokio::time::timeout(
                Duration::from_secs(3),
                tokio_tungstenite::client_async(req, tcp),
            )
            .await
            .map_err(|_| "WebSocket handshake timed out".to_string())?
            .map_err(|e| format!("WebSocket handshake to {path}: {e}"))?;
            Ok::<_, String>(ws)
        })?;
        let mut s = Stomp {
            rt,
            ws,
            framing,
            buf: Vec::new(),
            pending: VecDeque::new(),
            closed: false,
            log: Vec::new(),
            connected: None,
            next_receipt: 0,
        };
        if framing == Framing::SockJs {
            match s.recv_ws(Duration::from_secs(3)) {
                Some(t) if t == "o" => {}
                other => return Err(format!("SockJS: first frame {other:?}, want \"o\"")),
            }
        }
        Ok(s)
    }

    /// Opens and sends CONNECT with `auth` headers; waits for CONNECTED. An ERROR frame (or a
    /// close) is returned as `Err` with its `message` header and body.
    pub fn connect(
        addr: SocketAddr,
        framing: Framing,
        auth: &[(String, String)],
    ) -> Result<Stomp, String> {
        let mut s = Stomp::open(addr, framing)?;
        let host = addr.to_string();
        let mut headers: Vec<(&str, &str)> = vec![
            ("accept-version", "1.2"),
            ("host", &host),
            ("heart-beat", "0,0"),
        ];
        headers.extend(auth.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        s.send_frame(&Frame::new("CONNECT", &headers, ""))?;
        match s.next_frame(Duration::from_secs(5)) {
            Some(f) if f.command == "CONNECTED" => {
                s.connected = Some(f);
                Ok(s)
            }
            Some(f) => Err(format!(
                "{} message={:?} body={:?}",
                f.command,
                f.header("message").unwrap_or(""),
                f.body
            )),
            None => Err(format!(
                "no CONNECTED within 5 s (closed: {})",
                s.is_closed()
            )),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Sends one frame.
    pub fn send_frame(&mut self, f: &Frame) -> Result<(), String> {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let wire = f.encode();
        let text = match self.framing {
            Framing::Raw => wire,
            Framing::SockJs => serde_json::to_string(&vec![wire]).expect("JSON string array"),
        };
        let ws = &mut self.ws;
        self.rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(5), ws.send(Message::Text(text))).await
            })
            .map_err(|_| "send timed out".to_string())?
            .map_err(|e| format!("send: {e}"))
    }

    /// Sends `text` as it is in one WebSocket text message (inside SockJS's `["..."]` array
    /// with SockJS framing): for malformed or hostile frames that [`Frame`] cannot express.
    pub fn send_raw(&mut self, text: &str) -> Result<(), String> {
        use tokio_tungstenite::tungstenite::Message;
        let text = match self.framing {
            Framing::Raw => text.to_string(),
            Framing::SockJs => serde_json::to_string(&vec![text]).expect("JSON string array"),
        };
        self.send_ws(Message::Text(text))
    }

    /// Sends `bytes` as one binary WebSocket message (bytes that are not UTF-8 cannot travel
    /// in a text message).
    pub fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        use tokio_tungstenite::tungstenite::Message;
        self.send_ws(Message::Binary(bytes))
    }

    fn send_ws(&mut self, msg: tokio_tungstenite::tungstenite::Message) -> Result<(), String> {
        use futures_util::SinkExt;
        let ws = &mut self.ws;
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), ws.send(msg)).await })
            .map_err(|_| "send timed out".to_string())?
            .map_err(|e| format!("send: {e}"))
    }

    /// One WebSocket text message (binary as lossy text), or `None` on timeout / close.
    fn recv_ws(&mut self, timeout: Duration) -> Option<String> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        if self.closed {
            return None;
        }
        let ws = &mut self.ws;
        let deadline = tokio::time::Instant::now() + timeout;
        let r = self.rt.block_on(async {
            loop {
                match tokio::time::timeout_at(deadline, ws.next()).await {
                    Err(_) => return Err(false),
                    Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => {
                        return Err(true)
                    }
                    Ok(Some(Ok(Message::Text(t)))) => return Ok(t),
                    Ok(Some(Ok(Message::Binary(b)))) => {
                        return Ok(String::from_utf8_lossy(&b).into_owned())
                    }
                    Ok(Some(Ok(_))) => continue,
                }
            }
        });
        match r {
            Ok(t) => Some(t),
            Err(closed) => {
                self.closed |= closed;
                None
            }
        }
    }

    /// Feeds one WebSocket message into the frame buffer.
    fn absorb(&mut self, text: &str) {
        match self.framing {
            Framing::Raw => self.buf.extend_from_slice(text.as_bytes()),
            Framing::SockJs => {
                if text == "h" || text == "o" {
                    return;
                }
                if let Some(arr) = text.strip_prefix('a') {
                    match serde_json::from_str::<Vec<String>>(arr) {
                        Ok(parts) => {
                            for p in parts {
                                self.buf.extend_from_slice(p.as_bytes());
                            }
                        }
                        Err(e) => self.log.push(format!("bad SockJS array {text:?}: {e}")),
                    }
                } else if text.starts_with('c') {
                    self.log.push(format!("SockJS close {text}"));
                    self.closed = true;
                } else {
                    self.log.push(format!("unexpected SockJS message {text:?}"));
                }
            }
        }
        while let Some(f) = take_frame(&mut self.buf) {
            self.log.push(format!("{f:?}"));
            self.pending.push_back(f);
        }
    }

    /// The next frame of any kind within `timeout`.
    pub fn next_frame(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self.pending.pop_front() {
                return Some(f);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.closed {
                return None;
            }
            let text = self.recv_ws(left)?;
            self.absorb(&text);
        }
    }

    /// The first queued or incoming frame satisfying `pred`; frames skipped are kept queued
    /// in order for later calls.
    pub fn next_frame_where(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Frame) -> bool,
    ) -> Option<Frame> {
        if let Some(i) = self.pending.iter().position(&mut pred) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.closed {
                return None;
            }
            let before = self.pending.len();
            let text = self.recv_ws(left)?;
            self.absorb(&text);
            if let Some(i) = self
                .pending
                .iter()
                .skip(before)
                .position(&mut pred)
                .map(|i| i + before)
            {
                return self.pending.remove(i);
            }
        }
    }

    /// Sends SUBSCRIBE with a receipt and waits for the RECEIPT (so the subscription is in
    /// force before the test triggers an event). An ERROR frame is `Err` with its message.
    pub fn subscribe(&mut self, id: &str, destination: &str) -> Result<(), String> {
        let receipt = self.receipt_id("sub");
        self.send_frame(&Frame::new(
            "SUBSCRIBE",
            &[
                ("id", id),
                ("destination", destination),
                ("ack", "auto"),
                ("receipt", &receipt),
            ],
            "",
        ))?;
        self.await_receipt(&receipt, Duration::from_secs(5))
            .map_err(|e| format!("SUBSCRIBE {destination}: {e}"))
    }

    fn receipt_id(&mut self, prefix: &str) -> String {
        self.next_receipt += 1;
        format!("{prefix}-{}", self.next_receipt)
    }

    /// Waits for RECEIPT `receipt-id`; ERROR (or close) is `Err`.
    pub fn await_receipt(&mut self, receipt: &str, timeout: Duration) -> Result<(), String> {
        let f = self.next_frame_where(timeout, |f| {
            f.command == "ERROR"
                || (f.command == "RECEIPT" && f.header("receipt-id") == Some(receipt))
        });
        match f {
            Some(f) if f.command == "RECEIPT" => Ok(()),
            Some(f) => Err(format!(
                "ERROR message={:?} body={:?}",
                f.header("message").unwrap_or(""),
                f.body
            )),
            None => Err(format!(
                "no RECEIPT {receipt} within {timeout:?} (closed: {}); frames: {:?}",
                self.closed, self.log
            )),
        }
    }

    /// SEND with a JSON body (no receipt).
    pub fn send(&mut self, destination: &str, json: &Value) -> Result<(), String> {
        self.send_json(destination, json, None)
    }

    fn send_json(
        &mut self,
        destination: &str,
        json: &Value,
        receipt: Option<&str>,
    ) -> Result<(), String> {
        let body = json.to_string();
        let len = body.len().to_string();
        let mut headers = vec![
            ("destination", destination),
            ("content-type", "application/json"),
            ("content-length", len.as_str()),
        ];
        if let Some(r) = receipt {
            headers.push(("receipt", r));
        }
        self.send_frame(&Frame::new("SEND", &headers, &body))
    }

    /// SEND with a JSON body and a receipt header; returns the receipt id (await it with
    /// [`Stomp::await_receipt`]).
    pub fn send_with_receipt(&mut self, destination: &str, json: &Value) -> Result<String, String> {
        let receipt = self.receipt_id("send");
        self.send_json(destination, json, Some(&receipt))?;
        Ok(receipt)
    }

    /// The next MESSAGE frame.
    pub fn next_message(&mut self, timeout: Duration) -> Option<Frame> {
        self.next_frame_where(timeout, |f| f.command == "MESSAGE")
    }

    /// The next MESSAGE frame for `destination`.
    pub fn next_message_matching(&mut self, destination: &str, timeout: Duration) -> Option<Frame> {
        self.next_frame_where(timeout, |f| {
            f.command == "MESSAGE" && f.header("destination") == Some(destination)
        })
    }

    /// The next MESSAGE for `destination` whose JSON body satisfies `pred`.
    pub fn next_message_where(
        &mut self,
        destination: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Option<Frame> {
        self.next_frame_where(timeout, |f| {
            f.command == "MESSAGE"
                && f.header("destination") == Some(destination)
                && f.json().is_some_and(|v| pred(&v))
        })
    }

    /// Waits until the server closes the connection.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Some(text) = self.recv_ws(left) {
                self.absorb(&text);
            }
        }
        true
    }

    /// Sends DISCONNECT and closes the WebSocket.
    pub fn close(mut self) {
        use futures_util::StreamExt;
        let _ = self.send_frame(&Frame::new("DISCONNECT", &[], ""));
        let ws = &mut self.ws;
        self.rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
        });
    }

    /// Everything received so far (for failure messages).
    pub fn transcript(&self) -> String {
        let mut s = String::new();
        for l in &self.log {
            s.push_str(l);
            s.push('\n');
        }
        let pending: Vec<String> = self.pending.iter().map(|f| format!("{f:?}")).collect();
        s.push_str(&format!("(still queued: {pending:?})"));
        s
    }
}

/// Sends a WebSocket upgrade request for `path` by hand and returns the response's status code
/// and head, without completing a handshake (to see a refusal such as 503). A 101 leaves the
/// connection open until the returned stream is dropped.
pub fn ws_upgrade(addr: SocketAddr, path: &str) -> io::Result<(u16, String, TcpStream)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte)? {
            0 => break,
            _ => head.push(byte[0]),
        }
        if head.len() > 16 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response head too long",
            ));
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("no status in {head:?}"))
        })?;
    Ok((code, head, s))
}

fn rand_u32() -> u32 {
    rand::random::<u32>()
}

/// Asserts the MESSAGE frame headers STOMP 1.2 requires and the JSON content type; returns
/// the JSON body.
pub fn message_json(f: &Frame, subscription: &str, ctx: &str) -> Value {
    assert_eq!(f.command, "MESSAGE", "{ctx}: {f:?}");
    assert_eq!(
        f.header("subscription"),
        Some(subscription),
        "{ctx}: subscription header: {f:?}"
    );
    assert!(
        f.header("message-id").is_some_and(|m| !m.is_empty()),
        "{ctx}: no message-id: {f:?}"
    );
    assert!(
        f.header("content-type")
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json")),
        "{ctx}: content-type: {f:?}"
    );
    f.json()
        .unwrap_or_else(|| panic!("{ctx}: body is not JSON: {f:?}"))
}
