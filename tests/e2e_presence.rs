//! Agent presence end to end: extensions allocated through the management API, phones
//! registering with the credentials it hands out (baresip and the harness's own UAC), and the
//! STOMP event stream (seed 004 section 三) seen by an agent desktop and a supervisor, directly
//! over WebSocket and over SockJS.

#[path = "support/baresip.rs"]
mod baresip;
mod common;
#[path = "support/mgmt.rs"]
mod mgmt;

use std::time::Duration;

use serde_json::{json, Value};

use baresip::*;
use common::*;
use mgmt::*;

/// Longest wait for one pushed event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

fn config() -> String {
    // min_expires lowered so baresip refreshes (and meets the disabled extension) quickly
    format!("{}\n[sip]\nmin_expires_secs = 4\n", default_config())
}

// ------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------

fn connect(d: &Daemon, framing: Framing, auth: &[(String, String)], who: &str) -> Stomp {
    Stomp::connect(d.listeners.http, framing, auth)
        .unwrap_or_else(|e| d.fail(&format!("STOMP CONNECT as {who}: {e}")))
}

fn subscribe(d: &Daemon, c: &mut Stomp, id: &str, destination: &str) {
    if let Err(e) = c.subscribe(id, destination) {
        d.fail(&format!("SUBSCRIBE {destination}: {e}"));
    }
}

/// The next MESSAGE on `dest` whose JSON body satisfies `pred`, with its STOMP headers
/// checked; fails with the frames seen so far otherwise.
fn expect_event(
    d: &Daemon,
    c: &mut Stomp,
    dest: &str,
    sub: &str,
    what: &str,
    pred: impl FnMut(&Value) -> bool,
) -> Value {
    match c.next_message_where(dest, EVENT_TIMEOUT, pred) {
        Some(f) => message_json(&f, sub, what),
        None => d.fail(&format!(
            "{what}: no matching MESSAGE on {dest} within {EVENT_TIMEOUT:?}\n--- frames:\n{}",
            c.transcript()
        )),
    }
}

fn num(v: &Value, key: &str) -> Option<i64> {
    v.get(key)?.as_i64()
}

/// The `content` of a notify message, parsed as the seed's `{duration, msgType, data, type}`.
fn notify_content(v: &Value, ctx: &str) -> Value {
    let content = v["content"]
        .as_str()
        .unwrap_or_else(|| panic!("{ctx}: notify body without a string content: {v}"));
    serde_json::from_str(content)
        .unwrap_or_else(|e| panic!("{ctx}: notify content is not JSON ({e}): {content:?}"))
}

/// Whether a notify body carries `text`: as its `content`, or as the `data` of the seed's
/// `{duration, msgType, data, type}` JSON inside `content`.
fn notify_carries(v: &Value, text: &str) -> bool {
    let Some(content) = v["content"].as_str() else {
        return false;
    };
    content.contains(text)
        || serde_json::from_str::<Value>(content)
            .is_ok_and(|c| c["data"].as_str().is_some_and(|d| d.contains(text)))
}

fn is_notify(v: &Value, msg_type: &str) -> bool {
    v["content"]
        .as_str()
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
        .is_some_and(|c| c["msgType"].as_str() == Some(msg_type))
}

fn assert_notify(v: &Value, msg_type: &str, ctx: &str) -> String {
    let c = notify_content(v, ctx);
    assert_eq!(c["duration"].as_str(), Some("3"), "{ctx}: {c}");
    assert_eq!(c["msgType"].as_str(), Some(msg_type), "{ctx}: {c}");
    assert_eq!(c["type"].as_str(), Some("message"), "{ctx}: {c}");
    let data = c["data"].as_str().unwrap_or("").to_string();
    assert!(!data.is_empty(), "{ctx}: empty data: {c}");
    data
}

/// Waits until the extension list shows `user` with `status` and `workStatus`.
fn wait_extension(api: &Mgmt, d: &Daemon, project: &str, user: &str, status: i64, work: i64) {
    let mut last = Value::Null;
    let ok = poll_until(Duration::from_secs(5), || {
        last = api.extension(project, user);
        (num(&last, "status") == Some(status) && num(&last, "workStatus") == Some(work))
            .then_some(())
    });
    if ok.is_none() {
        d.fail(&format!(
            "getExtentionByProject {project}: want {user} status={status} workStatus={work}, \
             last seen {last}"
        ));
    }
}

/// REGISTERs `user` over UDP with the harness's UAC; returns the connection (keep it alive).
fn register_udp(d: &Daemon, user: &str, password: &str) -> UdpConn {
    let mut c = d.udp_client();
    let mut uac = Uac::new(user);
    let contact = format!("<sip:{user}@{}>", c.local_addr());
    let opts = RegisterOpts::new(password, Some(contact));
    let r = register(&mut c, &mut uac, &opts, &format!("REGISTER {user}")).response;
    if r.code != 200 {
        d.fail(&format!(
            "REGISTER {user} with the getByCertificate password:\n{}",
            r.raw
        ));
    }
    c
}

// ------------------------------------------------------------------------------------------
// tests
// ------------------------------------------------------------------------------------------

/// The scenario: allocate, register a real softphone, watch presence over the API and
/// the event stream, sign in, disable the extension (its next REGISTER is refused), finish.
#[test]
fn baresip_registration_drives_presence_end_to_end() {
    require_tool("baresip");
    let d = Daemon::start(&config());
    let api = Mgmt::new(d.listeners.http);
    let project = "P-live";
    let cert = api.create_ok(project, 2);
    let (user, pw) = api.claim(&cert);
    assert_eq!(user, "8000");
    let reg_topic = format!("/topic/register/{user}");
    let status_topic = format!("/topic/status/{user}");
    let ext_topic = format!("/topic/callExtStatus/{project}");

    // listeners first, so every change is observed live
    let mut sup = connect(&d, Framing::Raw, &supervisor_login(), "supervisor");
    subscribe(&d, &mut sup, "sup-ext", &ext_topic);
    let mut agent = connect(&d, Framing::Raw, &agent_login(&user, &pw), "agent 8000");
    subscribe(&d, &mut agent, "reg", &reg_topic);
    subscribe(&d, &mut agent, "st", &status_topic);

    // 1. baresip registers with the getByCertificate credentials at the daemon's UDP listener
    let port = d.listeners.udp().port();
    let account = format!("<sip:{user}@127.0.0.1:{port};transport=udp>;auth_pass={pw};regint=5");
    let mut b = Baresip::start(&account);
    b.wait_for(&d, "a 200 OK to REGISTER", Duration::from_secs(15), |b| {
        b.register_responses(200) >= 1
    });

    let ev = expect_event(
        &d,
        &mut agent,
        &reg_topic,
        "reg",
        "register event (online)",
        |v| num(v, "status") == Some(1),
    );
    assert_eq!(num(&ev, "workStatus"), Some(-1), "register event: {ev}");
    assert_eq!(num(&ev, "sessionSatus"), Some(0), "register event: {ev}");
    assert_eq!(num(&ev, "sessionStatus"), Some(0), "register event: {ev}");
    let ev = expect_event(
        &d,
        &mut sup,
        &ext_topic,
        "sup-ext",
        "callExtStatus (online)",
        |v| v["username"].as_str() == Some(user.as_str()) && num(v, "status") == Some(1),
    );
    assert_eq!(num(&ev, "workStatus"), Some(-1), "callExtStatus: {ev}");
    assert_eq!(num(&ev, "sessionStatus"), Some(0), "callExtStatus: {ev}");
    wait_extension(&api, &d, project, &user, 1, -1);
    assert_eq!(
        num(&api.extension(project, "8001"), "status"),
        Some(0),
        "the other extension is not registered"
    );

    // 2. setWorkStatus 1: signed in and idle
    let data = api
        .set_work_status(&user, "1")
        .ok("setWorkStatus 8000 workStatus=1 (registered)");
    assert_eq!(data["username"].as_str(), Some(user.as_str()), "{data}");
    assert_eq!(num(&data, "workStatus"), Some(1), "{data}");
    assert_eq!(num(&data, "sessionStatus"), Some(0), "{data}");
    let ev = expect_event(
        &d,
        &mut agent,
        &status_topic,
        "st",
        "status event (idle)",
        |v| num(v, "workStatus") == Some(1),
    );
    assert_eq!(num(&ev, "sessionSatus"), Some(0), "status event: {ev}");
    assert_eq!(num(&ev, "sessionStatus"), Some(0), "status event: {ev}");
    expect_event(
        &d,
        &mut sup,
        &ext_topic,
        "sup-ext",
        "callExtStatus (idle)",
        |v| {
            v["username"].as_str() == Some(user.as_str())
                && num(v, "workStatus") == Some(1)
                && num(v, "status") == Some(1)
        },
    );
    wait_extension(&api, &d, project, &user, 1, 1);
    assert_eq!(
        d.metric("gridedge_agents", &["state=\"idle\""]),
        Some(1.0),
        "gridedge_agents{{state=\"idle\"}}\n{}",
        d.metrics()
    );
    assert!(
        d.metric("gridedge_agent_transitions_total", &[])
            .unwrap_or(0.0)
            >= 1.0,
        "gridedge_agent_transitions_total\n{}",
        d.metrics()
    );

    // 3. setExtensionStatus -1: the registration is removed, the agent is unavailable
    let data = api
        .set_extension_status(&user, "-1")
        .ok("setExtensionStatus 8000 -1");
    assert_eq!(data["username"].as_str(), Some(user.as_str()), "{data}");
    assert_eq!(num(&data, "workStatus"), Some(-1), "{data}");
    let ev = expect_event(
        &d,
        &mut agent,
        &reg_topic,
        "reg",
        "register event (disabled)",
        |v| num(v, "status") == Some(0),
    );
    assert_eq!(num(&ev, "workStatus"), Some(-1), "register event: {ev}");
    expect_event(
        &d,
        &mut agent,
        &status_topic,
        "st",
        "status event (disabled)",
        |v| num(v, "workStatus") == Some(-1),
    );
    expect_event(
        &d,
        &mut sup,
        &ext_topic,
        "sup-ext",
        "callExtStatus (disabled)",
        |v| v["username"].as_str() == Some(user.as_str()) && num(v, "status") == Some(0),
    );
    wait_extension(&api, &d, project, &user, 0, -1);
    if poll_until(Duration::from_secs(3), || {
        (d.bindings_active() == 0.0).then_some(())
    })
    .is_none()
    {
        d.fail(&format!(
            "disabling did not remove the binding:\n{}",
            d.metrics()
        ));
    }
    assert_eq!(
        d.metric("gridedge_agents", &["state=\"idle\""])
            .unwrap_or(0.0),
        0.0,
        "no agent is idle after disabling\n{}",
        d.metrics()
    );

    // 4. baresip's next REGISTER (its refresh) is refused with 403
    b.wait_for(
        &d,
        "a 403 to REGISTER after the extension was disabled",
        Duration::from_secs(15),
        |b| b.register_responses(403) >= 1,
    );
    let refused = d
        .metric("gridedge_sip_requests_total", &["REGISTER", "\"403\""])
        .unwrap_or(0.0);
    assert!(refused >= 1.0, "REGISTER 403 not counted:\n{}", d.metrics());
    assert_eq!(
        d.bindings_active(),
        0.0,
        "a disabled extension re-registered"
    );
    let e = api.extension(project, &user);
    assert_eq!(
        num(&e, "status"),
        Some(0),
        "after the refused REGISTER: {e}"
    );
    let _ = b.proc.terminate(Duration::from_secs(10));

    // 5. finishProject frees the range
    api.finish_project(project).ok("finishProject P-live");
    api.extensions(project)
        .err(404, &[], "getExtentionByProject after finishProject");
    api.create_ok("P-next", 2);
    assert_eq!(
        usernames(&api.extensions_ok("P-next")),
        ["8000", "8001"],
        "the freed numbers are allocated again"
    );
    agent.close();
    sup.close();
}

/// SEND /app/idle and /app/busy change the agent's state (same rules as setWorkStatus) and
/// answer on /topic/notify/{project}/{user}; sendToUser lands on the same topic; an agent
/// cannot change another agent's state.
#[test]
fn stomp_idle_and_busy_change_state_and_notify() {
    let d = Daemon::start(&config());
    let api = Mgmt::new(d.listeners.http);
    let project = "P-app";
    let cert = api.create_ok(project, 3);
    let (u0, pw0) = api.claim(&cert);
    let (u1, pw1) = api.claim(&cert);
    let (u2, pw2) = api.claim(&cert);
    assert_eq!(
        [u0.as_str(), u1.as_str(), u2.as_str()],
        ["8000", "8001", "8002"]
    );
    let _phone0 = register_udp(&d, &u0, &pw0);
    let _phone1 = register_udp(&d, &u1, &pw1);
    wait_extension(&api, &d, project, &u0, 1, -1);
    wait_extension(&api, &d, project, &u1, 1, -1);

    let notify0 = format!("/topic/notify/{project}/{u0}");
    let status0 = format!("/topic/status/{u0}");
    let mut a0 = connect(&d, Framing::Raw, &agent_login(&u0, &pw0), "agent 8000");
    subscribe(&d, &mut a0, "n0", &notify0);
    subscribe(&d, &mut a0, "s0", &status0);
    let body = |user: &str| json!({"username": user, "workType": "10", "projectCode": project});

    // /app/idle: receipt, success notify, state idle
    let receipt = a0
        .send_with_receipt("/app/idle", &body(&u0))
        .unwrap_or_else(|e| d.fail(&e));
    if let Err(e) = a0.await_receipt(&receipt, EVENT_TIMEOUT) {
        d.fail(&format!("SEND /app/idle: {e}"));
    }
    let n = expect_event(
        &d,
        &mut a0,
        &notify0,
        "n0",
        "notify after /app/idle",
        |_| true,
    );
    assert_notify(&n, "success", "/app/idle");
    expect_event(&d, &mut a0, &status0, "s0", "status after /app/idle", |v| {
        num(v, "workStatus") == Some(1)
    });
    wait_extension(&api, &d, project, &u0, 1, 1);

    // /app/busy: success notify, state not ready
    a0.send("/app/busy", &body(&u0))
        .unwrap_or_else(|e| d.fail(&e));
    let n = expect_event(
        &d,
        &mut a0,
        &notify0,
        "n0",
        "notify after /app/busy",
        |_| true,
    );
    assert_notify(&n, "success", "/app/busy");
    expect_event(&d, &mut a0, &status0, "s0", "status after /app/busy", |v| {
        num(v, "workStatus") == Some(0)
    });
    wait_extension(&api, &d, project, &u0, 1, 0);

    // sendToUser (to one agent and to the whole project) arrives on the notify topic
    api.send_to_user(project, Some(&u0), "bonjour 8000")
        .ok("sendToUser 8000");
    expect_event(&d, &mut a0, &notify0, "n0", "sendToUser 8000", |v| {
        notify_carries(v, "bonjour 8000")
    });
    api.send_to_user(project, None, "à tous")
        .ok("sendToUser (project)");
    expect_event(&d, &mut a0, &notify0, "n0", "sendToUser (project)", |v| {
        notify_carries(v, "à tous")
    });

    // an unregistered agent cannot go idle: error notify naming the cause, nothing changes
    let notify2 = format!("/topic/notify/{project}/{u2}");
    let mut a2 = connect(&d, Framing::Raw, &agent_login(&u2, &pw2), "agent 8002");
    subscribe(&d, &mut a2, "n2", &notify2);
    a2.send("/app/idle", &body(&u2))
        .unwrap_or_else(|e| d.fail(&e));
    let n = expect_event(
        &d,
        &mut a2,
        &notify2,
        "n2",
        "notify after refused /app/idle",
        |_| true,
    );
    let why = assert_notify(&n, "error", "/app/idle while not registered");
    assert!(
        why.to_lowercase().contains("regist"),
        "the error must say the extension is not registered: {why:?}"
    );
    assert_eq!(num(&api.extension(project, &u2), "workStatus"), Some(-1));
    a2.close();

    // 8000 asks to make 8001 (registered, so idle would be possible) idle: refused
    a0.send("/app/idle", &body(&u1))
        .unwrap_or_else(|e| d.fail(&e));
    let refusal = a0.next_frame_where(EVENT_TIMEOUT, |f| {
        f.command == "ERROR"
            || (f.command == "MESSAGE"
                && f.header("destination") == Some(notify0.as_str())
                && f.json().is_some_and(|v| is_notify(&v, "error")))
    });
    let e1 = api.extension(project, &u1);
    assert_eq!(
        num(&e1, "workStatus"),
        Some(-1),
        "8000 changed 8001's state through /app/idle: {e1}"
    );
    if refusal.is_none() {
        d.fail(&format!(
            "/app/idle for another user's extension: no ERROR frame and no error notify\n{}",
            a0.transcript()
        ));
    }
    // and 8001's own desktop still works
    let mut a1 = connect(&d, Framing::Raw, &agent_login(&u1, &pw1), "agent 8001");
    let notify1 = format!("/topic/notify/{project}/{u1}");
    subscribe(&d, &mut a1, "n1", &notify1);
    a1.send("/app/idle", &body(&u1))
        .unwrap_or_else(|e| d.fail(&e));
    let n = expect_event(&d, &mut a1, &notify1, "n1", "8001's own /app/idle", |_| {
        true
    });
    assert_notify(&n, "success", "8001's own /app/idle");
    wait_extension(&api, &d, project, &u1, 1, 1);
    a1.close();
}

/// CONNECT with bad credentials gets an ERROR frame and the connection is closed; an agent may
/// subscribe to its own topics only, a supervisor to anything.
#[test]
fn stomp_authentication_and_topic_authorization() {
    let d = Daemon::start(&config());
    let api = Mgmt::new(d.listeners.http);
    let project = "P-auth";
    let cert = api.create_ok(project, 2);
    api.create_ok("P-other", 1);
    let (u0, pw0) = api.claim(&cert);
    let (u1, pw1) = api.claim(&cert);
    assert_eq!((u0.as_str(), u1.as_str()), ("8000", "8001"));

    // bad credentials: ERROR frame, then the server closes the connection
    let ts = next_timestamp().to_string();
    let bad_logins: Vec<(&str, Vec<(String, String)>)> = vec![
        ("wrong passcode", agent_login(&u0, "not-the-password")),
        ("another extension's passcode", agent_login(&u0, &pw1)),
        ("unknown extension", agent_login("7999", &pw0)),
        ("no credentials", vec![]),
        (
            "supervisor with a bad sign",
            auth_headers_at(ACCOUNT, "wrong-secret", &ts),
        ),
        (
            "supervisor with a stale timestamp",
            auth_headers_at(ACCOUNT, SECRET, &(now_ms() - 600_000).to_string()),
        ),
    ];
    for (name, auth) in bad_logins {
        let mut c = Stomp::open(d.listeners.http, Framing::Raw)
            .unwrap_or_else(|e| d.fail(&format!("{name}: {e}")));
        let host = d.listeners.http.to_string();
        let mut headers: Vec<(&str, &str)> = vec![("accept-version", "1.2"), ("host", &host)];
        headers.extend(auth.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c.send_frame(&Frame::new("CONNECT", &headers, ""))
            .unwrap_or_else(|e| d.fail(&format!("{name}: {e}")));
        match c.next_frame(EVENT_TIMEOUT) {
            Some(f) if f.command == "ERROR" => assert!(
                f.header("message").is_some_and(|m| !m.trim().is_empty()),
                "{name}: ERROR without a message header: {f:?}"
            ),
            other => d.fail(&format!("{name}: want an ERROR frame, got {other:?}")),
        }
        assert!(
            c.wait_closed(EVENT_TIMEOUT),
            "{name}: connection not closed after the ERROR frame"
        );
    }

    // an agent's own topics are allowed
    let own = [
        format!("/topic/register/{u0}"),
        format!("/topic/status/{u0}"),
        format!("/topic/call/{u0}"),
        format!("/topic/invite/{u0}"),
        format!("/topic/bye/{u0}"),
        format!("/topic/notify/{project}/{u0}"),
        format!("/topic/task/{project}"),
    ];
    let mut a0 = connect(&d, Framing::Raw, &agent_login(&u0, &pw0), "agent 8000");
    for (i, t) in own.iter().enumerate() {
        subscribe(&d, &mut a0, &format!("own-{i}"), t);
    }
    a0.close();

    // anything else is an ERROR saying "not allowed" (a fresh connection each: ERROR closes)
    let forbidden = [
        format!("/topic/register/{u1}"),
        format!("/topic/status/{u1}"),
        format!("/topic/call/{u1}"),
        format!("/topic/notify/{project}/{u1}"),
        "/topic/task/P-other".to_string(),
        format!("/topic/callExtStatus/{project}"),
        "/topic/status/*".to_string(),
    ];
    for t in &forbidden {
        let mut a = connect(&d, Framing::Raw, &agent_login(&u0, &pw0), "agent 8000");
        match a.subscribe("x", t) {
            Ok(()) => d.fail(&format!("agent 8000 was allowed to subscribe to {t}")),
            Err(e) => assert!(
                e.to_lowercase().contains("not allowed"),
                "SUBSCRIBE {t}: the ERROR message must say \"not allowed\": {e}"
            ),
        }
    }

    // a supervisor may subscribe to anything
    let mut sup = connect(&d, Framing::Raw, &supervisor_login(), "supervisor");
    for (i, t) in [
        format!("/topic/callExtStatus/{project}"),
        format!("/topic/status/{u1}"),
        format!("/topic/register/{u0}"),
        format!("/topic/notify/{project}/{u1}"),
    ]
    .iter()
    .enumerate()
    {
        subscribe(&d, &mut sup, &format!("sup-{i}"), t);
    }
    sup.close();
}

/// The same stream through SockJS framing: `o`, then `["<frame>"]` from the client and
/// `a["<frame>", ...]` from the server.
#[test]
fn sockjs_framing_carries_the_stream() {
    let d = Daemon::start(&config());
    let api = Mgmt::new(d.listeners.http);
    let project = "P-sock";
    let cert = api.create_ok(project, 1);
    let (u, pw) = api.claim(&cert);

    let mut sup = connect(
        &d,
        Framing::SockJs,
        &supervisor_login(),
        "supervisor (SockJS)",
    );
    let ext_topic = format!("/topic/callExtStatus/{project}");
    subscribe(&d, &mut sup, "sup", &ext_topic);
    let mut agent = connect(&d, Framing::SockJs, &agent_login(&u, &pw), "agent (SockJS)");
    assert!(
        agent
            .connected
            .as_ref()
            .and_then(|f| f.header("version"))
            .is_some_and(|v| v == "1.2"),
        "CONNECTED frame must carry version:1.2: {:?}",
        agent.connected
    );
    let status_topic = format!("/topic/status/{u}");
    let notify_topic = format!("/topic/notify/{project}/{u}");
    subscribe(&d, &mut agent, "st", &status_topic);
    subscribe(&d, &mut agent, "nt", &notify_topic);

    // /app/busy through SockJS, with a receipt: signed out -> not ready
    let receipt = agent
        .send_with_receipt(
            "/app/busy",
            &json!({"username": u, "workType": "10", "projectCode": project}),
        )
        .unwrap_or_else(|e| d.fail(&e));
    if let Err(e) = agent.await_receipt(&receipt, EVENT_TIMEOUT) {
        d.fail(&format!("SEND /app/busy over SockJS: {e}"));
    }
    let n = expect_event(
        &d,
        &mut agent,
        &notify_topic,
        "nt",
        "notify after /app/busy",
        |_| true,
    );
    assert_notify(&n, "success", "/app/busy over SockJS");
    let ev = expect_event(
        &d,
        &mut agent,
        &status_topic,
        "st",
        "status over SockJS",
        |v| num(v, "workStatus") == Some(0),
    );
    assert_eq!(num(&ev, "sessionSatus"), Some(0), "{ev}");
    let ev = expect_event(
        &d,
        &mut sup,
        &ext_topic,
        "sup",
        "callExtStatus over SockJS",
        |v| v["username"].as_str() == Some(u.as_str()) && num(v, "workStatus") == Some(0),
    );
    assert_eq!(num(&ev, "status"), Some(0), "{ev}");
    wait_extension(&api, &d, project, &u, 0, 0);

    // sendToUser: the text survives quotes and newlines through both JSON layers
    let text = "via \"sockjs\"\nline 2";
    api.send_to_user(project, Some(&u), text).ok("sendToUser");
    expect_event(
        &d,
        &mut agent,
        &notify_topic,
        "nt",
        "sendToUser over SockJS",
        |v| notify_carries(v, text),
    );
    agent.close();
    sup.close();
}

/// The `presence` row of `user` in the daemon's database (read-only): machine and counters JSON.
fn presence_row(d: &Daemon, user: &str) -> (Value, Value) {
    let db = d.state_dir.join("gridedge.db");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| d.fail(&format!("open {} read-only: {e}", db.display())));
    let (machine, counters): (String, String) = conn
        .query_row(
            "SELECT machine, counters FROM presence WHERE extension = ?1",
            [user],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap_or_else(|e| d.fail(&format!("presence row for {user}: {e}")));
    let machine: Value = serde_json::from_str(&machine)
        .unwrap_or_else(|e| d.fail(&format!("presence.machine is not JSON ({e}): {machine}")));
    let counters: Value = serde_json::from_str(&counters)
        .unwrap_or_else(|e| d.fail(&format!("presence.counters is not JSON ({e}): {counters}")));
    (machine, counters)
}

/// A graceful restart keeps presence: the agent stays signed in (not ready), the project and
/// its certificate keep working, and the `presence` table holds the seat's counters.
#[test]
fn presence_survives_a_restart() {
    let mut d = Daemon::start(&config());
    let api = Mgmt::new(d.listeners.http);
    let today = || {
        gridedge::agents::counters::DayClock::new("Asia/Shanghai")
            .unwrap()
            .day_of(now_ms())
    };
    let day_at_start = today();
    let project = "P-restart";
    let cert = api.create_ok(project, 2);
    let (user, pw) = api.claim(&cert);
    assert_eq!(user, "8000");
    let data = api
        .set_work_status(&user, "0")
        .ok("setWorkStatus 8000 workStatus=0");
    assert_eq!(num(&data, "workStatus"), Some(0), "{data}");
    wait_extension(&api, &d, project, &user, 0, 0);

    let status = d.sigterm();
    if !status.success() {
        d.fail(&format!("SIGTERM must be a clean shutdown, got {status}"));
    }
    // written at shutdown
    let (machine, _) = presence_row(&d, &user);
    assert_eq!(
        machine["machine"]["state"]["state"].as_str(),
        Some("not_ready"),
        "presence.machine after SIGTERM: {machine}"
    );
    d.restart();
    let api = Mgmt::new(d.listeners.http);

    // still signed in (workStatus 0, not -1), still unregistered
    let e = api.extension(project, &user);
    assert_eq!(
        num(&e, "workStatus"),
        Some(0),
        "8000 after the restart (want signed in, not ready): {e}"
    );
    assert_eq!(num(&e, "status"), Some(0), "8000 after the restart: {e}");
    assert_eq!(
        num(&api.extension(project, "8001"), "workStatus"),
        Some(-1),
        "8001 was never signed in"
    );
    // the certificate still names the same credentials
    let named = api
        .get_by_certificate(&cert, Some(&user), "2")
        .ok("getByCertificate username=8000 after the restart");
    assert_eq!(named["username"].as_str(), Some(user.as_str()), "{named}");
    assert_eq!(named["password"].as_str(), Some(pw.as_str()), "{named}");
    // and the agent's desktop still logs in with them
    connect(&d, Framing::Raw, &agent_login(&user, &pw), "agent 8000").close();

    // the persisted row
    let (machine, counters) = presence_row(&d, &user);
    assert_eq!(
        machine["machine"]["state"]["state"].as_str(),
        Some("not_ready"),
        "presence.machine: {machine}"
    );
    assert!(
        machine["machine"]["signin_session"].as_u64().is_some(),
        "presence.machine without a sign-in session: {machine}"
    );
    if today() != day_at_start {
        // Local midnight passed during the test: today's counters rightly start from zero.
        eprintln!("presence_survives_a_restart: crossed local midnight, counters not checked");
        return;
    }
    assert_eq!(
        counters["day"].as_i64(),
        Some(i64::from(day_at_start.0)),
        "presence.counters day: {counters}"
    );
    assert_eq!(
        counters["sign_in_count"].as_u64(),
        Some(1),
        "presence.counters must show one sign-in today: {counters}"
    );
}

/// Malformed, oversized and out-of-order STOMP input gets an ERROR frame and/or a closed
/// connection, each on its own connection; the daemon carries on and counts the refusals.
#[test]
fn hostile_stomp_frames_are_refused_without_harm() {
    let mut d = Daemon::start(&config());
    let api = Mgmt::new(d.listeners.http);
    let project = "P-hostile";
    let cert = api.create_ok(project, 1);
    let (user, pw) = api.claim(&cert);
    let refused_before = d
        .metric("gridedge_stream_refused_total", &[])
        .unwrap_or(0.0);

    enum Payload {
        Text(String),
        Binary(Vec<u8>),
    }
    let many_headers: String = (0..100).map(|i| format!("x-h{i}:v\n")).collect();
    let idle_body = json!({"username": user, "workType": "10", "projectCode": project}).to_string();
    let cases: Vec<(&str, bool, Payload)> = vec![
        (
            "a 200 KB frame",
            true,
            Payload::Text(format!(
                "SEND\ndestination:/app/idle\ncontent-type:application/json\n\n{}\0",
                "x".repeat(200 * 1024)
            )),
        ),
        (
            "a 100 KB frame (over the STOMP limit, under the WebSocket one)",
            true,
            Payload::Text(format!(
                "SEND\ndestination:/app/idle\ncontent-type:application/json\n\n{}\0",
                "x".repeat(100 * 1024)
            )),
        ),
        (
            "an unknown command",
            true,
            Payload::Text("FROBNICATE\nfoo:bar\n\n\0".into()),
        ),
        (
            "a header line without ':'",
            true,
            Payload::Text(format!(
                "SEND\ndestination:/app/idle\nthis line has no colon\n\n{idle_body}\0"
            )),
        ),
        (
            "a frame with 100 headers",
            true,
            Payload::Text(format!(
                "SEND\ndestination:/app/idle\n{many_headers}\n{idle_body}\0"
            )),
        ),
        ("invalid UTF-8 in a header", true, {
            let mut b = b"SEND\ndestination:/app/\xff\xfe\nx-bad:\xc3\x28\n\n".to_vec();
            b.extend_from_slice(idle_body.as_bytes());
            b.push(0);
            Payload::Binary(b)
        }),
        (
            "SUBSCRIBE before CONNECT",
            false,
            Payload::Text(format!(
                "SUBSCRIBE\nid:s0\ndestination:/topic/status/{user}\nack:auto\n\n\0"
            )),
        ),
        (
            "a second CONNECT",
            true,
            Payload::Text(format!(
                "CONNECT\naccept-version:1.2\nhost:gridedge\nlogin:{user}\npasscode:{pw}\n\n\0"
            )),
        ),
        (
            "SEND /app/idle with a body that is not JSON",
            true,
            Payload::Text(
                "SEND\ndestination:/app/idle\ncontent-type:application/json\n\nidle, please\0"
                    .into(),
            ),
        ),
        (
            "SEND to an unsupported destination",
            true,
            Payload::Text(format!(
                "SEND\ndestination:/app/transfer\ncontent-type:application/json\n\n{idle_body}\0"
            )),
        ),
    ];
    let mut outcomes = Vec::new();
    for (name, connect_first, payload) in cases {
        let mut c = if connect_first {
            connect(&d, Framing::Raw, &agent_login(&user, &pw), name)
        } else {
            Stomp::open(d.listeners.http, Framing::Raw)
                .unwrap_or_else(|e| d.fail(&format!("{name}: open: {e}")))
        };
        let sent = match payload {
            Payload::Text(t) => c.send_raw(&t),
            Payload::Binary(b) => c.send_binary(b),
        };
        // The server may close while a large message is still being written.
        let error = match &sent {
            Ok(()) => c.next_frame_where(EVENT_TIMEOUT, |f| f.command == "ERROR"),
            Err(_) => None,
        };
        let closed = sent.is_err() || c.wait_closed(EVENT_TIMEOUT);
        if error.is_none() && !closed {
            d.fail(&format!(
                "{name}: neither an ERROR frame nor a closed connection within \
                 {EVENT_TIMEOUT:?}\n--- frames:\n{}",
                c.transcript()
            ));
        }
        if let Some(f) = &error {
            assert!(
                f.header("message").is_some_and(|m| !m.trim().is_empty()),
                "{name}: ERROR without a message header: {f:?}"
            );
        }
        let unexpected: Vec<&String> = c
            .log
            .iter()
            .filter(|l| l.contains("command: \"RECEIPT\"") || l.contains("command: \"MESSAGE\""))
            .collect();
        assert!(
            unexpected.is_empty(),
            "{name}: the server acted on the frame: {unexpected:?}"
        );
        outcomes.push(format!(
            "{name}: error={:?} closed={closed} send={sent:?}",
            error.as_ref().and_then(|f| f.header("message"))
        ));
        d.assert_alive(name);
    }

    // nothing reached presence
    let e = api.extension(project, &user);
    assert_eq!(
        num(&e, "workStatus"),
        Some(-1),
        "a refused SEND changed 8000's state: {e}\n{outcomes:#?}"
    );

    // a legitimate desktop still connects and receives events
    let status_topic = format!("/topic/status/{user}");
    let mut agent = connect(&d, Framing::Raw, &agent_login(&user, &pw), "agent 8000");
    subscribe(&d, &mut agent, "st", &status_topic);
    api.set_work_status(&user, "0")
        .ok("setWorkStatus 8000 0 after the hostile frames");
    expect_event(
        &d,
        &mut agent,
        &status_topic,
        "st",
        "status event after the hostile frames",
        |v| num(v, "workStatus") == Some(0),
    );
    agent.close();

    let refused_after = d
        .metric("gridedge_stream_refused_total", &[])
        .unwrap_or(0.0);
    assert!(
        refused_after > refused_before,
        "gridedge_stream_refused_total did not increase ({refused_before} -> {refused_after})\n\
         {outcomes:#?}\n{}",
        d.metrics()
    );
    d.assert_alive("the hostile frames");
}

/// `[management] max_stream_connections` bounds the event stream: the next upgrade gets 503,
/// the connections already open keep working, and a slot freed is usable again.
#[test]
fn event_stream_connection_limit() {
    let base = config();
    let anchor = "timestamp_window_secs = 300\n";
    assert!(base.contains(anchor), "mgmt_config changed: {base}");
    let d = Daemon::start(&base.replace(anchor, &format!("{anchor}max_stream_connections = 2\n")));
    let api = Mgmt::new(d.listeners.http);
    let project = "P-limit";
    let cert = api.create_ok(project, 1);
    let (user, pw) = api.claim(&cert);
    let ext_topic = format!("/topic/callExtStatus/{project}");
    let status_topic = format!("/topic/status/{user}");

    let mut sup = connect(&d, Framing::Raw, &supervisor_login(), "supervisor (1st)");
    subscribe(&d, &mut sup, "ext", &ext_topic);
    let mut agent = connect(&d, Framing::Raw, &agent_login(&user, &pw), "agent (2nd)");
    subscribe(&d, &mut agent, "st", &status_topic);

    // the third: plain and SockJS upgrades are both refused with 503
    for path in [
        WS_PATH.to_string(),
        format!("{WS_PATH}/000/abcdefgh/websocket"),
    ] {
        let (code, head, _s) = ws_upgrade(d.listeners.http, &path)
            .unwrap_or_else(|e| d.fail(&format!("third upgrade at {path}: {e}")));
        if code != 503 {
            d.fail(&format!(
                "third event-stream upgrade at {path}: want HTTP 503, got {code}\n{head}"
            ));
        }
    }
    let refused = d
        .metric("gridedge_stream_refused_total", &["reason=\"capacity\""])
        .unwrap_or(0.0);
    assert!(refused >= 2.0, "refusals not counted:\n{}", d.metrics());

    // the first two still work
    api.set_work_status(&user, "0")
        .ok("setWorkStatus 8000 0 with the stream full");
    expect_event(
        &d,
        &mut sup,
        &ext_topic,
        "ext",
        "callExtStatus (1st)",
        |v| v["username"].as_str() == Some(user.as_str()) && num(v, "workStatus") == Some(0),
    );
    expect_event(&d, &mut agent, &status_topic, "st", "status (2nd)", |v| {
        num(v, "workStatus") == Some(0)
    });

    // closing one frees its slot (released when the server notices the close)
    agent.close();
    let mut last = String::new();
    let reopened = poll_until(Duration::from_secs(5), || {
        match Stomp::connect(d.listeners.http, Framing::Raw, &agent_login(&user, &pw)) {
            Ok(c) => Some(c),
            Err(e) => {
                last = e;
                None
            }
        }
    });
    let Some(mut agent) = reopened else {
        d.fail(&format!(
            "no event-stream slot after closing a connection: {last}"
        ))
    };
    subscribe(&d, &mut agent, "st", &status_topic);
    sup.close();
    agent.close();
}

/// A desktop logged in as an extension cannot act for whoever holds the number next: when the
/// project finishes its session is closed, and a session of a disabled extension can no
/// longer subscribe.
#[test]
fn stream_logins_end_with_their_extension() {
    let d = Daemon::start(&config());
    let api = Mgmt::new(d.listeners.http);
    let cert = api.create_ok("P-old", 2);
    let (user, pw) = api.claim(&cert);
    let (user2, pw2) = api.claim(&cert);

    // Disabled: the session stays (it sees the extension go away) but cannot subscribe anew.
    let mut s2 = Stomp::connect(d.listeners.http, Framing::Raw, &agent_login(&user2, &pw2))
        .unwrap_or_else(|e| d.fail(&format!("login: {e}")));
    api.set_extension_status(&user2, "-1")
        .ok("disable the second extension");
    let refused = s2.subscribe("later", &format!("/topic/status/{user2}"));
    assert!(
        refused.is_err() || s2.wait_closed(Duration::from_secs(5)),
        "a disabled extension's session could still subscribe: {}",
        s2.transcript()
    );

    // Finished: the session is closed with an ERROR saying why.
    let mut s = Stomp::connect(d.listeners.http, Framing::Raw, &agent_login(&user, &pw))
        .unwrap_or_else(|e| d.fail(&format!("login: {e}")));
    s.subscribe("st", &format!("/topic/status/{user}")).unwrap();
    api.finish_project("P-old").ok("finish");
    let err = s.next_frame_where(Duration::from_secs(5), |f| f.command == "ERROR");
    assert!(
        err.as_ref()
            .and_then(|f| f.header("message"))
            .is_some_and(|m| m.contains("revoked")),
        "no revocation ERROR: {}",
        s.transcript()
    );
    assert!(s.wait_closed(Duration::from_secs(5)));

    // The number goes to a new project with a new password; the old one no longer logs in.
    let cert = api.create_ok("P-new", 1);
    let (again, new_pw) = api.claim(&cert);
    assert_eq!(again, user, "the freed number is allocated again");
    assert_ne!(new_pw, pw);
    assert!(Stomp::connect(d.listeners.http, Framing::Raw, &agent_login(&user, &pw)).is_err());
}
