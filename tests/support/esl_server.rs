//! A scripted FreeSWITCH inbound event socket (mod_event_socket) for end-to-end tests of the
//! ESL client, `#[path]`-included by `e2e_esl.rs`.
//!
//! It listens on `127.0.0.1:0` and speaks the real framing, byte for byte as FreeSWITCH
//! writes it (compare `tests/fixtures/freeswitch/esl-inbound-auth-bgapi-session.txt` and
//! `esl-background-job-json.txt`):
//!
//! * on accept: `Content-Type: auth/request\n\n`;
//! * `auth <pw>` → `+OK accepted`, or `-ERR invalid` followed by the disconnect notice and a
//!   close;
//! * `event json ...` → `+OK event listener enabled json`;
//! * `api show channels as json` → an `api/response` built from the channel table, which
//!   [`EslServer::push_event`] keeps like FreeSWITCH does (CHANNEL_CREATE adds a row,
//!   CHANNEL_ANSWER marks it ACTIVE, CHANNEL_HANGUP_COMPLETE removes it); `api echo <x>`
//!   → `<x>`; `api msleep <ms>` answers `+OK` after that long (blocking the connection, as
//!   FreeSWITCH's listener does); anything else → `-ERR <cmd> Command not found!`;
//! * `bgapi <cmd>\nJob-UUID: <u>` → `+OK Job-UUID: <u>` then a `BACKGROUND_JOB`
//!   `text/event-json` event whose `_body` is what `api <cmd>` would answer; commands marked
//!   with [`EslServer::reject_bgapi`] get `-ERR ...` instead, and [`EslServer::hold_jobs`]
//!   keeps the events until [`EslServer::release_jobs_reversed`];
//! * `exit` → `+OK bye`, the disconnect notice, close.
//!
//! Tests push events and raw bytes (each chunk written and flushed separately), kill the
//! current connection abruptly (RST), change the password, and wait on the server's counters
//! with [`EslServer::wait_until`] (woken on every change, no polling).
#![allow(dead_code)] // each test uses a different subset

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};

pub const CORE_UUID: &str = "6a1f2c7e-3b9d-4e51-9c0a-2f8b7d6e5a41";
pub const HOSTNAME: &str = "fs-test-01";
/// What FreeSWITCH sends when it hangs up on a client.
pub const DISCONNECT_NOTICE: &[u8] = b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\nDisconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";

/// Everything the server knows, observable by tests through [`EslServer::state`].
#[derive(Debug, Default)]
pub struct State {
    pub password: String,
    /// Accept connections but never send `auth/request` (a hung switch).
    pub silent: bool,
    pub connections: u64,
    pub auth_attempts: u64,
    pub auth_failures: u64,
    pub subscriptions: u64,
    /// Connections that ended because the client closed or reset them.
    pub closed_by_client: u64,
    /// Every command block received, verbatim, in order.
    pub commands: Vec<String>,
    /// `show channels` rows by uuid, each as ordered (column, value) pairs.
    pub channels: BTreeMap<String, Vec<(String, String)>>,
    pub hold_jobs: bool,
    /// Held `BACKGROUND_JOB`s: (job uuid, command, body).
    pub held_jobs: Vec<(String, String, String)>,
    pub reject_bgapi: HashSet<String>,
    pub sequence: u64,
    current: Option<Control>,
    next_id: u64,
}

#[derive(Debug)]
struct Control {
    id: u64,
    tx: mpsc::UnboundedSender<Ctl>,
}

#[derive(Debug)]
enum Ctl {
    /// Write each chunk separately (write + flush), `gap` apart; `done` gets whether all
    /// chunks were written.
    Write {
        chunks: Vec<Vec<u8>>,
        gap: Duration,
        done: oneshot::Sender<bool>,
    },
    Kill,
}

struct Shared {
    state: Mutex<State>,
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = f(&mut self.lock());
        self.changed.notify_waiters();
        r
    }
}

pub struct EslServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Drop for EslServer {
    fn drop(&mut self) {
        self.accept.abort();
        if let Some(current) = self.shared.lock().current.take() {
            let _ = current.tx.send(Ctl::Kill);
        }
    }
}

impl EslServer {
    /// Binds 127.0.0.1:0 and starts accepting on the current runtime.
    pub async fn start(password: &str) -> EslServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test event socket");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                password: password.to_owned(),
                ..State::default()
            }),
            changed: Notify::new(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        EslServer {
            addr,
            shared,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Reads the state.
    pub fn state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.shared.lock())
    }

    /// Changes the state (and wakes waiters).
    pub fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        self.shared.update(f)
    }

    pub fn set_password(&self, password: &str) {
        self.update(|s| s.password = password.to_owned());
    }

    pub fn set_silent(&self, silent: bool) {
        self.update(|s| s.silent = silent);
    }

    pub fn hold_jobs(&self, hold: bool) {
        self.update(|s| s.hold_jobs = hold);
    }

    pub fn reject_bgapi(&self, command: &str) {
        self.update(|s| s.reject_bgapi.insert(command.to_owned()));
    }

    pub fn connections(&self) -> u64 {
        self.state(|s| s.connections)
    }

    pub fn auth_attempts(&self) -> u64 {
        self.state(|s| s.auth_attempts)
    }

    pub fn subscriptions(&self) -> u64 {
        self.state(|s| s.subscriptions)
    }

    pub fn commands(&self) -> Vec<String> {
        self.state(|s| s.commands.clone())
    }

    /// The next `Event-Sequence`.
    pub fn next_sequence(&self) -> u64 {
        self.update(|s| {
            s.sequence += 1;
            s.sequence
        })
    }

    /// Waits until `cond` holds, re-checking on every state change; false at the deadline.
    pub async fn wait_until(&self, within: Duration, cond: impl Fn(&State) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if cond(&self.shared.lock()) {
                return true;
            }
            if timeout_at(deadline, changed).await.is_err() {
                return cond(&self.shared.lock());
            }
        }
    }

    /// Writes `chunks` to the current connection, each written and flushed on its own, `gap`
    /// apart. True when every chunk was written.
    pub async fn push_chunks(&self, chunks: Vec<Vec<u8>>, gap: Duration) -> bool {
        let (done, written) = oneshot::channel();
        let sent = self.state(|s| {
            s.current
                .as_ref()
                .is_some_and(|c| c.tx.send(Ctl::Write { chunks, gap, done }).is_ok())
        });
        sent && written.await.unwrap_or(false)
    }

    /// Writes bytes as one chunk.
    pub async fn push_raw(&self, bytes: &[u8]) -> bool {
        self.push_chunks(vec![bytes.to_vec()], Duration::ZERO).await
    }

    /// Sends an event as `text/event-json`, updating the channel table first like
    /// FreeSWITCH's own core would (so a snapshot taken afterwards agrees with the events).
    pub async fn push_event(&self, headers: &[(String, String)]) -> bool {
        self.update(|s| track_channel(&mut s.channels, headers));
        self.push_raw(&event_frame(headers, None)).await
    }

    /// Closes the current connection abruptly: no disconnect notice, TCP reset.
    pub fn kill(&self) -> bool {
        self.update(|s| {
            s.current
                .take()
                .is_some_and(|c| c.tx.send(Ctl::Kill).is_ok())
        })
    }

    /// Sends the held `BACKGROUND_JOB` events, last held first.
    pub async fn release_jobs_reversed(&self) -> bool {
        let held = self.update(|s| std::mem::take(&mut s.held_jobs));
        let frames = held
            .iter()
            .rev()
            .map(|(uuid, command, body)| {
                let seq = self.next_sequence();
                event_frame(&background_job_headers(uuid, command, seq), Some(body))
            })
            .collect();
        self.push_chunks(frames, Duration::ZERO).await
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = shared.update(|s| {
            s.connections += 1;
            s.next_id += 1;
            // A newer connection replaces the older one as the target of pushes.
            if let Some(old) = s.current.replace(Control { id: s.next_id, tx }) {
                let _ = old.tx.send(Ctl::Kill);
            }
            s.next_id
        });
        tokio::spawn(serve(stream, shared.clone(), id, rx));
    }
}

/// What a command block makes the connection do.
struct Action {
    reply: Vec<u8>,
    delay: Duration,
    close: bool,
}

impl Action {
    fn reply(reply: Vec<u8>) -> Self {
        Self {
            reply,
            delay: Duration::ZERO,
            close: false,
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    shared: Arc<Shared>,
    id: u64,
    mut rx: mpsc::UnboundedReceiver<Ctl>,
) {
    let _ = stream.set_nodelay(true);
    if !shared.lock().silent
        && stream
            .write_all(b"Content-Type: auth/request\n\n")
            .await
            .is_err()
    {
        return;
    }
    let mut authed = false;
    let mut inbuf: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    'conn: loop {
        tokio::select! {
            read = stream.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => {
                        shared.update(|s| s.closed_by_client += 1);
                        break 'conn;
                    }
                    Ok(n) => n,
                };
                inbuf.extend_from_slice(&buf[..n]);
                while let Some(end) = inbuf.windows(2).position(|w| w == b"\n\n") {
                    let block: Vec<u8> = inbuf.drain(..end + 2).collect();
                    let text = String::from_utf8_lossy(&block).trim_end().to_owned();
                    let action = shared.update(|s| handle_command(s, &text, &mut authed));
                    if !action.delay.is_zero() {
                        tokio::time::sleep(action.delay).await;
                    }
                    if stream.write_all(&action.reply).await.is_err() {
                        break 'conn;
                    }
                    if action.close {
                        let _ = stream.shutdown().await;
                        break 'conn;
                    }
                }
            }
            ctl = rx.recv() => match ctl {
                Some(Ctl::Write { chunks, gap, done }) => {
                    let mut ok = true;
                    for (i, chunk) in chunks.iter().enumerate() {
                        if i > 0 && !gap.is_zero() {
                            tokio::time::sleep(gap).await;
                        }
                        if stream.write_all(chunk).await.is_err() || stream.flush().await.is_err() {
                            ok = false;
                            break;
                        }
                    }
                    let _ = done.send(ok);
                }
                Some(Ctl::Kill) | None => {
                    // Linger 0: close() sends RST, like a crashed switch or a dead link.
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    break 'conn;
                }
            },
        }
    }
    shared.update(|s| {
        if s.current.as_ref().is_some_and(|c| c.id == id) {
            s.current = None;
        }
    });
}

fn command_reply(text: &str) -> Vec<u8> {
    format!("Content-Type: command/reply\nReply-Text: {text}\n\n").into_bytes()
}

fn api_response(body: &str) -> Vec<u8> {
    format!(
        "Content-Type: api/response\nContent-Length: {}\n\n{body}",
        body.len()
    )
    .into_bytes()
}

fn handle_command(s: &mut State, block: &str, authed: &mut bool) -> Action {
    s.commands.push(block.to_owned());
    let mut lines = block.lines();
    let first = lines.next().unwrap_or_default();
    let (verb, arg) = first.split_once(' ').unwrap_or((first, ""));
    if !*authed {
        if verb != "auth" {
            return Action::reply(command_reply("-ERR command not found"));
        }
        s.auth_attempts += 1;
        if arg == s.password {
            *authed = true;
            return Action::reply(command_reply("+OK accepted"));
        }
        s.auth_failures += 1;
        let mut reply = command_reply("-ERR invalid");
        reply.extend_from_slice(DISCONNECT_NOTICE);
        return Action {
            reply,
            delay: Duration::ZERO,
            close: true,
        };
    }
    match verb {
        "event" => {
            let format = arg.split_whitespace().next().unwrap_or("plain");
            s.subscriptions += 1;
            Action::reply(command_reply(&format!(
                "+OK event listener enabled {format}"
            )))
        }
        "api" => {
            let (body, delay) = api_answer(s, arg);
            Action {
                reply: api_response(&body),
                delay,
                close: false,
            }
        }
        "bgapi" => {
            let job_uuid = lines
                .find_map(|l| l.strip_prefix("Job-UUID: "))
                .map_or_else(|| format!("generated-{}", s.sequence), str::to_owned);
            if s.reject_bgapi.contains(arg) {
                return Action::reply(command_reply("-ERR could not spawn thread"));
            }
            let mut reply = format!(
                "Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job_uuid}\nJob-UUID: {job_uuid}\n\n"
            )
            .into_bytes();
            let (body, _) = api_answer(s, arg);
            if s.hold_jobs {
                s.held_jobs.push((job_uuid, arg.to_owned(), body));
            } else {
                s.sequence += 1;
                let headers = background_job_headers(&job_uuid, arg, s.sequence);
                reply.extend_from_slice(&event_frame(&headers, Some(&body)));
            }
            Action::reply(reply)
        }
        "exit" => {
            let mut reply = command_reply("+OK bye");
            reply.extend_from_slice(DISCONNECT_NOTICE);
            Action {
                reply,
                delay: Duration::ZERO,
                close: true,
            }
        }
        _ => Action::reply(command_reply("-ERR command not found")),
    }
}

/// What `api <command>` answers, and how long it takes.
fn api_answer(s: &State, command: &str) -> (String, Duration) {
    let (name, arg) = command.split_once(' ').unwrap_or((command, ""));
    match name {
        "show" if arg == "channels as json" => (show_channels_json(s), Duration::ZERO),
        "echo" => (arg.to_owned(), Duration::ZERO),
        "msleep" => (
            "+OK".to_owned(),
            Duration::from_millis(arg.trim().parse().unwrap_or(0)),
        ),
        _ => (format!("-ERR {name} Command not found!\n"), Duration::ZERO),
    }
}

/// `show channels as json`, shaped as FreeSWITCH prints it (keys in column order).
fn show_channels_json(s: &State) -> String {
    if s.channels.is_empty() {
        return "{\"row_count\":0}".to_owned();
    }
    let rows: Vec<String> = s.channels.values().map(|row| json_object(row)).collect();
    format!(
        "{{\"row_count\":{},\"rows\":[{}]}}",
        rows.len(),
        rows.join(",")
    )
}

/// A JSON object with keys in the given order (FreeSWITCH's cJSON keeps insertion order).
pub fn json_object(pairs: &[(String, String)]) -> String {
    let fields: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}:{}",
                serde_json::to_string(k).unwrap_or_default(),
                serde_json::to_string(v).unwrap_or_default()
            )
        })
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// A `text/event-json` frame exactly as FreeSWITCH writes it: `Content-Length` first, then
/// `Content-Type`, a blank line, and the compact JSON object; an event body goes in `_body`
/// with its own `Content-Length` header inside the object.
pub fn event_frame(headers: &[(String, String)], body: Option<&str>) -> Vec<u8> {
    let mut pairs = headers.to_vec();
    if let Some(body) = body {
        pairs.push(("Content-Length".to_owned(), body.len().to_string()));
        pairs.push(("_body".to_owned(), body.to_owned()));
    }
    let json = json_object(&pairs);
    let mut frame = format!(
        "Content-Length: {}\nContent-Type: text/event-json\n\n",
        json.len()
    )
    .into_bytes();
    frame.extend_from_slice(json.as_bytes());
    frame
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The core headers every FreeSWITCH event starts with.
fn core_headers(
    name: &str,
    file: &str,
    function: &str,
    line: &str,
    seq: u64,
) -> Vec<(String, String)> {
    let mut h = pairs(&[
        ("Event-Name", name),
        ("Core-UUID", CORE_UUID),
        ("FreeSWITCH-Hostname", HOSTNAME),
        ("FreeSWITCH-Switchname", HOSTNAME),
        ("FreeSWITCH-IPv4", "10.0.0.5"),
        ("FreeSWITCH-IPv6", "::1"),
        ("Event-Date-Local", "2025-11-13 16:23:38"),
        ("Event-Date-GMT", "Thu, 13 Nov 2025 08:23:38 GMT"),
        ("Event-Date-Timestamp", "1763022218497314"),
        ("Event-Calling-File", file),
        ("Event-Calling-Function", function),
        ("Event-Calling-Line-Number", line),
    ]);
    h.push(("Event-Sequence".to_owned(), seq.to_string()));
    h
}

/// A `BACKGROUND_JOB` event's headers (the body is added by [`event_frame`]).
pub fn background_job_headers(job_uuid: &str, command: &str, seq: u64) -> Vec<(String, String)> {
    let (name, arg) = command.split_once(' ').unwrap_or((command, ""));
    let mut h = core_headers(
        "BACKGROUND_JOB",
        "mod_event_socket.c",
        "api_exec",
        "1572",
        seq,
    );
    h.extend(pairs(&[
        ("Job-UUID", job_uuid),
        ("Job-Command", name),
        ("Job-Command-Arg", arg),
    ]));
    h
}

/// A channel event (CHANNEL_CREATE, CHANNEL_ANSWER, CHANNEL_HANGUP_COMPLETE, ...) for an
/// inbound call from `caller` to `dest`, with the headers FreeSWITCH puts on it.
pub fn channel_event(
    name: &str,
    uuid: &str,
    caller: &str,
    dest: &str,
    seq: u64,
) -> Vec<(String, String)> {
    let (file, function, line, state, state_no, call_state, answer_state) = match name {
        "CHANNEL_CREATE" => (
            "switch_core_state_machine.c",
            "switch_core_session_run",
            "627",
            "CS_INIT",
            "2",
            "DOWN",
            "ringing",
        ),
        "CHANNEL_ANSWER" => (
            "switch_channel.c",
            "switch_channel_perform_mark_answered",
            "3993",
            "CS_EXECUTE",
            "4",
            "ACTIVE",
            "answered",
        ),
        "CHANNEL_HANGUP_COMPLETE" => (
            "switch_core_state_machine.c",
            "switch_core_session_reporting_state",
            "943",
            "CS_REPORTING",
            "11",
            "HANGUP",
            "hangup",
        ),
        _ => (
            "switch_channel.c",
            "switch_channel_event_set_data",
            "2800",
            "CS_EXECUTE",
            "4",
            "ACTIVE",
            "answered",
        ),
    };
    let channel_name = format!("sofia/internal/{caller}@10.0.0.5");
    let call_id = format!("{uuid}@10.0.0.77");
    let mut h = core_headers(name, file, function, line, seq);
    if name == "CHANNEL_HANGUP_COMPLETE" {
        h.extend(pairs(&[("Hangup-Cause", "NORMAL_CLEARING")]));
    }
    h.extend(pairs(&[
        ("Channel-State", state),
        ("Channel-Call-State", call_state),
        ("Channel-State-Number", state_no),
        ("Channel-Name", &channel_name),
        ("Unique-ID", uuid),
        ("Call-Direction", "inbound"),
        ("Presence-Call-Direction", "inbound"),
        ("Channel-HIT-Dialplan", "true"),
        ("Channel-Call-UUID", uuid),
        ("Answer-State", answer_state),
        ("Caller-Direction", "inbound"),
        ("Caller-Logical-Direction", "inbound"),
        ("Caller-Username", caller),
        ("Caller-Dialplan", "XML"),
        ("Caller-Caller-ID-Name", caller),
        ("Caller-Caller-ID-Number", caller),
        ("Caller-Orig-Caller-ID-Name", caller),
        ("Caller-Orig-Caller-ID-Number", caller),
        ("Caller-Network-Addr", "10.0.0.77"),
        ("Caller-ANI", caller),
        ("Caller-Destination-Number", dest),
        ("Caller-Unique-ID", uuid),
        ("Caller-Source", "mod_sofia"),
        ("Caller-Context", "default"),
        ("Caller-Channel-Name", &channel_name),
        ("Caller-Profile-Index", "1"),
        ("Caller-Profile-Created-Time", "1763022211757307"),
        ("Caller-Channel-Created-Time", "1763022211757307"),
        ("variable_direction", "inbound"),
        ("variable_uuid", uuid),
        ("variable_session_id", "7"),
        ("variable_sip_from_user", caller),
        ("variable_sip_to_user", dest),
        ("variable_sip_call_id", &call_id),
        ("variable_sip_network_ip", "10.0.0.77"),
        ("variable_sip_network_port", "5060"),
    ]));
    if name == "CHANNEL_HANGUP_COMPLETE" {
        h.extend(pairs(&[
            ("variable_hangup_cause", "NORMAL_CLEARING"),
            ("variable_billsec", "21"),
        ]));
    }
    h
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| v.as_str())
}

/// Keeps the channel table the way FreeSWITCH's core does for `show channels`.
fn track_channel(
    channels: &mut BTreeMap<String, Vec<(String, String)>>,
    headers: &[(String, String)],
) {
    let uuid = header(headers, "Unique-ID").to_owned();
    if uuid.is_empty() {
        return;
    }
    match header(headers, "Event-Name") {
        "CHANNEL_CREATE" => {
            let epoch = header(headers, "Event-Date-Timestamp")
                .parse::<u64>()
                .map_or_else(|_| String::new(), |us| (us / 1_000_000).to_string());
            let row = pairs(&[
                ("uuid", &uuid),
                ("direction", header(headers, "Call-Direction")),
                ("created", header(headers, "Event-Date-Local")),
                ("created_epoch", &epoch),
                ("name", header(headers, "Channel-Name")),
                ("state", header(headers, "Channel-State")),
                ("cid_name", header(headers, "Caller-Caller-ID-Name")),
                ("cid_num", header(headers, "Caller-Caller-ID-Number")),
                ("ip_addr", header(headers, "Caller-Network-Addr")),
                ("dest", header(headers, "Caller-Destination-Number")),
                ("application", ""),
                ("application_data", ""),
                ("dialplan", "XML"),
                ("context", header(headers, "Caller-Context")),
                ("read_codec", "PCMU"),
                ("read_rate", "8000"),
                ("read_bit_rate", "64000"),
                ("write_codec", "PCMU"),
                ("write_rate", "8000"),
                ("write_bit_rate", "64000"),
                ("secure", ""),
                ("hostname", HOSTNAME),
                ("presence_id", ""),
                ("presence_data", ""),
                ("accountcode", ""),
                ("callstate", header(headers, "Channel-Call-State")),
                ("callee_name", ""),
                ("callee_num", ""),
                ("callee_direction", ""),
                ("call_uuid", header(headers, "Channel-Call-UUID")),
                ("sent_callee_name", ""),
                ("sent_callee_num", ""),
                ("initial_cid_name", header(headers, "Caller-Caller-ID-Name")),
                (
                    "initial_cid_num",
                    header(headers, "Caller-Caller-ID-Number"),
                ),
                ("initial_ip_addr", header(headers, "Caller-Network-Addr")),
                ("initial_dest", header(headers, "Caller-Destination-Number")),
                ("initial_dialplan", "XML"),
                ("initial_context", header(headers, "Caller-Context")),
            ]);
            channels.insert(uuid, row);
        }
        "CHANNEL_HANGUP_COMPLETE" | "CHANNEL_DESTROY" => {
            channels.remove(&uuid);
        }
        _ => {
            if let Some(row) = channels.get_mut(&uuid) {
                for (column, value) in row.iter_mut() {
                    match column.as_str() {
                        "state" => *value = header(headers, "Channel-State").to_owned(),
                        "callstate" => *value = header(headers, "Channel-Call-State").to_owned(),
                        _ => {}
                    }
                }
            }
        }
    }
}
