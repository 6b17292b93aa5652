//! Seed 004's call-task, call-log and line routes (004:L76-110, L116-290, L328-500,
//! L497-670, L759-790), plus gridedge's call-list import, blacklist and compliance routes
//! that seed 004 refers to but does not define. Same conventions as [`super::mgmt`]: signed
//! form parameters, the `reqResult` envelope (code 1 on success, the HTTP status otherwise),
//! a message naming the parameter at fault, and nothing changed by a refused request.
//!
//! Wire format only: parameters become domain types (`dialer::task`, `dialer::gateway`),
//! `dialer::service` does the work.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use jiff::civil::DateTime;
use serde_json::{json, Value};

use super::listener::Peer;
use super::mgmt::{ok, read_signed, respond, ApiError, MgmtState, Params};
use crate::clock::Now;
use crate::dialer::gateway::{valid_prefix, Gateway};
use crate::dialer::numbers::{normalize, Dedupe, Skipped};
use crate::dialer::result::ResultDetail;
use crate::dialer::rules::{CallerIdGroup, RetryRule, RetryStatus};
use crate::dialer::service::DialerService;
use crate::dialer::store::LogQuery;
use crate::dialer::task::{
    Bucket, CallType, Code, NumberSource, PacingChoice, TaskLine, TaskSpec, TaskStatus,
};

pub struct CampaignState {
    pub mgmt: Arc<MgmtState>,
    pub dialer: Arc<DialerService>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    GwAvailable,
    GwAdd,
    GwUpdate,
    GwList,
    Submit,
    Start,
    Pause,
    End,
    SetConcurrent,
    Status,
    Additional,
    CallList,
    Compliance,
    Attempts,
    LogList,
    LogByResult,
    Import,
    BlacklistAdd,
    BlacklistRemove,
    BlacklistList,
}

impl Route {
    const ALL: [Route; 20] = [
        Route::GwAvailable,
        Route::GwAdd,
        Route::GwUpdate,
        Route::GwList,
        Route::Submit,
        Route::Start,
        Route::Pause,
        Route::End,
        Route::SetConcurrent,
        Route::Status,
        Route::Additional,
        Route::CallList,
        Route::Compliance,
        Route::Attempts,
        Route::LogList,
        Route::LogByResult,
        Route::Import,
        Route::BlacklistAdd,
        Route::BlacklistRemove,
        Route::BlacklistList,
    ];

    /// (path, method, metrics name).
    fn spec(self) -> (&'static str, Method, &'static str) {
        use Method as M;
        match self {
            Route::GwAvailable => (
                "/freeswitch/gateway/api/getAvailableList/v1",
                M::GET,
                "gatewayGetAvailableList",
            ),
            Route::GwAdd => ("/freeswitch/gateway/api/add/v1", M::POST, "gatewayAdd"),
            Route::GwUpdate => (
                "/freeswitch/gateway/api/update/v1",
                M::POST,
                "gatewayUpdate",
            ),
            Route::GwList => (
                "/freeswitch/gateway/api/getList/v1",
                M::GET,
                "gatewayGetList",
            ),
            Route::Submit => (
                "/callcenter/callTask/api/submitCallTask/v1",
                M::POST,
                "submitCallTask",
            ),
            Route::Start => (
                "/callcenter/callTask/api/callTaskStart/v1",
                M::POST,
                "callTaskStart",
            ),
            Route::Pause => (
                "/callcenter/callTask/api/callTaskPause/v1",
                M::POST,
                "callTaskPause",
            ),
            Route::End => (
                "/callcenter/callTask/api/callTaskEnd/v1",
                M::POST,
                "callTaskEnd",
            ),
            Route::SetConcurrent => (
                "/callcenter/callTask/api/setTaskConcurrent/v1",
                M::POST,
                "setTaskConcurrent",
            ),
            Route::Status => (
                "/callcenter/callTask/api/callTaskStatus/v1",
                M::POST,
                "callTaskStatus",
            ),
            Route::Additional => (
                "/callcenter/callTask/api/callTaskAdditional/v1",
                M::POST,
                "callTaskAdditional",
            ),
            Route::CallList => (
                "/callcenter/callTask/api/getCallList/v1",
                M::GET,
                "getCallList",
            ),
            Route::Compliance => (
                "/callcenter/callTask/api/compliance/v1",
                M::GET,
                "callTaskCompliance",
            ),
            Route::Attempts => (
                "/callcenter/callTask/api/attempts/v1",
                M::GET,
                "callTaskAttempts",
            ),
            Route::LogList => (
                "/callcenter/callLog/api/getList/v1",
                M::GET,
                "callLogGetList",
            ),
            Route::LogByResult => (
                "/callcenter/callLog/api/getListByResult/v1",
                M::GET,
                "callLogGetListByResult",
            ),
            Route::Import => (
                "/callcenter/callList/api/import/v1",
                M::POST,
                "callListImport",
            ),
            Route::BlacklistAdd => ("/callcenter/blacklist/api/add/v1", M::POST, "blacklistAdd"),
            Route::BlacklistRemove => (
                "/callcenter/blacklist/api/remove/v1",
                M::POST,
                "blacklistRemove",
            ),
            Route::BlacklistList => (
                "/callcenter/blacklist/api/getList/v1",
                M::GET,
                "blacklistGetList",
            ),
        }
    }
}

pub fn routes(state: Arc<CampaignState>) -> Router {
    let mut r = Router::new();
    for route in Route::ALL {
        let (path, _, _) = route.spec();
        r = r.route(
            path,
            any(
                move |st: State<Arc<CampaignState>>,
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
    State(st): State<Arc<CampaignState>>,
    ConnectInfo(Peer(peer, _)): ConnectInfo<Peer>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    let (_, _, name) = route.spec();
    let result = serve(route, &st, peer, method, &headers, &uri, body).await;
    respond(name, peer, &st.mgmt.metrics, result)
}

async fn serve(
    route: Route,
    st: &Arc<CampaignState>,
    peer: SocketAddr,
    method: Method,
    headers: &HeaderMap,
    uri: &Uri,
    body: Body,
) -> Result<Value, ApiError> {
    let (_, expected, _) = route.spec();
    // Imports and blacklist requests carry up to `dialer.max_import` numbers: about 32 bytes
    // each percent-encoded with separators, beyond the management API's usual body limit.
    let limit = match route {
        Route::Import | Route::BlacklistAdd | Route::BlacklistRemove => st
            .mgmt
            .max_body_bytes
            .max(st.dialer.config().max_import.saturating_mul(32)),
        _ => st.mgmt.max_body_bytes,
    };
    let params = read_signed(&st.mgmt, peer, method, expected, headers, uri, body, limit).await?;
    let dialer = Arc::clone(&st.dialer);
    super::mgmt::blocking(move || execute(route, &dialer, &params)).await
}

// ---- parameter parsing ------------------------------------------------------------------

fn code(p: &Params, name: &str) -> Result<Code, ApiError> {
    Code::parse(p.required(name)?).map_err(|e| ApiError::bad(format!("{name}: {e}")))
}

fn opt_int(p: &Params, name: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
    p.get(name)
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| (lo..=hi).contains(n))
                .ok_or_else(|| {
                    ApiError::bad(format!(
                        "parameter {name} must be an integer from {lo} to {hi}, got {:?}",
                        short(v)
                    ))
                })
        })
        .transpose()
}

fn int_in(p: &Params, name: &str, lo: i64, hi: i64) -> Result<i64, ApiError> {
    p.required(name)?;
    Ok(opt_int(p, name, lo, hi)?.unwrap_or(lo))
}

fn opt_f64(p: &Params, name: &str, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
    p.get(name)
        .map(|v| {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= lo && *x <= hi)
                .ok_or_else(|| {
                    ApiError::bad(format!(
                        "parameter {name} must be a number from {lo} to {hi}, got {:?}",
                        short(v)
                    ))
                })
        })
        .transpose()
}

/// Free text: bounded, no control characters.
fn opt_text(p: &Params, name: &str, max: usize) -> Result<Option<String>, ApiError> {
    match p.get(name) {
        None => Ok(None),
        Some(v) if v.chars().count() > max => Err(ApiError::bad(format!(
            "parameter {name} exceeds {max} characters"
        ))),
        Some(v) if v.chars().any(char::is_control) => Err(ApiError::bad(format!(
            "parameter {name} contains control characters"
        ))),
        Some(v) => Ok(Some(v.to_owned())),
    }
}

fn text(p: &Params, name: &str, max: usize) -> Result<String, ApiError> {
    p.required(name)?;
    Ok(opt_text(p, name, max)?.unwrap_or_default())
}

fn short(v: &str) -> String {
    v.chars().take(40).collect()
}

/// `yyyy-MM-dd HH:mm:ss` in `zone`, or Unix milliseconds.
fn datetime(v: &str, zone: &str, name: &str) -> Result<u64, ApiError> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v
            .parse::<u64>()
            .map_err(|_| ApiError::bad(format!("{name}: out of range")));
    }
    let bad = || {
        ApiError::bad(format!(
            "{name}: expected yyyy-MM-dd HH:mm:ss or Unix milliseconds, got {:?}",
            short(v)
        ))
    };
    let dt: DateTime = v.parse().map_err(|_| bad())?;
    let tz = jiff::tz::TimeZone::get(zone).map_err(|_| bad())?;
    let ts = dt.to_zoned(tz).map_err(|_| bad())?.timestamp();
    u64::try_from(ts.as_millisecond()).map_err(|_| bad())
}

fn page(p: &Params) -> Result<(u64, u64), ApiError> {
    let num = opt_int(p, "pageNum", 1, 1_000_000)?.unwrap_or(1) as u64;
    let size = opt_int(p, "pageSize", 1, 1000)?.unwrap_or(20) as u64;
    Ok(((num - 1) * size, size))
}

/// Numbers separated by newlines, commas or semicolons.
fn number_lines(v: &str) -> Vec<&str> {
    v.split(['\n', '\r', ',', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn json_array<'a>(v: &'a Value, name: &str, max: usize) -> Result<&'a Vec<Value>, ApiError> {
    let a = v
        .as_array()
        .ok_or_else(|| ApiError::bad(format!("{name}: expected a JSON array")))?;
    if a.len() > max {
        return Err(ApiError::bad(format!("{name}: at most {max} entries")));
    }
    Ok(a)
}

/// A JSON field given as a string or a number.
fn field_str(o: &Value, key: &str) -> Option<String> {
    match o.get(key)? {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn call_gws(p: &Params) -> Result<Vec<TaskLine>, ApiError> {
    let raw = p.required("callGWs")?;
    let v: Value =
        serde_json::from_str(raw).map_err(|e| ApiError::bad(format!("callGWs: not JSON: {e}")))?;
    let mut out: Vec<TaskLine> = Vec::new();
    for (i, o) in json_array(&v, "callGWs", 64)?.iter().enumerate() {
        let code = field_str(o, "code")
            .filter(|c| Code::parse(c).is_ok())
            .ok_or_else(|| {
                ApiError::bad(format!("callGWs[{i}].code: a gateway code is required"))
            })?;
        let conc = field_str(o, "concurrency")
            .and_then(|c| c.parse::<u32>().ok())
            .filter(|c| (1..=100_000).contains(c))
            .ok_or_else(|| {
                ApiError::bad(format!(
                    "callGWs[{i}].concurrency: an integer from 1 to 100000 is required"
                ))
            })?;
        if out.iter().any(|l| l.code == code) {
            return Err(ApiError::bad(format!(
                "callGWs: gateway {code:?} listed twice"
            )));
        }
        out.push(TaskLine {
            code,
            concurrency: conc,
        });
    }
    if out.is_empty() {
        return Err(ApiError::bad("callGWs: at least one line is required"));
    }
    Ok(out)
}

fn repeat_confs(p: &Params) -> Result<Vec<RetryRule>, ApiError> {
    let Some(raw) = p.get("repeatConfs") else {
        return Ok(Vec::new());
    };
    let v: Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad(format!("repeatConfs: not JSON: {e}")))?;
    let mut out = Vec::new();
    for (i, o) in json_array(&v, "repeatConfs", 16)?.iter().enumerate() {
        let status = field_str(o, "status")
            .and_then(|s| RetryStatus::from_code(&s))
            .ok_or_else(|| ApiError::bad(format!("repeatConfs[{i}].status: 1 to 5")))?;
        let times = field_str(o, "frequence")
            .and_then(|s| s.parse::<u8>().ok())
            .filter(|t| (1..=5).contains(t))
            .ok_or_else(|| ApiError::bad(format!("repeatConfs[{i}].frequence: 1 to 5")))?;
        let interval_min = field_str(o, "interval")
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|m| *m <= 7 * 24 * 60)
            .ok_or_else(|| {
                ApiError::bad(format!("repeatConfs[{i}].interval: minutes, 0 to 10080"))
            })?;
        out.push(RetryRule {
            status,
            times,
            interval_min,
        });
    }
    Ok(out)
}

fn number_groups(p: &Params) -> Result<Vec<CallerIdGroup>, ApiError> {
    let Some(raw) = p.get("outboundNumberGroups") else {
        return Ok(Vec::new());
    };
    let v: Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad(format!("outboundNumberGroups: not JSON: {e}")))?;
    let mut out = Vec::new();
    for (i, o) in json_array(&v, "outboundNumberGroups", 1000)?
        .iter()
        .enumerate()
    {
        let org_no = field_str(o, "orgNo")
            .filter(|s| !s.is_empty() && s.len() <= 64)
            .ok_or_else(|| ApiError::bad(format!("outboundNumberGroups[{i}].orgNo is required")))?;
        let number = field_str(o, "outboundNumber")
            .and_then(|s| normalize(&s).ok())
            .ok_or_else(|| {
                ApiError::bad(format!(
                    "outboundNumberGroups[{i}].outboundNumber must be a phone number"
                ))
            })?;
        out.push(CallerIdGroup {
            org_no,
            service_id: field_str(o, "serviceId").filter(|s| !s.is_empty()),
            outbound_number: number.as_str().to_owned(),
        });
    }
    Ok(out)
}

fn results_list(v: &str, name: &str) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let r = part
            .parse::<u8>()
            .ok()
            .and_then(ResultDetail::from_code)
            .ok_or_else(|| {
                ApiError::bad(format!(
                    "{name}: {:?} is not a resultDetail code (1, 5, 10, 20, 25, 28, 30, 32, 35, 40, 50, 55)",
                    short(part)
                ))
            })?;
        if !out.contains(&r.code()) {
            out.push(r.code());
        }
    }
    if out.is_empty() {
        return Err(ApiError::bad(format!(
            "{name}: at least one code is required"
        )));
    }
    Ok(out)
}

fn gateway(p: &Params, id: i64, gw_code: String) -> Result<Gateway, ApiError> {
    let prefix = |name: &str| -> Result<Option<String>, ApiError> {
        match opt_text(p, name, 16)? {
            Some(v) if !valid_prefix(&v) => {
                Err(ApiError::bad(format!("{name}: digits, +, * and # only")))
            }
            other => Ok(other),
        }
    };
    let caller = p
        .get("originationCallId")
        .map(|v| {
            normalize(v)
                .map(|n| n.as_str().to_owned())
                .map_err(|e| ApiError::bad(format!("originationCallId: {e}")))
        })
        .transpose()?;
    let realm = text(p, "realm", 255)?;
    if realm.contains(char::is_whitespace) {
        return Err(ApiError::bad("realm: host:port without spaces"));
    }
    Ok(Gateway {
        id,
        gw_code,
        gw_name: text(p, "gwName", 128)?,
        register_type: int_in(p, "registerType", 1, 2)? as u8,
        origination_call_id: caller,
        codec: opt_text(p, "codec", 64)?,
        mobile_phone_prefix: prefix("mobilePhonePrefix")?,
        fixed_phone_prefix: prefix("fixedPhonePrefix")?,
        realm,
        username: opt_text(p, "username", 128)?,
        password: opt_text(p, "password", 128)?,
        remark: opt_text(p, "remark", 512)?,
        call_limit: opt_int(p, "callLimit", 0, i64::from(u32::MAX))?,
        bill_type: opt_int(p, "billType", 1, 2)?.map(|v| v as u8),
        billsec: opt_int(p, "billsec", 1, 86_400)?,
        price: opt_f64(p, "price", 0.0, 1e9)?,
        enabled: int_in(p, "status", 0, 1)? == 1,
        // Absent on an update: the caller keeps the current capacity (see `GwUpdate`).
        concurrency: opt_int(p, "expectCount", 0, 100_000)?.unwrap_or(0) as u32,
        return_visit: int_in(p, "returnVisit", 0, 1)? == 1,
        account_balance: opt_f64(p, "accountBalance", -1e12, 1e12)?,
        recharged_amount: opt_f64(p, "rechargedAmount", 0.0, 1e12)?,
    })
}

fn task_spec(p: &Params, default_zone: &str, now_ms: u64) -> Result<TaskSpec, ApiError> {
    let code = code(p, "callTaskCode")?;
    let schedule = int_in(p, "scheduleType", 1, 11)?;
    if schedule != 1 {
        return Err(ApiError::bad(format!(
            "scheduleType {schedule} is not supported: this dialer connects answered calls directly to agents (scheduleType 1)"
        )));
    }
    let call_type =
        match int_in(p, "callType", 1, 3)? {
            1 => CallType::Predictive,
            2 => CallType::Preview,
            _ => return Err(ApiError::bad(
                "callType 3 (inbound) is not an outbound task; use 1 (predictive) or 2 (preview)",
            )),
        };
    let lines = call_gws(p)?;
    let zone = p.get("timeZone").unwrap_or(default_zone).to_owned();
    if jiff::tz::TimeZone::get(&zone).is_err() {
        return Err(ApiError::bad(format!(
            "timeZone: unknown zone {:?}",
            short(&zone)
        )));
    }
    let expires_ms = datetime(p.required("expiredTime")?, &zone, "expiredTime")?;
    if expires_ms <= now_ms {
        return Err(ApiError::bad("expiredTime is in the past"));
    }
    let project = p.project()?.as_str().to_owned();
    p.required("rate")?;
    let rate = opt_f64(p, "rate", 0.0, 10.0)?.unwrap_or(0.0);
    if rate <= 0.0 {
        return Err(ApiError::bad("parameter rate must be greater than 0"));
    }
    let source = match p.get("callListId") {
        Some(_) => NumberSource::List(code_param(p, "callListId")?),
        None => {
            let task = code_param(p, "originalCallTaskCode").map_err(|_| {
                ApiError::bad("a recall task (no callListId) needs originalCallTaskCode and originalResultDetail")
            })?;
            let results = results_list(
                p.get("originalResultDetail").ok_or_else(|| {
                    ApiError::bad("a recall task (no callListId) needs originalResultDetail")
                })?,
                "originalResultDetail",
            )?;
            NumberSource::Recall { task, results }
        }
    };
    let pacing = match p.get("pacing") {
        None => PacingChoice::Predictive,
        Some(v) => PacingChoice::parse(v).ok_or_else(|| {
            ApiError::bad(format!(
                "pacing must be predictive, progressive, ratio-idle or ratio-active, got {:?}",
                short(v)
            ))
        })?,
    };
    let week = opt_text(p, "weekPeriods", 32)?;
    let time = opt_text(p, "timePeriods", 1024)?;
    if week.is_some() || time.is_some() {
        crate::dialer::window::CallingWindow::parse(
            &zone,
            week.as_deref().unwrap_or("0|1|2|3|4|5|6"),
            time.as_deref().unwrap_or("00:00-23:59"),
            None,
            None,
        )
        .map_err(|e| ApiError::bad(e.to_string()))?;
    }
    let guard = |name: &str, default: u32| -> Result<u32, ApiError> {
        Ok(opt_int(p, name, 0, 1000)?.map_or(default, |v| v as u32))
    };
    Ok(TaskSpec {
        code,
        project,
        call_type,
        pacing,
        lines,
        rate,
        source,
        expires_ms,
        time_zone: zone,
        week_periods: week,
        time_periods: time,
        org_no: opt_text(p, "orgNo", 64)?,
        service_id: opt_text(p, "serviceId", 64)?,
        city_org_no: opt_text(p, "cityOrgNo", 64)?,
        caller_id_groups: number_groups(p)?,
        retry_rules: repeat_confs(p)?,
        continuous_seconds: guard("continuousSeconds", 20)?,
        continuous_failed: guard("continuousFailed", 50)?,
    })
}

fn code_param(p: &Params, name: &str) -> Result<Code, ApiError> {
    code(p, name)
}

fn phone_list(
    p: &Params,
    max: usize,
) -> Result<Vec<crate::dialer::numbers::PhoneNumber>, ApiError> {
    let raw = number_lines(p.required("numbers")?);
    if raw.len() > max {
        return Err(ApiError::bad(format!("numbers: at most {max} per request")));
    }
    raw.iter()
        .map(|r| normalize(r).map_err(|e| ApiError::bad(format!("numbers: {e}"))))
        .collect()
}

fn stats_json(s: &crate::dialer::compliance::AbandonStats) -> Value {
    json!({ "live": s.live, "abandoned": s.abandoned, "rate": s.rate })
}

/// Runs every parameter parser of these routes over one request and checks what a parse
/// that succeeds promises (for the `campaign_request` fuzz target).
pub fn fuzz_parse(query: Option<&str>, body: &[u8]) {
    let Ok(p) = Params::parse(query, body) else {
        return;
    };
    if let Ok(spec) = task_spec(&p, "Asia/Shanghai", 0) {
        assert!(spec.rate > 0.0 && spec.rate <= 10.0);
        assert!(!spec.lines.is_empty() && spec.lines.len() <= 64);
        assert!(spec.lines.iter().all(|l| l.concurrency >= 1));
        assert!(spec.retry_rules.iter().all(|r| (1..=5).contains(&r.times)));
    }
    if let Ok(g) = gateway(&p, 1, "1001".into()) {
        for pre in [&g.mobile_phone_prefix, &g.fixed_phone_prefix]
            .into_iter()
            .flatten()
        {
            assert!(valid_prefix(pre));
        }
        assert!(!g.realm.contains(char::is_whitespace));
    }
    if let Some(v) = p.get("resultDetail") {
        if let Ok(codes) = results_list(v, "resultDetail") {
            assert!(codes.iter().all(|c| ResultDetail::from_code(*c).is_some()));
        }
    }
    if let Ok(list) = phone_list(&p, 1000) {
        assert!(list.len() <= 1000);
    }
    let _ = page(&p);
    if let Some(v) = p.get("expiredTime") {
        let _ = datetime(v, "Asia/Shanghai", "expiredTime");
    }
}

// ---- the routes ------------------------------------------------------------------------

fn execute(route: Route, d: &DialerService, p: &Params) -> Result<Value, ApiError> {
    let now = Now::system();
    match route {
        Route::GwAvailable => {
            let list = d.available()?;
            Ok(ok(Some(Value::Array(
                list.into_iter()
                    .map(|(g, u)| {
                        json!({
                            "gwCode": g.gw_code,
                            "gwName": g.gw_name,
                            "concurrency": u.concurrency,
                            "usedConcurrency": u.used_concurrency,
                            "availableConcurrency": u.available_concurrency,
                            "remark": g.remark.unwrap_or_default(),
                        })
                    })
                    .collect(),
            ))))
        }
        Route::GwAdd => {
            let gw_code = match p.get("gwCode") {
                Some(_) => code(p, "gwCode")?.as_str().to_owned(),
                None => String::new(),
            };
            let g = gateway(p, 0, gw_code)?;
            let (id, gw_code) = d.add_gateway(g)?;
            Ok(ok(Some(json!({ "id": id, "gwCode": gw_code }))))
        }
        Route::GwUpdate => {
            let id = int_in(p, "id", 1, i64::MAX)?;
            let gw_code = code(p, "gwCode")?.as_str().to_owned();
            let g = gateway(p, id, gw_code)?;
            d.update_gateway(g, p.get("expectCount").is_some())?;
            Ok(ok(None))
        }
        Route::GwList => {
            let (offset, size) = page(p)?;
            let status = opt_int(p, "status", 0, 1)?;
            let id = opt_int(p, "id", 1, i64::MAX)?;
            let all: Vec<Gateway> = d
                .gateways()?
                .into_iter()
                .filter(|g| status.is_none_or(|s| g.enabled == (s == 1)))
                .filter(|g| id.is_none_or(|i| g.id == i))
                .collect();
            let items: Vec<Value> = all
                .iter()
                .skip(offset as usize)
                .take(size as usize)
                .map(|g| {
                    json!({
                        "id": g.id,
                        "gwCode": g.gw_code,
                        "gwName": g.gw_name,
                        "remark": g.remark.clone().unwrap_or_default(),
                        "status": i32::from(g.enabled),
                        "concurrency": g.concurrency,
                        "realm": g.realm,
                        "registerType": g.register_type,
                        "originationCallId": g.origination_call_id.clone().unwrap_or_default(),
                    })
                })
                .collect();
            Ok(ok(Some(json!({ "total": all.len(), "items": items }))))
        }
        Route::Submit => {
            let spec = task_spec(p, &d.config().timezone, now.unix_ms)?;
            let code = spec.code.as_str().to_owned();
            let total = d.submit(spec, now)?;
            Ok(ok(Some(json!({ "callTaskCode": code, "totalCnt": total }))))
        }
        Route::Start | Route::Pause | Route::End => {
            let c = code(p, "callTaskCode")?;
            let to = match route {
                Route::Start => TaskStatus::Running,
                Route::Pause => TaskStatus::Paused,
                _ => TaskStatus::Ended,
            };
            d.set_status(&c, to, now)?;
            Ok(ok(None))
        }
        Route::SetConcurrent => {
            let c = code(p, "callTaskCode")?;
            let lines = call_gws(p)?;
            p.required("rate")?;
            let rate = opt_f64(p, "rate", 0.0, 10.0)?.unwrap_or(0.0);
            if rate <= 0.0 {
                return Err(ApiError::bad("parameter rate must be greater than 0"));
            }
            d.set_concurrent(&c, lines, rate, now)?;
            Ok(ok(None))
        }
        Route::Status => {
            let c = code(p, "callTaskCode")?;
            let v = d.status(&c, now)?;
            Ok(ok(Some(json!({
                "successCount": v.counters.success,
                "failCount": v.counters.fail,
                "missCount": v.counters.miss,
                "rejectCount": v.counters.reject,
                "totalCount": v.total,
                "runningCount": v.running,
                "dialedCount": v.counters.dialed,
                "status": v.status.code(),
                "rate": v.rate,
                "pacing": v.pacing,
                "abandonRate24h": v.abandon_24h.rate,
                "abandonRate30d": v.abandon_30d.rate,
            }))))
        }
        Route::Additional => {
            let c = code(p, "callTaskCode")?;
            let last = int_in(p, "callListLastId", 0, i64::MAX)?;
            let added = d.additional(&c, last, now)?;
            Ok(ok(Some(json!({ "added": added }))))
        }
        Route::CallList => {
            let c = code(p, "callTaskCode")?;
            let n = int_in(p, "count", 1, 100)? as u32;
            let phones = d.hand_out(&c, n, now)?;
            Ok(ok(Some(json!({
                "items": phones.into_iter().map(|ph| json!({ "phone": ph })).collect::<Vec<_>>()
            }))))
        }
        Route::Compliance => {
            let c = code(p, "callTaskCode")?;
            let v = d.status(&c, now)?;
            Ok(ok(Some(json!({
                "callTaskCode": c.as_str(),
                "last24Hours": stats_json(&v.abandon_24h),
                "last30Days": stats_json(&v.abandon_30d),
            }))))
        }
        Route::Attempts => {
            let c = code(p, "callTaskCode")?;
            let after = opt_int(p, "afterId", 0, i64::MAX)?.unwrap_or(0);
            let limit = opt_int(p, "limit", 1, 10_000)?.unwrap_or(1000) as usize;
            let rows = d.attempts(&c, after, limit)?;
            Ok(ok(Some(json!({
                "items": rows.into_iter().map(|(id, a)| json!({
                    "id": id,
                    "number": a.number,
                    "callerId": a.caller_id,
                    "dialedMs": a.dialed_ms,
                    "answeredMs": a.answered_ms,
                    "bridgedMs": a.bridged_ms,
                    "endedMs": a.ended_ms,
                    "outcome": a.outcome.as_str(),
                    "agent": a.agent,
                    "callId": a.call_id,
                    "resultDetail": a.result_detail.map(|r| r.to_string()),
                })).collect::<Vec<_>>()
            }))))
        }
        Route::LogList => {
            let by_end = int_in(p, "queryTimeType", 1, 2)? == 2;
            let (offset, size) = page(p)?;
            let zone = d.config().timezone.clone();
            let from = p
                .get("beginTime")
                .map(|v| datetime(v, &zone, "beginTime"))
                .transpose()?;
            let to = p
                .get("endTime")
                .map(|v| datetime(v, &zone, "endTime"))
                .transpose()?;
            let project = match p.get("projectCode") {
                Some(_) => Some(p.project()?.as_str().to_owned()),
                None => None,
            };
            let task = match p.get("callTaskCode") {
                Some(_) => Some(code(p, "callTaskCode")?.as_str().to_owned()),
                None => None,
            };
            let (total, rows) = d.call_log(&LogQuery {
                project: project.as_deref(),
                task: task.as_deref(),
                by_end,
                from_ms: from,
                to_ms: to,
                offset,
                limit: size,
            })?;
            let items: Vec<Value> = rows
                .into_iter()
                .map(|r| {
                    let a = r.attempt;
                    let rd = a.result_detail.and_then(ResultDetail::from_code);
                    let duration = a.ended_ms.saturating_sub(a.dialed_ms) / 1000;
                    let billsec = a
                        .answered_ms
                        .map_or(0, |x| a.ended_ms.saturating_sub(x) / 1000);
                    json!({
                        "id": r.id,
                        "callTaskCode": a.campaign,
                        "callerIdNumber": a.agent.unwrap_or_default(),
                        "destinationNumber": a.number,
                        "recordFile": "",
                        "recordFileQiniu": "",
                        "startTimestamp": a.dialed_ms,
                        "endTimestamp": a.ended_ms,
                        "addTime": a.dialed_ms,
                        "updateTime": a.ended_ms,
                        "duration": duration,
                        "billsec": billsec,
                        "result": rd.map(|r| Bucket::of(r).code()).unwrap_or("20"),
                        "resultDetail": rd.map(|r| r.code().to_string()).unwrap_or_default(),
                    })
                })
                .collect();
            Ok(ok(Some(json!({ "total": total, "items": items }))))
        }
        Route::LogByResult => {
            let results = results_list(p.required("resultDetail")?, "resultDetail")?;
            let c = code(p, "callTaskCode")?;
            let after = int_in(p, "recallLastId", 0, i64::MAX)?;
            let (offset, size) = page(p)?;
            let (total, rows) = d.numbers_by_result(&c, &results, after, offset, size)?;
            Ok(ok(Some(json!({
                "total": total,
                "items": rows.into_iter().map(|(id, n)| json!({ "id": id, "destinationNumber": n })).collect::<Vec<_>>()
            }))))
        }
        Route::Import => {
            let list = code(p, "callListId")?;
            let mode = match p.get("deduplicationType") {
                None => Dedupe::None,
                Some(v) => Dedupe::from_code(v).ok_or_else(|| {
                    ApiError::bad(format!(
                        "deduplicationType must be 1, 2, 3 or 4, got {:?}",
                        short(v)
                    ))
                })?,
            };
            let task = match p.get("callTaskCode") {
                Some(_) => Some(code(p, "callTaskCode")?),
                None => None,
            };
            let raw = number_lines(p.required("numbers")?);
            let (outcome, last) = d.import(&list, &raw, mode, task.as_ref(), now)?;
            let skipped: Vec<Value> = outcome
                .skipped
                .iter()
                .take(1000)
                .map(|s| match s {
                    Skipped::Invalid { line, error } => {
                        json!({ "reason": "invalid", "line": line, "error": error })
                    }
                    Skipped::Duplicate { line, number } => {
                        json!({ "reason": "duplicate", "line": line, "number": number })
                    }
                    Skipped::Blacklisted { line, number } => {
                        json!({ "reason": "blacklisted", "line": line, "number": number })
                    }
                })
                .collect();
            Ok(ok(Some(json!({
                "callListId": list.as_str(),
                "accepted": outcome.accepted.len(),
                "skippedCount": outcome.skipped.len(),
                "lastId": last,
                "skipped": skipped,
            }))))
        }
        Route::BlacklistAdd => {
            let numbers = phone_list(p, d.config().max_import)?;
            Ok(ok(Some(
                json!({ "added": d.blacklist_add(&numbers, now)? }),
            )))
        }
        Route::BlacklistRemove => {
            let numbers = phone_list(p, d.config().max_import)?;
            Ok(ok(Some(
                json!({ "removed": d.blacklist_remove(&numbers)? }),
            )))
        }
        Route::BlacklistList => {
            let (offset, size) = page(p)?;
            let (total, items) = d.blacklist_page(offset, size)?;
            Ok(ok(Some(json!({
                "total": total,
                "items": items.into_iter().map(|n| json!({ "number": n })).collect::<Vec<_>>()
            }))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn params(pairs: &[(&str, &str)]) -> Params {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        Params::parse(None, body.as_bytes()).unwrap()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("callTaskCode", "t1"),
            ("scheduleType", "1"),
            ("callType", "1"),
            ("callGWs", r#"[{"code":"1001","concurrency":4}]"#),
            ("callListId", "l1"),
            ("expiredTime", "2099-01-01 00:00:00"),
            ("projectCode", "p1"),
            ("rate", "1.5"),
        ]
    }

    #[test]
    fn a_full_submission_parses() {
        let mut p = base();
        p.push((
            "repeatConfs",
            r#"[{"status":"2","frequence":"2","interval":"30"}]"#,
        ));
        p.push((
            "outboundNumberGroups",
            r#"[{"orgNo":"33","serviceId":"s","outboundNumber":"95598"}]"#,
        ));
        p.push(("orgNo", "33"));
        p.push(("weekPeriods", "1|2|3|4|5"));
        p.push(("timePeriods", "09:00-12:00|13:30-21:00"));
        let s = task_spec(&params(&p), "Asia/Shanghai", 0).unwrap();
        assert_eq!(s.lines[0].concurrency, 4);
        assert_eq!(s.retry_rules.len(), 1);
        assert_eq!(s.caller_id_groups[0].outbound_number, "95598");
        assert_eq!(s.continuous_failed, 50);
        assert!(matches!(s.source, NumberSource::List(_)));
    }

    #[test]
    fn each_bad_parameter_is_named() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("callTaskCode", None, "callTaskCode"),
            ("scheduleType", Some("2"), "scheduleType"),
            ("callType", Some("3"), "callType"),
            ("callGWs", Some("[{"), "callGWs"),
            (
                "callGWs",
                Some(r#"[{"code":"1001","concurrency":0}]"#),
                "concurrency",
            ),
            ("callGWs", Some("[]"), "callGWs"),
            ("expiredTime", Some("2000-01-01 00:00:00"), "past"),
            ("expiredTime", Some("tomorrow"), "expiredTime"),
            ("rate", Some("0"), "rate"),
            ("rate", Some("11"), "rate"),
            ("rate", Some("NaN"), "rate"),
            ("callListId", None, "originalCallTaskCode"),
            ("projectCode", Some("x y"), "projectCode"),
        ];
        for (name, value, expect) in cases {
            let mut p: Vec<(&str, &str)> = base().into_iter().filter(|(k, _)| k != name).collect();
            if let Some(v) = value {
                p.push((name, v));
            }
            let e = task_spec(&params(&p), "Asia/Shanghai", 1_700_000_000_000).unwrap_err();
            assert!(e.msg.contains(expect), "{name}={value:?}: {}", e.msg);
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn datetimes_in_the_zone_or_millis() {
        assert_eq!(datetime("1000", "UTC", "x").unwrap(), 1000);
        assert_eq!(
            datetime("2026-01-01 08:00:00", "Asia/Shanghai", "x").unwrap(),
            datetime("2026-01-01 00:00:00", "UTC", "x").unwrap()
        );
        assert!(datetime("2026-13-01 00:00:00", "UTC", "x").is_err());
    }

    #[test]
    fn numbers_split_on_every_separator() {
        assert_eq!(number_lines("1;2,3\r\n4\n\n"), vec!["1", "2", "3", "4"]);
    }
}
