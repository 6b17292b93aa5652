//! `GET /gridedge/recordings`: the recording index for operators and the desktop, signed like
//! seed 004's management routes, answered in its `reqResult` envelope. The grid's own
//! download (录音下载) lives in `api/grid.rs`; this route is how one finds a recording id
//! from a call (`callId` = the SIP Call-ID of the recording session) or checks one by id.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use serde_json::{json, Value};

use super::listener::Peer;
use super::mgmt::{blocking, ok, read_signed, respond, ApiError, MgmtState};
use crate::recording::store::{RecordingStore, StoredRecording};

pub const PATH: &str = "/gridedge/recordings";
const ROUTE: &str = "recordings";

pub struct RecordingApiState {
    pub mgmt: Arc<MgmtState>,
    /// A reader of the index (its own connection: listing never waits for a transcode).
    pub store: Mutex<RecordingStore>,
    pub db_path: PathBuf,
}

pub fn routes(state: Arc<RecordingApiState>) -> Router {
    Router::new().route(PATH, any(handle)).with_state(state)
}

async fn handle(
    State(st): State<Arc<RecordingApiState>>,
    ConnectInfo(Peer(peer, _)): ConnectInfo<Peer>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    let result = serve(&st, peer, method, &headers, &uri, body).await;
    respond(ROUTE, peer, &st.mgmt.metrics, result)
}

async fn serve(
    st: &Arc<RecordingApiState>,
    peer: SocketAddr,
    method: Method,
    headers: &HeaderMap,
    uri: &Uri,
    body: Body,
) -> Result<Value, ApiError> {
    let params = read_signed(
        &st.mgmt,
        peer,
        method,
        Method::GET,
        headers,
        uri,
        body,
        st.mgmt.max_body_bytes,
    )
    .await?;
    let call_id = params.get("callId").map(str::to_owned);
    let record_id = params.get("recordId").map(str::to_owned);
    for (name, v) in [("callId", &call_id), ("recordId", &record_id)] {
        if v.as_ref().is_some_and(|v| v.is_empty() || v.len() > 256) {
            return Err(ApiError::bad(format!("{name} must be 1-256 characters")));
        }
    }
    if call_id.is_none() && record_id.is_none() {
        return Err(ApiError::bad("missing parameter callId (or recordId)"));
    }
    let st = Arc::clone(st);
    blocking(move || {
        let store = st.store.lock().unwrap_or_else(|e| e.into_inner());
        let rows = match (&record_id, &call_id) {
            (Some(id), _) => store
                .get(id)
                .map(|r| r.into_iter().collect::<Vec<_>>())
                .map(|v| {
                    v.into_iter()
                        .filter(|r| call_id.as_ref().is_none_or(|c| *c == r.meta.call_id))
                        .collect()
                }),
            (None, Some(c)) => store.by_call(c),
            (None, None) => Ok(vec![]),
        };
        let rows = rows.map_err(|e| {
            tracing::error!(error = %e, "reading the recording index failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the recording index could not be read",
            )
        })?;
        Ok(ok(Some(Value::Array(rows.iter().map(entry).collect()))))
    })
    .await
}

fn entry(r: &StoredRecording) -> Value {
    let m = &r.meta;
    json!({
        "recordId": m.record_id,
        "callId": m.call_id,
        "agent": m.agent,
        "participants": m.participants,
        "startTime": m.started_ms,
        "endTime": m.ended_ms,
        "durationMs": m.ended_ms.saturating_sub(m.started_ms),
        "codec": m.codec,
        "status": m.status.as_str(),
        "dtmf": m.dtmf.iter().map(|d| json!({
            "offsetMs": d.offset_ms,
            "durationMs": d.duration_ms,
            "side": d.side,
            "key": d.key,
        })).collect::<Vec<_>>(),
        "formats": r.files.iter().map(|f| json!({
            "format": f.format.name(),
            "size": f.size,
            "sha256": f.sha256,
            "keyId": f.key_id,
        })).collect::<Vec<_>>(),
    })
}
