//! The HTTP listener: `/metrics`, `/healthz`, `/readyz`, seed 004's management routes
//! ([`mgmt`], authenticated by [`sign`]) and the STOMP event stream ([`stream`], over
//! WebSocket or SockJS, framed by [`stomp`] and [`sockjs`]) and the grid platform's query
//! routes ([`grid`], at configurable paths), and the dialer's call-task, line and call-log
//! routes ([`campaign`]).

pub mod campaign;
pub mod cdr;
pub mod grid;
pub mod listener;
pub mod mgmt;
pub mod outbox;
pub mod recording;
pub mod sign;
pub mod sockjs;
pub mod stomp;
pub mod stream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

pub struct ApiState {
    pub metrics: Arc<Metrics>,
    /// Set once every listener is bound and the store is open; cleared on shutdown so a load
    /// balancer stops sending work before we stop accepting it.
    pub ready: AtomicBool,
}

/// The state of each group of routes.
pub struct Surfaces {
    pub mgmt: Arc<mgmt::MgmtState>,
    pub stream: Arc<stream::StreamState>,
    pub cdr: Arc<cdr::CdrReceiverState>,
    pub cdr_path: String,
    pub outbox: Arc<outbox::OutboxAdminState>,
    pub grid: Option<Arc<grid::GridState>>,
    pub campaign: Arc<campaign::CampaignState>,
    /// The recording index listing, when recording is on.
    pub recording: Option<Arc<recording::RecordingApiState>>,
}

/// The whole HTTP surface. Unknown paths get seed 004's JSON envelope with 404, never an
/// empty or HTML body.
pub fn router(state: Arc<ApiState>, s: Surfaces) -> Router {
    let r = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(mgmt::routes(s.mgmt))
        .merge(stream::routes(s.stream))
        .merge(cdr::routes(&s.cdr_path, s.cdr))
        .merge(outbox::routes(s.outbox))
        .merge(campaign::routes(s.campaign));
    let r = match s.recording {
        Some(st) => r.merge(recording::routes(st)),
        None => r,
    };
    let r = match s.grid {
        Some(g) => r.merge(grid::routes(g)),
        None => r,
    };
    r.fallback(|uri: axum::http::Uri| async move {
        mgmt::error_body(StatusCode::NOT_FOUND, &format!("no route {}", uri.path()))
    })
}

async fn metrics(State(s): State<Arc<ApiState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn readyz(State(s): State<Arc<ApiState>>) -> impl IntoResponse {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
