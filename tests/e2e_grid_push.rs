//! Every push towards the grid platform (seed 000 §网格化服务端) end to end, except the CDR
//! retry machinery (`e2e_outbox.rs`, `crash_outbox.rs`): the real daemon on loopback, its push
//! targets pointed at a real HTTP/1.1 sink (`support/grid_sink.rs`) that records every request.
//!
//! Expected values come from the contract, by hand:
//! * 坐席事件(考勤)推送, seed 000 L454-495 (digest §A.2.2, §C.2): the 16 keys, every value a
//!   String, `event` 0 签出 / 1 签入, `etime`/`lastTime` `YYYYMMDDHHMMSS`, `lastDuration` "0" in
//!   heartbeats, `port` deleted;
//! * 坐席信息变更推送, L534-568: 8 keys, `skgroups` an array of `{skgroupNo, skgroupName}`;
//! * 网格接入号信息变更推送, L574-610: 10 keys, `girdNo` (sic), `skgroups` a String;
//! * 呼叫中心明细数据推送, L2904-3043: `{entId, signStr, timestamp, calldata}`,
//!   `signStr = MD5(timestamp|entId|sessionId)` (upper-case hex, as both examples);
//! * `config/gridedge.toml`'s `[grid]`/`[grid.push.*]`/`[outbox]` documentation.
//!
//! Nothing sleeps for a fixed time: every wait polls with a deadline; "nothing arrives" is a
//! poll over a window that must come back empty.

mod common;
#[path = "support/grid_sink.rs"]
mod grid_sink;
#[path = "support/mgmt.rs"]
mod mgmt;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use md5::{Digest, Md5};
use serde_json::{json, Value};

use common::*;
use grid_sink::{GridSink, Mode, Request};
use mgmt::{http_request, now_ms, pct, HttpResponse, Mgmt};

const ENT: &str = "E3340100";
/// Longest wait for a push that is due.
const PUSH_WAIT: Duration = Duration::from_secs(15);
/// Window over which "nothing more arrives" is checked (several sync/heartbeat ticks of 1 s).
const QUIET: Duration = Duration::from_secs(3);
const CDR_PATH: &str = "/freeswitch/cdr";

// ------------------------------------------------------------------------------------------
// Helpers: config, time, hashing
// ------------------------------------------------------------------------------------------

/// `[grid]` with a one-second sync, plus `[grid.push.<name>]` enabled towards the sink for
/// every name in `on`.
fn grid_config(sink: &GridSink, on: &[&str], heartbeat_secs: u64) -> String {
    let mut s = format!(
        "\n[grid]\nent_id = \"{ENT}\"\nsync_secs = 1\n\n[grid.agent_event]\nheartbeat_secs = {heartbeat_secs}\n"
    );
    for name in on {
        s.push_str(&format!(
            "\n[grid.push.{name}]\nenabled = true\nurl = \"{}\"\ntimeout_ms = 3000\n",
            sink.url(name)
        ));
    }
    s
}

/// Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `yyyyMMddHHmmss` of a Unix ms instant in Asia/Shanghai (UTC+8 all year, no DST since 1991).
fn shanghai(ms: u64) -> String {
    let secs = (ms / 1000) as i64 + 8 * 3600;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// Unix seconds of a `yyyyMMddHHmmss` in Asia/Shanghai (for differences only).
fn shanghai_secs(s: &str) -> i64 {
    assert!(is_stamp(s), "not yyyyMMddHHmmss: {s:?}");
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(4, 6), n(6, 8));
    // days_from_civil
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(8, 10) * 3600 + n(10, 12) * 60 + n(12, 14) - 8 * 3600
}

/// 14 digits forming a plausible date-time.
fn is_stamp(s: &str) -> bool {
    s.len() == 14
        && s.bytes().all(|b| b.is_ascii_digit())
        && (1..=12).contains(&s[4..6].parse::<u32>().unwrap_or(0))
        && (1..=31).contains(&s[6..8].parse::<u32>().unwrap_or(0))
        && s[8..10].parse::<u32>().unwrap_or(99) < 24
        && s[10..12].parse::<u32>().unwrap_or(99) < 60
        && s[12..14].parse::<u32>().unwrap_or(99) < 60
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The contract's signature (L2946-2948), computed here: upper-case hex MD5 of
/// `timestamp|entId|sessionId`.
fn sign_str(timestamp: &str, ent_id: &str, session_id: &str) -> String {
    let mut h = Md5::new();
    h.update(format!("{timestamp}|{ent_id}|{session_id}").as_bytes());
    h.finalize().iter().map(|b| format!("{b:02X}")).collect()
}

/// The keys of a JSON object, as a set.
fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn key_set(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Asserts every value of the object (except `except`) is a JSON string.
fn assert_all_strings(v: &Value, except: &[&str], ctx: &str) {
    for (k, val) in v.as_object().unwrap() {
        if except.contains(&k.as_str()) {
            continue;
        }
        assert!(val.is_string(), "{ctx}: {k} is not a String: {val} in {v}");
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string {k:?} in {v}"))
}

/// Every request was a POST with the contract's content type.
fn assert_posts(reqs: &[Request], ctx: &str) {
    for r in reqs {
        assert_eq!(r.method, "POST", "{ctx}: method of {}", r.path);
        assert_eq!(
            r.header("content-type"),
            Some("application/json; charset=utf-8"),
            "{ctx}: Content-Type of {}",
            r.path
        );
    }
}

/// Polls over `window` that no more than `n` requests reach `/<name>`; returns what arrived.
fn assert_quiet(d: &Daemon, sink: &GridSink, name: &str, n: usize, window: Duration, ctx: &str) {
    if let Some(extra) = sink.wait_for(name, window, |r| (r.len() > n).then(|| r[n..].to_vec())) {
        d.fail(&format!(
            "{ctx}: {} unexpected push(es) to /{name}: {:?}\nall:\n{}",
            extra.len(),
            extra.iter().map(|r| r.json.clone()).collect::<Vec<_>>(),
            sink.dump()
        ));
    }
}

fn wait_n(d: &Daemon, sink: &GridSink, name: &str, n: usize, ctx: &str) -> Vec<Request> {
    sink.wait_count(name, n, PUSH_WAIT).unwrap_or_else(|| {
        d.fail(&format!(
            "{ctx}: want {n} push(es) to /{name} within {PUSH_WAIT:?}; sink has:\n{}",
            sink.dump()
        ))
    })
}

// ------------------------------------------------------------------------------------------
// 1. Agent events (坐席事件/考勤推送)
// ------------------------------------------------------------------------------------------

/// The contract's keys (L472-487; the unnamed 年月 row as `ym`, `port` deleted).
const AGENT_EVENT_KEYS: [&str; 16] = [
    "steamNumber",
    "ym",
    "ssid",
    "agentId",
    "agentName",
    "callId",
    "event",
    "esate",
    "estateName",
    "etime",
    "lastState",
    "lastTime",
    "lastDuration",
    "inOutDuration",
    "ip",
    "mac",
];

fn register_udp(d: &Daemon, user: &str, password: &str) -> UdpConn {
    let mut c = d.udp_client();
    let contact = format!("<sip:{user}@{}>", c.local_addr());
    let mut uac = Uac::new(user);
    let opts = RegisterOpts::new(password, Some(contact));
    let r = register(&mut c, &mut uac, &opts, &format!("REGISTER {user}")).response;
    if r.code != 200 {
        d.fail(&format!("REGISTER {user}:\n{}", r.raw));
    }
    c
}

fn num(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

/// A heartbeat reports the current state: `esate` == `lastState`, `lastDuration` "0".
fn is_heartbeat(v: &Value) -> bool {
    v["esate"] == v["lastState"] && v["lastDuration"] == "0" && v["inOutDuration"] == ""
}

#[test]
fn agent_events_follow_sign_in_state_changes_and_sign_out() {
    let sink = GridSink::start();
    let config = format!(
        r#"{mgmt}
[[agents]]
agent_id = "A8000"
name = "张三"
department = "客服一部"
org_no = "3340101"
org_name = "杭州供电公司"
extension = "8000"
skill_groups = []
{grid}
[grid.agent_event.macs]
"8000" = "AA-BB-CC-DD-EE-01"
"#,
        mgmt = mgmt::default_config(),
        grid = grid_config(&sink, &["agent_event"], 1),
    );
    let d = Daemon::start(&config);
    let api = Mgmt::new(d.listeners.http);
    let project = "P-grid";
    let cert = api.create_ok(project, 1);
    let (user, pw) = api.claim(&cert);
    assert_eq!(user, "8000");
    let _phone = register_udp(&d, &user, &pw);
    poll_until(PUSH_WAIT, || {
        (num(&api.extension(project, &user), "status") == Some(1)).then_some(())
    })
    .unwrap_or_else(|| d.fail("8000 never showed as registered"));
    // A registration alone is not an attendance event.
    assert_quiet(
        &d,
        &sink,
        "agent_event",
        0,
        Duration::from_millis(1500),
        "registered only",
    );

    // Sign in (workStatus 0 = signed in, not ready): two transitions, 0 -> 1 -> 3.
    let t_in0 = now_ms();
    api.set_work_status(&user, "0").ok("setWorkStatus 0");
    let t_in1 = now_ms();
    let transitions = |r: &[Request]| -> Vec<Value> {
        r.iter()
            .map(|q| q.body_json().clone())
            .filter(|v| !is_heartbeat(v))
            .collect()
    };
    let wait_transitions = |n: usize, ctx: &str| -> Vec<Value> {
        sink.wait_for("agent_event", PUSH_WAIT, |r| {
            let t = transitions(r);
            (t.len() >= n).then_some(t)
        })
        .unwrap_or_else(|| {
            d.fail(&format!(
                "{ctx}: want {n} transitions; sink has:\n{}",
                sink.dump()
            ))
        })
    };
    wait_transitions(2, "sign-in");
    // Idle (workStatus 1), and stay there until a heartbeat reports it.
    api.set_work_status(&user, "1").ok("setWorkStatus 1");
    let idle_at = shanghai_secs(s(&wait_transitions(3, "idle")[2], "etime"));
    // A heartbeat stamped two whole seconds after the idle transition: the agent has been idle
    // for more than a second by then.
    let hb = sink
        .wait_for("agent_event", PUSH_WAIT, |r| {
            r.iter().map(|q| q.body_json().clone()).find(|v| {
                is_heartbeat(v) && v["esate"] == "2" && shanghai_secs(s(v, "etime")) >= idle_at + 2
            })
        })
        .unwrap_or_else(|| d.fail(&format!("no heartbeat while idle:\n{}", sink.dump())));
    // Busy again, then sign out (setExtensionStatus -1 disables the extension: signed out).
    api.set_work_status(&user, "0").ok("setWorkStatus 0 (busy)");
    wait_transitions(4, "busy");
    let t_out0 = now_ms();
    api.set_extension_status(&user, "-1")
        .ok("setExtensionStatus -1 (sign out)");
    let t_out1 = now_ms();
    let all_t = wait_transitions(5, "sign-out");
    let n_after_out = sink.to("agent_event").len();
    // No heartbeat (nor anything else) for a signed-out agent.
    assert_quiet(
        &d,
        &sink,
        "agent_event",
        n_after_out,
        QUIET,
        "after sign-out",
    );

    let reqs = sink.to("agent_event");
    assert_posts(&reqs, "agent_event");
    let all: Vec<Value> = reqs.iter().map(|r| r.body_json().clone()).collect();

    // Every push: exactly the contract's keys, every value a String.
    let mut numbers = BTreeSet::new();
    for (r, v) in reqs.iter().zip(&all) {
        assert_eq!(keys(v), key_set(&AGENT_EVENT_KEYS), "keys of {v}");
        assert!(v.get("port").is_none(), "port is deleted (L488): {v}");
        assert_all_strings(v, &[], "agent_event");
        let sn = s(v, "steamNumber");
        assert!(all_digits(sn), "steamNumber all digits: {v}");
        assert!(numbers.insert(sn.to_string()), "steamNumber {sn} repeated");
        assert_eq!(
            r.header("idempotency-key"),
            Some(sn),
            "Idempotency-Key = steamNumber: {v}"
        );
        assert!(is_stamp(s(v, "etime")), "etime yyyyMMddHHmmss: {v}");
        assert!(is_stamp(s(v, "lastTime")), "lastTime yyyyMMddHHmmss: {v}");
        assert_eq!(s(v, "ym"), &s(v, "etime")[..6], "ym = yyyyMM of etime: {v}");
        assert_eq!(s(v, "agentId"), "A8000", "agentId from [[agents]]: {v}");
        assert_eq!(s(v, "agentName"), "张三", "agentName from [[agents]]: {v}");
        assert_eq!(s(v, "callId"), "", "no call: {v}");
        assert_eq!(s(v, "mac"), "aa:bb:cc:dd:ee:01", "mac from config: {v}");
        assert_eq!(
            s(v, "ip"),
            "127.0.0.1",
            "ip where the phone registered from: {v}"
        );
        assert!(
            all_digits(s(v, "lastDuration")),
            "lastDuration seconds: {v}"
        );
    }
    // Per-agent order: etime never goes back.
    for w in all.windows(2) {
        assert!(
            s(&w[0], "etime") <= s(&w[1], "etime"),
            "out of order: {} then {}",
            w[0],
            w[1]
        );
    }

    // The transitions, in order: (lastState -> esate, event).
    let got: Vec<(&str, &str, &str)> = all_t
        .iter()
        .map(|v| (s(v, "lastState"), s(v, "esate"), s(v, "event")))
        .collect();
    assert_eq!(
        got,
        [
            ("0", "1", "1"), // signed in
            ("1", "3", "1"), // not ready (manual)
            ("3", "2", "1"), // idle
            ("2", "3", "1"), // busy
            ("3", "0", "0"), // signed out
        ],
        "transitions: {all_t:?}"
    );
    let names: Vec<&str> = all_t.iter().map(|v| s(v, "estateName")).collect();
    assert!(names.iter().all(|n| !n.is_empty()), "estateName: {names:?}");
    // Each transition's lastTime is the previous transition's etime.
    for w in all_t.windows(2) {
        assert_eq!(s(&w[1], "lastTime"), s(&w[0], "etime"), "lastTime: {w:?}");
    }
    // ssid: one sign-in cycle, one session id, the sign-in instant in ms.
    let ssid = s(&all_t[0], "ssid");
    assert!(all_digits(ssid), "ssid: {}", all_t[0]);
    for v in all.iter() {
        assert_eq!(s(v, "ssid"), ssid, "ssid constant across the cycle: {v}");
    }
    let sign_in_ms: u64 = ssid.parse().unwrap();
    assert!(
        (t_in0.saturating_sub(1000)..=t_in1 + 1000).contains(&sign_in_ms),
        "ssid {ssid} is not the sign-in instant (between {t_in0} and {t_in1})"
    );
    // etimes are ours, in Asia/Shanghai.
    let et_in = s(&all_t[0], "etime");
    assert!(
        (shanghai(t_in0 - 1000).as_str()..=shanghai(t_in1 + 1000).as_str()).contains(&et_in),
        "sign-in etime {et_in} not within [{}, {}]",
        shanghai(t_in0),
        shanghai(t_in1)
    );
    let et_out = s(&all_t[4], "etime");
    assert!(
        (shanghai(t_out0 - 1000).as_str()..=shanghai(t_out1 + 1000).as_str()).contains(&et_out),
        "sign-out etime {et_out} not within [{}, {}]",
        shanghai(t_out0),
        shanghai(t_out1)
    );
    // inOutDuration: on the sign-in the signed-out time, on the sign-out the signed-in time;
    // empty on every other transition (L485).
    assert!(all_digits(s(&all_t[0], "inOutDuration")), "{}", all_t[0]);
    for v in &all_t[1..4] {
        assert_eq!(s(v, "inOutDuration"), "", "not a sign-in/out boundary: {v}");
    }
    let signed_in_secs: i64 = s(&all_t[4], "inOutDuration").parse().unwrap_or(-1);
    let measured = (t_out1 as i64 - t_in0 as i64) / 1000;
    assert!(
        (signed_in_secs - measured).abs() <= 1,
        "sign-out inOutDuration {signed_in_secs}, measured ~{measured} s: {}",
        all_t[4]
    );
    // The idle period outlasted a heartbeat stamped 2 s after it began (> 1 s): its
    // lastDuration says so and agrees with the etimes.
    let idle_secs: i64 = s(&all_t[3], "lastDuration").parse().unwrap();
    let by_etime = shanghai_secs(s(&all_t[3], "etime")) - shanghai_secs(s(&all_t[2], "etime"));
    assert!(idle_secs >= 1, "idle lastDuration: {}", all_t[3]);
    assert!(
        (idle_secs - by_etime).abs() <= 1,
        "idle lastDuration {idle_secs} vs etimes {by_etime}: {}",
        all_t[3]
    );
    // Heartbeat shape (L484): signed in, the current state twice, lastDuration 0, lastTime =
    // when the state was entered.
    assert_eq!(s(&hb, "event"), "1", "heartbeat: {hb}");
    assert_eq!(s(&hb, "lastDuration"), "0", "heartbeat: {hb}");
    assert_eq!(
        s(&hb, "lastTime"),
        s(&all_t[2], "etime"),
        "heartbeat lastTime: {hb}"
    );
    // Heartbeats only while signed in.
    let out_pos = all
        .iter()
        .position(|v| s(v, "event") == "0")
        .expect("the sign-out push");
    assert_eq!(
        out_pos,
        all.len() - 1,
        "nothing after the sign-out:\n{}",
        sink.dump()
    );
}

/// At-least-once with per-agent order (ARCHITECTURE.md, outbox invariants): transitions made
/// while the grid is silent are delivered once it answers, in the order they happened, each
/// steamNumber answered once; heartbeats do not queue behind the backlog and resume after it.
#[test]
fn agent_events_keep_their_order_across_a_silent_grid() {
    let sink = GridSink::start_in(Mode::Silent);
    let config = format!(
        r#"{mgmt}
{agents}
[outbox]
backoff_base_ms = 100
backoff_max_ms = 1000
{grid}"#,
        mgmt = mgmt::default_config(),
        agents = agents_toml(&[A1]),
        grid = grid_config(&sink, &["agent_event"], 1),
    )
    .replace("timeout_ms = 3000", "timeout_ms = 1000");
    let d = Daemon::start(&config);
    let mut phone = d.udp_client();
    let contact = format!("<sip:1001@{}>", phone.local_addr());
    register_ok(&mut phone, "1001", &contact, None, "REGISTER 1001");
    let api = Mgmt::new(d.listeners.http);
    // The registration reaches presence asynchronously; idle needs it.
    api.set_work_status("1001", "0").ok("setWorkStatus 1001 0");
    poll_until(PUSH_WAIT, || {
        let r = api.set_work_status("1001", "1");
        (r.status() == 200).then_some(())
    })
    .unwrap_or_else(|| d.fail("1001 could not go idle"));
    api.set_work_status("1001", "0")
        .ok("setWorkStatus 1001 0 again");
    wait_n(
        &d,
        &sink,
        "agent_event",
        1,
        "a first attempt reaches the silent grid",
    );
    sink.set_mode(Mode::Answer);

    let answered = |r: &[Request]| -> Vec<Value> {
        let mut seen = BTreeSet::new();
        r.iter()
            .filter(|q| q.answered)
            .map(|q| q.body_json().clone())
            .filter(|v| seen.insert(s(v, "steamNumber").to_string()))
            .collect()
    };
    let got = sink
        .wait_for("agent_event", Duration::from_secs(30), |r| {
            let a = answered(r);
            let t: Vec<Value> = a.iter().filter(|v| !is_heartbeat(v)).cloned().collect();
            (t.len() >= 4 && a.iter().skip_while(|v| !is_heartbeat(v)).count() > 0).then_some(a)
        })
        .unwrap_or_else(|| {
            d.fail(&format!(
                "want 4 transitions then a heartbeat delivered:\n{}",
                sink.dump()
            ))
        });
    let transitions: Vec<&Value> = got.iter().filter(|v| !is_heartbeat(v)).collect();
    let chain: Vec<(&str, &str)> = transitions
        .iter()
        .map(|v| (s(v, "lastState"), s(v, "esate")))
        .collect();
    assert_eq!(
        chain,
        [("0", "1"), ("1", "3"), ("3", "2"), ("2", "3")],
        "per-agent order after the outage:\n{}",
        sink.dump()
    );
    // A redelivered record keeps its key: every attempt of one steamNumber has one body.
    let mut bodies: BTreeMap<String, Value> = BTreeMap::new();
    for r in sink.to("agent_event") {
        let v = r.body_json().clone();
        let sn = s(&v, "steamNumber").to_string();
        assert_eq!(r.header("idempotency-key"), Some(sn.as_str()));
        if let Some(prev) = bodies.insert(sn.clone(), v.clone()) {
            assert_eq!(prev, v, "a retry of {sn} changed its body");
        }
    }
    // Heartbeats came only after the backlog (the lane was busy until then).
    let first_hb = got.iter().position(is_heartbeat).unwrap();
    let last_t = got.iter().rposition(|v| !is_heartbeat(v)).unwrap();
    assert!(
        first_hb > last_t,
        "a heartbeat was delivered inside the backlog:\n{}",
        sink.dump()
    );
    assert_eq!(s(&got[first_hb], "esate"), "3", "heartbeat reports busy");
}

// ------------------------------------------------------------------------------------------
// 2. Directory change pushes
// ------------------------------------------------------------------------------------------

/// L552-561.
const AGENT_CHANGE_KEYS: [&str; 8] = [
    "changeType",
    "agentId",
    "agentName",
    "agentDept",
    "orgName",
    "orgNo",
    "telephoneNumber",
    "skgroups",
];
/// L592-601 (`girdNo` as the contract spells it).
const ACCESS_NUMBER_KEYS: [&str; 10] = [
    "changeType",
    "entId",
    "accessNum",
    "orgNo",
    "orgName",
    "cityNo",
    "cityName",
    "remark",
    "girdNo",
    "skgroups",
];

struct AgentDef {
    id: &'static str,
    name: &'static str,
    dept: &'static str,
    org_no: &'static str,
    org_name: &'static str,
    ext: &'static str,
    groups: &'static [&'static str],
}

const A1: AgentDef = AgentDef {
    id: "A1001",
    name: "张三",
    dept: "客服一部",
    org_no: "3340101",
    org_name: "杭州供电公司",
    ext: "1001",
    groups: &["SG1"],
};
const A2: AgentDef = AgentDef {
    id: "A1002",
    name: "李四",
    dept: "客服二部",
    org_no: "3340102",
    org_name: "宁波供电公司",
    ext: "1002",
    groups: &["SG2", "SG1"],
};
const A3: AgentDef = AgentDef {
    id: "A1003",
    name: "王五",
    dept: "客服一部",
    org_no: "3340101",
    org_name: "杭州供电公司",
    ext: "1003",
    groups: &[],
};
const A4: AgentDef = AgentDef {
    id: "A1004",
    name: "赵六",
    dept: "客服三部",
    org_no: "3340103",
    org_name: "温州供电公司",
    ext: "1004",
    groups: &["SG2"],
};

fn group_name(id: &str) -> &'static str {
    match id {
        "SG1" => "故障报修",
        "SG2" => "业务咨询",
        _ => "",
    }
}

fn agents_toml(agents: &[AgentDef]) -> String {
    let mut s = String::new();
    for a in agents {
        let groups: Vec<String> = a.groups.iter().map(|g| format!("{g:?}")).collect();
        s.push_str(&format!(
            "\n[[agents]]\nagent_id = {:?}\nname = {:?}\ndepartment = {:?}\norg_no = {:?}\norg_name = {:?}\nextension = {:?}\nskill_groups = [{}]\n",
            a.id, a.name, a.dept, a.org_no, a.org_name, a.ext, groups.join(", ")
        ));
    }
    s
}

const DIRECTORY_REST: &str = r#"
[[skill_groups]]
id = "SG1"
name = "故障报修"

[[skill_groups]]
id = "SG2"
name = "业务咨询"

[[access_numbers]]
access_num = "95598"
ent_id = "E3340100"
org_no = "3340100"
org_name = "浙江电力"
city_no = "3340100"
city_name = "杭州"
remark = "供电服务热线"
grid_no = "G-001"
skill_groups = "SG1,SG2"

[[access_numbers]]
access_num = "96789"
ent_id = "E3340100"
org_no = "3340101"
org_name = "杭州供电公司"
city_no = "3340100"
city_name = "杭州"
remark = "城区网格"
grid_no = "G-002"
skill_groups = "SG1"
"#;

fn directory_config(sink: &GridSink, agents: &[AgentDef]) -> String {
    format!(
        "{}{}{}",
        agents_toml(agents),
        DIRECTORY_REST,
        grid_config(sink, &["agent_change", "access_number"], 0)
    )
}

/// Checks one agent-change push against its definition and the change type.
fn check_agent_change(v: &Value, change: &str, a: &AgentDef) {
    assert_eq!(
        keys(v),
        key_set(&AGENT_CHANGE_KEYS),
        "agent change keys: {v}"
    );
    assert_all_strings(v, &["skgroups"], "agent change");
    assert_eq!(s(v, "changeType"), change, "{v}");
    assert_eq!(s(v, "agentId"), a.id, "{v}");
    assert_eq!(s(v, "agentName"), a.name, "{v}");
    assert_eq!(s(v, "agentDept"), a.dept, "{v}");
    assert_eq!(s(v, "orgNo"), a.org_no, "{v}");
    assert_eq!(s(v, "orgName"), a.org_name, "{v}");
    assert_eq!(s(v, "telephoneNumber"), a.ext, "{v}");
    let groups = v["skgroups"]
        .as_array()
        .unwrap_or_else(|| panic!("skgroups must be an array (L559): {v}"));
    let mut got = BTreeMap::new();
    for g in groups {
        assert_eq!(
            keys(g),
            key_set(&["skgroupNo", "skgroupName"]),
            "skgroups entry: {v}"
        );
        got.insert(
            s(g, "skgroupNo").to_string(),
            s(g, "skgroupName").to_string(),
        );
    }
    let want: BTreeMap<String, String> = a
        .groups
        .iter()
        .map(|g| (g.to_string(), group_name(g).to_string()))
        .collect();
    assert_eq!(got, want, "skgroups of {}: {v}", a.id);
    assert_eq!(groups.len(), a.groups.len(), "no duplicate skgroups: {v}");
}

fn check_access_number(v: &Value, change: &str, num: &str) {
    assert_eq!(
        keys(v),
        key_set(&ACCESS_NUMBER_KEYS),
        "access number keys: {v}"
    );
    assert_all_strings(v, &[], "access number");
    assert_eq!(s(v, "changeType"), change, "{v}");
    assert_eq!(s(v, "accessNum"), num, "{v}");
    assert_eq!(s(v, "entId"), ENT, "{v}");
    let (org_no, org_name, remark, grid, groups) = match num {
        "95598" => ("3340100", "浙江电力", "供电服务热线", "G-001", "SG1,SG2"),
        "96789" => ("3340101", "杭州供电公司", "城区网格", "G-002", "SG1"),
        _ => unreachable!(),
    };
    assert_eq!(s(v, "orgNo"), org_no, "{v}");
    assert_eq!(s(v, "orgName"), org_name, "{v}");
    assert_eq!(s(v, "cityNo"), "3340100", "{v}");
    assert_eq!(s(v, "cityName"), "杭州", "{v}");
    assert_eq!(s(v, "remark"), remark, "{v}");
    assert_eq!(s(v, "girdNo"), grid, "{v}");
    assert_eq!(s(v, "skgroups"), groups, "skgroups is a String (L601): {v}");
}

/// The initial "01" pushes for A1, A2, A3 and both access numbers; returns the counts.
fn check_initial_pushes(d: &Daemon, sink: &GridSink) -> (usize, usize) {
    let agents = wait_n(d, sink, "agent_change", 3, "initial agents");
    let numbers = wait_n(d, sink, "access_number", 2, "initial access numbers");
    // Settle: nothing beyond one push per entry.
    assert_quiet(d, sink, "agent_change", 3, QUIET, "initial agents");
    assert_quiet(
        d,
        sink,
        "access_number",
        2,
        Duration::ZERO,
        "initial access numbers",
    );
    assert_posts(&agents, "agent_change");
    assert_posts(&numbers, "access_number");
    let by_id: BTreeMap<String, Value> = agents
        .iter()
        .map(|r| {
            (
                s(r.body_json(), "agentId").to_string(),
                r.body_json().clone(),
            )
        })
        .collect();
    assert_eq!(by_id.len(), 3, "one push per agent:\n{}", sink.dump());
    for a in [&A1, &A2, &A3] {
        check_agent_change(&by_id[a.id], "01", a);
    }
    let by_num: BTreeMap<String, Value> = numbers
        .iter()
        .map(|r| {
            (
                s(r.body_json(), "accessNum").to_string(),
                r.body_json().clone(),
            )
        })
        .collect();
    assert_eq!(
        by_num.len(),
        2,
        "one push per access number:\n{}",
        sink.dump()
    );
    for n in ["95598", "96789"] {
        check_access_number(&by_num[n], "01", n);
    }
    let idem: BTreeSet<&str> = agents
        .iter()
        .chain(&numbers)
        .map(|r| r.header("idempotency-key").expect("Idempotency-Key header"))
        .collect();
    assert_eq!(idem.len(), 5, "idempotency keys unique");
    (3, 2)
}

/// The changed directory: A1 renamed, A2 deleted, A3 kept, A4 added.
const A1_RENAMED: AgentDef = AgentDef {
    name: "张三丰",
    ..A1
};

/// After the change: exactly one 02 for A2, one 03 for A1 (new name), one 01 for A4, and
/// nothing for A3 or the access numbers.
fn check_changes(d: &Daemon, sink: &GridSink, agents_before: usize, numbers_before: usize) {
    let all = wait_n(
        d,
        sink,
        "agent_change",
        agents_before + 3,
        "after the change",
    );
    assert_quiet(
        d,
        sink,
        "agent_change",
        agents_before + 3,
        QUIET,
        "after the change",
    );
    assert_quiet(
        d,
        sink,
        "access_number",
        numbers_before,
        Duration::ZERO,
        "access numbers unchanged",
    );
    let new: Vec<Value> = all[agents_before..]
        .iter()
        .map(|r| r.body_json().clone())
        .collect();
    let by: BTreeMap<(String, String), Value> = new
        .iter()
        .map(|v| {
            (
                (s(v, "changeType").into(), s(v, "agentId").into()),
                v.clone(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [("02", "A1002"), ("03", "A1001"), ("01", "A1004")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(
        by.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "changes: {new:?}"
    );
    // A delete carries the record as it was (every field is required, L553-561).
    check_agent_change(&by[&("02".into(), "A1002".into())], "02", &A2);
    check_agent_change(&by[&("03".into(), "A1001".into())], "03", &A1_RENAMED);
    check_agent_change(&by[&("01".into(), "A1004".into())], "01", &A4);
}

#[test]
fn directory_changes_are_pushed_at_start_and_on_sighup() {
    let sink = GridSink::start();
    let d = Daemon::start(&directory_config(&sink, &[A1, A2, A3]));
    let (na, nn) = check_initial_pushes(&d, &sink);

    // Rename A1, delete A2, add A4 in the file; SIGHUP.
    let mut table: toml::Table = fs::read_to_string(&d.config_path).unwrap().parse().unwrap();
    let changed: toml::Table = agents_toml(&[A1_RENAMED, A3, A4]).parse().unwrap();
    table.insert("agents".into(), changed["agents"].clone());
    let before = d.logs().matches("configuration reloaded").count();
    fs::write(&d.config_path, table.to_string()).unwrap();
    send_signal(d.pid(), "HUP");
    poll_until(Duration::from_secs(10), || {
        (d.logs().matches("configuration reloaded").count() > before).then_some(())
    })
    .unwrap_or_else(|| d.fail("no 'configuration reloaded' after SIGHUP"));
    check_changes(&d, &sink, na, nn);
}

#[test]
fn directory_snapshot_is_durable_across_restarts() {
    let sink = GridSink::start();
    let mut d = Daemon::start(&directory_config(&sink, &[A1, A2, A3]));
    let (na, nn) = check_initial_pushes(&d, &sink);

    // A restart with the same directory pushes nothing: the pushed snapshot is durable.
    d.restart();
    assert_quiet(
        &d,
        &sink,
        "agent_change",
        na,
        QUIET,
        "restart, same directory",
    );
    assert_quiet(
        &d,
        &sink,
        "access_number",
        nn,
        Duration::ZERO,
        "restart, same directory",
    );

    // A restart with a changed directory pushes exactly the difference.
    let mut table: toml::Table = fs::read_to_string(&d.config_path).unwrap().parse().unwrap();
    let changed: toml::Table = agents_toml(&[A1_RENAMED, A3, A4]).parse().unwrap();
    table.insert("agents".into(), changed["agents"].clone());
    d.sigterm();
    fs::write(&d.config_path, table.to_string()).unwrap();
    d.restart();
    check_changes(&d, &sink, na, nn);

    // kill -9 and start again: still nothing repeated.
    d.kill9();
    d.restart();
    assert_quiet(&d, &sink, "agent_change", na + 3, QUIET, "after kill -9");
    assert_quiet(
        &d,
        &sink,
        "access_number",
        nn,
        Duration::ZERO,
        "after kill -9",
    );
}

/// Only pushed fields count, and a skill group's rename modifies every agent in it (its
/// skgroupName is pushed); an access number's change is a 03, its removal a 02 carrying the
/// old record (restart-applied, see the SIGHUP test).
#[test]
fn skill_group_rename_and_access_number_changes_are_pushed() {
    let sink = GridSink::start();
    let mut d = Daemon::start(&directory_config(&sink, &[A1, A2, A3]));
    let (na, nn) = check_initial_pushes(&d, &sink);
    let text = fs::read_to_string(&d.config_path)
        .unwrap()
        .replace("name = \"故障报修\"", "name = \"抢修服务\"")
        .replace("remark = \"供电服务热线\"", "remark = \"95598热线\"");
    let mut table: toml::Table = text.parse().unwrap();
    let numbers = table["access_numbers"].as_array_mut().unwrap();
    numbers.retain(|n| n["access_num"].as_str() != Some("96789"));
    d.sigterm();
    fs::write(&d.config_path, table.to_string()).unwrap();
    d.restart();
    let agents = wait_n(&d, &sink, "agent_change", na + 2, "skill group renamed");
    let nums = wait_n(&d, &sink, "access_number", nn + 2, "access numbers changed");
    assert_quiet(
        &d,
        &sink,
        "agent_change",
        na + 2,
        QUIET,
        "only A1 and A2 use SG1",
    );
    assert_quiet(
        &d,
        &sink,
        "access_number",
        nn + 2,
        Duration::ZERO,
        "two changes",
    );
    let mut ids = BTreeSet::new();
    for r in &agents[na..] {
        let v = r.body_json();
        assert_eq!(s(v, "changeType"), "03", "{v}");
        ids.insert(s(v, "agentId").to_string());
        let sg1 = v["skgroups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["skgroupNo"] == "SG1")
            .unwrap_or_else(|| panic!("SG1 missing: {v}"));
        assert_eq!(sg1["skgroupName"], "抢修服务", "{v}");
    }
    assert_eq!(
        ids,
        key_set(&["A1001", "A1002"]),
        "the agents of SG1, not A1003"
    );
    let by: BTreeMap<String, Value> = nums[nn..]
        .iter()
        .map(|r| {
            (
                s(r.body_json(), "accessNum").to_string(),
                r.body_json().clone(),
            )
        })
        .collect();
    let m = &by["95598"];
    assert_eq!(s(m, "changeType"), "03", "{m}");
    assert_eq!(s(m, "remark"), "95598热线", "{m}");
    assert_eq!(keys(m), key_set(&ACCESS_NUMBER_KEYS), "{m}");
    check_access_number(&by["96789"], "02", "96789");
}

/// The grid's own agent change (seed 000 L907-L936, POSTed to `[grid_api.paths]
/// agent_change`) changes the directory; the forwarder's documented rule ("every change is
/// pushed once, whatever made it ... the grid's own change push") sends it back as a
/// 坐席信息变更推送. This asserts that observed behaviour.
#[test]
fn grid_agent_change_is_pushed_back_to_the_grid() {
    let sink = GridSink::start();
    let d = Daemon::start(&format!(
        "{}\n[grid_api]\nallow = [\"127.0.0.1/32\"]\n",
        directory_config(&sink, &[A1, A2, A3])
    ));
    let (na, _) = check_initial_pushes(&d, &sink);
    let post = |body: Value| -> HttpResponse {
        http_request(
            d.listeners.http,
            "POST",
            "/grid/agent/change",
            &[("Content-Type".into(), "application/json".into())],
            body.to_string().as_bytes(),
        )
        .unwrap_or_else(|e| d.fail(&format!("POST /grid/agent/change: {e}")))
    };
    let r = post(json!({
        "changeType": "01", "agentId": "A2000", "agentName": "钱七", "telephoneNumber": "1005"
    }));
    assert_eq!(r.status, 200, "grid agent change: {}", r.body);
    let all = wait_n(&d, &sink, "agent_change", na + 1, "grid's add pushed back");
    let v = all[na].body_json().clone();
    assert_eq!(keys(&v), key_set(&AGENT_CHANGE_KEYS), "{v}");
    assert_eq!(s(&v, "changeType"), "01", "{v}");
    assert_eq!(s(&v, "agentId"), "A2000", "{v}");
    assert_eq!(s(&v, "agentName"), "钱七", "{v}");
    assert_eq!(s(&v, "telephoneNumber"), "1005", "{v}");
    // new_agent_department default "root" (L927: a new agent gets the root department).
    assert_eq!(s(&v, "agentDept"), "root", "{v}");
    assert!(v["skgroups"].is_array(), "{v}");

    let r = post(json!({"changeType": "02", "agentId": "A1002"}));
    assert_eq!(r.status, 200, "grid agent delete: {}", r.body);
    let all = wait_n(
        &d,
        &sink,
        "agent_change",
        na + 2,
        "grid's delete pushed back",
    );
    let v = all[na + 1].body_json().clone();
    check_agent_change(&v, "02", &A2);
    assert_quiet(
        &d,
        &sink,
        "agent_change",
        na + 2,
        QUIET,
        "after the grid's changes",
    );
}

/// `config/gridedge.toml`: "[grid] ent_id: 企业ID, sent in the access-number and signed detail
/// pushes". An access number configured without its own `ent_id` must carry it (entId is
/// required, L593).
#[test]
fn access_number_without_ent_id_carries_the_grid_ent_id() {
    let sink = GridSink::start();
    let d = Daemon::start(&format!(
        r#"
[[access_numbers]]
access_num = "95598"
org_no = "3340100"
org_name = "浙江电力"
city_no = "3340100"
city_name = "杭州"
remark = "供电服务热线"
grid_no = "G-001"
skill_groups = "SG1"
{}"#,
        grid_config(&sink, &["access_number"], 0)
    ));
    let r = wait_n(&d, &sink, "access_number", 1, "access number");
    let v = r[0].body_json();
    assert_eq!(keys(v), key_set(&ACCESS_NUMBER_KEYS), "{v}");
    assert_eq!(s(v, "entId"), ENT, "entId = [grid] ent_id: {v}");
}

// ------------------------------------------------------------------------------------------
// 3. Signed detail push (呼叫中心明细数据推送) and the CDR push
// ------------------------------------------------------------------------------------------

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/freeswitch")
        .join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// POSTs a mod_json_cdr document the way FreeSWITCH does (`encode=false`).
fn post_cdr(d: &Daemon, uuid: &str, doc: &[u8]) -> HttpResponse {
    let headers = vec![
        ("User-Agent".to_string(), "freeswitch-json/1.0".to_string()),
        ("Content-Type".to_string(), "application/json".to_string()),
    ];
    let target = format!("{CDR_PATH}?uuid={}", pct(uuid));
    http_request(d.listeners.http, "POST", &target, &headers, doc)
        .unwrap_or_else(|e| d.fail(&format!("POST {target}: {e}")))
}

const ANSWERED_2018: (&str, &str) = (
    "cdr-inbound-answered-bridged-2018.json",
    "5a3a1d91-90d3-4db4-af5c-cc3ae15d93a4",
);
const PREPAID_2015: (&str, &str) = (
    "cdr-inbound-answered-prepaid-2015.json",
    "e3133bf7-dcde-4daf-9663-9a79ffcef5ad",
);
const URLENCODED_2013: (&str, &str) = (
    "cdr-inbound-answered-urlencoded-2013.json",
    "c8ccef5e-34c2-4fd2-9a2e-fa6f295f3a1e",
);
const CANCELLED_A: (&str, &str) = (
    "cdr-inbound-cancelled-aleg-2025.json",
    "51156b0b-f91b-4fd3-9c8f-15226f6098be",
);
const CANCELLED_B: (&str, &str) = (
    "cdr-outbound-cancelled-bleg-2025.json",
    "ab0aa08a-ead3-42c6-a365-99553a001fba",
);
const ORIGINATE_2025: (&str, &str) = (
    "cdr-outbound-originate-answered-2025.json",
    "16c22a18-eccc-4974-adf9-44d2b6152838",
);

/// The calldata keys of the table (L2918-2944); the implementation may add the examples'
/// `handleLength`/`deptName` (L2989, L3021).
const CALLDATA_TABLE_KEYS: [&str; 27] = [
    "sessionId",
    "agentId",
    "agentNum",
    "agentName",
    "skillId",
    "skillName",
    "startTime",
    "endTime",
    "callingNum",
    "dialNum",
    "calledNum",
    "queueLength",
    "alertLength",
    "talkLength",
    "totalDuration",
    "endType",
    "hangupDisposition",
    "customerProvince",
    "customerCity",
    "satisfactionKey",
    "satisfactionResult",
    "recordStartTime",
    "recordEndTime",
    "recordPath",
    "callType",
    "entId",
    "ivrLength",
];

#[test]
fn sign_str_helper_matches_the_seed_examples() {
    // L3002-3003 and L3040-3041: the test's own signer against the contract's vectors.
    assert_eq!(
        sign_str("20240815214004", "VEIP", "8099369908841762569"),
        "2EF552BB7FCC0B9CDAB170DAC4C5BB6C"
    );
    assert_eq!(
        sign_str("20240817004958", "VEIP", "8099371549301193984"),
        "51035998C2A49434BDF81254B9CE5A5D"
    );
    assert_eq!(shanghai(0), "19700101080000");
    assert_eq!(shanghai(1_723_729_204_000), "20240815214004");
    assert_eq!(shanghai_secs("20240815214004"), 1_723_729_204);
}

#[test]
fn detail_push_is_signed_and_matches_the_cdr_push() {
    let sink = GridSink::start();
    let d = Daemon::start(&format!(
        "\n[cdr]\nsettle_secs = 1\n{}",
        grid_config(&sink, &["cdr", "detail"], 0)
    ));
    let (file, uuid) = ANSWERED_2018;
    let t0 = now_ms();
    let r = post_cdr(&d, uuid, &fixture(file));
    assert_eq!(r.status, 200, "CDR post: {}", r.body);
    let details = wait_n(&d, &sink, "detail", 1, "detail push");
    let cdrs = wait_n(&d, &sink, "cdr", 1, "cdr push");
    let t1 = now_ms();
    // Once per call: nothing more arrives.
    assert_quiet(&d, &sink, "detail", 1, QUIET, "one detail per call");
    let cdrs_n = sink.to("cdr").len();
    assert_quiet(
        &d,
        &sink,
        "cdr",
        cdrs_n,
        Duration::ZERO,
        "cdr pushes settled",
    );
    let cdrs = if cdrs_n > cdrs.len() {
        sink.to("cdr")
    } else {
        cdrs
    };
    assert_posts(&details, "detail");
    assert_posts(&cdrs, "cdr");

    let v = details[0].body_json();
    assert_eq!(
        keys(v),
        key_set(&["entId", "signStr", "timestamp", "calldata"]),
        "detail envelope (L2914-2917): {v}"
    );
    assert_eq!(s(v, "entId"), ENT, "entId = [grid] ent_id: {v}");
    let ts = s(v, "timestamp");
    assert!(is_stamp(ts), "timestamp yyyyMMddHHmmss: {v}");
    assert!(
        (shanghai(t0 - 1000).as_str()..=shanghai(t1 + 1000).as_str()).contains(&ts),
        "timestamp {ts} is not the push time (between {} and {})",
        shanghai(t0),
        shanghai(t1)
    );
    let cd = &v["calldata"];
    assert!(cd.is_object(), "calldata is an object: {v}");
    let ck = keys(cd);
    for k in CALLDATA_TABLE_KEYS {
        assert!(ck.contains(k), "calldata lacks {k}: {cd}");
    }
    let extra: Vec<&String> = ck
        .iter()
        .filter(|k| !CALLDATA_TABLE_KEYS.contains(&k.as_str()))
        .filter(|k| !["handleLength", "deptName"].contains(&k.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "calldata keys outside the contract: {extra:?}"
    );
    assert_all_strings(cd, &[], "calldata");
    let session = s(cd, "sessionId");
    assert!(!session.is_empty(), "sessionId: {cd}");
    assert_eq!(s(cd, "entId"), ENT, "calldata.entId: {cd}");
    assert_eq!(s(cd, "callType"), "1", "an inbound call (L2950-2955): {cd}");
    assert_eq!(
        s(v, "signStr"),
        sign_str(ts, ENT, session),
        "signStr = MD5(timestamp|entId|sessionId) upper-case hex"
    );
    // By hand from the fixture: start_epoch 1521025758, end_epoch 1521025788 (Asia/Shanghai
    // 2018-03-14 19:09:18 / 19:09:48), effective_caller_id_number 1001 dialling user 1002,
    // billsec 21, duration 30.
    assert_eq!(
        s(cd, "startTime"),
        dashed(&shanghai(1_521_025_758_000)),
        "{cd}"
    );
    assert_eq!(s(cd, "startTime"), "2018-03-14 19:09:18", "{cd}");
    assert_eq!(s(cd, "endTime"), "2018-03-14 19:09:48", "{cd}");
    assert_eq!(s(cd, "callingNum"), "1001", "主叫 (L2926): {cd}");
    assert_eq!(s(cd, "calledNum"), "1002", "被叫 (L2928): {cd}");
    assert_eq!(s(cd, "talkLength"), "21", "{cd}");
    assert_eq!(s(cd, "totalDuration"), "30", "{cd}");
    assert!(
        details[0].header("idempotency-key").is_some(),
        "detail idempotency key"
    );

    // The CDR pushes: streamnumber = Idempotency-Key, callId = the detail's sessionId.
    let mut streams = BTreeSet::new();
    for r in &cdrs {
        let c = r.body_json();
        assert_all_strings(c, &[], "cdr");
        let sn = s(c, "streamnumber");
        assert!(all_digits(sn), "streamnumber: {c}");
        assert_eq!(
            r.header("idempotency-key"),
            Some(sn),
            "Idempotency-Key: {c}"
        );
        assert!(streams.insert(sn.to_string()), "streamnumber repeated: {c}");
        assert_eq!(
            s(c, "callId"),
            session,
            "cdr callId = detail sessionId: {c}"
        );
    }
}

/// The inbound 2018 call was answered, bridged, talked 21 s and ended by the caller's BYE
/// (`sip_hangup_disposition` recv_bye on the A-leg). The contract's endType table
/// (L2957-2973) has 202 for "（呼入）排队放弃" (abandoned while queueing), 251/204 for ring
/// abandons; a talked call ended by the customer is 210 客户挂断 (as the outbound example,
/// L3024-3027) or 252 （呼入）通话挂断.
#[test]
fn detail_end_type_of_an_answered_call_is_not_an_abandon() {
    let sink = GridSink::start();
    let d = Daemon::start(&format!(
        "\n[cdr]\nsettle_secs = 1\n{}",
        grid_config(&sink, &["detail"], 0)
    ));
    let (file, uuid) = ANSWERED_2018;
    let r = post_cdr(&d, uuid, &fixture(file));
    assert_eq!(r.status, 200, "CDR post: {}", r.body);
    let details = wait_n(&d, &sink, "detail", 1, "detail push");
    let cd = &details[0].body_json()["calldata"];
    assert_eq!(s(cd, "talkLength"), "21", "the call was talked: {cd}");
    let end = s(cd, "endType");
    assert!(
        end == "210" || end == "252",
        "endType {end} ({}) for an answered call the customer hung up; want 210 客户挂断 or \
         252 （呼入）通话挂断: {cd}",
        s(cd, "hangupDisposition")
    );
    let want_disposition = if end == "210" {
        "客户挂断"
    } else {
        "（呼入）通话挂断"
    };
    assert_eq!(s(cd, "hangupDisposition"), want_disposition, "{cd}");
}

/// Both legs of a call from 1001 to agent A1003 (`[[agents]]`, extension 1003) that the
/// caller cancelled while the agent's phone rang (ORIGINATOR_CANCEL, billsec 0): the detail
/// names the agent from the directory (agentId, agentName, agentNum, deptName L2919-2921,
/// L3021), the call was never talked, and endType is 251 "（呼入）振铃放弃" (L2961). The CDR
/// push names the same agent.
#[test]
fn detail_of_a_ring_abandon_names_the_agent_from_the_directory() {
    let sink = GridSink::start();
    let d = Daemon::start(&format!(
        "{}{}\n[cdr]\nsettle_secs = 1\n{}",
        agents_toml(&[A3]),
        DIRECTORY_REST,
        grid_config(&sink, &["cdr", "detail"], 0)
    ));
    for (file, uuid) in [CANCELLED_A, CANCELLED_B] {
        let r = post_cdr(&d, uuid, &fixture(file));
        assert_eq!(r.status, 200, "CDR post {file}: {}", r.body);
    }
    let details = wait_n(&d, &sink, "detail", 1, "detail push");
    let cdrs = wait_n(&d, &sink, "cdr", 1, "cdr push");
    assert_quiet(&d, &sink, "detail", 1, QUIET, "one detail per call");
    let v = details[0].body_json();
    let cd = &v["calldata"];
    assert_eq!(
        s(v, "signStr"),
        sign_str(s(v, "timestamp"), ENT, s(cd, "sessionId")),
        "{v}"
    );
    assert_eq!(s(cd, "agentId"), "A1003", "{cd}");
    assert_eq!(s(cd, "agentName"), "王五", "{cd}");
    assert!(s(cd, "agentNum").ends_with("1003"), "agentNum: {cd}");
    assert_eq!(s(cd, "deptName"), "客服一部", "{cd}");
    assert_eq!(s(cd, "callingNum"), "1001", "{cd}");
    assert_eq!(s(cd, "talkLength"), "0", "never answered: {cd}");
    assert_eq!(s(cd, "callType"), "1", "{cd}");
    assert_eq!(s(cd, "endType"), "251", "ring abandon: {cd}");
    assert_eq!(s(cd, "hangupDisposition"), "（呼入）振铃放弃", "{cd}");
    let session = s(cd, "sessionId");
    for r in &cdrs {
        assert_eq!(s(r.body_json(), "callId"), session, "{}", sink.dump());
    }
    let agent_rec = sink
        .to("cdr")
        .into_iter()
        .map(|r| r.body_json().clone())
        .find(|c| s(c, "AGENTNUMBER") == "1003")
        .unwrap_or_else(|| panic!("no CDR segment for agent 1003:\n{}", sink.dump()));
    assert_eq!(s(&agent_rec, "AGENTID"), "A1003", "{agent_rec}");
    assert_eq!(s(&agent_rec, "AGENTNAME"), "王五", "{agent_rec}");
}

/// "yyyyMMddHHmmss" -> "yyyy-MM-dd HH:mm:ss".
fn dashed(t: &str) -> String {
    format!(
        "{}-{}-{} {}:{}:{}",
        &t[0..4],
        &t[4..6],
        &t[6..8],
        &t[8..10],
        &t[10..12],
        &t[12..14]
    )
}

// ------------------------------------------------------------------------------------------
// 4. Transport config
// ------------------------------------------------------------------------------------------

#[test]
fn push_transport_headers_tokens_and_disabled_targets() {
    let sink = GridSink::start();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("grid.token");
    fs::write(&token_file, "tok-from-file-5678\nsecond line ignored\n").unwrap();
    let config = format!(
        r#"{mgmt}
{agents}{rest}
[grid]
ent_id = "{ENT}"
sync_secs = 1

[grid.push.agent_change]
enabled = true
url = "{ac}"
bearer_token = "tok-inline-1234"
headers = {{ "X-Api-Key" = "key-1", "X-Tenant" = "zj" }}

[grid.push.access_number]
enabled = true
url = "{an}"
bearer_token = "ignored-when-a-file-is-set"
bearer_token_file = {file:?}
idempotency_header = "X-Request-Id"

[grid.push.agent_event]
enabled = false
url = "{ae}"
"#,
        mgmt = mgmt::default_config(),
        agents = agents_toml(&[A1]),
        rest = DIRECTORY_REST,
        ac = sink.url("agent_change"),
        an = sink.url("access_number"),
        ae = sink.url("agent_event"),
        file = token_file.display().to_string(),
    );
    let d = Daemon::start(&config);
    let ac = wait_n(&d, &sink, "agent_change", 1, "agent change");
    let an = wait_n(&d, &sink, "access_number", 2, "access numbers");
    assert_posts(&ac, "agent_change");
    assert_posts(&an, "access_number");
    for r in &ac {
        assert_eq!(r.path, "/agent_change");
        assert_eq!(r.header("authorization"), Some("Bearer tok-inline-1234"));
        assert_eq!(r.header("x-api-key"), Some("key-1"));
        assert_eq!(r.header("x-tenant"), Some("zj"));
        assert!(
            r.header("idempotency-key").is_some_and(|k| !k.is_empty()),
            "default idempotency header"
        );
        assert_eq!(r.header("x-request-id"), None);
    }
    let mut ids = BTreeSet::new();
    for r in &an {
        assert_eq!(r.path, "/access_number");
        assert_eq!(
            r.header("authorization"),
            Some("Bearer tok-from-file-5678"),
            "bearer_token_file (first line) overrides bearer_token"
        );
        assert_eq!(r.header("x-api-key"), None, "headers are per target");
        let id = r
            .header("x-request-id")
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| panic!("X-Request-Id missing: {:?}", r.headers));
        assert!(ids.insert(id.to_string()), "X-Request-Id unique");
        assert_eq!(r.header("idempotency-key"), None, "the header was renamed");
        assert_eq!(r.header_all("authorization").len(), 1);
    }

    // The disabled target gets nothing, even when an agent signs in and out.
    let api = Mgmt::new(d.listeners.http);
    api.set_work_status("1001", "0").ok("setWorkStatus 1001 0");
    assert_quiet(
        &d,
        &sink,
        "agent_event",
        0,
        QUIET,
        "disabled agent_event target",
    );
}

fn check_config_exit(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gridedge.toml");
    fs::write(&path, text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gridedge"));
    cmd.arg("check-config").arg(&path);
    let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(20));
    (status.code(), format!("{out}{err}"))
}

#[test]
fn check_config_refuses_bad_push_targets_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ok = render_config(
        &state,
        "[grid.push.cdr]\nenabled = true\nurl = \"http://127.0.0.1:9/cdr\"\n",
    );
    let (code, out) = check_config_exit(&ok);
    assert_eq!(code, Some(0), "a valid push target is accepted:\n{out}");
    for (over, key) in [
        (
            "[grid.push.cdr]\nenabled = true\nurl = \"ftp://x\"\n",
            "grid.push.cdr.url",
        ),
        (
            "[grid.push.detail]\nenabled = true\nurl = \"http://127.0.0.1:9/d\"\nheaders = { \"bad header\" = \"v\" }\n",
            "grid.push.detail.headers",
        ),
        (
            "[grid.push.agent_event]\nenabled = true\nurl = \"http://127.0.0.1:9/a\"\ntimeout_ms = 5\n",
            "grid.push.agent_event.timeout_ms",
        ),
        (
            "[grid.push.access_number]\nenabled = true\nurl = \"http://127.0.0.1:9/n\"\nidempotency_header = \"X Bad\"\n",
            "grid.push.access_number.idempotency_header",
        ),
    ] {
        let (code, out) = check_config_exit(&render_config(&state, over));
        assert_eq!(code, Some(2), "check-config must exit 2 for {over:?}:\n{out}");
        assert!(out.contains(key), "output does not name `{key}` for {over:?}:\n{out}");
    }
}

/// `run` refuses to start when a push's `bearer_token_file` cannot be read (the outbox reads
/// it at start-up); check-config must refuse it too, naming the key (DESIGN.md: "a bad config
/// refuses to start and names the key"; `e2e_cli.rs`: check-config refuses what run would).
#[test]
fn check_config_refuses_an_unreadable_bearer_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let missing = dir.path().join("no-such.token");
    let over = format!(
        "[grid.push.cdr]\nenabled = true\nurl = \"http://127.0.0.1:9/cdr\"\nbearer_token_file = {:?}\n",
        missing.display().to_string()
    );
    let text = render_config(&state, &over);
    // What run does with it, for the record.
    let path = dir.path().join("gridedge.toml");
    fs::write(&path, &text).unwrap();
    let mut run = Command::new(env!("CARGO_BIN_EXE_gridedge"));
    run.arg("run").arg("--config").arg(&path);
    let (status, out, err) = run_with_timeout(&mut run, Duration::from_secs(30));
    assert!(
        !status.success(),
        "run must refuse a missing token file:\n{out}{err}"
    );
    assert!(
        format!("{out}{err}").contains("grid.push.cdr.bearer_token_file"),
        "run names the key:\n{out}{err}"
    );
    let (code, out) = check_config_exit(&text);
    assert_eq!(
        code,
        Some(2),
        "check-config must refuse what run refuses:\n{out}"
    );
    assert!(out.contains("grid.push.cdr.bearer_token_file"), "{out}");
}

// ------------------------------------------------------------------------------------------
// 5. Back-pressure
// ------------------------------------------------------------------------------------------

fn db(d: &Daemon) -> rusqlite::Connection {
    let path = d.state_dir.join("gridedge.db");
    let c =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| d.fail(&format!("open {}: {e}", path.display())));
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

fn strings(d: &Daemon, sql: &str) -> Vec<String> {
    let c = db(d);
    let mut st = c.prepare(sql).unwrap();
    let rows = st
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows
}

fn count(d: &Daemon, table: &str) -> i64 {
    db(d)
        .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn full_outbox_refuses_cdrs_with_503_and_loses_nothing() {
    let sink = GridSink::start_in(Mode::Silent);
    let d = Daemon::start(&format!(
        r#"
[cdr]
settle_secs = 1

[outbox]
max_records = 1
backoff_base_ms = 100
backoff_max_ms = 1000

[grid]
ent_id = "{ENT}"
sync_secs = 1

[grid.push.cdr]
enabled = true
url = "{url}"
timeout_ms = 1000
"#,
        url = sink.url("cdr")
    ));
    // One call goes in and is built; its records reach the silent sink and stay pending.
    let r = post_cdr(&d, ANSWERED_2018.1, &fixture(ANSWERED_2018.0));
    assert_eq!(r.status, 200, "first CDR: {}", r.body);
    wait_n(
        &d,
        &sink,
        "cdr",
        1,
        "the first record reaches the silent sink",
    );
    let mut accepted = vec![ANSWERED_2018];
    let mut refused = Vec::new();
    for f in [PREPAID_2015, URLENCODED_2013, ORIGINATE_2025] {
        let r = post_cdr(&d, f.1, &fixture(f.0));
        match r.status {
            200 => accepted.push(f),
            503 => {
                let ra = r.header("retry-after").unwrap_or_else(|| {
                    d.fail(&format!("503 without Retry-After: {:?}", r.headers))
                });
                assert!(
                    ra.parse::<u64>().is_ok_and(|n| n > 0),
                    "Retry-After in seconds: {ra:?}"
                );
                refused.push(f);
            }
            other => d.fail(&format!("CDR post {}: {other} {}", f.0, r.body)),
        }
    }
    assert!(
        !refused.is_empty(),
        "a full outbox (max_records = 1) must refuse CDR posts with 503; accepted {accepted:?}"
    );
    let legs_refused = d
        .metric(
            "gridedge_cdr_legs_total",
            &["source=\"post\"", "result=\"error\""],
        )
        .unwrap_or(0.0);
    let api_backpressure = d
        .metric(
            "gridedge_api_requests_total",
            &["route=\"cdr\"", "result=\"backpressure\""],
        )
        .unwrap_or(0.0);
    let outbox_refused = d
        .metric("gridedge_outbox_refused_total", &["target=\"cdr\""])
        .unwrap_or(0.0);
    eprintln!(
        "back-pressure: accepted {}, refused {}; cdr_legs error {legs_refused}, api \
         backpressure {api_backpressure}, outbox refused {outbox_refused}",
        accepted.len(),
        refused.len()
    );
    assert!(
        legs_refused + api_backpressure + outbox_refused >= refused.len() as f64,
        "back-pressure is counted: legs error {legs_refused}, api backpressure \
         {api_backpressure}, outbox refused {outbox_refused}; refused {}",
        refused.len()
    );
    assert_eq!(
        count(&d, "cdr_legs"),
        accepted.len() as i64,
        "refused documents are not stored"
    );

    // The sink answers again: everything accepted is delivered; then the refused documents
    // (FreeSWITCH retries them) go through too.
    sink.set_mode(Mode::Answer);
    let delivered_all = |d: &Daemon| -> bool {
        let stored = strings(d, "SELECT stream_number FROM call_records");
        let got: BTreeSet<String> = sink
            .to("cdr")
            .iter()
            .filter(|r| r.answered)
            .filter_map(|r| r.header("idempotency-key").map(str::to_string))
            .collect();
        !stored.is_empty() && stored.iter().all(|s| got.contains(s)) && count(d, "outbox") == 0
    };
    poll_until(Duration::from_secs(30), || delivered_all(&d).then_some(())).unwrap_or_else(|| {
        d.fail(&format!(
            "accepted records not all delivered once the sink answered; outbox {} dead {}\n{}",
            count(&d, "outbox"),
            count(&d, "outbox_dead"),
            sink.dump()
        ))
    });
    for f in &refused {
        let ok = poll_until(Duration::from_secs(30), || {
            let r = post_cdr(&d, f.1, &fixture(f.0));
            match r.status {
                200 => Some(()),
                503 => {
                    std::thread::sleep(Duration::from_millis(200));
                    None
                }
                other => d.fail(&format!("re-post {}: {other} {}", f.0, r.body)),
            }
        });
        ok.unwrap_or_else(|| d.fail(&format!("{} still refused after the sink recovered", f.0)));
    }
    assert_eq!(count(&d, "cdr_legs"), 4, "every document stored in the end");
    poll_until(Duration::from_secs(30), || {
        (delivered_all(&d) && strings(&d, "SELECT DISTINCT call_key FROM call_records").len() >= 4)
            .then_some(())
    })
    .unwrap_or_else(|| {
        d.fail(&format!(
            "re-posted calls not delivered; calls {:?}\n{}",
            strings(&d, "SELECT DISTINCT call_key FROM call_records"),
            sink.dump()
        ))
    });
    assert_eq!(count(&d, "outbox_dead"), 0, "nothing dead-lettered");
}
