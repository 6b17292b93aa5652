//! End-to-end test harness: runs the real `gridedge` binary and talks to it like a SIP peer.
//!
//! * [`Daemon`] spawns `gridedge run --config ...` with a generated config in a fresh temp dir
//!   (every listener on port 0), waits for `{state}/listeners.json` and `GET /readyz` == 200,
//!   captures stdout/stderr to files (printed when a test fails), and offers `sigterm`, `kill9`,
//!   `restart` (same state dir) and `metrics`.
//! * [`UdpConn`], [`TcpConn`], [`WsConn`] are minimal raw SIP clients ([`SipConn`]), with
//!   [`Uac`] building requests and [`register`] doing the REGISTER -> 401 -> REGISTER(digest)
//!   dance with an independent digest implementation (MD5 and SHA-256, RFC 8760).
//! * [`require_tool`] fails (never skips) when an external peer is missing.
//! * [`ProcGuard`] kills an external child process on every path.
//!
//! Every wait is a short poll loop with a deadline; nothing uses fixed ports.
#![allow(dead_code)] // each test binary uses a different subset

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use md5::{Digest as _, Md5};
use sha2::Sha256;

/// How long a daemon may take from spawn to `/readyz` == 200.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default wait for one SIP response.
pub const SIP_TIMEOUT: Duration = Duration::from_secs(3);
/// Wait used when a test asserts that *nothing* comes back.
pub const SILENCE: Duration = Duration::from_millis(700);

/// Users configured by default: 1001..=1010 with password `s3cret-<user>`.
pub const DEFAULT_USERS: std::ops::RangeInclusive<u32> = 1001..=1010;

pub fn password_of(user: &str) -> String {
    format!("s3cret-{user}")
}

// ------------------------------------------------------------------------------------------
// External tools
// ------------------------------------------------------------------------------------------

/// Absolute path of an external tool, or a test failure telling how to install it.
pub fn require_tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if let Ok(meta) = fs::metadata(&candidate) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return candidate;
            }
        }
    }
    panic!(
        "required external tool `{name}` is not installed (not found in PATH): \
         run scripts/install-test-deps.sh"
    );
}

/// Kills (SIGKILL) and reaps a child process when dropped, unless it already exited.
pub struct ProcGuard {
    pub child: Child,
    pub name: String,
}

impl ProcGuard {
    pub fn new(name: &str, child: Child) -> Self {
        ProcGuard {
            child,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(25))
                }
                _ => return None,
            }
        }
    }

    /// Sends SIGTERM (a graceful stop for baresip, SIPp and the daemon) and waits.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        send_signal(self.child.id(), "TERM");
        self.wait_timeout(timeout)
    }
}

impl Drop for ProcGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `kill -<sig> <pid>` for one pid we started (no libc in the dependency set).
pub fn send_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs a short-lived command with a deadline; returns (status, stdout, stderr).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> (ExitStatus, String, String) {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out_path = out_dir.path().join("stdout");
    let err_path = out_dir.path().join("stderr");
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"));
    let program = format!("{:?}", cmd.get_program());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {program}: {e}"));
    let mut guard = ProcGuard::new(&program, child);
    let status = guard.wait_timeout(timeout);
    let out = fs::read_to_string(&out_path).unwrap_or_default();
    let err = fs::read_to_string(&err_path).unwrap_or_default();
    match status {
        Some(status) => (status, out, err),
        None => panic!("{cmd:?} did not finish within {timeout:?}\nstdout:\n{out}\nstderr:\n{err}"),
    }
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ------------------------------------------------------------------------------------------
// Daemon
// ------------------------------------------------------------------------------------------

/// Addresses from `{state.dir}/listeners.json`.
#[derive(Debug, Clone)]
pub struct Listeners {
    pub http: SocketAddr,
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub ws: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub wss: Vec<SocketAddr>,
}

impl Listeners {
    pub fn parse(text: &str) -> Result<Listeners, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let addr = |s: &serde_json::Value| -> Result<SocketAddr, String> {
            s.as_str()
                .ok_or_else(|| format!("not a string: {s}"))?
                .parse()
                .map_err(|e| format!("bad address {s}: {e}"))
        };
        let list = |key: &str| -> Result<Vec<SocketAddr>, String> {
            match v.get("sip").and_then(|s| s.get(key)) {
                None | Some(serde_json::Value::Null) => Ok(Vec::new()),
                Some(serde_json::Value::Array(a)) => a.iter().map(addr).collect(),
                Some(other) => Err(format!("sip.{key} is not an array: {other}")),
            }
        };
        Ok(Listeners {
            http: addr(v.get("http").ok_or("no \"http\" key")?)?,
            udp: list("udp")?,
            tcp: list("tcp")?,
            ws: list("ws")?,
            tls: list("tls")?,
            wss: list("wss")?,
        })
    }

    pub fn udp(&self) -> SocketAddr {
        *self.udp.first().expect("daemon has no UDP listener")
    }
    pub fn tcp(&self) -> SocketAddr {
        *self.tcp.first().expect("daemon has no TCP listener")
    }
    pub fn ws(&self) -> SocketAddr {
        *self.ws.first().expect("daemon has no WS listener")
    }
}

/// The base config every test starts from; `Daemon::start` deep-merges a TOML snippet into it.
/// 127.0.0.1 (the tests' normal source address) is allow-listed so ordinary traffic is never
/// rate limited; guard tests use other loopback addresses (127.0.0.2 ...).
fn base_config(state_dir: &Path) -> String {
    let mut s = format!(
        r#"
[log]
level = "debug"
format = "text"

[state]
dir = "{state}"

[http]
listen = "127.0.0.1:0"

[sip]
realm = "gridedge"
domains = []
udp = ["127.0.0.1:0"]
tcp = ["127.0.0.1:0"]
ws = ["127.0.0.1:0"]
tls = []
wss = []
tls_cert = ""
tls_key = ""
max_message_bytes = 65535
max_headers = 128
min_expires_secs = 60
max_expires_secs = 3600
default_expires_secs = 3600
max_contacts_per_aor = 10

[sip.auth]
algorithms = ["SHA-256", "MD5"]
nonce_lifetime_secs = 300
require_qop = true

[sip.guard]
enabled = true
window_secs = 2
max_requests = 16
ban_secs = 300
auth_failure_limit = 5
auth_failure_window_secs = 60
auth_ban_secs = 900
allow = ["127.0.0.1/32", "127.0.0.10/32"]
"#,
        state = state_dir.display()
    );
    for u in DEFAULT_USERS {
        let _ = write!(
            s,
            "\n[[extensions]]\nuser = \"{u}\"\npassword = \"{}\"\n",
            password_of(&u.to_string())
        );
    }
    s
}

/// Deep merge: tables merge recursively, every other value (arrays included) replaces.
fn merge_toml(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_toml(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Builds the config text: base config with `overrides` (a TOML snippet) merged in.
pub fn render_config(state_dir: &Path, overrides: &str) -> String {
    let mut base: toml::Table = base_config(state_dir)
        .parse()
        .expect("base config is valid TOML");
    let over: toml::Table = overrides
        .parse()
        .unwrap_or_else(|e| panic!("test config override is not valid TOML: {e}\n{overrides}"));
    merge_toml(&mut base, over);
    base.to_string()
}

pub struct Daemon {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    pub state_dir: PathBuf,
    pub config_path: PathBuf,
    child: Option<Child>,
    generation: u32,
    pub listeners: Listeners,
    /// Set once the logs were printed by `fail`, so `Drop` does not print them twice.
    logs_shown: std::cell::Cell<bool>,
}

impl Daemon {
    /// Starts a daemon with the base config plus `overrides` (TOML, may be empty) and waits
    /// until it is ready.
    pub fn start(overrides: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("gridedge-e2e-")
            .tempdir()
            .expect("create temp dir");
        let root = dir.path().to_path_buf();
        let state_dir = root.join("state");
        fs::create_dir_all(&state_dir).expect("create state dir");
        let config_path = root.join("gridedge.toml");
        fs::write(&config_path, render_config(&state_dir, overrides)).expect("write config");
        let mut d = Daemon {
            dir: Some(dir),
            root,
            state_dir,
            config_path,
            child: None,
            generation: 0,
            logs_shown: std::cell::Cell::new(false),
            listeners: Listeners {
                http: "127.0.0.1:1".parse().unwrap(),
                udp: vec![],
                tcp: vec![],
                ws: vec![],
                tls: vec![],
                wss: vec![],
            },
        };
        d.spawn_and_wait();
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon not running").id()
    }

    fn log_path(&self, generation: u32, stream: &str) -> PathBuf {
        self.root.join(format!("daemon-{generation}.{stream}"))
    }

    fn spawn_and_wait(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        self.generation += 1;
        let listeners_json = self.state_dir.join("listeners.json");
        // A previous run's file must not be mistaken for this run's.
        let _ = fs::remove_file(&listeners_json);
        let out = File::create(self.log_path(self.generation, "stdout")).expect("stdout log");
        let err = File::create(self.log_path(self.generation, "stderr")).expect("stderr log");
        let child = Command::new(env!("CARGO_BIN_EXE_gridedge"))
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn gridedge");
        self.child = Some(child);

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut last_err = String::from("listeners.json not written yet");
        let listeners = loop {
            self.assert_running("while starting up");
            if let Ok(text) = fs::read_to_string(&listeners_json) {
                match Listeners::parse(&text) {
                    Ok(l) => break l,
                    Err(e) => last_err = format!("listeners.json unparsable ({e}): {text}"),
                }
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "daemon not ready within {STARTUP_TIMEOUT:?}: {last_err}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.listeners = listeners;
        loop {
            self.assert_running("before /readyz answered 200");
            match http_get(self.listeners.http, "/readyz") {
                Ok((200, _)) => break,
                Ok((code, body)) => last_err = format!("/readyz -> {code} {body}"),
                Err(e) => last_err = format!("/readyz -> {e}"),
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "daemon not ready within {STARTUP_TIMEOUT:?}: {last_err}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn assert_running(&mut self, when: &str) {
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if let Some(status) = status {
            self.child = None;
            self.fail(&format!("daemon exited {when}: {status}"));
        }
    }

    /// Panics with `msg` followed by the daemon's captured output.
    pub fn fail(&self, msg: &str) -> ! {
        self.logs_shown.set(true);
        panic!("{msg}\n{}", self.logs())
    }

    /// The captured stdout/stderr of every generation (tail of each, to keep failures readable).
    pub fn logs(&self) -> String {
        const TAIL: usize = 24 * 1024;
        let mut s = String::new();
        for g in 1..=self.generation {
            for stream in ["stdout", "stderr"] {
                let path = self.log_path(g, stream);
                let text = fs::read(&path).unwrap_or_default();
                let start = text.len().saturating_sub(TAIL);
                let _ = writeln!(
                    s,
                    "----- {} ({} bytes{}) -----\n{}",
                    path.display(),
                    text.len(),
                    if start > 0 { ", tail" } else { "" },
                    String::from_utf8_lossy(&text[start..])
                );
            }
        }
        s
    }

    /// `/healthz` must answer 200 and the process must still be running.
    pub fn assert_alive(&mut self, context: &str) {
        self.assert_running(context);
        match http_get(self.listeners.http, "/healthz") {
            Ok((200, _)) => {}
            other => self.fail(&format!("/healthz after {context}: {other:?}")),
        }
    }

    /// SIGTERM, then waits for a clean exit (returns its status).
    pub fn sigterm(&mut self) -> ExitStatus {
        let pid = self.pid();
        send_signal(pid, "TERM");
        let status = self.wait_exit(Duration::from_secs(20));
        status.unwrap_or_else(|| self.fail("daemon did not exit within 20 s of SIGTERM"))
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Starts the daemon again with the same config and state dir (after sigterm/kill9).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.sigterm();
        }
        self.spawn_and_wait();
    }

    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.listeners.http, path)
            .unwrap_or_else(|e| self.fail(&format!("GET {path} failed: {e}")))
    }

    /// Prometheus text from `/metrics`.
    pub fn metrics(&self) -> String {
        let (code, body) = self.http_get("/metrics");
        if code != 200 {
            self.fail(&format!("GET /metrics -> {code}: {body}"));
        }
        body
    }

    /// Sum of the samples whose metric name contains `name` and whose label set contains every
    /// string in `labels` (e.g. `method="REGISTER"`); `None` if no such sample exists.
    pub fn metric(&self, name: &str, labels: &[&str]) -> Option<f64> {
        metric_sum(&self.metrics(), name, labels)
    }

    pub fn bindings_active(&self) -> f64 {
        self.metric("gridedge_sip_bindings_active", &[])
            .unwrap_or_else(|| self.fail("no gridedge_sip_bindings_active* metric"))
    }

    pub fn udp_client(&self) -> UdpConn {
        UdpConn::new("127.0.0.1", self.listeners.udp())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let keep = std::env::var_os("GRIDEDGE_E2E_KEEP").is_some();
        if std::thread::panicking() && !self.logs_shown.get() {
            eprintln!("gridedge e2e: daemon output\n{}", self.logs());
        }
        if std::thread::panicking() || keep {
            if let Some(dir) = self.dir.take() {
                let path = dir.keep();
                eprintln!("gridedge e2e: daemon files kept in {}", path.display());
            }
        }
    }
}

/// Sums Prometheus samples (see [`Daemon::metric`]).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        // a timestamp may follow the value: "name{..} value ts"
        let (series, value) = match series.rsplit_once(' ') {
            Some((s, v)) if !series.ends_with('}') && v.parse::<f64>().is_ok() => (s, v),
            _ => (series, value),
        };
        let metric_name = series.split('{').next().unwrap_or("");
        if !metric_name.contains(name) || !labels.iter().all(|l| series.contains(l)) {
            continue;
        }
        if let Ok(v) = value.parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// A raw HTTP/1.1 GET (no HTTP client crate): returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no header end: {text:?}"),
        )
    })?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line: {head:?}"),
            )
        })?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

// ------------------------------------------------------------------------------------------
// SIP messages
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct SipResponse {
    pub code: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub raw: String,
}

fn canonical_header_name(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    match lower.as_str() {
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        "k" => "supported",
        _ => return lower,
    }
    .to_string()
}

impl SipResponse {
    /// Parses a response; `None` if `bytes` is not a SIP response.
    pub fn parse(bytes: &[u8]) -> Option<SipResponse> {
        let raw = String::from_utf8_lossy(bytes).into_owned();
        let (head, body) = match raw.find("\r\n\r\n") {
            Some(i) => (&raw[..i], bytes[i + 4..].to_vec()),
            None => (raw.as_str(), Vec::new()),
        };
        let mut lines = head.split("\r\n");
        let status = lines.next()?;
        let mut parts = status.splitn(3, ' ');
        if parts.next()? != "SIP/2.0" {
            return None;
        }
        let code: u16 = parts.next()?.parse().ok()?;
        let reason = parts.next().unwrap_or("").to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            if let Some((n, v)) = line.split_once(':') {
                headers.push((canonical_header_name(n), v.trim().to_string()));
            }
        }
        Some(SipResponse {
            code,
            reason,
            headers,
            body,
            raw,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = canonical_header_name(name);
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = canonical_header_name(name);
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every Contact entry (split across headers and commas), as written.
    pub fn contacts(&self) -> Vec<String> {
        self.header_all("contact")
            .into_iter()
            .flat_map(split_comma_list)
            .collect()
    }

    /// The Contact entry whose URI contains `needle`, with its `expires` parameter.
    pub fn binding(&self, needle: &str) -> Option<(String, Option<u64>)> {
        self.contacts()
            .into_iter()
            .find(|c| c.contains(needle))
            .map(|c| {
                let e = contact_expires(&c);
                (c, e)
            })
    }

    pub fn cseq(&self) -> Option<(u32, String)> {
        let v = self.header("cseq")?;
        let mut it = v.split_whitespace();
        Some((it.next()?.parse().ok()?, it.next()?.to_string()))
    }

    /// Parsed `WWW-Authenticate: Digest ...` challenges, in order.
    pub fn challenges(&self) -> Vec<Challenge> {
        self.header_all("www-authenticate")
            .into_iter()
            .filter_map(Challenge::parse)
            .collect()
    }
}

/// Splits a header value on commas outside `<...>` and quotes.
pub fn split_comma_list(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut cur) = (0i32, false, String::new());
    for ch in v.chars() {
        match ch {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// `expires` header parameter of one Contact entry (after the URI's closing `>`; parameter
/// values may themselves be quoted and contain `<...>`, e.g. `+sip.instance="<urn:...>"`).
pub fn contact_expires(entry: &str) -> Option<u64> {
    let params = match uri_end(entry) {
        Some(i) => &entry[i + 1..],
        None => entry.split_once(';').map(|(_, p)| p).unwrap_or(""),
    };
    split_params(params).into_iter().find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("expires") {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// Index of the `>` closing the first `<` that is outside quotes (display names may be quoted).
fn uri_end(entry: &str) -> Option<usize> {
    let mut quoted = false;
    let mut open = false;
    for (i, ch) in entry.char_indices() {
        match ch {
            '"' if !open => quoted = !quoted,
            '<' if !quoted => open = true,
            '>' if open => return Some(i),
            _ => {}
        }
    }
    None
}

/// Splits `;a=1;b="x;y"` on semicolons outside quotes.
fn split_params(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut start) = (false, 0);
    for (i, ch) in s.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: String,
    pub qop: Option<String>,
    pub opaque: Option<String>,
    pub stale: bool,
    pub raw: String,
}

impl Challenge {
    pub fn parse(v: &str) -> Option<Challenge> {
        let rest = v.trim();
        let (scheme, params) = rest.split_once(char::is_whitespace)?;
        if !scheme.eq_ignore_ascii_case("digest") {
            return None;
        }
        let map = parse_auth_params(params);
        let get = |k: &str| map.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Some(Challenge {
            realm: get("realm")?,
            nonce: get("nonce")?,
            algorithm: get("algorithm").unwrap_or_else(|| "MD5".into()),
            qop: get("qop"),
            opaque: get("opaque"),
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
            raw: v.to_string(),
        })
    }

    /// The parameter names, sorted, without values (to compare two challenges' shapes).
    pub fn shape(&self) -> Vec<String> {
        let params = self
            .raw
            .trim()
            .split_once(char::is_whitespace)
            .map(|x| x.1)
            .unwrap_or("");
        let mut names: Vec<String> = parse_auth_params(params)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        names.sort();
        names
    }
}

/// `a="x", b=y` -> [(a, x), (b, y)] with lower-cased names.
pub fn parse_auth_params(s: &str) -> Vec<(String, String)> {
    split_comma_list(s)
        .into_iter()
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            ))
        })
        .collect()
}

// ------------------------------------------------------------------------------------------
// Digest (independent implementation; the daemon must agree with it)
// ------------------------------------------------------------------------------------------

pub fn hash_hex(algorithm: &str, data: &str) -> String {
    match algorithm.to_ascii_uppercase().as_str() {
        "MD5" => hex::encode(Md5::digest(data.as_bytes())),
        "SHA-256" => hex::encode(Sha256::digest(data.as_bytes())),
        other => panic!("test digest: unsupported algorithm {other}"),
    }
}

/// The value of an `Authorization` header answering `ch` (qop=auth when offered).
pub fn authorization(
    ch: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
) -> String {
    let alg = ch.algorithm.as_str();
    let ha1 = hash_hex(alg, &format!("{user}:{}:{password}", ch.realm));
    let ha2 = hash_hex(alg, &format!("{method}:{uri}"));
    let offers_auth = ch
        .qop
        .as_deref()
        .is_some_and(|q| q.split(',').any(|x| x.trim() == "auth"));
    let mut h = format!(
        "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", algorithm={alg}",
        ch.realm, ch.nonce
    );
    if offers_auth {
        let cnonce = format!("{:016x}", rand::random::<u64>());
        let nc = format!("{nc:08x}");
        let resp = hash_hex(alg, &format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", ch.nonce));
        let _ = write!(
            h,
            ", qop=auth, nc={nc}, cnonce=\"{cnonce}\", response=\"{resp}\""
        );
    } else {
        let resp = hash_hex(alg, &format!("{ha1}:{}:{ha2}", ch.nonce));
        let _ = write!(h, ", response=\"{resp}\"");
    }
    if let Some(op) = &ch.opaque {
        let _ = write!(h, ", opaque=\"{op}\"");
    }
    h
}

// ------------------------------------------------------------------------------------------
// Raw SIP connections
// ------------------------------------------------------------------------------------------

#[derive(Debug)]
pub enum Recv {
    Msg(Vec<u8>),
    Timeout,
    Closed,
}

pub trait SipConn {
    /// "UDP", "TCP" or "WS" (for the Via header).
    fn transport(&self) -> &'static str;
    /// The Via sent-by (host:port) to put in requests.
    fn sent_by(&self) -> String;
    fn send(&mut self, data: &[u8]) -> io::Result<()>;
    /// One SIP message (a datagram, a Content-Length framed stream message, a WS message).
    fn recv(&mut self, timeout: Duration) -> Recv;

    fn recv_response(&mut self, timeout: Duration) -> Option<SipResponse> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.recv(left) {
                Recv::Msg(m) => {
                    if let Some(r) = SipResponse::parse(&m) {
                        return Some(r);
                    }
                    // requests from the server or stray bytes: keep waiting
                }
                Recv::Timeout | Recv::Closed => return None,
            }
        }
    }

    /// Receives the response to the request with this CSeq number (skips stale ones, e.g. a
    /// retransmitted answer to an earlier request).
    fn recv_for_cseq(&mut self, cseq: u32, timeout: Duration) -> Option<SipResponse> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.recv_response(left)?;
            if r.cseq().map(|c| c.0) == Some(cseq) {
                return Some(r);
            }
        }
    }
}

pub struct UdpConn {
    pub sock: UdpSocket,
    pub server: SocketAddr,
}

impl UdpConn {
    /// A UDP socket bound to `local_ip:0` and connected to `server`.
    pub fn new(local_ip: &str, server: SocketAddr) -> UdpConn {
        let sock = UdpSocket::bind((local_ip, 0)).expect("bind UDP client socket");
        sock.connect(server).expect("connect UDP socket");
        UdpConn { sock, server }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }
}

impl SipConn for UdpConn {
    fn transport(&self) -> &'static str {
        "UDP"
    }
    fn sent_by(&self) -> String {
        self.local_addr().to_string()
    }
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.sock.send(data).map(|_| ())
    }
    fn recv(&mut self, timeout: Duration) -> Recv {
        let _ = self
            .sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))));
        let mut buf = vec![0u8; 70_000];
        match self.sock.recv(&mut buf) {
            Ok(n) => Recv::Msg(buf[..n].to_vec()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Recv::Timeout
            }
            // ICMP port unreachable: nobody listens any more
            Err(_) => Recv::Closed,
        }
    }
}

/// Outcome of one read attempt on a stream connection.
pub enum Fill {
    Data,
    Timeout,
    Closed,
}

/// The reading side of a SIP stream connection (TCP, TLS) in tests: buffered bytes, end of
/// stream, and Content-Length framing. Each connection type supplies only "read once into
/// this buffer before the deadline".
#[derive(Default)]
pub struct StreamReader {
    buf: Vec<u8>,
    closed: bool,
}

impl StreamReader {
    fn fill(
        &mut self,
        deadline: Instant,
        read: &mut impl FnMut(&mut Vec<u8>, Duration) -> Fill,
    ) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || self.closed {
            return false;
        }
        match read(&mut self.buf, left) {
            Fill::Data => true,
            Fill::Timeout => false,
            Fill::Closed => {
                self.closed = true;
                false
            }
        }
    }

    fn outcome(&self) -> Recv {
        if self.closed {
            Recv::Closed
        } else {
            Recv::Timeout
        }
    }

    /// Raw bytes as they arrive (for the CRLF keep-alive check): whatever is buffered or the
    /// next read within `timeout`.
    pub fn recv_raw(
        &mut self,
        timeout: Duration,
        mut read: impl FnMut(&mut Vec<u8>, Duration) -> Fill,
    ) -> Recv {
        if self.buf.is_empty() && !self.fill(Instant::now() + timeout, &mut read) {
            return self.outcome();
        }
        Recv::Msg(std::mem::take(&mut self.buf))
    }

    /// The next Content-Length-framed message, skipping keep-alive pongs between messages.
    pub fn recv_message(
        &mut self,
        timeout: Duration,
        mut read: impl FnMut(&mut Vec<u8>, Duration) -> Fill,
    ) -> Recv {
        let deadline = Instant::now() + timeout;
        loop {
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(n) = stream_frame_len(&self.buf) {
                return Recv::Msg(self.buf.drain(..n).collect());
            }
            if !self.fill(deadline, &mut read) {
                return self.outcome();
            }
        }
    }

    /// Waits until the peer closes the connection; true if it did within `timeout`.
    pub fn wait_closed(
        &mut self,
        timeout: Duration,
        mut read: impl FnMut(&mut Vec<u8>, Duration) -> Fill,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.closed && Instant::now() < deadline {
            self.buf.clear();
            self.fill(deadline, &mut read);
        }
        self.closed
    }
}

pub struct TcpConn {
    pub stream: TcpStream,
    reader: StreamReader,
}

/// One blocking read with a timeout.
fn tcp_read(stream: &mut TcpStream, buf: &mut Vec<u8>, left: Duration) -> Fill {
    let _ = stream.set_read_timeout(Some(left));
    let mut tmp = [0u8; 16 * 1024];
    match stream.read(&mut tmp) {
        Ok(0) => Fill::Closed,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            Fill::Data
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Fill::Timeout
        }
        Err(_) => Fill::Closed,
    }
}

impl TcpConn {
    pub fn connect(server: SocketAddr) -> TcpConn {
        let stream =
            TcpStream::connect_timeout(&server, Duration::from_secs(3)).expect("TCP connect");
        stream.set_nodelay(true).ok();
        stream.set_write_timeout(Some(Duration::from_secs(5))).ok();
        TcpConn {
            stream,
            reader: StreamReader::default(),
        }
    }

    /// Raw bytes as they arrive (for the CRLF keep-alive check).
    pub fn recv_raw(&mut self, timeout: Duration) -> Recv {
        let stream = &mut self.stream;
        self.reader
            .recv_raw(timeout, |buf, left| tcp_read(stream, buf, left))
    }

    /// Waits until the peer closes the connection; true if it did within `timeout`.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let stream = &mut self.stream;
        self.reader
            .wait_closed(timeout, |buf, left| tcp_read(stream, buf, left))
    }
}

/// Length of the first complete Content-Length-framed message in `buf`, if any.
pub fn stream_frame_len(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]);
    let cl = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| canonical_header_name(n) == "content-length")
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= end + cl).then_some(end + cl)
}

impl SipConn for TcpConn {
    fn transport(&self) -> &'static str {
        "TCP"
    }
    fn sent_by(&self) -> String {
        self.stream.local_addr().unwrap().to_string()
    }
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data)
    }
    fn recv(&mut self, timeout: Duration) -> Recv {
        let stream = &mut self.stream;
        self.reader
            .recv_message(timeout, |buf, left| tcp_read(stream, buf, left))
    }
}

type WsStream = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// SIP over WebSocket (RFC 7118) with a synchronous face: owns a current-thread runtime and
/// drives `tokio_tungstenite::client_async` on it.
pub struct WsConn {
    rt: tokio::runtime::Runtime,
    ws: Option<WsStream>,
    local: SocketAddr,
    /// A random `.invalid` host for Via/Contact, as browsers do.
    pub host: String,
}

impl WsConn {
    /// Connects and completes the handshake offering `Sec-WebSocket-Protocol: sip`; panics if
    /// the server does not select `sip`.
    pub fn connect(server: SocketAddr) -> WsConn {
        Self::try_connect(server).unwrap_or_else(|e| panic!("WebSocket connect to {server}: {e}"))
    }

    pub fn try_connect(server: SocketAddr) -> Result<WsConn, String> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::HeaderValue;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let (ws, local) = rt.block_on(async {
            let tcp = tokio::time::timeout(
                Duration::from_secs(3),
                tokio::net::TcpStream::connect(server),
            )
            .await
            .map_err(|_| "TCP connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
            let local = tcp.local_addr().map_err(|e| e.to_string())?;
            let mut req = format!("ws://{server}/")
                .into_client_request()
                .map_err(|e| e.to_string())?;
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
            let (ws, resp) = tokio::time::timeout(
                Duration::from_secs(3),
                tokio_tungstenite::client_async(req, tcp),
            )
            .await
            .map_err(|_| "WebSocket handshake timed out".to_string())?
            .map_err(|e| format!("handshake: {e}"))?;
            let proto = resp
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !proto.eq_ignore_ascii_case("sip") {
                return Err(format!(
                    "server selected subprotocol {proto:?}, want \"sip\""
                ));
            }
            Ok::<_, String>((ws, local))
        })?;
        let host = format!("{:012x}.invalid", rand::random::<u64>() & 0xffff_ffff_ffff);
        Ok(WsConn {
            rt,
            ws: Some(ws),
            local,
            host,
        })
    }

    /// Sends a WebSocket message of arbitrary bytes (binary opcode).
    pub fn send_binary(&mut self, data: Vec<u8>) -> io::Result<()> {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let ws = self.ws.as_mut().ok_or(io::ErrorKind::NotConnected)?;
        self.rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(5), ws.send(Message::Binary(data))).await
            })
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
            .map_err(io::Error::other)
    }

    /// Clean close (Close frame, then wait for the server's Close / EOF briefly).
    pub fn close(mut self) {
        use futures_util::StreamExt;
        if let Some(mut ws) = self.ws.take() {
            self.rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
            });
        }
    }
}

impl SipConn for WsConn {
    fn transport(&self) -> &'static str {
        "WS"
    }
    fn sent_by(&self) -> String {
        // RFC 7118 §5.2: the Via sent-by of a WebSocket client is typically a .invalid host
        self.host.clone()
    }
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        let ws = self.ws.as_mut().ok_or(io::ErrorKind::NotConnected)?;
        ws_send(&self.rt, ws, data)
    }
    fn recv(&mut self, timeout: Duration) -> Recv {
        match self.ws.as_mut() {
            Some(ws) => ws_recv(&self.rt, ws, timeout),
            None => Recv::Closed,
        }
    }
}

/// Sends one SIP message as one WebSocket text message (RFC 7118), over WS or WSS.
pub fn ws_send<S>(
    rt: &tokio::runtime::Runtime,
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    data: &[u8],
) -> io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let text = String::from_utf8(data.to_vec())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), ws.send(Message::Text(text))).await
    })
    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
    .map_err(io::Error::other)
}

/// The next SIP message from a WebSocket (text or binary), skipping control frames.
pub fn ws_recv<S>(
    rt: &tokio::runtime::Runtime,
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    timeout: Duration,
) -> Recv
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + timeout;
    rt.block_on(async {
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Err(_) => return Recv::Timeout,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => {
                    return Recv::Closed
                }
                Ok(Some(Ok(Message::Text(t)))) => return Recv::Msg(t.into_bytes()),
                Ok(Some(Ok(Message::Binary(b)))) => return Recv::Msg(b),
                Ok(Some(Ok(_))) => continue, // ping/pong handled by tungstenite
            }
        }
    })
}

impl WsConn {
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

// ------------------------------------------------------------------------------------------
// A tiny UAC: request building and the registration dance
// ------------------------------------------------------------------------------------------

/// Per-registration-dialog state for building requests (one Call-ID, increasing CSeq).
pub struct Uac {
    pub user: String,
    /// Host part of the AoR and of the Request-URI, e.g. "127.0.0.1".
    pub domain: String,
    pub call_id: String,
    pub from_tag: String,
    pub cseq: u32,
    pub user_agent: String,
}

impl Uac {
    pub fn new(user: &str) -> Uac {
        Uac {
            user: user.to_string(),
            domain: "127.0.0.1".to_string(),
            call_id: format!("{:016x}@gridedge-e2e", rand::random::<u64>()),
            from_tag: format!("{:08x}", rand::random::<u32>()),
            cseq: 0,
            user_agent: "gridedge-e2e".to_string(),
        }
    }

    pub fn request_uri(&self) -> String {
        format!("sip:{}", self.domain)
    }

    pub fn aor(&self) -> String {
        format!("sip:{}@{}", self.user, self.domain)
    }

    /// Builds a request with a fresh branch and the next CSeq; `extra` headers go before
    /// Content-Length; Content-Length is computed from `body`.
    pub fn request(
        &mut self,
        conn: &dyn SipConn,
        method: &str,
        extra: &[(&str, String)],
        body: &str,
    ) -> String {
        self.cseq += 1;
        let branch = format!("z9hG4bK{:016x}", rand::random::<u64>());
        let mut m = format!(
            "{method} {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/{t} {sent_by};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <{aor}>;tag={tag}\r\n\
             To: <{aor}>\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cseq} {method}\r\n\
             User-Agent: {ua}\r\n",
            ruri = self.request_uri(),
            t = conn.transport(),
            sent_by = conn.sent_by(),
            aor = self.aor(),
            tag = self.from_tag,
            cid = self.call_id,
            cseq = self.cseq,
            ua = self.user_agent,
        );
        for (n, v) in extra {
            let _ = write!(m, "{n}: {v}\r\n");
        }
        let _ = write!(m, "Content-Length: {}\r\n\r\n{body}", body.len());
        m
    }

    /// A default Contact for this connection: `<sip:user@sent-by;transport=x>`.
    pub fn contact_for(&self, conn: &dyn SipConn) -> String {
        format!(
            "<sip:{}@{};transport={}>",
            self.user,
            conn.sent_by(),
            conn.transport().to_ascii_lowercase()
        )
    }
}

/// Sends `msg` and returns the response for CSeq `cseq` (retransmits over UDP like a UAC would,
/// at 500 ms, 1 s; gives up after `SIP_TIMEOUT` in total).
pub fn transact(conn: &mut dyn SipConn, msg: &str, cseq: u32) -> Option<SipResponse> {
    transact_within(conn, msg, cseq, SIP_TIMEOUT)
}

pub fn transact_within(
    conn: &mut dyn SipConn,
    msg: &str,
    cseq: u32,
    total: Duration,
) -> Option<SipResponse> {
    let deadline = Instant::now() + total;
    let mut t1 = Duration::from_millis(500);
    loop {
        conn.send(msg.as_bytes()).ok()?;
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = if conn.transport() == "UDP" {
            t1.min(left)
        } else {
            left
        };
        if let Some(r) = conn.recv_for_cseq(cseq, wait) {
            if r.code >= 200 {
                return Some(r);
            }
            // provisional: wait for the final answer
            let left = deadline.saturating_duration_since(Instant::now());
            return conn.recv_for_cseq(cseq, left).filter(|r| r.code >= 200);
        }
        if Instant::now() >= deadline || conn.transport() != "UDP" {
            return None;
        }
        t1 *= 2;
    }
}

pub struct RegisterOpts<'a> {
    pub password: &'a str,
    /// `None`: a query (no Contact header, RFC 3261 §10.2.3).
    pub contact: Option<String>,
    pub expires: Option<u32>,
    /// Pick this algorithm from the challenges ("MD5"/"SHA-256"); `None` = the first offered.
    pub algorithm: Option<&'a str>,
}

impl<'a> RegisterOpts<'a> {
    pub fn new(password: &'a str, contact: Option<String>) -> Self {
        RegisterOpts {
            password,
            contact,
            expires: None,
            algorithm: None,
        }
    }
}

/// Outcome of an authenticated REGISTER: the 401 that challenged it and the final response.
pub struct Registered {
    pub challenge: SipResponse,
    pub response: SipResponse,
}

fn register_headers(contact: &Option<String>, expires: Option<u32>) -> Vec<(&'static str, String)> {
    let mut h = Vec::new();
    if let Some(c) = contact {
        h.push(("Contact", c.clone()));
    }
    if let Some(e) = expires {
        h.push(("Expires", e.to_string()));
    }
    h
}

/// REGISTER -> 401 -> REGISTER with digest. Panics (with `ctx`) if the first answer is not a
/// 401 with a usable challenge; returns the final response, whatever its code.
pub fn register(
    conn: &mut dyn SipConn,
    uac: &mut Uac,
    opts: &RegisterOpts<'_>,
    ctx: &str,
) -> Registered {
    let headers = register_headers(&opts.contact, opts.expires);
    let first = uac.request(conn, "REGISTER", &headers, "");
    let challenge = transact(conn, &first, uac.cseq)
        .unwrap_or_else(|| panic!("{ctx}: no answer to the initial REGISTER:\n{first}"));
    assert_eq!(
        challenge.code, 401,
        "{ctx}: initial REGISTER must be challenged\n--- sent:\n{first}\n--- got:\n{}",
        challenge.raw
    );
    let response = register_answering(conn, uac, opts, &challenge, ctx)
        .unwrap_or_else(|| panic!("{ctx}: no answer to the authenticated REGISTER"));
    Registered {
        challenge,
        response,
    }
}

/// Picks the challenge to answer from a 401.
pub fn pick_challenge(resp: &SipResponse, algorithm: Option<&str>, ctx: &str) -> Challenge {
    let chs = resp.challenges();
    assert!(
        !chs.is_empty(),
        "{ctx}: 401 without a Digest WWW-Authenticate:\n{}",
        resp.raw
    );
    match algorithm {
        None => chs[0].clone(),
        Some(a) => chs
            .iter()
            .find(|c| c.algorithm.eq_ignore_ascii_case(a))
            .cloned()
            .unwrap_or_else(|| panic!("{ctx}: no {a} challenge offered:\n{}", resp.raw)),
    }
}

/// Sends the authenticated REGISTER for `challenge`; returns the final response.
pub fn register_answering(
    conn: &mut dyn SipConn,
    uac: &mut Uac,
    opts: &RegisterOpts<'_>,
    challenge: &SipResponse,
    ctx: &str,
) -> Option<SipResponse> {
    let ch = pick_challenge(challenge, opts.algorithm, ctx);
    let auth = authorization(
        &ch,
        &uac.user,
        opts.password,
        "REGISTER",
        &uac.request_uri(),
        1,
    );
    let mut headers = register_headers(&opts.contact, opts.expires);
    headers.push(("Authorization", auth));
    let second = uac.request(conn, "REGISTER", &headers, "");
    transact(conn, &second, uac.cseq)
}

/// Registers `contact` for `user` and asserts a 200 that lists it with a positive expires.
pub fn register_ok(
    conn: &mut dyn SipConn,
    user: &str,
    contact: &str,
    expires: Option<u32>,
    ctx: &str,
) -> SipResponse {
    let mut uac = Uac::new(user);
    let pw = password_of(user);
    let mut opts = RegisterOpts::new(&pw, Some(contact.to_string()));
    opts.expires = expires;
    let r = register(conn, &mut uac, &opts, ctx).response;
    assert_eq!(r.code, 200, "{ctx}: REGISTER not accepted:\n{}", r.raw);
    assert_binding_listed(&r, contact_uri(contact), ctx);
    r
}

/// An authenticated REGISTER without Contact (a query): returns the 200 listing bindings.
pub fn query_bindings(conn: &mut dyn SipConn, user: &str, ctx: &str) -> SipResponse {
    let mut uac = Uac::new(user);
    let pw = password_of(user);
    let r = register(conn, &mut uac, &RegisterOpts::new(&pw, None), ctx).response;
    assert_eq!(
        r.code, 200,
        "{ctx}: REGISTER query not accepted:\n{}",
        r.raw
    );
    r
}

/// The URI inside `<...>` of a Contact value (or the value itself).
pub fn contact_uri(contact: &str) -> &str {
    match uri_end(contact) {
        Some(b) => {
            let a = contact[..b].rfind('<').unwrap_or(0);
            &contact[a + 1..b]
        }
        None => contact,
    }
}

/// Asserts that the 200 lists a binding whose URI contains `uri` with `expires` > 0.
pub fn assert_binding_listed(resp: &SipResponse, uri: &str, ctx: &str) -> u64 {
    let (entry, expires) = resp.binding(uri).unwrap_or_else(|| {
        panic!(
            "{ctx}: binding {uri} not listed in the 200 (RFC 3261 §10.3 step 8):\n{}",
            resp.raw
        )
    });
    let e = expires
        .unwrap_or_else(|| panic!("{ctx}: binding {entry} has no ;expires=N:\n{}", resp.raw));
    assert!(
        e > 0,
        "{ctx}: binding {entry} listed with expires=0:\n{}",
        resp.raw
    );
    e
}

/// An OPTIONS that must get a 200.
pub fn options_ok(conn: &mut dyn SipConn, ctx: &str) -> SipResponse {
    let mut uac = Uac::new("probe");
    let m = uac.request(conn, "OPTIONS", &[("Accept", "application/sdp".into())], "");
    let r = transact(conn, &m, uac.cseq).unwrap_or_else(|| panic!("{ctx}: no answer to OPTIONS"));
    assert_eq!(r.code, 200, "{ctx}: OPTIONS not answered 200:\n{}", r.raw);
    r
}

/// After hostile input: the process is up, `/healthz` is 200, OPTIONS gets 200 over UDP and
/// an authenticated REGISTER succeeds (proves the parser, auth and store all still work).
pub fn assert_daemon_healthy(d: &mut Daemon, ctx: &str) {
    d.assert_alive(ctx);
    let mut c = d.udp_client();
    options_ok(&mut c, ctx);
    let contact = format!("<sip:1009@{}>", c.local_addr());
    register_ok(&mut c, "1009", &contact, Some(120), ctx);
}

// ------------------------------------------------------------------------------------------
// SIPp
// ------------------------------------------------------------------------------------------

pub fn sipp_scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// An injection file for `tests/sipp/reg_contact.xml`: user;[authentication ...];domain
pub fn sipp_users_csv(users: &[String], domain: &str) -> String {
    let mut s = String::from("SEQUENTIAL\n");
    for u in users {
        let _ = writeln!(
            s,
            "{u};[authentication username={u} password={}];{domain}",
            password_of(u)
        );
    }
    s
}

pub struct SippRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Contents of SIPp's *_errors.log, *_logs.log and *_messages.log (if any).
    pub traces: String,
}

impl SippRun {
    pub fn report(&self) -> String {
        format!(
            "sipp exit: {}\n--- stdout (tail):\n{}\n--- stderr:\n{}\n--- traces:\n{}",
            self.status,
            tail(&self.stdout, 6000),
            self.stderr,
            tail(&self.traces, 12000)
        )
    }
}

pub fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Runs SIPp with `scenario` and the injection file `csv` against `target`, from 127.0.0.1,
/// in its own temp dir; SIPp's own global timeout plus our deadline bound it.
pub fn run_sipp(
    scenario: &Path,
    csv: &str,
    target: SocketAddr,
    calls: u32,
    rate: u32,
    extra: &[&str],
) -> SippRun {
    let sipp = require_tool("sipp");
    let dir = tempfile::tempdir().expect("sipp tempdir");
    let csv_path = dir.path().join("users.csv");
    fs::write(&csv_path, csv).unwrap();
    let limit_s = 20 + calls / rate.max(1) * 3;
    let mut cmd = Command::new(sipp);
    cmd.current_dir(dir.path())
        .arg("-sf")
        .arg(scenario)
        .arg("-inf")
        .arg(&csv_path)
        .args(["-i", "127.0.0.1", "-nostdin", "-nd"])
        .args(["-m", &calls.to_string(), "-r", &rate.to_string()])
        .args(["-trace_err", "-trace_logs", "-trace_msg"])
        .args(["-timeout", &format!("{limit_s}s"), "-timeout_error"])
        .args(extra)
        .arg(target.to_string());
    let (status, stdout, stderr) =
        run_with_timeout(&mut cmd, Duration::from_secs(u64::from(limit_s) + 15));
    let mut traces = String::new();
    if let Ok(entries) = fs::read_dir(dir.path()) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".log") {
                let _ = writeln!(
                    traces,
                    "=== {name}\n{}",
                    fs::read_to_string(&p).unwrap_or_default()
                );
            }
        }
    }
    SippRun {
        status,
        stdout,
        stderr,
        traces,
    }
}

// ------------------------------------------------------------------------------------------
// misc
// ------------------------------------------------------------------------------------------

/// Reads a file, lossy, empty if missing.
pub fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned()
}
