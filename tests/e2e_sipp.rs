//! SIPp (package sip-tester, MD5 digest only in 3.6.1) against the real daemon.
//! The scenario `tests/sipp/reg_contact.xml` makes SIPp itself fail the call when the 200 does
//! not list the Contact it registered.

mod common;

use common::*;

/// SIPp 3.6.1 only answers MD5 challenges, and answers the *first* WWW-Authenticate: offer MD5
/// only so the test does not depend on the challenge order.
const MD5_ONLY: &str = r#"
[sip.auth]
algorithms = ["MD5"]
"#;

fn sipp_register(d: &Daemon, users: &[String], rate: u32) -> SippRun {
    let csv = sipp_users_csv(users, "127.0.0.1");
    run_sipp(
        &sipp_scenario("reg_contact.xml"),
        &csv,
        d.listeners.udp(),
        users.len() as u32,
        rate,
        &[],
    )
}

#[test]
fn sipp_registers_with_digest_and_sees_its_binding() {
    require_tool("sipp");
    let d = Daemon::start(MD5_ONLY);
    let before = d
        .metric("gridedge_sip_requests_total", &["REGISTER", "\"200\""])
        .unwrap_or(0.0);

    let run = sipp_register(&d, &["1001".to_string()], 1);
    if !run.status.success() {
        d.fail(&format!("SIPp registration failed\n{}", run.report()));
    }
    assert!(
        run.traces.contains("binding 1001@127.0.0.1:"),
        "SIPp did not log the captured binding\n{}",
        run.report()
    );

    // the daemon agrees: one binding, one more successful REGISTER
    assert_eq!(d.bindings_active(), 1.0, "{}", d.metrics());
    let after = d
        .metric("gridedge_sip_requests_total", &["REGISTER", "\"200\""])
        .unwrap_or(0.0);
    assert!(
        after >= before + 1.0,
        "REGISTER 200 counter did not move: {before} -> {after}"
    );
    let challenged = d.metric("gridedge_sip_requests_total", &["REGISTER", "\"401\""]);
    assert!(
        challenged.unwrap_or(0.0) >= 1.0,
        "no REGISTER 401 counted: {}",
        d.metrics()
    );

    // an independent client sees SIPp's binding too
    let mut c = d.udp_client();
    let q = query_bindings(&mut c, "1001", "query after SIPp");
    assert_eq!(
        q.contacts().len(),
        1,
        "expected exactly SIPp's binding:\n{}",
        q.raw
    );
    assert_binding_listed(&q, "sip:1001@127.0.0.1:", "query after SIPp");
}

#[test]
fn sipp_registers_many_users() {
    require_tool("sipp");
    let d = Daemon::start(MD5_ONLY);
    let users: Vec<String> = DEFAULT_USERS.map(|u| u.to_string()).collect();
    let run = sipp_register(&d, &users, 10);
    if !run.status.success() {
        d.fail(&format!(
            "SIPp run of {} registrations failed\n{}",
            users.len(),
            run.report()
        ));
    }
    for u in &users {
        assert!(
            run.traces.contains(&format!("binding {u}@127.0.0.1:")),
            "no binding logged for {u}\n{}",
            run.report()
        );
    }
    assert_eq!(
        d.bindings_active(),
        users.len() as f64,
        "bindings_active after {} users:\n{}",
        users.len(),
        d.metrics()
    );
    // every user's AoR has its own binding
    let mut c = d.udp_client();
    for u in ["1001", "1005", "1010"] {
        let q = query_bindings(&mut c, u, &format!("query {u}"));
        assert_binding_listed(&q, &format!("sip:{u}@127.0.0.1:"), &format!("query {u}"));
    }
}
