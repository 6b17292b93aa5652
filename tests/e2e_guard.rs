//! The guard: wrong passwords are refused, repeated failures ban the (user, source IP) pair,
//! floods ban the source IP, allow-listed sources are never limited.
//! All of 127.0.0.0/8 is local on Linux: each test uses its own source addresses so a ban never
//! hits the test's other traffic (127.0.0.1 and 127.0.0.10 are allow-listed by the harness).

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Sends `n` OPTIONS back to back from `conn`, then collects answers until the line is quiet.
fn burst_options(conn: &mut UdpConn, n: usize) -> Vec<SipResponse> {
    let mut uac = Uac::new("flood");
    for _ in 0..n {
        let m = uac.request(conn, "OPTIONS", &[], "");
        conn.send(m.as_bytes()).expect("send");
    }
    let mut answers = Vec::new();
    while let Some(r) = conn.recv_response(SILENCE) {
        answers.push(r);
    }
    answers
}

/// One send, one short wait: `None` means the daemon stayed silent.
fn send_once(conn: &mut dyn SipConn, msg: &str, cseq: u32) -> Option<SipResponse> {
    conn.send(msg.as_bytes()).expect("send");
    conn.recv_for_cseq(cseq, SILENCE)
}

#[test]
fn wrong_password_refused_then_user_source_pair_banned() {
    // flood limit out of the way: only the auth-failure counter may ban here
    let mut d = Daemon::start(
        r#"
[sip.guard]
max_requests = 10000
auth_failure_limit = 5
"#,
    );
    let failures0 = d.metric("gridedge_sip_auth_failures", &[]).unwrap_or(0.0);
    let bans0 = d.metric("gridedge_sip_guard_bans", &[]).unwrap_or(0.0);

    let mut attacker = UdpConn::new("127.0.0.3", d.listeners.udp());
    let contact = format!("<sip:1002@{}>", attacker.local_addr());
    let mut last_401 = None;
    for i in 1..=5 {
        let mut uac = Uac::new("1002");
        let opts = RegisterOpts::new("wrong-password", Some(contact.clone()));
        let r = register(
            &mut attacker,
            &mut uac,
            &opts,
            &format!("wrong password #{i}"),
        );
        assert_eq!(
            r.response.code, 401,
            "wrong password #{i} must get 401 again:\n{}",
            r.response.raw
        );
        assert!(
            !r.response.challenges().is_empty(),
            "the 401 to a wrong password must carry a fresh challenge:\n{}",
            r.response.raw
        );
        last_401 = Some((uac, r.response));
    }
    let failures = d.metric("gridedge_sip_auth_failures", &[]).unwrap_or(0.0);
    assert!(
        failures >= failures0 + 5.0,
        "auth failures counter: {failures0} -> {failures}\n{}",
        d.metrics()
    );

    // now (1002, 127.0.0.3) is banned. (a) The right password on the fresh nonce of the last
    // 401 must not get in, and must get no answer at all.
    let pw = password_of("1002");
    let (mut uac, challenge) = last_401.unwrap();
    let ch = pick_challenge(&challenge, None, "banned pair");
    let auth = authorization(&ch, "1002", &pw, "REGISTER", &uac.request_uri(), 1);
    let m = uac.request(
        &attacker,
        "REGISTER",
        &[("Contact", contact.clone()), ("Authorization", auth)],
        "",
    );
    let authed = send_once(&mut attacker, &m, uac.cseq);
    // (b) a new, unauthenticated REGISTER for the pair: no answer either
    let mut uac = Uac::new("1002");
    let m = uac.request(&attacker, "REGISTER", &[("Contact", contact.clone())], "");
    let unauthed = send_once(&mut attacker, &m, uac.cseq);
    let show = |r: &Option<SipResponse>| match r {
        None => "no answer".to_string(),
        Some(r) => format!("{} {}", r.code, r.reason),
    };
    if authed.as_ref().is_some_and(|r| r.code == 200) {
        d.fail(&format!(
            "a banned (user, source) pair registered with the right password:\n{}",
            authed.unwrap().raw
        ));
    }
    let bans = d.metric("gridedge_sip_guard_bans", &[]).unwrap_or(0.0);
    assert!(
        bans >= bans0 + 1.0,
        "guard bans counter: {bans0} -> {bans}\n{}",
        d.metrics()
    );

    // the ban is per pair: same source, another user, is served ...
    let c3 = format!("<sip:1003@{}>", attacker.local_addr());
    register_ok(
        &mut attacker,
        "1003",
        &c3,
        None,
        "other user from the banned source",
    );
    // ... and the same user from another source is served
    let mut other = UdpConn::new("127.0.0.4", d.listeners.udp());
    let c2 = format!("<sip:1002@{}>", other.local_addr());
    register_ok(
        &mut other,
        "1002",
        &c2,
        None,
        "banned user from another source",
    );
    d.assert_alive("auth ban");
    // checked last so the per-pair checks above always run
    if authed.is_some() || unauthed.is_some() {
        d.fail(&format!(
            "banned pair (1002, 127.0.0.3) must get no answers: authenticated REGISTER (right \
             password) -> {}; unauthenticated REGISTER -> {}",
            show(&authed),
            show(&unauthed)
        ));
    }
}

#[test]
fn unknown_user_and_wrong_password_are_indistinguishable() {
    let d = Daemon::start("");
    let mut c = d.udp_client();

    let mut known = Uac::new("1004");
    let mut unknown = Uac::new("7777");
    let contact = format!("<sip:x@{}>", c.local_addr());
    let opts = RegisterOpts::new("not-the-password", Some(contact));
    let k = register(&mut c, &mut known, &opts, "known user, wrong password");
    let u = register(&mut c, &mut unknown, &opts, "unknown user");

    for (what, a, b) in [
        ("first challenge", &k.challenge, &u.challenge),
        ("answer to the digest", &k.response, &u.response),
    ] {
        assert_eq!(a.code, 401, "{what} (known user):\n{}", a.raw);
        assert_eq!(b.code, 401, "{what} (unknown user):\n{}", b.raw);
        assert_eq!(a.reason, b.reason, "{what}: reason phrases differ");
        let names = |r: &SipResponse| {
            let mut v: Vec<String> = r.headers.iter().map(|(n, _)| n.clone()).collect();
            v.sort();
            v
        };
        assert_eq!(
            names(a),
            names(b),
            "{what}: header sets differ\n{}\n{}",
            a.raw,
            b.raw
        );
        let shapes = |r: &SipResponse| {
            r.challenges()
                .iter()
                .map(|c| {
                    (
                        c.algorithm.clone(),
                        c.realm.clone(),
                        c.qop.clone(),
                        c.shape(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            shapes(a),
            shapes(b),
            "{what}: challenges differ\n{}\n{}",
            a.raw,
            b.raw
        );
        assert_eq!(a.body, b.body, "{what}: bodies differ");
    }
    // both offered algorithms, SHA-256 first (the configured order), one header each
    let algs: Vec<String> = k
        .challenge
        .challenges()
        .iter()
        .map(|c| c.algorithm.to_ascii_uppercase())
        .collect();
    assert_eq!(
        algs,
        ["SHA-256", "MD5"],
        "challenge order:\n{}",
        k.challenge.raw
    );
    assert!(
        k.challenge.challenges().iter().all(|c| c
            .qop
            .as_deref()
            .is_some_and(|q| q.contains("auth"))
            && c.realm == "gridedge"),
        "challenges must offer qop=auth in realm gridedge:\n{}",
        k.challenge.raw
    );
}

#[test]
fn flood_bans_the_source_ip_but_serves_other_sources() {
    let d = Daemon::start("");
    let bans0 = d.metric("gridedge_sip_guard_bans", &[]).unwrap_or(0.0);
    let mut flooder = UdpConn::new("127.0.0.2", d.listeners.udp());

    let started = Instant::now();
    let answers = burst_options(&mut flooder, 40);
    assert!(
        started.elapsed() < Duration::from_secs(2) + SILENCE,
        "burst took too long to be a flood within one 2 s window"
    );
    assert!(
        !answers.is_empty() && answers.len() <= 16,
        "max_requests = 16 per 2 s: {} of 40 requests answered",
        answers.len()
    );
    assert!(
        answers.iter().all(|r| r.code == 200),
        "OPTIONS answers must be 200"
    );

    // still banned later on (ban_secs = 300)
    std::thread::sleep(Duration::from_millis(100));
    let mut uac = Uac::new("flood");
    let m = uac.request(&flooder, "OPTIONS", &[], "");
    assert!(
        send_once(&mut flooder, &m, uac.cseq).is_none(),
        "banned source 127.0.0.2 still answered"
    );

    // another source is served normally, OPTIONS and REGISTER
    let mut good = UdpConn::new("127.0.0.5", d.listeners.udp());
    options_ok(&mut good, "other source during the ban");
    let contact = format!("<sip:1005@{}>", good.local_addr());
    register_ok(
        &mut good,
        "1005",
        &contact,
        None,
        "other source during the ban",
    );

    let bans = d.metric("gridedge_sip_guard_bans", &[]).unwrap_or(0.0);
    assert!(
        bans >= bans0 + 1.0,
        "guard bans counter: {bans0} -> {bans}\n{}",
        d.metrics()
    );
    let guard_lines: Vec<String> = d
        .metrics()
        .lines()
        .filter(|l| l.contains("guard") && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    eprintln!("guard metrics after the flood:\n{}", guard_lines.join("\n"));
}

#[test]
fn allow_listed_source_is_never_limited() {
    let d = Daemon::start("");
    let mut c = UdpConn::new("127.0.0.10", d.listeners.udp());
    let answers = burst_options(&mut c, 40);
    assert_eq!(
        answers.len(),
        40,
        "allow-listed 127.0.0.10 must get all 40 answers, got {}",
        answers.len()
    );
    options_ok(&mut c, "allow-listed source after a burst");
}
