//! The grid platform's calls to us (seed 000 §二 网格化调用端, 000:L727-L1049) end to end: the
//! real daemon on loopback with a real SQLite file, driven over real sockets by hand-written
//! HTTP/1.1, with the scripted FreeSWITCH event socket pushing `callcenter::info` events for the
//! queue list.
//!
//! Expected values are derived from the seed and the config below, by hand: the code type per
//! route (String "200" for the agent list, the extension list and the recording download; int
//! 200 for the rest: 000:L754, L827, L895 vs L936, L969, L1010, L1048), the field names
//! (000:L827-L862, L895-L901, L969-L978, L1010-L1014) and the counts implied by the agents and
//! extensions configured here.

mod common;
#[path = "support/esl_server.rs"]
mod esl_server;
#[path = "support/mgmt.rs"]
mod mgmt;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};
use sha2::Sha256;

use common::{poll_until, register_ok, Daemon, UdpConn};
use esl_server::EslServer;
use mgmt::{http_request, HttpResponse, Mgmt, ACCOUNT, SECRET};

const WAIT: Duration = Duration::from_secs(10);
const ENT: &str = "E3340100";
const AGENTS: &str = "/grid/agent/list";
const EXTENSIONS: &str = "/grid/extension/list";
const CHANGE: &str = "/grid/agent/change";
const QUEUE: &str = "/grid/queue/list";
const GROUPS: &str = "/grid/skill-group/list";
const FALLBACK: &str = "/grid/outbound/fallback-number";
const RECORDING: &str = "/grid/recording/download";
const TOKEN: &str = "grid-bearer-token-0123456789";
const HMAC_KEY: &str = "grid-hmac-key-0123456789abcdef";

/// The directory every test starts from: two agents on extensions 1001 and 1002 (the harness
/// seeds extensions 1001..=1010), two skill groups, one access number.
fn directory() -> String {
    format!(
        r#"
[directory]
ranges = ["8000-8099"]

[presence]
timezone = "Asia/Shanghai"
acw_secs = 0

[management]
allow = ["127.0.0.1/32"]

[[management.accounts]]
account = "{ACCOUNT}"
secret = "{SECRET}"

[[agents]]
agent_id = "A1001"
name = "张三"
department = "客服一部"
org_no = "3340101"
org_name = "杭州供电公司"
extension = "1001"
skill_groups = ["SG1"]

[[agents]]
agent_id = "A1002"
name = "李四"
department = "客服二部"
org_no = "3340102"
org_name = "宁波供电公司"
extension = "1002"
skill_groups = ["SG1", "SG2"]

[[skill_groups]]
id = "SG1"
name = "故障报修"

[[skill_groups]]
id = "SG2"
name = "业务咨询"

[[access_numbers]]
access_num = "95598"
ent_id = "{ENT}"
org_no = "3340100"
org_name = "浙江电力"
"#
    )
}

fn grid_section(extra: &str) -> String {
    format!(
        r#"
[grid_api]
ent_id = "{ENT}"
allow = ["127.0.0.1/32"]
{extra}

[cdr.mapping.queues]
"repair@default" = "SG1"
"#
    )
}

fn start(extra: &str) -> Daemon {
    start_with(extra, "")
}

/// `grid` goes inside `[grid_api]`, `other` (whole sections) after it.
fn start_with(grid: &str, other: &str) -> Daemon {
    Daemon::start(&format!("{}{}{other}", directory(), grid_section(grid)))
}

/// POST with a body and content type.
fn post_as(
    d: &Daemon,
    path: &str,
    ctype: &str,
    body: &[u8],
    extra: &[(String, String)],
) -> HttpResponse {
    let mut h = vec![("Content-Type".to_owned(), ctype.to_owned())];
    h.extend_from_slice(extra);
    http_request(d.listeners.http, "POST", path, &h, body)
        .unwrap_or_else(|e| d.fail(&format!("POST {path}: {e}")))
}

fn post(d: &Daemon, path: &str, body: Value) -> HttpResponse {
    post_as(
        d,
        path,
        "application/json",
        body.to_string().as_bytes(),
        &[],
    )
}

fn json_of(d: &Daemon, r: &HttpResponse) -> Value {
    serde_json::from_str(&r.body)
        .unwrap_or_else(|e| d.fail(&format!("not JSON ({e}): {} {}", r.status, r.body)))
}

/// A success: HTTP 200 and the route's `code` (String or int) and `msg`.
fn ok(d: &Daemon, r: &HttpResponse, code: Value) -> Value {
    let v = json_of(d, r);
    if r.status != 200 || v["code"] != code {
        d.fail(&format!(
            "expected 200 / code {code}: {} {}",
            r.status, r.body
        ));
    }
    v
}

/// A refusal: the HTTP status, the same code in the route's type, a message containing
/// `needle`. Returns the message.
fn err(d: &Daemon, r: &HttpResponse, status: u16, string_code: bool, needle: &str) -> String {
    let v = json_of(d, r);
    let code = if string_code {
        json!(status.to_string())
    } else {
        json!(status)
    };
    let msg = v["msg"].as_str().unwrap_or("").to_owned();
    if r.status != status || v["code"] != code || !msg.contains(needle) {
        d.fail(&format!(
            "expected {status} / code {code} / msg containing {needle:?}: {} {}",
            r.status, r.body
        ));
    }
    assert_eq!(
        v.as_object().unwrap().len(),
        2,
        "error envelope is {{code, msg}}: {v}"
    );
    msg
}

fn agent_ids(v: &Value) -> Vec<String> {
    v["data"]["contextArray"]
        .as_array()
        .expect("contextArray")
        .iter()
        .map(|a| a["agentId"].as_str().unwrap().to_owned())
        .collect()
}

fn sign_in(d: &Daemon, ext: &str) -> UdpConn {
    let mut phone = d.udp_client();
    let contact = format!("<sip:{ext}@{}>", phone.local_addr());
    register_ok(&mut phone, ext, &contact, Some(3600), "REGISTER");
    let api = Mgmt::new(d.listeners.http);
    let mut last = None;
    if poll_until(WAIT, || {
        let r = api.set_work_status(ext, "1");
        let ok = r.status() == 200 && r.code() == Some(1);
        last = Some(r);
        ok.then_some(())
    })
    .is_none()
    {
        d.fail(&format!("setWorkStatus {ext} 1: {last:?}"));
    }
    phone
}

const FIELDS: [&str; 25] = [
    "agentId",
    "agentName",
    "agentState",
    "agentStateTime",
    "agentSignInOutTime",
    "department",
    "orgName",
    "orgNo",
    "sumAnswerCount",
    "sumAnswerSec",
    "curSignInSec",
    "todayCurStateSec",
    "todaySignInSec",
    "todaySignInCount",
    "todaySignOutCount",
    "todaySignOutSec",
    "todayBusyCount",
    "todayDelayCount",
    "todayDelaySec",
    "callOutCount",
    "callOutSec",
    "todayIdleCount",
    "answerCount20",
    "serviceIdList",
    "serviceameList",
];

#[test]
fn agent_list_shapes_filters_and_validation() {
    let mut d = start("");
    let all = json!({"entId": ENT, "agentIds": "'A1001','A1002'", "state": "2"});
    let v = ok(&d, &post(&d, AGENTS, all.clone()), json!("200"));
    let data = &v["data"];
    // Both signed out: 2 agents, 2 signed out, nothing else.
    for (k, want) in [
        ("agentCount", "2"),
        ("agentBusy", "0"),
        ("agentIdle", "0"),
        ("agentTalk", "0"),
        ("agentAcw", "0"),
        ("agentSignout", "2"),
    ] {
        assert_eq!(data[k], want, "{k}: {v}");
    }
    let cti = data["ctiTime"].as_str().unwrap();
    assert_eq!(cti.len(), 19, "yyyy-MM-dd HH:mm:ss: {cti}");
    assert_eq!(agent_ids(&v), ["A1001", "A1002"]);
    let a = &data["contextArray"][1];
    let keys: Vec<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, FIELDS);
    assert!(a.as_object().unwrap().values().all(Value::is_string), "{a}");
    assert_eq!(a["agentName"], "李四");
    assert_eq!(a["agentState"], "0");
    assert_eq!(a["department"], "客服二部");
    assert_eq!(a["orgNo"], "3340102");
    assert_eq!(a["orgName"], "宁波供电公司");
    assert_eq!(a["serviceIdList"], "SG1,SG2");
    assert_eq!(a["serviceameList"], "故障报修,业务咨询");
    assert_eq!(a["todaySignInCount"], "0");
    assert_eq!(a["curSignInSec"], "0");

    // Sign A1001 in (registered phone, then available): idle.
    let _phone = sign_in(&d, "1001");
    let v = ok(&d, &post(&d, AGENTS, all.clone()), json!("200"));
    assert_eq!(v["data"]["agentIdle"], "1");
    assert_eq!(v["data"]["agentSignout"], "1");
    let a = &v["data"]["contextArray"][0];
    assert_eq!(a["agentId"], "A1001");
    assert_eq!(a["agentState"], "2");
    assert_eq!(a["todaySignInCount"], "1");
    assert_eq!(a["agentSignInOutTime"].as_str().unwrap().len(), 19);
    // state 0: signed in now; 1/3: signed in today; agentState filters.
    let q = |extra: Value| {
        let mut b = json!({"entId": ENT, "agentIds": ""});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        ok(&d, &post(&d, AGENTS, b), json!("200"))
    };
    assert_eq!(agent_ids(&q(json!({"state": "0"}))), ["A1001"]);
    assert_eq!(agent_ids(&q(json!({"state": 1}))), ["A1001"]);
    assert_eq!(agent_ids(&q(json!({"state": "3"}))), ["A1001"]);
    assert_eq!(agent_ids(&q(json!({"agentState": "0"}))), ["A1002"]);
    assert_eq!(agent_ids(&q(json!({"agentState": "2"}))), ["A1001"]);
    assert!(agent_ids(&q(json!({"agentState": "3"}))).is_empty());
    // pageNo is the first item's position: item 2 is A1002.
    assert_eq!(
        agent_ids(&q(json!({"pageNo": 2, "pageSize": 1}))),
        ["A1002"]
    );
    assert!(agent_ids(&q(json!({"pageNo": 3, "pageSize": 1}))).is_empty());
    // Unquoted ids and blanks are tolerated; form-urlencoded too.
    let r = post_as(
        &d,
        AGENTS,
        "application/x-www-form-urlencoded",
        format!("entId={ENT}&agentIds=%20A1002%20&state=2").as_bytes(),
        &[],
    );
    assert_eq!(agent_ids(&ok(&d, &r, json!("200"))), ["A1002"]);

    // Validation: each names its parameter, code "400" (a String on this route).
    let bad = |body: Value, needle: &str| {
        err(&d, &post(&d, AGENTS, body), 400, true, needle);
    };
    bad(json!({"agentIds": ""}), "missing parameter entId");
    bad(json!({"entId": "E999", "agentIds": ""}), "entId \"E999\"");
    bad(json!({"entId": ENT}), "missing parameter agentIds");
    let ids101: Vec<String> = (0..101).map(|i| format!("'a{i}'")).collect();
    bad(
        json!({"entId": ENT, "agentIds": ids101.join(",")}),
        "more than 100",
    );
    let ids100: Vec<String> = (0..100).map(|i| format!("'a{i}'")).collect();
    let v = ok(
        &d,
        &post(
            &d,
            AGENTS,
            json!({"entId": ENT, "agentIds": ids100.join(",")}),
        ),
        json!("200"),
    );
    assert_eq!(v["data"]["agentCount"], "0");
    bad(
        json!({"entId": ENT, "agentIds": "'A1001"}),
        "unbalanced quote",
    );
    bad(
        json!({"entId": ENT, "agentIds": "A1001,,A1002"}),
        "item 2 is empty",
    );
    bad(
        json!({"entId": ENT, "agentIds": "", "state": "9"}),
        "state must be 0, 1, 2 or 3",
    );
    bad(
        json!({"entId": ENT, "agentIds": "", "agentState": "5"}),
        "agentState must be",
    );
    bad(json!({"entId": ENT, "agentIds": "", "pageNo": 0}), "pageNo");
    bad(
        json!({"entId": ENT, "agentIds": "", "pageSize": 100000}),
        "pageSize must be between 1 and 1000",
    );
    bad(
        json!({"entId": ENT, "agentIds": ["A1001"]}),
        "parameter agentIds must be a string, got an array",
    );
    bad(
        json!({"entId": ENT, "agentIds": "", "pageNo": "one"}),
        "parameter pageNo must be an integer",
    );
    let r = post_as(&d, AGENTS, "application/json", b"{\"entId\": ", &[]);
    err(&d, &r, 400, true, "body is not valid JSON");
    let r = post_as(&d, AGENTS, "application/json", b"[1,2]", &[]);
    err(&d, &r, 400, true, "body must be a JSON object");
    let r = post_as(&d, AGENTS, "multipart/form-data; boundary=x", b"--x--", &[]);
    err(&d, &r, 415, true, "Content-Type");
    let huge = vec![b'a'; 200_000];
    let r = post_as(&d, AGENTS, "application/x-www-form-urlencoded", &huge, &[]);
    err(&d, &r, 413, true, "request body exceeds 65536 bytes");
    let r = http_request(d.listeners.http, "GET", AGENTS, &[], b"").unwrap();
    err(&d, &r, 405, true, "expects POST");

    let count = |result: &str| {
        d.metric(
            "gridedge_api_requests_total",
            &["route=\"grid_agent_list\"", &format!("result=\"{result}\"")],
        )
        .unwrap_or(0.0)
    };
    // 12 answered above (2 full lists, 8 filters, the form body, the 100 ids), 14 refused
    // for a parameter (from the missing entId to the JSON array).
    assert_eq!(count("ok"), 12.0, "{}", d.metrics());
    assert_eq!(count("bad_param"), 14.0, "{}", d.metrics());
    assert_eq!(count("too_large"), 1.0);
    d.assert_alive("hostile agent-list requests");
}

#[test]
fn extensions_skill_groups_recording_and_agent_changes() {
    let mut d = start("");
    // Extensions 1001..=1010, built-in ("01"); 1001 and 1002 carry their agents.
    let body = json!({"pageNo": 1, "pageSize": 3});
    let v = ok(&d, &post(&d, EXTENSIONS, body), json!("200"));
    assert_eq!(v.as_object().unwrap().len(), 3, "{v}");
    assert_eq!(
        v["list"],
        json!([
            {"telephoneNumber": "1001", "telephoneType": "01", "agentId": "A1001", "agentName": "张三"},
            {"telephoneNumber": "1002", "telephoneType": "01", "agentId": "A1002", "agentName": "李四"},
            {"telephoneNumber": "1003", "telephoneType": "01", "agentId": "", "agentName": ""},
        ])
    );
    let v = ok(
        &d,
        &post(&d, EXTENSIONS, json!({"pageNo": "4", "pageSize": "3"})),
        json!("200"),
    );
    assert_eq!(
        v["list"].as_array().unwrap().len(),
        1,
        "page 4 of 10 by 3: {v}"
    );
    assert_eq!(v["list"][0]["telephoneNumber"], "1010");
    let v = ok(
        &d,
        &post(
            &d,
            EXTENSIONS,
            json!({"telephoneNumber": "1005", "pageNo": 1, "pageSize": 10}),
        ),
        json!("200"),
    );
    assert_eq!(v["list"].as_array().unwrap().len(), 1);
    let v = ok(
        &d,
        &post(
            &d,
            EXTENSIONS,
            json!({"telephoneType": "02", "pageNo": 1, "pageSize": 10}),
        ),
        json!("200"),
    );
    assert_eq!(v["list"], json!([]));
    err(
        &d,
        &post(&d, EXTENSIONS, json!({"pageSize": 10})),
        400,
        true,
        "missing parameter pageNo",
    );
    err(
        &d,
        &post(&d, EXTENSIONS, json!({"pageNo": 1})),
        400,
        true,
        "missing parameter pageSize",
    );
    err(
        &d,
        &post(
            &d,
            EXTENSIONS,
            json!({"pageNo": 1, "pageSize": 1, "telephoneType": "1"}),
        ),
        400,
        true,
        "telephoneType must be 01",
    );

    // Skill groups: int code.
    let v = ok(&d, &post(&d, GROUPS, json!({})), json!(200));
    assert_eq!(
        v["list"],
        json!([{"serviceId": "SG1", "serviceName": "故障报修"}, {"serviceId": "SG2", "serviceName": "业务咨询"}])
    );
    let v = ok(
        &d,
        &post(&d, GROUPS, json!({"serviceId": "SG2"})),
        json!(200),
    );
    assert_eq!(
        v["list"],
        json!([{"serviceId": "SG2", "serviceName": "业务咨询"}])
    );
    err(
        &d,
        &post(&d, GROUPS, json!({"serviceId": "S G"})),
        400,
        false,
        "serviceId must be",
    );

    // Recording: no index on this node.
    let r = post(
        &d,
        RECORDING,
        json!({"recordId": "8099369908841762569_1", "startTime": "202511"}),
    );
    err(
        &d,
        &r,
        404,
        true,
        "recording 8099369908841762569_1 not found (recording is not enabled on this node)",
    );
    assert_eq!(r.header("code"), Some("404"));
    err(
        &d,
        &post(&d, RECORDING, json!({})),
        400,
        true,
        "missing parameter recordId",
    );
    err(
        &d,
        &post(&d, RECORDING, json!({"recordId": "../../etc/passwd"})),
        400,
        true,
        "recordId must be",
    );

    // Agent changes (int code), visible in the agent list and the extension list.
    let change = |b: Value| post(&d, CHANGE, b);
    ok(
        &d,
        &change(
            json!({"changeType": "01", "agentId": "A2000", "agentName": "王五", "telephoneNumber": "1003"}),
        ),
        json!(200),
    );
    err(
        &d,
        &change(json!({"changeType": "01", "agentId": "A2000"})),
        409,
        false,
        "agent A2000 already exists",
    );
    err(
        &d,
        &change(json!({"changeType": "01", "agentId": "A2001", "telephoneNumber": "1001"})),
        409,
        false,
        "telephoneNumber 1001 is already used by agent A1001",
    );
    err(
        &d,
        &change(json!({"changeType": "01", "agentId": "A2001", "telephoneNumber": "7777"})),
        404,
        false,
        "telephoneNumber 7777 is not an extension",
    );
    err(
        &d,
        &change(json!({"changeType": "02", "agentId": "A9999"})),
        404,
        false,
        "unknown agent A9999",
    );
    err(
        &d,
        &change(json!({"changeType": "03", "agentId": "A9999", "agentName": "x"})),
        404,
        false,
        "unknown agent A9999",
    );
    err(
        &d,
        &change(json!({"changeType": "03", "agentId": "A2000"})),
        400,
        false,
        "nothing to change",
    );
    err(
        &d,
        &change(json!({"changeType": "1", "agentId": "A2000"})),
        400,
        false,
        "changeType must be 01",
    );
    err(
        &d,
        &change(json!({"agentId": "A2000"})),
        400,
        false,
        "missing parameter changeType",
    );
    err(
        &d,
        &change(json!({"changeType": "01", "agentId": "A 1"})),
        400,
        false,
        "agentId must be",
    );
    let all = json!({"entId": ENT, "agentIds": ""});
    let v = ok(&d, &post(&d, AGENTS, all.clone()), json!("200"));
    assert_eq!(agent_ids(&v), ["A1001", "A1002", "A2000"]);
    let a = &v["data"]["contextArray"][2];
    assert_eq!(a["agentName"], "王五");
    // "default root department" for an added agent (000:L927).
    assert_eq!(a["department"], "root");
    ok(
        &d,
        &change(json!({"changeType": "03", "agentId": "A2000", "agentName": "王六"})),
        json!(200),
    );
    let v = ok(
        &d,
        &post(
            &d,
            EXTENSIONS,
            json!({"telephoneNumber": "1003", "pageNo": 1, "pageSize": 1}),
        ),
        json!("200"),
    );
    assert_eq!(v["list"][0]["agentId"], "A2000");
    assert_eq!(v["list"][0]["agentName"], "王六");
    // Delete a config agent: it stays deleted across a restart.
    ok(
        &d,
        &change(json!({"changeType": "02", "agentId": "A1002"})),
        json!(200),
    );
    d.restart();
    let v = ok(&d, &post(&d, AGENTS, all), json!("200"));
    assert_eq!(agent_ids(&v), ["A1001", "A2000"]);
    assert_eq!(v["data"]["contextArray"][1]["agentName"], "王六");
}

fn db(d: &Daemon) -> Connection {
    Connection::open_with_flags(
        d.state_dir.join("gridedge.db"),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap_or_else(|e| d.fail(&format!("open the database: {e}")))
}

fn fallback_rows(d: &Daemon) -> Vec<(String, String, String)> {
    let c = db(d);
    let mut s = c
        .prepare(
            "SELECT org_no, service_id, outbound_number FROM grid_fallback_numbers ORDER BY 1, 2",
        )
        .unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn fallback_numbers_are_durable_and_validated() {
    let mut d = start("");
    let push = |b: Value| post(&d, FALLBACK, b);
    ok(
        &d,
        &push(json!({"orgNo": "3340101", "outboundNumber": "057187000000"})),
        json!(200),
    );
    ok(
        &d,
        &push(json!({"orgNo": "3340101", "serviceId": "SG1", "outboundNumber": "057187000001"})),
        json!(200),
    );
    // Upsert: the same (orgNo, serviceId) replaces its number.
    let r = post_as(
        &d,
        FALLBACK,
        "application/x-www-form-urlencoded",
        b"orgNo=3340101&serviceId=SG1&outboundNumber=%2B8657187000002",
        &[],
    );
    ok(&d, &r, json!(200));
    err(
        &d,
        &push(json!({"orgNo": "3340101", "outboundNumber": "12"})),
        400,
        false,
        "outboundNumber must be a phone number",
    );
    err(
        &d,
        &push(json!({"orgNo": "3340101", "outboundNumber": "0571-8700"})),
        400,
        false,
        "outboundNumber must be a phone number",
    );
    err(
        &d,
        &push(json!({"orgNo": "3340101", "outboundNumber": true})),
        400,
        false,
        "parameter outboundNumber must be a string, got a boolean",
    );
    err(
        &d,
        &push(json!({"outboundNumber": "057187000000"})),
        400,
        false,
        "missing parameter orgNo",
    );
    err(
        &d,
        &push(json!({"orgNo": "3340101"})),
        400,
        false,
        "missing parameter outboundNumber",
    );
    err(
        &d,
        &push(json!({"orgNo": {"x": 1}, "outboundNumber": "057187000000"})),
        400,
        false,
        "parameter orgNo must be a string, got an object",
    );
    let want = vec![
        (
            "3340101".to_owned(),
            String::new(),
            "057187000000".to_owned(),
        ),
        (
            "3340101".to_owned(),
            "SG1".to_owned(),
            "+8657187000002".to_owned(),
        ),
    ];
    // Committed before the 200: a kill -9 right after loses nothing.
    d.kill9();
    assert_eq!(fallback_rows(&d), want);
    d.restart();
    assert_eq!(fallback_rows(&d), want);
    ok(
        &d,
        &post(
            &d,
            FALLBACK,
            json!({"orgNo": "3340101", "outboundNumber": "057187000009"}),
        ),
        json!(200),
    );
    assert_eq!(fallback_rows(&d)[0].2, "057187000009");
    assert_eq!(fallback_rows(&d).len(), 2);
}

fn bearer(t: &str) -> Vec<(String, String)> {
    vec![("Authorization".to_owned(), format!("Bearer {t}"))]
}

#[test]
fn bearer_authentication() {
    let d = start(&format!("auth = \"bearer\"\ntoken = \"{TOKEN}\""));
    let body = br#"{"serviceId": "SG1"}"#;
    let r = post_as(&d, GROUPS, "application/json", body, &bearer(TOKEN));
    ok(&d, &r, json!(200));
    let r = post_as(
        &d,
        GROUPS,
        "application/json",
        body,
        &bearer("grid-bearer-token-0123456780"),
    );
    err(&d, &r, 401, false, "invalid bearer token");
    let r = post_as(&d, GROUPS, "application/json", body, &[]);
    err(&d, &r, 401, false, "missing Authorization header");
    let r = post_as(
        &d,
        AGENTS,
        "application/json",
        body,
        &[("Authorization".into(), format!("Basic {TOKEN}"))],
    );
    err(&d, &r, 401, true, "Authorization must be");
    assert!(!d.logs().contains(TOKEN), "the token reached the logs");
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hmac_headers(ts: u64, path: &str, body: &[u8], key: &str) -> Vec<(String, String)> {
    let ts = ts.to_string();
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).unwrap();
    m.update(format!("{ts}\nPOST\n{path}\n").as_bytes());
    m.update(body);
    vec![
        ("X-Grid-Timestamp".to_owned(), ts),
        (
            "X-Grid-Signature".to_owned(),
            hex::encode(m.finalize().into_bytes()),
        ),
    ]
}

#[test]
fn hmac_authentication() {
    let d = start(&format!("auth = \"hmac\"\nhmac_secret = \"{HMAC_KEY}\""));
    let body = br#"{"serviceId": "SG1"}"#;
    let now = unix_secs();
    let good = hmac_headers(now, GROUPS, body, HMAC_KEY);
    let v = ok(
        &d,
        &post_as(&d, GROUPS, "application/json", body, &good),
        json!(200),
    );
    assert_eq!(v["list"][0]["serviceId"], "SG1");
    // The same signed request again: a replay.
    let r = post_as(&d, GROUPS, "application/json", body, &good);
    err(&d, &r, 401, false, "replay");
    // Outside ±300 s.
    let stale = hmac_headers(now - 400, GROUPS, body, HMAC_KEY);
    err(
        &d,
        &post_as(&d, GROUPS, "application/json", body, &stale),
        401,
        false,
        "more than 300 s",
    );
    // Wrong key; signed for another path; body changed after signing.
    let wrong = hmac_headers(now, GROUPS, body, "another-key-0123456789abcdef");
    err(
        &d,
        &post_as(&d, GROUPS, "application/json", body, &wrong),
        401,
        false,
        "invalid X-Grid-Signature",
    );
    let other = hmac_headers(now + 1, QUEUE, body, HMAC_KEY);
    err(
        &d,
        &post_as(&d, GROUPS, "application/json", body, &other),
        401,
        false,
        "invalid X-Grid-Signature",
    );
    let signed = hmac_headers(now + 2, GROUPS, body, HMAC_KEY);
    err(
        &d,
        &post_as(
            &d,
            GROUPS,
            "application/json",
            br#"{"serviceId": "SG2"}"#,
            &signed,
        ),
        401,
        false,
        "invalid X-Grid-Signature",
    );
    err(
        &d,
        &post_as(&d, GROUPS, "application/json", body, &[]),
        401,
        false,
        "missing X-Grid-Timestamp header",
    );
    // A fresh signature on the agent list works, with its String code.
    let b = format!(r#"{{"entId": "{ENT}", "agentIds": ""}}"#);
    let h = hmac_headers(now + 3, AGENTS, b.as_bytes(), HMAC_KEY);
    ok(
        &d,
        &post_as(&d, AGENTS, "application/json", b.as_bytes(), &h),
        json!("200"),
    );
    assert!(!d.logs().contains(HMAC_KEY), "the key reached the logs");
    assert_eq!(
        d.metric(
            "gridedge_api_requests_total",
            &["route=\"grid_skill_group_list\"", "result=\"replay\""]
        ),
        Some(1.0)
    );
}

#[test]
fn sources_outside_the_allow_list_are_refused_before_anything_else() {
    let d = Daemon::start(&format!(
        "{}\n[grid_api]\nent_id = \"{ENT}\"\nallow = [\"10.9.9.0/24\"]\n",
        directory()
    ));
    err(
        &d,
        &post(&d, AGENTS, json!({"entId": ENT, "agentIds": ""})),
        403,
        true,
        "127.0.0.1 is not allowed",
    );
    err(
        &d,
        &post(&d, QUEUE, json!({})),
        403,
        false,
        "is not allowed",
    );
    // Refused before the body is read or the change applied.
    err(
        &d,
        &post(&d, CHANGE, json!({"changeType": "02", "agentId": "A1001"})),
        403,
        false,
        "not allowed",
    );
    let huge = vec![b'a'; 200_000];
    let r = post_as(
        &d,
        FALLBACK,
        "application/x-www-form-urlencoded",
        &huge,
        &[],
    );
    assert_eq!(r.status, 403, "{}", r.body);
}

// ---- the queue list, fed by the scripted event socket -----------------------------------

struct Switch {
    server: EslServer,
    rt: tokio::runtime::Runtime,
}

impl Switch {
    fn start() -> Switch {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(EslServer::start("e2e-ClueCon"));
        Switch { server, rt }
    }

    fn push(&self, d: &Daemon, headers: Vec<(String, String)>) {
        if !self.rt.block_on(self.server.push_event(&headers)) {
            d.fail("no event socket connection to push on");
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// A `callcenter::info` member event as mod_callcenter fires it on the member's channel.
fn member_event(
    action: &str,
    queue: &str,
    session: &str,
    caller: &str,
    callee: &str,
    at_us: u64,
) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = [
        ("Event-Name", "CUSTOM"),
        ("Event-Subclass", "callcenter::info"),
        ("Core-UUID", esl_server::CORE_UUID),
        ("CC-Queue", queue),
        ("CC-Action", action),
        ("CC-Member-UUID", "453324f8-3424-4322-4242362fd23d"),
        ("CC-Member-Session-UUID", session),
        ("CC-Member-CID-Name", "customer"),
        ("CC-Member-CID-Number", caller),
        ("Caller-Caller-ID-Number", caller),
        ("Caller-Destination-Number", callee),
        ("Unique-ID", session),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    h.push(("Event-Date-Timestamp".into(), at_us.to_string()));
    if action == "member-queue-end" {
        h.push(("CC-Cause".into(), "Cancel".into()));
        h.push(("CC-Cancel-Reason".into(), "BREAK_OUT".into()));
    }
    h
}

fn queue_count(d: &Daemon, body: Value) -> (u64, Value) {
    let v = ok(d, &post(d, QUEUE, body), json!(200));
    (v["count"].as_u64().unwrap_or(u64::MAX), v)
}

fn wait_count(d: &Daemon, body: Value, want: u64) -> Value {
    let mut last = Value::Null;
    let got = poll_until(WAIT, || {
        let (n, v) = queue_count(d, body.clone());
        last = v;
        (n == want).then_some(())
    });
    if got.is_none() {
        d.fail(&format!("queue count never became {want}: {last}"));
    }
    last
}

#[test]
fn queue_list_follows_callcenter_events() {
    let sw = Switch::start();
    let d = start_with(
        "",
        &format!(
            "\n[esl]\nenabled = true\naddress = \"{}\"\npassword = \"e2e-ClueCon\"\nreconnect_min_ms = 20\nreconnect_max_ms = 200\n",
            sw.server.addr()
        ),
    );
    // Connected, subscribed, resynced (the resync would clear members pushed before it).
    let connected = poll_until(WAIT, || {
        (d.metric("gridedge_esl_resyncs_total", &["result=\"ok\""])
            .unwrap_or(0.0)
            >= 1.0)
            .then_some(())
    });
    if connected.is_none() {
        d.fail("the daemon did not connect to the scripted event socket");
    }
    let (n, v) = queue_count(&d, json!({}));
    assert_eq!((n, &v["queueList"]), (0, &json!([])));
    assert_eq!(v["msg"], "success");

    let t0 = now_us() - 42_000_000;
    sw.push(
        &d,
        member_event(
            "member-queue-start",
            "repair@default",
            "m-1",
            "13900000001",
            "95598",
            t0,
        ),
    );
    sw.push(
        &d,
        member_event(
            "member-queue-start",
            "support@default",
            "m-2",
            "13900000002",
            "4000100",
            t0 + 10_000_000,
        ),
    );
    let v = wait_count(&d, json!({}), 2);
    let first = &v["queueList"][0];
    assert_eq!(first["callerNum"], "13900000001");
    assert_eq!(first["calleeNum"], "95598");
    // repair@default → SG1 by cdr.mapping.queues (the CDR builder's table).
    assert_eq!(first["serviceName"], "故障报修");
    // The access number 95598 belongs to org 3340100.
    assert_eq!(first["orgNo"], "3340100");
    assert_eq!(first["orgName"], "浙江电力");
    let dur: u64 = first["queueDur"].as_str().unwrap().parse().unwrap();
    assert!((42..=52).contains(&dur), "queueDur {dur}");
    let second = &v["queueList"][1];
    // support@default maps to no skill group: its own name, no org.
    assert_eq!(second["serviceName"], "support");
    assert_eq!(
        (second["orgNo"].as_str(), second["orgName"].as_str()),
        (Some(""), Some(""))
    );
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "callerNum",
            "calleeNum",
            "serviceName",
            "queueDur",
            "orgNo",
            "orgName"
        ]
    );
    assert!(first.as_object().unwrap().values().all(Value::is_string));

    // Filter and paging.
    let v = ok(
        &d,
        &post(&d, QUEUE, json!({"serviceId": "SG1"})),
        json!(200),
    );
    assert_eq!(v["count"], 1);
    let v = ok(
        &d,
        &post(&d, QUEUE, json!({"pageNo": 2, "pageSize": 1})),
        json!(200),
    );
    assert_eq!(v["count"], 2);
    assert_eq!(v["queueList"][0]["callerNum"], "13900000002");
    err(
        &d,
        &post(&d, QUEUE, json!({"pageNo": -1})),
        400,
        false,
        "pageNo",
    );
    err(
        &d,
        &post(&d, QUEUE, json!({"pageSize": 0})),
        400,
        false,
        "pageSize must be between",
    );
    assert_eq!(d.metric("gridedge_grid_queue_calls", &[]), Some(2.0));

    // A repeated start is the same call; an end for a stranger changes nothing; an end
    // removes its member.
    sw.push(
        &d,
        member_event(
            "member-queue-start",
            "repair@default",
            "m-1",
            "13900000001",
            "95598",
            now_us(),
        ),
    );
    sw.push(
        &d,
        member_event(
            "member-queue-end",
            "repair@default",
            "m-unknown",
            "1",
            "2",
            now_us(),
        ),
    );
    sw.push(
        &d,
        member_event(
            "member-queue-end",
            "repair@default",
            "m-1",
            "13900000001",
            "95598",
            now_us(),
        ),
    );
    let v = wait_count(&d, json!({}), 1);
    assert_eq!(v["queueList"][0]["callerNum"], "13900000002");
    let dup = poll_until(WAIT, || {
        (d.metric("gridedge_grid_queue_events_total", &["change=\"unknown\""]) == Some(1.0))
            .then_some(())
    });
    assert!(dup.is_some(), "{}", d.metrics());
    assert_eq!(
        d.metric(
            "gridedge_grid_queue_events_total",
            &["change=\"duplicate\""]
        ),
        Some(1.0)
    );
    assert_eq!(d.metric("gridedge_grid_queue_calls", &[]), Some(1.0));
}
