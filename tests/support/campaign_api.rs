//! Client helpers for the campaign runtime's HTTP routes as `/work/campaign-contract.md`
//! specifies them (seed 004 §2, §3, §5–§8, §10, §13–§17, §19, §23 plus gridedge's call-list,
//! blacklist, compliance and attempts routes), on top of the signed management client of
//! `support/mgmt.rs`. Shared by `e2e_campaign_api.rs`, `e2e_campaign.rs` and
//! `e2e_campaign_rules.rs` (`#[path]`-included next to `common` and `mgmt`).
//!
//! Every helper that "must succeed" fails with the request, the HTTP status and the body, so a
//! failing test says which call went wrong and what the daemon answered.
#![allow(dead_code)] // each test binary uses a different subset

use serde_json::{json, Value};

use crate::common::Daemon;
use crate::mgmt::{now_ms, supervisor_login, ApiResp, Framing, Mgmt, Stomp};

// ------------------------------------------------------------------------------------------
// Routes
// ------------------------------------------------------------------------------------------

pub const GW_AVAILABLE: &str = "/freeswitch/gateway/api/getAvailableList/v1";
pub const GW_ADD: &str = "/freeswitch/gateway/api/add/v1";
pub const GW_UPDATE: &str = "/freeswitch/gateway/api/update/v1";
pub const GW_LIST: &str = "/freeswitch/gateway/api/getList/v1";

pub const LIST_IMPORT: &str = "/callcenter/callList/api/import/v1";
pub const BL_ADD: &str = "/callcenter/blacklist/api/add/v1";
pub const BL_REMOVE: &str = "/callcenter/blacklist/api/remove/v1";
pub const BL_LIST: &str = "/callcenter/blacklist/api/getList/v1";

pub const TASK_SUBMIT: &str = "/callcenter/callTask/api/submitCallTask/v1";
pub const TASK_START: &str = "/callcenter/callTask/api/callTaskStart/v1";
pub const TASK_PAUSE: &str = "/callcenter/callTask/api/callTaskPause/v1";
pub const TASK_END: &str = "/callcenter/callTask/api/callTaskEnd/v1";
pub const TASK_CONCURRENT: &str = "/callcenter/callTask/api/setTaskConcurrent/v1";
pub const TASK_STATUS: &str = "/callcenter/callTask/api/callTaskStatus/v1";
pub const TASK_ADDITIONAL: &str = "/callcenter/callTask/api/callTaskAdditional/v1";
pub const TASK_CALL_LIST: &str = "/callcenter/callTask/api/getCallList/v1";
pub const TASK_COMPLIANCE: &str = "/callcenter/callTask/api/compliance/v1";
pub const TASK_ATTEMPTS: &str = "/callcenter/callTask/api/attempts/v1";

pub const CALLLOG_LIST: &str = "/callcenter/callLog/api/getList/v1";
pub const CALLLOG_BY_RESULT: &str = "/callcenter/callLog/api/getListByResult/v1";

/// Every campaign route with its method.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", GW_AVAILABLE),
    ("POST", GW_ADD),
    ("POST", GW_UPDATE),
    ("GET", GW_LIST),
    ("POST", LIST_IMPORT),
    ("POST", BL_ADD),
    ("POST", BL_REMOVE),
    ("GET", BL_LIST),
    ("POST", TASK_SUBMIT),
    ("POST", TASK_START),
    ("POST", TASK_PAUSE),
    ("POST", TASK_END),
    ("POST", TASK_CONCURRENT),
    ("POST", TASK_STATUS),
    ("POST", TASK_ADDITIONAL),
    ("GET", TASK_CALL_LIST),
    ("GET", TASK_COMPLIANCE),
    ("GET", TASK_ATTEMPTS),
    ("GET", CALLLOG_LIST),
    ("GET", CALLLOG_BY_RESULT),
];

/// Task status codes (seed 004 §10 of the stream: 1 初始化 2 启动 3 暂停 4 结束).
pub const INITIALIZED: i64 = 1;
pub const RUNNING: i64 = 2;
pub const PAUSED: i64 = 3;
pub const ENDED: i64 = 4;

/// `default_config()` of `support/mgmt.rs` with a larger request-body limit (the import route
/// takes up to 100 000 numbers in one request).
pub fn mgmt_config_with_body_limit(bytes: usize) -> String {
    let base = crate::mgmt::default_config();
    let anchor = "timestamp_window_secs = 300\n";
    assert!(
        base.contains(anchor),
        "support/mgmt.rs default_config() changed shape; update campaign_api.rs:\n{base}"
    );
    base.replace(anchor, &format!("{anchor}max_body_bytes = {bytes}\n"))
}

// ------------------------------------------------------------------------------------------
// Parameters
// ------------------------------------------------------------------------------------------

/// An ordered list of form parameters that tests derive variants from (`set`, `without`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn new(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    /// Replaces `key` (or appends it).
    pub fn set(mut self, key: &str, value: &str) -> Params {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(p) => p.1 = value.to_owned(),
            None => self.0.push((key.to_owned(), value.to_owned())),
        }
        self
    }

    /// Drops `key`.
    pub fn without(mut self, key: &str) -> Params {
        self.0.retain(|(k, _)| k != key);
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.0
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

pub fn post(api: &Mgmt, route: &str, p: &Params) -> ApiResp {
    api.post(route, &p.pairs())
}

pub fn get(api: &Mgmt, route: &str, p: &Params) -> ApiResp {
    api.get(route, &p.pairs())
}

/// Sends `p` with the method the route takes.
pub fn call(api: &Mgmt, method: &str, route: &str, p: &Params) -> ApiResp {
    if method == "GET" {
        get(api, route, p)
    } else {
        post(api, route, p)
    }
}

// ------------------------------------------------------------------------------------------
// Assertions on answers
// ------------------------------------------------------------------------------------------

/// Asserts a refusal whose status is one of `statuses` (the contract leaves the choice open,
/// e.g. 400 or 404 for a reference to something that does not exist), with everything
/// `ApiResp::err` checks: JSON envelope, `reqResult.code` == status, a message naming the
/// problem (one of `words`), no data.
pub fn err_in(r: &ApiResp, statuses: &[u16], words: &[&str], ctx: &str) -> String {
    let status = if statuses.contains(&r.status()) {
        r.status()
    } else {
        statuses[0]
    };
    r.err(
        status,
        words,
        &format!("{ctx} (accepted statuses: {statuses:?})"),
    )
}

/// Asserts a clear client error: some 4xx, with the error envelope (for hostile input whose
/// exact status the contract does not fix).
pub fn err_4xx(r: &ApiResp, ctx: &str) -> String {
    let status = if (400..500).contains(&r.status()) {
        r.status()
    } else {
        400
    };
    r.err(status, &[], &format!("{ctx} (any 4xx)"))
}

/// A JSON number, or a string holding an integer (the seed writes some numbers as strings).
pub fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A JSON number or a numeric string, as f64.
pub fn float_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `v[key]` as an integer, or a panic naming the key and the object.
pub fn int(v: &Value, key: &str, ctx: &str) -> i64 {
    v.get(key)
        .and_then(int_of)
        .unwrap_or_else(|| panic!("{ctx}: `{key}` is missing or not an integer in {v}"))
}

pub fn float(v: &Value, key: &str, ctx: &str) -> f64 {
    v.get(key)
        .and_then(float_of)
        .unwrap_or_else(|| panic!("{ctx}: `{key}` is missing or not a number in {v}"))
}

/// A code that may be written as a string or a number ("55" or 55), as a string.
pub fn code_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub fn str_of<'a>(v: &'a Value, key: &str, ctx: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{ctx}: `{key}` is missing or not a string in {v}"))
}

/// `data.items` as a list, or a panic.
pub fn items<'a>(data: &'a Value, ctx: &str) -> &'a Vec<Value> {
    data.get("items")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{ctx}: `items` is missing or not a list in {data}"))
}

// ------------------------------------------------------------------------------------------
// Gateways
// ------------------------------------------------------------------------------------------

pub const ORIGINATION_CALL_ID: &str = "057188880000";

/// The required parameters of `add` plus a caller ID and a concurrency of `expect_count`.
pub fn gateway(code: &str, name: &str, expect_count: u32) -> Params {
    Params::new(&[
        ("gwCode", code),
        ("gwName", name),
        ("registerType", "1"),
        ("realm", "203.0.113.7:5060"),
        ("status", "1"),
        ("returnVisit", "0"),
        ("originationCallId", ORIGINATION_CALL_ID),
        ("expectCount", &expect_count.to_string()),
    ])
}

/// `add` that must succeed: (id, gwCode).
pub fn add_gateway_ok(api: &Mgmt, p: &Params) -> (i64, String) {
    let ctx = format!("gateway add {:?}", p.0);
    let data = post(api, GW_ADD, p).ok(&ctx);
    let id = int(&data, "id", &ctx);
    let code = str_of(&data, "gwCode", &ctx).to_owned();
    if let Some(asked) = p.get("gwCode") {
        assert_eq!(code, asked, "{ctx}: the gwCode asked for is the one given");
    }
    (id, code)
}

/// The whole gateway list (`getList` with `pageSize` 1000): (total, items).
pub fn gateway_list(api: &Mgmt, filters: &[(&str, &str)]) -> (i64, Vec<Value>) {
    let mut p = Params::new(&[("pageNum", "1"), ("pageSize", "1000")]);
    for (k, v) in filters {
        p = p.set(k, v);
    }
    let ctx = format!("gateway getList {:?}", p.0);
    let data = get(api, GW_LIST, &p).ok(&ctx);
    (int(&data, "total", &ctx), items(&data, &ctx).clone())
}

/// `getAvailableList` that must succeed: the list.
pub fn available_gateways(api: &Mgmt) -> Vec<Value> {
    let data = api.get(GW_AVAILABLE, &[]).ok("gateway getAvailableList");
    data.as_array()
        .unwrap_or_else(|| panic!("getAvailableList: data is not a list: {data}"))
        .clone()
}

// ------------------------------------------------------------------------------------------
// Call lists and blacklist
// ------------------------------------------------------------------------------------------

pub fn import(
    api: &Mgmt,
    list: &str,
    numbers: &str,
    dedup: Option<&str>,
    task: Option<&str>,
) -> ApiResp {
    let mut p = Params::new(&[("callListId", list), ("numbers", numbers)]);
    if let Some(t) = dedup {
        p = p.set("deduplicationType", t);
    }
    if let Some(t) = task {
        p = p.set("callTaskCode", t);
    }
    post(api, LIST_IMPORT, &p)
}

/// An import that must succeed: the data, with `callListId` and `accepted` checked.
pub fn import_ok(
    api: &Mgmt,
    list: &str,
    numbers: &str,
    dedup: Option<&str>,
    task: Option<&str>,
    want_accepted: i64,
) -> Value {
    let shown: String = numbers.chars().take(300).collect();
    let ctx = format!(
        "import into {list} (deduplicationType {dedup:?}, callTaskCode {task:?}) of {shown:?}"
    );
    let data = import(api, list, numbers, dedup, task).ok(&ctx);
    assert_eq!(
        data.get("callListId").and_then(Value::as_str),
        Some(list),
        "{ctx}: callListId in {data}"
    );
    assert_eq!(
        int(&data, "accepted", &ctx),
        want_accepted,
        "{ctx}: accepted in {data}"
    );
    assert!(
        data.get("skipped").is_some_and(Value::is_array),
        "{ctx}: `skipped` is not a list in {data}"
    );
    assert!(
        data.get("lastId").and_then(int_of).is_some(),
        "{ctx}: `lastId` is missing or not an integer in {data}"
    );
    data
}

/// `(reason, line)` of every skipped entry of an import answer, sorted.
pub fn skipped(data: &Value, ctx: &str) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = data["skipped"]
        .as_array()
        .unwrap_or_else(|| panic!("{ctx}: no skipped list in {data}"))
        .iter()
        .map(|s| (str_of(s, "reason", ctx).to_owned(), int(s, "line", ctx)))
        .collect();
    out.sort_by_key(|(r, l)| (*l, r.clone()));
    out
}

/// The blacklist's numbers (`getList` with `pageSize` 1000), sorted, and its total.
pub fn blacklist(api: &Mgmt) -> (i64, Vec<String>) {
    let ctx = "blacklist getList";
    let data = api
        .get(BL_LIST, &[("pageNum", "1"), ("pageSize", "1000")])
        .ok(ctx);
    let mut numbers: Vec<String> = items(&data, ctx)
        .iter()
        .map(|i| str_of(i, "number", ctx).to_owned())
        .collect();
    numbers.sort();
    (int(&data, "total", ctx), numbers)
}

pub fn blacklist_add_ok(api: &Mgmt, numbers: &str) -> i64 {
    let ctx = format!("blacklist add {numbers:?}");
    let data = api.post(BL_ADD, &[("numbers", numbers)]).ok(&ctx);
    int(&data, "added", &ctx)
}

pub fn blacklist_remove_ok(api: &Mgmt, numbers: &str) -> i64 {
    let ctx = format!("blacklist remove {numbers:?}");
    let data = api.post(BL_REMOVE, &[("numbers", numbers)]).ok(&ctx);
    int(&data, "removed", &ctx)
}

// ------------------------------------------------------------------------------------------
// Tasks
// ------------------------------------------------------------------------------------------

/// `callGWs` for one gateway.
pub fn gws(code: &str, concurrency: u32) -> String {
    json!([{ "code": code, "concurrency": concurrency }]).to_string()
}

/// Unix ms `ms_from_now` from now, as a string (an accepted `expiredTime` form).
pub fn expires_in(ms_from_now: i64) -> String {
    (now_ms() as i64 + ms_from_now).to_string()
}

/// `yyyy-MM-dd HH:mm:ss` in Asia/Shanghai (UTC+8 all year) for Unix ms `ms`.
pub fn shanghai_datetime(ms: i64) -> String {
    let ts = jiff::Timestamp::from_millisecond(ms + 8 * 3_600_000).expect("a valid timestamp");
    ts.strftime("%Y-%m-%d %H:%M:%S").to_string()
}

/// A valid submitCallTask: scheduleType 1, one gateway, expiring in a day, rate 1.5, in
/// Asia/Shanghai.
pub fn task(
    code: &str,
    project: &str,
    list: &str,
    gw: &str,
    concurrency: u32,
    call_type: &str,
) -> Params {
    Params::new(&[
        ("callTaskCode", code),
        ("scheduleType", "1"),
        ("callType", call_type),
        ("callGWs", &gws(gw, concurrency)),
        ("callListId", list),
        ("expiredTime", &expires_in(24 * 3_600_000)),
        ("projectCode", project),
        ("rate", "1.5"),
        ("timeZone", "Asia/Shanghai"),
    ])
}

/// submitCallTask that must succeed: `totalCnt`.
pub fn submit_ok(api: &Mgmt, p: &Params) -> i64 {
    let ctx = format!("submitCallTask {:?}", p.0);
    let data = post(api, TASK_SUBMIT, p).ok(&ctx);
    assert_eq!(
        data.get("callTaskCode").and_then(Value::as_str),
        p.get("callTaskCode"),
        "{ctx}: callTaskCode in {data}"
    );
    int(&data, "totalCnt", &ctx)
}

/// A POST naming only the task (start, pause, end, status).
pub fn task_call(api: &Mgmt, route: &str, code: &str) -> ApiResp {
    api.post(route, &[("callTaskCode", code)])
}

pub fn start_ok(api: &Mgmt, code: &str) {
    task_call(api, TASK_START, code).ok(&format!("callTaskStart {code}"));
}

pub fn pause_ok(api: &Mgmt, code: &str) {
    task_call(api, TASK_PAUSE, code).ok(&format!("callTaskPause {code}"));
}

pub fn end_ok(api: &Mgmt, code: &str) {
    task_call(api, TASK_END, code).ok(&format!("callTaskEnd {code}"));
}

/// callTaskStatus that must succeed, with every field of the contract present.
pub fn status_ok(api: &Mgmt, code: &str) -> Value {
    let ctx = format!("callTaskStatus {code}");
    let data = task_call(api, TASK_STATUS, code).ok(&ctx);
    for key in [
        "successCount",
        "failCount",
        "missCount",
        "rejectCount",
        "totalCount",
        "runningCount",
        "dialedCount",
        "status",
    ] {
        int(&data, key, &ctx);
    }
    for key in ["rate", "abandonRate24h", "abandonRate30d"] {
        float(&data, key, &ctx);
    }
    data
}

/// The task's status code.
pub fn status_code(api: &Mgmt, code: &str) -> i64 {
    let s = status_ok(api, code);
    int(&s, "status", &format!("callTaskStatus {code}"))
}

/// The whole compliance log of a task, following `afterId` pages of 1000.
pub fn attempts(api: &Mgmt, code: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut after = 0i64;
    loop {
        let ctx = format!("attempts {code} afterId={after}");
        let after_s = after.to_string();
        let data = api
            .get(
                TASK_ATTEMPTS,
                &[
                    ("callTaskCode", code),
                    ("afterId", &after_s),
                    ("limit", "1000"),
                ],
            )
            .ok(&ctx);
        let page = items(&data, &ctx).clone();
        if page.is_empty() {
            return out;
        }
        for row in &page {
            let id = int(row, "id", &ctx);
            assert!(
                id > after,
                "{ctx}: row id {id} not after {after} (rows come in id order): {row}"
            );
            after = id;
        }
        out.extend(page);
        if out.len() > 1_000_000 {
            panic!("{ctx}: more than a million rows: the afterId paging does not advance");
        }
    }
}

/// compliance that must succeed: data.
pub fn compliance_ok(api: &Mgmt, code: &str) -> Value {
    let ctx = format!("compliance {code}");
    let data = api.get(TASK_COMPLIANCE, &[("callTaskCode", code)]).ok(&ctx);
    assert_eq!(
        data.get("callTaskCode").and_then(Value::as_str),
        Some(code),
        "{ctx}: {data}"
    );
    for window in ["last24Hours", "last30Days"] {
        let w = data
            .get(window)
            .unwrap_or_else(|| panic!("{ctx}: no {window} in {data}"));
        int(w, "live", &ctx);
        int(w, "abandoned", &ctx);
        float(w, "rate", &ctx);
    }
    data
}

/// callLog getList for a task (queryTimeType 1, one page of 1000): (total, items).
pub fn call_log(api: &Mgmt, code: &str) -> (i64, Vec<Value>) {
    let ctx = format!("callLog getList {code}");
    let data = api
        .get(
            CALLLOG_LIST,
            &[
                ("queryTimeType", "1"),
                ("callTaskCode", code),
                ("pageNum", "1"),
                ("pageSize", "1000"),
            ],
        )
        .ok(&ctx);
    (int(&data, "total", &ctx), items(&data, &ctx).clone())
}

/// Whether `rate` is `abandoned / live` as a fraction or as a percentage (the contract does
/// not say which; 0 when nothing was live).
pub fn rate_matches(rate: f64, live: i64, abandoned: i64) -> bool {
    if live == 0 {
        return rate == 0.0;
    }
    let r = abandoned as f64 / live as f64;
    (rate - r).abs() < 1e-6 || (rate - 100.0 * r).abs() < 1e-4
}

/// A supervisor subscribed to the project's task-status topic
/// (`/topic/callTaskStatus/{project}`).
pub fn task_status_stream(d: &Daemon, project: &str) -> Stomp {
    let mut s = Stomp::connect(d.listeners.http, Framing::Raw, &supervisor_login())
        .unwrap_or_else(|e| d.fail(&format!("STOMP CONNECT as supervisor: {e}")));
    let topic = format!("/topic/callTaskStatus/{project}");
    if let Err(e) = s.subscribe("task-status", &topic) {
        d.fail(&format!("SUBSCRIBE {topic}: {e}"));
    }
    s
}
