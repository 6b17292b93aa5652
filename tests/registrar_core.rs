//! The registrar core against the RFC 3261 §10.3 rules (plus RFC 5626, RFC 3581 and the guard),
//! driven without sockets: bytes in, bytes out, time passed in.

#[path = "support/uac.rs"]
mod uac;

use std::collections::HashSet;
use std::sync::Arc;

use gridedge::clock::Now;
use gridedge::events::RegistrationChange;
use gridedge::sip::credentials::{Credential, CredentialTable};
use gridedge::sip::digest::{Algorithm, DigestConfig, NonceKey, Verifier};
use gridedge::sip::endpoint::{Endpoint, Handled, Silence};
use gridedge::sip::guard::{Guard, GuardConfig};
use gridedge::sip::location::{ConnectionId, Flow, Transport};
use gridedge::sip::message::{HeaderName, Limits, Message, Response};
use gridedge::sip::registrar::{Registrar, RegistrarConfig};
use uac::{param, Uac};

const URI: &str = "sip:gridedge.test";

struct Core {
    ep: Endpoint,
    now: Now,
    flow: Flow,
}

impl Core {
    fn new() -> Core {
        Self::with(|_, _| {})
    }

    fn with(tweak: impl FnOnce(&mut RegistrarConfig, &mut DigestConfig)) -> Core {
        let mut creds = CredentialTable::new();
        for u in ["1001", "1002"] {
            creds.insert(
                u.into(),
                Credential::from_password(u, "gridedge", &format!("pw-{u}")),
            );
        }
        let mut disabled = Credential::from_password("1003", "gridedge", "pw-1003");
        disabled.enabled = false;
        creds.insert("1003".into(), disabled);
        let mut rc = RegistrarConfig {
            domains: HashSet::new(),
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 3,
            md5_only_user_agents: vec!["baresip".into()],
        };
        let mut dc = DigestConfig {
            realm: "gridedge".into(),
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            nonce_lifetime_secs: 300,
            max_tracked_nonces: 10_000,
            require_qop: true,
        };
        tweak(&mut rc, &mut dc);
        let verifier = Verifier::new(dc, NonceKey::from_bytes([7; 32]));
        let registrar = Registrar::new(rc, verifier, Arc::new(creds));
        let guard = Guard::new(GuardConfig {
            max_requests: 1000,
            ..GuardConfig::default()
        });
        Core {
            ep: Endpoint::new(guard, registrar, Limits::default()),
            now: Now::system(),
            flow: Flow {
                transport: Transport::Udp,
                source: "198.51.100.7:40000".parse().unwrap(),
                local: "127.0.0.1:5060".parse().unwrap(),
                connection: None,
            },
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Handled {
        self.ep.handle(bytes, &self.flow, self.now)
    }

    fn reply(&mut self, bytes: &[u8]) -> Response {
        let h = self.send(bytes);
        let (out, to) = h.reply.expect("a reply");
        assert_eq!(
            to, self.flow.source,
            "replies go back to the source (rport)"
        );
        match Message::parse(&out, &Limits::default()).expect("our reply parses") {
            Message::Response(r) => r,
            Message::Request(_) => panic!("expected a response"),
        }
    }

    /// Challenge then authenticated REGISTER; returns the final response.
    fn register(&mut self, uac: &mut Uac, extra: &[&str]) -> Response {
        let first = uac.register(extra);
        let challenge = self.reply(&first);
        assert_eq!(challenge.code, 401);
        uac.take_challenge(&challenge);
        self.register_cached(uac, extra)
    }

    /// An authenticated REGISTER reusing the cached nonce (nc + 1), as phones do.
    fn register_cached(&mut self, uac: &mut Uac, extra: &[&str]) -> Response {
        let auth = uac.authorization(URI);
        let mut lines: Vec<&str> = extra.to_vec();
        lines.push(&auth);
        let req = uac.register(&lines);
        self.reply(&req)
    }

    fn contacts(resp: &Response) -> Vec<String> {
        resp.headers
            .get_all(&HeaderName::Contact)
            .map(str::to_owned)
            .collect()
    }
}

fn uac(user: &str) -> Uac {
    Uac::new(user, &format!("pw-{user}"))
}

#[test]
fn unauthenticated_register_is_challenged_with_sha256_then_md5() {
    let mut c = Core::new();
    let resp = c.reply(&uac("1001").register(&["Contact: <sip:1001@192.0.2.10>"]));
    assert_eq!(resp.code, 401);
    let algs: Vec<String> = resp
        .headers
        .get_all(&HeaderName::WwwAuthenticate)
        .map(|v| param(v, "algorithm").unwrap())
        .collect();
    assert_eq!(algs, ["SHA-256", "MD5"]);
    for v in resp.headers.get_all(&HeaderName::WwwAuthenticate) {
        assert_eq!(param(v, "realm").as_deref(), Some("gridedge"));
        assert!(v.contains("qop=\"auth\""), "{v}");
    }
    assert!(
        resp.headers.get(&HeaderName::To).unwrap().contains(";tag="),
        "To tag added"
    );
    assert_eq!(
        c.ep.registrar.location().len(),
        0,
        "a challenge changes nothing"
    );
}

#[test]
fn add_refresh_and_remove_a_binding() {
    let mut c = Core::new();
    let mut u = uac("1001");
    let r = c.register(
        &mut u,
        &["Contact: <sip:1001@192.0.2.10:5062>", "Expires: 120"],
    );
    assert_eq!(r.code, 200);
    assert_eq!(
        Core::contacts(&r),
        ["<sip:1001@192.0.2.10:5062>;expires=120"]
    );
    assert!(
        r.headers.get(&HeaderName::Date).is_some(),
        "§10.3 step 8: Date SHOULD be present"
    );

    c.now = c.now.plus_ms(30_000);
    let r = c.register_cached(&mut u, &["Contact: <sip:1001@192.0.2.10:5062>;expires=600"]);
    assert_eq!(r.code, 200);
    assert_eq!(
        Core::contacts(&r),
        ["<sip:1001@192.0.2.10:5062>;expires=600"],
        "contact param beats header"
    );

    let r = c.register_cached(
        &mut u,
        &["Contact: <sip:1001@192.0.2.10:5062>", "Expires: 0"],
    );
    assert_eq!(r.code, 200);
    assert!(Core::contacts(&r).is_empty());
    assert_eq!(c.ep.registrar.location().len(), 0);
}

#[test]
fn several_contacts_per_aor_are_all_listed() {
    let mut c = Core::new();
    let mut desk = uac("1001");
    c.register(&mut desk, &["Contact: <sip:1001@192.0.2.10:5062>"]);
    let mut mobile = uac("1001");
    mobile.call_id = "other-device".into();
    let r = c.register(
        &mut mobile,
        &["Contact: <sip:1001@203.0.113.9:5060>;expires=300, <sip:1001@203.0.113.9:5070>"],
    );
    assert_eq!(r.code, 200);
    let mut got = Core::contacts(&r);
    got.sort();
    assert_eq!(
        got,
        [
            "<sip:1001@192.0.2.10:5062>;expires=3600",
            "<sip:1001@203.0.113.9:5060>;expires=300",
            "<sip:1001@203.0.113.9:5070>;expires=3600"
        ]
    );
}

#[test]
fn query_without_contact_lists_bindings_and_changes_nothing() {
    let mut c = Core::new();
    let mut u = uac("1001");
    c.register(&mut u, &["Contact: <sip:1001@192.0.2.10:5062>"]);
    c.now = c.now.plus_ms(1_000);
    let r = c.register_cached(&mut u, &[]);
    assert_eq!(r.code, 200);
    assert_eq!(
        Core::contacts(&r),
        ["<sip:1001@192.0.2.10:5062>;expires=3599"]
    );
}

#[test]
fn too_brief_is_423_with_min_expires_and_too_long_is_clamped() {
    let mut c = Core::new();
    let mut u = uac("1001");
    let r = c.register(
        &mut u,
        &["Contact: <sip:1001@192.0.2.10:5062>", "Expires: 30"],
    );
    assert_eq!(r.code, 423);
    assert_eq!(r.headers.get(&HeaderName::MinExpires), Some("60"));
    assert_eq!(c.ep.registrar.location().len(), 0);
    let r = c.register_cached(
        &mut u,
        &["Contact: <sip:1001@192.0.2.10:5062>", "Expires: 86400"],
    );
    assert_eq!(r.code, 200);
    assert_eq!(
        Core::contacts(&r),
        ["<sip:1001@192.0.2.10:5062>;expires=3600"]
    );
}

#[test]
fn wildcard_contact_rules() {
    let mut c = Core::new();
    let mut u = uac("1001");
    c.register(
        &mut u,
        &["Contact: <sip:1001@192.0.2.10:5062>, <sip:1001@192.0.2.10:5063>"],
    );
    assert_eq!(c.ep.registrar.location().len(), 2);
    let r = c.register_cached(&mut u, &["Contact: *"]);
    assert_eq!(r.code, 400, "* without Expires: 0");
    let r = c.register_cached(
        &mut u,
        &[
            "Contact: *",
            "Contact: <sip:1001@192.0.2.10:5064>",
            "Expires: 0",
        ],
    );
    assert_eq!(r.code, 400, "* mixed with a contact");
    assert_eq!(c.ep.registrar.location().len(), 2);
    let r = c.register_cached(&mut u, &["Contact: *", "Expires: 0"]);
    assert_eq!(r.code, 200);
    assert!(Core::contacts(&r).is_empty());
    assert_eq!(c.ep.registrar.location().len(), 0);
}

#[test]
fn call_id_and_cseq_ordering() {
    let mut c = Core::new();
    let mut u = uac("1001");
    c.register(&mut u, &["Contact: <sip:1001@192.0.2.10:5062>"]);
    let stored =
        c.ep.registrar
            .location()
            .bindings("1001", c.now.unix_secs())
            .next()
            .unwrap()
            .cseq;
    // Same Call-ID, lower CSeq: the update is aborted.
    u.cseq = stored - 2;
    let r = c.register_cached(
        &mut u,
        &["Contact: <sip:1001@192.0.2.10:5062>", "Expires: 0"],
    );
    assert_eq!(r.code, 400);
    assert_eq!(c.ep.registrar.location().len(), 1);
    // A different Call-ID may update regardless of CSeq.
    u.call_id = "fresh".into();
    u.cseq = 0;
    let r = c.register_cached(
        &mut u,
        &["Contact: <sip:1001@192.0.2.10:5062>", "Expires: 0"],
    );
    assert_eq!(r.code, 200);
    assert_eq!(c.ep.registrar.location().len(), 0);
}

#[test]
fn a_retransmitted_register_gets_the_same_answer() {
    let mut c = Core::new();
    let mut u = uac("1001");
    let first = u.register(&["Contact: <sip:1001@192.0.2.10:5062>"]);
    let ch = c.reply(&first);
    u.take_challenge(&ch);
    let auth = u.authorization(URI);
    let req = u.register(&["Contact: <sip:1001@192.0.2.10:5062>", &auth]);
    let first_ok = c.send(&req).reply.unwrap().0;
    assert!(first_ok.starts_with(b"SIP/2.0 200"));
    // The identical datagram again (the 200 was lost): the transaction layer answers with the
    // same bytes instead of re-running digest verification, which would call it a replay.
    let again = c.send(&req);
    assert!(again.retransmission);
    assert_eq!(again.reply.unwrap().0, first_ok);
    assert_eq!(c.ep.registrar.location().len(), 1);
    // Over TCP there are no retransmissions: the same bytes are a new request, and a replay.
    c.flow.transport = Transport::Tcp;
    c.flow.connection = Some(ConnectionId(1));
    assert_eq!(c.reply(&req).code, 401);
}

#[test]
fn wrong_password_and_unknown_user_look_the_same_and_ban_after_the_limit() {
    let mut c = Core::new();
    let mut wrong = Uac::new("1001", "not-the-password");
    let mut ghost = Uac::new("9999", "whatever");
    let a = c.register(&mut wrong, &["Contact: <sip:1001@192.0.2.10>"]);
    let b = c.register(&mut ghost, &["Contact: <sip:9999@192.0.2.10>"]);
    assert_eq!((a.code, b.code), (401, 401));
    let shape = |r: &Response| -> Vec<(String, Option<String>)> {
        r.headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    (n == &HeaderName::WwwAuthenticate).then(|| param(v, "algorithm").unwrap()),
                )
            })
            .collect()
    };
    assert_eq!(
        shape(&a),
        shape(&b),
        "no header differs between unknown user and wrong password"
    );
    assert_eq!(a.reason, b.reason);
    // Default limit is 5 failures per (user, IP): 4 more, then silence.
    for _ in 0..4 {
        let auth = wrong.authorization(URI);
        let h = c.send(&wrong.register(&["Contact: <sip:1001@192.0.2.10>", &auth]));
        assert!(h.reply.is_some() || h.user_banned);
    }
    let auth = wrong.authorization(URI);
    let h = c.send(&wrong.register(&["Contact: <sip:1001@192.0.2.10>", &auth]));
    assert_eq!(
        h.silence,
        Some(Silence::Guard(gridedge::sip::guard::DropReason::Banned))
    );
    // The real owner from another address is unaffected.
    c.flow.source = "198.51.100.8:40000".parse().unwrap();
    let mut owner = uac("1001");
    assert_eq!(
        c.register(&mut owner, &["Contact: <sip:1001@192.0.2.11>"])
            .code,
        200
    );
}

#[test]
fn authenticated_user_may_only_register_its_own_aor() {
    let mut c = Core::new();
    let mut u = uac("1002");
    let first = u.register(&["Contact: <sip:1001@192.0.2.10>"]);
    let ch = c.reply(&first);
    u.take_challenge(&ch);
    let auth = u.authorization(URI);
    // 1002's credentials on a REGISTER whose To is 1001.
    let req = String::from_utf8(u.register(&["Contact: <sip:1001@192.0.2.10>", &auth]))
        .unwrap()
        .replace("To: <sip:1002@", "To: <sip:1001@");
    assert_eq!(c.reply(req.as_bytes()).code, 403);
    assert_eq!(c.ep.registrar.location().len(), 0);
}

#[test]
fn disabled_extension_is_refused_after_authenticating() {
    let mut c = Core::new();
    let r = c.register(&mut uac("1003"), &["Contact: <sip:1003@192.0.2.10>"]);
    assert_eq!(r.code, 403);
}

#[test]
fn unsupported_required_extension_is_420() {
    let mut c = Core::new();
    // §10.3 step 2 comes before authentication (step 3).
    let r = c.reply(&uac("1001").register(&[
        "Contact: <sip:1001@192.0.2.10>",
        "Require: outbound, 100rel",
    ]));
    assert_eq!(r.code, 420);
    assert_eq!(r.headers.get(&HeaderName::Unsupported), Some("100rel"));
}

#[test]
fn expired_nonce_is_stale_and_replayed_nc_is_refused() {
    let mut c = Core::new();
    let mut u = uac("1001");
    assert_eq!(
        c.register(&mut u, &["Contact: <sip:1001@192.0.2.10>"]).code,
        200
    );
    // Replay: the same nc again.
    u.nc -= 1;
    let r = c.register_cached(&mut u, &["Contact: <sip:1001@192.0.2.10>"]);
    assert_eq!(r.code, 401);
    assert!(!r
        .headers
        .get(&HeaderName::WwwAuthenticate)
        .unwrap()
        .contains("stale=true"));
    // Past the nonce lifetime: stale=true so the phone retries without asking the user.
    c.now = c.now.plus_ms(301_000);
    u.nc += 1;
    let r = c.register_cached(&mut u, &["Contact: <sip:1001@192.0.2.10>"]);
    assert_eq!(r.code, 401);
    assert!(r
        .headers
        .get(&HeaderName::WwwAuthenticate)
        .unwrap()
        .contains("stale=true"));
}

#[test]
fn legacy_user_agents_get_md5_alone() {
    let mut c = Core::new();
    let mut u = uac("1001");
    let resp = c.reply(&u.register(&["User-Agent: baresip v1.0.0 (x86_64/linux)"]));
    let algs: Vec<String> = resp
        .headers
        .get_all(&HeaderName::WwwAuthenticate)
        .map(|v| param(v, "algorithm").unwrap())
        .collect();
    assert_eq!(algs, ["MD5"]);
    // The same phone is still held to the configured set: with MD5 not offered, no exception.
    let mut sha_only = Core::with(|_, d| d.algorithms = vec![Algorithm::Sha256]);
    let resp = sha_only.reply(&u.register(&["User-Agent: baresip v1.0.0 (x86_64/linux)"]));
    let v = resp.headers.get(&HeaderName::WwwAuthenticate).unwrap();
    assert_eq!(param(v, "algorithm").as_deref(), Some("SHA-256"));
}

#[test]
fn md5_only_and_sha256_only_realms() {
    let mut md5 = Core::with(|_, d| d.algorithms = vec![Algorithm::Md5]);
    assert_eq!(
        md5.register(&mut uac("1001"), &["Contact: <sip:1001@192.0.2.10>"])
            .code,
        200
    );
    let mut sha = Core::with(|_, d| d.algorithms = vec![Algorithm::Sha256]);
    let mut u = uac("1001");
    assert_eq!(
        sha.register(&mut u, &["Contact: <sip:1001@192.0.2.10>"])
            .code,
        200
    );
    assert_eq!(u.nonce.unwrap().1, Algorithm::Sha256);
}

#[test]
fn too_many_contacts_is_refused_atomically() {
    let mut c = Core::new();
    let mut u = uac("1001");
    let r = c.register(
        &mut u,
        &["Contact: <sip:a@192.0.2.1>, <sip:b@192.0.2.1>, <sip:c@192.0.2.1>, <sip:d@192.0.2.1>"],
    );
    assert_eq!(r.code, 403);
    assert_eq!(c.ep.registrar.location().len(), 0);
}

#[test]
fn domains_are_enforced_when_configured() {
    let mut c = Core::with(|r, _| {
        r.domains.insert("pbx.example.com".into());
    });
    let r = c.reply(&uac("1001").register(&["Contact: <sip:1001@192.0.2.10>"]));
    assert_eq!(r.code, 404);
}

#[test]
fn outbound_flow_over_tcp_is_confirmed_replaced_and_dropped_with_its_connection() {
    let mut c = Core::new();
    c.flow.transport = Transport::Tcp;
    c.flow.connection = Some(ConnectionId(42));
    let mut u = uac("1001");
    let inst = "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\"";
    let contact = format!("Contact: <sip:1001@abc.invalid;transport=tcp>;{inst};reg-id=1");
    let r = c.register(&mut u, &[&contact, "Supported: outbound, path"]);
    assert_eq!(r.code, 200);
    assert_eq!(r.headers.get(&HeaderName::Require), Some("outbound"));
    let listed = Core::contacts(&r);
    assert!(
        listed[0].contains("+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\""),
        "{listed:?}"
    );
    assert!(listed[0].contains("reg-id=1"));
    // Same instance and reg-id from a new contact (the phone restarted) replaces the binding.
    let contact2 = format!("Contact: <sip:1001@xyz.invalid;transport=tcp>;{inst};reg-id=1");
    u.call_id = "after-restart".into();
    let h = {
        let auth = u.authorization(URI);
        c.send(&u.register(&[&contact2, &auth]))
    };
    let kinds: Vec<_> = h.changes.events.iter().map(|e| e.change).collect();
    assert_eq!(
        kinds,
        [RegistrationChange::Replaced, RegistrationChange::Added]
    );
    assert_eq!(c.ep.registrar.location().len(), 1);
    let closed =
        c.ep.registrar
            .location_mut()
            .connection_closed(ConnectionId(42));
    assert_eq!(
        closed.events[0].change,
        RegistrationChange::ConnectionClosed
    );
    assert!(!closed.events[0].online);
    assert_eq!(c.ep.registrar.location().len(), 0);
}

#[test]
fn expiry_is_driven_by_time_not_sleep() {
    let mut c = Core::new();
    c.register(
        &mut uac("1001"),
        &["Contact: <sip:1001@192.0.2.10>", "Expires: 60"],
    );
    let later = c.now.plus_ms(59_000).unix_secs();
    assert!(c.ep.registrar.location_mut().sweep(later).is_empty());
    let after = c.now.plus_ms(61_000).unix_secs();
    let gone = c.ep.registrar.location_mut().sweep(after);
    assert_eq!(gone.events.len(), 1);
    assert_eq!(gone.events[0].change, RegistrationChange::Expired);
}

#[test]
fn via_gets_received_and_rport() {
    let mut c = Core::new();
    let r = c.reply(&uac("1001").register(&[]));
    let via = r.headers.get(&HeaderName::Via).unwrap();
    assert!(via.contains("received=198.51.100.7"), "{via}");
    assert!(via.contains("rport=40000"), "{via}");
    assert_eq!(
        r.headers.iter().next().map(|(n, _)| n.clone()),
        Some(HeaderName::Via),
        "Via stays first"
    );
}

#[test]
fn other_methods_get_the_right_refusal() {
    let mut c = Core::new();
    let req = |m: &str| {
        format!(
            "{m} sip:1001@gridedge.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
             To: <sip:1001@gridedge.test>\r\nCall-ID: x\r\nCSeq: 1 {m}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let r = c.reply(req("OPTIONS").as_bytes());
    assert_eq!(r.code, 200);
    assert!(r
        .headers
        .get(&HeaderName::Allow)
        .unwrap()
        .contains("REGISTER"));
    let r = c.reply(req("INVITE").as_bytes());
    assert_eq!(r.code, 405);
    assert!(r.headers.get(&HeaderName::Allow).is_some());
    assert_eq!(c.reply(req("SUBSCRIBE").as_bytes()).code, 405);
    assert_eq!(c.reply(req("FROB").as_bytes()).code, 501);
    assert!(c.send(req("ACK").as_bytes()).reply.is_none());
}

#[test]
fn malformed_input_is_answered_400_or_dropped_and_changes_nothing() {
    let mut c = Core::new();
    let mut u = uac("1001");
    c.register(&mut u, &["Contact: <sip:1001@192.0.2.10>"]);
    let good = String::from_utf8(u.register(&[])).unwrap();
    let short_body = good.replace("Content-Length: 0", "Content-Length: 50");
    let r = c.reply(short_body.as_bytes());
    assert_eq!(r.code, 400);
    let garbage: Vec<u8> = (0..2000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_eq!(c.send(&garbage).silence, Some(Silence::Unanswerable));
    for cut in (0..good.len()).step_by(7) {
        let _ = c.send(&good.as_bytes()[..cut]);
    }
    let many: String = (0..10_000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let huge = good.replacen(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\n{many}"),
        1,
    );
    let h = c.send(huge.as_bytes());
    assert!(h
        .reply
        .as_ref()
        .is_none_or(|(b, _)| b.starts_with(b"SIP/2.0 400")));
    assert_eq!(c.ep.registrar.location().len(), 1, "nothing changed");
}
