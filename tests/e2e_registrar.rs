//! Registrar semantics (RFC 3261 §10.3) over UDP: listing, refresh, expiry bounds, removal.

mod common;

use common::*;

#[test]
fn two_contacts_are_both_listed_and_refresh_does_not_duplicate() {
    let d = Daemon::start("");
    let mut c = d.udp_client();
    let a = "<sip:1001@192.0.2.10:5060>";
    let b = "<sip:1001@192.0.2.11:5060;transport=udp>";
    register_ok(&mut c, "1001", a, Some(600), "contact a");
    let r = register_ok(&mut c, "1001", b, Some(900), "contact b");
    // step 8: the 200 lists *every* binding of the AoR with its own expires
    let ea = assert_binding_listed(&r, "sip:1001@192.0.2.10:5060", "a listed in b's 200");
    let eb = assert_binding_listed(&r, "sip:1001@192.0.2.11:5060", "b listed in b's 200");
    assert!(
        ea <= 600 && ea > 590,
        "a expires {ea}, want ~600:\n{}",
        r.raw
    );
    assert!(
        eb <= 900 && eb > 890,
        "b expires {eb}, want ~900:\n{}",
        r.raw
    );
    assert_eq!(r.contacts().len(), 2, "{}", r.raw);
    // refreshing a (new Call-ID, same contact) updates it in place
    let r = register_ok(&mut c, "1001", a, Some(700), "refresh a");
    assert_eq!(r.contacts().len(), 2, "refresh added a binding:\n{}", r.raw);
    let ea = assert_binding_listed(&r, "sip:1001@192.0.2.10:5060", "a after refresh");
    assert!(ea <= 700 && ea > 690, "refreshed expires {ea}, want ~700");
    assert_eq!(d.bindings_active(), 2.0, "{}", d.metrics());
}

#[test]
fn expires_bounds_and_removal() {
    let d = Daemon::start("");
    let mut c = d.udp_client();
    let pw = password_of("1002");

    // below min_expires_secs (60): 423 Interval Too Brief with Min-Expires (step 7)
    let mut uac = Uac::new("1002");
    let mut opts = RegisterOpts::new(&pw, Some("<sip:1002@192.0.2.20:5060>".into()));
    opts.expires = Some(10);
    let r = register(&mut c, &mut uac, &opts, "expires 10").response;
    assert_eq!(r.code, 423, "Expires: 10 with min 60:\n{}", r.raw);
    assert_eq!(
        r.header("min-expires"),
        Some("60"),
        "423 must carry Min-Expires: 60:\n{}",
        r.raw
    );

    // above max_expires_secs (3600): accepted, clamped
    let r = register_ok(
        &mut c,
        "1002",
        "<sip:1002@192.0.2.20:5060>",
        Some(86_400),
        "expires 86400",
    );
    let e = assert_binding_listed(&r, "sip:1002@192.0.2.20:5060", "clamped");
    assert!(
        e <= 3600,
        "expires {e} above max_expires_secs 3600:\n{}",
        r.raw
    );

    // no Expires at all: default_expires_secs (3600)
    let r = register_ok(
        &mut c,
        "1002",
        "<sip:1002@192.0.2.21:5060>",
        None,
        "no expires",
    );
    let e = assert_binding_listed(&r, "sip:1002@192.0.2.21:5060", "default expires");
    assert!(e > 3500 && e <= 3600, "default expires {e}, want ~3600");

    // Contact ;expires=0 removes one binding
    let mut uac = Uac::new("1002");
    let opts = RegisterOpts::new(&pw, Some("<sip:1002@192.0.2.20:5060>;expires=0".into()));
    let r = register(&mut c, &mut uac, &opts, "remove one").response;
    assert_eq!(r.code, 200, "{}", r.raw);
    assert!(
        r.binding("192.0.2.20").is_none(),
        "removed binding still listed:\n{}",
        r.raw
    );
    assert_binding_listed(&r, "sip:1002@192.0.2.21:5060", "remaining binding");

    // Contact: * with Expires: 0 removes all (§10.2.2)
    let mut uac = Uac::new("1002");
    let mut opts = RegisterOpts::new(&pw, Some("*".into()));
    opts.expires = Some(0);
    let r = register(&mut c, &mut uac, &opts, "remove all").response;
    assert_eq!(r.code, 200, "{}", r.raw);
    assert!(
        r.contacts().is_empty(),
        "bindings listed after Contact: *:\n{}",
        r.raw
    );
    assert_eq!(d.bindings_active(), 0.0, "{}", d.metrics());
}

#[test]
fn forged_nonce_is_refused() {
    let d = Daemon::start("");
    let mut c = d.udp_client();
    // a digest computed for another nonce than the daemon issued
    let mut uac = Uac::new("1003");
    let forged = Challenge {
        realm: "gridedge".into(),
        nonce: "bm90LWEtbm9uY2UtZnJvbS10aGUtZGFlbW9u".into(),
        algorithm: "MD5".into(),
        qop: Some("auth".into()),
        opaque: None,
        stale: false,
        raw: String::new(),
    };
    let auth = authorization(
        &forged,
        "1003",
        &password_of("1003"),
        "REGISTER",
        &uac.request_uri(),
        1,
    );
    let m = uac.request(
        &c,
        "REGISTER",
        &[
            ("Contact", "<sip:1003@192.0.2.30:5060>".into()),
            ("Authorization", auth),
        ],
        "",
    );
    let r = transact(&mut c, &m, uac.cseq).expect("answer to a forged nonce");
    assert_eq!(
        r.code, 401,
        "forged nonce must be challenged again:\n{}",
        r.raw
    );

    // and a correct digest on the daemon's own nonce still works
    register_ok(
        &mut c,
        "1003",
        "<sip:1003@192.0.2.30:5060>",
        None,
        "after a forged nonce",
    );
    assert_eq!(d.bindings_active(), 1.0, "{}", d.metrics());
}

#[test]
fn retransmitted_authenticated_register_gets_the_same_200() {
    // RFC 3261 §17.2.2: a retransmission of a request (same branch, same bytes) belongs to the
    // same non-INVITE server transaction and is answered with the last response. Over UDP a lost
    // 200 makes every UAC retransmit its authenticated REGISTER (same nonce, nc, cnonce); if the
    // daemon treats that as a digest replay, the UAC never learns it is registered (seen in the
    // benchmark: SIPp calls failing on max UDP retransmissions, daemon logging reason=Replay).
    let d = Daemon::start("");
    let mut c = d.udp_client();
    let pw = password_of("1004");
    let contact = format!("<sip:1004@{}>", c.local_addr());
    let mut uac = Uac::new("1004");
    let first = uac.request(&c, "REGISTER", &[("Contact", contact.clone())], "");
    let challenge = transact(&mut c, &first, uac.cseq).expect("answer to REGISTER");
    assert_eq!(challenge.code, 401, "{}", challenge.raw);
    let ch = pick_challenge(&challenge, None, "retransmission");
    let auth = authorization(&ch, "1004", &pw, "REGISTER", &uac.request_uri(), 1);
    let second = uac.request(
        &c,
        "REGISTER",
        &[("Contact", contact.clone()), ("Authorization", auth)],
        "",
    );
    c.send(second.as_bytes()).unwrap();
    let ok = c
        .recv_for_cseq(uac.cseq, SIP_TIMEOUT)
        .expect("answer to the authenticated REGISTER");
    assert_eq!(ok.code, 200, "{}", ok.raw);
    let failures = d.metric("gridedge_sip_auth_failures", &[]).unwrap_or(0.0);

    // the UAC did not see that 200 and retransmits the very same datagram
    c.send(second.as_bytes()).unwrap();
    let again = c.recv_for_cseq(uac.cseq, SIP_TIMEOUT);
    match &again {
        Some(r) => assert_eq!(
            r.code, 200,
            "a retransmitted authenticated REGISTER must get the 200 again, got:\n{}",
            r.raw
        ),
        None => d.fail("a retransmitted authenticated REGISTER got no answer (want the 200 again)"),
    }
    let again = again.unwrap();
    assert_eq!(
        again.header("to"),
        ok.header("to"),
        "the retransmitted 200 should be the same response (same To tag)"
    );
    let failures_after = d.metric("gridedge_sip_auth_failures", &[]).unwrap_or(0.0);
    assert_eq!(
        failures_after, failures,
        "a retransmission was counted as an auth failure"
    );
    assert_binding_listed(
        &again,
        &format!("sip:1004@{}", c.local_addr()),
        "retransmitted 200",
    );
}
