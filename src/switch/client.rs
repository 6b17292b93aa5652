//! The async shell around the sans-IO ESL codec: one inbound Event Socket connection to
//! FreeSWITCH, kept alive for the life of the daemon.
//!
//! Everything protocol-shaped (framing, the auth → subscribe handshake, which reply answers
//! which command) lives in [`super::esl`]; this module only moves bytes and time:
//!
//! * One task ([`EslClient::spawn`]) owns the socket, an [`EslDecoder`] and an [`EslSession`].
//!   It reads continuously, because FreeSWITCH drops events for a listener whose queue backs
//!   up: a slow reader loses data on the switch side, where nobody can see or count it. So
//!   the socket is never back-pressured by the consumer; the consumer's queue is.
//! * Events go to the consumer over a bounded [`mpsc`] as [`SwitchFeed`]. When that queue is
//!   full an event is dropped and counted, and once there is room again the client takes a
//!   fresh snapshot (`api show channels as json`) and hands it over as another
//!   [`SwitchFeed::Connected`], so the consumer can reconcile instead of drifting silently.
//! * `api` and `bgapi` callers talk to the task over a bounded request queue with a oneshot
//!   each. ESL answers commands strictly in order, so `api` callers are matched first in,
//!   first out; `bgapi` callers are matched by the Job-UUID the client chose.
//! * A dropped connection (EOF, disconnect notice, undecodable input, failed write) fails
//!   every waiting caller, tells the consumer ([`SwitchFeed::Disconnected`]) and reconnects
//!   with capped exponential backoff and full jitter, so a restarted switch is not hit by
//!   every client at the same instant.
//!
//! Everything is bounded: frame sizes (decoder [`Limits`]), the request queue, commands and
//! jobs awaiting an answer (`max_outstanding`), the consumer queue, and the events held back
//! while a snapshot is taken.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::esl::{
    CloseReason, Command, EslDecoder, EslError, EslEvent, EslSession, EventFormat, Limits,
    SessionOutput,
};
use crate::metrics::Metrics;

/// Requests (`api`/`bgapi` calls) that may wait for the connection task. Past this, callers
/// get [`EslClientError::Busy`] at once rather than queueing without bound.
const REQUEST_QUEUE: usize = 1024;
/// Bytes read from the socket per read call.
const READ_CHUNK: usize = 64 * 1024;
/// A connection that stayed subscribed this long counts as healthy: the next reconnect starts
/// again from the shortest backoff. Shorter-lived ones keep growing it, so a switch that
/// accepts and then drops us at once is not hammered.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Deadline for one write. Commands are small; a write that cannot complete means the peer
/// stopped reading, and the connection is given up rather than stalling the reader.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown spends trying to say `exit` politely.
const EXIT_TIMEOUT: Duration = Duration::from_secs(1);
/// Distinct `event` label values on `gridedge_esl_events_total`; beyond this, `other`. The
/// names come from the network, so the series set must not grow without bound.
const MAX_EVENT_LABELS: usize = 64;
/// The snapshot command. FreeSWITCH answers `{"row_count":N,"rows":[{...}]}`, or
/// `{"row_count":0}` when there are no channels.
const RESYNC_COMMAND: &str = "show channels as json";

/// Configuration of the Event Socket client.
#[derive(Clone)]
pub struct EslClientConfig {
    /// `host:port` of the inbound event socket, e.g. `127.0.0.1:8021`.
    pub addr: String,
    /// The event socket password. Never logged ([`fmt::Debug`] redacts it).
    pub password: String,
    /// Subscription list. `CUSTOM` must precede the subclass names (FreeSWITCH treats every
    /// name after `CUSTOM` as a subclass). `BACKGROUND_JOB` is added when missing, because
    /// `bgapi` results arrive as that event.
    pub events: Vec<String>,
    /// Event serialization requested from FreeSWITCH: JSON or plain (XML is not decoded).
    pub format: EventFormat,
    /// First reconnect backoff.
    pub reconnect_min: Duration,
    /// Backoff cap.
    pub reconnect_max: Duration,
    /// TCP connect, authentication and subscription must all finish within this.
    pub connect_timeout: Duration,
    /// How long `api` waits for its answer and `bgapi` for its `BACKGROUND_JOB`.
    pub api_timeout: Duration,
    /// Capacity of the consumer queue the daemon creates for [`SwitchFeed`]; also bounds the
    /// events held back while a snapshot is in flight.
    pub feed_capacity: usize,
    /// Commands awaiting a reply plus `bgapi` jobs awaiting completion, per connection.
    pub max_outstanding: usize,
    /// Decoder size limits: a frame over them closes the connection before it is buffered.
    pub limits: Limits,
}

impl EslClientConfig {
    /// A configuration with the defaults: JSON events, [`Self::default_events`], backoff
    /// 200 ms to 30 s, 5 s to connect, 30 s for answers (raise it for long `originate`s).
    pub fn new(addr: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            password: password.into(),
            events: Self::default_events(),
            format: EventFormat::Json,
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            api_timeout: Duration::from_secs(30),
            feed_capacity: 4096,
            max_outstanding: 256,
            limits: Limits::default(),
        }
    }

    /// The events gridedge needs: channel lifecycle, job results, registrations and the call
    /// center. `CUSTOM` comes last among the event names, followed by its subclasses, all
    /// sent in one `event json ...` command.
    pub fn default_events() -> Vec<String> {
        [
            "CHANNEL_CREATE",
            "CHANNEL_ANSWER",
            "CHANNEL_BRIDGE",
            "CHANNEL_UNBRIDGE",
            "CHANNEL_HOLD",
            "CHANNEL_UNHOLD",
            "CHANNEL_HANGUP_COMPLETE",
            "BACKGROUND_JOB",
            "CUSTOM",
            "sofia::register",
            "sofia::unregister",
            "sofia::expire",
            "callcenter::info",
        ]
        .map(String::from)
        .to_vec()
    }

    /// Checks what would otherwise fail on every connection attempt: the password and event
    /// names must encode (no CR/LF, names are single tokens, at least one), and the format
    /// must be one the decoder understands.
    pub fn validate(&self) -> Result<(), EslError> {
        if self.format == EventFormat::Xml {
            return Err(EslError::UnsupportedEventFormat {
                content_type: "text/event-xml".to_owned(),
            });
        }
        self.session().map(drop)
    }

    /// The names actually subscribed: [`Self::events`], with `BACKGROUND_JOB` inserted before
    /// `CUSTOM` when neither it nor `ALL` is present.
    fn subscription(&self) -> Vec<String> {
        let has = |name: &str| self.events.iter().any(|e| e.eq_ignore_ascii_case(name));
        let mut names = self.events.clone();
        if !names.is_empty() && !has("ALL") && !has("BACKGROUND_JOB") {
            let at = names
                .iter()
                .position(|e| e.eq_ignore_ascii_case("CUSTOM"))
                .unwrap_or(names.len());
            names.insert(at, "BACKGROUND_JOB".to_owned());
        }
        names
    }

    fn session(&self) -> Result<EslSession, EslError> {
        let names = self.subscription();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        EslSession::new(&self.password, self.format, &names, self.max_outstanding)
    }
}

impl fmt::Debug for EslClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EslClientConfig")
            .field("addr", &self.addr)
            .field("password", &"<redacted>")
            .field("events", &self.events)
            .field("format", &self.format)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("connect_timeout", &self.connect_timeout)
            .field("api_timeout", &self.api_timeout)
            .field("feed_capacity", &self.feed_capacity)
            .field("max_outstanding", &self.max_outstanding)
            .field("limits", &self.limits)
            .finish()
    }
}

/// What the client hands to its consumer, in order, over a bounded mpsc channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchFeed {
    /// Authenticated and subscribed (connection number `generation`, 1-based), with the
    /// snapshot of `api show channels as json` taken right after subscribing: each row a flat
    /// map of column → value (non-string JSON values stringified). `None` when the snapshot
    /// failed (logged and counted). Sent again with the same `generation` after events were
    /// dropped on a full queue: the consumer reconciles its state against it either way.
    Connected {
        generation: u64,
        channels: Option<Vec<BTreeMap<String, String>>>,
    },
    /// A subscribed event; `BACKGROUND_JOB`s of the client's own `bgapi` calls are not here.
    Event(EslEvent),
    /// The connection dropped (`reason` is human-readable). Events during the outage are
    /// lost; the next `Connected` carries a fresh snapshot.
    Disconnected { generation: u64, reason: String },
}

/// Why an `api`/`bgapi` call failed.
#[derive(Debug, thiserror::Error)]
pub enum EslClientError {
    #[error("not connected to the FreeSWITCH event socket")]
    NotConnected,
    #[error("no answer from FreeSWITCH within the api timeout")]
    Timeout,
    #[error("the event socket connection dropped before the answer arrived")]
    Disconnected,
    #[error("FreeSWITCH refused the command: {0}")]
    Refused(String),
    #[error("too many event socket requests are queued")]
    Busy,
    #[error(transparent)]
    Esl(#[from] EslError),
}

type Answer = oneshot::Sender<Result<String, EslClientError>>;

/// One call from an [`EslClient`] handle to the connection task.
enum Request {
    Api {
        command: String,
        answer: Answer,
    },
    BgApi {
        command: String,
        job_uuid: String,
        answer: Answer,
    },
}

impl Request {
    fn refuse(self, error: EslClientError) {
        let (Self::Api { answer, .. } | Self::BgApi { answer, .. }) = self;
        let _ = answer.send(Err(error));
    }
}

/// A handle to the connection task: cheap to clone, usable from any task.
#[derive(Debug, Clone)]
pub struct EslClient {
    requests: mpsc::Sender<Request>,
    link: watch::Receiver<bool>,
    api_timeout: Duration,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Api { command, .. } => f.debug_struct("Api").field("command", command).finish(),
            Self::BgApi {
                command, job_uuid, ..
            } => f
                .debug_struct("BgApi")
                .field("command", command)
                .field("job_uuid", job_uuid)
                .finish(),
        }
    }
}

impl EslClient {
    /// Spawns the connection task on the current tokio runtime. It connects, keeps
    /// reconnecting, and runs until `shutdown` is cancelled (then it sends `exit` if
    /// connected, and returns). An invalid configuration (see [`EslClientConfig::validate`])
    /// is logged and ends the task at once, since no attempt could ever succeed.
    pub fn spawn(
        config: EslClientConfig,
        feed: mpsc::Sender<SwitchFeed>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> (EslClient, tokio::task::JoinHandle<()>) {
        let (requests_tx, requests) = mpsc::channel(REQUEST_QUEUE);
        let (link_tx, link) = watch::channel(false);
        let client = EslClient {
            requests: requests_tx,
            link,
            api_timeout: config.api_timeout,
        };
        let task = Task {
            subscription: config.subscription(),
            config,
            feed,
            metrics,
            shutdown,
            requests,
            link: link_tx,
            generation: 0,
            event_counters: HashMap::new(),
        };
        (client, tokio::spawn(task.run()))
    }

    /// Whether the connection is authenticated and subscribed right now.
    pub fn is_connected(&self) -> bool {
        *self.link.borrow()
    }

    /// Waits until connected (for tests and start-up ordering); false on timeout or when the
    /// connection task has ended.
    pub async fn wait_connected(&self, within: Duration) -> bool {
        let mut link = self.link.clone();
        let up = timeout(within, link.wait_for(|&up| up))
            .await
            .is_ok_and(|result| result.is_ok());
        up
    }

    /// `api <command>`: the `api/response` body as a string (lossy UTF-8). A command with CR
    /// or LF is refused here, before anything is queued, since it would smuggle a second
    /// command into the socket.
    pub async fn api(&self, command: &str) -> Result<String, EslClientError> {
        Command::Api {
            command: command.to_owned(),
        }
        .encode()?;
        self.submit(|answer| Request::Api {
            command: command.to_owned(),
            answer,
        })
        .await
    }

    /// `bgapi <command>` with a fresh random Job-UUID; resolves with the `BACKGROUND_JOB` body
    /// (e.g. `"+OK <uuid>\n"` or `"-ERR NO_ANSWER\n"`) once the job completes. A job the
    /// switch refuses outright (`-ERR` command reply) is [`EslClientError::Refused`].
    pub async fn bgapi(&self, command: &str) -> Result<String, EslClientError> {
        let job_uuid = new_job_uuid();
        Command::BgApi {
            command: command.to_owned(),
            job_uuid: job_uuid.clone(),
        }
        .encode()?;
        self.submit(|answer| Request::BgApi {
            command: command.to_owned(),
            job_uuid,
            answer,
        })
        .await
    }

    /// Queues a request and waits for its answer. The timeout lives here, on the caller's
    /// side: the task just finds the oneshot closed when a late answer arrives and drops it,
    /// so abandoning a call never desynchronizes the in-order matching of replies.
    async fn submit(
        &self,
        request: impl FnOnce(Answer) -> Request,
    ) -> Result<String, EslClientError> {
        if !self.is_connected() {
            return Err(EslClientError::NotConnected);
        }
        let (answer, answered) = oneshot::channel();
        self.requests
            .try_send(request(answer))
            .map_err(|e| match e {
                TrySendError::Full(_) => EslClientError::Busy,
                TrySendError::Closed(_) => EslClientError::NotConnected,
            })?;
        match timeout(self.api_timeout, answered).await {
            Err(_) => Err(EslClientError::Timeout),
            Ok(Err(_)) => Err(EslClientError::Disconnected),
            Ok(Ok(result)) => result,
        }
    }
}

/// A random version-4 UUID, the form FreeSWITCH itself uses for Job-UUIDs.
/// A random (version 4) UUID, as FreeSWITCH writes them: job ids, and the dialer's
/// `origination_uuid`s.
pub fn new_job_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Capped exponential backoff with full jitter: the wait is uniform in `[0, backoff]`, so
/// clients that lost the switch together do not come back together.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Self {
            min,
            max,
            current: min,
        }
    }

    fn reset(&mut self) {
        self.current = self.min;
    }

    fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        if ceiling.is_zero() {
            return Duration::ZERO;
        }
        rand::thread_rng().gen_range(Duration::ZERO..=ceiling)
    }
}

/// The rows of a `show channels as json` answer. Every row is a flat object; FreeSWITCH
/// sends strings only, anything else is stringified rather than refused.
fn parse_channels(body: &[u8]) -> Result<Vec<BTreeMap<String, String>>, String> {
    let text = String::from_utf8_lossy(body);
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        let head: String = text.trim().chars().take(80).collect();
        format!("not JSON ({e}): {head:?}")
    })?;
    let object = value
        .as_object()
        .ok_or_else(|| "not a JSON object".to_owned())?;
    let rows = match object.get("rows") {
        Some(serde_json::Value::Array(rows)) => rows,
        Some(_) => return Err("\"rows\" is not an array".to_owned()),
        // `{"row_count":0}` is how FreeSWITCH says "no channels".
        None => match object.get("row_count").and_then(serde_json::Value::as_u64) {
            Some(0) | None => return Ok(Vec::new()),
            Some(n) => return Err(format!("row_count is {n} but there are no rows")),
        },
    };
    rows.iter()
        .map(|row| {
            let row = row
                .as_object()
                .ok_or_else(|| "a row is not a JSON object".to_owned())?;
            Ok(row
                .iter()
                .map(|(name, value)| {
                    let value = match value {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (name.clone(), value)
                })
                .collect())
        })
        .collect()
}

/// Who is waiting for the next `api/response`, in command order.
enum ApiWaiter {
    Caller(Answer),
    /// A snapshot; stale once its id is no longer the current one (it timed out).
    Resync(u64),
}

/// A snapshot in flight.
struct Resync {
    id: u64,
    deadline: Instant,
}

/// Per-connection state; replaced wholesale on reconnect.
struct Conn {
    session: EslSession,
    decoder: EslDecoder,
    api_waiters: VecDeque<ApiWaiter>,
    jobs: HashMap<String, Answer>,
    subscribed_at: Option<Instant>,
    /// A `Connected` went out for this connection, so its loss must be announced too.
    announced: bool,
    resync: Option<Resync>,
    next_resync_id: u64,
    /// Events that arrived while a snapshot was in flight: they go out after its `Connected`,
    /// so the consumer never applies an event and then a snapshot that predates it.
    held: VecDeque<EslEvent>,
    held_overflowed: bool,
    /// An event was dropped on a full consumer queue and no snapshot has followed yet.
    overflow: bool,
}

impl Conn {
    fn new(session: EslSession, limits: Limits) -> Self {
        Self {
            session,
            decoder: EslDecoder::new(limits),
            api_waiters: VecDeque::new(),
            jobs: HashMap::new(),
            subscribed_at: None,
            announced: false,
            resync: None,
            next_resync_id: 0,
            held: VecDeque::new(),
            held_overflowed: false,
            overflow: false,
        }
    }

    /// Stops tracking jobs whose callers gave up (timed out). Without this, a job whose
    /// BACKGROUND_JOB FreeSWITCH dropped would hold its slot until the next reconnect, and
    /// enough of them would refuse every further `bgapi` on this connection.
    fn forget_abandoned_jobs(&mut self) {
        let Conn { jobs, session, .. } = self;
        jobs.retain(|uuid, answer| {
            let waited_for = !answer.is_closed();
            if !waited_for {
                session.forget_job(uuid);
            }
            waited_for
        });
    }

    /// Every waiting caller learns the connection is gone.
    fn fail_pending(&mut self) {
        for waiter in self.api_waiters.drain(..) {
            if let ApiWaiter::Caller(answer) = waiter {
                let _ = answer.send(Err(EslClientError::Disconnected));
            }
        }
        for (_, answer) in self.jobs.drain() {
            let _ = answer.send(Err(EslClientError::Disconnected));
        }
    }
}

/// Why a connection ended.
enum Stop {
    /// `mid_write`: shutdown interrupted a write, so the socket may hold half a command and
    /// must not get another one appended (`exit` after a cut `bgapi` line would run a
    /// different command).
    Shutdown { mid_write: bool },
    /// Drop the connection and reconnect. `result` labels `esl_connects` when the connection
    /// never got subscribed.
    Drop {
        result: &'static str,
        reason: String,
    },
}

impl Stop {
    fn drop(result: &'static str, reason: impl Into<String>) -> Self {
        Self::Drop {
            result,
            reason: reason.into(),
        }
    }

    fn closed(reason: CloseReason) -> Self {
        match reason {
            CloseReason::AuthFailed(text) => {
                Self::drop("auth_failed", format!("authentication failed: {text}"))
            }
            CloseReason::SubscribeFailed(text) => {
                Self::drop("error", format!("subscription refused: {text}"))
            }
            CloseReason::Disconnected(text) => Self::drop(
                "error",
                format!("disconnect notice from FreeSWITCH: {}", text.trim()),
            ),
            CloseReason::Rejected(text) => Self::drop(
                "refused",
                format!("connection rejected by FreeSWITCH: {}", text.trim()),
            ),
        }
    }
}

/// One turn of the connection loop.
enum Step {
    Shutdown,
    HandshakeTimeout,
    Read(io::Result<usize>),
    Request(Request),
    ResyncTimeout,
    FeedRoom(bool),
}

/// The connection task.
struct Task {
    config: EslClientConfig,
    subscription: Vec<String>,
    feed: mpsc::Sender<SwitchFeed>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    requests: mpsc::Receiver<Request>,
    link: watch::Sender<bool>,
    generation: u64,
    event_counters: HashMap<String, IntCounter>,
}

impl Task {
    async fn run(mut self) {
        if let Err(e) = self.config.validate() {
            error!(addr = %self.config.addr, error = %e, "invalid event socket configuration; the client is not started");
            return;
        }
        info!(addr = %self.config.addr, events = %self.subscription.join(" "), "event socket client starting");
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        while let Some(stable) = self.connect_once().await {
            if stable {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            debug!(addr = %self.config.addr, delay_ms = delay.as_millis() as u64, "event socket reconnect scheduled");
            if !self.idle(delay).await {
                break;
            }
        }
        self.set_link(false);
        info!(addr = %self.config.addr, "event socket client stopped");
    }

    /// Sleeps out a backoff, answering requests with `NotConnected` meanwhile. False when
    /// shutdown interrupted it.
    async fn idle(&mut self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return false,
                _ = sleep_until(deadline) => return true,
                Some(request) = self.requests.recv() => request.refuse(EslClientError::NotConnected),
            }
        }
    }

    /// One connection from TCP connect to its end. `None` on shutdown, else whether it was a
    /// stable connection (subscribed for at least [`STABLE_AFTER`]).
    async fn connect_once(&mut self) -> Option<bool> {
        let addr = self.config.addr.clone();
        let deadline = Instant::now() + self.config.connect_timeout;
        let connected = tokio::select! {
            _ = self.shutdown.cancelled() => return None,
            r = timeout_at(deadline, TcpStream::connect(addr.as_str())) => r,
        };
        let mut stream = match connected {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                let result = if e.kind() == io::ErrorKind::ConnectionRefused {
                    "refused"
                } else {
                    "error"
                };
                self.count_connect(result);
                warn!(%addr, error = %e, "event socket connect failed");
                return Some(false);
            }
            Err(_) => {
                self.count_connect("timeout");
                warn!(%addr, "event socket connect timed out");
                return Some(false);
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%addr, error = %e, "TCP_NODELAY not set");
        }
        let session = match self.config.session() {
            Ok(session) => session,
            Err(e) => {
                // Unreachable after `validate`, but never worth a panic.
                self.count_connect("error");
                error!(%addr, error = %e, "event socket session cannot be built");
                return Some(false);
            }
        };
        let mut conn = Conn::new(session, self.config.limits);
        let stop = self.drive(&mut stream, &mut conn, deadline).await;

        let subscribed_at = conn.subscribed_at;
        self.set_link(false);
        conn.fail_pending();
        match stop {
            Stop::Shutdown { mid_write } => {
                if subscribed_at.is_some() && !mid_write {
                    self.say_goodbye(&mut stream).await;
                }
                None
            }
            Stop::Drop { result, reason } => match subscribed_at {
                Some(at) => {
                    warn!(%addr, generation = self.generation, %reason, "event socket connection lost");
                    if !conn.announced {
                        // The consumer never heard of this generation; nothing to retract.
                        return Some(at.elapsed() >= STABLE_AFTER);
                    }
                    let lost = SwitchFeed::Disconnected {
                        generation: self.generation,
                        reason,
                    };
                    match self.send_feed(lost).await {
                        Ok(()) => Some(at.elapsed() >= STABLE_AFTER),
                        Err(_) => None,
                    }
                }
                None => {
                    self.count_connect(result);
                    if result == "auth_failed" {
                        error!(%addr, %reason, "event socket authentication failed; check the password");
                    } else {
                        warn!(%addr, %result, %reason, "event socket handshake failed");
                    }
                    Some(false)
                }
            },
        }
    }

    /// `exit`, best effort and bounded: the switch then closes its side cleanly.
    async fn say_goodbye(&self, stream: &mut TcpStream) {
        if let Ok(bytes) = Command::Exit.encode() {
            let _ = timeout(EXIT_TIMEOUT, async {
                stream.write_all(&bytes).await?;
                stream.shutdown().await
            })
            .await;
        }
        debug!(addr = %self.config.addr, "event socket closed on shutdown");
    }

    /// The connection loop: reads, requests from callers, the handshake and snapshot
    /// deadlines, and room in the consumer queue after an overflow.
    async fn drive(&mut self, stream: &mut TcpStream, conn: &mut Conn, handshake: Instant) -> Stop {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let subscribed = conn.subscribed_at.is_some();
            let resync_deadline = conn.resync.as_ref().map(|r| r.deadline);
            let want_room = subscribed && conn.overflow && conn.resync.is_none();
            let step = tokio::select! {
                _ = self.shutdown.cancelled() => Step::Shutdown,
                _ = sleep_until(handshake), if !subscribed => Step::HandshakeTimeout,
                read = stream.read(&mut buf) => Step::Read(read),
                Some(request) = self.requests.recv(), if subscribed => Step::Request(request),
                _ = sleep_until(resync_deadline.unwrap_or(handshake)), if resync_deadline.is_some() => Step::ResyncTimeout,
                room = self.feed.reserve(), if want_room => Step::FeedRoom(room.is_ok()),
            };
            let outcome = match step {
                Step::Shutdown => Err(Stop::Shutdown { mid_write: false }),
                Step::HandshakeTimeout => Err(Stop::drop(
                    "timeout",
                    "authentication and subscription did not finish within the connect timeout",
                )),
                Step::Read(Ok(0)) => Err(Stop::drop("error", "connection closed by FreeSWITCH")),
                Step::Read(Ok(n)) => {
                    conn.decoder.push(buf.get(..n).unwrap_or_default());
                    self.on_bytes(stream, conn).await
                }
                Step::Read(Err(e)) => Err(Stop::drop("error", format!("read failed: {e}"))),
                Step::Request(request) => self.on_request(stream, conn, request).await,
                Step::ResyncTimeout => {
                    self.finish_resync(conn, Err("no answer within the api timeout".to_owned()))
                        .await
                }
                Step::FeedRoom(true) => self.start_resync(stream, conn).await,
                Step::FeedRoom(false) => {
                    // The consumer is gone; there is nobody to resynchronize.
                    conn.overflow = false;
                    Ok(())
                }
            };
            if let Err(stop) = outcome {
                return stop;
            }
        }
    }

    /// Decodes and handles every complete message in the decoder.
    async fn on_bytes(&mut self, stream: &mut TcpStream, conn: &mut Conn) -> Result<(), Stop> {
        loop {
            let message = match conn.decoder.next_message() {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(()),
                // Framing is lost (oversized or malformed frame): the only safe recovery is a
                // new connection. The decoder has already refused to buffer the frame.
                Err(e) => return Err(Stop::drop("error", format!("undecodable stream: {e}"))),
            };
            let outputs = match conn.session.handle(&message) {
                Ok(outputs) => outputs,
                Err(EslError::SessionClosed) => {
                    return Err(Stop::drop("error", "message after the session closed"))
                }
                Err(e) => {
                    // A well-framed message whose content does not parse (e.g. a broken
                    // event body): framing is intact, so skip it and keep the connection.
                    warn!(addr = %self.config.addr, content_type = %message.content_type(), error = %e, "skipping an unparsable event socket message");
                    continue;
                }
            };
            for output in outputs {
                self.on_output(stream, conn, output).await?;
            }
        }
    }

    async fn on_output(
        &mut self,
        stream: &mut TcpStream,
        conn: &mut Conn,
        output: SessionOutput,
    ) -> Result<(), Stop> {
        match output {
            SessionOutput::Send(bytes) => self.write(stream, &bytes).await?,
            SessionOutput::Authenticated => {
                debug!(addr = %self.config.addr, "event socket authenticated");
            }
            SessionOutput::Subscribed => {
                self.generation += 1;
                conn.subscribed_at = Some(Instant::now());
                self.set_link(true);
                self.count_connect("ok");
                info!(addr = %self.config.addr, generation = self.generation, "event socket connected and subscribed");
                self.start_resync(stream, conn).await?;
            }
            SessionOutput::Event(event) => {
                self.count_event(&event);
                self.deliver(conn, event);
            }
            SessionOutput::JobAccepted { job_uuid } => {
                debug!(%job_uuid, "bgapi job accepted");
            }
            SessionOutput::JobRejected { job_uuid, reason } => {
                if let Some(answer) = conn.jobs.remove(&job_uuid) {
                    let _ = answer.send(Err(EslClientError::Refused(reason)));
                }
            }
            SessionOutput::JobCompleted { job_uuid, event } => {
                self.count_event(&event);
                if let Some(answer) = conn.jobs.remove(&job_uuid) {
                    let _ = answer.send(Ok(event.body.unwrap_or_default()));
                }
            }
            SessionOutput::ApiResponse(body) => match conn.api_waiters.pop_front() {
                Some(ApiWaiter::Caller(answer)) => {
                    let _ = answer.send(Ok(String::from_utf8_lossy(&body).into_owned()));
                }
                Some(ApiWaiter::Resync(id)) => {
                    if conn.resync.as_ref().is_some_and(|r| r.id == id) {
                        let channels = parse_channels(&body);
                        self.finish_resync(conn, channels).await?;
                    }
                }
                None => {
                    debug!(addr = %self.config.addr, "ignoring an api/response nobody asked for")
                }
            },
            SessionOutput::CommandReply(text) => {
                debug!(addr = %self.config.addr, reply = %text, "event socket command reply");
            }
            SessionOutput::Closed(reason) => return Err(Stop::closed(reason)),
        }
        Ok(())
    }

    async fn on_request(
        &mut self,
        stream: &mut TcpStream,
        conn: &mut Conn,
        request: Request,
    ) -> Result<(), Stop> {
        let (command, answer, job_uuid) = match request {
            Request::Api { command, answer } => (Command::Api { command }, answer, None),
            Request::BgApi {
                command,
                job_uuid,
                answer,
            } => (
                Command::BgApi {
                    command,
                    job_uuid: job_uuid.clone(),
                },
                answer,
                Some(job_uuid),
            ),
        };
        if answer.is_closed() {
            // The caller already gave up; do not spend a command slot on it.
            return Ok(());
        }
        if job_uuid.is_some() {
            conn.forget_abandoned_jobs();
        }
        match conn.session.command(&command) {
            Ok(bytes) => {
                match job_uuid {
                    Some(job_uuid) => {
                        conn.jobs.insert(job_uuid, answer);
                    }
                    None => conn.api_waiters.push_back(ApiWaiter::Caller(answer)),
                }
                self.write(stream, &bytes).await
            }
            Err(e) => {
                let _ = answer.send(Err(e.into()));
                Ok(())
            }
        }
    }

    /// Asks for a snapshot; events are held back until it is answered (or times out).
    async fn start_resync(&mut self, stream: &mut TcpStream, conn: &mut Conn) -> Result<(), Stop> {
        let id = conn.next_resync_id;
        conn.next_resync_id += 1;
        conn.resync = Some(Resync {
            id,
            deadline: Instant::now() + self.config.api_timeout,
        });
        let command = Command::Api {
            command: RESYNC_COMMAND.to_owned(),
        };
        match conn.session.command(&command) {
            Ok(bytes) => {
                conn.api_waiters.push_back(ApiWaiter::Resync(id));
                self.write(stream, &bytes).await
            }
            Err(e) => self.finish_resync(conn, Err(e.to_string())).await,
        }
    }

    /// Hands the snapshot (or its absence) to the consumer as `Connected`, then the events
    /// held back meanwhile.
    async fn finish_resync(
        &mut self,
        conn: &mut Conn,
        result: Result<Vec<BTreeMap<String, String>>, String>,
    ) -> Result<(), Stop> {
        conn.resync = None;
        let channels = match result {
            Ok(channels) => {
                self.metrics.esl_resyncs.with_label_values(&["ok"]).inc();
                debug!(
                    generation = self.generation,
                    channels = channels.len(),
                    "channel snapshot taken"
                );
                Some(channels)
            }
            Err(e) => {
                self.metrics.esl_resyncs.with_label_values(&["error"]).inc();
                warn!(addr = %self.config.addr, generation = self.generation, error = %e, "channel snapshot (show channels) failed");
                None
            }
        };
        let connected = SwitchFeed::Connected {
            generation: self.generation,
            channels,
        };
        self.send_feed(connected).await?;
        conn.announced = true;
        conn.overflow = std::mem::take(&mut conn.held_overflowed);
        while let Some(event) = conn.held.pop_front() {
            self.offer(conn, event);
        }
        Ok(())
    }

    /// Routes an event: held while a snapshot is in flight, else offered to the consumer.
    fn deliver(&self, conn: &mut Conn, event: EslEvent) {
        if conn.resync.is_none() {
            self.offer(conn, event);
        } else if conn.held.len() < self.config.feed_capacity.max(1) {
            conn.held.push_back(event);
        } else {
            self.metrics.esl_events_dropped.inc();
            conn.held_overflowed = true;
        }
    }

    /// Never waits: a full queue drops the event and schedules a resync for when there is
    /// room, because waiting would stop the socket reader and make FreeSWITCH drop events
    /// where nobody can count them.
    fn offer(&self, conn: &mut Conn, event: EslEvent) {
        match self.feed.try_send(SwitchFeed::Event(event)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.metrics.esl_events_dropped.inc();
                if !conn.overflow {
                    warn!(
                        generation = self.generation,
                        "event consumer queue full: dropping events, will resync when it drains"
                    );
                }
                conn.overflow = true;
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }

    /// Sends a `Connected`/`Disconnected`, which must not be lost: waits for room (pausing the
    /// reader briefly), unless shutdown comes first. A consumer that is gone is not an error.
    async fn send_feed(&self, item: SwitchFeed) -> Result<(), Stop> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(Stop::Shutdown { mid_write: false }),
            sent = self.feed.send(item) => {
                if sent.is_err() {
                    debug!("event consumer is gone");
                }
                Ok(())
            }
        }
    }

    async fn write(&self, stream: &mut TcpStream, bytes: &[u8]) -> Result<(), Stop> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(Stop::Shutdown { mid_write: true }),
            written = timeout(WRITE_TIMEOUT, stream.write_all(bytes)) => match written {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Stop::drop("error", format!("write failed: {e}"))),
                Err(_) => Err(Stop::drop("timeout", "write timed out")),
            },
        }
    }

    fn set_link(&self, up: bool) {
        self.link.send_replace(up);
        self.metrics.esl_connected.set(i64::from(up));
    }

    fn count_connect(&self, result: &str) {
        self.metrics.esl_connects.with_label_values(&[result]).inc();
    }

    /// Counts by Event-Name, CUSTOM events by subclass; handles are cached per name.
    fn count_event(&mut self, event: &EslEvent) {
        let name = match event.name() {
            Some("CUSTOM") => event.subclass().unwrap_or("CUSTOM"),
            Some(name) => name,
            None => "unknown",
        };
        if let Some(counter) = self.event_counters.get(name) {
            counter.inc();
            return;
        }
        let label = if self.event_counters.len() >= MAX_EVENT_LABELS {
            "other"
        } else {
            name
        };
        let counter = self.metrics.esl_events.with_label_values(&[label]);
        counter.inc();
        if self.event_counters.len() < MAX_EVENT_LABELS {
            self.event_counters.insert(label.to_owned(), counter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_full_jitter() {
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(700);
        let mut backoff = Backoff::new(min, max);
        let ceilings = [100, 200, 400, 700, 700].map(Duration::from_millis);
        for ceiling in ceilings {
            assert_eq!(backoff.current, ceiling);
            let delay = backoff.next_delay();
            assert!(delay <= ceiling, "{delay:?} > {ceiling:?}");
        }
        backoff.reset();
        assert_eq!(backoff.current, min);
        // Jitter really spreads the waits instead of always sleeping the ceiling.
        let delays: Vec<Duration> = (0..64)
            .map(|_| {
                backoff.reset();
                backoff.next_delay()
            })
            .collect();
        assert!(delays.iter().any(|d| *d < min / 2), "{delays:?}");
        assert_eq!(
            Backoff::new(Duration::ZERO, Duration::ZERO).next_delay(),
            Duration::ZERO
        );
    }

    #[test]
    fn channel_snapshots_parse() {
        let body = br#"{"row_count":2,"rows":[{"uuid":"a","callstate":"ACTIVE","cid_num":"1001"},{"uuid":"b","secure":"","n":7,"x":null}]}
"#;
        let rows = parse_channels(body).expect("parses");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["callstate"], "ACTIVE");
        assert_eq!(rows[1]["n"], "7");
        assert_eq!(rows[1]["x"], "null");
        assert_eq!(rows[1]["secure"], "");
        assert_eq!(parse_channels(b"{\"row_count\":0}\n"), Ok(Vec::new()));
        assert!(parse_channels(b"-ERR no reply\n").is_err());
        assert!(parse_channels(b"[1]").is_err());
        assert!(parse_channels(br#"{"row_count":3}"#).is_err());
        assert!(parse_channels(br#"{"rows":[1]}"#).is_err());
        assert!(parse_channels(br#"{"rows":{}}"#).is_err());
    }

    #[test]
    fn subscription_always_includes_background_job_before_custom() {
        let mut config = EslClientConfig::new("127.0.0.1:8021", "ClueCon");
        assert_eq!(config.subscription(), EslClientConfig::default_events());
        config.events = ["CHANNEL_CREATE", "CUSTOM", "sofia::register"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            config.subscription(),
            [
                "CHANNEL_CREATE",
                "BACKGROUND_JOB",
                "CUSTOM",
                "sofia::register"
            ]
        );
        config.events = vec!["ALL".into()];
        assert_eq!(config.subscription(), ["ALL"]);
        config.events = vec!["CHANNEL_ANSWER".into()];
        assert_eq!(config.subscription(), ["CHANNEL_ANSWER", "BACKGROUND_JOB"]);
    }

    #[test]
    fn config_validation_and_redaction() {
        let mut config = EslClientConfig::new("127.0.0.1:8021", "s3cret-pw");
        assert!(config.validate().is_ok());
        assert!(!format!("{config:?}").contains("s3cret-pw"));
        config.password = "x\nevent plain ALL".into();
        assert!(matches!(
            config.validate(),
            Err(EslError::CommandInjection { .. })
        ));
        config.password = "ok".into();
        config.events = Vec::new();
        assert!(config.validate().is_err());
        config.events = EslClientConfig::default_events();
        config.format = EventFormat::Xml;
        assert!(config.validate().is_err());
    }

    #[test]
    fn job_uuids_are_random_v4() {
        let a = new_job_uuid();
        let b = new_job_uuid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        assert!(a.split('-').map(str::len).eq([8, 4, 4, 4, 12].into_iter()));
    }
}
