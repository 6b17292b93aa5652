//! The HTTP listener: `/metrics`, `/healthz`, `/readyz`, seed 004's management routes
//! ([`mgmt`], authenticated by [`sign`]) and the STOMP event stream ([`stream`], over
//! WebSocket or SockJS, framed by [`stomp`] and [`sockjs`]). The grid's query routes join
//! the same router in the forwarding issue.

pub mod cdr;
pub mod listener;
pub mod mgmt;
pub mod outbox;
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

/// The whole HTTP surface. Unknown paths get seed 004's JSON envelope with 404, never an
/// empty or HTML body.
pub fn router(
    state: Arc<ApiState>,
    mgmt_state: Arc<mgmt::MgmtState>,
    stream_state: Arc<stream::StreamState>,
    cdr_state: Arc<cdr::CdrReceiverState>,
    cdr_path: &str,
    outbox_state: Arc<outbox::OutboxAdminState>,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(mgmt::routes(mgmt_state))
        .merge(stream::routes(stream_state))
        .merge(cdr::routes(cdr_path, cdr_state))
        .merge(outbox::routes(outbox_state))
        .fallback(|uri: axum::http::Uri| async move {
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
