//! The campaign runtime's per-task rules end to end (`/work/campaign-contract.md`, seed 004
//! §3 and §13): retry rules (`repeatConfs`, including status 5 加拨零), calling windows
//! (`weekPeriods` / `timePeriods` in the task's `timeZone`), the caller ID an originate
//! presents (`outboundNumberGroups`, the grid's 保底号码 for `cityOrgNo`, the gateway's
//! `originationCallId`), recall tasks (`originalCallTaskCode` + `originalResultDetail`) and a
//! gateway's line cap shared by two tasks.
//!
//! Like `e2e_campaign.rs`, every test runs the real daemon with `[esl] enabled = true` against
//! the scripted switch of `support/dialer_peer.rs` and holds what the daemon says (attempts,
//! callTaskStatus, getListByResult, getAvailableList) against what the switch saw (the
//! originates, their variables and dial strings, the calls in flight).
//!
//! A number's fate at the switch is a function of the scenario seed and the number only, so
//! the tests choose their numbers by fate (`pick`): a number whose plan is USER_BUSY is busy on
//! every attempt, one whose plan is a live answer always answers.
//!
//! Determinism: ephemeral ports; every wait is a condition with a deadline (the peer's record
//! through its condition variable, the HTTP API by polling); the only timed windows are the
//! ones that assert that nothing (more) happens, and each says so where it is used.

#[path = "support/campaign_api.rs"]
mod campaign_api;
#[path = "support/campaign_env.rs"]
mod campaign_env;
#[path = "support/checks.rs"]
mod checks;
mod common;
#[path = "support/dialer_peer.rs"]
mod dialer_peer;
#[path = "support/esl_server.rs"]
mod esl_server;
#[path = "support/mgmt.rs"]
mod mgmt;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use campaign_api::*;
use campaign_env::*;
use checks::Checks;
use common::*;
use dialer_peer::{Call, Fate, Kind, Scenario};
use mgmt::*;

/// Upper bound for one of these small campaigns (a dozen calls, typically a few seconds).
const RUN_DEADLINE: Duration = Duration::from_secs(60);
/// How long a task whose calling window is closed is watched for originates.
const CLOSED_WINDOW_WATCH: Duration = Duration::from_secs(2);

const ESL_PASSWORD: &str = "e2e-rules-ClueCon";
const GW: &str = "GW-RULES";

const BUSY: Fate = Fate::Fail("USER_BUSY");
const NO_ANSWER: Fate = Fate::Fail("NO_ANSWER");
const UNALLOCATED: Fate = Fate::Fail("UNALLOCATED_NUMBER");

fn seed() -> u64 {
    env_seed(0x5EED_0004_0B1E)
}

// ------------------------------------------------------------------------------------------
// Small helpers
// ------------------------------------------------------------------------------------------

/// `n` mobile numbers `139<tag:03><i:05>` whose fate under `sc` satisfies `want`, in order.
fn pick(tag: u32, n: usize, want: impl Fn(&str) -> bool) -> Vec<String> {
    let found: Vec<String> = (0..100_000u32)
        .map(|i| format!("139{tag:03}{i:05}"))
        .filter(|x| want(x))
        .take(n)
        .collect();
    assert_eq!(
        found.len(),
        n,
        "only {} numbers with tag {tag} have the fate asked for (seed {}): pick another \
         GRIDEDGE_E2E_SEED",
        found.len(),
        seed()
    );
    found
}

fn cid_of(c: &Call) -> &str {
    c.vars
        .get("origination_caller_id_number")
        .map_or("", String::as_str)
}

/// Whether a task has settled: every number of `want` was dialled (the checks then compare
/// the exact sets, so a wrong extra number fails there, not as a timeout), every call ended
/// and is logged, and nothing is in flight.
fn settled(rows: &[Value], status: &Value, calls: &[Call], want: &BTreeSet<String>) -> bool {
    let dialled: BTreeSet<&str> = calls.iter().map(|c| c.number.as_str()).collect();
    want.iter().all(|n| dialled.contains(n.as_str())) && ended_and_logged(rows, status, calls)
}

/// How many originates each number got.
fn dial_counts(calls: &[Call]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for c in calls {
        *out.entry(c.number.clone()).or_insert(0) += 1;
    }
    out
}

fn describe_all(calls: &[Call]) -> String {
    calls
        .iter()
        .map(Call::describe)
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_no_violations(rig: &Rig) {
    let v = rig.peer.state(|s| s.violations.clone());
    assert!(v.is_empty(), "the switch saw contract violations: {v:#?}");
    let other = rig.peer.state(|s| s.other_commands.clone());
    assert!(other.is_empty(), "unexpected bgapi commands: {other:?}");
}

/// Every attempt row has a callId of a distinct originate of `calls`.
fn assert_rows_are_the_originates(rows: &[Value], calls: &[Call]) {
    let uuids: BTreeSet<&str> = calls.iter().map(|c| c.uuid.as_str()).collect();
    let mut seen = BTreeSet::new();
    for r in rows {
        let id = s(r, "callId").unwrap_or_else(|| panic!("attempt without callId: {r}"));
        assert!(
            uuids.contains(id),
            "attempt {r} names a callId the switch never saw"
        );
        assert!(seen.insert(id), "two attempts for callId {id}: {rows:#?}");
    }
    assert_eq!(
        rows.len(),
        calls.len(),
        "one attempt per originate: {rows:#?}\n{}",
        describe_all(calls)
    );
}

// ------------------------------------------------------------------------------------------
// 1. Retry rules
// ------------------------------------------------------------------------------------------

/// `repeatConfs` status 2 (no answer / busy) with `frequence` 2 and status 5 (加拨零) once,
/// interval 0: a number busy every time is originated 3 times (1 + 2 retries) and logged 3
/// times, a number never answered likewise; a live number is dialled once; an unallocated
/// number is dialled once more as 0 + number, and when that fails too, not again.
#[test]
fn retry_rules_redial_busy_and_unanswered_numbers_and_add_a_zero_to_unallocated_ones() {
    let project = "P-retry";
    let task_code = "T-retry";
    let mut sc = Scenario::campaign(seed(), GW, "", "");
    sc.mix = vec![
        (Kind::Live, 1),
        (Kind::Busy, 1),
        (Kind::NoAnswer, 1),
        (Kind::Unallocated, 1),
    ];
    sc.impatient_pct = 0;
    sc.ring_ms = (50, 150);
    sc.talk_ms = (100, 300);
    let fate = |n: &str| sc.plan(n).fate;
    let busy = pick(101, 1, |n| fate(n) == BUSY).remove(0);
    let no_answer = pick(102, 1, |n| fate(n) == NO_ANSWER).remove(0);
    let live = pick(103, 2, |n| fate(n) == Fate::Live);
    // Unallocated as dialled and with the leading 0 too, so the add-zero retry fails again
    // and the test sees that nothing follows it.
    let unallocated = pick(104, 1, |n| {
        fate(n) == UNALLOCATED && fate(&format!("0{n}")) == UNALLOCATED
    })
    .remove(0);
    let zero = format!("0{unallocated}");

    let rig = Rig::start(ESL_PASSWORD, seed(), sc, &[(project, 2)], "");
    let api = &rig.api;
    // No number prefixes: the originate's dial string is exactly the digits dialled.
    add_gateway_ok(api, &gateway(GW, "rules trunk", 10));
    let list = [
        busy.clone(),
        live[0].clone(),
        no_answer.clone(),
        unallocated.clone(),
        live[1].clone(),
    ];
    import_ok(api, "L-retry", &list.join("\n"), Some("3"), None, 5);
    let repeat = json!([
        {"status": "2", "frequence": "2", "interval": "0"},
        // The contract reads 加拨零 as one transformation of the number: a reading where
        // frequence counted further 0-prefixed redials would dial "00..." — frequence 1 keeps
        // the two readings identical, and "not again" is then asserted below.
        {"status": "5", "frequence": "1", "interval": "0"},
    ])
    .to_string();
    let p = task(task_code, project, "L-retry", GW, 2, "1").set("repeatConfs", &repeat);
    assert_eq!(submit_ok(api, &p), 5, "totalCnt");
    start_ok(api, task_code);

    rig.wait_task(
        task_code,
        RUN_DEADLINE,
        "busy and unanswered numbers dialled 3 times, the unallocated one with a 0, lives once",
        |rows, status, calls| {
            let n = dial_counts(calls);
            let count = |x: &str| n.get(x).copied().unwrap_or(0);
            count(&busy) >= 3
                && count(&no_answer) >= 3
                && count(&unallocated) >= 1
                && count(&zero) >= 1
                && live.iter().all(|l| count(l) >= 1)
                && ended_and_logged(rows, status, calls)
        },
    );
    rig.assert_no_more_originates("after the last retry");
    let calls = rig.calls_of(task_code);
    // Read after the quiet window, so a late retry or row shows up in the checks.
    let rows = attempts(api, task_code);
    let status = status_ok(api, task_code);
    let mut c = Checks::new();
    c.run("originates per number", || {
        let want: BTreeMap<String, usize> = [
            (busy.clone(), 3),
            (no_answer.clone(), 3),
            (live[0].clone(), 1),
            (live[1].clone(), 1),
            (unallocated.clone(), 1),
            (zero.clone(), 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            dial_counts(&calls),
            want,
            "number -> originates (busy/no answer: 1 + 2 retries; live: once; unallocated: once \
             as is, once as 0 + number)\n{}",
            describe_all(&calls)
        );
    });
    c.run("the add-zero retry dials 0 + number", || {
        let z: Vec<&Call> = calls.iter().filter(|c| c.number == zero).collect();
        assert_eq!(z.len(), 1, "{}", describe_all(&calls));
        assert_eq!(
            z[0].dial, zero,
            "dialled digits of the add-zero retry: {}",
            z[0].command
        );
        assert_eq!(z[0].gateway, GW, "{}", z[0].command);
    });
    c.run(
        "a retry starts only after the previous attempt ended",
        || {
            let mut by_number: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
            for call in &calls {
                let key = call.number.strip_prefix('0').unwrap_or(&call.number);
                by_number.entry(key).or_default().push(call);
            }
            for (number, attempts) in by_number {
                for w in attempts.windows(2) {
                    let ended = w[0].ended_ms.unwrap_or(u64::MAX);
                    assert!(
                    w[1].originated_ms >= ended,
                    "{number}: a retry was originated while the previous attempt was up:\n{}\n{}",
                    w[0].describe(),
                    w[1].describe()
                );
                }
            }
        },
    );
    c.run("the compliance log has one row per attempt", || {
        assert_rows_are_the_originates(&rows, &calls);
        let of = |numbers: &[&str]| -> Vec<(String, String)> {
            rows.iter()
                .filter(|r| s(r, "number").is_some_and(|n| numbers.contains(&n)))
                .map(|r| (s(r, "outcome").unwrap_or("").to_owned(), detail_of(r)))
                .collect()
        };
        let pair = |o: &str, d: &str| (o.to_owned(), d.to_owned());
        assert_eq!(of(&[&busy]), vec![pair("busy", "20"); 3], "{rows:#?}");
        assert_eq!(
            of(&[&no_answer]),
            vec![pair("no_answer", "25"); 3],
            "{rows:#?}"
        );
        // The add-zero attempt's row may name the number as listed or as dialled.
        assert_eq!(
            of(&[&unallocated, &zero]),
            vec![pair("failed", "1"); 2],
            "{rows:#?}"
        );
        for l in &live {
            let got = of(&[l]);
            assert!(
                matches!(got.as_slice(), [(o, d)] if o == "connected" && (d == "50" || d == "55")),
                "live number {l}: rows {got:?} (want one connected 50/55)\n{rows:#?}"
            );
        }
    });
    c.run("callTaskStatus counts every attempt", || {
        let ctx = "callTaskStatus after the retries";
        assert_eq!(int(&status, "status", ctx), RUNNING, "{status}");
        assert_eq!(int(&status, "totalCount", ctx), 5, "{status}");
        assert_eq!(int(&status, "dialedCount", ctx), 10, "{status}");
        assert_eq!(int(&status, "runningCount", ctx), 0, "{status}");
        // A number retried counts once per attempt: 3 busy + 3 no answer + 2 unallocated.
        assert_eq!(int(&status, "failCount", ctx), 8, "{status}");
        assert_eq!(int(&status, "successCount", ctx), 2, "{status}");
        assert_eq!(int(&status, "rejectCount", ctx), 0, "{status}");
    });
    c.run("no violation at the switch", || assert_no_violations(&rig));
    rig.finish(c);
}

// ------------------------------------------------------------------------------------------
// 2. Calling window
// ------------------------------------------------------------------------------------------

/// A time zone (differing from the config's Asia/Shanghai by hours) whose local time is at
/// least an hour from midnight, so the test's windows never wrap and its day cannot change
/// while it runs. New York and London are 5 hours apart: one of them always qualifies.
fn zone_away_from_midnight() -> (&'static str, jiff::Zoned) {
    for zone in ["America/New_York", "Europe/London"] {
        let now = jiff::Timestamp::now()
            .in_tz(zone)
            .unwrap_or_else(|e| panic!("time zone {zone}: {e}"));
        let minute = i32::from(now.hour()) * 60 + i32::from(now.minute());
        if (60..=22 * 60 + 30).contains(&minute) {
            return (zone, now);
        }
    }
    unreachable!("New York and London are never both within 90 minutes of midnight")
}

fn hhmm(minute: i32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// Tasks whose window (in the task's `timeZone`) excludes now — by time of day, by day of
/// week — launch nothing, while otherwise identical tasks whose window is open now (an explicit
/// one around the current time in the task's zone, and the default "always") dial.
#[test]
fn a_closed_calling_window_launches_no_call_while_an_open_one_dials() {
    let project = "P-win";
    let mut sc = Scenario::campaign(seed(), GW, "", "");
    sc.mix = vec![(Kind::Busy, 1)];
    sc.ring_ms = (50, 150);
    let rig = Rig::start(ESL_PASSWORD, seed(), sc, &[(project, 2)], "");
    let api = &rig.api;
    add_gateway_ok(api, &gateway(GW, "rules trunk", 10));

    let (zone, now) = zone_away_from_midnight();
    let minute = i32::from(now.hour()) * 60 + i32::from(now.minute());
    let today = now.weekday().to_sunday_zero_offset();
    // One minute 12 hours away (kept inside the day, so it never reads as crossing midnight).
    let away = (minute + 720) % 1440;
    let away = if away == 1439 { 1438 } else { away };
    let closed_time = format!("{}-{}", hhmm(away), hhmm(away + 1));
    // Open: an hour either side of now, in the task's zone. Read in Asia/Shanghai (the
    // config's zone, 7 to 13 hours off) the same period is closed, so this task also checks
    // that the window is read in the task's timeZone.
    let open_time = format!("{}-{}", hhmm(minute - 60), hhmm(minute + 60));
    let all_days = "0|1|2|3|4|5|6";
    let other_days: String = (0..7)
        .filter(|d| *d != today)
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("|");
    let today = today.to_string();

    // (task, weekPeriods, timePeriods, whether the window is open now)
    let tasks: [(&str, Option<&str>, Option<&str>, bool); 4] = [
        (
            "T-win-closed-time",
            Some(all_days),
            Some(closed_time.as_str()),
            false,
        ),
        (
            "T-win-closed-day",
            Some(other_days.as_str()),
            Some(open_time.as_str()),
            false,
        ),
        (
            "T-win-open",
            Some(today.as_str()),
            Some(open_time.as_str()),
            true,
        ),
        ("T-win-always", None, None, true),
    ];
    let mut lists: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (i, (code, week, time, _)) in tasks.iter().enumerate() {
        let numbers = pick(201 + i as u32, 3, |_| true);
        let list = format!("L-{code}");
        import_ok(api, &list, &numbers.join("\n"), Some("3"), None, 3);
        let mut p = task(code, project, &list, GW, 2, "1").set("timeZone", zone);
        if let Some(w) = week {
            p = p.set("weekPeriods", w);
        }
        if let Some(t) = time {
            p = p.set("timePeriods", t);
        }
        assert_eq!(submit_ok(api, &p), 3, "totalCnt of {code}");
        lists.insert(code, numbers);
    }
    let closed: Vec<&str> = tasks.iter().filter(|t| !t.3).map(|t| t.0).collect();
    let open: Vec<&str> = tasks.iter().filter(|t| t.3).map(|t| t.0).collect();
    let windows = format!(
        "zone {zone}, local now {now}, weekday {today}: closed-time {closed_time:?}, \
         closed-day {other_days:?} {open_time:?}, open {today:?} {open_time:?}"
    );

    // The closed tasks start first, so they have at least as long as the open ones to dial.
    for code in &closed {
        start_ok(api, code);
    }
    let closed_started = Instant::now();
    for code in &open {
        start_ok(api, code);
    }
    let mut c = Checks::new();
    for code in &open {
        let want: BTreeSet<String> = lists[code].iter().cloned().collect();
        c.run(&format!("{code} (window open) dials its numbers"), || {
            rig.wait_task(
                code,
                WAIT,
                &format!("every number dialled ({windows})"),
                |rows, status, calls| settled(rows, status, calls, &want),
            );
        });
    }
    // The one bounded negative wait of this file: a closed window means "no originate", which
    // can only be watched for a while. The open tasks above already dialled everything, so the
    // dialer was demonstrably running; the closed tasks get CLOSED_WINDOW_WATCH in total.
    let left = CLOSED_WINDOW_WATCH.saturating_sub(closed_started.elapsed());
    let dialled_closed = rig.peer.wait_until(left, |s| {
        s.calls.iter().any(|call| closed.contains(&task_of(call)))
    });
    c.run("tasks whose window is closed launch nothing", || {
        let bad: Vec<Call> = rig
            .peer
            .calls()
            .into_iter()
            .filter(|call| closed.contains(&task_of(call)))
            .collect();
        assert!(
            !dialled_closed && bad.is_empty(),
            "originates for tasks whose calling window is closed ({windows}):\n{}",
            describe_all(&bad)
        );
    });
    for code in &closed {
        c.run(&format!("{code} is running with nothing dialled"), || {
            let st = status_ok(api, code);
            let ctx = format!("callTaskStatus {code}");
            assert_eq!(int(&st, "status", &ctx), RUNNING, "{st}");
            assert_eq!(int(&st, "dialedCount", &ctx), 0, "{st} ({windows})");
            assert_eq!(int(&st, "runningCount", &ctx), 0, "{st} ({windows})");
            assert_eq!(int(&st, "totalCount", &ctx), 3, "{st}");
            let rows = attempts(api, code);
            assert!(rows.is_empty(), "attempts of {code}: {rows:#?}");
        });
    }
    for code in &open {
        c.run(&format!("{code} dialled each number once"), || {
            let n = dial_counts(&rig.calls_of(code));
            let want: BTreeMap<String, usize> =
                lists[code].iter().map(|x| (x.clone(), 1)).collect();
            assert_eq!(n, want);
        });
    }
    c.run("no violation at the switch", || assert_no_violations(&rig));
    rig.finish(c);
}

// ------------------------------------------------------------------------------------------
// 3. Caller ID
// ------------------------------------------------------------------------------------------

const FALLBACK_PATH: &str = "/grid/e2e-rules/fallback-number";
const CITY_ORG: &str = "3340100";
const FALLBACK_CID: &str = "057187009999";

fn grid_api_config() -> String {
    format!(
        r#"
[grid_api]
ent_id = "E-RULES"
allow = ["127.0.0.1/32"]
auth = "none"

[grid_api.paths]
fallback_number = "{FALLBACK_PATH}"
"#
    )
}

/// Extra form parameters of a task.
type Form<'a> = Vec<(&'a str, &'a str)>;

/// Pushes a 保底号码 through the grid API (推送外呼保底号码, as `e2e_grid_api.rs` does).
fn push_fallback(d: &Daemon, body: Value) {
    let headers = [("Content-Type".to_owned(), "application/json".to_owned())];
    let r = http_request(
        d.listeners.http,
        "POST",
        FALLBACK_PATH,
        &headers,
        body.to_string().as_bytes(),
    )
    .unwrap_or_else(|e| d.fail(&format!("POST {FALLBACK_PATH}: {e}")));
    let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    if r.status != 200 || v["code"] != json!(200) {
        d.fail(&format!(
            "push of the 保底号码 {body}: expected 200 / code 200, got {} {}",
            r.status, r.body
        ));
    }
}

/// The caller ID of every originate follows the contract's order: the task's
/// `outboundNumberGroups` entry for orgNo + serviceId, then (no group) the grid's 保底号码 for
/// `cityOrgNo`, then the gateway's `originationCallId`; a task for which none exists is
/// refused with 400 and not created.
#[test]
fn caller_id_comes_from_groups_then_the_fallback_number_then_the_gateway() {
    let project = "P-cid";
    let mut sc = Scenario::campaign(seed(), GW, "", "");
    sc.mix = vec![(Kind::Busy, 1)];
    sc.ring_ms = (50, 150);
    let rig = Rig::start(
        ESL_PASSWORD,
        seed(),
        sc,
        &[(project, 2)],
        &grid_api_config(),
    );
    let api = &rig.api;
    add_gateway_ok(api, &gateway(GW, "rules trunk", 10));
    // A second trunk with no originationCallId, for the refusals.
    let gw_bare = "GW-NO-CID";
    add_gateway_ok(
        api,
        &gateway(gw_bare, "trunk without caller ID", 10).without("originationCallId"),
    );
    push_fallback(
        &rig.d,
        json!({"orgNo": CITY_ORG, "outboundNumber": FALLBACK_CID}),
    );

    let groups = json!([
        {"orgNo": "3340101", "serviceId": "SG1", "outboundNumber": "057187001001"},
        {"orgNo": "3340101", "serviceId": "SG2", "outboundNumber": "057187001002"},
        {"orgNo": "3340102", "serviceId": "SG2", "outboundNumber": "057187001003"},
    ])
    .to_string();
    // (task, extra parameters, the caller ID its originates must present, why)
    let cases: Vec<(&str, Form, &str, &str)> = vec![
        (
            "T-cid-group",
            vec![
                ("orgNo", "3340101"),
                ("serviceId", "SG2"),
                // A 保底号码 exists for the city too: the group comes first.
                ("cityOrgNo", CITY_ORG),
                ("outboundNumberGroups", &groups),
            ],
            "057187001002",
            "the group for orgNo 3340101 + serviceId SG2",
        ),
        (
            "T-cid-fallback",
            vec![("orgNo", "3340109"), ("cityOrgNo", CITY_ORG)],
            FALLBACK_CID,
            "no group: the 保底号码 pushed for cityOrgNo 3340100",
        ),
        (
            "T-cid-gateway",
            vec![],
            ORIGINATION_CALL_ID,
            "neither groups nor cityOrgNo: the gateway's originationCallId",
        ),
        (
            // A city with no 保底号码 pushed falls through to the gateway (the contract's
            // chain ends with the gateway's originationCallId).
            "T-cid-city-without-fallback",
            vec![("cityOrgNo", "3349999")],
            ORIGINATION_CALL_ID,
            "cityOrgNo 3349999 has no 保底号码: the gateway's originationCallId",
        ),
    ];
    let mut lists: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (i, (code, extra, _, _)) in cases.iter().enumerate() {
        let numbers = pick(301 + i as u32, 3, |_| true);
        let list = format!("L-{code}");
        import_ok(api, &list, &numbers.join("\n"), Some("3"), None, 3);
        let mut p = task(code, project, &list, GW, 1, "1");
        for (k, v) in extra {
            p = p.set(k, v);
        }
        assert_eq!(submit_ok(api, &p), 3, "totalCnt of {code}");
        lists.insert(code, numbers);
    }

    let mut c = Checks::new();
    // (d) No caller ID possible: refused with 400 naming the problem, and nothing created.
    import_ok(
        api,
        "L-cid-none",
        &pick(309, 2, |_| true).join("\n"),
        Some("3"),
        None,
        2,
    );
    let refusals: [(&str, Form); 2] = [
        ("T-cid-none", vec![]),
        (
            "T-cid-none-other-org",
            vec![
                ("orgNo", "3340105"),
                ("serviceId", "SG1"),
                ("outboundNumberGroups", &groups),
            ],
        ),
    ];
    for (code, extra) in &refusals {
        c.run(&format!("{code}: no caller ID possible -> 400"), || {
            let mut p = task(code, project, "L-cid-none", gw_bare, 1, "1");
            for (k, v) in extra {
                p = p.set(k, v);
            }
            post(api, TASK_SUBMIT, &p).err(
                400,
                &[
                    "caller",
                    "主叫",
                    "originationCallId",
                    "outboundNumberGroups",
                    "保底",
                    "cityOrgNo",
                ],
                &format!(
                    "submitCallTask {:?} on {gw_bare} (no originationCallId)",
                    p.0
                ),
            );
            task_call(api, TASK_STATUS, code).err(
                404,
                &[],
                &format!("callTaskStatus {code} after its refused submission"),
            );
        });
    }

    for (code, _, _, _) in &cases {
        start_ok(api, code);
    }
    for (code, _, want, why) in &cases {
        let numbers: BTreeSet<String> = lists[code].iter().cloned().collect();
        let (rows, _) = rig.wait_task(
            code,
            RUN_DEADLINE,
            "every number dialled and logged",
            |rows, status, calls| settled(rows, status, calls, &numbers),
        );
        let calls = rig.calls_of(code);
        c.run(&format!("{code}: each number dialled once"), || {
            let expect: BTreeMap<String, usize> = numbers.iter().map(|x| (x.clone(), 1)).collect();
            assert_eq!(dial_counts(&calls), expect, "{}", describe_all(&calls));
        });
        c.run(
            &format!("{code}: originates present {want} ({why})"),
            || {
                let bad: Vec<String> = calls
                    .iter()
                    .filter(|call| cid_of(call) != *want)
                    .map(|call| call.command.clone())
                    .collect();
                assert!(
                    bad.is_empty(),
                    "origination_caller_id_number is not {want} ({why}) in:\n{}",
                    bad.join("\n")
                );
            },
        );
        c.run(&format!("{code}: the compliance log's callerId"), || {
            assert_rows_are_the_originates(&rows, &calls);
            for r in &rows {
                assert_eq!(s(r, "callerId"), Some(*want), "{why}: {r}");
            }
        });
    }
    c.run("no violation at the switch", || assert_no_violations(&rig));
    rig.finish(c);
}

// ------------------------------------------------------------------------------------------
// 4. Recall task
// ------------------------------------------------------------------------------------------

/// After a task has dialled everything (some numbers not answered, resultDetail 25, some
/// busy, some connected), getListByResult 25 lists exactly the unanswered numbers; a recall
/// task without callListId (`originalCallTaskCode`, `originalResultDetail=25`) has that many
/// numbers and dials exactly those.
#[test]
fn a_recall_task_dials_exactly_the_numbers_that_were_not_answered() {
    let project = "P-recall";
    let first = "T-first";
    let recall = "T-recall";
    let mut sc = Scenario::campaign(seed(), GW, "", "");
    sc.mix = vec![(Kind::Live, 2), (Kind::NoAnswer, 2), (Kind::Busy, 1)];
    sc.impatient_pct = 0;
    sc.ring_ms = (50, 200);
    sc.talk_ms = (100, 400);
    let fate = |n: &str| sc.plan(n).fate;
    let lives = pick(401, 4, |n| fate(n) == Fate::Live);
    let unanswered = pick(402, 4, |n| fate(n) == NO_ANSWER);
    let busy = pick(403, 2, |n| fate(n) == BUSY);
    let mut list: Vec<String> = Vec::new();
    for (i, (l, u)) in lives.iter().zip(&unanswered).enumerate() {
        list.push(l.clone());
        list.push(u.clone());
        list.extend(busy.get(i).cloned());
    }

    let rig = Rig::start(ESL_PASSWORD, seed(), sc, &[(project, 3)], "");
    let api = &rig.api;
    add_gateway_ok(api, &gateway(GW, "rules trunk", 10));
    import_ok(api, "L-first", &list.join("\n"), Some("3"), None, 10);
    assert_eq!(
        submit_ok(api, &task(first, project, "L-first", GW, 3, "1")),
        10,
        "totalCnt of {first}"
    );
    start_ok(api, first);
    let all: BTreeSet<String> = list.iter().cloned().collect();
    let (rows, _) = rig.wait_task(
        first,
        RUN_DEADLINE,
        "every number dialled and logged",
        |rows, status, calls| settled(rows, status, calls, &all),
    );
    let first_calls = rig.calls_of(first);
    let want: BTreeSet<String> = unanswered.iter().cloned().collect();

    let mut c = Checks::new();
    c.run(
        "the first task logged 25 for exactly the unanswered numbers",
        || {
            let got: BTreeSet<String> = rows
                .iter()
                .filter(|r| detail_of(r) == "25")
                .filter_map(|r| s(r, "number").map(str::to_owned))
                .collect();
            assert_eq!(got, want, "numbers with resultDetail 25 in {rows:#?}");
            let connected = rows
                .iter()
                .filter(|r| matches!(detail_of(r).as_str(), "50" | "55"))
                .count();
            assert_eq!(connected, 4, "the live numbers were connected: {rows:#?}");
        },
    );
    c.run(
        "getListByResult 25 lists exactly the unanswered numbers",
        || {
            let ctx = "getListByResult resultDetail=25 recallLastId=0";
            let data = api
                .get(
                    CALLLOG_BY_RESULT,
                    &[
                        ("resultDetail", "25"),
                        ("callTaskCode", first),
                        ("recallLastId", "0"),
                        ("pageNum", "1"),
                        ("pageSize", "100"),
                    ],
                )
                .ok(ctx);
            let listed: Vec<String> = items(&data, ctx)
                .iter()
                .map(|i| str_of(i, "destinationNumber", ctx).to_owned())
                .collect();
            let got: BTreeSet<String> = listed.iter().cloned().collect();
            assert_eq!(got, want, "{data}");
            assert_eq!(listed.len(), want.len(), "each number once: {data}");
            assert_eq!(int(&data, "total", ctx), want.len() as i64, "{data}");
            let ids: Vec<i64> = items(&data, ctx)
                .iter()
                .map(|i| int(i, "id", ctx))
                .collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "id order: {ids:?}");
        },
    );

    let p = task(recall, project, "unused", GW, 3, "1")
        .without("callListId")
        .set("originalCallTaskCode", first)
        .set("originalResultDetail", "25");
    let total = submit_ok(api, &p);
    c.run(
        "the recall task's totalCnt is the number of unanswered numbers",
        || {
            assert_eq!(total, want.len() as i64, "totalCnt of {recall}");
            let st = status_ok(api, recall);
            let ctx = format!("callTaskStatus {recall}");
            assert_eq!(int(&st, "status", &ctx), INITIALIZED, "{st}");
            assert_eq!(int(&st, "totalCount", &ctx), want.len() as i64, "{st}");
            assert!(
                rig.calls_of(recall).is_empty(),
                "the recall task dialled before it was started"
            );
        },
    );
    start_ok(api, recall);
    let (recall_rows, _) = rig.wait_task(
        recall,
        RUN_DEADLINE,
        "the unanswered numbers dialled again",
        |rows, status, calls| settled(rows, status, calls, &want),
    );
    rig.assert_no_more_originates("after the recall task dialled its numbers");
    let recall_calls = rig.calls_of(recall);
    c.run(
        "the recall task dialled exactly the unanswered numbers, once each",
        || {
            let n = dial_counts(&recall_calls);
            let expect: BTreeMap<String, usize> = want.iter().map(|x| (x.clone(), 1)).collect();
            assert_eq!(n, expect, "{}", describe_all(&recall_calls));
            assert_rows_are_the_originates(&recall_rows, &recall_calls);
        },
    );
    c.run("the first task dialled nothing more", || {
        assert_eq!(
            rig.calls_of(first).len(),
            first_calls.len(),
            "{}",
            rig.peer.summary()
        );
    });
    c.run("no violation at the switch", || assert_no_violations(&rig));
    rig.finish(c);
}

// ------------------------------------------------------------------------------------------
// 5. Line caps across tasks
// ------------------------------------------------------------------------------------------

/// Two tasks on one gateway whose `expectCount` is 3, each allowed 3 lines on it and each
/// wanting more calls than that: the switch never carries more than 3 calls on the gateway,
/// and getAvailableList never reports more than 3 in use.
#[test]
fn a_gateways_line_cap_holds_across_tasks() {
    let (task_a, task_b) = ("T-cap-a", "T-cap-b");
    let (proj_a, proj_b) = ("P-cap-a", "P-cap-b");
    let cap = 3i64;
    let mut sc = Scenario::campaign(seed(), GW, "", "");
    // Nobody answers: every call holds its line for its whole ring, no agent is ever taken,
    // so each task's pacing keeps wanting rate x idle agents = 6 calls.
    sc.mix = vec![(Kind::NoAnswer, 3), (Kind::Busy, 1)];
    sc.ring_ms = (300, 700);
    let rig = Rig::start(ESL_PASSWORD, seed(), sc, &[(proj_a, 2), (proj_b, 2)], "");
    let api = &rig.api;
    add_gateway_ok(api, &gateway(GW, "shared trunk", cap as u32));
    let list_a = pick(501, 12, |_| true);
    let list_b = pick(502, 12, |_| true);
    import_ok(api, "L-cap-a", &list_a.join("\n"), Some("3"), None, 12);
    import_ok(api, "L-cap-b", &list_b.join("\n"), Some("3"), None, 12);
    for (code, project, list) in [(task_a, proj_a, "L-cap-a"), (task_b, proj_b, "L-cap-b")] {
        let p = task(code, project, list, GW, cap as u32, "1")
            .set("pacing", "ratio-idle")
            .set("rate", "3");
        assert_eq!(submit_ok(api, &p), 12, "totalCnt of {code}");
    }
    start_ok(api, task_a);
    start_ok(api, task_b);

    // Sample getAvailableList and both tasks' callTaskStatus while the campaign runs.
    let mut samples: Vec<Value> = Vec::new();
    let mut running_over: Vec<String> = Vec::new();
    let want_a: BTreeSet<String> = list_a.iter().cloned().collect();
    let want_b: BTreeSet<String> = list_b.iter().cloned().collect();
    let deadline = Instant::now() + RUN_DEADLINE;
    loop {
        let gw = available_gateways(api)
            .into_iter()
            .find(|g| g.get("gwCode").and_then(Value::as_str) == Some(GW))
            .unwrap_or_else(|| rig.d.fail(&format!("{GW} missing from getAvailableList")));
        samples.push(gw);
        let mut done = true;
        for (code, want) in [(task_a, &want_a), (task_b, &want_b)] {
            let st = status_ok(api, code);
            if running(&st).unwrap_or(-1) > cap {
                running_over.push(format!("{code}: {st}"));
            }
            done &= settled(&attempts(api, code), &st, &rig.calls_of(code), want);
        }
        if done {
            break;
        }
        if Instant::now() >= deadline {
            rig.d.fail(&format!(
                "the two tasks did not dial all their numbers within {RUN_DEADLINE:?}\n{}",
                rig.peer.summary()
            ));
        }
        // Sampling interval only: the loop waits for the condition above.
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut c = Checks::new();
    c.run(
        "the switch never carried more than expectCount calls",
        || {
            let max = rig.peer.state(|s| s.max_in_flight);
            assert!(
                max as i64 <= cap,
                "{max} calls in flight at once on {GW}, whose expectCount is {cap}"
            );
        },
    );
    c.run("the cap was reached (the test exercised it)", || {
        let max = rig.peer.state(|s| s.max_in_flight);
        assert_eq!(
            max as i64, cap,
            "two tasks wanting {cap} lines each never filled the gateway's {cap}"
        );
    });
    c.run("both tasks had calls up at the same time", || {
        let (a, b) = (rig.calls_of(task_a), rig.calls_of(task_b));
        let overlap = a.iter().any(|x| {
            b.iter().any(|y| {
                let (xe, ye) = (
                    x.ended_ms.unwrap_or(u64::MAX),
                    y.ended_ms.unwrap_or(u64::MAX),
                );
                x.originated_ms < ye && y.originated_ms < xe
            })
        });
        assert!(
            overlap,
            "the tasks never dialled at the same time, so they never competed for the lines"
        );
    });
    c.run(
        "getAvailableList never reported more than expectCount in use",
        || {
            let mut errs = Vec::new();
            for g in &samples {
                let ctx = "getAvailableList";
                let (conc, used, avail) = (
                    int(g, "concurrency", ctx),
                    int(g, "usedConcurrency", ctx),
                    int(g, "availableConcurrency", ctx),
                );
                if conc != cap || !(0..=cap).contains(&used) || avail != conc - used {
                    errs.push(g.to_string());
                }
            }
            assert!(
                errs.is_empty(),
                "samples with concurrency != {cap}, usedConcurrency outside 0..={cap} or \
             availableConcurrency != concurrency - usedConcurrency:\n{}",
                errs.join("\n")
            );
            let busiest = samples
                .iter()
                .filter_map(|g| g.get("usedConcurrency").and_then(int_of))
                .max()
                .unwrap_or(0);
            assert!(
                busiest >= 1,
                "{} samples and none showed a line in use",
                samples.len()
            );
        },
    );
    c.run("no task ran more calls than its lines", || {
        assert!(running_over.is_empty(), "{running_over:#?}");
    });
    c.run("every number dialled once", || {
        for (code, list) in [(task_a, &list_a), (task_b, &list_b)] {
            let want: BTreeMap<String, usize> = list.iter().map(|x| (x.clone(), 1)).collect();
            assert_eq!(dial_counts(&rig.calls_of(code)), want, "{code}");
        }
    });
    c.run("no violation at the switch", || assert_no_violations(&rig));
    rig.finish(c);
}
