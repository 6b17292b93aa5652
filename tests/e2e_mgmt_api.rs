//! The seed 004 management API (section 一, routes 1, 4, 9, 11, 12, 18, 20, 21, 22) over real
//! HTTP against the real daemon: signed requests (`sign = md5(account + timestamp + secret)`),
//! form bodies, the `{"data", "reqResult"}` envelope, and precise refusals that change nothing.

mod common;
#[path = "support/mgmt.rs"]
mod mgmt;

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::Value;

use common::*;
use mgmt::*;

/// Asserts one extension-list entry: username, status, workStatus, sessionStatus, and that the
/// destination fields are present (string or null).
fn assert_entry(e: &Value, user: &str, status: i64, work_status: i64, ctx: &str) {
    assert_eq!(e["username"].as_str(), Some(user), "{ctx}: {e}");
    assert_eq!(e["status"].as_i64(), Some(status), "{ctx}: status of {e}");
    assert_eq!(
        e["workStatus"].as_i64(),
        Some(work_status),
        "{ctx}: workStatus of {e}"
    );
    assert_eq!(
        e["sessionStatus"].as_i64(),
        Some(0),
        "{ctx}: sessionStatus of {e}"
    );
    for k in ["destinationNumber", "destinationUUID"] {
        assert!(
            e.get(k).is_some_and(|v| v.is_string() || v.is_null()),
            "{ctx}: {k} missing or not a string in {e}"
        );
    }
}

fn range(first: u32, n: u32) -> Vec<String> {
    (first..first + n).map(|u| u.to_string()).collect()
}

#[test]
fn project_lifecycle_happy_path() {
    let d = Daemon::start(&default_config());
    let api = Mgmt::new(d.listeners.http);

    // 1. createProject: certificate, servers, nativeServers; idempotent for the same seats
    let data = api
        .create_project("P-happy", "3")
        .ok("createProject P-happy seats=3");
    let cert = data["certificate"].as_str().unwrap_or("").to_string();
    assert!(
        cert.len() == 32
            && cert
                .chars()
                .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)),
        "certificate must be 32 upper-case hex digits: {data}"
    );
    assert_eq!(data["servers"].as_str(), Some(SERVERS), "{data}");
    assert_eq!(
        data["nativeServers"].as_str(),
        Some(NATIVE_SERVERS),
        "{data}"
    );
    let again = api
        .create_project("P-happy", "3")
        .ok("createProject P-happy seats=3 (again)");
    assert_eq!(
        again["certificate"].as_str(),
        Some(cert.as_str()),
        "createProject with the same projectCode and seats must be idempotent: {again}"
    );

    // 2. getByCertificate claims 8000, then 8001
    let first = api
        .get_by_certificate(&cert, None, "2")
        .ok("getByCertificate (1st claim)");
    assert_eq!(first["username"].as_str(), Some("8000"), "{first}");
    let pw0 = first["password"].as_str().unwrap_or("").to_string();
    assert!(!pw0.is_empty(), "no password: {first}");
    assert_eq!(first["servers"].as_str(), Some(SERVERS), "{first}");
    assert_eq!(
        first["nativeServers"].as_str(),
        Some(NATIVE_SERVERS),
        "{first}"
    );
    assert_eq!(
        first["uri"].as_str(),
        Some(format!("sip:8000@{NATIVE_HOST}").as_str()),
        "{first}"
    );
    let second = api
        .get_by_certificate(&cert, None, "2")
        .ok("getByCertificate (2nd claim)");
    assert_eq!(second["username"].as_str(), Some("8001"), "{second}");
    assert_eq!(
        second["uri"].as_str(),
        Some(format!("sip:8001@{NATIVE_HOST}").as_str()),
        "{second}"
    );
    assert_ne!(
        second["password"].as_str(),
        Some(pw0.as_str()),
        "two extensions share a password: {first} {second}"
    );
    // naming the extension returns that extension's credentials again
    let named = api
        .get_by_certificate(&cert, Some("8000"), "2")
        .ok("getByCertificate username=8000");
    assert_eq!(named["username"].as_str(), Some("8000"), "{named}");
    assert_eq!(named["password"].as_str(), Some(pw0.as_str()), "{named}");

    // 3. getExtentionByProject lists the 3 seats: not registered, signed out
    let list = api.extensions_ok("P-happy");
    assert_eq!(
        usernames(&list),
        range(8000, 3),
        "extensions: {}",
        Value::Array(list.clone())
    );
    for (e, u) in list.iter().zip(range(8000, 3)) {
        assert_entry(e, &u, 0, -1, "fresh project");
    }

    // the last seat, then none left
    let third = api
        .get_by_certificate(&cert, None, "2")
        .ok("getByCertificate (3rd claim)");
    assert_eq!(third["username"].as_str(), Some("8002"), "{third}");
    api.get_by_certificate(&cert, None, "2").err(
        409,
        &["free", "extension", "available", "claimed", "no "],
        "getByCertificate with every seat claimed",
    );

    // 4. distributionSeat adds one specific free number, which can then be claimed
    api.distribution_seat("P-happy", "8050")
        .ok("distributionSeat P-happy 8050");
    let list = api.extensions_ok("P-happy");
    assert_eq!(
        usernames(&list),
        ["8000", "8001", "8002", "8050"],
        "after distributionSeat: {}",
        Value::Array(list.clone())
    );
    assert_entry(&list[3], "8050", 0, -1, "distributed seat");
    let fourth = api
        .get_by_certificate(&cert, None, "2")
        .ok("getByCertificate (claim the distributed seat)");
    assert_eq!(fourth["username"].as_str(), Some("8050"), "{fourth}");

    // 5. setWorkStatus 0 (signed in, not ready) needs no registration; 1 (idle) does
    let ws = api
        .set_work_status("8000", "0")
        .ok("setWorkStatus 8000 workStatus=0");
    assert_eq!(ws["username"].as_str(), Some("8000"), "{ws}");
    assert_eq!(ws["workStatus"].as_i64(), Some(0), "{ws}");
    assert_eq!(ws["sessionStatus"].as_i64(), Some(0), "{ws}");
    assert_entry(
        &api.extension("P-happy", "8000"),
        "8000",
        0,
        0,
        "after setWorkStatus 0",
    );
    api.set_work_status("8001", "1").err(
        409,
        &["regist"],
        "setWorkStatus 1 for an unregistered extension",
    );
    assert_entry(
        &api.extension("P-happy", "8001"),
        "8001",
        0,
        -1,
        "the refused setWorkStatus changed nothing",
    );

    // 6. setWorkStatusByProjectCode 0: every extension of the project not ready
    api.set_work_status_by_project("P-happy", "0")
        .ok("setWorkStatusByProjectCode P-happy 0");
    for e in api.extensions_ok("P-happy") {
        let u = e["username"].as_str().unwrap_or("?").to_string();
        assert_entry(&e, &u, 0, 0, "after setWorkStatusByProjectCode 0");
    }

    // 7. setExtensionStatus: disable and enable
    let dis = api
        .set_extension_status("8002", "-1")
        .ok("setExtensionStatus 8002 -1");
    assert_eq!(dis["username"].as_str(), Some("8002"), "{dis}");
    assert_eq!(dis["workStatus"].as_i64(), Some(-1), "{dis}");
    assert_entry(
        &api.extension("P-happy", "8002"),
        "8002",
        0,
        -1,
        "disabled extension",
    );
    let en = api
        .set_extension_status("8002", "0")
        .ok("setExtensionStatus 8002 0");
    assert_eq!(en["username"].as_str(), Some("8002"), "{en}");
    assert_eq!(en["workStatus"].as_i64(), Some(0), "{en}");

    // 8. sendToUser to the whole project and to one agent
    api.send_to_user("P-happy", None, "hello, everyone")
        .ok("sendToUser P-happy (all)");
    api.send_to_user("P-happy", Some("8001"), "你好 8001 & co")
        .ok("sendToUser P-happy 8001");

    // 9. finishProject: the project, its certificate and its extensions are gone
    api.finish_project("P-happy").ok("finishProject P-happy");
    api.extensions("P-happy").err(
        404,
        &["P-happy", "project"],
        "getExtentionByProject after finishProject",
    );
    api.get_by_certificate(&cert, None, "2").err(
        404,
        &["certificate"],
        "getByCertificate with a finished project's certificate",
    );
    api.set_work_status("8000", "0").err(
        404,
        &["8000", "extension", "username"],
        "setWorkStatus for an extension freed by finishProject",
    );

    // 10. the numbers are free again: a new project gets them back, fresh
    api.create_ok("P-happy", 3);
    let list = api.extensions_ok("P-happy");
    assert_eq!(
        usernames(&list),
        range(8000, 3),
        "re-created project: {}",
        Value::Array(list.clone())
    );
    for (e, u) in list.iter().zip(range(8000, 3)) {
        assert_entry(e, &u, 0, -1, "re-created project");
    }

    let ok = d
        .metric(
            "gridedge_api_requests_total",
            &["route=\"createProject\"", "result=\"ok\""],
        )
        .unwrap_or(0.0);
    assert!(
        ok >= 3.0,
        "gridedge_api_requests_total{{route=\"createProject\",result=\"ok\"}} = {ok}, want >= 3\n{}",
        d.metrics()
    );
}

/// Runs each check, collecting failures so one run reports every refusal that is wrong.
struct Checks {
    failures: Vec<String>,
}

impl Checks {
    fn run(&mut self, name: &str, f: impl FnOnce()) {
        if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            self.failures.push(format!("[{name}] {msg}"));
        }
    }
}

#[test]
fn bad_requests_are_refused_precisely_and_change_nothing() {
    let mut d = Daemon::start(&default_config());
    let api = Mgmt::new(d.listeners.http);
    let cert = api.create_ok("P-bad", 2);
    let cert2 = api.create_ok("P-bad2", 1);
    let (claimed, _) = api.claim(&cert);
    assert_eq!(claimed, "8000");
    let before = api.extensions_ok("P-bad");
    let before2 = api.extensions_ok("P-bad2");
    assert_eq!(usernames(&before), ["8000", "8001"]);
    assert_eq!(usernames(&before2), ["8002"]);
    let free = RANGE_LAST - RANGE_FIRST + 1 - 3; // 97

    let mut c = Checks {
        failures: Vec::new(),
    };
    let new_project = |seats: &str| {
        let body = form(&[("projectCode", "P-new"), ("seats", seats)]);
        (api.auth(), body)
    };

    // --- missing and malformed parameters (400, message names the parameter)
    c.run("createProject without parameters", || {
        api.post(CREATE_PROJECT, &[])
            .err(400, &["projectCode", "seats"], "createProject {}");
    });
    c.run("createProject without seats", || {
        api.post(CREATE_PROJECT, &[("projectCode", "P-new")]).err(
            400,
            &["seats"],
            "createProject without seats",
        );
    });
    c.run("createProject without projectCode", || {
        api.post(CREATE_PROJECT, &[("seats", "1")]).err(
            400,
            &["projectCode"],
            "createProject without projectCode",
        );
    });
    c.run("createProject with an empty projectCode", || {
        api.create_project("", "1")
            .err(400, &["projectCode"], "createProject projectCode=''");
    });
    for seats in ["abc", "0", "-1", "1.5", ""] {
        c.run(&format!("createProject seats={seats:?}"), || {
            api.create_project("P-new", seats).err(
                400,
                &["seats"],
                &format!("createProject seats={seats:?}"),
            );
        });
    }
    // --- more seats than the range has free (409)
    for seats in [free + 1, 1000] {
        c.run(&format!("createProject seats={seats}"), || {
            api.create_project("P-huge", &seats.to_string()).err(
                409,
                &[
                    "extension",
                    "range",
                    "free",
                    "exhaust",
                    "available",
                    "seats",
                ],
                &format!("createProject seats={seats} with {free} free"),
            );
        });
    }
    c.run(
        "createProject for an existing project with other seats",
        || {
            api.create_project("P-bad", "5").err(
                409,
                &["exist", "P-bad", "seats"],
                "createProject P-bad seats=5 (exists with 2)",
            );
        },
    );

    // --- authentication (401, message names the header)
    for missing in ["account", "timestamp", "sign"] {
        c.run(&format!("missing {missing} header"), || {
            let (auth, body) = new_project("1");
            let auth: Vec<_> = auth.into_iter().filter(|(k, _)| k != missing).collect();
            api.post_with(CREATE_PROJECT, auth, body.as_bytes()).err(
                401,
                &[missing],
                &format!("createProject without the {missing} header"),
            );
            let auth: Vec<_> = api
                .auth()
                .into_iter()
                .filter(|(k, _)| k != missing)
                .collect();
            api.get_with(GET_EXTENSIONS, auth, &[("projectCode", "P-bad")])
                .err(
                    401,
                    &[missing],
                    &format!("getExtentionByProject without the {missing} header"),
                );
        });
    }
    c.run("bad signature", || {
        let ts = next_timestamp().to_string();
        let auth = auth_headers_at(ACCOUNT, "not-the-secret", &ts);
        let (_, body) = new_project("1");
        api.post_with(CREATE_PROJECT, auth, body.as_bytes()).err(
            401,
            &["sign"],
            "createProject signed with the wrong secret",
        );
        // right secret, but the sign of another timestamp
        let mut auth = auth_headers_at(ACCOUNT, SECRET, &ts);
        auth[1].1 = (ts.parse::<u64>().unwrap() + 1).to_string();
        api.get_with(GET_EXTENSIONS, auth, &[("projectCode", "P-bad")])
            .err(401, &["sign"], "sign computed over another timestamp");
    });
    let timestamp_words: &[&str] = &["timestamp", "stale", "expired", "window", "clock"];
    for (name, ts) in [
        ("stale timestamp (now - 10 min)", now_ms() - 600_000),
        ("far-future timestamp (now + 10 min)", now_ms() + 600_000),
        ("timestamp in seconds", now_ms() / 1000),
    ] {
        c.run(name, || {
            let auth = auth_headers_at(ACCOUNT, SECRET, &ts.to_string());
            let (_, body) = new_project("1");
            api.post_with(CREATE_PROJECT, auth, body.as_bytes())
                .err(401, timestamp_words, name);
        });
    }
    c.run("non-numeric timestamp", || {
        let auth = auth_headers_at(ACCOUNT, SECRET, "yesterday");
        api.get_with(GET_EXTENSIONS, auth, &[("projectCode", "P-bad")])
            .err(401, &["timestamp"], "timestamp: yesterday");
    });
    c.run("replayed request", || {
        let auth = api.auth();
        api.get_with(GET_EXTENSIONS, auth.clone(), &[("projectCode", "P-bad")])
            .ok("first use of the auth headers");
        api.get_with(GET_EXTENSIONS, auth, &[("projectCode", "P-bad")])
            .err(
                401,
                &["replay", "used", "duplicate", "seen"],
                "the identical request again",
            );
    });
    c.run("unknown account", || {
        let auth = auth_headers_at("nobody", SECRET, &next_timestamp().to_string());
        let (_, body) = new_project("1");
        api.post_with(CREATE_PROJECT, auth, body.as_bytes()).err(
            401,
            &["account"],
            "createProject by an unknown account",
        );
    });

    // --- unknown project or extension (404)
    c.run("unknown project", || {
        api.extensions("NOPE")
            .err(404, &["NOPE", "project"], "getExtentionByProject NOPE");
        api.finish_project("NOPE")
            .err(404, &["NOPE", "project"], "finishProject NOPE");
        api.set_work_status_by_project("NOPE", "0").err(
            404,
            &["NOPE", "project"],
            "setWorkStatusByProjectCode NOPE",
        );
        api.send_to_user("NOPE", None, "hi")
            .err(404, &["NOPE", "project"], "sendToUser NOPE");
        api.distribution_seat("NOPE", "8090").err(
            404,
            &["NOPE", "project"],
            "distributionSeat NOPE 8090",
        );
    });
    c.run("unknown extension", || {
        let words: &[&str] = &["7999", "extension", "username"];
        api.set_work_status("7999", "0")
            .err(404, words, "setWorkStatus 7999");
        api.set_extension_status("7999", "-1")
            .err(404, words, "setExtensionStatus 7999");
        api.send_to_user("P-bad", Some("7999"), "hi")
            .err(404, words, "sendToUser P-bad 7999");
    });
    c.run("wrong certificate", || {
        api.get_by_certificate(&"0".repeat(32), None, "2").err(
            404,
            &["certificate"],
            "getByCertificate with an unknown certificate",
        );
        api.get(GET_BY_CERTIFICATE, &[("type", "2")]).err(
            400,
            &["certificate"],
            "getByCertificate without certificate",
        );
        api.get_by_certificate(&cert, None, "9")
            .err(400, &["type"], "getByCertificate type=9");
    });

    // --- other malformed parameters
    c.run("setWorkStatus workStatus=7", || {
        api.set_work_status("8000", "7")
            .err(400, &["workStatus"], "setWorkStatus workStatus=7");
        api.set_work_status("8000", "abc").err(
            400,
            &["workStatus"],
            "setWorkStatus workStatus=abc",
        );
        api.post(SET_WORK_STATUS, &[("workStatus", "0")]).err(
            400,
            &["username"],
            "setWorkStatus without username",
        );
    });
    c.run("setWorkStatus 1 for an unregistered extension", || {
        api.set_work_status("8000", "1").err(
            409,
            &["regist"],
            "setWorkStatus 8000 1 (not registered)",
        );
    });
    c.run("setWorkStatusByProjectCode workStatus=7", || {
        api.set_work_status_by_project("P-bad", "7").err(
            400,
            &["workStatus"],
            "setWorkStatusByProjectCode workStatus=7",
        );
        api.post(SET_WORK_STATUS_BY_PROJECT, &[("workStatus", "0")])
            .err(
                400,
                &["projectCode"],
                "setWorkStatusByProjectCode without projectCode",
            );
    });
    c.run("setExtensionStatus workStatus=5", || {
        api.set_extension_status("8001", "5").err(
            400,
            &["workStatus"],
            "setExtensionStatus workStatus=5",
        );
    });
    c.run("finishProject without projectCode", || {
        api.post(FINISH_PROJECT, &[])
            .err(400, &["projectCode"], "finishProject {}");
        api.get(GET_EXTENSIONS, &[])
            .err(400, &["projectCode"], "getExtentionByProject {}");
    });
    c.run("sendToUser without content", || {
        api.post(SEND_TO_USER, &[("projectCode", "P-bad")]).err(
            400,
            &["content"],
            "sendToUser without content",
        );
    });
    c.run("distributionSeat of a taken number", || {
        api.distribution_seat("P-bad", "8002").err(
            409,
            &["8002", "assigned", "allocated", "taken", "free", "project"],
            "distributionSeat P-bad 8002 (belongs to P-bad2)",
        );
        api.post(DISTRIBUTION_SEAT, &[("projectCode", "P-bad")])
            .err(400, &["username"], "distributionSeat without username");
    });

    // --- wrong method: 405 with the JSON envelope
    c.run("GET on a POST route", || {
        api.get(CREATE_PROJECT, &[("projectCode", "P-new"), ("seats", "1")])
            .err(
                405,
                &["method", "GET", "POST", "allowed"],
                "GET createProject",
            );
        api.post(GET_EXTENSIONS, &[("projectCode", "P-bad")]).err(
            405,
            &["method", "GET", "POST", "allowed"],
            "POST getExtentionByProject",
        );
    });

    // --- a 1 MB body
    c.run("1 MB body", || {
        let mut body = form(&[("projectCode", "P-big"), ("seats", "1")]).into_bytes();
        body.extend_from_slice(b"&content=");
        body.resize(body.len() + (1 << 20), b'x');
        let r = api.post_with(CREATE_PROJECT, api.auth(), &body);
        let status = if r.status() == 400 { 400 } else { 413 };
        r.err(
            status,
            &["large", "size", "limit", "body", "too", "bytes"],
            "createProject with a 1 MB body (want 413 or 400)",
        );
    });

    // --- broken encodings in the body
    let encoding_words: &[&str] = &[
        "projectCode",
        "utf",
        "encod",
        "percent",
        "form",
        "body",
        "invalid",
    ];
    for (name, body) in [
        (
            "invalid percent-encoding",
            b"projectCode=%ZZ&seats=1".to_vec(),
        ),
        (
            "percent-encoded invalid UTF-8",
            b"projectCode=P%FF%FE&seats=1".to_vec(),
        ),
        (
            "raw invalid UTF-8",
            b"projectCode=P\xff\xfe&seats=1".to_vec(),
        ),
        (
            "truncated percent escape",
            b"projectCode=P%E4%BD&seats=1".to_vec(),
        ),
    ] {
        c.run(name, || {
            api.post_with(CREATE_PROJECT, api.auth(), &body).err(
                400,
                encoding_words,
                &format!("createProject: {name}"),
            );
        });
    }

    // --- nothing changed
    d.assert_alive("after the bad requests");
    c.run("nothing changed", || {
        assert_eq!(
            api.extensions_ok("P-bad"),
            before,
            "P-bad's extensions changed"
        );
        assert_eq!(
            api.extensions_ok("P-bad2"),
            before2,
            "P-bad2's extensions changed"
        );
        for p in ["P-new", "P-huge", "P-big", "NOPE"] {
            api.extensions(p).err(
                404,
                &[],
                &format!("project {p:?} must not exist after refused requests"),
            );
        }
        // the 8001 seat is still unclaimed and 8002 still belongs to P-bad2
        let (u, _) = api.claim(&cert);
        assert_eq!(u, "8001", "next claim of P-bad");
        let (u, _) = api.claim(&cert2);
        assert_eq!(u, "8002", "claim of P-bad2");
        // exactly the remaining numbers are still free: no refused request leaked any
        api.create_ok("P-rest", free);
        let rest = api.extensions_ok("P-rest");
        assert_eq!(
            usernames(&rest),
            range(8003, free),
            "the rest of the range after the refused requests"
        );
        let metrics = d.metrics();
        let refused: f64 = metrics
            .lines()
            .filter(|l| {
                l.starts_with("gridedge_api_requests_total{")
                    && l.contains("route=\"createProject\"")
                    && !l.contains("result=\"ok\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(
            refused >= 10.0,
            "refused createProject requests counted: {refused}\n{metrics}"
        );
    });

    if !c.failures.is_empty() {
        d.fail(&format!(
            "{} check(s) failed:\n{}",
            c.failures.len(),
            c.failures.join("\n\n")
        ));
    }
}

/// `[management] allow` is enforced before anything else: 403 from a source not listed.
#[test]
fn management_allow_list_refuses_other_sources() {
    let d = Daemon::start(&mgmt_config("\"10.0.0.0/8\""));
    let api = Mgmt::new(d.listeners.http);
    let words: &[&str] = &["127.0.0.1", "allow", "permit", "forbidden", "ip", "address"];
    api.create_project("P-ip", "1")
        .err(403, words, "createProject from 127.0.0.1");
    api.extensions("P-ip")
        .err(403, words, "getExtentionByProject from 127.0.0.1");
    api.get_by_certificate(&"0".repeat(32), None, "2").err(
        403,
        words,
        "getByCertificate from 127.0.0.1",
    );
    // refused without being processed: no project was created
    let ok = d
        .metric(
            "gridedge_api_requests_total",
            &["route=\"createProject\"", "result=\"ok\""],
        )
        .unwrap_or(0.0);
    assert_eq!(ok, 0.0, "{}", d.metrics());
    // the operational endpoints stay reachable
    assert_eq!(d.http_get("/healthz").0, 200);
}
