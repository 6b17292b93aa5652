//! The event stream of seed 004 section 三 (004:L990-L1391): STOMP over WebSocket (and over
//! SockJS's WebSocket transport) at `/callcenter/ws`.
//!
//! [`Hub`] is the fan-out: one bounded broadcast channel per topic, created on first
//! subscription and dropped with its last subscriber. Publishing to a topic nobody watches
//! costs a hash lookup and nothing else (the JSON is only built when someone listens), and
//! publishing to a watched topic costs one serialization and one channel send however many
//! subscribers there are: each connection task pulls its own copy. A connection that falls
//! more than the channel's capacity behind is closed rather than allowed to hold memory.
//!
//! Authentication, in the CONNECT frame:
//! - an agent desktop: `login` = its extension, `passcode` = the extension's SIP password (as
//!   handed out by getByCertificate); it may subscribe to its own topics only, and send
//!   `/app/idle` and `/app/busy` for itself;
//! - a supervisor or back office: `account`, `timestamp`, `sign` exactly as the management API;
//!   any topic, and commands for any extension.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rustc_hash::FxHashMap;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::listener::{ConnState, Peer};
use super::mgmt::MgmtState;
use super::sign::SignedRequest;
use super::sockjs;
use super::stomp::{self, Command as StompCommand, Decoded, Decoder, Frame};
use crate::agents::directory::{ExtensionNumber, ProjectCode};
use crate::agents::presence::{AgentEvent, AgentEventKind};
use crate::agents::service::{AgentEventSink, AgentIdentity, AgentsService};
use crate::agents::state::{seed004_status, AgentState};
use crate::clock::Now;
use crate::events::CallDirection;
use crate::metrics::Metrics;

/// One message for a topic, serialized once and shared by every subscriber.
#[derive(Debug)]
pub struct Outgoing {
    /// Shared with the hub's topic table: no copy per message.
    pub destination: Arc<str>,
    pub body: String,
}

pub struct Hub {
    /// Keys are topic names the server builds itself (never attacker-chosen beyond an
    /// authenticated subscriber's own destinations), so a fast non-keyed hash is fine here.
    topics: RwLock<FxHashMap<Arc<str>, broadcast::Sender<Arc<Outgoing>>>>,
    /// Buffer of a project topic: it must hold one project-wide operation's worth of
    /// messages (every seat changing at once) for a supervisor that reads concurrently.
    capacity: usize,
    /// `gridedge_stream_messages_total{direction="out",kind}` per kind, resolved once so
    /// publishing is an atomic add rather than a label lookup.
    sent: HashMap<&'static str, prometheus::IntCounter>,
}

const TOPIC_KINDS: [&str; 11] = [
    "register",
    "status",
    "call",
    "invite",
    "bye",
    "notify",
    "task",
    "callExtStatus",
    "callTaskStatus",
    "transfer",
    "other",
];

/// `/topic/register` and `/topic/status` bodies. "sessionSatus" is seed 004's spelling on
/// these two topics (004:L1019, L1075); the correct spelling rides along for clients written
/// against callExtStatus.
#[derive(serde::Serialize)]
struct StatusBody {
    status: u8,
    #[serde(rename = "workStatus")]
    work_status: i8,
    #[serde(rename = "sessionSatus")]
    session_satus: u8,
    #[serde(rename = "sessionStatus")]
    session_status: u8,
}

/// `/topic/callExtStatus/{projectCode}` (004:L1166-L1178).
#[derive(serde::Serialize)]
struct ExtStatusBody<'a> {
    #[serde(rename = "workStatus")]
    work_status: i8,
    #[serde(rename = "sessionStatus")]
    session_status: u8,
    status: u8,
    username: &'a str,
    #[serde(rename = "destinationNumber")]
    destination_number: &'a str,
    #[serde(rename = "destinationUUID")]
    destination_uuid: &'a str,
}

/// `/topic/call`, `/topic/invite`, `/topic/bye` (004:L1046-L1092).
#[derive(serde::Serialize)]
struct CallBody<'a> {
    #[serde(rename = "callId")]
    call_id: &'a str,
    #[serde(rename = "callTaskCode")]
    call_task_code: &'a str,
    #[serde(rename = "telNo")]
    tel_no: &'a str,
}

impl Hub {
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Self {
        let sent = TOPIC_KINDS
            .iter()
            .map(|k| (*k, metrics.stream_messages.with_label_values(&["out", k])))
            .collect();
        Self {
            topics: RwLock::new(FxHashMap::default()),
            capacity: capacity.max(1),
            sent,
        }
    }

    pub fn subscribe(&self, topic: &str) -> broadcast::Receiver<Arc<Outgoing>> {
        let mut t = self.topics.write().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = t.get(topic) {
            return tx.subscribe();
        }
        // A project topic carries every seat's changes; a seat's own topic carries a handful
        // a minute. Sizing them alike would cost every agent desktop the project's buffer
        // (and, at 10,000 seats, hundreds of megabytes of mostly idle slots).
        let capacity = if is_project_topic(topic) {
            self.capacity
        } else {
            PER_SEAT_TOPIC_CAPACITY.min(self.capacity)
        };
        let (tx, rx) = broadcast::channel(capacity);
        t.insert(Arc::from(topic), tx);
        rx
    }

    /// Forgets `topic` if its last subscriber has gone.
    pub fn release(&self, topic: &str) {
        let mut t = self.topics.write().unwrap_or_else(|e| e.into_inner());
        if t.get(topic).is_some_and(|tx| tx.receiver_count() == 0) {
            t.remove(topic);
        }
    }

    /// Publishes to `topic`, building the body only if someone listens.
    pub fn publish(&self, topic: &str, body: impl FnOnce() -> serde_json::Value) {
        self.publish_text(topic, || body().to_string());
    }

    /// Like [`Hub::publish`], with the body already rendered as JSON text.
    pub fn publish_text(&self, topic: &str, body: impl FnOnce() -> String) {
        let t = self.topics.read().unwrap_or_else(|e| e.into_inner());
        if let Some((name, tx)) = t.get_key_value(topic) {
            if tx.receiver_count() > 0 {
                let msg = Arc::new(Outgoing {
                    destination: Arc::clone(name),
                    body: body(),
                });
                let _ = tx.send(msg);
                if let Some(c) = self.sent.get(topic_kind(topic)) {
                    c.inc();
                }
            }
        }
    }

    fn publish_json<T: serde::Serialize>(&self, topic: &str, body: impl FnOnce() -> T) {
        self.publish_text(topic, || {
            serde_json::to_string(&body()).unwrap_or_else(|_| "{}".to_owned())
        });
    }

    /// [`Hub::publish_json`] to the topic `prefix` + `name`, formatted in a reused buffer: most
    /// topics have no subscriber, and finding that out should not allocate.
    fn publish_to<T: serde::Serialize>(&self, prefix: &str, name: &str, body: impl FnOnce() -> T) {
        TOPIC_BUF.with(|b| {
            let mut b = b.borrow_mut();
            b.clear();
            b.push_str(prefix);
            b.push_str(name);
            self.publish_json(&b, body);
        });
    }

    /// `/topic/notify/{projectCode}/{username}`: `content` is a string (004:L1098-L1104).
    pub fn notify(&self, project: &ProjectCode, user: &str, content: &str) {
        let topic = format!("/topic/notify/{project}/{user}");
        self.publish(&topic, || json!({ "content": content }));
    }

    /// The notify message for the outcome of a desktop command, in the shape 004:L1104 defines.
    pub fn notify_result(&self, project: &ProjectCode, user: &str, ok: bool, text: &str) {
        let content = json!({
            "duration": "3",
            "msgType": if ok { "success" } else { "error" },
            "data": text,
            "type": "message",
        })
        .to_string();
        self.notify(project, user, &content);
    }
}

/// Messages a seat's own topic holds for a subscriber that has not caught up yet.
const PER_SEAT_TOPIC_CAPACITY: usize = 16;

fn is_project_topic(topic: &str) -> bool {
    matches!(
        topic_kind(topic),
        "callExtStatus" | "callTaskStatus" | "task"
    )
}

thread_local! {
    static TOPIC_BUF: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn topic_kind(topic: &str) -> &'static str {
    let kind = topic
        .strip_prefix("/topic/")
        .and_then(|t| t.split('/').next())
        .unwrap_or("");
    match kind {
        "register" => "register",
        "status" => "status",
        "call" => "call",
        "invite" => "invite",
        "bye" => "bye",
        "notify" => "notify",
        "task" => "task",
        "callExtStatus" => "callExtStatus",
        "callTaskStatus" => "callTaskStatus",
        "transfer" => "transfer",
        _ => "other",
    }
}

/// Renders agent events as seed 004 topic messages.
impl AgentEventSink for Hub {
    fn publish(&self, events: &[AgentEvent]) {
        for e in events {
            let ext = &e.extension;
            let s = seed004_status(&e.state, e.registered);
            let status_body = || StatusBody {
                status: s.status,
                work_status: s.work_status,
                session_satus: s.session_status,
                session_status: s.session_status,
            };
            let registration_changed = match &e.kind {
                AgentEventKind::Registration => true,
                AgentEventKind::Transition(_) => false,
            };
            if registration_changed
                || matches!(&e.kind, AgentEventKind::Transition(t) if t.from == AgentState::SignedOut || t.to == AgentState::SignedOut)
            {
                self.publish_to("/topic/register/", ext, status_body);
            }
            if let AgentEventKind::Transition(t) = &e.kind {
                self.publish_to("/topic/status/", ext, status_body);
                let c = e.call.as_ref();
                let call_body = || CallBody {
                    call_id: c.map_or("", |c| c.call_id.0.as_str()),
                    call_task_code: c.and_then(|c| c.task_code.as_deref()).unwrap_or(""),
                    tel_no: c.and_then(|c| c.remote_number.as_deref()).unwrap_or(""),
                };
                if t.to == AgentState::Reserved {
                    self.publish_to("/topic/call/", ext, call_body);
                    if c.map(|c| c.direction) == Some(CallDirection::Inbound) {
                        self.publish_to("/topic/invite/", ext, call_body);
                    }
                }
                if t.from.in_call() && !t.to.in_call() {
                    self.publish_to("/topic/bye/", ext, call_body);
                }
            }
            if let Some(p) = &e.project {
                let c = e.call.as_ref().filter(|_| e.state.in_call());
                self.publish_to("/topic/callExtStatus/", p.as_str(), || ExtStatusBody {
                    work_status: s.work_status,
                    session_status: s.session_status,
                    status: s.status,
                    username: ext,
                    destination_number: c.and_then(|c| c.remote_number.as_deref()).unwrap_or(""),
                    destination_uuid: c.map_or("", |c| c.call_id.0.as_str()),
                });
            }
        }
    }
}

/// Shared state of the stream endpoint.
pub struct StreamState {
    pub mgmt: Arc<MgmtState>,
    pub connections: Arc<Semaphore>,
    pub queue: usize,
    next_id: AtomicU64,
    /// Sessions end when this is cancelled (daemon shutdown)...
    pub shutdown: CancellationToken,
    /// ...and the daemon waits for them here before its last presence flush, so a command
    /// in flight is not lost.
    pub sessions: TaskTracker,
}

impl StreamState {
    pub fn new(
        mgmt: Arc<MgmtState>,
        max_connections: usize,
        queue: usize,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            mgmt,
            connections: Arc::new(Semaphore::new(max_connections)),
            queue,
            next_id: AtomicU64::new(1),
            shutdown,
            sessions: TaskTracker::new(),
        }
    }
}

pub fn routes(state: Arc<StreamState>) -> Router {
    Router::new()
        .route("/callcenter/ws", get(ws_plain))
        .route("/callcenter/ws/info", get(sockjs_info))
        .route(
            "/callcenter/ws/{server}/{session}/websocket",
            get(ws_sockjs),
        )
        .with_state(state)
}

async fn sockjs_info() -> Response {
    let entropy: u32 = rand::random();
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/json;charset=UTF-8",
            ),
            (
                axum::http::header::CACHE_CONTROL,
                "no-store, no-cache, must-revalidate, max-age=0",
            ),
        ],
        sockjs::info_json(entropy),
    )
        .into_response()
}

async fn ws_plain(
    State(st): State<Arc<StreamState>>,
    ConnectInfo(Peer(peer, conn)): ConnectInfo<Peer>,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(st, peer, conn, ws, false)
}

async fn ws_sockjs(
    State(st): State<Arc<StreamState>>,
    ConnectInfo(Peer(peer, conn)): ConnectInfo<Peer>,
    Path((server, session)): Path<(String, String)>,
    ws: WebSocketUpgrade,
) -> Response {
    if sockjs::parse_session_path(&format!("{server}/{session}/websocket")).is_none() {
        return (
            axum::http::StatusCode::NOT_FOUND,
            "bad SockJS session path\n",
        )
            .into_response();
    }
    upgrade(st, peer, conn, ws, true)
}

fn upgrade(
    st: Arc<StreamState>,
    peer: SocketAddr,
    conn: Arc<ConnState>,
    ws: WebSocketUpgrade,
    sockjs: bool,
) -> Response {
    let Ok(permit) = Arc::clone(&st.connections).try_acquire_owned() else {
        st.mgmt
            .metrics
            .stream_refused
            .with_label_values(&["capacity"])
            .inc();
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too many event-stream connections\n",
        )
            .into_response();
    };
    ws.max_message_size(stomp::Limits::default().max_frame_bytes * 2)
        .on_upgrade(move |socket| async move {
            // From here the stream's own cap and heart-beats govern this connection.
            conn.became_stream();
            let id = st.next_id.fetch_add(1, Ordering::Relaxed);
            st.mgmt.metrics.stream_connections.inc();
            let span = tracing::info_span!("stream", id, peer = %peer);
            let _enter = span.enter();
            drop(_enter);
            let session = Session::new(st.clone(), peer, sockjs).run(socket);
            st.sessions.track_future(session).await;
            st.mgmt.metrics.stream_connections.dec();
            drop(permit);
        })
}

#[derive(Debug, Clone)]
enum Principal {
    Agent(AgentIdentity),
    Supervisor,
}

/// What the connection task is told by subscription forwarders.
enum Push {
    Message { sub: String, msg: Arc<Outgoing> },
    Lagged(String),
}

struct Session {
    st: Arc<StreamState>,
    peer: SocketAddr,
    sockjs: bool,
    principal: Option<Principal>,
    subs: HashMap<String, CancellationToken>,
    push_tx: mpsc::Sender<Push>,
    push_rx: Option<mpsc::Receiver<Push>>,
    next_message: u64,
    /// For an agent login: extensions being taken away, to close this session if it is one.
    revocations: Option<broadcast::Receiver<String>>,
    heart_out: Option<Duration>,
    heart_in: Option<Duration>,
}

const MAX_SUBSCRIPTIONS: usize = 64;
/// The server's heart-beat offer (ms): it can send every 10 s and wants to hear every 10 s.
const SERVER_HEART_BEAT: (u32, u32) = (10_000, 10_000);
/// SockJS's own heartbeat period (sockjs-protocol: 25 s).
const SOCKJS_HEARTBEAT: Duration = Duration::from_secs(25);
/// A connection must CONNECT within this long.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);

enum Flow {
    Continue,
    Close,
}

impl Session {
    fn new(st: Arc<StreamState>, peer: SocketAddr, sockjs: bool) -> Self {
        let (push_tx, push_rx) = mpsc::channel(st.queue);
        Self {
            st,
            peer,
            sockjs,
            principal: None,
            subs: HashMap::new(),
            push_tx,
            push_rx: Some(push_rx),
            next_message: 0,
            revocations: None,
            heart_out: None,
            heart_in: None,
        }
    }

    fn hub(&self) -> &Hub {
        &self.st.mgmt.hub
    }

    fn agents(&self) -> &AgentsService {
        &self.st.mgmt.agents
    }

    fn refuse(&self, reason: &'static str) {
        self.st
            .mgmt
            .metrics
            .stream_refused
            .with_label_values(&[reason])
            .inc();
    }

    async fn send_frames(&self, ws: &mut WebSocket, frames: &[Frame]) -> bool {
        if frames.is_empty() {
            return true;
        }
        let msg = if self.sockjs {
            let texts: Vec<String> = frames
                .iter()
                .map(|f| String::from_utf8_lossy(&f.encode()).into_owned())
                .collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            Message::Text(sockjs::message_frame(&refs).into())
        } else if frames.len() == 1 {
            Message::Text(
                String::from_utf8_lossy(&frames[0].encode())
                    .into_owned()
                    .into(),
            )
        } else {
            let mut out = Vec::new();
            for f in frames {
                f.encode_into(&mut out);
            }
            Message::Text(String::from_utf8_lossy(&out).into_owned().into())
        };
        send_with_deadline(ws, msg).await
    }

    async fn run(mut self, mut ws: WebSocket) {
        if self.sockjs && !send_with_deadline(&mut ws, Message::Text(sockjs::OPEN.into())).await {
            return;
        }
        let mut decoder = Decoder::new(stomp::Limits::default());
        let mut push_rx = self.push_rx.take().unwrap_or_else(|| mpsc::channel(1).1);
        let connect_deadline = tokio::time::Instant::now() + CONNECT_DEADLINE;
        let mut last_in = tokio::time::Instant::now();
        let mut last_out = tokio::time::Instant::now();
        loop {
            let heart_out = self.heart_out.or(if self.sockjs {
                Some(SOCKJS_HEARTBEAT)
            } else {
                None
            });
            let next_beat = heart_out.map(|d| last_out + d);
            let in_deadline = match (&self.principal, self.heart_in) {
                (None, _) => Some(connect_deadline),
                // The spec's allowance for timing error: twice the agreed period.
                (Some(_), Some(d)) => Some(last_in + d * 2),
                _ => None,
            };
            let tick = [next_beat, in_deadline].into_iter().flatten().min();
            tokio::select! {
                msg = ws.recv() => {
                    let msg = match msg {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            // Oversized message, broken framing, reset: nothing to answer.
                            self.refuse("websocket");
                            tracing::debug!(peer = %self.peer, error = %e, "event stream socket error");
                            break;
                        }
                        None => break,
                    };
                    last_in = tokio::time::Instant::now();
                    let chunks: Vec<Vec<u8>> = match msg {
                        Message::Text(t) if self.sockjs => {
                            match sockjs::parse_client_message(t.as_str(), 64) {
                                Ok(v) => v.into_iter().map(String::into_bytes).collect(),
                                Err(e) => {
                                    // sockjs-protocol: a client message that is not valid JSON
                                    // ends the session without a close frame.
                                    self.refuse("sockjs");
                                    tracing::debug!(peer = %self.peer, error = %e, "bad SockJS message");
                                    break;
                                }
                            }
                        }
                        Message::Text(t) => vec![t.as_str().as_bytes().to_vec()],
                        Message::Binary(b) => vec![b.to_vec()],
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    let mut close = false;
                    let mut out = Vec::new();
                    for c in chunks {
                        decoder.push(&c);
                        loop {
                            match decoder.next_decoded() {
                                Ok(Some(Decoded::HeartBeat)) => {}
                                Ok(Some(Decoded::Frame(f))) => {
                                    self.st.mgmt.metrics.stream_messages
                                        .with_label_values(&["in", f.command.as_str()])
                                        .inc();
                                    if let Flow::Close = self.on_frame(f, &mut out).await {
                                        close = true;
                                        break;
                                    }
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    self.refuse("bad_frame");
                                    out.push(Frame::error("malformed frame", &e.to_string(), None));
                                    close = true;
                                    break;
                                }
                            }
                        }
                        if close { break; }
                    }
                    if !out.is_empty() {
                        last_out = tokio::time::Instant::now();
                        if !self.send_frames(&mut ws, &out).await { break; }
                    }
                    if close { break; }
                }
                push = push_rx.recv() => {
                    let Some(push) = push else { break };
                    match push {
                        Push::Message { sub, msg } => {
                            self.next_message += 1;
                            let f = Frame::message(&msg.destination, &sub, &format!("{}", self.next_message), "application/json;charset=UTF-8", msg.body.as_bytes().to_vec());
                            last_out = tokio::time::Instant::now();
                            if !self.send_frames(&mut ws, &[f]).await { break; }
                        }
                        Push::Lagged(sub) => {
                            self.refuse("slow_consumer");
                            let f = Frame::error("too slow", &format!("subscription {sub} fell behind; reconnect and resubscribe"), None);
                            let _ = self.send_frames(&mut ws, &[f]).await;
                            break;
                        }
                    }
                }
                _ = self.st.shutdown.cancelled() => break,
                revoked = next_revocation(&mut self.revocations) => {
                    let gone = match (&revoked, &self.principal) {
                        (Some(user), Some(Principal::Agent(id))) => *user == id.username,
                        // Missed some: check the login directly.
                        (None, Some(Principal::Agent(id))) => !self.agents().identity_current(id),
                        _ => false,
                    };
                    if gone {
                        self.refuse("revoked");
                        let f = Frame::error("extension revoked", "the project owning this extension was finished; the number may be reallocated", None);
                        let _ = self.send_frames(&mut ws, &[f]).await;
                        break;
                    }
                }
                _ = sleep_until(tick) => {
                    let now = tokio::time::Instant::now();
                    if in_deadline.is_some_and(|d| now >= d) {
                        self.refuse(if self.principal.is_none() { "no_connect" } else { "heartbeat" });
                        break;
                    }
                    if next_beat.is_some_and(|d| now >= d) {
                        let beat = if self.sockjs { sockjs::HEARTBEAT.to_owned() } else { "\n".to_owned() };
                        last_out = now;
                        if !send_with_deadline(&mut ws, Message::Text(beat.into())).await { break; }
                    }
                }
            }
        }
        for (_, t) in self.subs.drain() {
            t.cancel();
        }
        let _ = ws.send(Message::Close(None)).await;
    }

    async fn on_frame(&mut self, f: Frame, out: &mut Vec<Frame>) -> Flow {
        let receipt = f.header("receipt").map(str::to_owned);
        match f.command {
            StompCommand::Connect | StompCommand::Stomp => return self.on_connect(&f, out),
            _ if self.principal.is_none() => {
                self.refuse("not_connected");
                out.push(Frame::error(
                    "not connected",
                    "send CONNECT first",
                    receipt.as_deref(),
                ));
                return Flow::Close;
            }
            StompCommand::Subscribe => {
                if let Err(e) = self.on_subscribe(&f) {
                    self.refuse("subscribe");
                    out.push(Frame::error(&e, "", receipt.as_deref()));
                    return Flow::Close;
                }
            }
            StompCommand::Unsubscribe => {
                if let Some(t) = f.header("id").and_then(|id| self.subs.remove(id)) {
                    t.cancel();
                }
            }
            StompCommand::Send => {
                if let Err(e) = self.on_send(&f).await {
                    self.refuse("send");
                    out.push(Frame::error(&e, "", receipt.as_deref()));
                    return Flow::Close;
                }
            }
            StompCommand::Disconnect => {
                if let Some(r) = &receipt {
                    out.push(Frame::receipt(r));
                }
                return Flow::Close;
            }
            StompCommand::Ack
            | StompCommand::Nack
            | StompCommand::Begin
            | StompCommand::Commit
            | StompCommand::Abort => {
                // Subscriptions are auto-ack and there are no transactions to speak of; accept
                // these so standard clients do not fail.
            }
            _ => {
                self.refuse("bad_frame");
                out.push(Frame::error(
                    "unexpected frame",
                    "servers' frames are not accepted from clients",
                    receipt.as_deref(),
                ));
                return Flow::Close;
            }
        }
        if let Some(r) = receipt {
            out.push(Frame::receipt(&r));
        }
        Flow::Continue
    }

    fn on_connect(&mut self, f: &Frame, out: &mut Vec<Frame>) -> Flow {
        if self.principal.is_some() {
            self.refuse("bad_frame");
            out.push(Frame::error("already connected", "", None));
            return Flow::Close;
        }
        let version = match stomp::negotiate_version(f.header("accept-version")) {
            Ok(v) => v,
            Err(e) => {
                self.refuse("bad_frame");
                out.push(Frame::error("unsupported version", &e.to_string(), None));
                return Flow::Close;
            }
        };
        let hb = match stomp::parse_heart_beat(f.header("heart-beat")) {
            Ok(hb) => hb,
            Err(e) => {
                self.refuse("bad_frame");
                out.push(Frame::error("bad heart-beat", &e.to_string(), None));
                return Flow::Close;
            }
        };
        let principal = if f.header("sign").is_some() || f.header("account").is_some() {
            let req = SignedRequest {
                peer: self.peer.ip(),
                account: f.header("account"),
                timestamp: f.header("timestamp"),
                sign: f.header("sign"),
            };
            let r = self
                .st
                .mgmt
                .auth
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .check(&req, Now::system().unix_ms);
            match r {
                Ok(_) => Principal::Supervisor,
                Err(e) => {
                    self.refuse("auth");
                    out.push(Frame::error("authentication failed", &e.to_string(), None));
                    return Flow::Close;
                }
            }
        } else {
            let (Some(login), Some(pass)) = (f.header("login"), f.header("passcode")) else {
                self.refuse("auth");
                out.push(Frame::error(
                    "authentication required",
                    "give login (extension) and passcode (its password), or account, timestamp and sign",
                    None,
                ));
                return Flow::Close;
            };
            match self.agents().verify_agent(login, pass) {
                Some(id) => {
                    self.revocations = Some(self.agents().revocations.subscribe());
                    Principal::Agent(id)
                }
                None => {
                    self.refuse("auth");
                    out.push(Frame::error(
                        "authentication failed",
                        "bad login or passcode",
                        None,
                    ));
                    return Flow::Close;
                }
            }
        };
        let neg = stomp::negotiate_heart_beat(hb, SERVER_HEART_BEAT);
        self.heart_out =
            (neg.outgoing_ms > 0).then(|| Duration::from_millis(neg.outgoing_ms.into()));
        self.heart_in =
            (neg.incoming_ms > 0).then(|| Duration::from_millis(neg.incoming_ms.into()));
        tracing::debug!(peer = %self.peer, principal = ?principal, "event stream connected");
        self.principal = Some(principal);
        out.push(Frame::connected(
            version,
            SERVER_HEART_BEAT,
            concat!("gridedge/", env!("CARGO_PKG_VERSION")),
        ));
        Flow::Continue
    }

    /// Whether the principal may watch `dest`.
    fn may_subscribe(&self, dest: &str) -> Result<(), String> {
        let parts: Vec<&str> = dest.split('/').collect();
        // ["", "topic", kind, a, (b)]
        if parts.len() < 4
            || !parts[0].is_empty()
            || parts[1] != "topic"
            || parts.iter().skip(2).any(|p| p.is_empty())
        {
            return Err(format!("unknown destination {dest}"));
        }
        let kind = parts[2];
        let known = matches!(
            kind,
            "register"
                | "status"
                | "call"
                | "invite"
                | "bye"
                | "notify"
                | "task"
                | "callExtStatus"
                | "callTaskStatus"
                | "transfer"
        );
        let arity_ok = if kind == "notify" {
            parts.len() == 5
        } else {
            parts.len() == 4
        };
        if !known || !arity_ok {
            return Err(format!("unknown destination {dest}"));
        }
        match &self.principal {
            Some(Principal::Supervisor) => Ok(()),
            Some(Principal::Agent(id)) if !self.agents().identity_current(id) => {
                Err("extension revoked".into())
            }
            Some(Principal::Agent(id)) => {
                let own_project = |p: &str| id.project.as_ref().is_some_and(|x| x.as_str() == p);
                let allowed = match kind {
                    "register" | "status" | "call" | "invite" | "bye" | "transfer" => {
                        parts[3] == id.username
                    }
                    "notify" => own_project(parts[3]) && parts[4] == id.username,
                    "task" => own_project(parts[3]),
                    _ => false,
                };
                if allowed {
                    Ok(())
                } else {
                    Err(format!("not allowed to subscribe to {dest}"))
                }
            }
            None => Err("not connected".into()),
        }
    }

    fn on_subscribe(&mut self, f: &Frame) -> Result<(), String> {
        let id = f.header("id").ok_or("SUBSCRIBE without id")?.to_owned();
        let dest = f
            .header("destination")
            .ok_or("SUBSCRIBE without destination")?
            .to_owned();
        self.may_subscribe(&dest)?;
        if self.subs.contains_key(&id) {
            return Err(format!("subscription id {id} already in use"));
        }
        if self.subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(format!(
                "at most {MAX_SUBSCRIPTIONS} subscriptions per connection"
            ));
        }
        let mut rx = self.hub().subscribe(&dest);
        let tx = self.push_tx.clone();
        let sub = id.clone();
        let hub = Arc::clone(&self.st.mgmt.hub);
        let token = CancellationToken::new();
        let stop = token.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => break,
                    r = rx.recv() => r,
                };
                match next {
                    Ok(msg) => {
                        let push = Push::Message {
                            sub: sub.clone(),
                            msg,
                        };
                        let sent = tokio::select! {
                            _ = stop.cancelled() => false,
                            r = tx.send(push) => r.is_ok(),
                        };
                        if !sent {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.try_send(Push::Lagged(sub.clone()));
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
            // The receiver goes first, so the hub sees the topic unwatched and can drop it.
            drop(rx);
            hub.release(&dest);
        });
        self.subs.insert(id, token);
        Ok(())
    }

    async fn on_send(&mut self, f: &Frame) -> Result<(), String> {
        let dest = f.header("destination").ok_or("SEND without destination")?;
        let available = match dest {
            "/app/idle" => true,
            "/app/busy" => false,
            other => return Err(format!("destination {other} is not supported")),
        };
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            username: String,
            #[serde(default)]
            work_type: Option<serde_json::Value>,
            project_code: String,
        }
        let body: Body = serde_json::from_slice(&f.body)
            .map_err(|e| format!("{dest}: body is not the expected JSON ({e})"))?;
        let _ = body.work_type;
        let user = ExtensionNumber::parse(&body.username).map_err(|e| format!("username: {e}"))?;
        let project =
            ProjectCode::parse(&body.project_code).map_err(|e| format!("projectCode: {e}"))?;
        if let Some(Principal::Agent(id)) = &self.principal {
            if id.username != user.as_str() {
                return Err(format!("not allowed to change extension {user}"));
            }
            if !self.agents().identity_current(id) {
                return Err("extension revoked".into());
            }
        }
        if self.agents().project_of(user.as_str()).as_ref() != Some(&project) {
            return Err(format!(
                "extension {user} does not belong to project {project}"
            ));
        }
        let agents = Arc::clone(&self.st.mgmt.agents);
        let u = user.clone();
        let result = tokio::task::spawn_blocking(move || {
            agents.set_work_status(&u, available, Now::system())
        })
        .await
        .map_err(|_| "internal error".to_string())?;
        match result {
            Ok(_) => self.hub().notify_result(
                &project,
                user.as_str(),
                true,
                if available {
                    "置闲成功"
                } else {
                    "置忙成功"
                },
            ),
            Err(e) => self
                .hub()
                .notify_result(&project, user.as_str(), false, &e.to_string()),
        }
        Ok(())
    }
}

/// The next revoked extension; `None` when some were missed (the caller rechecks), pending
/// forever for sessions that are not agent logins.
async fn next_revocation(rx: &mut Option<broadcast::Receiver<String>>) -> Option<String> {
    match rx {
        Some(rx) => match rx.recv().await {
            Ok(user) => Some(user),
            Err(broadcast::error::RecvError::Lagged(_)) => None,
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Every write has a deadline, so a peer that stops reading cannot park the task forever.
async fn send_with_deadline(ws: &mut WebSocket, msg: Message) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(10), ws.send(msg)).await,
        Ok(Ok(()))
    )
}
