//! The campaign runtime end to end (`/work/campaign-contract.md`): the real daemon with
//! `[esl] enabled = true` dials through the scripted switch of `support/dialer_peer.rs`,
//! which plays FreeSWITCH per "The FreeSWITCH side" (originate outcomes drawn from a seeded
//! scenario, answers with and without AMD, agent legs and bridges on `uuid_transfer`,
//! hang-ups on `uuid_kill`) and records what it decided and did for every originate.
//!
//! Agents are extensions of the task's project (createProject + getByCertificate), registered
//! over UDP with the harness's SIP client and made idle with setWorkStatus 1; `acw_secs = 0`
//! sends them straight back to idle after each call.
//!
//! The tests then hold the daemon's own outputs against the peer's record: the compliance
//! log (attempts API), callTaskStatus, the `/topic/callTaskStatus/{projectCode}` stream, the
//! compliance rates, callLog, getListByResult and the metrics.
//!
//! Determinism: every port is ephemeral; every wait is a condition with a deadline (the peer's
//! record through a condition variable, the API by polling); a number's fate depends only on
//! the seed and the number (`GRIDEDGE_E2E_SEED` overrides the seed to reproduce a run); the
//! only timed windows are the ones that assert that nothing more happens.

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

use serde_json::Value;

use campaign_api::*;
use campaign_env::*;
use checks::Checks;
use common::*;
use dialer_peer::{Call, DialerPeer, Fate, Kind, Scenario};
use mgmt::*;

/// Upper bound for a whole campaign of ~40 numbers at 4 lines (typically ~10 s).
const CAMPAIGN_DEADLINE: Duration = Duration::from_secs(180);

const ESL_PASSWORD: &str = "e2e-ClueCon";
const GW: &str = "GW-E2E";
const MOBILE_PREFIX: &str = "96";
const FIXED_PREFIX: &str = "97";
/// The contract's `abandon_threshold_ms`.
const ABANDON_THRESHOLD_MS: u64 = 2000;
/// Clock and scheduling slack around the threshold: a bridge this close to it may be judged
/// either way.
const THRESHOLD_SLACK_MS: u64 = 200;

fn seed() -> u64 {
    env_seed(0x5EED_0004_CA11)
}

// ------------------------------------------------------------------------------------------
// Setup
// ------------------------------------------------------------------------------------------

/// The switch playing `scenario`, the daemon connected to it and `agents` idle agents of
/// `project`, with their phones (keep them; they drop first, the switch last).
fn start_rig(
    scenario: Scenario,
    project: &str,
    agents: u32,
) -> (DialerPeer, Daemon, Mgmt, Vec<UdpConn>) {
    let rig = Rig::start(ESL_PASSWORD, seed(), scenario, &[(project, agents)], "");
    (rig.peer, rig.d, rig.api, rig.phones)
}

/// `count` numbers: mostly mobile (`1380013xxxx`, dialled with the mobile prefix), every
/// tenth fixed (`02155500xxx`, dialled with the fixed prefix).
fn numbers(base: u32, count: u32) -> Vec<String> {
    (0..count)
        .map(|i| {
            if i % 10 == 9 {
                format!("021555{:05}", base + i)
            } else {
                format!("1380013{:04}", base + i)
            }
        })
        .collect()
}

fn add_line(api: &Mgmt, expect_count: u32) {
    add_gateway_ok(
        api,
        &gateway(GW, "e2e trunk", expect_count)
            .set("mobilePhonePrefix", MOBILE_PREFIX)
            .set("fixedPhonePrefix", FIXED_PREFIX),
    );
}

/// Reads whatever the stream has within `within` into its queue (so the daemon never sees a
/// slow consumer while the test polls the API); doubles as the poll interval.
fn absorb(s: &mut Stomp, within: Duration) {
    if s.is_closed() {
        // Nothing to read: keep the poll interval anyway.
        std::thread::sleep(within);
        return;
    }
    let _ = s.next_frame_where(within, |_| false);
}

/// Every queued and incoming callTaskStatus message for `task`, in order, until the last one
/// agrees with `want` (the API's callTaskStatus) and nothing more arrives for a moment, or
/// `WAIT` passes.
fn task_messages(s: &mut Stomp, project: &str, task: &str, want: &Value) -> Vec<Value> {
    let topic = format!("/topic/callTaskStatus/{project}");
    let mut out: Vec<Value> = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        match s.next_message_matching(&topic, Duration::from_millis(500)) {
            Some(f) => {
                if let Some(v) = f.json() {
                    if v.get("code").and_then(Value::as_str) == Some(task) {
                        out.push(v);
                    }
                }
            }
            None => {
                if out.last().is_some_and(|m| message_agrees(m, want).is_ok())
                    || Instant::now() >= deadline
                {
                    return out;
                }
            }
        }
    }
}

/// Whether a stream message says what callTaskStatus says.
fn message_agrees(m: &Value, api: &Value) -> Result<(), String> {
    for (mk, ak) in [
        ("totalCnt", "totalCount"),
        ("successCnt", "successCount"),
        ("failCnt", "failCount"),
        ("missCnt", "missCount"),
        ("rejectCnt", "rejectCount"),
        ("runningCnt", "runningCount"),
        ("status", "status"),
    ] {
        let mv = m.get(mk).and_then(int_of);
        let av = api.get(ak).and_then(int_of);
        if mv.is_none() || mv != av {
            return Err(format!("{mk} {mv:?} != callTaskStatus {ak} {av:?}"));
        }
    }
    let (mr, ar) = (
        m.get("rate").and_then(float_of),
        api.get("rate").and_then(float_of),
    );
    match (mr, ar) {
        (Some(a), Some(b)) if (a - b).abs() < 1e-9 => Ok(()),
        _ => Err(format!("rate {mr:?} != callTaskStatus rate {ar:?}")),
    }
}

// ------------------------------------------------------------------------------------------
// What the contract says each peer record becomes
// ------------------------------------------------------------------------------------------

/// The (outcome, resultDetail) pairs the contract allows for what the peer did with `c`, or
/// why no outcome is right (the daemon misbehaved in a way other checks report).
fn allowed(c: &Call) -> Result<Vec<(&'static str, &'static str)>, String> {
    match c.plan.fate {
        Fate::Fail(cause) => {
            if c.killed_ms.is_some() {
                return Err("gridedge killed the call while it rang".into());
            }
            Ok(vec![match cause {
                "USER_BUSY" => ("busy", "20"),
                "NO_ANSWER" | "NO_USER_RESPONSE" => ("no_answer", "25"),
                "UNALLOCATED_NUMBER" => ("failed", "1"),
                "CALL_REJECTED" => ("failed", "10"),
                _ => ("failed", "5"),
            }])
        }
        Fate::Machine => Ok(vec![("machine", "25")]),
        Fate::Live => {
            let answered = c.answered_ms.ok_or("a live call without an answer")?;
            if let Some(bridged) = c.bridged_ms {
                // Contract 5: after a bridge, recv_bye/recv_cancel on U = the customer hung
                // up (55), anything else the agent (50).
                let detail = if matches!(c.disposition.as_str(), "recv_bye" | "recv_cancel") {
                    "55"
                } else {
                    "50"
                };
                let gap = bridged.saturating_sub(answered);
                let mut ok = Vec::new();
                if gap <= ABANDON_THRESHOLD_MS + THRESHOLD_SLACK_MS {
                    ok.push(("connected", detail));
                }
                if gap + THRESHOLD_SLACK_MS > ABANDON_THRESHOLD_MS {
                    // Bridged too late: abandoned (computed from the timestamps); the contract
                    // does not say which resultDetail such a call gets.
                    ok.extend([("abandoned", detail), ("abandoned", "35")]);
                }
                return Ok(ok);
            }
            if c.stuck {
                return Err("nobody connected or dropped the person (peer hung up)".into());
            }
            if c.customer_gave_up {
                return Ok(vec![("abandoned", "28")]);
            }
            if c.killed_ms.is_some() {
                return Ok(vec![("abandoned", "35")]);
            }
            Err("a live call that ended without bridge, kill or hang-up".into())
        }
    }
}

fn detail_class(detail: &str) -> &'static str {
    match detail {
        "50" | "55" => "success",
        "28" | "30" | "32" | "35" | "40" => "miss",
        "1" | "5" | "10" | "20" | "25" => "fail",
        _ => "other",
    }
}

fn ms(row: &Value, key: &str) -> Option<i64> {
    row.get(key).and_then(int_of)
}

/// Checks one compliance row against the peer's record of the same call.
fn check_row(row: &Value, c: &Call, task: &str) -> Result<(), String> {
    let mut errs = Vec::new();
    if s(row, "number") != Some(c.number.as_str()) {
        errs.push(format!(
            "number {:?}, the peer dialled {}",
            row.get("number"),
            c.number
        ));
    }
    if s(row, "callerId") != Some(ORIGINATION_CALL_ID) {
        errs.push(format!(
            "callerId {:?}, want the gateway's originationCallId {ORIGINATION_CALL_ID}",
            row.get("callerId")
        ));
    }
    let outcome = s(row, "outcome").unwrap_or("");
    let detail = detail_of(row);
    match allowed(c) {
        Ok(ok) => {
            if !ok.iter().any(|(o, d)| *o == outcome && *d == detail) {
                errs.push(format!(
                    "outcome/resultDetail {outcome}/{detail}, the peer's record allows {ok:?}"
                ));
            }
        }
        Err(why) => errs.push(format!("{why} (row says {outcome}/{detail})")),
    }
    let dialed = ms(row, "dialedMs");
    let answered = ms(row, "answeredMs");
    let bridged = ms(row, "bridgedMs");
    let ended = ms(row, "endedMs");
    match (dialed, ended) {
        (Some(a), Some(e)) if a <= e => {}
        _ => errs.push(format!("dialedMs {dialed:?} / endedMs {ended:?}")),
    }
    if let Some(a) = dialed {
        if (a - c.originated_ms as i64).abs() > 3000 {
            errs.push(format!(
                "dialedMs {a} is {} ms from the originate's arrival at the switch",
                a - c.originated_ms as i64
            ));
        }
    }
    if answered.is_some() != c.answered_ms.is_some() {
        errs.push(format!(
            "answeredMs {answered:?}, the peer answered: {:?}",
            c.answered_ms
        ));
    }
    if bridged.is_some() != c.bridged_ms.is_some() {
        errs.push(format!(
            "bridgedMs {bridged:?}, the peer bridged: {:?}",
            c.bridged_ms
        ));
    }
    if let (Some(a), Some(b)) = (answered, bridged) {
        if b < a {
            errs.push(format!("bridgedMs {b} before answeredMs {a}"));
        }
    }
    if let (Some(x), Some(e)) = (bridged.or(answered), ended) {
        if e < x {
            errs.push(format!("endedMs {e} before answer/bridge {x}"));
        }
    }
    let agent = row.get("agent").cloned().unwrap_or(Value::Null);
    match (&c.bridged_ext, &c.transfer_ext) {
        (Some(ext), _) => {
            if agent.as_str() != Some(ext.as_str()) {
                errs.push(format!("agent {agent}, the peer bridged to {ext}"));
            }
        }
        (None, None) => {
            if !agent.is_null() {
                errs.push(format!(
                    "agent {agent}, but no agent was ever sent the call"
                ));
            }
        }
        (None, Some(_)) => {} // transfer raced the customer's hang-up: either is fine
    }
    if let Some(attempt) = c.vars.get("gridedge_task") {
        if attempt != task {
            errs.push(format!(
                "originate's gridedge_task {attempt:?}, want {task}"
            ));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "row {row}\n    peer: {}\n    - {}",
            c.describe(),
            errs.join("\n    - ")
        ))
    }
}

/// Checks the originate command itself (contract, "The FreeSWITCH side" 1).
fn check_originate(c: &Call, task: &str) -> Result<(), String> {
    let mut errs = Vec::new();
    let want = [
        (
            "origination_caller_id_number",
            ORIGINATION_CALL_ID.to_owned(),
        ),
        ("originate_timeout", RING_TIMEOUT_SECS.to_string()),
        ("ignore_early_media", "true".to_owned()),
        ("gridedge_task", task.to_owned()),
    ];
    for (k, v) in want {
        if c.vars.get(k) != Some(&v) {
            errs.push(format!("{k}={:?}, want {v:?}", c.vars.get(k)));
        }
    }
    if !c
        .vars
        .get("gridedge_attempt")
        .is_some_and(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()))
    {
        errs.push(format!(
            "gridedge_attempt={:?}, want a number",
            c.vars.get("gridedge_attempt")
        ));
    }
    if c.gateway != GW {
        errs.push(format!("gateway {}, want {GW}", c.gateway));
    }
    let prefix = if Scenario::is_mobile(&c.number) {
        MOBILE_PREFIX
    } else {
        FIXED_PREFIX
    };
    if c.dial != format!("{prefix}{}", c.number) {
        errs.push(format!(
            "dials {:?}, want prefix {prefix} + {}",
            c.dial, c.number
        ));
    }
    if c.app != "&park()" {
        errs.push(format!("application {:?}, want &park()", c.app));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {}", c.command, errs.join("; ")))
    }
}

/// The main campaign's numbers: 40 to dial; 2 more blacklisted before the import (the import
/// skips them); 2 of the 40 blacklisted after the submission (logged as suppressed when their
/// turn comes, never dialled).
fn campaign_numbers() -> (Vec<String>, [String; 2], [String; 2]) {
    let list = numbers(0, 40);
    let pre_black = ["13800139998".to_owned(), "13800139999".to_owned()];
    let post_black = [list[5].clone(), list[17].clone()];
    (list, pre_black, post_black)
}

/// The main campaign's scenario exercises every branch for its numbers (a property of the
/// seed, checked by the harness self-test too).
fn assert_rich_scenario(scenario: &Scenario) {
    let (list, _, post_black) = campaign_numbers();
    let plans: Vec<_> = list
        .iter()
        .filter(|n| !post_black.contains(n))
        .map(|n| scenario.plan(n))
        .collect();
    let count = |f: &dyn Fn(&dialer_peer::Plan) -> bool| plans.iter().filter(|p| f(p)).count();
    let lives = count(&|p| p.fate == Fate::Live);
    assert!(
        lives >= 8
            && count(&|p| p.fate == Fate::Machine) >= 1
            && count(&|p| p.fate == Fate::Fail("USER_BUSY")) >= 1
            && count(&|p| p.fate == Fate::Fail("NO_ANSWER")) >= 1
            && count(&|p| p.fate == Fate::Fail("CALL_REJECTED")) >= 1
            && count(&|p| p.fate == Fate::Live && p.customer_ends) >= 1
            && count(&|p| p.fate == Fate::Live && !p.customer_ends) >= 1,
        "seed {} gives a poor scenario ({lives} live): pick another GRIDEDGE_E2E_SEED; {plans:?}",
        seed()
    );
}

/// Polls until `done` holds on the attempts and status, absorbing the stream meanwhile.
/// Returns the attempts and the status.
#[allow(clippy::too_many_arguments)]
fn wait_campaign(
    d: &Daemon,
    api: &Mgmt,
    peer: &DialerPeer,
    stream: &mut Stomp,
    task: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&[Value], &Value, &[Call]) -> bool,
) -> (Vec<Value>, Value) {
    wait_attempts(
        d,
        api,
        peer,
        seed(),
        task,
        within,
        what,
        || peer.calls(),
        || absorb(stream, Duration::from_millis(200)),
        done,
    )
}

// ------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------

/// The scenario: a predictive task on one gateway with 4 lines and 4 agents dials
/// ~40 numbers against the seeded switch; every statement the daemon makes about the run
/// must agree with what the switch saw and did.
#[test]
fn predictive_campaign_agrees_with_the_switch() {
    let project = "P-camp";
    let task_code = "T-camp";
    let lines = 4u32;
    let scenario = Scenario::campaign(seed(), GW, MOBILE_PREFIX, FIXED_PREFIX);
    let (peer, mut d, api, _phones) = start_rig(scenario.clone(), project, 4);
    add_line(&api, 10);

    let (list, pre_black, post_black) = campaign_numbers();
    assert_eq!(blacklist_add_ok(&api, &pre_black.join(",")), 2);
    let mut text = list.clone();
    text.insert(3, pre_black[0].clone());
    text.push(pre_black[1].clone());
    let imported = import_ok(&api, "L-camp", &text.join("\n"), Some("3"), None, 40);
    let reasons: Vec<String> = skipped(&imported, "import")
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert_eq!(reasons, ["blacklisted", "blacklisted"], "{imported}");

    assert_rich_scenario(&scenario);

    let mut p = task(task_code, project, "L-camp", GW, lines, "1").set("rate", "2");
    p = p.set("pacing", "predictive");
    assert_eq!(submit_ok(&api, &p), 40, "totalCnt");
    assert_eq!(blacklist_add_ok(&api, &post_black.join(",")), 2);
    let mut stream = task_status_stream(&d, project);
    start_ok(&api, task_code);

    // Every number has an attempt, every call the switch saw has ended and is in the log.
    let expected_numbers: BTreeSet<String> = list.iter().cloned().collect();
    let (rows, status) = wait_campaign(
        &d,
        &api,
        &peer,
        &mut stream,
        task_code,
        CAMPAIGN_DEADLINE,
        "every number attempted and every call ended and logged",
        |rows, status, calls| {
            let numbers: BTreeSet<String> = rows
                .iter()
                .filter_map(|r| s(r, "number").map(str::to_owned))
                .collect();
            let with_call = rows
                .iter()
                .filter(|r| r.get("callId").is_some_and(|c| !c.is_null()))
                .count();
            numbers == expected_numbers
                && calls.iter().all(Call::ended)
                && with_call >= calls.len()
                && status.get("runningCount").and_then(int_of) == Some(0)
        },
    );
    let calls = peer.calls();
    let mut c = Checks::new();

    // --- the switch's own record
    c.run("the peer saw no contract violation", || {
        let v = peer.state(|s| s.violations.clone());
        assert!(
            v.is_empty(),
            "violations (double-booked agents, ...): {v:#?}"
        );
    });
    c.run("concurrency never exceeded the task's lines", || {
        let max = peer.state(|s| s.max_in_flight);
        assert!(
            max <= lines as usize,
            "{max} calls in flight at once at the switch, the task has {lines} lines"
        );
    });
    c.run("no originate for a blacklisted number", || {
        let black: BTreeSet<&String> = pre_black.iter().chain(&post_black).collect();
        let bad: Vec<&Call> = calls.iter().filter(|c| black.contains(&c.number)).collect();
        assert!(bad.is_empty(), "blacklisted numbers dialled: {bad:#?}");
    });
    c.run("each number dialled once (no retry configured)", || {
        let mut seen = BTreeMap::new();
        for call in &calls {
            *seen.entry(call.number.clone()).or_insert(0) += 1;
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "numbers dialled more than once: {twice:?}"
        );
        let dialled: BTreeSet<String> = seen.keys().cloned().collect();
        let want: BTreeSet<String> = expected_numbers
            .iter()
            .filter(|n| !post_black.contains(n))
            .cloned()
            .collect();
        assert_eq!(dialled, want, "the numbers dialled");
    });
    c.run("originate commands", || {
        let bad: Vec<String> = calls
            .iter()
            .filter_map(|c| check_originate(c, task_code).err())
            .collect();
        assert!(bad.is_empty(), "malformed originates:\n{}", bad.join("\n"));
        let uuids: BTreeSet<&String> = calls.iter().map(|c| &c.uuid).collect();
        assert_eq!(uuids.len(), calls.len(), "origination_uuid reused");
    });
    c.run("machines are hung up by gridedge", || {
        let left: Vec<String> = calls
            .iter()
            .filter(|c| c.plan.fate == Fate::Machine && c.killed_ms.is_none())
            .map(Call::describe)
            .collect();
        assert!(
            left.is_empty(),
            "machines gridedge never sent uuid_kill for:\n{}",
            left.join("\n")
        );
    });
    c.run("every person is connected (agents >= lines)", || {
        // With 4 agents and at most 4 calls in flight, an agent is idle whenever a person
        // answers (acw_secs = 0), so nobody may be dropped for want of an agent.
        let dropped: Vec<String> = calls
            .iter()
            .filter(|c| c.plan.fate == Fate::Live && c.bridged_ms.is_none() && !c.customer_gave_up)
            .map(Call::describe)
            .collect();
        assert!(
            dropped.is_empty(),
            "persons never connected although an agent was free:\n{}",
            dropped.join("\n")
        );
        assert!(
            calls.iter().any(|c| c.bridged_ms.is_some()),
            "no call was connected at all"
        );
    });
    c.run("only the operations of the contract were sent", || {
        let other = peer.state(|s| s.other_commands.clone());
        assert!(other.is_empty(), "unexpected bgapi commands: {other:?}");
        let api_calls: Vec<String> = peer
            .commands()
            .into_iter()
            .filter(|c| c.starts_with("api ") && (c.contains("originate") || c.contains("uuid_")))
            .collect();
        assert!(
            api_calls.is_empty(),
            "call control must use bgapi, not api: {api_calls:?}"
        );
    });

    // --- the compliance log against the record
    let originated: Vec<&Value> = rows
        .iter()
        .filter(|r| r.get("callId").is_some_and(|c| !c.is_null()))
        .collect();
    let suppressed: Vec<&Value> = rows
        .iter()
        .filter(|r| r.get("callId").is_none_or(Value::is_null))
        .collect();
    c.run(
        "one compliance row per originate, agreeing with the switch",
        || {
            let mut by_id: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
            for r in &originated {
                by_id
                    .entry(s(r, "callId").unwrap_or("?").to_owned())
                    .or_default()
                    .push(r);
            }
            let mut errs = Vec::new();
            for call in &calls {
                match by_id.remove(&call.uuid).as_deref() {
                    Some([row]) => {
                        if let Err(e) = check_row(row, call, task_code) {
                            errs.push(e);
                        }
                    }
                    Some(more) => errs.push(format!(
                        "{} rows for call {}: {more:?}",
                        more.len(),
                        call.describe()
                    )),
                    None => errs.push(format!("no row for call {}", call.describe())),
                }
            }
            for (id, rows) in by_id {
                errs.push(format!(
                    "rows for callId {id} the switch never saw: {rows:?}"
                ));
            }
            assert!(
                errs.is_empty(),
                "{} disagreement(s):\n{}",
                errs.len(),
                errs.join("\n")
            );
        },
    );
    c.run("the compliance log's shape", || {
        let ids: Vec<i64> = rows.iter().map(|r| ms(r, "id").unwrap_or(-1)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
        for r in &rows {
            for key in [
                "id",
                "number",
                "callerId",
                "dialedMs",
                "answeredMs",
                "bridgedMs",
                "endedMs",
                "outcome",
                "agent",
                "callId",
                "resultDetail",
            ] {
                assert!(r.get(key).is_some(), "row without {key}: {r}");
            }
            let outcome = s(r, "outcome").unwrap_or("");
            assert!(
                [
                    "connected",
                    "abandoned",
                    "no_answer",
                    "busy",
                    "failed",
                    "machine",
                    "suppressed"
                ]
                .contains(&outcome),
                "outcome {outcome:?}: {r}"
            );
        }
    });
    c.run(
        "numbers blacklisted after the import are logged as suppressed",
        || {
            let mut got: Vec<&str> = suppressed.iter().filter_map(|r| s(r, "number")).collect();
            got.sort();
            let mut want: Vec<&str> = post_black.iter().map(String::as_str).collect();
            want.sort();
            assert_eq!(got, want, "rows without callId: {suppressed:?}");
            for r in &suppressed {
                assert_eq!(s(r, "outcome"), Some("suppressed"), "{r}");
                assert!(r["answeredMs"].is_null() && r["bridgedMs"].is_null(), "{r}");
                assert!(r["agent"].is_null(), "{r}");
            }
        },
    );

    // --- counters: callTaskStatus, the stream, the compliance rates, metrics
    let class_count = |class: &str| {
        originated
            .iter()
            .filter(|r| detail_class(&detail_of(r)) == class)
            .count() as i64
    };
    let success = class_count("success");
    let miss = class_count("miss");
    let fail = class_count("fail");
    let reject = originated.iter().filter(|r| detail_of(r) == "10").count() as i64;
    let n_orig = originated.len() as i64;
    let n_supp = suppressed.len() as i64;
    c.run("callTaskStatus counts what the switch did", || {
        let ctx = "callTaskStatus";
        assert_eq!(int(&status, "successCount", ctx), success, "{status}");
        assert_eq!(int(&status, "missCount", ctx), miss, "{status}");
        assert_eq!(int(&status, "rejectCount", ctx), reject, "{status}");
        let f = int(&status, "failCount", ctx);
        assert!(
            f == fail || f == fail + n_supp,
            "failCount {f}, want {fail} (or {} counting the suppressed): {status}",
            fail + n_supp
        );
        let dialed = int(&status, "dialedCount", ctx);
        assert!(
            dialed == n_orig || dialed == n_orig + n_supp,
            "dialedCount {dialed}, want {n_orig} attempts (or {} with the suppressed): {status}",
            n_orig + n_supp
        );
        assert_eq!(int(&status, "totalCount", ctx), 40, "{status}");
        assert_eq!(int(&status, "runningCount", ctx), 0, "{status}");
        assert_eq!(
            int(&status, "status", ctx),
            RUNNING,
            "a task with nothing left to dial stays running: {status}"
        );
        assert_eq!(float(&status, "rate", ctx), 2.0, "{status}");
    });
    c.run("the stream", || {
        let msgs = task_messages(&mut stream, project, task_code, &status);
        assert!(
            !msgs.is_empty(),
            "no callTaskStatus message for {task_code}"
        );
        let last = msgs.last().unwrap();
        if let Err(e) = message_agrees(last, &status) {
            panic!("the last message {last} disagrees with callTaskStatus {status}: {e}");
        }
        assert!(
            msgs.iter()
                .any(|m| m.get("status").and_then(int_of) == Some(RUNNING)),
            "no message with status 2 after the start"
        );
        for key in ["successCnt", "failCnt", "missCnt", "rejectCnt"] {
            let seq: Vec<i64> = msgs
                .iter()
                .filter_map(|m| m.get(key).and_then(int_of))
                .collect();
            assert!(
                seq.windows(2).all(|w| w[0] <= w[1]),
                "{key} goes down: {seq:?}"
            );
        }
        for m in &msgs {
            let running = m.get("runningCnt").and_then(int_of).unwrap_or(-1);
            assert!(
                (0..=i64::from(lines)).contains(&running),
                "runningCnt {running} outside 0..={lines}: {m}"
            );
            assert_eq!(m.get("totalCnt").and_then(int_of), Some(40), "{m}");
        }
        assert!(
            msgs.len() as i64 >= n_orig / 2,
            "only {} messages for {n_orig} attempts: every counter change is published",
            msgs.len()
        );
    });
    let connected = originated
        .iter()
        .filter(|r| s(r, "outcome") == Some("connected"))
        .count() as i64;
    let abandoned = originated
        .iter()
        .filter(|r| s(r, "outcome") == Some("abandoned"))
        .count() as i64;
    c.run("compliance: live answers and abandons", || {
        let data = compliance_ok(&api, task_code);
        for window in ["last24Hours", "last30Days"] {
            let w = &data[window];
            assert_eq!(
                int(w, "live", window),
                connected + abandoned,
                "{window}.live = connected + abandoned: {data}"
            );
            assert_eq!(int(w, "abandoned", window), abandoned, "{window}: {data}");
            let rate = float(w, "rate", window);
            assert!(
                rate_matches(rate, connected + abandoned, abandoned),
                "{window}.rate {rate} is not {abandoned}/{}: {data}",
                connected + abandoned
            );
        }
        let r24 = float(&data["last24Hours"], "rate", "24h");
        let r30 = float(&data["last30Days"], "rate", "30d");
        assert!(
            (float(&status, "abandonRate24h", "status") - r24).abs() < 1e-9
                && (float(&status, "abandonRate30d", "status") - r30).abs() < 1e-9,
            "callTaskStatus abandon rates {status} differ from compliance {data}"
        );
    });
    c.run("callLog getList", || {
        let (total, log) = call_log(&api, task_code);
        assert!(
            total >= n_orig && log.len() as i64 == total,
            "callLog total {total} for {n_orig} attempts ({} items)",
            log.len()
        );
        let starts: Vec<i64> = log.iter().filter_map(|i| ms(i, "startTimestamp")).collect();
        assert!(
            starts.windows(2).all(|w| w[0] >= w[1]),
            "newest first: {starts:?}"
        );
        for r in &originated {
            let number = s(r, "number").unwrap_or("");
            let items: Vec<&Value> = log
                .iter()
                .filter(|i| s(i, "destinationNumber") == Some(number))
                .collect();
            let [item] = items.as_slice() else {
                panic!("callLog has {} items for {number}: {items:?}", items.len());
            };
            let detail = detail_of(r);
            assert_eq!(
                item.get("resultDetail").and_then(code_of).as_deref(),
                Some(detail.as_str()),
                "callLog resultDetail for {number}: {item} vs attempt {r}"
            );
            let result = match detail_class(&detail) {
                "success" => "10",
                "miss" => "30",
                _ => "20",
            };
            assert_eq!(
                item.get("result").and_then(code_of).as_deref(),
                Some(result),
                "callLog result for {number}: {item}"
            );
            let agent = r.get("agent").and_then(Value::as_str).unwrap_or("");
            assert_eq!(
                s(item, "callerIdNumber"),
                Some(agent),
                "callerIdNumber = the agent's extension: {item} vs {r}"
            );
            assert_eq!(s(item, "callTaskCode"), Some(task_code), "{item}");
            assert_eq!(s(item, "recordFile"), Some(""), "{item}");
            assert_eq!(s(item, "recordFileQiniu"), Some(""), "{item}");
            let (st, en) = (ms(item, "startTimestamp"), ms(item, "endTimestamp"));
            assert!(
                matches!((st, en), (Some(a), Some(b)) if a <= b),
                "start/end timestamps: {item}"
            );
        }
    });
    let busy_or_no_answer: BTreeSet<String> = originated
        .iter()
        .filter(|r| matches!(detail_of(r).as_str(), "20" | "25"))
        .filter_map(|r| s(r, "number").map(str::to_owned))
        .collect();
    c.run("getListByResult", || {
        let ctx = "getListByResult 20,25";
        let data = api
            .get(
                CALLLOG_BY_RESULT,
                &[
                    ("resultDetail", "20,25"),
                    ("callTaskCode", task_code),
                    ("recallLastId", "0"),
                    ("pageSize", "1000"),
                ],
            )
            .ok(ctx);
        let got: BTreeSet<String> = items(&data, ctx)
            .iter()
            .filter_map(|i| s(i, "destinationNumber").map(str::to_owned))
            .collect();
        assert_eq!(got, busy_or_no_answer, "{data}");
        assert_eq!(
            int(&data, "total", ctx),
            busy_or_no_answer.len() as i64,
            "{data}"
        );
        let ids: Vec<i64> = items(&data, ctx)
            .iter()
            .filter_map(|i| ms(i, "id"))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "id order: {ids:?}");
    });
    c.run(
        "a recall task takes the numbers whose result was 20 or 25",
        || {
            let p = task("T-recall", project, "L-camp", GW, 1, "1")
                .without("callListId")
                .set("originalCallTaskCode", task_code)
                .set("originalResultDetail", "20,25");
            assert_eq!(
                submit_ok(&api, &p),
                busy_or_no_answer.len() as i64,
                "recall totalCnt"
            );
        },
    );
    c.run("metrics", || {
        let metrics = d.metrics();
        let t = format!("task=\"{task_code}\"");
        let mut by_outcome: BTreeMap<String, i64> = BTreeMap::new();
        for r in &rows {
            *by_outcome
                .entry(s(r, "outcome").unwrap_or("?").to_owned())
                .or_insert(0) += 1;
        }
        for (outcome, n) in &by_outcome {
            let o = format!("outcome=\"{outcome}\"");
            let got = metric_sum(&metrics, "gridedge_dialer_attempts_total", &[&t, &o]);
            assert_eq!(
                got,
                Some(*n as f64),
                "gridedge_dialer_attempts_total{{{t},{o}}}\n{metrics}"
            );
        }
        assert_eq!(
            metric_sum(&metrics, "gridedge_dialer_calls_in_flight", &[&t]),
            Some(0.0),
            "calls in flight\n{metrics}"
        );
        assert_eq!(
            metric_sum(&metrics, "gridedge_dialer_launches_total", &[&t]),
            Some(calls.len() as f64),
            "launches = originates\n{metrics}"
        );
        for w in ["24h", "30d"] {
            assert!(
                metric_sum(
                    &metrics,
                    "gridedge_dialer_abandon_rate",
                    &[&t, &format!("window=\"{w}\"")]
                )
                .is_some(),
                "gridedge_dialer_abandon_rate{{{t},window=\"{w}\"}}\n{metrics}"
            );
        }
    });
    c.run("agents are idle again", || {
        let idle = || {
            d.metric("gridedge_agents", &["state=\"idle\""])
                .unwrap_or(0.0)
        };
        assert!(
            poll_until(WAIT, || (idle() == 4.0).then_some(())).is_some(),
            "gridedge_agents{{state=\"idle\"}} is {} after the campaign, want 4",
            idle()
        );
    });
    d.assert_alive("after the campaign");
    finish_checks(c, &d, &peer, seed());
}

/// A SIGKILLed daemon started again on the same state dir answers the same compliance log,
/// compliance rates and task counters.
#[test]
fn compliance_log_survives_a_restart() {
    let project = "P-restart";
    let task_code = "T-restart";
    let scenario = Scenario::campaign(seed() ^ 0x7E57, GW, MOBILE_PREFIX, FIXED_PREFIX);
    let (peer, mut d, api, _phones) = start_rig(scenario, project, 2);
    add_line(&api, 10);
    let list = numbers(100, 12);
    import_ok(&api, "L-restart", &list.join("\n"), Some("3"), None, 12);
    submit_ok(&api, &task(task_code, project, "L-restart", GW, 2, "1"));
    let mut stream = task_status_stream(&d, project);
    start_ok(&api, task_code);
    let want: BTreeSet<String> = list.iter().cloned().collect();
    let (rows, status) = wait_campaign(
        &d,
        &api,
        &peer,
        &mut stream,
        task_code,
        CAMPAIGN_DEADLINE,
        "every number attempted",
        |rows, status, calls| {
            rows.iter()
                .filter_map(|r| s(r, "number").map(str::to_owned))
                .collect::<BTreeSet<_>>()
                == want
                && ended_and_logged(rows, status, calls)
        },
    );
    let compliance = compliance_ok(&api, task_code);
    assert!(!rows.is_empty());

    d.kill9();
    d.restart();
    let api = Mgmt::new(d.listeners.http);
    let mut c = Checks::new();
    c.run("the attempts are the same rows", || {
        let after = attempts(&api, task_code);
        assert!(
            after == rows,
            "attempts before the restart:\n{rows:#?}\nafter:\n{after:#?}"
        );
    });
    c.run("the compliance rates are the same", || {
        assert_eq!(compliance_ok(&api, task_code), compliance);
    });
    c.run("the task and its counters are the same", || {
        let after = status_ok(&api, task_code);
        for key in [
            "status",
            "totalCount",
            "successCount",
            "failCount",
            "missCount",
            "rejectCount",
            "dialedCount",
        ] {
            assert_eq!(
                after.get(key).and_then(int_of),
                status.get(key).and_then(int_of),
                "{key}: before {status}, after {after}"
            );
        }
    });
    d.assert_alive("after the restart");
    finish_checks(c, &d, &peer, seed());
}

/// `continuousFailed = 5` against a switch where every call is busy: the task pauses itself
/// (status 3) after the fifth failure and dials nothing more.
#[test]
fn consecutive_failures_pause_the_task_by_itself() {
    let project = "P-fail";
    let task_code = "T-fail";
    let mut scenario = Scenario::campaign(seed(), GW, MOBILE_PREFIX, FIXED_PREFIX);
    scenario.mix = vec![(Kind::Busy, 1)];
    scenario.ring_ms = (50, 100);
    let (peer, mut d, api, _phones) = start_rig(scenario, project, 2);
    add_line(&api, 10);
    let list = numbers(200, 20);
    import_ok(&api, "L-fail", &list.join("\n"), Some("3"), None, 20);
    // One line, so the fifth failure ends before a sixth call can start.
    let p = task(task_code, project, "L-fail", GW, 1, "1").set("continuousFailed", "5");
    submit_ok(&api, &p);
    let mut stream = task_status_stream(&d, project);
    start_ok(&api, task_code);

    wait_campaign(
        &d,
        &api,
        &peer,
        &mut stream,
        task_code,
        Duration::from_secs(60),
        "the task paused by itself",
        |_, status, calls| {
            status.get("status").and_then(int_of) == Some(PAUSED)
                && calls.iter().all(Call::ended)
                && status.get("runningCount").and_then(int_of) == Some(0)
        },
    );
    assert_no_more_originates(&d, &peer, "after the automatic pause");
    let mut c = Checks::new();
    c.run("exactly five originates", || {
        assert_eq!(peer.state(|s| s.calls.len()), 5, "{}", peer.summary());
    });
    c.run("five busy attempts", || {
        let rows = attempts(&api, task_code);
        assert_eq!(rows.len(), 5, "{rows:#?}");
        for r in &rows {
            assert_eq!(
                (s(r, "outcome"), detail_of(r).as_str()),
                (Some("busy"), "20"),
                "{r}"
            );
        }
    });
    c.run("callTaskStatus", || {
        let st = status_ok(&api, task_code);
        assert_eq!(int(&st, "status", "paused"), PAUSED, "{st}");
        assert_eq!(int(&st, "failCount", "paused"), 5, "{st}");
        assert_eq!(int(&st, "dialedCount", "paused"), 5, "{st}");
        assert_eq!(int(&st, "successCount", "paused"), 0, "{st}");
        assert_eq!(int(&st, "totalCount", "paused"), 20, "{st}");
    });
    c.run("the pause is published", || {
        let st = status_ok(&api, task_code);
        let msgs = task_messages(&mut stream, project, task_code, &st);
        assert!(
            msgs.iter()
                .any(|m| m.get("status").and_then(int_of) == Some(PAUSED)),
            "no status 3 message: {msgs:?}"
        );
        if let Some(last) = msgs.last() {
            message_agrees(last, &st).unwrap_or_else(|e| panic!("last message {last}: {e}"));
        }
    });
    d.assert_alive("after the automatic pause");
    finish_checks(c, &d, &peer, seed());
}

/// Pause: no call is launched after the pause is answered, calls in flight finish normally
/// (connected calls are not cut). Start again: dialling resumes. End: nothing is launched
/// after it, the rest stays undialled, and the task cannot start again.
#[test]
fn pause_stops_new_calls_and_end_is_final() {
    let project = "P-pause";
    let task_code = "T-pause";
    let mut scenario = Scenario::campaign(seed(), GW, MOBILE_PREFIX, FIXED_PREFIX);
    scenario.mix = vec![(Kind::Live, 1)];
    scenario.impatient_pct = 0;
    scenario.talk_ms = (1500, 2500);
    let (peer, mut d, api, _phones) = start_rig(scenario, project, 3);
    add_line(&api, 10);
    let list = numbers(300, 15);
    import_ok(&api, "L-pause", &list.join("\n"), Some("3"), None, 15);
    submit_ok(&api, &task(task_code, project, "L-pause", GW, 3, "1"));
    let mut stream = task_status_stream(&d, project);
    start_ok(&api, task_code);

    if !peer.wait_until(WAIT, |s| {
        s.calls.iter().filter(|c| c.bridged_ms.is_some()).count() >= 2
    }) {
        d.fail(&format!(
            "two calls connected within {WAIT:?}\n{}",
            peer.summary()
        ));
    }
    pause_ok(&api, task_code);
    let paused_at = now_ms() as i64;
    let bridged_at_pause: Vec<String> = peer.state(|s| {
        s.calls
            .iter()
            .filter(|c| c.bridged_ms.is_some() && !c.ended())
            .map(|c| c.uuid.clone())
            .collect()
    });
    let mut c = Checks::new();
    c.run("status 3", || {
        assert_eq!(status_code(&api, task_code), PAUSED)
    });
    let (rows, _) = wait_campaign(
        &d,
        &api,
        &peer,
        &mut stream,
        task_code,
        WAIT,
        "the calls in flight at the pause finished and were logged",
        ended_and_logged,
    );
    assert_no_more_originates(&d, &peer, "while paused");
    let n_paused = peer.state(|s| s.calls.len());
    c.run("nothing launched after the pause", || {
        let late: Vec<&Value> = rows
            .iter()
            .filter(|r| ms(r, "dialedMs").is_some_and(|t| t > paused_at))
            .collect();
        assert!(
            late.is_empty(),
            "attempts dialled after the pause answered at {paused_at}: {late:?}"
        );
    });
    c.run("calls in flight at the pause finished normally", || {
        let calls = peer.calls();
        for uuid in &bridged_at_pause {
            let call = calls.iter().find(|c| &c.uuid == uuid).unwrap();
            assert!(
                call.killed_ms.is_none(),
                "a connected call was cut by the pause: {}",
                call.describe()
            );
            let row = rows
                .iter()
                .find(|r| s(r, "callId") == Some(uuid.as_str()))
                .unwrap_or_else(|| panic!("no row for {}", call.describe()));
            assert_eq!(s(row, "outcome"), Some("connected"), "{row}");
        }
    });

    start_ok(&api, task_code);
    if !peer.wait_until(WAIT, |s| s.calls.len() > n_paused) {
        d.fail(&format!(
            "dialling did not resume after callTaskStart\n{}",
            peer.summary()
        ));
    }
    end_ok(&api, task_code);
    let ended_at = now_ms() as i64;
    let (rows, status) = wait_campaign(
        &d,
        &api,
        &peer,
        &mut stream,
        task_code,
        WAIT,
        "the calls in flight at the end finished and were logged",
        ended_and_logged,
    );
    assert_no_more_originates(&d, &peer, "after the end");
    c.run("ended is final", || {
        assert_eq!(int(&status, "status", "ended"), ENDED, "{status}");
        task_call(&api, TASK_START, task_code).err(409, &[], "callTaskStart after callTaskEnd");
        assert_eq!(status_code(&api, task_code), ENDED);
    });
    c.run(
        "nothing launched after the end; the rest stays undialled",
        || {
            let late: Vec<&Value> = rows
                .iter()
                .filter(|r| ms(r, "dialedMs").is_some_and(|t| t > ended_at))
                .collect();
            assert!(
                late.is_empty(),
                "attempts dialled after the end answered at {ended_at}: {late:?}"
            );
            let dialled: BTreeSet<&str> = rows.iter().filter_map(|r| s(r, "number")).collect();
            assert!(
                dialled.len() < list.len(),
                "every number was dialled before the end: {dialled:?}"
            );
            assert_eq!(
                int(&status, "dialedCount", "ended"),
                rows.len() as i64,
                "{status}"
            );
            assert_eq!(int(&status, "totalCount", "ended"), 15, "{status}");
            assert_eq!(
                peer.state(|s| s.calls.len()),
                rows.len(),
                "one row per originate"
            );
        },
    );
    c.run("no violation at the switch", || {
        let v = peer.state(|s| s.violations.clone());
        assert!(v.is_empty(), "{v:#?}");
        assert!(peer.state(|s| s.max_in_flight) <= 3);
    });
    d.assert_alive("after the end");
    finish_checks(c, &d, &peer, seed());
}

/// The test harness itself: the scripted switch driven through gridedge's own ESL client
/// (`gridedge::switch::client`), the way the campaign runtime will drive it. Checks the job
/// bodies, the channel events and their order, the agent leg and the bridge, kills (also of
/// a ringing call), and that the record counts calls in flight and catches a double-booked
/// agent and a kill of an unknown call. Independent of the campaign runtime.
#[test]
fn the_scripted_switch_plays_freeswitch() {
    use gridedge::metrics::Metrics;
    use gridedge::switch::client::{EslClient, EslClientConfig, SwitchFeed};
    use gridedge::switch::esl::EslEvent;
    use std::sync::Arc;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    assert_rich_scenario(&Scenario::campaign(seed(), GW, MOBILE_PREFIX, FIXED_PREFIX));
    let mut scenario = Scenario::campaign(seed(), GW, MOBILE_PREFIX, FIXED_PREFIX);
    scenario.impatient_pct = 0;
    // Long enough for the kill of a ringing call and the second transfer to land in time
    // even on a loaded machine.
    scenario.ring_ms = (800, 800);
    scenario.talk_ms = (4000, 4000);
    scenario.machine_ms = 10_000;
    let pick = |fate: Fate, skip: usize| -> String {
        (0..100_000)
            .map(|i| format!("1390000{i:04}"))
            .filter(|n| scenario.plan(n).fate == fate)
            .nth(skip)
            .expect("the mix has every fate")
    };
    let (busy, machine, live, live2) = (
        pick(Fate::Fail("USER_BUSY"), 0),
        pick(Fate::Machine, 0),
        pick(Fate::Live, 0),
        pick(Fate::Live, 1),
    );
    let peer = DialerPeer::start(ESL_PASSWORD, scenario.clone());
    peer.set_agents(&["8000".to_owned(), "8001".to_owned()]);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let seen: Vec<EslEvent> = rt.block_on(async {
        let (tx, mut feed) = mpsc::channel(4096);
        let mut config = EslClientConfig::new(peer.addr().to_string(), ESL_PASSWORD);
        config.reconnect_min = Duration::from_millis(20);
        config.reconnect_max = Duration::from_millis(200);
        config.api_timeout = Duration::from_secs(10);
        let shutdown = CancellationToken::new();
        let (client, _task) =
            EslClient::spawn(config, tx, Arc::new(Metrics::new()), shutdown.clone());
        assert!(client.wait_connected(WAIT).await, "the client connects");
        let mut seen: Vec<EslEvent> = Vec::new();
        // Reads the feed until an event `name` for `uuid` arrives (keeping everything seen).
        macro_rules! expect_event {
            ($name:expr, $uuid:expr) => {{
                let (name, uuid): (&str, &str) = ($name, $uuid);
                let found = seen
                    .iter()
                    .position(|e| e.name() == Some(name) && e.unique_id() == Some(uuid));
                match found {
                    Some(i) => seen[i].clone(),
                    None => loop {
                        match tokio::time::timeout(WAIT, feed.recv()).await {
                            Ok(Some(SwitchFeed::Event(e))) => {
                                let hit = e.name() == Some(name) && e.unique_id() == Some(uuid);
                                seen.push(e.clone());
                                if hit {
                                    break e;
                                }
                            }
                            Ok(Some(_)) => {}
                            other => panic!(
                                "no {name} for {uuid} (feed: {other:?}); seen: {:?}\n{}",
                                seen.iter()
                                    .map(|e| (
                                        e.name().map(str::to_owned),
                                        e.unique_id().map(str::to_owned)
                                    ))
                                    .collect::<Vec<_>>(),
                                peer.summary()
                            ),
                        }
                    },
                }
            }};
        }
        let originate = |number: &str, uuid: &str| {
            format!(
                "originate {{origination_uuid={uuid},origination_caller_id_number=\
                 {ORIGINATION_CALL_ID},originate_timeout=5,ignore_early_media=true,\
                 gridedge_task=T-self,gridedge_attempt=1}}sofia/gateway/{GW}/{}{number} &park()",
                MOBILE_PREFIX
            )
        };

        // A busy number: the hang-up with its cause, then the job's -ERR.
        let u = dialer_peer::new_uuid();
        let body = client.bgapi(&originate(&busy, &u)).await.expect("job");
        assert_eq!(body, "-ERR USER_BUSY\n");
        let create = expect_event!("CHANNEL_CREATE", &u);
        assert_eq!(create.get("Call-Direction"), Some("outbound"));
        assert_eq!(create.get("variable_gridedge_task"), Some("T-self"));
        let hangup = expect_event!("CHANNEL_HANGUP_COMPLETE", &u);
        assert_eq!(hangup.get("Hangup-Cause"), Some("USER_BUSY"));

        // A ringing call killed: the job fails with ORIGINATOR_CANCEL.
        let u_ring = dialer_peer::new_uuid();
        let job = tokio::spawn({
            let client = client.clone();
            let cmd = originate(&busy, &u_ring);
            async move { client.bgapi(&cmd).await }
        });
        expect_event!("CHANNEL_CREATE", &u_ring);
        let kill = client
            .bgapi(&format!("uuid_kill {u_ring}"))
            .await
            .expect("kill");
        assert_eq!(kill, "+OK\n");
        assert_eq!(
            job.await.expect("no panic").expect("job"),
            "-ERR ORIGINATOR_CANCEL\n"
        );
        expect_event!("CHANNEL_HANGUP_COMPLETE", &u_ring);

        // A machine: answered with amd_result MACHINE, hung up on uuid_kill.
        let u_m = dialer_peer::new_uuid();
        let body = client.bgapi(&originate(&machine, &u_m)).await.expect("job");
        assert_eq!(body, format!("+OK {u_m}\n"));
        let answer = expect_event!("CHANNEL_ANSWER", &u_m);
        assert_eq!(answer.get("variable_amd_result"), Some("MACHINE"));
        assert_eq!(
            client
                .bgapi(&format!("uuid_kill {u_m}"))
                .await
                .expect("kill"),
            "+OK\n"
        );
        let hangup = expect_event!("CHANNEL_HANGUP_COMPLETE", &u_m);
        assert_eq!(
            hangup.get("variable_sip_hangup_disposition"),
            Some("send_bye")
        );

        // A person: transferred to 8000, the agent leg, the bridge.
        let u_l = dialer_peer::new_uuid();
        let body = client.bgapi(&originate(&live, &u_l)).await.expect("job");
        assert_eq!(body, format!("+OK {u_l}\n"));
        let answer = expect_event!("CHANNEL_ANSWER", &u_l);
        assert_ne!(answer.get("variable_amd_result"), Some("MACHINE"));
        let t = client
            .bgapi(&format!("uuid_transfer {u_l} bridge:user/8000 inline"))
            .await
            .expect("transfer");
        assert_eq!(t, "+OK\n");
        let bridge = expect_event!("CHANNEL_BRIDGE", &u_l);
        let agent_leg = bridge
            .get("Other-Leg-Unique-ID")
            .expect("Other-Leg-Unique-ID")
            .to_owned();
        let agent_create = expect_event!("CHANNEL_CREATE", &agent_leg);
        assert_eq!(agent_create.get("variable_dialed_user"), Some("8000"));
        assert_eq!(agent_create.get("Call-Direction"), Some("outbound"));
        expect_event!("CHANNEL_ANSWER", &agent_leg);

        // A second person sent to 8000 while it talks: recorded as a double booking.
        let u_2 = dialer_peer::new_uuid();
        let body = client.bgapi(&originate(&live2, &u_2)).await.expect("job");
        assert_eq!(body, format!("+OK {u_2}\n"));
        client
            .bgapi(&format!("uuid_transfer {u_2} bridge:user/8000 inline"))
            .await
            .expect("transfer");
        client
            .bgapi(&format!("uuid_kill {u_2}"))
            .await
            .expect("kill");
        expect_event!("CHANNEL_HANGUP_COMPLETE", &u_2);

        // The first call ends by itself after its talk time.
        let hangup = expect_event!("CHANNEL_HANGUP_COMPLETE", &u_l);
        let want = if scenario.plan(&live).customer_ends {
            "recv_bye"
        } else {
            "send_bye"
        };
        assert_eq!(hangup.get("variable_sip_hangup_disposition"), Some(want));
        expect_event!("CHANNEL_HANGUP_COMPLETE", &agent_leg);

        // A kill of a uuid never originated.
        let r = client
            .bgapi("uuid_kill 00000000-0000-4000-a000-000000000000")
            .await;
        assert_eq!(r.expect("answered"), "-ERR No such channel!\n");
        shutdown.cancel();
        seen
    });

    let seqs: Vec<u64> = seen.iter().filter_map(EslEvent::sequence).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "Event-Sequence increases in wire order: {seqs:?}"
    );
    let calls = peer.calls();
    assert_eq!(calls.len(), 5, "{}", peer.summary());
    assert!(calls.iter().all(Call::ended), "{}", peer.summary());
    peer.state(|s| {
        assert_eq!(s.in_flight, 0);
        assert_eq!(s.max_in_flight, 2, "the two persons overlapped");
        assert!(s.agent_busy.is_empty(), "{:?}", s.agent_busy);
        assert_eq!(s.violations.len(), 2, "{:#?}", s.violations);
        assert!(
            s.violations[0].contains("agent 8000 sent call"),
            "{:#?}",
            s.violations
        );
        assert!(
            s.violations[1].contains("never originated"),
            "{:#?}",
            s.violations
        );
    });
    let by_number = |n: &str, i: usize| {
        calls
            .iter()
            .filter(|c| c.number == n)
            .nth(i)
            .unwrap()
            .clone()
    };
    assert!(by_number(&busy, 1).killed_ms.is_some() && by_number(&busy, 1).answered_ms.is_none());
    assert!(by_number(&machine, 0).killed_ms.is_some());
    let l = by_number(&live, 0);
    assert_eq!(l.bridged_ext.as_deref(), Some("8000"));
    assert!(l.bridged_ms >= l.answered_ms && l.killed_ms.is_none());
    assert_eq!(allowed(&l).unwrap()[0].0, "connected");
    assert_eq!(
        allowed(&by_number(&live2, 0)).unwrap(),
        [("abandoned", "35")]
    );
    assert_eq!(allowed(&by_number(&busy, 0)).unwrap(), [("busy", "20")]);
}
