//! The mod_json_cdr (and mod_xml_cdr) receiver: `POST {cdr.receiver_path}`.
//!
//! FreeSWITCH counts any 2xx as delivered and then forgets the CDR, so a 2xx is sent only
//! after the leg is committed (synchronous=FULL). A duplicate post (FreeSWITCH retrying after
//! a timeout that happened after our commit) gets 200 again and stores nothing new. Bad input
//! gets a 4xx naming the problem, which FreeSWITCH logs and then writes the CDR to its error
//! directory, where the sweeper can pick it up once the cause is fixed. A store failure gets
//! 503 so FreeSWITCH retries.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::Engine;
use subtle::ConstantTimeEq;

use super::listener::Peer;
use crate::cdr::service::{CdrService, DocumentOrigin, IngestError};
use crate::clock::Now;
use crate::metrics::Metrics;
use crate::store::LegInsert;

pub struct CdrReceiverState {
    pub service: Arc<CdrService>,
    pub metrics: Arc<Metrics>,
    /// Empty = loopback only.
    pub allow: Vec<ipnet::IpNet>,
    /// `user:password` FreeSWITCH must present with HTTP Basic; empty = none.
    pub credentials: String,
    pub max_body_bytes: usize,
}

pub fn routes(path: &str, state: Arc<CdrReceiverState>) -> Router {
    Router::new().route(path, any(receive)).with_state(state)
}

fn reply(status: StatusCode, result: &str, detail: &str) -> Response {
    let body = serde_json::json!({ "result": result, "detail": detail });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn allowed(allow: &[ipnet::IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if allow.is_empty() {
        return ip.is_loopback();
    }
    allow.iter().any(|n| n.contains(&ip))
}

fn basic_ok(expected: &str, headers: &HeaderMap) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("basic")
                .then(|| {
                    base64::engine::general_purpose::STANDARD
                        .decode(rest.trim())
                        .ok()
                })
                .flatten()
        })
        .unwrap_or_default();
    // Constant time in the content; the length of the configured secret is not a secret
    // worth the complexity of hiding.
    bool::from(given.as_slice().ct_eq(expected.as_bytes()))
}

async fn receive(
    State(st): State<Arc<CdrReceiverState>>,
    ConnectInfo(Peer(peer, _)): ConnectInfo<Peer>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (label, resp) = handle(&st, peer.ip(), method, &headers, body).await;
    st.metrics
        .api_requests
        .with_label_values(&["cdr", label])
        .inc();
    resp
}

async fn handle(
    st: &Arc<CdrReceiverState>,
    ip: IpAddr,
    method: Method,
    headers: &HeaderMap,
    body: Body,
) -> (&'static str, Response) {
    if !allowed(&st.allow, ip) {
        return (
            "forbidden_ip",
            reply(
                StatusCode::FORBIDDEN,
                "refused",
                "source address not allowed",
            ),
        );
    }
    if !st.credentials.is_empty() && !basic_ok(&st.credentials, headers) {
        let mut r = reply(StatusCode::UNAUTHORIZED, "refused", "credentials required");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"gridedge-cdr\""),
        );
        return ("unauthorized", r);
    }
    if method != Method::POST {
        return (
            "method",
            reply(StatusCode::METHOD_NOT_ALLOWED, "refused", "POST a CDR"),
        );
    }
    // Refuse an oversized body without reading it all: the declared length first, then a
    // capped read for chunked bodies.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        (
            "too_large",
            reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "refused",
                &format!("CDR body exceeds {} bytes", st.max_body_bytes),
            ),
        )
    };
    if declared.is_some_and(|n| n > st.max_body_bytes as u64) {
        return too_large();
    }
    let Ok(bytes) = axum::body::to_bytes(body, st.max_body_bytes).await else {
        return too_large();
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let service = Arc::clone(&st.service);
    let result = tokio::task::spawn_blocking(move || {
        service.ingest_document(
            &bytes,
            content_type.as_deref(),
            DocumentOrigin::Post,
            Now::system().unix_ms,
        )
    })
    .await;
    match result {
        Ok(Ok(LegInsert::New)) => ("ok", reply(StatusCode::OK, "stored", "")),
        Ok(Ok(LegInsert::Duplicate)) => ("duplicate", reply(StatusCode::OK, "duplicate", "")),
        Ok(Ok(LegInsert::Late)) => ("late", reply(StatusCode::OK, "late", "")),
        Ok(Err(e)) if e.is_input_error() => {
            tracing::warn!(peer = %ip, error = %e, "CDR post refused");
            (
                "bad_cdr",
                reply(StatusCode::BAD_REQUEST, "refused", &e.to_string()),
            )
        }
        Ok(Err(IngestError::Backpressure)) => {
            tracing::warn!(peer = %ip, "CDR post deferred: the grid outbox is full");
            let mut r = reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "retry",
                "the grid outbox is full; retry later",
            );
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("30"),
            );
            ("backpressure", r)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "CDR post not stored");
            (
                "store_error",
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "retry",
                    "storage unavailable",
                ),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "CDR ingest task failed");
            (
                "store_error",
                reply(StatusCode::SERVICE_UNAVAILABLE, "retry", "internal error"),
            )
        }
    }
}
