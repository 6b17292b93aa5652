//! baresip 1.0 (package baresip-core; MD5 digest only) registers, re-registers and
//! unregisters against the real daemon.
//!
//! Invocation (verified against Kamailio 5.6 first):
//!   HOME=<tmp> baresip -f <tmp>/cfg -s -t <secs>
//! with `<tmp>/cfg/config` = `sip_listen 127.0.0.1:0`, `module_path /usr/lib/baresip/modules`,
//! `module_app account.so` (no audio modules, no console) and `<tmp>/cfg/accounts` =
//! `<sip:1001@127.0.0.1:PORT;transport=udp>;auth_pass=...;regint=N`.
//! `-s` traces every SIP message to stdout: without it baresip prints only the first
//! "200 OK" of a registration, not the refreshes. SIGTERM makes it unregister (expires=0).
//! baresip refreshes about every 0.9 x regint seconds and sends each refresh unauthenticated
//! first (a new 401 every time against Kamailio).

#[path = "support/baresip.rs"]
mod baresip;
mod common;

use std::time::Duration;

use baresip::*;
use common::*;

/// baresip answers the first WWW-Authenticate it sees and fails on SHA-256 ("Function not
/// implemented") whenever a SHA-256 challenge is present, even beside MD5. The daemon's default
/// challenges are SHA-256 and MD5, and its default `md5_only_user_agents` offers baresip's
/// User-Agent MD5 alone: this runs on those defaults to prove it. min_expires is lowered so refreshes come quickly.
const CONFIG: &str = r#"
[sip]
min_expires_secs = 4
"#;

fn baresip_register_cycle(transport: &str, user: &str) {
    let d = Daemon::start(CONFIG);
    let port = match transport {
        "udp" => d.listeners.udp().port(),
        _ => d.listeners.tcp().port(),
    };
    let regint = 5;
    let account = format!(
        "<sip:{user}@127.0.0.1:{port};transport={transport}>;auth_pass={};regint={regint}",
        password_of(user)
    );
    let mut b = Baresip::start(&account);

    // 1. first registration
    b.wait_for(&d, "a 200 OK to REGISTER", Duration::from_secs(15), |b| {
        b.register_responses(200) >= 1
    });
    let status_line = format!(
        "{user}@127.0.0.1: {{0/{}/v4}} 200 OK",
        transport.to_uppercase()
    );
    assert!(
        b.output().contains(&status_line),
        "baresip did not report the registration ({status_line:?})"
    );
    assert_eq!(
        d.bindings_active(),
        1.0,
        "bindings after baresip registered:\n{}",
        d.metrics()
    );

    // the binding is visible to another client querying the same AoR
    let contacts = b.sent_contacts();
    assert!(!contacts.is_empty(), "no Contact in baresip's trace");
    let mut c = d.udp_client();
    let mut q_uac = Uac::new(user);
    q_uac.domain = format!("127.0.0.1:{port}");
    let pw = password_of(user);
    let q = register(&mut c, &mut q_uac, &RegisterOpts::new(&pw, None), "query").response;
    assert_eq!(q.code, 200, "query:\n{}", q.raw);
    assert_binding_listed(&q, &contacts[0], "query for baresip's binding");

    // 2. re-registration: at least two successful REGISTERs (refresh after ~0.9 x regint)
    b.wait_for(
        &d,
        "a second 200 OK (refresh)",
        Duration::from_secs(4 * regint),
        |b| b.register_responses(200) >= 2,
    );
    let ok = d
        .metric("gridedge_sip_requests_total", &["REGISTER", "\"200\""])
        .unwrap_or(0.0);
    assert!(
        ok >= 3.0,
        "REGISTER 200s counted by the daemon: {ok} (want >= 3: 2 baresip + 1 query)"
    );
    assert_eq!(
        d.bindings_active(),
        1.0,
        "a refresh must not add a binding:\n{}",
        d.metrics()
    );

    // 3. SIGTERM: baresip unregisters (Contact ;expires=0) and the binding goes away
    let before = b.register_responses(200);
    let status = b.proc.terminate(Duration::from_secs(15));
    assert!(status.is_some(), "baresip did not exit after SIGTERM");
    assert!(
        b.register_responses(200) > before,
        "baresip's un-REGISTER was not accepted:\n{}",
        tail(&b.output(), 8000)
    );
    if poll_until(Duration::from_secs(5), || {
        (d.bindings_active() == 0.0).then_some(())
    })
    .is_none()
    {
        d.fail(&format!(
            "binding not removed by the un-REGISTER:\n{}",
            d.metrics()
        ));
    }
    assert_eq!(
        b.register_responses(401) + b.register_responses(200),
        count_requests(&b.output(), "REGISTER"),
        "every REGISTER got a 401 or 200 (no other status, no loss):\n{}",
        tail(&b.output(), 8000)
    );
}

fn count_requests(trace: &str, method: &str) -> usize {
    let prefix = format!("{method} ");
    trace
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.trim_end().ends_with("SIP/2.0"))
        .count()
}

#[test]
fn baresip_registers_and_reregisters_over_udp() {
    baresip_register_cycle("udp", "1001");
}

#[test]
fn baresip_registers_and_reregisters_over_tcp() {
    baresip_register_cycle("tcp", "1002");
}
