//! The set-up shared by the campaign runtime's end-to-end tests against the scripted switch
//! (`e2e_campaign.rs`, `e2e_campaign_rules.rs`): the daemon's config with `[esl]` and
//! `[dialer]`, the [`Rig`] (the switch of `support/dialer_peer.rs`, the daemon connected to
//! it, projects with registered and idle agents), waiting for a task's attempts, and reading
//! compliance rows.
//!
//! `#[path]`-included next to `common`, `mgmt`, `campaign_api`, `dialer_peer` and `checks`.
//! Every wait is a condition with a deadline.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::campaign_api::{attempts, code_of, int_of, status_ok};
use crate::checks::Checks;
use crate::common::*;
use crate::dialer_peer::{Call, DialerPeer, Scenario};
use crate::mgmt::{default_config, Mgmt};

/// Upper bound for anything that should happen "soon".
pub const WAIT: Duration = Duration::from_secs(15);
/// How long "no further originate" is watched.
pub const QUIET: Duration = Duration::from_millis(1500);
/// `[dialer] ring_timeout_secs`.
pub const RING_TIMEOUT_SECS: u64 = 5;
/// `[dialer] drop_ms`, below the contract's 2 s abandon threshold so a late bridge cannot
/// happen unless gridedge is slow.
pub const DROP_MS: u64 = 1500;

/// `GRIDEDGE_E2E_SEED` when set (to reproduce a run), else `default`.
pub fn env_seed(default: u64) -> u64 {
    std::env::var("GRIDEDGE_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

// ------------------------------------------------------------------------------------------
// Setup
// ------------------------------------------------------------------------------------------

/// The management config plus `[esl]` pointing at `peer` and `[dialer]`; `extra`: config
/// sections after `[dialer]`.
pub fn config(peer: &DialerPeer, esl_password: &str, extra: &str) -> String {
    format!(
        r#"{mgmt}
[esl]
enabled = true
address = "{addr}"
password = "{esl_password}"
reconnect_min_ms = 20
reconnect_max_ms = 200

[dialer]
ring_timeout_secs = {RING_TIMEOUT_SECS}
drop_ms = {DROP_MS}
agent_dial_string = "user/{{ext}}"
{extra}
"#,
        mgmt = default_config(),
        addr = peer.addr(),
    )
}

pub fn wait_metric(d: &Daemon, what: &str, name: &str, labels: &[&str], ok: impl Fn(f64) -> bool) {
    let mut last = 0.0;
    if poll_until(WAIT, || {
        last = d.metric(name, labels).unwrap_or(0.0);
        ok(last).then_some(())
    })
    .is_none()
    {
        d.fail(&format!(
            "{what}: {name}{labels:?} is {last} after {WAIT:?}\n{}",
            d.metrics()
        ));
    }
}

/// Waits until the daemon has authenticated, subscribed and resynced with the peer.
pub fn wait_connected(d: &Daemon, peer: &DialerPeer) {
    let ok = peer.wait_server(WAIT, |s| {
        s.subscriptions >= 1
            && s.commands
                .iter()
                .any(|c| c.as_str() == "api show channels as json")
    });
    if !ok {
        d.fail(&format!(
            "the daemon did not connect to the event socket within {WAIT:?}; commands seen: \
             {:?}",
            peer.commands()
        ));
    }
    wait_metric(
        d,
        "gridedge_esl_connected = 1",
        "gridedge_esl_connected",
        &[],
        |v| v == 1.0,
    );
}

pub fn register_udp(d: &Daemon, user: &str, password: &str) -> UdpConn {
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

/// Creates `project` with `n` seats, claims, registers and makes idle every extension, then
/// waits until `idle_total` agents (of every project so far) are idle. Returns the extensions
/// and their phones (keep them).
pub fn sign_in_agents(
    d: &Daemon,
    api: &Mgmt,
    project: &str,
    n: u32,
    idle_total: u32,
) -> (Vec<String>, Vec<UdpConn>) {
    let cert = api.create_ok(project, n);
    let mut users = Vec::new();
    let mut phones = Vec::new();
    for _ in 0..n {
        let (user, pw) = api.claim(&cert);
        phones.push(register_udp(d, &user, &pw));
        users.push(user);
    }
    for user in &users {
        // The registrar tells presence asynchronously; setWorkStatus needs the phone online.
        let mut last = None;
        if poll_until(WAIT, || {
            let r = api.set_work_status(user, "1");
            let ok = r.status() == 200 && r.code() == Some(1);
            last = Some(r);
            ok.then_some(())
        })
        .is_none()
        {
            d.fail(&format!("setWorkStatus {user} 1: {last:?}"));
        }
    }
    wait_metric(
        d,
        &format!("{idle_total} agents idle"),
        "gridedge_agents",
        &["state=\"idle\""],
        |v| v == f64::from(idle_total),
    );
    (users, phones)
}

/// The scripted switch, the daemon connected to it and the signed-in agents. Fields drop in
/// order: the phones, the daemon, then the switch.
pub struct Rig {
    pub phones: Vec<UdpConn>,
    pub d: Daemon,
    pub peer: DialerPeer,
    pub api: Mgmt,
    /// The run's seed (`GRIDEDGE_E2E_SEED`), for failure messages.
    pub seed: u64,
}

impl Rig {
    /// Starts the switch (`esl_password`, `scenario`) and the daemon, waits for their
    /// connection, signs in `projects` ((projectCode, agents)) and gives the switch the
    /// agents. `extra`: config sections after `[dialer]`; `seed`: the run's seed, named by
    /// failure messages.
    pub fn start(
        esl_password: &str,
        seed: u64,
        scenario: Scenario,
        projects: &[(&str, u32)],
        extra: &str,
    ) -> Rig {
        let peer = DialerPeer::start(esl_password, scenario);
        let d = Daemon::start(&config(&peer, esl_password, extra));
        wait_connected(&d, &peer);
        let api = Mgmt::new(d.listeners.http);
        let mut agents = Vec::new();
        let mut phones = Vec::new();
        let mut total = 0;
        for (project, n) in projects {
            total += n;
            let (a, p) = sign_in_agents(&d, &api, project, *n, total);
            agents.extend(a);
            phones.extend(p);
        }
        peer.set_agents(&agents);
        Rig {
            phones,
            d,
            peer,
            api,
            seed,
        }
    }

    /// The originates the peer saw for `task` (by their `gridedge_task` variable).
    pub fn calls_of(&self, task: &str) -> Vec<Call> {
        self.peer.state(|s| {
            s.calls
                .iter()
                .filter(|c| task_of(c) == task)
                .cloned()
                .collect()
        })
    }

    /// Polls the task's attempts and callTaskStatus with the peer's calls of the task until
    /// `done` holds; fails with all three at the deadline.
    pub fn wait_task(
        &self,
        task: &str,
        within: Duration,
        what: &str,
        done: impl Fn(&[Value], &Value, &[Call]) -> bool,
    ) -> (Vec<Value>, Value) {
        let mut first = true;
        wait_attempts(
            &self.d,
            &self.api,
            &self.peer,
            self.seed,
            task,
            within,
            &format!("{task}: {what}"),
            || self.calls_of(task),
            // Poll interval only (none before the first poll): `done` is what the test
            // waits for.
            || {
                if !std::mem::replace(&mut first, false) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            },
            done,
        )
    }

    /// Asserts that the peer sees no new originate for `QUIET` (a bounded negative wait).
    pub fn assert_no_more_originates(&self, what: &str) {
        assert_no_more_originates(&self.d, &self.peer, what);
    }

    /// [`finish_checks`] on this rig.
    pub fn finish(&self, checks: Checks) {
        finish_checks(checks, &self.d, &self.peer, self.seed);
    }
}

/// Polls `task`'s attempts and callTaskStatus, with the originates `calls` returns, until
/// `done` holds, running `before_poll` before each poll (the poll interval); at the deadline
/// fails with all three (`what` says what was waited for).
#[allow(clippy::too_many_arguments)]
pub fn wait_attempts(
    d: &Daemon,
    api: &Mgmt,
    peer: &DialerPeer,
    seed: u64,
    task: &str,
    within: Duration,
    what: &str,
    calls: impl Fn() -> Vec<Call>,
    mut before_poll: impl FnMut(),
    done: impl Fn(&[Value], &Value, &[Call]) -> bool,
) -> (Vec<Value>, Value) {
    let deadline = Instant::now() + within;
    loop {
        before_poll();
        let rows = attempts(api, task);
        let status = status_ok(api, task);
        let calls = calls();
        if done(&rows, &status, &calls) {
            return (rows, status);
        }
        if Instant::now() >= deadline {
            let rows_text: Vec<String> = rows.iter().map(Value::to_string).collect();
            d.fail(&format!(
                "{what}: not within {within:?} (seed {seed})\ncallTaskStatus {status}\n\
                 {} attempts:\n{}\n{}",
                rows.len(),
                rows_text.join("\n"),
                peer.summary()
            ));
        }
    }
}

/// Asserts that the peer sees no new originate for `QUIET` (a bounded negative wait).
pub fn assert_no_more_originates(d: &Daemon, peer: &DialerPeer, what: &str) {
    let n = peer.state(|s| s.calls.len());
    if peer.wait_until(QUIET, |s| s.calls.len() > n) {
        d.fail(&format!(
            "{what}: a new originate after {n}\n{}",
            peer.summary()
        ));
    }
}

/// Fails with every failed check, the seed to rerun with, the peer's record and the daemon's
/// log, if anything failed.
pub fn finish_checks(checks: Checks, d: &Daemon, peer: &DialerPeer, seed: u64) {
    checks.finish_with(
        d,
        &format!(" (seed {seed}; rerun with GRIDEDGE_E2E_SEED={seed})"),
        || peer.summary(),
    );
}

// ------------------------------------------------------------------------------------------
// Reading rows and calls
// ------------------------------------------------------------------------------------------

/// The originate's `gridedge_task` variable.
pub fn task_of(c: &Call) -> &str {
    c.vars.get("gridedge_task").map_or("", String::as_str)
}

/// A string field of a row.
pub fn s<'a>(row: &'a Value, key: &str) -> Option<&'a str> {
    row.get(key).and_then(Value::as_str)
}

/// A row's resultDetail as a string ("" when absent).
pub fn detail_of(row: &Value) -> String {
    row.get("resultDetail")
        .and_then(code_of)
        .unwrap_or_default()
}

/// callTaskStatus's runningCount.
pub fn running(status: &Value) -> Option<i64> {
    status.get("runningCount").and_then(int_of)
}

/// Whether every call the switch saw has ended and has its attempt row, and nothing is in
/// flight.
pub fn ended_and_logged(rows: &[Value], status: &Value, calls: &[Call]) -> bool {
    calls.iter().all(Call::ended) && rows.len() >= calls.len() && running(status) == Some(0)
}
