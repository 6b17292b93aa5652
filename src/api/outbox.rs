//! `/admin/outbox/*`: the operator's view of the outbox: stats, dead letters (list, inspect)
//! and replay. Authenticated like seed 004's management API (`account`, `timestamp`, `sign =
//! md5(account + timestamp + secret)`, as headers or query parameters, behind the same
//! allow-list and replay table), because it is the same operators' tool. The CLI offers the
//! same operations on the database directly (`gridedge outbox ...`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::listener::Peer;
use super::mgmt::MgmtState;
use super::sign::SignedRequest;
use crate::clock::Now;
use crate::outbox::service::{dead_letters, open_reader, stats};
use crate::outbox::store::{dead_get, ReplaySelection};
use crate::outbox::{Outbox, Target};

pub struct OutboxAdminState {
    pub mgmt: Arc<MgmtState>,
    pub outbox: Arc<Outbox>,
}

type St = State<Arc<OutboxAdminState>>;
type Params = Query<HashMap<String, String>>;

pub fn routes(state: Arc<OutboxAdminState>) -> Router {
    Router::new()
        .route("/admin/outbox/stats", get(stats_route))
        .route("/admin/outbox/dead", get(list_route))
        .route("/admin/outbox/dead/replay", post(replay_all_route))
        .route("/admin/outbox/dead/{id}", get(show_route))
        .route("/admin/outbox/dead/{id}/replay", post(replay_one_route))
        .with_state(state)
}

/// A JSON answer (axum's `json` feature is off: serde_json is already here).
pub struct J(Value);

impl IntoResponse for J {
    fn into_response(self) -> Response {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.0.to_string(),
        )
            .into_response()
    }
}

struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut r = J(json!({ "code": self.0.as_u16(), "msg": self.1 })).into_response();
        *r.status_mut() = self.0;
        r
    }
}

type Answer = Result<J, Failure>;

fn authenticate(
    st: &OutboxAdminState,
    peer: SocketAddr,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    route: &str,
) -> Result<(), Failure> {
    let field = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .or_else(|| q.get(name).map(String::as_str))
    };
    let req = SignedRequest {
        peer: peer.ip(),
        account: field("account"),
        timestamp: field("timestamp"),
        sign: field("sign"),
    };
    let checked = st
        .mgmt
        .auth
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .check(&req, Now::system().unix_ms);
    let label = match &checked {
        Ok(_) => "ok",
        Err(e) => e.metric_label(),
    };
    st.mgmt
        .metrics
        .api_requests
        .with_label_values(&[route, label])
        .inc();
    checked.map(|_| ()).map_err(|e| {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
        Failure(status, e.to_string())
    })
}

fn target_param(q: &HashMap<String, String>) -> Result<Option<Target>, Failure> {
    match q.get("target").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(t) => Target::parse(t).map(Some).ok_or_else(|| {
            let known: Vec<&str> = Target::ALL.iter().map(|t| t.as_str()).collect();
            Failure(
                StatusCode::BAD_REQUEST,
                format!("target: unknown {t:?}; one of {}", known.join(", ")),
            )
        }),
    }
}

fn number_param(
    q: &HashMap<String, String>,
    name: &str,
    default: i64,
    max: i64,
) -> Result<i64, Failure> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (0..=max).contains(&n) => Ok(n),
            _ => Err(Failure(
                StatusCode::BAD_REQUEST,
                format!("{name}: must be an integer between 0 and {max}"),
            )),
        },
    }
}

fn id_param(id: &str) -> Result<i64, Failure> {
    id.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("id: {id:?} is not a dead-letter id (a positive integer)"),
        )
    })
}

fn internal(e: impl std::fmt::Display) -> Failure {
    tracing::error!(error = %e, "outbox admin request failed");
    Failure(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the outbox store could not be read".into(),
    )
}

/// Runs a read against a fresh read-only connection, off the runtime.
async fn read<T: Send + 'static>(
    st: &OutboxAdminState,
    f: impl FnOnce(&rusqlite::Connection) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Failure> {
    let path = st.outbox.db_path().to_owned();
    tokio::task::spawn_blocking(move || {
        let conn = open_reader(&path)?;
        f(&conn)
    })
    .await
    .map_err(internal)?
    .map_err(internal)
}

async fn stats_route(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Query(q): Params,
) -> Answer {
    authenticate(&st, peer.0, &headers, &q, "outbox_stats")?;
    let now = Now::system().unix_ms;
    let s = read(&st, move |c| stats(c, now)).await?;
    Ok(J(serde_json::to_value(s).map_err(internal)?))
}

async fn list_route(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Query(q): Params,
) -> Answer {
    authenticate(&st, peer.0, &headers, &q, "outbox_dead_list")?;
    let target = target_param(&q)?;
    let limit = number_param(&q, "limit", 100, 1000)? as usize;
    let after = number_param(&q, "after", 0, i64::MAX)?;
    let items = read(&st, move |c| dead_letters(c, target, after, limit)).await?;
    Ok(J(json!({ "count": items.len(), "items": items })))
}

async fn show_route(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Params,
) -> Answer {
    authenticate(&st, peer.0, &headers, &q, "outbox_dead_show")?;
    let id = id_param(&id)?;
    match read(&st, move |c| Ok(dead_get(c, id)?)).await? {
        Some(d) => Ok(J(serde_json::to_value(d).map_err(internal)?)),
        None => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("no dead letter {id}"),
        )),
    }
}

async fn replay(st: &OutboxAdminState, which: ReplaySelection) -> Answer {
    let n = st.outbox.replay(which).await.map_err(|e| {
        tracing::error!(error = %e, "replay failed");
        Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("replay failed, nothing moved: {e}"),
        )
    })?;
    tracing::info!(replayed = n, ?which, "dead letters replayed");
    Ok(J(json!({ "replayed": n })))
}

async fn replay_one_route(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Params,
) -> Answer {
    authenticate(&st, peer.0, &headers, &q, "outbox_dead_replay")?;
    let id = id_param(&id)?;
    let out = replay(&st, ReplaySelection::One(id)).await?;
    if out.0["replayed"] == 0 {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!("no dead letter {id}"),
        ));
    }
    Ok(out)
}

async fn replay_all_route(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Query(q): Params,
) -> Answer {
    authenticate(&st, peer.0, &headers, &q, "outbox_dead_replay")?;
    let target = target_param(&q)?;
    replay(&st, ReplaySelection::All(target)).await
}
