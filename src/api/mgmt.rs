//! Seed 004's management API (section 一, 004:L28-L760): the project and extension routes, with
//! their `reqResult` envelope, form-urlencoded parameters and `account`/`timestamp`/`sign`
//! authentication.
//!
//! Wire format lives here only: parameters are parsed into domain types
//! (`agents::directory`), the work is done by `agents::service`, and the answer is rendered
//! back into seed 004's JSON. Every failure is a JSON envelope whose `code` equals the HTTP
//! status and whose `msg` names the problem (the parameter, the project, the extension);
//! nothing is ever answered with a stack trace or an HTML page.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde_json::{json, Value};

use super::listener::Peer;
use super::sign::{AuthError, Authenticator, SignedRequest};
use super::stream::Hub;
use crate::agents::directory::{Certificate, ExtensionNumber, ProjectCode, Role};
use crate::agents::service::{AgentsService, ExtensionStatus, OpError};
use crate::clock::Now;
use crate::metrics::Metrics;

pub struct MgmtState {
    pub agents: Arc<AgentsService>,
    pub auth: Mutex<Authenticator>,
    pub metrics: Arc<Metrics>,
    pub hub: Arc<Hub>,
    pub max_body_bytes: usize,
}

/// The routes, each with its method and the name used in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    CreateProject,
    GetByCertificate,
    GetExtentionByProject,
    SetWorkStatus,
    SetWorkStatusByProjectCode,
    SetExtensionStatus,
    FinishProject,
    DistributionSeat,
    SendToUser,
}

const PROJECT: &str = "/callcenter/callProject/api";

impl Route {
    const ALL: [Route; 9] = [
        Route::CreateProject,
        Route::GetByCertificate,
        Route::GetExtentionByProject,
        Route::SetWorkStatus,
        Route::SetWorkStatusByProjectCode,
        Route::SetExtensionStatus,
        Route::FinishProject,
        Route::DistributionSeat,
        Route::SendToUser,
    ];

    fn name(self) -> &'static str {
        match self {
            Route::CreateProject => "createProject",
            Route::GetByCertificate => "getByCertificate",
            // Sic: seed 004 spells it "Extention" (004:L296).
            Route::GetExtentionByProject => "getExtentionByProject",
            Route::SetWorkStatus => "setWorkStatus",
            Route::SetWorkStatusByProjectCode => "setWorkStatusByProjectCode",
            Route::SetExtensionStatus => "setExtensionStatus",
            Route::FinishProject => "finishProject",
            Route::DistributionSeat => "distributionSeat",
            Route::SendToUser => "sendToUser",
        }
    }

    fn method(self) -> Method {
        match self {
            Route::GetByCertificate | Route::GetExtentionByProject => Method::GET,
            _ => Method::POST,
        }
    }
}

/// A failed request: HTTP status (also the envelope's `code`), a metrics label, a message.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) label: &'static str,
    pub(crate) msg: String,
}

impl ApiError {
    pub fn new(status: StatusCode, label: &'static str, msg: impl Into<String>) -> Self {
        Self {
            status,
            label,
            msg: msg.into(),
        }
    }

    pub(crate) fn bad(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_param", msg)
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::BadRequest(m) => Self::new(StatusCode::BAD_REQUEST, "bad_param", m),
            OpError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, "not_found", m),
            OpError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            OpError::Storage(e) => {
                tracing::error!(error = %e, "management request failed in the store");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage",
                    "storage failure; nothing was changed",
                )
            }
        }
    }
}

impl From<AuthError> for ApiError {
    /// 403 for a source outside the allow-list, 429 when the replay table is full, 401 for
    /// every other authentication failure (a missing header included: the request is not
    /// malformed, it is unauthenticated).
    fn from(e: AuthError) -> Self {
        let status = match e {
            AuthError::ForbiddenIp(_) => StatusCode::FORBIDDEN,
            AuthError::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::UNAUTHORIZED,
        };
        Self::new(status, e.metric_label(), e.to_string())
    }
}

/// Seed 004's envelope around an error.
pub fn error_body(status: StatusCode, msg: &str) -> Response {
    let body = json!({ "reqResult": { "code": status.as_u16(), "msg": msg } });
    json_response(status, &body)
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json;charset=UTF-8",
        )],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn ok(data: Option<Value>) -> Value {
    let mut v = json!({ "reqResult": { "code": 1, "msg": "成功" } });
    if let Some(d) = data {
        v["data"] = d;
    }
    v
}

/// Request parameters: the query string and, for POST, the form body. A name given twice is
/// refused rather than guessed at.
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(query: Option<&str>, body: &[u8]) -> Result<Params, ApiError> {
        let mut out: Vec<(String, String)> = Vec::new();
        for part in [query.unwrap_or("").as_bytes(), body] {
            if std::str::from_utf8(part).is_err() {
                return Err(ApiError::bad("parameters are not valid UTF-8"));
            }
            // A '%' that does not start an escape would otherwise pass through as a literal
            // '%' and surface later as a puzzling "bad character" error.
            let bad_escape = part.iter().enumerate().any(|(i, &b)| {
                b == b'%'
                    && !(part.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                        && part.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            });
            if bad_escape {
                return Err(ApiError::bad(
                    "parameters contain a malformed percent escape ('%' must be followed by two hex digits)",
                ));
            }
            for (k, v) in form_urlencoded::parse(part) {
                if v.contains('\u{FFFD}') || k.contains('\u{FFFD}') {
                    return Err(ApiError::bad(format!(
                        "parameter {k} is not valid percent-encoded UTF-8"
                    )));
                }
                if out.iter().any(|(n, _)| *n == k) {
                    return Err(ApiError::bad(format!("parameter {k} given more than once")));
                }
                out.push((k.into_owned(), v.into_owned()));
            }
        }
        Ok(Params(out))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .ok_or_else(|| ApiError::bad(format!("missing parameter {name}")))
    }

    pub(crate) fn project(&self) -> Result<ProjectCode, ApiError> {
        ProjectCode::parse(self.required("projectCode")?)
            .map_err(|e| ApiError::bad(format!("projectCode: {e}")))
    }

    fn username(&self) -> Result<ExtensionNumber, ApiError> {
        ExtensionNumber::parse(self.required("username")?)
            .map_err(|e| ApiError::bad(format!("username: {e}")))
    }

    fn optional_username(&self) -> Result<Option<ExtensionNumber>, ApiError> {
        self.get("username")
            .map(|u| ExtensionNumber::parse(u).map_err(|e| ApiError::bad(format!("username: {e}"))))
            .transpose()
    }

    pub(crate) fn int(&self, name: &str) -> Result<i64, ApiError> {
        let v = self.required(name)?;
        v.parse::<i64>()
            .map_err(|_| ApiError::bad(format!("parameter {name} must be an integer, got {v:?}")))
    }
}

pub fn routes(state: Arc<MgmtState>) -> Router {
    let mut r = Router::new();
    for route in Route::ALL {
        let path = format!("{PROJECT}/{}/v1", route.name());
        r = r.route(
            &path,
            any(
                move |st: State<Arc<MgmtState>>,
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

async fn handle(
    route: Route,
    State(st): State<Arc<MgmtState>>,
    ConnectInfo(Peer(peer, _)): ConnectInfo<Peer>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    let result = serve(route, &st, peer, method, &headers, &uri, body).await;
    respond(route.name(), peer, &st.metrics, result)
}

/// Renders a seed 004 route's result (the data, or the error envelope), logs a refusal and
/// counts the request under `route`.
pub(crate) fn respond(
    route: &'static str,
    peer: SocketAddr,
    metrics: &Metrics,
    result: Result<Value, ApiError>,
) -> Response {
    let (label, resp) = match result {
        Ok(v) => ("ok", json_response(StatusCode::OK, &v)),
        Err(e) => {
            tracing::info!(route, peer = %peer.ip(), status = e.status.as_u16(), error = %e.msg, "management request refused");
            (e.label, error_body(e.status, &e.msg))
        }
    };
    metrics
        .api_requests
        .with_label_values(&[route, label])
        .inc();
    resp
}

async fn serve(
    route: Route,
    st: &Arc<MgmtState>,
    peer: SocketAddr,
    method: Method,
    headers: &HeaderMap,
    uri: &Uri,
    body: Body,
) -> Result<Value, ApiError> {
    let params = read_signed(
        st,
        peer,
        method,
        route.method(),
        headers,
        uri,
        body,
        st.max_body_bytes,
    )
    .await?;
    let agents = Arc::clone(&st.agents);
    let hub = Arc::clone(&st.hub);
    // Directory work blocks on SQLite.
    blocking(move || execute(route, &agents, &hub, &params)).await
}

/// Runs a route's store work on a blocking thread; a panic there is a 500 that changed
/// nothing (every route's work is one transaction).
pub(crate) async fn blocking(
    f: impl FnOnce() -> Result<Value, ApiError> + Send + 'static,
) -> Result<Value, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; nothing was changed",
        )
    })?
}

/// The part every seed 004 route shares: authentication (before anything else, so nobody
/// learns about routes or parameters without it), the method, the bounded body, and the
/// parameters.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn read_signed(
    st: &MgmtState,
    peer: SocketAddr,
    method: Method,
    expected: Method,
    headers: &HeaderMap,
    uri: &Uri,
    body: Body,
    max_body_bytes: usize,
) -> Result<Params, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    {
        let req = SignedRequest {
            peer: peer.ip(),
            account: header("account"),
            timestamp: header("timestamp"),
            sign: header("sign"),
        };
        let now = Now::system();
        st.auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(&req, now.unix_ms)?;
    }
    if method != expected {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_method",
            format!("{} {} expects {}", method, uri.path(), expected),
        ));
    }
    let bytes = axum::body::to_bytes(body, max_body_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request body exceeds {max_body_bytes} bytes"),
            )
        })?;
    Params::parse(uri.query(), &bytes)
}

fn work_status(p: &Params, allowed: &[i64]) -> Result<i64, ApiError> {
    let w = p.int("workStatus")?;
    if allowed.contains(&w) {
        Ok(w)
    } else {
        Err(ApiError::bad(format!(
            "workStatus must be one of {allowed:?}, got {w}"
        )))
    }
}

fn status_json(s: &ExtensionStatus) -> Value {
    json!({
        "username": s.username,
        "status": s.status.status,
        "workStatus": s.status.work_status,
        "sessionStatus": s.status.session_status,
        "destinationNumber": s.call.as_ref().and_then(|c| c.remote_number.clone()).unwrap_or_default(),
        "destinationUUID": s.call.as_ref().map(|c| c.call_id.0.clone()).unwrap_or_default(),
    })
}

fn execute(route: Route, agents: &AgentsService, hub: &Hub, p: &Params) -> Result<Value, ApiError> {
    let now = Now::system();
    match route {
        Route::CreateProject => {
            let code = p.project()?;
            let seats = p.int("seats")?;
            let seats = u32::try_from(seats)
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| {
                    ApiError::bad(format!("seats must be a positive integer, got {seats}"))
                })?;
            let c = agents.create_project(&code, seats, now)?;
            Ok(ok(Some(json!({
                "certificate": c.certificate.as_str(),
                "servers": c.servers,
                "nativeServers": c.native_servers,
            }))))
        }
        Route::GetByCertificate => {
            let cert = Certificate::parse(p.required("certificate")?)
                .map_err(|e| ApiError::bad(format!("certificate: {e}")))?;
            let user = p.optional_username()?;
            let t = p.int("type")?;
            let role = Role::from_code(t).ok_or_else(|| {
                ApiError::bad(format!(
                    "type must be 2 (agent) or 3 (project manager), got {t}"
                ))
            })?;
            let l = agents.by_certificate(&cert, user.as_ref(), role)?;
            Ok(ok(Some(json!({
                "servers": l.servers,
                "nativeServers": l.native_servers,
                "username": l.username,
                "password": l.password,
                "uri": l.uri,
            }))))
        }
        Route::GetExtentionByProject => {
            let code = p.project()?;
            let list = agents.project_status(&code, now)?;
            Ok(ok(Some(Value::Array(
                list.iter().map(status_json).collect(),
            ))))
        }
        Route::SetWorkStatus => {
            let w = work_status(p, &[0, 1])?;
            let user = p.username()?;
            let s = agents.set_work_status(&user, w == 1, now)?;
            Ok(ok(Some(json!({
                "username": s.username,
                "workStatus": s.status.work_status,
                "sessionStatus": s.status.session_status,
            }))))
        }
        Route::SetWorkStatusByProjectCode => {
            let w = work_status(p, &[0, 1])?;
            let code = p.project()?;
            let (changed, refused) = agents.set_project_work_status(&code, w == 1, now)?;
            Ok(ok(Some(json!({
                "changed": changed,
                "refused": refused.iter().map(|(u, why)| json!({"username": u, "msg": why})).collect::<Vec<_>>(),
            }))))
        }
        Route::SetExtensionStatus => {
            let w = work_status(p, &[-1, 0])?;
            let user = p.username()?;
            agents.set_extension_enabled(&user, w == 0, now)?;
            Ok(ok(Some(
                json!({ "username": user.as_str(), "workStatus": w }),
            )))
        }
        Route::FinishProject => {
            let code = p.project()?;
            agents.finish_project(&code, now)?;
            Ok(ok(None))
        }
        Route::DistributionSeat => {
            let code = p.project()?;
            let user = p.username()?;
            agents.distribution_seat(&code, &user, now)?;
            Ok(ok(None))
        }
        Route::SendToUser => {
            let code = p.project()?;
            let user = p.optional_username()?;
            let content = p.required("content")?;
            if content.len() > 4096 {
                return Err(ApiError::bad("content exceeds 4096 bytes"));
            }
            let members = agents.project_members(&code, user.as_ref())?;
            for m in members {
                hub.notify(&code, &m, content);
            }
            Ok(ok(None))
        }
    }
}
