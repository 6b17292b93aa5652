//! The campaign runtime's HTTP routes (`/work/campaign-contract.md`, "HTTP routes"; seed 004
//! §2, §3, §5–§8, §10, §13–§17, §19, §23) over real sockets against the real daemon, without a
//! switch: lines (gateways), call lists and the blacklist, call tasks and their status
//! transitions, preview hand-out, the compliance and attempts reports, authentication, and
//! hostile input.
//!
//! Conventions checked on every answer (through `support/mgmt.rs`'s `ApiResp`): a success is
//! HTTP 200 with `{"data", "reqResult": {"code": 1, "msg": "成功"}}`; a refusal is a 4xx whose
//! `reqResult.code` equals the HTTP status, whose `msg` names the problem, which carries no
//! data, and which changes nothing (each refusal is followed by a comparison of every list and
//! task status with the state before it).
//!
//! Each test collects its failed checks (`Checks`) and reports them all at once with the
//! daemon's log, so one run shows every route that disagrees with the contract.

#[path = "support/campaign_api.rs"]
mod campaign_api;
#[path = "support/checks.rs"]
mod checks;
mod common;
#[path = "support/mgmt.rs"]
mod mgmt;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use campaign_api::*;
use checks::Checks;
use common::*;
use mgmt::*;

/// Longest wait for one stream message.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

// ------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------

/// Everything a refused request must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    gateways: (i64, Vec<Value>),
    available: Vec<Value>,
    blacklist: (i64, Vec<String>),
    tasks: Vec<(String, Value)>,
}

fn snapshot(api: &Mgmt, tasks: &[&str]) -> Snapshot {
    Snapshot {
        gateways: gateway_list(api, &[]),
        available: available_gateways(api),
        blacklist: blacklist(api),
        tasks: tasks
            .iter()
            .map(|t| (t.to_string(), status_ok(api, t)))
            .collect(),
    }
}

fn assert_unchanged(api: &Mgmt, before: &Snapshot, tasks: &[&str], ctx: &str) {
    let after = snapshot(api, tasks);
    assert!(
        &after == before,
        "{ctx}: a refused request changed state\n--- before:\n{before:#?}\n--- after:\n{after:#?}"
    );
}

/// The task must not exist (callTaskStatus refuses it as unknown; a code the route cannot
/// even take may be refused as invalid).
fn assert_no_task(api: &Mgmt, code: &str, ctx: &str) {
    let r = task_call(api, TASK_STATUS, code);
    err_in(
        &r,
        &[404, 400],
        &[],
        &format!("{ctx}: task {code:?} must not exist"),
    );
}

fn gateway_by_code<'a>(list: &'a [Value], code: &str) -> Option<&'a Value> {
    list.iter()
        .find(|g| g.get("gwCode").and_then(Value::as_str) == Some(code))
}

fn codes_of(list: &[Value]) -> BTreeSet<String> {
    list.iter()
        .filter_map(|g| g.get("gwCode").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// The next callTaskStatus message for `task` whose body satisfies `pred`.
fn expect_task_message(
    s: &mut Stomp,
    project: &str,
    task: &str,
    what: &str,
    mut pred: impl FnMut(&Value) -> bool,
) -> Value {
    let topic = format!("/topic/callTaskStatus/{project}");
    match s.next_message_where(&topic, EVENT_TIMEOUT, |v| {
        v.get("code").and_then(Value::as_str) == Some(task) && pred(v)
    }) {
        Some(f) => message_json(&f, "task-status", what),
        None => panic!(
            "{what}: no matching message on {topic} within {EVENT_TIMEOUT:?}\n--- frames:\n{}",
            s.transcript()
        ),
    }
}

fn phones(data: &Value, ctx: &str) -> Vec<String> {
    items(data, ctx)
        .iter()
        .map(|i| str_of(i, "phone", ctx).to_owned())
        .collect()
}

fn set<const N: usize>(xs: [&str; N]) -> BTreeSet<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

/// `(reason, line)` pairs, sorted as `skipped` sorts them.
fn skips(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = pairs.iter().map(|(r, l)| (r.to_string(), *l)).collect();
    v.sort_by_key(|(r, l)| (*l, r.clone()));
    v
}

/// Whether `got` is `want` (1-based lines) or the same with 0-based lines: the contract says
/// `line` without fixing its base.
fn same_lines(got: &[(String, i64)], want: &[(&str, i64)]) -> bool {
    let zero: Vec<(&str, i64)> = want.iter().map(|(r, l)| (*r, l - 1)).collect();
    got == skips(want).as_slice() || got == skips(&zero).as_slice()
}

// ------------------------------------------------------------------------------------------
// Lines
// ------------------------------------------------------------------------------------------

/// add / getList / getAvailableList / update: codes given and assigned, every listed field,
/// filters and paging, disabled gateways left out of the available list, the trunk password
/// never returned, and the refusals (missing or invalid parameters 400, duplicate gwCode 409,
/// unknown id 404, gwCode not the id's 409), each changing nothing.
#[test]
fn gateways_are_added_updated_listed_and_refused_precisely() {
    let d = Daemon::start(&default_config());
    let api = Mgmt::new(d.listeners.http);
    let mut c = Checks::new();

    let (total, list) = gateway_list(&api, &[]);
    assert_eq!(
        (total, list.len()),
        (0, 0),
        "no gateway before the first add: {list:?}"
    );
    assert_eq!(available_gateways(&api), Vec::<Value>::new());

    // A: every optional field, an explicit code, a password that must never come back.
    let a = gateway("GW-A", "电信180号段", 30)
        .set("registerType", "2")
        .set("username", "trunk-user-a")
        .set("password", "trunk-pw-A-9f3e")
        .set("remark", "备注 A")
        .set("mobilePhonePrefix", "96")
        .set("fixedPhonePrefix", "97")
        .set("codec", "G711")
        .set("callLimit", "1000")
        .set("billType", "2")
        .set("billsec", "6")
        .set("price", "0.06")
        .set("accountBalance", "100.5")
        .set("rechargedAmount", "200");
    let (a_id, _) = add_gateway_ok(&api, &a);
    // B: no gwCode (assigned), no expectCount (concurrency 0).
    let b = gateway("", "移动150号段", 0)
        .without("gwCode")
        .without("expectCount")
        .set("password", "trunk-pw-B-41c2");
    let (b_id, b_code) = add_gateway_ok(&api, &b);
    assert!(
        !b_code.is_empty() && b_code != "GW-A",
        "an assigned gwCode is a fresh non-empty string: {b_code:?}"
    );
    // C: disabled.
    let (c_id, _) = add_gateway_ok(
        &api,
        &gateway("GW-C", "联通 disabled", 5).set("status", "0"),
    );
    let ids: BTreeSet<i64> = [a_id, b_id, c_id].into_iter().collect();
    assert_eq!(ids.len(), 3, "three gateways, three ids: {ids:?}");

    c.run("getList shows every field and never the password", || {
        let r = api.get(GW_LIST, &[("pageNum", "1"), ("pageSize", "20")]);
        let data = r.ok("getList");
        assert!(
            !r.http.body.contains("trunk-pw-"),
            "getList returns a trunk password: {}",
            r.http.body
        );
        assert_eq!(int(&data, "total", "getList"), 3, "{data}");
        let list = items(&data, "getList");
        assert_eq!(list.len(), 3, "{data}");
        for g in list {
            for key in [
                "id",
                "gwCode",
                "gwName",
                "remark",
                "status",
                "concurrency",
                "realm",
                "registerType",
            ] {
                assert!(g.get(key).is_some(), "getList item without {key}: {g}");
            }
            assert!(
                g.get("password").is_none(),
                "getList item with password: {g}"
            );
        }
        let ga = gateway_by_code(list, "GW-A").unwrap_or_else(|| panic!("no GW-A in {data}"));
        assert_eq!(int(ga, "id", "GW-A"), a_id, "{ga}");
        assert_eq!(ga["gwName"].as_str(), Some("电信180号段"), "{ga}");
        assert_eq!(ga["remark"].as_str(), Some("备注 A"), "{ga}");
        assert_eq!(int(ga, "status", "GW-A"), 1, "{ga}");
        assert_eq!(
            int(ga, "concurrency", "GW-A"),
            30,
            "concurrency = expectCount: {ga}"
        );
        assert_eq!(ga["realm"].as_str(), Some("203.0.113.7:5060"), "{ga}");
        assert_eq!(int(ga, "registerType", "GW-A"), 2, "{ga}");
        let gb = gateway_by_code(list, &b_code).unwrap_or_else(|| panic!("no {b_code} in {data}"));
        assert_eq!(int(gb, "id", "B"), b_id, "{gb}");
        assert_eq!(
            int(gb, "concurrency", "B"),
            0,
            "expectCount defaults to 0: {gb}"
        );
        let gc = gateway_by_code(list, "GW-C").unwrap_or_else(|| panic!("no GW-C in {data}"));
        assert_eq!(int(gc, "id", "GW-C"), c_id, "{gc}");
        assert_eq!(int(gc, "status", "GW-C"), 0, "{gc}");
        assert_eq!(int(gc, "concurrency", "GW-C"), 5, "{gc}");
    });

    c.run("getList filters and pages", || {
        let (t, l) = gateway_list(&api, &[("status", "1")]);
        assert_eq!(t, 2, "status=1: {l:?}");
        assert_eq!(codes_of(&l), set(["GW-A", b_code.as_str()]), "status=1");
        let (t, l) = gateway_list(&api, &[("status", "0")]);
        assert_eq!((t, codes_of(&l)), (1, set(["GW-C"])), "status=0: {l:?}");
        let (t, l) = gateway_list(&api, &[("id", &c_id.to_string())]);
        assert_eq!((t, codes_of(&l)), (1, set(["GW-C"])), "id={c_id}: {l:?}");
        let mut seen = BTreeSet::new();
        for page in ["1", "2"] {
            let data = api
                .get(GW_LIST, &[("pageNum", page), ("pageSize", "2")])
                .ok(&format!("getList page {page} of 2"));
            assert_eq!(
                int(&data, "total", "page"),
                3,
                "total on page {page}: {data}"
            );
            let l = items(&data, "page");
            assert_eq!(
                l.len(),
                if page == "1" { 2 } else { 1 },
                "page {page}: {data}"
            );
            for g in l {
                assert!(
                    seen.insert(int(g, "id", "page")),
                    "gateway on two pages: {g}"
                );
            }
        }
        assert_eq!(seen, ids, "pages cover every gateway once");
        let data = api
            .get(GW_LIST, &[])
            .ok("getList without paging parameters");
        assert_eq!(int(&data, "total", "defaults"), 3, "{data}");
        assert_eq!(
            items(&data, "defaults").len(),
            3,
            "default page size 20: {data}"
        );
    });

    c.run("getAvailableList lists enabled gateways only", || {
        let r = api.get(GW_AVAILABLE, &[]);
        let data = r.ok("getAvailableList");
        assert!(
            !r.http.body.contains("trunk-pw-"),
            "getAvailableList returns a trunk password: {}",
            r.http.body
        );
        let list = data
            .as_array()
            .unwrap_or_else(|| panic!("data is not a list: {data}"));
        assert_eq!(
            codes_of(list),
            set(["GW-A", b_code.as_str()]),
            "enabled gateways only: {data}"
        );
        for g in list {
            let ctx = "getAvailableList item";
            for key in [
                "gwCode",
                "gwName",
                "concurrency",
                "usedConcurrency",
                "availableConcurrency",
                "remark",
            ] {
                assert!(g.get(key).is_some(), "{ctx} without {key}: {g}");
            }
            assert_eq!(int(g, "usedConcurrency", ctx), 0, "nothing dials yet: {g}");
            assert_eq!(
                int(g, "availableConcurrency", ctx),
                int(g, "concurrency", ctx),
                "available = concurrency - used: {g}"
            );
        }
        let ga = gateway_by_code(list, "GW-A").unwrap();
        assert_eq!(int(ga, "concurrency", "GW-A"), 30, "{ga}");
        assert_eq!(ga["gwName"].as_str(), Some("电信180号段"), "{ga}");
        assert_eq!(ga["remark"].as_str(), Some("备注 A"), "{ga}");
    });

    let tasks: [&str; 0] = [];
    let before = snapshot(&api, &tasks);
    let refuse =
        |c: &mut Checks, name: &str, route: &str, p: Params, statuses: &[u16], words: &[&str]| {
            c.run(name, || {
                let r = post(&api, route, &p);
                err_in(&r, statuses, words, &format!("{name}: {:?}", p.0));
                assert_unchanged(&api, &before, &tasks, name);
            });
        };

    // --- add: duplicates, missing and invalid parameters
    refuse(
        &mut c,
        "add with an existing gwCode",
        GW_ADD,
        gateway("GW-A", "again", 3),
        &[409],
        &["GW-A", "gwCode", "exist", "duplicate"],
    );
    refuse(
        &mut c,
        "add with the assigned code of another gateway",
        GW_ADD,
        gateway(&b_code, "again", 3),
        &[409],
        &[b_code.as_str(), "gwCode", "exist", "duplicate"],
    );
    for key in ["gwName", "registerType", "realm", "status", "returnVisit"] {
        refuse(
            &mut c,
            &format!("add without {key}"),
            GW_ADD,
            gateway("GW-NEW", "new", 3).without(key),
            &[400],
            &[key],
        );
    }
    for (key, bad) in [
        ("registerType", "3"),
        ("registerType", "x"),
        ("status", "2"),
        ("returnVisit", "2"),
        ("billType", "3"),
        ("expectCount", "-1"),
        ("expectCount", "many"),
        ("gwName", ""),
        ("realm", ""),
    ] {
        refuse(
            &mut c,
            &format!("add with {key}={bad:?}"),
            GW_ADD,
            gateway("GW-NEW", "new", 3).set(key, bad),
            &[400],
            &[key],
        );
    }

    // --- update: unknown id, code of another id, missing parameters
    let update = |id: i64, code: &str| {
        Params::new(&[
            ("id", &id.to_string()),
            ("gwCode", code),
            ("gwName", "renamed"),
            ("registerType", "1"),
            ("realm", "198.51.100.9:5080"),
            ("status", "1"),
            ("returnVisit", "0"),
        ])
    };
    refuse(
        &mut c,
        "update an unknown id",
        GW_UPDATE,
        update(999_999, "GW-A"),
        &[404],
        &["999999", "id", "gateway"],
    );
    refuse(
        &mut c,
        "update B with A's gwCode",
        GW_UPDATE,
        update(b_id, "GW-A"),
        &[409],
        &["gwCode", "GW-A", b_code.as_str()],
    );
    refuse(
        &mut c,
        "update A with a new gwCode",
        GW_UPDATE,
        update(a_id, "GW-A2"),
        &[409],
        &["gwCode", "GW-A2", "GW-A"],
    );
    for key in [
        "id",
        "gwCode",
        "gwName",
        "registerType",
        "realm",
        "status",
        "returnVisit",
    ] {
        refuse(
            &mut c,
            &format!("update without {key}"),
            GW_UPDATE,
            update(a_id, "GW-A").without(key),
            &[400],
            &[key],
        );
    }
    refuse(
        &mut c,
        "update with id=abc",
        GW_UPDATE,
        update(a_id, "GW-A").set("id", "abc"),
        &[400],
        &["id"],
    );
    refuse(
        &mut c,
        "update with status=7",
        GW_UPDATE,
        update(a_id, "GW-A").set("status", "7"),
        &[400],
        &["status"],
    );

    // --- updates that succeed
    c.run("update disables A and changes its fields", || {
        post(
            &api,
            GW_UPDATE,
            &update(a_id, "GW-A")
                .set("gwName", "A renamed")
                .set("status", "0")
                .set("returnVisit", "1")
                .set("password", "trunk-pw-A2-77e1")
                .set("expectCount", "12"),
        )
        .ok("update GW-A");
        let r = api.get(GW_LIST, &[("id", &a_id.to_string())]);
        let data = r.ok("getList id=A");
        assert!(
            !r.http.body.contains("trunk-pw-"),
            "getList returns the new password: {}",
            r.http.body
        );
        let ga = gateway_by_code(items(&data, "A"), "GW-A")
            .unwrap_or_else(|| panic!("GW-A gone after update: {data}"));
        assert_eq!(ga["gwName"].as_str(), Some("A renamed"), "{ga}");
        assert_eq!(int(ga, "status", "A"), 0, "{ga}");
        assert_eq!(int(ga, "concurrency", "A"), 12, "{ga}");
        assert_eq!(ga["realm"].as_str(), Some("198.51.100.9:5080"), "{ga}");
        assert_eq!(int(ga, "registerType", "A"), 1, "{ga}");
        assert_eq!(
            codes_of(&available_gateways(&api)),
            set([b_code.as_str()]),
            "a disabled gateway leaves getAvailableList"
        );
    });
    c.run("update enables C", || {
        post(
            &api,
            GW_UPDATE,
            &update(c_id, "GW-C").set("expectCount", "7"),
        )
        .ok("update GW-C status 1");
        let avail = available_gateways(&api);
        assert_eq!(
            codes_of(&avail),
            set([b_code.as_str(), "GW-C"]),
            "{avail:?}"
        );
        let gc = gateway_by_code(&avail, "GW-C").unwrap();
        assert_eq!(int(gc, "concurrency", "C"), 7, "{gc}");
        assert_eq!(int(gc, "availableConcurrency", "C"), 7, "{gc}");
        let (total, _) = gateway_list(&api, &[]);
        assert_eq!(total, 3, "updates add no gateway");
    });

    d.http_get("/healthz");
    c.finish(&d);
}

// ------------------------------------------------------------------------------------------
// Call lists and blacklist
// ------------------------------------------------------------------------------------------

/// Import: normalization, invalid lines, each deduplication type, blacklist screening, lastId;
/// blacklist add / remove / getList; refusals that change nothing (checked through the number
/// count of tasks submitted on the lists afterwards).
#[test]
fn call_lists_import_deduplicate_and_screen_the_blacklist() {
    let d = Daemon::start(&default_config());
    let api = Mgmt::new(d.listeners.http);
    let mut c = Checks::new();
    api.create_ok("P-lists", 1);
    add_gateway_ok(&api, &gateway("GW-L", "line", 10));

    // --- blacklist
    c.run("blacklist add / getList", || {
        assert_eq!(
            blacklist_add_ok(&api, "139 0000 0001,139-0000-0002"),
            2,
            "two numbers added"
        );
        assert_eq!(
            blacklist(&api),
            (2, vec!["13900000001".to_owned(), "13900000002".to_owned()]),
            "numbers are stored normalized"
        );
        blacklist_add_ok(&api, "13900000001");
        assert_eq!(
            blacklist(&api).0,
            2,
            "adding a listed number again adds nothing"
        );
        let data = api
            .get(BL_LIST, &[("pageNum", "2"), ("pageSize", "1")])
            .ok("blacklist page 2 of 1");
        assert_eq!(int(&data, "total", "blacklist page"), 2, "{data}");
        assert_eq!(items(&data, "blacklist page").len(), 1, "{data}");
    });

    // --- import with invalid lines and blacklisted numbers, no de-duplication
    let lines = [
        "13800000001",            // 1 accepted
        "138-0000-0002",          // 2 accepted as 13800000002
        "(021) 6000.0003",        // 3 accepted as 02160000003
        "+86 138 0000 0004",      // 4 accepted as +8613800000004
        "abc",                    // 5 invalid
        "12",                     // 6 invalid: 2 digits
        "13900000001",            // 7 blacklisted
        "139 0000 0002",          // 8 blacklisted once normalized
        "13800000001",            // 9 accepted again (no de-duplication)
        "1234567890123456789012", // 10 invalid: 22 digits
        "+",                      // 11 invalid
    ];
    let mut last_a = 0;
    c.run("import with invalid and blacklisted lines", || {
        let data = import_ok(&api, "L-a", &lines.join("\n"), Some("1"), None, 5);
        let got = skipped(&data, "import L-a");
        let want = [
            ("invalid", 5),
            ("invalid", 6),
            ("blacklisted", 7),
            ("blacklisted", 8),
            ("invalid", 10),
            ("invalid", 11),
        ];
        assert!(
            same_lines(&got, &want),
            "skipped (reason, line) should be {want:?} (1-based lines, or the same 0-based); \
             got {got:?}\n{data}"
        );
        last_a = int(&data, "lastId", "import L-a");
        assert!(last_a > 0, "lastId of a non-empty list: {data}");
    });
    c.run(
        "commas and semicolons separate numbers; lastId grows",
        || {
            let data = import_ok(
                &api,
                "L-a",
                "13800000005;13800000006,13800000007",
                Some("1"),
                None,
                3,
            );
            let last = int(&data, "lastId", "second import");
            assert!(last > last_a, "lastId {last} after {last_a}: {data}");
            last_a = last;
            let data = import_ok(&api, "L-a", "abc\nxyz", Some("1"), None, 0);
            assert_eq!(
                skipped(&data, "all invalid")
                    .iter()
                    .map(|(r, _)| r.as_str())
                    .collect::<Vec<_>>(),
                ["invalid", "invalid"],
                "{data}"
            );
            assert_eq!(
                int(&data, "lastId", "all invalid"),
                last_a,
                "an import that adds nothing leaves the list's last id: {data}"
            );
        },
    );

    // --- de-duplication types
    c.run("deduplicationType 2: within this import", || {
        let data = import_ok(
            &api,
            "L-b",
            "13800000010\n13800000011\n13800000010\n138-0000-0011",
            Some("2"),
            None,
            2,
        );
        let got = skipped(&data, "dedup 2");
        assert!(
            same_lines(&got, &[("duplicate", 3), ("duplicate", 4)]),
            "dedup 2 skips lines 3 and 4 (normalized duplicates): {data}"
        );
    });
    c.run("deduplicationType 3: within the list", || {
        let data = import_ok(
            &api,
            "L-b",
            "13800000010\n13800000012\n13800000012",
            Some("3"),
            None,
            1,
        );
        let reasons: Vec<String> = skipped(&data, "dedup 3")
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        assert_eq!(reasons, ["duplicate", "duplicate"], "{data}");
        // other lists do not count
        import_ok(&api, "L-c", "13800000010", Some("3"), None, 1);
        // type 2 ignores what the list already holds
        import_ok(&api, "L-c", "13800000010", Some("2"), None, 1);
    });
    c.run("deduplicationType 4: within the task", || {
        let total = submit_ok(&api, &task("T-d4", "P-lists", "L-b", "GW-L", 1, "1"));
        assert_eq!(total, 3, "L-b holds 10, 11, 12");
        let data = import_ok(
            &api,
            "L-b",
            "13800000011\n13800000013\n13800000001",
            Some("4"),
            Some("T-d4"),
            2,
        );
        let got = skipped(&data, "dedup 4");
        assert!(
            same_lines(&got, &[("duplicate", 1)]),
            "dedup 4 skips 13800000011 (in T-d4) only: {data}"
        );
    });

    // --- refusals (none may add a number: checked below through task sizes)
    let tasks = ["T-d4"];
    let before = snapshot(&api, &tasks);
    let refuse = |c: &mut Checks, name: &str, p: Params, statuses: &[u16], words: &[&str]| {
        c.run(name, || {
            let r = post(&api, LIST_IMPORT, &p);
            err_in(&r, statuses, words, &format!("{name}: {:?}", p.0));
            assert_unchanged(&api, &before, &tasks, name);
        });
    };
    let imp =
        |list: &str, numbers: &str| Params::new(&[("callListId", list), ("numbers", numbers)]);
    refuse(
        &mut c,
        "deduplicationType 4 without callTaskCode",
        imp("L-b", "13800000099").set("deduplicationType", "4"),
        &[400],
        &["callTaskCode"],
    );
    refuse(
        &mut c,
        "deduplicationType 4 with an unknown task",
        imp("L-b", "13800000099")
            .set("deduplicationType", "4")
            .set("callTaskCode", "T-nope"),
        &[404, 400],
        &["T-nope", "callTaskCode", "task"],
    );
    for bad in ["5", "0", "x"] {
        refuse(
            &mut c,
            &format!("deduplicationType {bad:?}"),
            imp("L-b", "13800000099").set("deduplicationType", bad),
            &[400],
            &["deduplicationType"],
        );
    }
    refuse(
        &mut c,
        "import without callListId",
        Params::new(&[("numbers", "13800000099")]),
        &[400],
        &["callListId"],
    );
    refuse(
        &mut c,
        "import without numbers",
        Params::new(&[("callListId", "L-b")]),
        &[400],
        &["numbers"],
    );
    let long_id = "L".repeat(65);
    for bad in [
        "",
        "bad id!",
        long_id.as_str(),
        "L-b'; DROP TABLE call_lists;--",
        "名单",
        "L/b",
    ] {
        refuse(
            &mut c,
            &format!("callListId {bad:?}"),
            imp(bad, "13800000099"),
            &[400],
            &["callListId"],
        );
    }

    // --- blacklist remove, and a removed number imports again
    c.run("blacklist remove", || {
        assert_eq!(blacklist_remove_ok(&api, "139-0000-0002"), 1);
        assert_eq!(
            blacklist_remove_ok(&api, "13900000002"),
            0,
            "already removed"
        );
        assert_eq!(blacklist(&api), (1, vec!["13900000001".to_owned()]));
        let data = import_ok(&api, "L-a", "13900000002\n13900000001", Some("1"), None, 1);
        let got = skipped(&data, "after remove");
        assert!(
            same_lines(&got, &[("blacklisted", 2)]),
            "only 13900000001 is still blacklisted: {data}"
        );
        assert_eq!(
            blacklist_add_ok(&api, "13900000003;13900000004\n13900000005"),
            3,
            "semicolons and newlines separate blacklist numbers"
        );
        assert_eq!(blacklist(&api).0, 4);
    });

    // --- normalized numbers as a preview task hands them out
    c.run("numbers are stored normalized", || {
        import_ok(
            &api,
            "L-n",
            "13800000001\n138-0000-0002\n(021) 6000.0003\n+86 138 0000 0004\n138.0000.0005",
            Some("2"),
            None,
            5,
        );
        assert_eq!(
            submit_ok(&api, &task("T-n", "P-lists", "L-n", "GW-L", 1, "2")),
            5
        );
        start_ok(&api, "T-n");
        let data = api
            .get(TASK_CALL_LIST, &[("callTaskCode", "T-n"), ("count", "100")])
            .ok("getCallList T-n");
        let got: BTreeSet<String> = phones(&data, "T-n").into_iter().collect();
        assert_eq!(
            got,
            set([
                "13800000001",
                "13800000002",
                "02160000003",
                "+8613800000004",
                "13800000005"
            ]),
            "spaces, dashes, dots and parentheses dropped, leading + kept: {data}"
        );
    });

    // --- what the lists hold now (refused imports added nothing)
    c.run("list sizes", || {
        // L-b: 10, 11 (dedup 2) + 12 (dedup 3) + 13, 01 (dedup 4)
        assert_eq!(
            submit_ok(&api, &task("T-b", "P-lists", "L-b", "GW-L", 1, "1")),
            5,
            "L-b's entries"
        );
        // L-c: 10 twice (dedup 3 then dedup 2)
        assert_eq!(
            submit_ok(&api, &task("T-c", "P-lists", "L-c", "GW-L", 1, "1")),
            2,
            "L-c's entries"
        );
        // L-a: 5 + 3 + 0 + 1 entries, 13800000001 twice (no de-duplication)
        let total = submit_ok(&api, &task("T-a", "P-lists", "L-a", "GW-L", 1, "1"));
        assert!(
            total == 9 || total == 8,
            "L-a holds 9 entries (8 distinct numbers): totalCnt {total}"
        );
    });

    d.http_get("/healthz");
    c.finish(&d);
}

// ------------------------------------------------------------------------------------------
// submitCallTask
// ------------------------------------------------------------------------------------------

/// Every required parameter missing, every invalid value the contract names, references to
/// things that do not exist, a duplicate, and a task with no possible caller ID: each a 4xx
/// that names the problem and creates nothing. Then the accepted variants (boundaries,
/// datetime expiredTime, preview, pacing policies, caller ID from outboundNumberGroups).
#[test]
fn submit_call_task_refuses_bad_requests_and_changes_nothing() {
    let d = Daemon::start(&default_config());
    let api = Mgmt::new(d.listeners.http);
    let mut c = Checks::new();
    api.create_ok("P-v", 1);
    add_gateway_ok(&api, &gateway("GW-V", "line", 10));
    add_gateway_ok(
        &api,
        &gateway("GW-NOCID", "no caller id", 10).without("originationCallId"),
    );
    import_ok(
        &api,
        "L-v",
        "13800000001\n13800000002\n13800000003",
        Some("3"),
        None,
        3,
    );
    assert_eq!(
        submit_ok(&api, &task("T-exist", "P-v", "L-v", "GW-V", 2, "1")),
        3
    );
    let s = status_ok(&api, "T-exist");
    assert_eq!(int(&s, "status", "T-exist"), INITIALIZED, "a new task: {s}");

    let base = task("T-new", "P-v", "L-v", "GW-V", 2, "1");
    let mut cases: Vec<(String, Params, Vec<u16>, Vec<&str>)> = Vec::new();
    for key in [
        "callTaskCode",
        "scheduleType",
        "callType",
        "callGWs",
        "expiredTime",
        "projectCode",
        "rate",
    ] {
        cases.push((
            format!("without {key}"),
            base.clone().without(key),
            vec![400],
            vec![key],
        ));
    }
    cases.push((
        "recall without originalCallTaskCode".into(),
        base.clone().without("callListId"),
        vec![400],
        vec!["originalCallTaskCode"],
    ));
    cases.push((
        "recall without originalResultDetail".into(),
        base.clone()
            .without("callListId")
            .set("originalCallTaskCode", "T-exist"),
        vec![400],
        vec!["originalResultDetail"],
    ));
    cases.push((
        "recall of an unknown task".into(),
        base.clone()
            .without("callListId")
            .set("originalCallTaskCode", "T-nope")
            .set("originalResultDetail", "20,25"),
        vec![404, 400],
        vec!["T-nope", "originalCallTaskCode"],
    ));
    cases.push((
        "recall with resultDetail abc".into(),
        base.clone()
            .without("callListId")
            .set("originalCallTaskCode", "T-exist")
            .set("originalResultDetail", "abc"),
        vec![400],
        vec!["originalResultDetail"],
    ));
    for bad in [
        "[{",
        "not json",
        "{}",
        r#"{"code":"GW-V","concurrency":2}"#,
        r#"[{"code":"GW-V","concurrency":0}]"#,
        r#"[{"code":"GW-V","concurrency":-3}]"#,
        r#"[{"code":"GW-V","concurrency":"x"}]"#,
    ] {
        cases.push((
            format!("callGWs {bad}"),
            base.clone().set("callGWs", bad),
            vec![400],
            vec!["callGWs", "concurrency"],
        ));
    }
    cases.push((
        "an unknown gateway".into(),
        base.clone().set("callGWs", &gws("GW-NOPE", 1)),
        vec![400, 404],
        vec!["GW-NOPE"],
    ));
    cases.push((
        "a known and an unknown gateway".into(),
        base.clone().set(
            "callGWs",
            &json!([{"code": "GW-V", "concurrency": 1}, {"code": "GW-NOPE", "concurrency": 1}])
                .to_string(),
        ),
        vec![400, 404],
        vec!["GW-NOPE"],
    ));
    for bad in ["2", "3", "4", "5", "11", "0", "x"] {
        cases.push((
            format!("scheduleType {bad}"),
            base.clone().set("scheduleType", bad),
            vec![400],
            vec!["scheduleType"],
        ));
    }
    for bad in ["3", "0", "x"] {
        cases.push((
            format!("callType {bad}"),
            base.clone().set("callType", bad),
            vec![400],
            vec!["callType"],
        ));
    }
    let now = now_ms() as i64;
    for bad in [
        (now - 3_600_000).to_string(),
        shanghai_datetime(now - 86_400_000),
        "2020-01-01 00:00:00".to_owned(),
        "tomorrow".to_owned(),
        "2030-13-45 99:99:99".to_owned(),
    ] {
        cases.push((
            format!("expiredTime {bad:?}"),
            base.clone().set("expiredTime", &bad),
            vec![400],
            vec!["expiredTime"],
        ));
    }
    for bad in ["0", "11", "-1", "abc", "10.01", "NaN", "inf", ""] {
        cases.push((
            format!("rate {bad:?}"),
            base.clone().set("rate", bad),
            vec![400],
            vec!["rate"],
        ));
    }
    cases.push((
        "an unknown project".into(),
        base.clone().set("projectCode", "P-nope"),
        vec![400, 404],
        vec!["P-nope", "projectCode"],
    ));
    let long_code = "T".repeat(65);
    for bad in [
        "",
        "bad code",
        long_code.as_str(),
        "T'; DROP TABLE call_tasks;--",
        "任务",
    ] {
        cases.push((
            format!("callTaskCode {bad:?}"),
            base.clone().set("callTaskCode", bad),
            vec![400],
            vec!["callTaskCode"],
        ));
    }
    for (key, bad) in [
        ("pacing", "bogus"),
        ("timeZone", "Mars/Olympus"),
        ("weekPeriods", "8"),
        ("weekPeriods", "1|x"),
        ("timePeriods", "25:00-26:00"),
        ("timePeriods", "09:00"),
        ("repeatConfs", "[{"),
        (
            "repeatConfs",
            r#"[{"status":"2","frequence":"9","interval":"30"}]"#,
        ),
        ("outboundNumberGroups", "[{"),
    ] {
        cases.push((
            format!("{key} {bad:?}"),
            base.clone().set(key, bad),
            vec![400],
            vec![key],
        ));
    }
    cases.push((
        "no possible caller ID".into(),
        base.clone().set("callGWs", &gws("GW-NOCID", 1)),
        vec![400],
        vec!["caller", "originationCallId", "outboundNumber"],
    ));
    cases.push((
        "a duplicate callTaskCode".into(),
        base.clone().set("callTaskCode", "T-exist"),
        vec![409],
        vec!["T-exist", "callTaskCode", "exist"],
    ));

    let tasks = ["T-exist"];
    let before = snapshot(&api, &tasks);
    for (name, p, statuses, words) in cases {
        c.run(&name, || {
            let r = post(&api, TASK_SUBMIT, &p);
            err_in(
                &r,
                &statuses,
                &words,
                &format!("submitCallTask {name}: {:?}", p.0),
            );
            assert_unchanged(&api, &before, &tasks, &name);
            if let Some(code) = p.get("callTaskCode") {
                if code != "T-exist" {
                    assert_no_task(&api, code, &name);
                }
            }
        });
    }

    // --- accepted variants
    let accept = |c: &mut Checks, name: &str, p: Params, rate: f64, want_status: i64| {
        c.run(name, || {
            let code = p.get("callTaskCode").unwrap().to_owned();
            assert_eq!(submit_ok(&api, &p), 3, "{name}: totalCnt");
            let s = status_ok(&api, &code);
            assert_eq!(int(&s, "status", name), want_status, "{name}: {s}");
            assert_eq!(int(&s, "totalCount", name), 3, "{name}: {s}");
            assert!(
                (float(&s, "rate", name) - rate).abs() < 1e-9,
                "{name}: rate {s}"
            );
        });
    };
    accept(
        &mut c,
        "rate 10",
        base.clone().set("callTaskCode", "T-r10").set("rate", "10"),
        10.0,
        INITIALIZED,
    );
    accept(
        &mut c,
        "rate 0.1",
        base.clone().set("callTaskCode", "T-r01").set("rate", "0.1"),
        0.1,
        INITIALIZED,
    );
    accept(
        &mut c,
        "expiredTime as yyyy-MM-dd HH:mm:ss",
        base.clone()
            .set("callTaskCode", "T-dt")
            .set("expiredTime", &shanghai_datetime(now + 86_400_000)),
        1.5,
        INITIALIZED,
    );
    accept(
        &mut c,
        "preview",
        base.clone()
            .set("callTaskCode", "T-preview")
            .set("callType", "2"),
        1.5,
        INITIALIZED,
    );
    accept(
        &mut c,
        "voiceCode is ignored for scheduleType 1",
        base.clone()
            .set("callTaskCode", "T-voice")
            .set("voiceCode", "V-unknown"),
        1.5,
        INITIALIZED,
    );
    for pacing in ["predictive", "progressive", "ratio-idle", "ratio-active"] {
        accept(
            &mut c,
            &format!("pacing {pacing}"),
            base.clone()
                .set("callTaskCode", &format!("T-{pacing}"))
                .set("pacing", pacing)
                .set("rate", "2"),
            2.0,
            INITIALIZED,
        );
    }
    accept(
        &mut c,
        "calling windows, retries, auto-pause",
        base.clone()
            .set("callTaskCode", "T-rules")
            .set("weekPeriods", "0|1|2|3|4|5|6")
            .set("timePeriods", "00:00-12:00|12:00-23:59")
            .set(
                "repeatConfs",
                r#"[{"status":"2","frequence":"2","interval":"30"}]"#,
            )
            .set("continuousSeconds", "10")
            .set("continuousFailed", "5"),
        1.5,
        INITIALIZED,
    );
    accept(
        &mut c,
        "caller ID from outboundNumberGroups on a gateway without one",
        base.clone()
            .set("callTaskCode", "T-groups")
            .set("callGWs", &gws("GW-NOCID", 1))
            .set("orgNo", "3340101")
            .set("serviceId", "S1")
            .set(
                "outboundNumberGroups",
                r#"[{"orgNo":"3340101","serviceId":"S1","outboundNumber":"057100000001"}]"#,
            ),
        1.5,
        INITIALIZED,
    );
    c.run("T-exist untouched", || {
        assert_eq!(
            status_ok(&api, "T-exist"),
            before.tasks[0].1,
            "T-exist after the other submissions"
        );
    });

    d.http_get("/healthz");
    c.finish(&d);
}

// ------------------------------------------------------------------------------------------
// Status transitions, setTaskConcurrent, callTaskAdditional
// ------------------------------------------------------------------------------------------

/// 1 → start 2 → pause 3 → start 2 → end 4 (final: start 409, no change of lines), each
/// change published on `/topic/callTaskStatus/{projectCode}`; setTaskConcurrent changes the
/// rate; callTaskAdditional adds the entries imported after submission; unknown tasks 404;
/// missing parameters 400.
#[test]
fn task_status_transitions_concurrency_and_additions() {
    let d = Daemon::start(&default_config());
    let api = Mgmt::new(d.listeners.http);
    let mut c = Checks::new();
    let project = "P-life";
    api.create_ok(project, 1);
    add_gateway_ok(&api, &gateway("GW-L", "line", 10));
    add_gateway_ok(&api, &gateway("GW-L2", "line 2", 10));
    let first = import_ok(
        &api,
        "L-life",
        "13800000001\n13800000002\n13800000003",
        Some("3"),
        None,
        3,
    );
    let last0 = int(&first, "lastId", "first import");
    let mut stream = task_status_stream(&d, project);

    // No agent is signed in and no switch is connected: a running predictive task dials
    // nothing, so the counters stay at 0 throughout.
    assert_eq!(
        submit_ok(&api, &task("T-life", project, "L-life", "GW-L", 2, "1")),
        3
    );
    let s = status_ok(&api, "T-life");
    for (key, want) in [
        ("status", INITIALIZED),
        ("totalCount", 3),
        ("successCount", 0),
        ("failCount", 0),
        ("missCount", 0),
        ("rejectCount", 0),
        ("runningCount", 0),
        ("dialedCount", 0),
    ] {
        assert_eq!(int(&s, key, "new task"), want, "{key} of a new task: {s}");
    }
    assert_eq!(float(&s, "rate", "new task"), 1.5, "{s}");
    assert_eq!(float(&s, "abandonRate24h", "new task"), 0.0, "{s}");
    assert_eq!(float(&s, "abandonRate30d", "new task"), 0.0, "{s}");

    let transition = |c: &mut Checks, stream: &mut Stomp, route: &str, want: i64| {
        let name = format!("{route} -> status {want}");
        c.run(&name, || {
            task_call(&api, route, "T-life").ok(&name);
            assert_eq!(status_code(&api, "T-life"), want, "{name}");
        });
        c.run(&format!("{name} published"), || {
            let m = expect_task_message(stream, project, "T-life", &name, |v| {
                v.get("status").and_then(int_of) == Some(want)
            });
            for key in [
                "code",
                "totalCnt",
                "failCnt",
                "rejectCnt",
                "missCnt",
                "successCnt",
                "rate",
                "status",
                "runningCnt",
            ] {
                assert!(m.get(key).is_some(), "{name}: message without {key}: {m}");
            }
            let total = int(&status_ok(&api, "T-life"), "totalCount", &name);
            assert_eq!(
                int(&m, "totalCnt", &name),
                total,
                "totalCnt = totalCount: {m}"
            );
            assert_eq!(int(&m, "runningCnt", &name), 0, "{m}");
            assert_eq!(int(&m, "successCnt", &name), 0, "{m}");
        });
    };
    transition(&mut c, &mut stream, TASK_START, RUNNING);
    transition(&mut c, &mut stream, TASK_PAUSE, PAUSED);
    transition(&mut c, &mut stream, TASK_START, RUNNING);

    // --- setTaskConcurrent
    c.run("setTaskConcurrent", || {
        api.post(
            TASK_CONCURRENT,
            &[
                ("callTaskCode", "T-life"),
                ("callGWs", &gws("GW-L2", 3)),
                ("rate", "2.5"),
            ],
        )
        .ok("setTaskConcurrent T-life GW-L2×3 rate 2.5");
        let s = status_ok(&api, "T-life");
        assert_eq!(float(&s, "rate", "after setTaskConcurrent"), 2.5, "{s}");
        assert_eq!(int(&s, "status", "after setTaskConcurrent"), RUNNING, "{s}");
    });
    let tasks = ["T-life"];
    let before = snapshot(&api, &tasks);
    let concurrent = |gw: &str, rate: &str| {
        Params::new(&[("callTaskCode", "T-life"), ("callGWs", gw), ("rate", rate)])
    };
    let ok_gws = gws("GW-L", 2);
    for (name, p, statuses, words) in [
        ("rate 0", concurrent(&ok_gws, "0"), vec![400], vec!["rate"]),
        (
            "rate 11",
            concurrent(&ok_gws, "11"),
            vec![400],
            vec!["rate"],
        ),
        (
            "callGWs not JSON",
            concurrent("[{", "2"),
            vec![400],
            vec!["callGWs"],
        ),
        (
            "concurrency 0",
            concurrent(&gws("GW-L", 0), "2"),
            vec![400],
            vec!["callGWs", "concurrency"],
        ),
        (
            "unknown gateway",
            concurrent(&gws("GW-NOPE", 2), "2"),
            vec![400, 404],
            vec!["GW-NOPE"],
        ),
        (
            "without callGWs",
            concurrent(&ok_gws, "2").without("callGWs"),
            vec![400],
            vec!["callGWs"],
        ),
        (
            "without rate",
            concurrent(&ok_gws, "2").without("rate"),
            vec![400],
            vec!["rate"],
        ),
    ] {
        c.run(&format!("setTaskConcurrent {name}"), || {
            err_in(
                &post(&api, TASK_CONCURRENT, &p),
                &statuses,
                &words,
                &format!("setTaskConcurrent {name}"),
            );
            assert_unchanged(&api, &before, &tasks, name);
        });
    }

    // --- callTaskAdditional
    c.run(
        "callTaskAdditional adds the entries imported after submission",
        || {
            let second = import_ok(
                &api,
                "L-life",
                "13800000004\n13800000005",
                Some("3"),
                None,
                2,
            );
            let last1 = int(&second, "lastId", "second import");
            assert!(last1 > last0, "lastId grows: {last0} then {last1}");
            let l0 = last0.to_string();
            api.post(
                TASK_ADDITIONAL,
                &[("callTaskCode", "T-life"), ("callListLastId", &l0)],
            )
            .ok("callTaskAdditional T-life after the first import");
            assert_eq!(
                int(&status_ok(&api, "T-life"), "totalCount", "after additional"),
                5
            );
            let l1 = last1.to_string();
            api.post(
                TASK_ADDITIONAL,
                &[("callTaskCode", "T-life"), ("callListLastId", &l1)],
            )
            .ok("callTaskAdditional T-life after the last entry");
            assert_eq!(
                int(&status_ok(&api, "T-life"), "totalCount", "nothing more"),
                5,
                "no entry after lastId {last1}"
            );
        },
    );
    c.run("the new totalCnt is published", || {
        expect_task_message(&mut stream, project, "T-life", "totalCnt 5", |v| {
            v.get("totalCnt").and_then(int_of) == Some(5)
        });
    });
    let before = snapshot(&api, &tasks);
    for (name, p) in [
        (
            "without callListLastId",
            Params::new(&[("callTaskCode", "T-life")]),
        ),
        (
            "callListLastId abc",
            Params::new(&[("callTaskCode", "T-life"), ("callListLastId", "abc")]),
        ),
        (
            "callListLastId -1",
            Params::new(&[("callTaskCode", "T-life"), ("callListLastId", "-1")]),
        ),
    ] {
        c.run(&format!("callTaskAdditional {name}"), || {
            post(&api, TASK_ADDITIONAL, &p).err(
                400,
                &["callListLastId"],
                &format!("callTaskAdditional {name}"),
            );
            assert_unchanged(&api, &before, &tasks, name);
        });
    }

    // --- end is final
    transition(&mut c, &mut stream, TASK_END, ENDED);
    c.run("start after end", || {
        task_call(&api, TASK_START, "T-life").err(
            409,
            &["T-life", "end", "status", "final"],
            "callTaskStart after callTaskEnd",
        );
        assert_eq!(status_code(&api, "T-life"), ENDED);
    });
    c.run("pause after end", || {
        let r = task_call(&api, TASK_PAUSE, "T-life");
        if r.status() != 200 {
            r.err(409, &[], "callTaskPause after callTaskEnd (refused)");
        }
        assert_eq!(status_code(&api, "T-life"), ENDED, "ended is final");
    });
    c.run("setTaskConcurrent after end", || {
        post(&api, TASK_CONCURRENT, &concurrent(&ok_gws, "1")).err(
            409,
            &["T-life", "end", "status"],
            "setTaskConcurrent on an ended task",
        );
        let s = status_ok(&api, "T-life");
        assert_eq!(float(&s, "rate", "ended"), 2.5, "rate unchanged: {s}");
        assert_eq!(int(&s, "status", "ended"), ENDED, "{s}");
    });

    // --- unknown tasks and missing callTaskCode
    for (method, route, extra) in [
        ("POST", TASK_START, vec![]),
        ("POST", TASK_PAUSE, vec![]),
        ("POST", TASK_END, vec![]),
        ("POST", TASK_STATUS, vec![]),
        (
            "POST",
            TASK_CONCURRENT,
            vec![("callGWs", ok_gws.as_str()), ("rate", "1")],
        ),
        ("POST", TASK_ADDITIONAL, vec![("callListLastId", "0")]),
        ("GET", TASK_CALL_LIST, vec![("count", "1")]),
        ("GET", TASK_COMPLIANCE, vec![]),
        ("GET", TASK_ATTEMPTS, vec![]),
    ] {
        c.run(&format!("{route} of an unknown task"), || {
            let mut p = Params::new(&extra).set("callTaskCode", "T-ghost");
            call(&api, method, route, &p).err(
                404,
                &["T-ghost", "task"],
                &format!("{route} T-ghost"),
            );
            p = p.without("callTaskCode");
            call(&api, method, route, &p).err(
                400,
                &["callTaskCode"],
                &format!("{route} without callTaskCode"),
            );
        });
    }
    c.run("T-ghost was not created", || {
        assert_no_task(&api, "T-ghost", "after the refusals")
    });

    d.http_get("/healthz");
    c.finish(&d);
}

// ------------------------------------------------------------------------------------------
// Preview
// ------------------------------------------------------------------------------------------

/// getCallList hands out each number of a running preview task once, `count` at a time;
/// refuses bad counts, a predictive task (409) and a task not running (nothing handed out).
#[test]
fn preview_get_call_list_hands_out_each_number_once() {
    let d = Daemon::start(&default_config());
    let api = Mgmt::new(d.listeners.http);
    let mut c = Checks::new();
    api.create_ok("P-prev", 1);
    add_gateway_ok(&api, &gateway("GW-P", "line", 10));
    let numbers = [
        "13800000001",
        "13800000002",
        "13800000003",
        "13800000004",
        "13800000005",
    ];
    import_ok(&api, "L-prev", &numbers.join(","), Some("3"), None, 5);
    assert_eq!(
        submit_ok(&api, &task("T-prev", "P-prev", "L-prev", "GW-P", 1, "2")),
        5
    );
    assert_eq!(
        submit_ok(&api, &task("T-pred", "P-prev", "L-prev", "GW-P", 1, "1")),
        5
    );
    let hand_out = |count: &str| -> Vec<String> {
        let ctx = format!("getCallList T-prev count={count}");
        let data = api
            .get(
                TASK_CALL_LIST,
                &[("callTaskCode", "T-prev"), ("count", count)],
            )
            .ok(&ctx);
        phones(&data, &ctx)
    };

    c.run("a preview task not started hands out nothing", || {
        let r = api.get(
            TASK_CALL_LIST,
            &[("callTaskCode", "T-prev"), ("count", "5")],
        );
        err_in(
            &r,
            &[409, 400],
            &["T-prev", "status", "running", "start"],
            "getCallList on an initialized task",
        );
    });
    start_ok(&api, "T-prev");
    start_ok(&api, "T-pred");
    for (bad, words) in [
        ("0", vec!["count"]),
        ("101", vec!["count"]),
        ("x", vec!["count"]),
        ("-1", vec!["count"]),
    ] {
        c.run(&format!("count {bad}"), || {
            api.get(
                TASK_CALL_LIST,
                &[("callTaskCode", "T-prev"), ("count", bad)],
            )
            .err(400, &words, &format!("getCallList count={bad}"));
        });
    }
    c.run("without count", || {
        api.get(TASK_CALL_LIST, &[("callTaskCode", "T-prev")]).err(
            400,
            &["count"],
            "getCallList without count",
        );
    });
    c.run("a predictive task", || {
        api.get(
            TASK_CALL_LIST,
            &[("callTaskCode", "T-pred"), ("count", "2")],
        )
        .err(
            409,
            &["T-pred", "preview", "callType", "predictive"],
            "getCallList on a predictive task",
        );
    });
    c.run("each number once", || {
        let mut all: Vec<String> = Vec::new();
        let first = hand_out("2");
        assert_eq!(first.len(), 2, "count=2: {first:?}");
        all.extend(first);
        let second = hand_out("2");
        assert_eq!(second.len(), 2, "count=2 again: {second:?}");
        all.extend(second);
        let third = hand_out("100");
        assert_eq!(third.len(), 1, "the one number left: {third:?}");
        all.extend(third);
        assert_eq!(hand_out("100"), Vec::<String>::new(), "nothing left");
        let distinct: BTreeSet<String> = all.iter().cloned().collect();
        assert_eq!(distinct.len(), 5, "no number handed out twice: {all:?}");
        assert_eq!(
            distinct,
            numbers.iter().map(|n| n.to_string()).collect(),
            "exactly the task's numbers"
        );
    });
    c.run(
        "after a pause and a restart nothing is handed out again",
        || {
            pause_ok(&api, "T-prev");
            start_ok(&api, "T-prev");
            assert_eq!(hand_out("100"), Vec::<String>::new());
        },
    );

    d.http_get("/healthz");
    c.finish(&d);
}

// ------------------------------------------------------------------------------------------
// Reports of a fresh task
// ------------------------------------------------------------------------------------------

/// compliance, attempts, callTaskStatus, callLog getList and getListByResult of a task that
/// never dialled: zeros and empty lists; their parameter refusals.
#[test]
fn reports_of_a_fresh_task_are_zero_and_empty() {
    let d = Daemon::start(&default_config());
    let api = Mgmt::new(d.listeners.http);
    let mut c = Checks::new();
    api.create_ok("P-rep", 1);
    add_gateway_ok(&api, &gateway("GW-R", "line", 10));
    import_ok(&api, "L-rep", "13800000001,13800000002", Some("3"), None, 2);
    submit_ok(&api, &task("T-rep", "P-rep", "L-rep", "GW-R", 1, "1"));

    c.run("compliance", || {
        let data = compliance_ok(&api, "T-rep");
        for window in ["last24Hours", "last30Days"] {
            let w = &data[window];
            assert_eq!(int(w, "live", window), 0, "{data}");
            assert_eq!(int(w, "abandoned", window), 0, "{data}");
            assert_eq!(float(w, "rate", window), 0.0, "{data}");
        }
    });
    c.run("attempts", || {
        assert_eq!(attempts(&api, "T-rep"), Vec::<Value>::new());
        let data = api
            .get(
                TASK_ATTEMPTS,
                &[("callTaskCode", "T-rep"), ("afterId", "0"), ("limit", "10")],
            )
            .ok("attempts with afterId and limit");
        assert_eq!(items(&data, "attempts"), &Vec::<Value>::new(), "{data}");
    });
    c.run("callTaskStatus", || {
        let s = status_ok(&api, "T-rep");
        for key in [
            "successCount",
            "failCount",
            "missCount",
            "rejectCount",
            "runningCount",
            "dialedCount",
        ] {
            assert_eq!(int(&s, key, "fresh"), 0, "{key}: {s}");
        }
        assert_eq!(int(&s, "totalCount", "fresh"), 2, "{s}");
    });
    c.run("callLog getList", || {
        for query in ["1", "2"] {
            let data = api
                .get(
                    CALLLOG_LIST,
                    &[("queryTimeType", query), ("callTaskCode", "T-rep")],
                )
                .ok(&format!("callLog getList queryTimeType={query}"));
            assert_eq!(int(&data, "total", "callLog"), 0, "{data}");
            assert_eq!(items(&data, "callLog").len(), 0, "{data}");
        }
        let data = api
            .get(
                CALLLOG_LIST,
                &[
                    ("queryTimeType", "1"),
                    ("projectCode", "P-rep"),
                    ("beginTime", &shanghai_datetime(now_ms() as i64 - 3_600_000)),
                    ("endTime", &(now_ms() + 3_600_000).to_string()),
                    ("pageNum", "1"),
                    ("pageSize", "10"),
                ],
            )
            .ok("callLog getList by project and time");
        assert_eq!(int(&data, "total", "callLog"), 0, "{data}");
    });
    c.run("callLog getList refusals", || {
        api.get(CALLLOG_LIST, &[("callTaskCode", "T-rep")]).err(
            400,
            &["queryTimeType"],
            "callLog getList without queryTimeType",
        );
        for bad in ["3", "0", "x"] {
            api.get(
                CALLLOG_LIST,
                &[("queryTimeType", bad), ("callTaskCode", "T-rep")],
            )
            .err(
                400,
                &["queryTimeType"],
                &format!("callLog getList queryTimeType={bad}"),
            );
        }
        api.get(
            CALLLOG_LIST,
            &[("queryTimeType", "1"), ("beginTime", "yesterday")],
        )
        .err(400, &["beginTime"], "callLog getList beginTime=yesterday");
    });
    c.run("getListByResult", || {
        let data = api
            .get(
                CALLLOG_BY_RESULT,
                &[
                    ("resultDetail", "20,25"),
                    ("callTaskCode", "T-rep"),
                    ("recallLastId", "0"),
                ],
            )
            .ok("getListByResult");
        assert_eq!(int(&data, "total", "byResult"), 0, "{data}");
        assert_eq!(items(&data, "byResult").len(), 0, "{data}");
    });
    c.run("getListByResult refusals", || {
        let full = Params::new(&[
            ("resultDetail", "20,25"),
            ("callTaskCode", "T-rep"),
            ("recallLastId", "0"),
        ]);
        for key in ["resultDetail", "callTaskCode", "recallLastId"] {
            get(&api, CALLLOG_BY_RESULT, &full.clone().without(key)).err(
                400,
                &[key],
                &format!("getListByResult without {key}"),
            );
        }
        get(
            &api,
            CALLLOG_BY_RESULT,
            &full.clone().set("recallLastId", "-1"),
        )
        .err(400, &["recallLastId"], "getListByResult recallLastId=-1");
        get(
            &api,
            CALLLOG_BY_RESULT,
            &full.clone().set("resultDetail", "busy"),
        )
        .err(400, &["resultDetail"], "getListByResult resultDetail=busy");
        err_in(
            &get(
                &api,
                CALLLOG_BY_RESULT,
                &full.clone().set("callTaskCode", "T-ghost"),
            ),
            &[404],
            &["T-ghost", "task"],
            "getListByResult of an unknown task",
        );
    });

    d.http_get("/healthz");
    c.finish(&d);
}

// ------------------------------------------------------------------------------------------
// Authentication
// ------------------------------------------------------------------------------------------

/// Every campaign route refuses a request without the signature headers, or signed with the
/// wrong secret (401), before acting on it.
#[test]
fn unsigned_requests_are_refused_on_every_campaign_route() {
    let d = Daemon::start(&default_config());
    let api = Mgmt::new(d.listeners.http);
    let mut c = Checks::new();
    api.create_ok("P-auth", 1);
    let (gw_id, _) = add_gateway_ok(&api, &gateway("GW-AUTH", "line", 10));
    let gw_id = gw_id.to_string();
    import_ok(&api, "L-auth", "13800000001", Some("3"), None, 1);
    // A running preview task: an unsigned end, pause or hand-out that got through would show.
    submit_ok(&api, &task("T-auth", "P-auth", "L-auth", "GW-AUTH", 1, "2"));
    start_ok(&api, "T-auth");
    let tasks = ["T-auth"];
    let before = snapshot(&api, &tasks);

    let params_for = |route: &str| -> Params {
        match route {
            GW_ADD => gateway("GW-UNSIGNED", "unsigned", 3),
            GW_UPDATE => Params::new(&[
                ("id", &gw_id),
                ("gwCode", "GW-AUTH"),
                ("gwName", "hijacked"),
                ("registerType", "1"),
                ("realm", "192.0.2.66:5060"),
                ("status", "0"),
                ("returnVisit", "0"),
            ]),
            LIST_IMPORT => Params::new(&[("callListId", "L-auth"), ("numbers", "13800000002")]),
            BL_ADD | BL_REMOVE => Params::new(&[("numbers", "13800000001")]),
            TASK_SUBMIT => task("T-unsigned", "P-auth", "L-auth", "GW-AUTH", 1, "1"),
            TASK_CONCURRENT => Params::new(&[
                ("callTaskCode", "T-auth"),
                ("callGWs", &gws("GW-AUTH", 5)),
                ("rate", "9"),
            ]),
            TASK_ADDITIONAL => Params::new(&[("callTaskCode", "T-auth"), ("callListLastId", "0")]),
            TASK_CALL_LIST => Params::new(&[("callTaskCode", "T-auth"), ("count", "1")]),
            CALLLOG_LIST => Params::new(&[("queryTimeType", "1")]),
            CALLLOG_BY_RESULT => Params::new(&[
                ("resultDetail", "20"),
                ("callTaskCode", "T-auth"),
                ("recallLastId", "0"),
            ]),
            GW_AVAILABLE | GW_LIST | BL_LIST => Params::default(),
            _ => Params::new(&[("callTaskCode", "T-auth")]),
        }
    };
    for (method, route) in ROUTES {
        c.run(&format!("{method} {route} unsigned"), || {
            let p = params_for(route);
            let r = if *method == "GET" {
                api.get_with(route, Vec::new(), &p.pairs())
            } else {
                api.post_with(route, Vec::new(), form(&p.pairs()).as_bytes())
            };
            r.err(
                401,
                &["account", "sign", "timestamp"],
                &format!("{method} {route} without auth headers"),
            );
            let auth = auth_headers_at(ACCOUNT, "not-the-secret", &next_timestamp().to_string());
            let r = if *method == "GET" {
                api.get_with(route, auth, &p.pairs())
            } else {
                api.post_with(route, auth, form(&p.pairs()).as_bytes())
            };
            r.err(
                401,
                &["sign"],
                &format!("{method} {route} signed with the wrong secret"),
            );
        });
    }
    c.run("nothing changed", || {
        assert_unchanged(&api, &before, &tasks, "after the unsigned requests");
        assert_no_task(&api, "T-unsigned", "unsigned submit");
        let data = api
            .get(
                TASK_CALL_LIST,
                &[("callTaskCode", "T-auth"), ("count", "5")],
            )
            .ok("getCallList T-auth");
        assert_eq!(
            phones(&data, "T-auth"),
            ["13800000001"],
            "the unsigned hand-out took nothing; the unsigned import added nothing"
        );
    });
    d.http_get("/healthz");
    c.finish(&d);
}

// ------------------------------------------------------------------------------------------
// Hostile input
// ------------------------------------------------------------------------------------------

/// Oversized lists and bodies, bytes that are not UTF-8, huge and nested parameters,
/// SQL-looking codes: each a clear 4xx (or, where the contract makes the input merely
/// invalid data, a 200 that accepts nothing), never a 5xx or a crash; afterwards the daemon
/// answers /healthz and every list is as it was.
#[test]
fn hostile_inputs_get_clear_refusals_and_the_daemon_survives() {
    let mut d = Daemon::start(&mgmt_config_with_body_limit(4 << 20));
    let api = Mgmt::new(d.listeners.http);
    let mut c = Checks::new();
    api.create_ok("P-h", 1);
    add_gateway_ok(&api, &gateway("GW-H", "line", 10));
    import_ok(&api, "L-h", "13800000001\n13800000002", Some("3"), None, 2);
    submit_ok(&api, &task("T-h", "P-h", "L-h", "GW-H", 1, "1"));
    blacklist_add_ok(&api, "13900000001");
    let tasks = ["T-h"];
    let before = snapshot(&api, &tasks);

    let numbers = |n: usize| -> String {
        (0..n)
            .map(|i| format!("1{:010}", 3_000_000_000u64 + i as u64))
            .collect::<Vec<_>>()
            .join("\n")
    };

    c.run("100 001 numbers in one import", || {
        let r = import(&api, "L-h", &numbers(100_001), Some("1"), None);
        err_in(
            &r,
            &[400, 413],
            &["numbers", "100000", "100 000", "many", "limit", "large"],
            "import of 100 001 numbers",
        );
        assert_unchanged(&api, &before, &tasks, "100 001 numbers");
    });
    c.run("100 000 numbers in one import", || {
        let data = import_ok(&api, "L-big", &numbers(100_000), Some("1"), None, 100_000);
        assert!(int(&data, "lastId", "L-big") > 0);
    });
    c.run("a 5 MiB body", || {
        let mut body = form(&[("callListId", "L-h")]).into_bytes();
        body.extend_from_slice(b"&numbers=");
        body.resize(body.len() + (5 << 20), b'1');
        let r = api.post_with(LIST_IMPORT, api.auth(), &body);
        r.err(
            413,
            &["large", "size", "limit", "body", "too", "bytes", "exceeds"],
            "a 5 MiB import body",
        );
        assert_unchanged(&api, &before, &tasks, "5 MiB body");
    });
    let encoding_words: &[&str] = &["utf", "encod", "invalid", "percent", "form", "body"];
    for (name, route, body) in [
        (
            "callTaskCode percent-encoded invalid UTF-8",
            TASK_STATUS,
            b"callTaskCode=T%FF%FE".to_vec(),
        ),
        (
            "callTaskCode raw invalid UTF-8",
            TASK_START,
            b"callTaskCode=T-h\xff\xfe".to_vec(),
        ),
        (
            "numbers raw invalid UTF-8",
            LIST_IMPORT,
            b"callListId=L-h&numbers=1380000\xff0003".to_vec(),
        ),
        (
            "gwName truncated UTF-8",
            GW_ADD,
            b"gwCode=GW-X&gwName=%E4%BD&registerType=1&realm=a&status=1&returnVisit=0".to_vec(),
        ),
        (
            "bad percent escape",
            TASK_SUBMIT,
            b"callTaskCode=T%ZZ&scheduleType=1".to_vec(),
        ),
    ] {
        c.run(name, || {
            let r = api.post_with(route, api.auth(), &body);
            r.err(400, encoding_words, name);
            assert_unchanged(&api, &before, &tasks, name);
        });
    }
    c.run("query string with invalid UTF-8", || {
        let r = api.raw(
            "GET",
            &format!("{TASK_ATTEMPTS}?callTaskCode=T-h%FF"),
            api.auth(),
            b"",
        );
        err_4xx(&r, "attempts?callTaskCode=T-h%FF");
    });
    let huge = "T".repeat(100_000);
    c.run("a 100 000-character callTaskCode", || {
        let p = task(&huge, "P-h", "L-h", "GW-H", 1, "1");
        post(&api, TASK_SUBMIT, &p).err(400, &["callTaskCode"], "huge callTaskCode");
        err_in(
            &task_call(&api, TASK_STATUS, &huge),
            &[400, 404],
            &["callTaskCode", "task"],
            "callTaskStatus of a huge code",
        );
        assert_unchanged(&api, &before, &tasks, "huge callTaskCode");
    });
    c.run("a 100 000-character callListId", || {
        import(&api, &"L".repeat(100_000), "13800000003", None, None).err(
            400,
            &["callListId"],
            "huge callListId",
        );
    });
    c.run("one 100 000-digit number", || {
        let data = import_ok(&api, "L-h", &"1".repeat(100_000), Some("1"), None, 0);
        let reasons: Vec<String> = skipped(&data, "huge number")
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        assert_eq!(reasons, ["invalid"], "{data}");
    });
    c.run("callGWs nested 100 000 deep", || {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let p = task("T-deep", "P-h", "L-h", "GW-H", 1, "1").set("callGWs", &deep);
        post(&api, TASK_SUBMIT, &p).err(400, &["callGWs"], "deeply nested callGWs");
    });
    c.run("numbers too large for any integer", || {
        let p = task("T-big", "P-h", "L-h", "GW-H", 1, "1").set(
            "callGWs",
            r#"[{"code":"GW-H","concurrency":18446744073709551617}]"#,
        );
        post(&api, TASK_SUBMIT, &p).err(400, &["callGWs", "concurrency"], "concurrency 2^64+1");
        let p = task("T-big", "P-h", "L-h", "GW-H", 1, "1").set("rate", "1e308");
        post(&api, TASK_SUBMIT, &p).err(400, &["rate"], "rate 1e308");
        let p = task("T-big", "P-h", "L-h", "GW-H", 1, "1")
            .set("expiredTime", "99999999999999999999999");
        post(&api, TASK_SUBMIT, &p).err(400, &["expiredTime"], "expiredTime 10^23");
        assert_no_task(&api, "T-big", "oversized numbers");
    });
    c.run("control characters in a code", || {
        let p = task("T-h\r\nX-Injected: 1", "P-h", "L-h", "GW-H", 1, "1");
        post(&api, TASK_SUBMIT, &p).err(400, &["callTaskCode"], "CRLF in callTaskCode");
        let p = task("T-nul\0", "P-h", "L-h", "GW-H", 1, "1");
        post(&api, TASK_SUBMIT, &p).err(400, &["callTaskCode"], "NUL in callTaskCode");
    });

    // --- SQL-looking strings
    c.run("SQL in callTaskCode", || {
        let p = task("T-h' OR '1'='1", "P-h", "L-h", "GW-H", 1, "1");
        post(&api, TASK_SUBMIT, &p).err(400, &["callTaskCode"], "SQL in callTaskCode");
        for route in [TASK_STATUS, TASK_START, TASK_END] {
            err_in(
                &task_call(&api, route, "T-h' OR '1'='1"),
                &[404, 400],
                &["callTaskCode", "task"],
                &format!("{route} with SQL in callTaskCode"),
            );
        }
        err_in(
            &api.get(
                TASK_ATTEMPTS,
                &[("callTaskCode", "x' UNION SELECT * FROM sqlite_master --")],
            ),
            &[404, 400],
            &["callTaskCode", "task"],
            "attempts with SQL in callTaskCode",
        );
        assert_unchanged(&api, &before, &tasks, "SQL in callTaskCode");
    });
    c.run("SQL in callListId", || {
        import(
            &api,
            "L-h'; DROP TABLE call_lists;--",
            "13800000003",
            None,
            None,
        )
        .err(400, &["callListId"], "SQL in callListId");
    });
    c.run("SQL in projectCode", || {
        let p = task("T-sqlp", "P-h' OR 1=1 --", "L-h", "GW-H", 1, "1");
        err_in(
            &post(&api, TASK_SUBMIT, &p),
            &[400, 404],
            &["projectCode", "project"],
            "SQL in projectCode",
        );
        assert_no_task(&api, "T-sqlp", "SQL in projectCode");
    });
    c.run("SQL in gwCode", || {
        let code = "GW'); DROP TABLE gateways;--";
        let r = post(&api, GW_ADD, &gateway(code, "sql", 1));
        if r.status() == 200 {
            // Any unique string is a gwCode: it must come back verbatim.
            let (total, list) = gateway_list(&api, &[]);
            assert_eq!(total, 2, "{list:?}");
            assert!(gateway_by_code(&list, code).is_some(), "{list:?}");
            assert!(gateway_by_code(&list, "GW-H").is_some(), "{list:?}");
        } else {
            r.err(400, &["gwCode"], "SQL in gwCode refused");
        }
    });
    c.run("SQL in filters", || {
        api.get(GW_LIST, &[("id", "1 OR 1=1")])
            .err(400, &["id"], "getList id=1 OR 1=1");
        let r = api.get(
            CALLLOG_LIST,
            &[("queryTimeType", "1"), ("callTaskCode", "' OR 1=1 --")],
        );
        if r.status() == 200 {
            let data = r.ok("callLog with SQL in callTaskCode");
            assert_eq!(int(&data, "total", "callLog"), 0, "{data}");
        } else {
            err_4xx(&r, "callLog with SQL in callTaskCode");
        }
        let r = api.post(
            BL_ADD,
            &[("numbers", "13900000002'); DELETE FROM blacklist;--")],
        );
        if r.status() == 200 {
            let data = r.ok("blacklist add with SQL");
            assert_eq!(int(&data, "added", "blacklist"), 0, "not a number: {data}");
        } else {
            err_4xx(&r, "blacklist add with SQL");
        }
        assert_eq!(blacklist(&api), (1, vec!["13900000001".to_owned()]));
    });
    c.run("absurd paging", || {
        for (k, v) in [
            ("pageSize", "99999999999999999999999"),
            ("pageSize", "-5"),
            ("pageNum", "0"),
            ("pageNum", "-1"),
            ("pageNum", "99999999999999999999999"),
        ] {
            for route in [GW_LIST, BL_LIST] {
                let r = api.get(route, &[(k, v)]);
                if r.status() != 200 {
                    err_4xx(&r, &format!("{route} {k}={v}"));
                } else {
                    r.ok(&format!("{route} {k}={v}"));
                }
            }
        }
    });

    d.assert_alive("after the hostile requests");
    c.run("nothing lost", || {
        assert_eq!(int(&status_ok(&api, "T-h"), "totalCount", "T-h"), 2);
        assert_eq!(
            submit_ok(&api, &task("T-h2", "P-h", "L-h", "GW-H", 1, "1")),
            2,
            "L-h still holds its two numbers"
        );
        assert!(gateway_by_code(&gateway_list(&api, &[]).1, "GW-H").is_some());
    });
    c.finish(&d);
}
