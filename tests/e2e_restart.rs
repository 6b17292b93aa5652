//! Persistence: SIGTERM flushes bindings to SQLite and a restart with the same state dir
//! restores them (checked with an authenticated REGISTER query, RFC 3261 §10.2.3).

mod common;

use std::time::Duration;

use common::*;

#[test]
fn sigterm_then_restart_keeps_bindings() {
    let mut d = Daemon::start("");
    let mut c = d.udp_client();
    register_ok(
        &mut c,
        "1006",
        "<sip:1006@192.0.2.60:5060>",
        Some(3600),
        "1006 a",
    );
    register_ok(
        &mut c,
        "1006",
        "<sip:1006@192.0.2.61:5062>",
        Some(1800),
        "1006 b",
    );
    register_ok(
        &mut c,
        "1007",
        "<sip:1007@192.0.2.70:5060>",
        Some(600),
        "1007",
    );
    // a binding removed before the shutdown must stay removed
    register_ok(
        &mut c,
        "1007",
        "<sip:1007@192.0.2.71:5060>",
        Some(600),
        "1007 doomed",
    );
    let pw = password_of("1007");
    let mut uac = Uac::new("1007");
    let opts = RegisterOpts::new(&pw, Some("<sip:1007@192.0.2.71:5060>;expires=0".into()));
    let r = register(&mut c, &mut uac, &opts, "remove 1007 doomed").response;
    assert_eq!(r.code, 200, "{}", r.raw);
    assert_eq!(d.bindings_active(), 3.0, "{}", d.metrics());

    let status = d.sigterm();
    assert!(
        status.success(),
        "SIGTERM must be a clean shutdown, got {status}\n{}",
        d.logs()
    );
    assert!(
        d.state_dir.join("gridedge.db").exists(),
        "no gridedge.db in the state dir"
    );

    d.restart();
    assert_eq!(
        d.bindings_active(),
        3.0,
        "restored bindings:\n{}",
        d.metrics()
    );
    let mut c = d.udp_client();
    let q = query_bindings(&mut c, "1006", "query 1006 after restart");
    assert_eq!(q.contacts().len(), 2, "{}", q.raw);
    let ea = assert_binding_listed(&q, "sip:1006@192.0.2.60:5060", "1006 a after restart");
    let eb = assert_binding_listed(&q, "sip:1006@192.0.2.61:5062", "1006 b after restart");
    // expiry is absolute: the time spent down counts, nothing was extended
    assert!(ea <= 3600 && ea > 3500, "1006 a expires {ea}");
    assert!(eb <= 1800 && eb > 1700, "1006 b expires {eb}");
    let q = query_bindings(&mut c, "1007", "query 1007 after restart");
    assert_binding_listed(&q, "sip:1007@192.0.2.70:5060", "1007 after restart");
    assert!(
        q.binding("192.0.2.71").is_none(),
        "removed binding came back:\n{}",
        q.raw
    );

    // and the restored daemon keeps working: refresh + a second clean restart
    register_ok(
        &mut c,
        "1006",
        "<sip:1006@192.0.2.60:5060>",
        Some(3000),
        "refresh after restart",
    );
    let status = d.sigterm();
    assert!(status.success(), "second SIGTERM: {status}");
    d.restart();
    let mut c = d.udp_client();
    let q = query_bindings(&mut c, "1006", "query after the second restart");
    let ea = assert_binding_listed(&q, "sip:1006@192.0.2.60:5060", "refreshed binding");
    assert!(ea <= 3000 && ea > 2900, "refreshed expires {ea}");
}

#[test]
fn kill9_then_restart_recovers() {
    // Bindings are written behind, so a SIGKILL may lose the latest ones; what must hold is
    // that the state dir is not left unusable: the daemon restarts, serves and persists again.
    let mut d = Daemon::start("");
    let mut c = d.udp_client();
    register_ok(
        &mut c,
        "1008",
        "<sip:1008@192.0.2.80:5060>",
        None,
        "before kill -9",
    );
    d.kill9();
    d.restart();
    let mut c = d.udp_client();
    options_ok(&mut c, "after kill -9");
    let q = query_bindings(&mut c, "1008", "query after kill -9");
    eprintln!(
        "kill -9: binding {} survived (not required)",
        if q.binding("192.0.2.80").is_some() {
            ""
        } else {
            "NOT"
        }
    );
    register_ok(
        &mut c,
        "1008",
        "<sip:1008@192.0.2.81:5060>",
        None,
        "after kill -9",
    );
    let status = d.sigterm();
    assert!(
        status.success(),
        "SIGTERM after a kill -9 recovery: {status}"
    );
    d.restart();
    let mut c = d.udp_client();
    let q = query_bindings(&mut c, "1008", "query after recovery + restart");
    assert_binding_listed(
        &q,
        "sip:1008@192.0.2.81:5060",
        "binding made after recovery",
    );
    // listeners.json was rewritten for the new process (ports may differ)
    assert!(poll_until(Duration::from_secs(1), || d
        .state_dir
        .join("listeners.json")
        .exists()
        .then_some(()))
    .is_some());
}
