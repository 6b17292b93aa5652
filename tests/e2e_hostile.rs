//! Hostile input over UDP, TCP and WebSocket. After every case the daemon must be alive
//! (/healthz 200) and still serve OPTIONS and an authenticated REGISTER correctly.
//! Expectations (RFC 3261 §18.3 and the daemon's contract): a malformed request gets a 400 when a
//! reply can be formed (Via/From/To/Call-ID/CSeq present), otherwise it is dropped; nothing
//! malformed is ever answered 2xx; oversized input is refused (400/413/513) or dropped/closed.
//! Hostile traffic comes from 127.0.0.1, which the harness allow-lists, so the guard's flood
//! limit never masks a parser outcome.

mod common;

use std::net::Shutdown;
use std::time::Duration;

use common::*;

/// A complete OPTIONS with the mandatory headers; `extra` is inserted verbatim (with its own
/// CRLFs) before Content-Length, which is `cl` (or the body length when `None`).
fn options_raw(
    sent_by: &str,
    transport: &str,
    extra: &str,
    body: &[u8],
    cl: Option<&str>,
) -> Vec<u8> {
    let branch = format!("z9hG4bK{:016x}", rand::random::<u64>());
    let call_id = format!("{:016x}@hostile", rand::random::<u64>());
    let cl = cl
        .map(str::to_string)
        .unwrap_or_else(|| body.len().to_string());
    let mut m = format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {sent_by};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:hostile@127.0.0.1>;tag=h1\r\n\
         To: <sip:127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Type: text/plain\r\n\
         {extra}Content-Length: {cl}\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(body);
    m
}

fn garbage(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

fn many_headers(n: usize) -> String {
    "X: 1\r\n".repeat(n)
}

fn big_header(n: usize) -> String {
    format!("X-Big: {}\r\n", "a".repeat(n))
}

/// What came back for one hostile UDP datagram (also logged: `cargo test -- --nocapture`).
fn udp_case(d: &Daemon, payload: &[u8]) -> Option<SipResponse> {
    let mut c = d.udp_client();
    c.send(payload).expect("send datagram");
    let r = c.recv_response(SILENCE);
    eprintln!(
        "udp {} bytes {:?}... -> {}",
        payload.len(),
        String::from_utf8_lossy(&payload[..payload.len().min(24)]),
        r.as_ref()
            .map_or("no answer".into(), |r| format!("{} {}", r.code, r.reason))
    );
    r
}

/// Failed expectations, collected so one run reports every case (the daemon's liveness is
/// still asserted hard after each case: nothing after a crash would mean anything).
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            let m = msg();
            eprintln!("EXPECTATION FAILED: {m}");
            self.0.push(m);
        }
    }

    fn not_2xx(&mut self, name: &str, r: &Option<SipResponse>) {
        if let Some(r) = r {
            self.check(r.code >= 400, || {
                format!(
                    "{name}: malformed input must not be accepted, got:\n{}",
                    r.raw
                )
            });
        }
    }

    fn is_400(&mut self, name: &str, r: &Option<SipResponse>) {
        match r {
            Some(r) => self.check(r.code == 400, || {
                format!("{name}: expected 400 Bad Request, got:\n{}", r.raw)
            }),
            None => self.check(false, || {
                format!("{name}: expected 400 Bad Request, got no answer")
            }),
        }
    }

    fn silent(&mut self, name: &str, r: &Option<SipResponse>) {
        if let Some(r) = r {
            self.check(false, || {
                format!("{name}: expected no answer, got:\n{}", r.raw)
            });
        }
    }

    fn finish(self, d: &Daemon) {
        if !self.0.is_empty() {
            d.fail(&format!(
                "{} hostile-input expectation(s) failed:\n\n{}",
                self.0.len(),
                self.0.join("\n\n")
            ));
        }
    }
}

#[test]
fn hostile_udp() {
    let mut d = Daemon::start("");
    let mut f = Failures::default();
    let sb = d.udp_client().sent_by(); // any sent-by: the daemon answers to the source (rport)

    // truncated in the middle of the header section
    let full = options_raw(&sb, "UDP", "", b"", None);
    let r = udp_case(&d, &full[..full.len() / 2]);
    f.not_2xx("udp truncated", &r);
    assert_daemon_healthy(&mut d, "udp truncated");

    // Content-Length longer than the datagram's body: RFC 3261 §18.3 -> 400
    let r = udp_case(&d, &options_raw(&sb, "UDP", "", b"hello", Some("50")));
    f.is_400("udp Content-Length longer than body", &r);
    assert_daemon_healthy(&mut d, "udp Content-Length longer");

    // Content-Length shorter: §18.3 says the extra bytes are discarded, so the request itself
    // is fine (200); a stricter 400 is tolerated, silence is not
    let r = udp_case(&d, &options_raw(&sb, "UDP", "", b"hello world", Some("2")));
    f.check(
        matches!(&r, Some(r) if r.code == 200 || r.code == 400),
        || format!("udp Content-Length shorter than body: want 200 (or 400), got {r:?}"),
    );
    assert_daemon_healthy(&mut d, "udp Content-Length shorter");

    // non-numeric / negative / overflowing Content-Length
    for cl in ["abc", "-5", "99999999999999999999999"] {
        let r = udp_case(&d, &options_raw(&sb, "UDP", "", b"", Some(cl)));
        f.is_400(&format!("udp Content-Length {cl:?}"), &r);
    }
    assert_daemon_healthy(&mut d, "udp bad Content-Length values");

    // one huge header: as big as a UDP datagram can carry (65,507 bytes of payload over IPv4)
    let fixed = options_raw(&sb, "UDP", "", b"", None).len();
    let big = options_raw(&sb, "UDP", &big_header(65_507 - fixed - 10), b"", None);
    assert!(big.len() <= 65_507);
    let r = udp_case(&d, &big);
    if let Some(r) = &r {
        f.check([200, 400, 413, 513].contains(&r.code), || {
            format!(
                "udp ~64 KiB header: unexpected answer {} {}",
                r.code, r.reason
            )
        });
    }
    assert_daemon_healthy(&mut d, "udp ~64 KiB header");

    // 10,000 headers (max_headers = 128): refused, never accepted
    let r = udp_case(
        &d,
        &options_raw(&sb, "UDP", &many_headers(10_000), b"", None),
    );
    f.not_2xx("udp 10,000 headers", &r);
    assert_daemon_healthy(&mut d, "udp 10,000 headers");

    // binary garbage: no reply can be formed -> silence
    for n in [1, 64, 1400, 60_000] {
        f.silent(
            &format!("udp {n} bytes of garbage"),
            &udp_case(&d, &garbage(n)),
        );
    }
    assert_daemon_healthy(&mut d, "udp garbage");

    // NUL bytes: in a header value, in the method, a datagram of NULs
    let r = udp_case(&d, &options_raw(&sb, "UDP", "Subject: a\0b\r\n", b"", None));
    f.not_2xx("udp NUL in a header value", &r);
    let mut m = options_raw(&sb, "UDP", "", b"", None);
    m[3] = 0; // "OPT\0ONS"
    f.not_2xx("udp NUL in the method", &udp_case(&d, &m));
    f.silent("udp 512 NULs", &udp_case(&d, &[0u8; 512]));
    assert_daemon_healthy(&mut d, "udp NUL bytes");

    // empty datagram and bare CRLFs
    f.silent("udp empty datagram", &udp_case(&d, b""));
    f.silent("udp bare CRLFs", &udp_case(&d, b"\r\n\r\n"));
    // request without Via: no way to route a response -> silence (or a 400 to the source)
    let no_via = String::from_utf8(options_raw(&sb, "UDP", "", b"", None))
        .unwrap()
        .split("\r\n")
        .filter(|l| !l.starts_with("Via:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    f.not_2xx("udp without Via", &udp_case(&d, no_via.as_bytes()));
    assert_daemon_healthy(&mut d, "udp misc");
    f.finish(&d);
}

/// After hostile bytes on a TCP connection: a 4xx/5xx answer, or silence/close; never 2xx.
fn tcp_refused(f: &mut Failures, name: &str, c: &mut TcpConn) {
    let got = c.recv(SIP_TIMEOUT);
    eprintln!(
        "{name} -> {}",
        match &got {
            Recv::Msg(m) => String::from_utf8_lossy(m)
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
            other => format!("{other:?}"),
        }
    );
    if let Recv::Msg(m) = got {
        let r = SipResponse::parse(&m);
        f.check(r.as_ref().is_some_and(|r| r.code >= 400), || {
            format!(
                "{name}: expected a 4xx/5xx or a closed connection, got:\n{}",
                String::from_utf8_lossy(&m)
            )
        });
    }
}

#[test]
fn hostile_tcp() {
    let mut d = Daemon::start("");
    let mut f = Failures::default();
    let tcp = d.listeners.tcp();

    // truncated, then the client half-closes: no answer, connection closed
    let mut c = TcpConn::connect(tcp);
    let sb = c.sent_by();
    let full = options_raw(&sb, "TCP", "", b"", None);
    c.send(&full[..full.len() / 2]).unwrap();
    c.stream.shutdown(Shutdown::Write).unwrap();
    tcp_refused(&mut f, "tcp truncated", &mut c);
    f.check(c.wait_closed(Duration::from_secs(5)), || {
        "tcp truncated: connection not closed after the client's EOF".into()
    });
    assert_daemon_healthy(&mut d, "tcp truncated");

    // Content-Length longer than what is sent, then EOF: the request is incomplete
    let mut c = TcpConn::connect(tcp);
    let sb = c.sent_by();
    c.send(&options_raw(&sb, "TCP", "", b"hello", Some("100")))
        .unwrap();
    c.stream.shutdown(Shutdown::Write).unwrap();
    tcp_refused(&mut f, "tcp Content-Length longer", &mut c);
    f.check(c.wait_closed(Duration::from_secs(5)), || {
        "tcp Content-Length longer: connection not closed after the client's EOF".into()
    });
    assert_daemon_healthy(&mut d, "tcp Content-Length longer");

    // Content-Length shorter: the stream framing takes CL bytes of body (200), and the rest
    // ("llo" + the next request) is not a valid request line: never a 200 for it
    let mut c = TcpConn::connect(tcp);
    let sb = c.sent_by();
    c.send(&options_raw(&sb, "TCP", "", b"hello", Some("2")))
        .unwrap();
    let first = c.recv_response(SIP_TIMEOUT);
    f.check(first.as_ref().is_some_and(|r| r.code == 200), || {
        format!("tcp OPTIONS with a 2-byte body (CL 2) must get 200, got {first:?}")
    });
    let mut uac = Uac::new("probe");
    uac.cseq = 41;
    let next = uac.request(&c, "OPTIONS", &[], "");
    let _ = c.send(next.as_bytes());
    if let Some(r) = c.recv_for_cseq(42, SILENCE) {
        f.check(r.code >= 400, || {
            format!(
                "tcp desynchronised stream (\"llo\" + OPTIONS) answered 2xx:\n{}",
                r.raw
            )
        });
    }
    drop(c);
    assert_daemon_healthy(&mut d, "tcp Content-Length shorter");

    // a 64 KiB header: the message exceeds max_message_bytes (65535) -> refused or closed
    let mut c = TcpConn::connect(tcp);
    let sb = c.sent_by();
    let _ = c.send(&options_raw(&sb, "TCP", &big_header(64 * 1024), b"", None));
    tcp_refused(&mut f, "tcp 64 KiB header", &mut c);
    drop(c);
    assert_daemon_healthy(&mut d, "tcp 64 KiB header");

    // 10,000 headers (60 KB, under the size limit, over max_headers = 128)
    let mut c = TcpConn::connect(tcp);
    let sb = c.sent_by();
    let _ = c.send(&options_raw(&sb, "TCP", &many_headers(10_000), b"", None));
    tcp_refused(&mut f, "tcp 10,000 headers", &mut c);
    drop(c);
    assert_daemon_healthy(&mut d, "tcp 10,000 headers");

    // binary garbage beyond max_message_bytes without any header terminator: must be closed
    let mut c = TcpConn::connect(tcp);
    let mut junk = garbage(70_000);
    for w in 0..junk.len() - 3 {
        if &junk[w..w + 4] == b"\r\n\r\n" {
            junk[w] = b'x';
        }
    }
    let _ = c.send(&junk);
    tcp_refused(&mut f, "tcp 70 KB garbage", &mut c);
    f.check(c.wait_closed(Duration::from_secs(5)), || {
        "tcp: 70 KB without a header terminator (> max_message_bytes) must close the connection"
            .into()
    });
    assert_daemon_healthy(&mut d, "tcp garbage");

    // NUL bytes in a header value
    let mut c = TcpConn::connect(tcp);
    let sb = c.sent_by();
    let _ = c.send(&options_raw(&sb, "TCP", "Subject: a\0b\r\n", b"", None));
    tcp_refused(&mut f, "tcp NUL in a header value", &mut c);
    drop(c);
    assert_daemon_healthy(&mut d, "tcp NUL bytes");

    // a well-behaved TCP client still works end to end
    let mut c = TcpConn::connect(tcp);
    options_ok(&mut c, "tcp after hostile input");
    let contact = format!("<sip:1008@{};transport=tcp>", c.sent_by());
    register_ok(&mut c, "1008", &contact, None, "tcp after hostile input");
    f.finish(&d);
}

#[test]
fn hostile_ws_oversized_message_and_garbage() {
    let mut d = Daemon::start("");
    let mut f = Failures::default();
    let ws_addr = d.listeners.ws();

    // one WebSocket message over the limit (>= 64 KiB): closed or refused, never accepted
    let mut ws = WsConn::connect(ws_addr);
    let sb = ws.sent_by();
    let huge = options_raw(&sb, "WS", &big_header(70_000), b"", None);
    let _ = ws.send(&huge); // the server may already be closing
    let got = ws.recv(SIP_TIMEOUT);
    eprintln!("ws {} byte message -> {got:?}", huge.len());
    if let Recv::Msg(m) = got {
        let r = SipResponse::parse(&m);
        f.check(r.as_ref().is_some_and(|r| r.code >= 400), || {
            format!(
                "ws oversized message: expected close or 4xx/5xx, got:\n{}",
                String::from_utf8_lossy(&m)
            )
        });
    }
    drop(ws);
    assert_daemon_healthy(&mut d, "ws oversized message");

    // binary garbage as a WebSocket message: no SIP answer can be formed
    let mut ws = WsConn::connect(ws_addr);
    let _ = ws.send_binary(garbage(2000));
    if let Recv::Msg(m) = ws.recv(SILENCE) {
        f.check(false, || {
            format!("ws garbage got an answer:\n{}", String::from_utf8_lossy(&m))
        });
    }
    drop(ws);
    assert_daemon_healthy(&mut d, "ws garbage");

    // Content-Length longer than the message: a reply can be formed -> 400
    let mut ws = WsConn::connect(ws_addr);
    let sb = ws.sent_by();
    ws.send(&options_raw(&sb, "WS", "", b"hello", Some("50")))
        .unwrap();
    let r = ws.recv_response(SIP_TIMEOUT);
    f.is_400("ws Content-Length longer than the message", &r);
    drop(ws);
    assert_daemon_healthy(&mut d, "ws Content-Length longer");

    // and WebSocket still works end to end
    let mut ws = WsConn::connect(ws_addr);
    let contact = format!("<sip:1007@{};transport=ws>", ws.host);
    register_ok(&mut ws, "1007", &contact, None, "ws after hostile input");
    f.finish(&d);
}
