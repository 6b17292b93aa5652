//! Transport behaviour: SIP over WebSocket (RFC 7118) with binding removal on close, TCP with
//! CRLF keep-alive (RFC 5626 §4.4.1), and basic method handling on every transport.

mod common;

use std::time::Duration;

use common::*;

fn wait_bindings(d: &Daemon, want: f64, ctx: &str) {
    if poll_until(Duration::from_secs(5), || {
        (d.bindings_active() == want).then_some(())
    })
    .is_none()
    {
        d.fail(&format!(
            "{ctx}: bindings_active never reached {want}:\n{}",
            d.metrics()
        ));
    }
}

#[test]
fn ws_register_is_challenged_and_closing_removes_the_binding() {
    let d = Daemon::start("");
    let mut ws = WsConn::connect(d.listeners.ws());
    let contact = format!("<sip:1007@{};transport=ws>", ws.host);

    // challenged first, then accepted
    let mut uac = Uac::new("1007");
    let pw = password_of("1007");
    let r = register(
        &mut ws,
        &mut uac,
        &RegisterOpts::new(&pw, Some(contact.clone())),
        "ws register",
    );
    assert!(
        !r.challenge.challenges().is_empty(),
        "ws 401 without challenge:\n{}",
        r.challenge.raw
    );
    assert_eq!(r.response.code, 200, "ws REGISTER:\n{}", r.response.raw);
    assert_binding_listed(&r.response, contact_uri(&contact), "ws REGISTER 200");
    let via = r.response.header("via").unwrap_or("");
    assert!(
        via.contains("SIP/2.0/WS") && via.contains(&ws.host),
        "the response must carry our WS Via back: {via}"
    );
    assert_eq!(d.bindings_active(), 1.0, "{}", d.metrics());

    // visible from another transport
    let mut udp = d.udp_client();
    let q = query_bindings(&mut udp, "1007", "UDP query for the WS binding");
    assert_binding_listed(&q, &ws.host, "UDP query for the WS binding");

    // a clean WebSocket close removes it (the flow is gone: nothing can reach the contact)
    ws.close();
    wait_bindings(&d, 0.0, "after the WS close");
    let q = query_bindings(&mut udp, "1007", "UDP query after the WS close");
    assert!(
        q.contacts().is_empty(),
        "binding still listed after close:\n{}",
        q.raw
    );

    // same for an abrupt TCP drop without a Close frame
    let mut ws2 = WsConn::connect(d.listeners.ws());
    let contact2 = format!("<sip:1006@{};transport=ws>", ws2.host);
    register_ok(&mut ws2, "1006", &contact2, None, "second ws register");
    wait_bindings(&d, 1.0, "second ws register");
    drop(ws2);
    wait_bindings(&d, 0.0, "after an abrupt WS drop");
}

#[test]
fn ws_handshake_selects_the_sip_subprotocol() {
    let d = Daemon::start("");
    // WsConn::connect panics unless the server answers Sec-WebSocket-Protocol: sip
    let mut ws = WsConn::connect(d.listeners.ws());
    options_ok(&mut ws, "OPTIONS over WS");
}

#[test]
fn tcp_register_and_crlf_keepalive() {
    let d = Daemon::start("");
    let mut c = TcpConn::connect(d.listeners.tcp());
    let contact = format!("<sip:1009@{};transport=tcp>", c.sent_by());
    register_ok(&mut c, "1009", &contact, None, "tcp register");
    assert_eq!(d.bindings_active(), 1.0, "{}", d.metrics());

    // RFC 5626 §4.4.1: a double-CRLF ping is answered with a single CRLF pong
    for round in 1..=2 {
        c.send(b"\r\n\r\n").unwrap();
        match c.recv_raw(SIP_TIMEOUT) {
            Recv::Msg(m) => assert_eq!(
                m,
                b"\r\n",
                "keep-alive round {round}: expected exactly CRLF, got {:?}",
                String::from_utf8_lossy(&m)
            ),
            other => panic!("keep-alive round {round}: no CRLF pong ({other:?})"),
        }
    }
    // the connection is still a working SIP flow afterwards
    options_ok(&mut c, "OPTIONS after keep-alives");
    let q = query_bindings(&mut c, "1009", "query over the same TCP connection");
    assert_binding_listed(&q, contact_uri(&contact), "tcp binding");
}

/// OPTIONS -> 200; other methods -> 405 with Allow (or 501); the response mirrors the
/// transaction headers (RFC 3261 §8.2.6.2) and adds a To tag.
fn check_methods(conn: &mut dyn SipConn, name: &str) {
    let mut uac = Uac::new("1003");
    let m = uac.request(conn, "OPTIONS", &[], "");
    let branch = m
        .lines()
        .find(|l| l.starts_with("Via:"))
        .and_then(|l| l.split("branch=").nth(1))
        .and_then(|b| b.split(';').next())
        .unwrap()
        .to_string();
    let r = transact(conn, &m, uac.cseq).unwrap_or_else(|| panic!("{name}: no answer to OPTIONS"));
    assert_eq!(r.code, 200, "{name} OPTIONS:\n{}", r.raw);
    assert!(
        r.header("via").unwrap_or("").contains(&branch),
        "{name}: Via/branch not mirrored:\n{}",
        r.raw
    );
    assert_eq!(
        r.header("call-id"),
        Some(uac.call_id.as_str()),
        "{name}: Call-ID not mirrored"
    );
    assert_eq!(
        r.cseq(),
        Some((uac.cseq, "OPTIONS".to_string())),
        "{name}: CSeq not mirrored"
    );
    assert!(
        r.header("from")
            .unwrap_or("")
            .contains(&format!("tag={}", uac.from_tag)),
        "{name}: From tag not mirrored:\n{}",
        r.raw
    );
    assert!(
        r.header("to").unwrap_or("").contains("tag="),
        "{name}: no To tag on a final response:\n{}",
        r.raw
    );

    for method in ["INVITE", "MESSAGE", "SUBSCRIBE", "FOOBAR"] {
        let m = uac.request(
            conn,
            method,
            &[("Contact", format!("<sip:1003@{}>", conn.sent_by()))],
            "",
        );
        let r =
            transact(conn, &m, uac.cseq).unwrap_or_else(|| panic!("{name}: no answer to {method}"));
        match r.code {
            405 => assert!(
                r.header("allow").is_some_and(|a| a.contains("REGISTER")),
                "{name} {method}: 405 must carry an Allow listing REGISTER:\n{}",
                r.raw
            ),
            501 => {}
            // a 100 Trying is not final; transact() only returns finals
            other => panic!(
                "{name} {method}: want 405 (with Allow) or 501, got {other}:\n{}",
                r.raw
            ),
        }
    }
}

#[test]
fn options_and_unsupported_methods_on_every_transport() {
    let d = Daemon::start("");
    check_methods(&mut d.udp_client(), "udp");
    check_methods(&mut TcpConn::connect(d.listeners.tcp()), "tcp");
    check_methods(&mut WsConn::connect(d.listeners.ws()), "ws");
    let total = d
        .metric("gridedge_sip_requests_total", &["OPTIONS"])
        .unwrap_or(0.0);
    assert!(
        total >= 3.0,
        "OPTIONS requests counted: {total}\n{}",
        d.metrics()
    );
}

#[test]
fn health_ready_and_metrics_endpoints() {
    let d = Daemon::start("");
    assert_eq!(d.http_get("/healthz").0, 200);
    assert_eq!(d.http_get("/readyz").0, 200);
    let m = d.metrics();
    assert!(m.contains("gridedge_"), "no gridedge_* metrics:\n{m}");
    assert_eq!(d.bindings_active(), 0.0, "fresh daemon has bindings:\n{m}");
    let (code, _) = d.http_get("/definitely-not-here");
    assert_eq!(code, 404, "unknown HTTP path");
    // listeners.json lists every configured transport on a real (non-zero) port
    for a in d
        .listeners
        .udp
        .iter()
        .chain(&d.listeners.tcp)
        .chain(&d.listeners.ws)
    {
        assert_ne!(a.port(), 0, "listener with port 0 in listeners.json");
    }
    assert!(
        d.listeners.tls.is_empty() && d.listeners.wss.is_empty(),
        "{:?}",
        d.listeners
    );
}
