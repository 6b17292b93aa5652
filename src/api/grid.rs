//! The grid platform's calls to us (seed 000 §二 网格化调用端, 000:L727-L1049): the HTTP shell
//! around `grid::query` (parameters, validation, response shapes), `grid::auth` (allow-list
//! plus none/bearer/hmac) and `grid::queue_board`.
//!
//! Every route is POST (000:L739 and the like), at a configurable path (the seed leaves them
//! `/xxxxxxx`, grid reference A.1.1), with a JSON or form-urlencoded body. A request goes
//! through, in order: the allow-list (before the body is read), the method, the bounded body,
//! the configured authentication, the parameters, then the work. Every refusal is the route's
//! own `{code, msg}` envelope (code typed per route, see `grid::query`) with the HTTP status as
//! the code, counted in `gridedge_api_requests_total{route,result}`.
//!
//! The recording download streams whatever a [`RecordingIndex`] opens, chunk by chunk, never
//! holding a whole file. Today the daemon wires [`NoRecordings`]; the recording issue supplies
//! the real index.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::listener::Peer;
use crate::agents::counters::LiveState;
use crate::agents::service::AgentsService;
use crate::agents::state::grid_agent_state;
use crate::clock::Now;
use crate::grid::auth::{
    AuthMode, AuthRequest, AuthSettings, GridAuth, GridAuthError, GridSecret, SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
};
use crate::grid::query::{
    agent_list_response, envelope, extension_list_response, parse_record_id, parse_start_time,
    plan_change, queue_list_response, skill_group_response, AgentChange, AgentListRequest,
    AgentView, BodyKind, ChangeEffect, CodeStyle, ExtensionListRequest, ExtensionView,
    FallbackNumber, FallbackTable, NewAgentDefaults, Params, QueryError, QueueListRequest,
    SeatLive, OK_MSG,
};
use crate::grid::queue_board::SharedQueueBoard;
use crate::metrics::Metrics;
use crate::store::{Durability, Store};

// ---- configuration ----------------------------------------------------------------------

/// `[grid_api]`: the routes the grid platform calls. Documented in `config/gridedge.toml`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GridApiConfig {
    pub enabled: bool,
    /// The enterprise id this call platform gave the grid (`entId`, 000:L816).
    pub ent_id: String,
    /// Source networks allowed; empty = loopback only.
    pub allow: Vec<IpNet>,
    pub auth: AuthMode,
    /// Bearer token (`auth = "bearer"`), inline or in a file (one of the two).
    pub token: String,
    pub token_file: String,
    /// HMAC key (`auth = "hmac"`), inline or in a file (one of the two).
    pub hmac_secret: String,
    pub hmac_secret_file: String,
    pub timestamp_window_secs: u64,
    pub max_replay_entries: usize,
    pub max_body_bytes: usize,
    pub max_page_size: u64,
    pub max_queued_calls: usize,
    /// Department, org number and org name given to agents the grid adds (000:L927: "default
    /// root department").
    pub new_agent_department: String,
    pub new_agent_org_no: String,
    pub new_agent_org_name: String,
    pub paths: GridPaths,
}

impl Default for GridApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ent_id: String::new(),
            allow: Vec::new(),
            auth: AuthMode::None,
            token: String::new(),
            token_file: String::new(),
            hmac_secret: String::new(),
            hmac_secret_file: String::new(),
            timestamp_window_secs: 300,
            max_replay_entries: 100_000,
            max_body_bytes: 65_536,
            max_page_size: 1000,
            max_queued_calls: 10_000,
            new_agent_department: "root".into(),
            new_agent_org_no: String::new(),
            new_agent_org_name: String::new(),
            paths: GridPaths::default(),
        }
    }
}

// Hand-written so the token and the HMAC key never reach a log line.
impl std::fmt::Debug for GridApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GridApiConfig")
            .field("enabled", &self.enabled)
            .field("ent_id", &self.ent_id)
            .field("allow", &self.allow)
            .field("auth", &self.auth)
            .field("token", &"<redacted>")
            .field("token_file", &self.token_file)
            .field("hmac_secret", &"<redacted>")
            .field("hmac_secret_file", &self.hmac_secret_file)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

/// `[grid_api.paths]`: one path per route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GridPaths {
    pub recording: String,
    pub agents: String,
    pub extensions: String,
    pub agent_change: String,
    pub queue: String,
    pub skill_groups: String,
    pub fallback_number: String,
}

impl Default for GridPaths {
    fn default() -> Self {
        Self {
            recording: "/grid/recording/download".into(),
            agents: "/grid/agent/list".into(),
            extensions: "/grid/extension/list".into(),
            agent_change: "/grid/agent/change".into(),
            queue: "/grid/queue/list".into(),
            skill_groups: "/grid/skill-group/list".into(),
            fallback_number: "/grid/outbound/fallback-number".into(),
        }
    }
}

impl GridPaths {
    fn all(&self) -> [(&'static str, &str); 7] {
        [
            ("recording", &self.recording),
            ("agents", &self.agents),
            ("extensions", &self.extensions),
            ("agent_change", &self.agent_change),
            ("queue", &self.queue),
            ("skill_groups", &self.skill_groups),
            ("fallback_number", &self.fallback_number),
        ]
    }
}

impl GridApiConfig {
    /// Range and consistency checks; the error is (key, reason). `reserved` are paths other
    /// routes already own, `prefixes` path prefixes they own.
    pub fn validate(&self, reserved: &[&str], prefixes: &[&str]) -> Result<(), (String, String)> {
        let bad = |k: &str, r: &str| Err((format!("grid_api.{k}"), r.to_owned()));
        if self.ent_id.len() > 64 || self.ent_id.chars().any(char::is_control) {
            return bad(
                "ent_id",
                "must be at most 64 characters without control characters",
            );
        }
        if !(1..=86_400).contains(&self.timestamp_window_secs) {
            return bad("timestamp_window_secs", "must be between 1 and 86400");
        }
        if self.max_replay_entries < 16 {
            return bad("max_replay_entries", "must be at least 16");
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            return bad("max_body_bytes", "must be between 1024 and 16777216");
        }
        if !(1..=10_000).contains(&self.max_page_size) {
            return bad("max_page_size", "must be between 1 and 10000");
        }
        if !(1..=1_000_000).contains(&self.max_queued_calls) {
            return bad("max_queued_calls", "must be between 1 and 1000000");
        }
        let (inline, file, key, file_key) = match self.auth {
            AuthMode::None => ("", "", "", ""),
            AuthMode::Bearer => (&*self.token, &*self.token_file, "token", "token_file"),
            AuthMode::Hmac => (
                &*self.hmac_secret,
                &*self.hmac_secret_file,
                "hmac_secret",
                "hmac_secret_file",
            ),
        };
        if self.auth != AuthMode::None {
            match (inline.is_empty(), file.is_empty()) {
                (true, true) => {
                    return bad(
                        key,
                        &format!("auth = {:?} needs {key} or {file_key}", self.auth),
                    )
                }
                (false, false) => return bad(key, &format!("set {key} or {file_key}, not both")),
                (false, true) if inline.len() < 16 || inline.chars().any(char::is_whitespace) => {
                    return bad(key, "must be at least 16 characters without blanks")
                }
                _ => {}
            }
        }
        let mut seen: HashSet<&str> = reserved.iter().copied().collect();
        for (k, p) in self.paths.all() {
            let ok = p.starts_with('/')
                && p.len() <= 128
                && p.len() > 1
                && !p.contains("//")
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
                && !p.split('/').any(|seg| seg == "." || seg == "..");
            if !ok {
                return bad(
                    &format!("paths.{k}"),
                    "must be an absolute path of at most 128 characters of A-Z, a-z, 0-9, '/', '-', '_', '.'",
                );
            }
            if let Some(pre) = prefixes.iter().find(|pre| p.starts_with(*pre)) {
                return bad(
                    &format!("paths.{k}"),
                    &format!("{p} is under {pre}, which another API owns"),
                );
            }
            if !seen.insert(p) {
                return bad(
                    &format!("paths.{k}"),
                    &format!("{p} is already used by another route"),
                );
            }
        }
        Ok(())
    }

    /// The authentication settings, reading a token or key file if one is configured.
    pub fn auth_settings(&self) -> anyhow::Result<AuthSettings> {
        let read = |key: &str, path: &str| -> anyhow::Result<GridSecret> {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("grid_api.{key}: cannot read {path}: {e}"))?;
            let t = text.trim();
            if t.len() < 16 || t.chars().any(char::is_whitespace) {
                anyhow::bail!(
                    "grid_api.{key}: {path} must hold one secret of at least 16 characters without blanks"
                );
            }
            Ok(GridSecret::new(t.as_bytes().to_vec()))
        };
        let secret = match self.auth {
            AuthMode::None => GridSecret::default(),
            AuthMode::Bearer if !self.token_file.is_empty() => {
                read("token_file", &self.token_file)?
            }
            AuthMode::Bearer => GridSecret::new(self.token.as_bytes().to_vec()),
            AuthMode::Hmac if !self.hmac_secret_file.is_empty() => {
                read("hmac_secret_file", &self.hmac_secret_file)?
            }
            AuthMode::Hmac => GridSecret::new(self.hmac_secret.as_bytes().to_vec()),
        };
        Ok(AuthSettings {
            allow: self.allow.clone(),
            mode: self.auth,
            secret,
            window_secs: self.timestamp_window_secs,
            max_replay_entries: self.max_replay_entries,
        })
    }
}

// ---- recordings -------------------------------------------------------------------------

/// A recording opened for download.
pub struct RecordingSource {
    /// Read chunk by chunk while the response is sent (decrypting on the fly if need be:
    /// 000:L733, L761).
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
    /// e.g. `audio/wav` (the seed names no format; grid reference C.5 suggests WAV).
    pub content_type: String,
    /// The decoded length when known up front (sent as Content-Length; else chunked).
    pub len: Option<u64>,
    /// The name offered in Content-Disposition.
    pub file_name: String,
    /// Which part of the recording `reader` yields (and so the status: 200, 206 or 416).
    pub ranged: Ranged,
}

/// A `Range: bytes=...` request header (RFC 9110 §14.1.2). One range only: several ranges,
/// other units or bad syntax are ignored (the whole recording is sent, which the RFC allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b` (b inclusive).
    FromTo(u64, u64),
    /// `bytes=a-`.
    From(u64),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// `None` means: ignore the header.
    pub fn parse(v: &str) -> Option<ByteRange> {
        let spec = v.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        let num = |x: &str| -> Option<u64> {
            if x.is_empty() || !x.bytes().all(|c| c.is_ascii_digit()) {
                None
            } else {
                x.parse().ok()
            }
        };
        match (a.is_empty(), b.is_empty()) {
            (true, false) => Some(ByteRange::Suffix(num(b)?)),
            (false, true) => Some(ByteRange::From(num(a)?)),
            (false, false) => {
                let (a, b) = (num(a)?, num(b)?);
                // last < first is invalid syntax: ignored, not unsatisfiable.
                (b >= a).then_some(ByteRange::FromTo(a, b))
            }
            (true, true) => None,
        }
    }

    /// The part of a `total`-byte recording this range selects.
    pub fn resolve(self, total: u64) -> Ranged {
        let part = |first: u64, last: u64| Ranged::Part { first, last, total };
        match self {
            ByteRange::FromTo(a, _) | ByteRange::From(a) if a >= total => {
                Ranged::Unsatisfiable { total }
            }
            ByteRange::FromTo(a, b) => part(a, b.min(total - 1)),
            ByteRange::From(a) => part(a, total - 1),
            ByteRange::Suffix(n) if n == 0 || total == 0 => Ranged::Unsatisfiable { total },
            ByteRange::Suffix(n) => part(total.saturating_sub(n), total - 1),
        }
    }
}

/// What part of a recording a [`RecordingSource`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranged {
    /// The index cannot serve ranges: the whole recording, 200 without Accept-Ranges.
    Unsupported,
    /// The whole recording (no or an ignored Range header): 200 with `Accept-Ranges: bytes`.
    Whole,
    /// Bytes `first..=last` of `total`: 206 with Content-Range; `len` is the part's length.
    Part { first: u64, last: u64, total: u64 },
    /// 416 with `Content-Range: bytes */total`; the reader is not read.
    Unsatisfiable { total: u64 },
}

/// Finds recordings by their id (000:L748: one id per recording, not per call). Implemented
/// by the recording module; `open` may block (it runs on a blocking thread).
pub trait RecordingIndex: Send + Sync {
    /// `Ok(None)` when there is no such recording. `start_time` is the grid's optional hint
    /// (000:L747, format to be agreed). `range` is the request's Range header, parsed; an
    /// index that serves ranges resolves it with [`ByteRange::resolve`] and says what it
    /// serves in [`RecordingSource::ranged`].
    fn open(
        &self,
        record_id: &str,
        start_time: Option<&str>,
        range: Option<ByteRange>,
    ) -> std::io::Result<Option<RecordingSource>>;

    /// Whether this node records at all (only changes the 404 message).
    fn enabled(&self) -> bool {
        true
    }
}

/// The index of a node without recording: nothing is ever found.
pub struct NoRecordings;

impl RecordingIndex for NoRecordings {
    fn open(
        &self,
        _: &str,
        _: Option<&str>,
        _: Option<ByteRange>,
    ) -> std::io::Result<Option<RecordingSource>> {
        Ok(None)
    }

    fn enabled(&self) -> bool {
        false
    }
}

/// Chunk size of recording downloads: memory per download is one chunk, whatever the file.
const CHUNK: usize = 64 * 1024;

fn stream_body(reader: Pin<Box<dyn AsyncRead + Send>>) -> Body {
    let stream = futures_util::stream::unfold(Some(reader), |state| async move {
        let mut r = state?;
        let mut buf = vec![0u8; CHUNK];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<Bytes, std::io::Error>(Bytes::from(buf)), Some(r)))
            }
            // The status line is gone already: ending the body early is the only signal
            // left (the client sees a short or unterminated body).
            Err(e) => {
                tracing::warn!(error = %e, "recording download failed mid-stream");
                Some((Err(e), None))
            }
        }
    });
    Body::from_stream(stream)
}

// ---- state ------------------------------------------------------------------------------

/// The grid API's state: its own store connection (synchronous=FULL, so a push is on disk
/// before the grid hears 200), the 保底号码 table in memory, the queue board, presence.
pub struct GridState {
    cfg: GridApiConfig,
    /// mod_callcenter queue → skill group (`cdr.mapping.queues`, shared with the CDR builder).
    queue_map: BTreeMap<String, String>,
    auth: Mutex<GridAuth>,
    agents: Arc<AgentsService>,
    store: Mutex<Store>,
    fallback: RwLock<FallbackTable>,
    board: Arc<SharedQueueBoard>,
    recordings: Arc<dyn RecordingIndex>,
    metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl GridState {
    pub fn open(
        cfg: &GridApiConfig,
        queue_map: BTreeMap<String, String>,
        db_path: &std::path::Path,
        agents: Arc<AgentsService>,
        board: Arc<SharedQueueBoard>,
        recordings: Arc<dyn RecordingIndex>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<GridState>> {
        let store = Store::open(db_path, Durability::Full)?;
        let mut table = FallbackTable::default();
        for f in store.grid_fallback_numbers()? {
            table.upsert(&f);
        }
        // Series exist from the start, so dashboards show zeros rather than gaps.
        for r in Route::ALL {
            metrics.api_requests.with_label_values(&[r.name(), "ok"]);
        }
        Ok(Arc::new(GridState {
            auth: Mutex::new(GridAuth::new(cfg.auth_settings()?)),
            cfg: cfg.clone(),
            queue_map,
            agents,
            store: Mutex::new(store),
            fallback: RwLock::new(table),
            board,
            recordings,
            metrics,
        }))
    }

    /// The caller ID the grid pushed for outbound calls of `org_no` (and skill group
    /// `service_id`): the number for that org and group, else the org's own (保底号码,
    /// 000:L1020-L1049). For the dialer's caller-ID selection.
    pub fn fallback_caller_id(&self, org_no: &str, service_id: Option<&str>) -> Option<String> {
        self.fallback
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .lookup(org_no, service_id)
            .map(str::to_owned)
    }
}

// ---- routes -----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Recording,
    Agents,
    Extensions,
    AgentChange,
    Queue,
    SkillGroups,
    FallbackNumber,
}

impl Route {
    const ALL: [Route; 7] = [
        Route::Recording,
        Route::Agents,
        Route::Extensions,
        Route::AgentChange,
        Route::Queue,
        Route::SkillGroups,
        Route::FallbackNumber,
    ];

    /// The `route` label of `gridedge_api_requests_total`.
    fn name(self) -> &'static str {
        match self {
            Route::Recording => "grid_recording_download",
            Route::Agents => "grid_agent_list",
            Route::Extensions => "grid_extension_list",
            Route::AgentChange => "grid_agent_change",
            Route::Queue => "grid_queue_list",
            Route::SkillGroups => "grid_skill_group_list",
            Route::FallbackNumber => "grid_fallback_number",
        }
    }

    /// 000:L754, L827, L895 (String) and L936, L969, L1010, L1048 (int).
    fn style(self) -> CodeStyle {
        match self {
            Route::Recording | Route::Agents | Route::Extensions => CodeStyle::Str,
            _ => CodeStyle::Int,
        }
    }

    fn path(self, p: &GridPaths) -> &str {
        match self {
            Route::Recording => &p.recording,
            Route::Agents => &p.agents,
            Route::Extensions => &p.extensions,
            Route::AgentChange => &p.agent_change,
            Route::Queue => &p.queue,
            Route::SkillGroups => &p.skill_groups,
            Route::FallbackNumber => &p.fallback_number,
        }
    }
}

pub fn routes(state: Arc<GridState>) -> Router {
    let mut r = Router::new();
    for route in Route::ALL {
        let path = route.path(&state.cfg.paths).to_owned();
        r = r.route(
            &path,
            any(
                move |st: State<Arc<GridState>>,
                      peer: ConnectInfo<Peer>,
                      method: Method,
                      headers: HeaderMap,
                      uri: Uri,
                      body: Body| async move {
                    handle(route, st, peer, method, headers, uri, body).await
                },
            ),
        );
    }
    r.with_state(state)
}

/// What a handler produces: JSON, or a recording to stream.
enum Reply {
    Json(Value),
    Stream(RecordingSource),
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

fn error_response(route: Route, e: &QueryError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = json_response(
        status,
        &Value::Object(envelope(route.style(), e.status, &e.msg)),
    );
    if route == Route::Recording {
        // The seed calls code/msg a 响应头 (response header, 000:L750-L755): they are sent as
        // HTTP headers too, so either reading of the contract finds them.
        set_code_headers(resp.headers_mut(), e.status, &e.msg);
    }
    resp
}

fn set_code_headers(h: &mut HeaderMap, code: u16, msg: &str) {
    h.insert("code", HeaderValue::from(code));
    // Header values must be visible ASCII; the message is ASCII by construction but a record
    // id echoed in it is not trusted to be.
    let ascii: String = msg
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&ascii) {
        h.insert("msg", v);
    }
}

/// A recording's 200 (or 206 for a range): its bytes streamed, with `code`/`msg` headers (see
/// `error_response`). An unsatisfiable range is the route's 416 envelope.
fn recording_response(src: RecordingSource) -> Response {
    if let Ranged::Unsatisfiable { total } = src.ranged {
        let e = QueryError::new(
            416,
            "range",
            format!("requested range not satisfiable (recording has {total} bytes)"),
        );
        let mut resp = error_response(Route::Recording, &e);
        resp.headers_mut().insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes */{total}"))
                .unwrap_or(HeaderValue::from_static("bytes */0")),
        );
        return resp;
    }
    let mut resp = Response::new(stream_body(src.reader));
    if let Ranged::Part { .. } = src.ranged {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    let h = resp.headers_mut();
    match src.ranged {
        Ranged::Unsupported | Ranged::Unsatisfiable { .. } => {}
        Ranged::Whole => {
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
        Ranged::Part { first, last, total } => {
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{total}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&src.content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Some(n) = src.len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    // The file name is the record id (a safe alphabet, checked by parse_record_id) or the
    // index's choice; an unusable one just leaves the header out.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", src.file_name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    set_code_headers(h, 200, OK_MSG);
    resp
}

/// The recording route's work: validate `recordId`/`startTime`, ask the index.
fn open_recording(
    index: &dyn RecordingIndex,
    p: &Params,
    range: Option<ByteRange>,
) -> Result<RecordingSource, QueryError> {
    let id = parse_record_id(&p.required_str("recordId")?)?;
    let start = parse_start_time(p.str("startTime")?)?;
    match index.open(&id, start.as_deref(), range) {
        Ok(Some(src)) => Ok(src),
        Ok(None) if index.enabled() => {
            Err(QueryError::not_found(format!("recording {id} not found")))
        }
        Ok(None) => Err(QueryError::not_found(format!(
            "recording {id} not found (recording is not enabled on this node)"
        ))),
        Err(e) => {
            tracing::error!(record_id = %id, error = %e, "opening a recording failed");
            Err(QueryError::new(
                500,
                "storage",
                format!("recording {id} could not be read"),
            ))
        }
    }
}

fn auth_error(e: GridAuthError) -> QueryError {
    QueryError::new(e.http_status(), e.metric_label(), e.to_string())
}

async fn handle(
    route: Route,
    State(st): State<Arc<GridState>>,
    ConnectInfo(Peer(peer, _)): ConnectInfo<Peer>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    let result = serve(route, &st, peer, &method, &headers, &uri, body).await;
    let (label, resp) = match result {
        Ok(Reply::Json(v)) => ("ok", json_response(StatusCode::OK, &v)),
        Ok(Reply::Stream(src)) => {
            let label = if matches!(src.ranged, Ranged::Unsatisfiable { .. }) {
                "range"
            } else {
                "ok"
            };
            (label, recording_response(src))
        }
        Err(e) => {
            tracing::info!(route = route.name(), peer = %peer.ip(), status = e.status, error = %e.msg, "grid request refused");
            (e.label, error_response(route, &e))
        }
    };
    st.metrics
        .api_requests
        .with_label_values(&[route.name(), label])
        .inc();
    resp
}

fn internal() -> QueryError {
    QueryError::new(500, "internal", "internal error; nothing was changed")
}

fn storage(e: impl std::fmt::Display) -> QueryError {
    tracing::error!(error = %e, "grid request failed in the store");
    QueryError::new(500, "storage", "storage failure; nothing was changed")
}

async fn serve(
    route: Route,
    st: &Arc<GridState>,
    peer: SocketAddr,
    method: &Method,
    headers: &HeaderMap,
    uri: &Uri,
    body: Body,
) -> Result<Reply, QueryError> {
    // The allow-list first: an outsider learns nothing and we read nothing.
    lock(&st.auth).check_peer(peer.ip()).map_err(auth_error)?;
    if method != Method::POST {
        return Err(QueryError::new(
            405,
            "bad_method",
            format!("{} {} expects POST", method, uri.path()),
        ));
    }
    let limit = st.cfg.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        QueryError::new(
            413,
            "too_large",
            format!("request body exceeds {limit} bytes"),
        )
    })?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    {
        let req = AuthRequest {
            method: method.as_str(),
            target,
            authorization: header("authorization"),
            timestamp: header(TIMESTAMP_HEADER),
            signature: header(SIGNATURE_HEADER),
            body: &bytes,
        };
        lock(&st.auth)
            .check(&req, Now::system().unix_ms)
            .map_err(auth_error)?;
    }
    let kind = BodyKind::detect(header("content-type"), &bytes)?;
    let params = Params::parse(uri.query(), kind, &bytes)?;
    let range = header("range").and_then(ByteRange::parse);
    let st2 = Arc::clone(st);
    // Store reads and writes block on SQLite.
    tokio::task::spawn_blocking(move || execute(route, &st2, &params, range))
        .await
        .map_err(|_| internal())?
}

fn execute(
    route: Route,
    st: &GridState,
    p: &Params,
    range: Option<ByteRange>,
) -> Result<Reply, QueryError> {
    let now = Now::system();
    let max_page = st.cfg.max_page_size;
    match route {
        Route::Recording => open_recording(st.recordings.as_ref(), p, range).map(Reply::Stream),
        Route::Agents => {
            let req = AgentListRequest::parse(p, &st.cfg.ent_id, max_page)?;
            let (agents, groups) = {
                let s = lock(&st.store);
                (
                    s.grid_agents().map_err(storage)?,
                    s.skill_groups().map_err(storage)?,
                )
            };
            let (views, tz) = st.agents.with_presence(|pr| {
                // Seats labelled with an agent id, for agents whose record names no extension.
                let labelled: HashMap<&str, &str> = pr
                    .seats()
                    .filter_map(|(ext, s)| Some((s.agent_id.as_deref()?, ext)))
                    .collect();
                let views: Vec<AgentView> = agents
                    .into_iter()
                    .map(|a| {
                        let seat = a
                            .extension
                            .as_deref()
                            .or_else(|| labelled.get(a.agent_id.as_str()).copied())
                            .and_then(|e| pr.seat(e));
                        let live = seat.map(|s| SeatLive {
                            grid_state: grid_agent_state(s.machine.state()),
                            state_since_ms: s.machine.since_ms(),
                            signin_ms: s.machine.signin_session(),
                            counters: s.counters.snapshot(
                                now.unix_ms,
                                LiveState::from(&s.machine),
                                pr.clock(),
                            ),
                        });
                        AgentView { agent: a, live }
                    })
                    .collect();
                (views, pr.clock().time_zone().clone())
            });
            Ok(Reply::Json(agent_list_response(
                &req,
                &views,
                &groups,
                now.unix_ms,
                &tz,
            )))
        }
        Route::Extensions => {
            let req = ExtensionListRequest::parse(p, max_page)?;
            let (rows, agents) = {
                let s = lock(&st.store);
                (
                    s.grid_extensions().map_err(storage)?,
                    s.grid_agents().map_err(storage)?,
                )
            };
            let by_ext: HashMap<&str, &crate::agents::directory::Agent> = agents
                .iter()
                .filter_map(|a| Some((a.extension.as_deref()?, a)))
                .collect();
            let by_id: HashMap<&str, &crate::agents::directory::Agent> =
                agents.iter().map(|a| (a.agent_id.as_str(), a)).collect();
            let views: Vec<ExtensionView> = st.agents.with_presence(|pr| {
                rows.iter()
                    .map(|r| {
                        // The extension's current user (000:L898: not a binding): the agent
                        // whose record names it, else the id its seat or row carries.
                        let id: Option<String> = by_ext
                            .get(r.user.as_str())
                            .map(|a| a.agent_id.clone())
                            .or_else(|| r.agent_id.clone())
                            .or_else(|| pr.seat(&r.user).and_then(|s| s.agent_id.clone()));
                        let name = id
                            .as_deref()
                            .and_then(|i| by_id.get(i))
                            .map(|a| a.name.clone());
                        ExtensionView {
                            number: r.user.clone(),
                            telephone_type: r.telephone_type.clone(),
                            agent_id: id,
                            agent_name: name,
                        }
                    })
                    .collect()
            });
            Ok(Reply::Json(extension_list_response(&req, views)))
        }
        Route::Queue => {
            let req = QueueListRequest::parse(p, max_page)?;
            let (groups, access) = {
                let s = lock(&st.store);
                (
                    s.skill_groups().map_err(storage)?,
                    s.access_numbers().map_err(storage)?,
                )
            };
            let calls = st.board.snapshot();
            Ok(Reply::Json(queue_list_response(
                &req,
                &calls,
                &st.queue_map,
                &groups,
                &access,
                now.unix_ms,
            )))
        }
        Route::SkillGroups => {
            let groups = lock(&st.store).skill_groups().map_err(storage)?;
            Ok(Reply::Json(skill_group_response(p, &groups)?))
        }
        Route::AgentChange => {
            let change = AgentChange::parse(p)?;
            let defaults = NewAgentDefaults {
                department: st.cfg.new_agent_department.clone(),
                org_no: st.cfg.new_agent_org_no.clone(),
                org_name: st.cfg.new_agent_org_name.clone(),
            };
            // Read, check and write under one lock, so two concurrent changes cannot both
            // pass the duplicate check.
            let mut s = lock(&st.store);
            let agents: BTreeMap<String, crate::agents::directory::Agent> = s
                .grid_agents()
                .map_err(storage)?
                .into_iter()
                .map(|a| (a.agent_id.clone(), a))
                .collect();
            let exts: HashSet<String> = s
                .grid_extensions()
                .map_err(storage)?
                .into_iter()
                .map(|r| r.user)
                .collect();
            let effect = plan_change(&change, &agents, |e| exts.contains(e), &defaults)?;
            s.grid_apply_agent_change(&effect, now.unix_secs())
                .map_err(storage)?;
            drop(s);
            let what = match &effect {
                ChangeEffect::Upsert(_) if matches!(change, AgentChange::Add { .. }) => "added",
                ChangeEffect::Upsert(_) => "modified",
                ChangeEffect::Delete(_) => "deleted",
            };
            tracing::info!(
                agent = change.agent_id(),
                change = what,
                "grid agent change applied"
            );
            Ok(Reply::Json(Value::Object(envelope(
                CodeStyle::Int,
                200,
                OK_MSG,
            ))))
        }
        Route::FallbackNumber => {
            let f: FallbackNumber = FallbackNumber::parse(p)?;
            // On disk (synchronous=FULL) before memory and before the grid hears 200.
            lock(&st.store)
                .grid_fallback_upsert(&f, now.unix_secs())
                .map_err(storage)?;
            st.fallback
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .upsert(&f);
            tracing::info!(org_no = %f.org_no, service_id = f.service_id.as_deref().unwrap_or(""), "fallback caller ID stored");
            Ok(Reply::Json(Value::Object(envelope(
                CodeStyle::Int,
                200,
                OK_MSG,
            ))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::task::{Context, Poll};
    use tokio::io::ReadBuf;

    /// A test index: one recording backed by a file, or by a generator that counts what was
    /// read from it.
    enum TestIndex {
        File(std::path::PathBuf),
        Counted(Arc<AtomicU64>, u64),
        /// In memory, serving ranges.
        Bytes(Vec<u8>),
    }

    /// `total` bytes of a pattern, counting every byte handed out.
    struct Counted {
        read: Arc<AtomicU64>,
        left: u64,
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = (buf.remaining() as u64).min(self.left) as usize;
            let start = buf.filled().len();
            buf.initialize_unfilled_to(n);
            for (i, b) in buf.initialized_mut()[start..start + n]
                .iter_mut()
                .enumerate()
            {
                *b = (i % 251) as u8;
            }
            buf.advance(n);
            self.left -= n as u64;
            self.read.fetch_add(n as u64, Ordering::SeqCst);
            Poll::Ready(Ok(()))
        }
    }

    impl RecordingIndex for TestIndex {
        fn open(
            &self,
            id: &str,
            _: Option<&str>,
            range: Option<ByteRange>,
        ) -> std::io::Result<Option<RecordingSource>> {
            if id != "rec-1" {
                return Ok(None);
            }
            Ok(Some(match self {
                TestIndex::File(p) => {
                    let f = std::fs::File::open(p)?;
                    let len = f.metadata()?.len();
                    RecordingSource {
                        reader: Box::pin(tokio::fs::File::from_std(f)),
                        content_type: "audio/wav".into(),
                        len: Some(len),
                        file_name: "rec-1.wav".into(),
                        ranged: Ranged::Unsupported,
                    }
                }
                TestIndex::Counted(read, total) => RecordingSource {
                    reader: Box::pin(Counted {
                        read: Arc::clone(read),
                        left: *total,
                    }),
                    content_type: "audio/wav".into(),
                    len: None,
                    file_name: "rec-1.wav".into(),
                    ranged: Ranged::Unsupported,
                },
                TestIndex::Bytes(data) => {
                    let total = data.len() as u64;
                    let ranged = range.map_or(Ranged::Whole, |r| r.resolve(total));
                    let (a, b) = match ranged {
                        Ranged::Part { first, last, .. } => (first, last + 1),
                        Ranged::Unsatisfiable { .. } => (0, 0),
                        _ => (0, total),
                    };
                    let part = data[a as usize..b as usize].to_vec();
                    RecordingSource {
                        len: Some(part.len() as u64),
                        reader: Box::pin(std::io::Cursor::new(part)),
                        content_type: "audio/wav".into(),
                        file_name: "rec-1.wav".into(),
                        ranged,
                    }
                }
            }))
        }
    }

    fn params(s: &str) -> Params {
        Params::parse(None, BodyKind::Form, s.as_bytes()).unwrap()
    }

    #[test]
    fn recording_lookup_validates_and_names_the_missing_recording() {
        let e = open_recording(&NoRecordings, &params("recordId=r9"), None)
            .err()
            .unwrap();
        assert_eq!(e.status, 404);
        assert_eq!(
            e.msg,
            "recording r9 not found (recording is not enabled on this node)"
        );
        let idx = TestIndex::Counted(Arc::new(AtomicU64::new(0)), 1);
        let e = open_recording(&idx, &params("recordId=r9"), None)
            .err()
            .unwrap();
        assert_eq!(e.msg, "recording r9 not found");
        let e = open_recording(&idx, &params(""), None).err().unwrap();
        assert_eq!(e.msg, "missing parameter recordId");
        let e = open_recording(&idx, &params("recordId=..%2Fx"), None)
            .err()
            .unwrap();
        assert!(e.msg.starts_with("recordId must be"), "{}", e.msg);
        let e = open_recording(&idx, &params("recordId=rec-1&startTime=x"), None)
            .err()
            .unwrap();
        assert!(e.msg.starts_with("startTime must be"), "{}", e.msg);
        assert!(open_recording(&idx, &params("recordId=rec-1&startTime=202403"), None).is_ok());
        let mut h = HeaderMap::new();
        set_code_headers(&mut h, 404, "recording é not found\n");
        assert_eq!(h["code"], "404");
        assert_eq!(h["msg"], "recording ? not found?");
    }

    /// Serves `index` behind a one-route router on a real loopback socket.
    async fn serve(index: Arc<dyn RecordingIndex>) -> SocketAddr {
        let app = Router::new().route(
            "/r",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let index = Arc::clone(&index);
                async move {
                    let p = Params::parse(None, BodyKind::Form, &body).unwrap();
                    let range = headers
                        .get("range")
                        .and_then(|v| v.to_str().ok())
                        .and_then(ByteRange::parse);
                    match open_recording(index.as_ref(), &p, range) {
                        Ok(src) => recording_response(src),
                        Err(e) => error_response(Route::Recording, &e),
                    }
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        addr
    }

    /// Sends the request and returns the socket positioned after the response head.
    fn request(addr: SocketAddr, body: &str) -> (String, std::io::BufReader<std::net::TcpStream>) {
        request_with(addr, "", body)
    }

    /// `extra`: more header lines, each ending in CRLF.
    fn request_with(
        addr: SocketAddr,
        extra: &str,
        body: &str,
    ) -> (String, std::io::BufReader<std::net::TcpStream>) {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        write!(
            s,
            "POST /r HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut r = std::io::BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut r, &mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        (head.to_ascii_lowercase(), r)
    }

    fn dechunk(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = raw;
        loop {
            let eol = s.windows(2).position(|w| w == b"\r\n").unwrap();
            let n =
                usize::from_str_radix(std::str::from_utf8(&s[..eol]).unwrap().trim(), 16).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&s[eol + 2..eol + 2 + n]);
            s = &s[eol + 4 + n..];
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_of_several_megabytes_downloads_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec-1.wav");
        let data: Vec<u8> = (0..5 * 1024 * 1024 + 17)
            .map(|i: u32| (i * 7 % 256) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let addr = serve(Arc::new(TestIndex::File(path))).await;
        let got = tokio::task::spawn_blocking(move || {
            let (head, mut r) = request(addr, "recordId=rec-1");
            let mut body = Vec::new();
            r.read_to_end(&mut body).unwrap();
            (head, body)
        })
        .await
        .unwrap();
        let (head, body) = got;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-type: audio/wav"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", data.len())),
            "{head}"
        );
        assert!(head.contains("code: 200"), "{head}");
        assert!(head.contains("content-disposition: attachment; filename=\"rec-1.wav\""));
        assert_eq!(body.len(), data.len());
        assert!(body == data, "the downloaded bytes differ from the file");
        // Not found: the route's String-code envelope, in the body and in headers.
        let (head, body) = tokio::task::spawn_blocking(move || {
            let (head, mut r) = request(addr, "recordId=other");
            let mut body = String::new();
            r.read_to_string(&mut body).unwrap();
            (head, body)
        })
        .await
        .unwrap();
        assert!(head.starts_with("http/1.1 404"), "{head}");
        assert!(head.contains("code: 404"), "{head}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": "404", "msg": "recording other not found"})
        );
    }

    /// A slow client holds the download back: the server reads its source only as fast as
    /// the socket drains, never the whole recording ahead (64 MiB here, far beyond what
    /// loopback socket buffers hold).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn downloads_stream_with_backpressure() {
        const TOTAL: u64 = 64 * 1024 * 1024;
        let read = Arc::new(AtomicU64::new(0));
        let addr = serve(Arc::new(TestIndex::Counted(Arc::clone(&read), TOTAL))).await;
        let read2 = Arc::clone(&read);
        let (ahead, body_len) = tokio::task::spawn_blocking(move || {
            let (head, mut r) = request(addr, "recordId=rec-1");
            assert!(head.contains("transfer-encoding: chunked"), "{head}");
            let mut first = [0u8; 1024];
            r.read_exact(&mut first).unwrap();
            // Give the server every chance to run ahead.
            std::thread::sleep(std::time::Duration::from_millis(500));
            let ahead = read2.load(Ordering::SeqCst);
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).unwrap();
            let mut raw = first.to_vec();
            raw.extend_from_slice(&rest);
            (ahead, dechunk(&raw).len() as u64)
        })
        .await
        .unwrap();
        assert!(
            ahead < TOTAL / 2,
            "the server read {ahead} of {TOTAL} bytes ahead of a stalled client"
        );
        assert_eq!(body_len, TOTAL);
        assert_eq!(read.load(Ordering::SeqCst), TOTAL);
    }

    #[test]
    fn range_headers_parse_and_resolve_per_rfc_9110() {
        use ByteRange::*;
        assert_eq!(ByteRange::parse("bytes=0-99"), Some(FromTo(0, 99)));
        assert_eq!(ByteRange::parse(" bytes=5- "), Some(From(5)));
        assert_eq!(ByteRange::parse("bytes=-10"), Some(Suffix(10)));
        for ignored in [
            "bytes=5-2",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
            "",
        ] {
            assert_eq!(ByteRange::parse(ignored), None, "{ignored}");
        }
        let part = |first, last| Ranged::Part {
            first,
            last,
            total: 100,
        };
        assert_eq!(FromTo(0, 0).resolve(100), part(0, 0));
        assert_eq!(FromTo(10, 1000).resolve(100), part(10, 99));
        assert_eq!(From(99).resolve(100), part(99, 99));
        assert_eq!(From(100).resolve(100), Ranged::Unsatisfiable { total: 100 });
        assert_eq!(
            FromTo(100, 200).resolve(100),
            Ranged::Unsatisfiable { total: 100 }
        );
        assert_eq!(Suffix(10).resolve(100), part(90, 99));
        assert_eq!(Suffix(1000).resolve(100), part(0, 99));
        assert_eq!(Suffix(0).resolve(100), Ranged::Unsatisfiable { total: 100 });
        assert_eq!(Suffix(5).resolve(0), Ranged::Unsatisfiable { total: 0 });
        assert_eq!(From(0).resolve(0), Ranged::Unsatisfiable { total: 0 });
    }

    /// 206 with Content-Range for each range form, 416 when unsatisfiable, 200 with
    /// Accept-Ranges without (or with an ignored) Range header — over a real socket.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn range_requests_over_a_socket() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 13 % 256) as u8).collect();
        let addr = serve(Arc::new(TestIndex::Bytes(data.clone()))).await;
        let get = move |range: &str| {
            let extra = if range.is_empty() {
                String::new()
            } else {
                format!("Range: {range}\r\n")
            };
            let (head, mut r) = request_with(addr, &extra, "recordId=rec-1");
            let mut body = Vec::new();
            r.read_to_end(&mut body).unwrap();
            (head, body)
        };
        let (head, body) = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for r in [
                "bytes=0-99",
                "bytes=99990-",
                "bytes=-5",
                "bytes=65530-65545",
                "bytes=90000-200000",
                "bytes=100000-",
                "bytes=-0",
                "",
                "bytes=0-1,4-5",
            ] {
                out.push(get(r));
            }
            out.into_iter().unzip::<_, _, Vec<_>, Vec<_>>()
        })
        .await
        .unwrap();
        let check206 = |i: usize, a: usize, b: usize| {
            assert!(head[i].starts_with("http/1.1 206"), "{}", head[i]);
            assert!(
                head[i].contains(&format!("content-range: bytes {a}-{b}/100000")),
                "{}",
                head[i]
            );
            assert!(head[i].contains(&format!("content-length: {}", b - a + 1)));
            assert!(head[i].contains("accept-ranges: bytes"));
            assert_eq!(body[i], &data[a..=b]);
        };
        check206(0, 0, 99);
        check206(1, 99990, 99999);
        check206(2, 99995, 99999);
        check206(3, 65530, 65545);
        check206(4, 90000, 99999);
        for i in [5, 6] {
            assert!(head[i].starts_with("http/1.1 416"), "{}", head[i]);
            assert!(
                head[i].contains("content-range: bytes */100000"),
                "{}",
                head[i]
            );
            assert!(head[i].contains("code: 416"), "{}", head[i]);
            let v: Value = serde_json::from_slice(&body[i]).unwrap();
            assert_eq!(v["code"], "416");
        }
        for i in [7, 8] {
            assert!(head[i].starts_with("http/1.1 200"), "{}", head[i]);
            assert!(head[i].contains("accept-ranges: bytes"), "{}", head[i]);
            assert!(!head[i].contains("content-range"), "{}", head[i]);
            assert_eq!(body[i], data);
        }
    }

    #[test]
    fn config_validation_names_the_key() {
        let ok = GridApiConfig::default();
        assert!(ok.validate(&["/metrics"], &["/callcenter/"]).is_ok());
        let key = |c: GridApiConfig| c.validate(&["/metrics"], &["/callcenter/"]).unwrap_err().0;
        let mut c = GridApiConfig {
            auth: AuthMode::Bearer,
            ..Default::default()
        };
        assert_eq!(key(c.clone()), "grid_api.token");
        c.token = "short".into();
        assert_eq!(key(c.clone()), "grid_api.token");
        c.token = "0123456789abcdef".into();
        assert!(c.validate(&[], &[]).is_ok());
        c.token_file = "/x".into();
        assert_eq!(key(c), "grid_api.token");
        let mut c = GridApiConfig::default();
        c.paths.queue = "/metrics".into();
        assert_eq!(key(c), "grid_api.paths.queue");
        let mut c = GridApiConfig::default();
        c.paths.queue = c.paths.agents.clone();
        assert_eq!(key(c), "grid_api.paths.queue");
        let mut c = GridApiConfig::default();
        c.paths.recording = "/grid/../x".into();
        assert_eq!(key(c), "grid_api.paths.recording");
        let mut c = GridApiConfig::default();
        c.paths.skill_groups = "/callcenter/groups".into();
        assert_eq!(key(c), "grid_api.paths.skill_groups");
        let c = GridApiConfig {
            max_page_size: 0,
            ..Default::default()
        };
        assert_eq!(key(c), "grid_api.max_page_size");
        let c = GridApiConfig {
            hmac_secret: "a-very-secret-hmac-key".into(),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("a-very-secret"));
    }
}
