//! The mod_json_cdr / mod_xml_cdr receiver (`POST {cdr.receiver_path}`), the error-directory
//! sweeper and the reconciler, over real loopback HTTP against the real daemon, checked in its
//! SQLite file (`cdr_legs`, `cdr_calls`, `call_records`) and on `/metrics`.
//!
//! Posts are made the way FreeSWITCH makes them (mod_json_cdr.c `process_cdr`): `POST
//! {url}?uuid=<leg uuid>` with `User-Agent: freeswitch-json/1.0`, and the body either the
//! JSON itself (`encode=false`, `Content-Type: application/json`, or
//! `application/x-www-form-plaintext` in older releases), `cdr=<url-encoded JSON>`
//! (`encode=true`, `application/x-www-form-urlencoded`) or `cdr=<base64 JSON>`
//! (`encode=base64`, `application/x-www-form-base64-encoded`). mod_xml_cdr posts
//! `cdr=<url-encoded XML>`. When every post fails, mod_json_cdr writes the *same text it would
//! have posted after `cdr=`* (escaped when `encode` is on) plus a newline to
//! `<err-log-dir>/[a_]<uuid>.cdr.json`.
//!
//! Nothing sleeps for a fixed time: every wait polls a condition (the database, a metric, a
//! file) with a deadline. Every listener is on an ephemeral port.

mod common;
#[path = "support/mgmt.rs"]
mod mgmt;

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use common::*;
use mgmt::{http_request, parse_http_response, pct, HttpResponse};

const CDR_PATH: &str = "/freeswitch/cdr";
/// How long a call may take to be built once it is due (settle_secs = 1 plus slack).
const BUILD_WAIT: Duration = Duration::from_secs(15);
/// How long the sweeper (sweep_interval_secs = 1) may take to act on a file.
const SWEEP_WAIT: Duration = Duration::from_secs(15);

// ------------------------------------------------------------------------------------------
// Fixtures
// ------------------------------------------------------------------------------------------

/// One CDR fixture and the leg identity the daemon must store for it.
#[derive(Debug, Clone, Copy)]
struct Fixture {
    file: &'static str,
    /// `core-uuid` ("" for the 2008 XML CDR, which predates it).
    core: &'static str,
    uuid: &'static str,
}

const ANSWERED_2018: Fixture = Fixture {
    file: "cdr-inbound-answered-bridged-2018.json",
    core: "63e2315b-d538-4dfa-9ed5-af73ba6210b6",
    uuid: "5a3a1d91-90d3-4db4-af5c-cc3ae15d93a4",
};
const PREPAID_2015: Fixture = Fixture {
    file: "cdr-inbound-answered-prepaid-2015.json",
    core: "651a8db2-4f67-4cf8-b622-169e8a482e50",
    uuid: "e3133bf7-dcde-4daf-9663-9a79ffcef5ad",
};
const URLENCODED_2013: Fixture = Fixture {
    file: "cdr-inbound-answered-urlencoded-2013.json",
    core: "9b8ce609-6413-437b-8cf3-bbb92aaf720a",
    uuid: "c8ccef5e-34c2-4fd2-9a2e-fa6f295f3a1e",
};
const CANCELLED_A: Fixture = Fixture {
    file: "cdr-inbound-cancelled-aleg-2025.json",
    core: "60e127b7-2c12-49ca-aacf-00bba4eea101",
    uuid: "51156b0b-f91b-4fd3-9c8f-15226f6098be",
};
const CANCELLED_B: Fixture = Fixture {
    file: "cdr-outbound-cancelled-bleg-2025.json",
    core: "60e127b7-2c12-49ca-aacf-00bba4eea101",
    uuid: "ab0aa08a-ead3-42c6-a365-99553a001fba",
};
const ORIGINATE_2025: Fixture = Fixture {
    file: "cdr-outbound-originate-answered-2025.json",
    core: "60e127b7-2c12-49ca-aacf-00bba4eea101",
    uuid: "16c22a18-eccc-4974-adf9-44d2b6152838",
};
const ABSENT_XML_2019: Fixture = Fixture {
    file: "cdr-inbound-unanswered-subscriber-absent-2019.xml",
    core: "1eee52c9-73dd-4a6b-a13e-2bf391021578",
    uuid: "47e84b8e-95b0-4d09-8339-9fb2a479e3fb",
};
const LEGACY_XML_2008: Fixture = Fixture {
    file: "cdr-inbound-answered-bridged-legacy-2008.xml",
    core: "",
    uuid: "6f32e2f8-38d1-43a7-b6ea-215bbfe6a314",
};

/// The call both cancelled legs belong to: the A-leg's uuid on their core.
const CANCELLED_CALL: &str =
    "60e127b7-2c12-49ca-aacf-00bba4eea101/51156b0b-f91b-4fd3-9c8f-15226f6098be";
const PREPAID_CALL: &str =
    "651a8db2-4f67-4cf8-b622-169e8a482e50/e3133bf7-dcde-4daf-9663-9a79ffcef5ad";

impl Fixture {
    fn bytes(&self) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/freeswitch")
            .join(self.file);
        fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes())
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", self.file))
    }

    /// The name mod_json_cdr gives its error file (`prefix-a-leg=true` for A-legs).
    fn error_file_name(&self) -> String {
        let ext = if self.file.ends_with(".xml") {
            "xml"
        } else {
            "json"
        };
        format!("a_{}.cdr.{ext}", self.uuid)
    }
}

// ------------------------------------------------------------------------------------------
// Posting
// ------------------------------------------------------------------------------------------

/// How a document is put on the wire (mod_json_cdr's `encode` setting).
#[derive(Debug, Clone, Copy)]
enum Enc {
    /// `encode=false`: the document as is, `application/json`.
    Json,
    /// `encode=false` in releases before 1.6: the document as is, `x-www-form-plaintext`.
    Plaintext,
    /// `encode=true`: `cdr=<url-encoded document>`.
    Form,
    /// `encode=base64`: `cdr=<base64 document>` (the base64 is not url-encoded).
    Base64,
}

impl Enc {
    fn wire(self, doc: &[u8]) -> (&'static str, Vec<u8>) {
        match self {
            Enc::Json => ("application/json", doc.to_vec()),
            Enc::Plaintext => ("application/x-www-form-plaintext", doc.to_vec()),
            Enc::Form => (
                "application/x-www-form-urlencoded",
                format!("cdr={}", pct(&String::from_utf8_lossy(doc))).into_bytes(),
            ),
            Enc::Base64 => (
                "application/x-www-form-base64-encoded",
                format!(
                    "cdr={}",
                    base64::engine::general_purpose::STANDARD.encode(doc)
                )
                .into_bytes(),
            ),
        }
    }
}

fn basic(user_pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

/// `POST {CDR_PATH}?uuid=<uuid>` with the given Content-Type and optional Authorization.
fn post_raw(
    d: &Daemon,
    uuid: &str,
    content_type: Option<&str>,
    authorization: Option<&str>,
    body: &[u8],
) -> HttpResponse {
    let mut headers = vec![("User-Agent".to_string(), "freeswitch-json/1.0".to_string())];
    if let Some(ct) = content_type {
        headers.push(("Content-Type".into(), ct.into()));
    }
    if let Some(a) = authorization {
        headers.push(("Authorization".into(), a.into()));
    }
    let target = format!("{CDR_PATH}?uuid={}", pct(uuid));
    http_request(d.listeners.http, "POST", &target, &headers, body)
        .unwrap_or_else(|e| d.fail(&format!("POST {target}: {e}")))
}

/// Posts a fixture in an encoding.
fn post_fixture(d: &Daemon, f: Fixture, enc: Enc) -> HttpResponse {
    let (ct, body) = enc.wire(&f.bytes());
    post_raw(d, f.uuid, Some(ct), None, &body)
}

/// Asserts a receiver answer: status, a JSON body, and its `result`. Returns the body.
fn expect(r: &HttpResponse, status: u16, result: &str, ctx: &str) -> Value {
    assert_eq!(r.status, status, "{ctx}: status; body {}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{ctx}: Content-Type {:?}, want application/json",
        r.header("content-type")
    );
    let v: Value = serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("{ctx}: body is not JSON ({e}): {:?}", r.body));
    assert_eq!(v["result"].as_str(), Some(result), "{ctx}: {v}");
    v
}

/// Asserts a refusal: status, `"result": "refused"`, and a detail naming the problem (one of
/// `words`, case-insensitive).
fn expect_refused(r: &HttpResponse, status: u16, words: &[&str], ctx: &str) {
    let v = expect(r, status, "refused", ctx);
    let detail = v["detail"].as_str().unwrap_or("").to_ascii_lowercase();
    assert!(
        words
            .iter()
            .any(|w| detail.contains(&w.to_ascii_lowercase())),
        "{ctx}: detail {detail:?} names none of {words:?}"
    );
}

/// A POST whose body is `total` bytes sent with `Transfer-Encoding: chunked` and no
/// Content-Length, written from a second thread while this one reads the answer.
fn post_chunked(addr: SocketAddr, total: usize) -> io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_write_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "POST {CDR_PATH} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )?;
    let mut w = s.try_clone()?;
    let writer = std::thread::spawn(move || {
        let mut send = || -> io::Result<()> {
            let head = b"{\"variables\":{\"pad\":\"";
            write!(w, "{:x}\r\n", head.len())?;
            w.write_all(head)?;
            w.write_all(b"\r\n")?;
            let chunk = vec![b'a'; 64 * 1024];
            let mut sent = head.len();
            while sent < total {
                write!(w, "{:x}\r\n", chunk.len())?;
                w.write_all(&chunk)?;
                w.write_all(b"\r\n")?;
                sent += chunk.len();
            }
            w.write_all(b"5\r\n\"}}\r\n\r\n0\r\n\r\n")
        };
        // The server may refuse and close early: a write error is expected then.
        let _ = send();
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let read_err = loop {
        match s.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Some(e),
        }
    };
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    match (parse_http_response(&raw), read_err) {
        (Ok(r), _) => Ok(r),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(e),
    }
}

// ------------------------------------------------------------------------------------------
// The database
// ------------------------------------------------------------------------------------------

/// A read-only connection to the daemon's database (a fresh one per question, so each sees
/// the latest commit).
fn db(d: &Daemon) -> rusqlite::Connection {
    let path = d.state_dir.join("gridedge.db");
    let conn =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| d.fail(&format!("open {} read-only: {e}", path.display())));
    conn.busy_timeout(Duration::from_secs(5))
        .unwrap_or_else(|e| d.fail(&format!("busy_timeout: {e}")));
    conn
}

fn count(d: &Daemon, table: &str) -> i64 {
    db(d)
        .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap_or_else(|e| d.fail(&format!("count {table}: {e}")))
}

/// Every stored row of one leg: (source, document).
fn leg_rows(d: &Daemon, f: Fixture) -> Vec<(String, Option<Vec<u8>>)> {
    let conn = db(d);
    let mut stmt = conn
        .prepare("SELECT source, document FROM cdr_legs WHERE core_uuid = ?1 AND uuid = ?2")
        .unwrap_or_else(|e| d.fail(&format!("prepare: {e}")));
    let rows = stmt
        .query_map([f.core, f.uuid], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|e| d.fail(&format!("cdr_legs of {}: {e}", f.uuid)));
    rows
}

/// Asserts the leg is stored exactly once, from a document, with `document` as its text.
fn assert_leg_stored(d: &Daemon, f: Fixture, document: &[u8], ctx: &str) {
    let rows = leg_rows(d, f);
    assert_eq!(
        rows.len(),
        1,
        "{ctx}: want exactly one cdr_legs row for ({:?}, {})",
        f.core,
        f.uuid
    );
    let (source, stored) = &rows[0];
    assert_eq!(source, "document", "{ctx}: source");
    let stored = stored.as_deref().unwrap_or_default();
    assert!(
        stored == document,
        "{ctx}: stored document ({} bytes) differs from the CDR ({} bytes); stored starts {:?}",
        stored.len(),
        document.len(),
        String::from_utf8_lossy(&stored[..stored.len().min(120)])
    );
}

/// Every closed call: (call_key, outcome, session_id).
fn calls(d: &Daemon) -> Vec<(String, String, String)> {
    let conn = db(d);
    let mut stmt = conn
        .prepare("SELECT call_key, outcome, session_id FROM cdr_calls ORDER BY call_key")
        .unwrap_or_else(|e| d.fail(&format!("prepare: {e}")));
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|e| d.fail(&format!("cdr_calls: {e}")));
    rows
}

/// The call's records: (stream_number column, record JSON).
fn records(d: &Daemon, call_key: &str) -> Vec<(String, Value)> {
    let conn = db(d);
    let mut stmt = conn
        .prepare(
            "SELECT stream_number, record FROM call_records WHERE call_key = ?1 \
             ORDER BY stream_number",
        )
        .unwrap_or_else(|e| d.fail(&format!("prepare: {e}")));
    let rows: Vec<(String, String)> = stmt
        .query_map([call_key], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|e| d.fail(&format!("call_records of {call_key}: {e}")));
    rows.into_iter()
        .map(|(n, json)| {
            let v = serde_json::from_str(&json).unwrap_or_else(|e| {
                d.fail(&format!("call_records.record is not JSON ({e}): {json}"))
            });
            (n, v)
        })
        .collect()
}

/// Waits until `call_key` is closed; returns its (outcome, session_id).
fn wait_built(d: &Daemon, call_key: &str, ctx: &str) -> (String, String) {
    poll_until(BUILD_WAIT, || {
        calls(d)
            .into_iter()
            .find(|(k, _, _)| k == call_key)
            .map(|(_, o, s)| (o, s))
    })
    .unwrap_or_else(|| {
        d.fail(&format!(
            "{ctx}: call {call_key} not built within {BUILD_WAIT:?}; closed calls: {:?}",
            calls(d)
        ))
    })
}

/// Checks the records of a built call and returns how many there are: at least one, the
/// stream number 34 digits (13-digit start ms, 19-digit session id, 2-digit ordinal) equal to
/// the table's key, every record naming the call and carrying its session id.
fn check_records(d: &Daemon, call_key: &str, session_id: &str, ctx: &str) -> usize {
    let recs = records(d, call_key);
    assert!(!recs.is_empty(), "{ctx}: no call_records for {call_key}");
    let (core, call) = call_key.split_once('/').unwrap();
    for (column, r) in &recs {
        let sn = r["stream_number"].as_str().unwrap_or("");
        assert_eq!(sn, column, "{ctx}: record vs column stream_number: {r}");
        assert!(
            sn.len() == 34 && sn.bytes().all(|b| b.is_ascii_digit()),
            "{ctx}: stream_number {sn:?} is not 34 digits"
        );
        let start_ms = r["start_ms"].as_u64().unwrap_or(0);
        assert_eq!(
            &sn[..13],
            format!("{:013}", start_ms % 10_000_000_000_000),
            "{ctx}: stream_number does not start with start_ms {start_ms}: {sn}"
        );
        assert_eq!(
            &sn[13..32],
            format!("{session_id:0>19}"),
            "{ctx}: stream_number does not carry session id {session_id}: {sn}"
        );
        assert_eq!(r["session_id"].as_str(), Some(session_id), "{ctx}: {r}");
        assert_eq!(r["core_uuid"].as_str(), Some(core), "{ctx}: {r}");
        assert_eq!(r["call_uuid"].as_str(), Some(call), "{ctx}: {r}");
    }
    recs.len()
}

/// A Prometheus sample (0 when the series was never created).
fn metric(d: &Daemon, name: &str, labels: &[&str]) -> f64 {
    d.metric(name, labels).unwrap_or(0.0)
}

fn legs_metric(d: &Daemon, source: &str, result: &str) -> f64 {
    metric(
        d,
        "gridedge_cdr_legs_total",
        &[
            &format!("source=\"{source}\""),
            &format!("result=\"{result}\""),
        ],
    )
}

fn reconciliation_metric(d: &Daemon, outcome: &str) -> f64 {
    metric(
        d,
        "gridedge_cdr_reconciliation_total",
        &[&format!("outcome=\"{outcome}\"")],
    )
}

/// Runs each check, collecting failures so one run reports every wrong answer.
struct Checks {
    failures: Vec<String>,
}

impl Checks {
    fn new() -> Checks {
        Checks {
            failures: Vec::new(),
        }
    }

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

    fn finish(self, d: &Daemon) {
        if !self.failures.is_empty() {
            d.fail(&format!(
                "{} check(s) failed:\n{}",
                self.failures.len(),
                self.failures.join("\n\n")
            ));
        }
    }
}

// ------------------------------------------------------------------------------------------
// 1. Every fixture, every encoding FreeSWITCH uses
// ------------------------------------------------------------------------------------------

#[test]
fn every_fixture_is_stored_in_every_encoding() {
    let d = Daemon::start("");
    let cases: [(Fixture, Enc); 8] = [
        (ANSWERED_2018, Enc::Json),
        (PREPAID_2015, Enc::Form),
        (URLENCODED_2013, Enc::Plaintext),
        (CANCELLED_A, Enc::Json),
        (CANCELLED_B, Enc::Json),
        (ORIGINATE_2025, Enc::Base64),
        (ABSENT_XML_2019, Enc::Form),
        (LEGACY_XML_2008, Enc::Form),
    ];
    let mut c = Checks::new();
    for (f, enc) in cases {
        c.run(&format!("{} as {enc:?}", f.file), || {
            let ctx = format!("POST {} as {enc:?}", f.file);
            expect(&post_fixture(&d, f, enc), 200, "stored", &ctx);
            assert_leg_stored(&d, f, &f.bytes(), &ctx);
        });
    }
    c.run("totals", || {
        // Each case checked its own row; here only that nothing else was stored.
        let stored = count(&d, "cdr_legs");
        assert!(stored as usize <= cases.len(), "{stored} cdr_legs rows");
        assert_eq!(
            legs_metric(&d, "post", "stored"),
            stored as f64,
            "gridedge_cdr_legs_total{{source=\"post\",result=\"stored\"}}"
        );
    });
    c.finish(&d);
}

// ------------------------------------------------------------------------------------------
// 2. Idempotence
// ------------------------------------------------------------------------------------------

#[test]
fn a_cdr_posted_again_is_a_duplicate_in_any_encoding() {
    let d = Daemon::start("");
    let firsts: [(Fixture, Enc); 3] = [
        (ANSWERED_2018, Enc::Json),
        (PREPAID_2015, Enc::Form),
        (ABSENT_XML_2019, Enc::Form),
    ];
    for (f, enc) in firsts {
        expect(
            &post_fixture(&d, f, enc),
            200,
            "stored",
            &format!("first POST {}", f.file),
        );
    }
    let rows = count(&d, "cdr_legs");
    assert_eq!(rows, 3, "cdr_legs after three first posts");

    // FreeSWITCH retrying the same post, and the same CDR arriving in another encoding
    // (the switch's `encode` setting changed, or a second switch config posts it).
    let agains: [(Fixture, Enc); 5] = [
        (ANSWERED_2018, Enc::Json),
        (ANSWERED_2018, Enc::Form),
        (PREPAID_2015, Enc::Form),
        (PREPAID_2015, Enc::Json),
        (ABSENT_XML_2019, Enc::Form),
    ];
    for (f, enc) in agains {
        let ctx = format!("POST {} again as {enc:?}", f.file);
        expect(&post_fixture(&d, f, enc), 200, "duplicate", &ctx);
        assert_eq!(count(&d, "cdr_legs"), rows, "{ctx}: cdr_legs rows");
        assert_leg_stored(&d, f, &f.bytes(), &ctx);
    }
    assert_eq!(legs_metric(&d, "post", "duplicate"), 5.0, "{}", d.metrics());
    assert_eq!(legs_metric(&d, "post", "stored"), 3.0, "{}", d.metrics());
}

// ------------------------------------------------------------------------------------------
// 3. Call records
// ------------------------------------------------------------------------------------------

/// Both legs of the cancelled call: one call, built once, from the documents (no ESL here).
#[test]
fn both_legs_build_one_call_once() {
    let d = Daemon::start("[cdr]\nsettle_secs = 1\n");
    expect(
        &post_fixture(&d, CANCELLED_A, Enc::Json),
        200,
        "stored",
        "A-leg",
    );
    expect(
        &post_fixture(&d, CANCELLED_B, Enc::Form),
        200,
        "stored",
        "B-leg",
    );
    let (outcome, session) = wait_built(&d, CANCELLED_CALL, "A+B");
    assert_eq!(
        outcome, "json_only",
        "outcome of a call seen only by documents"
    );
    assert_eq!(
        calls(&d).len(),
        1,
        "the two legs must make one call: {:?}",
        calls(&d)
    );
    let n = check_records(&d, CANCELLED_CALL, &session, "A+B");
    assert_eq!(
        count(&d, "call_records") as usize,
        n,
        "records of other calls"
    );

    // A lone A-leg whose B-leg never comes is built once it has settled.
    expect(
        &post_fixture(&d, PREPAID_2015, Enc::Json),
        200,
        "stored",
        "lone A-leg",
    );
    let (outcome, session2) = wait_built(&d, PREPAID_CALL, "lone A-leg");
    assert_eq!(outcome, "json_only", "outcome of the lone A-leg's call");
    let n2 = check_records(&d, PREPAID_CALL, &session2, "lone A-leg");
    assert_ne!(session, session2, "two calls share a session id");
    assert_eq!(calls(&d).len(), 2, "{:?}", calls(&d));
    assert_eq!(count(&d, "call_records") as usize, n + n2);

    // The numbers say the same.
    let m = d.metrics();
    let sample = |name: &str, labels: &[&str]| metric_sum(&m, name, labels).unwrap_or(0.0);
    assert_eq!(
        sample(
            "gridedge_cdr_legs_total",
            &["source=\"post\"", "result=\"stored\""]
        ),
        3.0,
        "{m}"
    );
    assert_eq!(
        sample(
            "gridedge_cdr_reconciliation_total",
            &["outcome=\"json_only\""]
        ),
        2.0,
        "{m}"
    );
    assert_eq!(
        sample("gridedge_cdrs_built_total", &[]),
        (n + n2) as f64,
        "{m}"
    );
    assert_eq!(sample("gridedge_cdr_calls_pending", &[]), 0.0, "{m}");
}

/// A lone A-leg is built after settling; its B-leg arriving afterwards is "late": kept, but
/// it builds nothing and changes no record.
#[test]
fn a_leg_after_its_call_was_built_is_late() {
    let d = Daemon::start("[cdr]\nsettle_secs = 1\n");
    expect(
        &post_fixture(&d, CANCELLED_A, Enc::Json),
        200,
        "stored",
        "A-leg",
    );
    let (outcome, session) = wait_built(&d, CANCELLED_CALL, "A-leg alone");
    assert_eq!(outcome, "json_only");
    let n = check_records(&d, CANCELLED_CALL, &session, "A-leg alone");
    let before = records(&d, CANCELLED_CALL);

    let r = post_fixture(&d, CANCELLED_B, Enc::Json);
    expect(&r, 200, "late", "B-leg after the call was built");
    assert_eq!(calls(&d).len(), 1, "{:?}", calls(&d));
    assert_eq!(
        count(&d, "call_records") as usize,
        n,
        "records after a late leg"
    );
    assert_eq!(
        records(&d, CANCELLED_CALL),
        before,
        "a late leg changed the call's records"
    );
    // Posting the late leg again is a plain duplicate.
    expect(
        &post_fixture(&d, CANCELLED_B, Enc::Form),
        200,
        "duplicate",
        "late B-leg again",
    );
    assert_eq!(count(&d, "call_records") as usize, n);
    assert_eq!(
        reconciliation_metric(&d, "late_leg"),
        1.0,
        "{}",
        d.metrics()
    );
    assert_eq!(legs_metric(&d, "post", "late"), 1.0, "{}", d.metrics());
    assert_eq!(
        reconciliation_metric(&d, "json_only"),
        1.0,
        "{}",
        d.metrics()
    );
    assert_eq!(metric(&d, "gridedge_cdr_calls_pending", &[]), 0.0);
}

// ------------------------------------------------------------------------------------------
// 4. Hostile posts
// ------------------------------------------------------------------------------------------

/// A fixture with `edit` applied to its JSON.
fn edited(f: Fixture, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
    let mut v = f.json();
    edit(v.as_object_mut().expect("fixture is an object"));
    serde_json::to_vec(&v).unwrap()
}

fn vars(doc: &mut serde_json::Map<String, Value>) -> &mut serde_json::Map<String, Value> {
    doc.get_mut("variables")
        .and_then(Value::as_object_mut)
        .expect("fixture has variables")
}

/// One hostile post: its name, Content-Type and body, and the words its 400's detail may use.
type HostilePost = (
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    &'static [&'static str],
);

#[test]
fn hostile_posts_are_refused_precisely_and_store_nothing() {
    let mut d = Daemon::start("");
    let json = Some("application/json");
    let form = Some("application/x-www-form-urlencoded");
    let b64 = Some("application/x-www-form-base64-encoded");
    let whole = ANSWERED_2018.bytes();

    let deep_json = {
        let mut s = String::from("{\"variables\":{\"uuid\":\"d1\",\"deep\":");
        s.push_str(&"[".repeat(10_000));
        s.push_str(&"]".repeat(10_000));
        s.push_str("}}");
        s.into_bytes()
    };
    let deep_xml = {
        let mut s = String::from("<?xml version=\"1.0\"?><cdr><variables/>");
        s.push_str(&"<a>".repeat(10_000));
        s.push_str(&"</a>".repeat(10_000));
        s.push_str("</cdr>");
        format!("cdr={}", pct(&s)).into_bytes()
    };
    let bad: Vec<HostilePost> = vec![
        (
            "invalid JSON",
            json,
            b"{\"variables\": {\"uuid\": }".to_vec(),
            &["json"],
        ),
        (
            "truncated JSON",
            json,
            whole[..whole.len() / 2].to_vec(),
            &["json"],
        ),
        (
            "JSON array",
            json,
            format!("[{}]", String::from_utf8_lossy(&whole)).into_bytes(),
            &["document", "object"],
        ),
        (
            "variables is a string",
            json,
            edited(ANSWERED_2018, |doc| {
                doc.insert("variables".into(), Value::from("uuid=x"));
            }),
            &["variables"],
        ),
        (
            "a variable holding an object",
            json,
            edited(ANSWERED_2018, |doc| {
                vars(doc).insert("sip_h_X-evil".into(), serde_json::json!({ "a": 1 }));
            }),
            &["variables", "string"],
        ),
        (
            "no uuid anywhere",
            json,
            edited(ANSWERED_2018, |doc| {
                vars(doc).remove("uuid");
                doc.remove("callflow");
            }),
            &["uuid"],
        ),
        (
            "no start time",
            json,
            edited(ANSWERED_2018, |doc| {
                vars(doc).remove("start_epoch");
                vars(doc).remove("start_uepoch");
                doc.remove("callflow");
            }),
            &["start"],
        ),
        (
            "uuid with path characters",
            json,
            edited(ANSWERED_2018, |doc| {
                vars(doc).insert("uuid".into(), Value::from("../../x"));
            }),
            &["uuid"],
        ),
        ("empty body", json, Vec::new(), &["empty"]),
        (
            "form body without cdr=",
            form,
            b"uuid=abc&x=1".to_vec(),
            &["cdr="],
        ),
        (
            "invalid base64",
            b64,
            b"cdr=!!!this is not base64***".to_vec(),
            &["base64"],
        ),
        (
            "invalid XML",
            form,
            format!(
                "cdr={}",
                pct("<?xml version=\"1.0\"?><cdr><variables><uuid>x</variables></cdr>")
            )
            .into_bytes(),
            &["xml"],
        ),
        (
            "JSON nested 10 000 deep",
            json,
            deep_json,
            &["json", "depth", "nest"],
        ),
        (
            "XML nested 10 000 deep",
            form,
            deep_xml,
            &["xml", "depth", "nest"],
        ),
    ];

    let mut c = Checks::new();
    let mut stored = 0i64;
    for (name, ct, body, words) in &bad {
        c.run(name, || {
            let r = post_raw(&d, "hostile", *ct, None, body);
            expect_refused(&r, 400, words, name);
            assert_eq!(
                count(&d, "cdr_legs"),
                stored,
                "{name}: something was stored"
            );
        });
    }

    // 10 MB with a Content-Length: refused from the header, and the daemon carries on.
    c.run("10 MB with Content-Length", || {
        let body = vec![b'{'; 10 * 1024 * 1024];
        let r = post_raw(&d, "big", json, None, &body);
        expect_refused(&r, 413, &["exceeds", "bytes"], "10 MB with Content-Length");
        assert_eq!(count(&d, "cdr_legs"), stored);
    });
    d.assert_alive("a 10 MB CDR post");
    c.run("a valid post after the 10 MB one", || {
        let r = post_fixture(&d, ANSWERED_2018, Enc::Json);
        expect(&r, 200, "stored", "valid post after the 10 MB one");
    });
    stored = count(&d, "cdr_legs");
    assert_eq!(
        stored, 1,
        "the valid post after the 10 MB one was not stored"
    );

    c.run("10 MB chunked", || {
        let r = post_chunked(d.listeners.http, 10 * 1024 * 1024)
            .unwrap_or_else(|e| panic!("chunked POST: {e}"));
        expect_refused(&r, 413, &["exceeds", "bytes"], "10 MB chunked");
        assert_eq!(count(&d, "cdr_legs"), stored);
    });
    c.run("GET", || {
        let r = http_request(d.listeners.http, "GET", CDR_PATH, &[], &[])
            .unwrap_or_else(|e| panic!("GET: {e}"));
        expect_refused(&r, 405, &["post"], "GET");
    });

    d.assert_alive("every hostile CDR post");
    c.run("nothing stored, nothing built", || {
        assert_eq!(count(&d, "cdr_legs"), stored, "cdr_legs");
        assert_eq!(leg_rows(&d, ANSWERED_2018).len(), 1, "the valid leg's row");
        assert_eq!(count(&d, "cdr_calls"), 0, "cdr_calls");
        assert_eq!(count(&d, "call_records"), 0, "call_records");
    });
    c.run("metrics", || {
        assert_eq!(
            legs_metric(&d, "post", "refused"),
            bad.len() as f64,
            "every 400 counts as a refused leg\n{}",
            d.metrics()
        );
        assert_eq!(legs_metric(&d, "post", "stored"), 1.0);
    });
    c.finish(&d);
}

// ------------------------------------------------------------------------------------------
// 5. Credentials
// ------------------------------------------------------------------------------------------

#[test]
fn credentials_are_required_when_configured() {
    let d = Daemon::start("[cdr]\ncredentials = \"fs:secret\"\n");
    let (ct, body) = Enc::Json.wire(&ANSWERED_2018.bytes());

    let r = post_raw(&d, ANSWERED_2018.uuid, Some(ct), None, &body);
    expect(&r, 401, "refused", "no Authorization");
    let challenge = r.header("www-authenticate").unwrap_or("");
    assert!(
        challenge.to_ascii_lowercase().starts_with("basic "),
        "401 without a Basic challenge: WWW-Authenticate {challenge:?}"
    );
    for (what, auth) in [
        ("wrong password", basic("fs:wrong")),
        ("wrong user", basic("sf:secret")),
        ("a prefix of the secret", basic("fs:secre")),
        ("not Basic", "Bearer fs:secret".to_string()),
        ("garbage base64", "Basic %%%".to_string()),
    ] {
        let r = post_raw(&d, ANSWERED_2018.uuid, Some(ct), Some(&auth), &body);
        expect(&r, 401, "refused", what);
        assert!(
            r.header("www-authenticate").is_some(),
            "{what}: no challenge"
        );
    }
    assert_eq!(count(&d, "cdr_legs"), 0, "stored without credentials");

    let r = post_raw(
        &d,
        ANSWERED_2018.uuid,
        Some(ct),
        Some(&basic("fs:secret")),
        &body,
    );
    expect(&r, 200, "stored", "right credentials");
    assert_leg_stored(
        &d,
        ANSWERED_2018,
        &ANSWERED_2018.bytes(),
        "right credentials",
    );
}

// ------------------------------------------------------------------------------------------
// 6. The error-directory sweeper
// ------------------------------------------------------------------------------------------

/// An error directory and a staging directory beside it, so files appear in the error
/// directory whole (by rename), never half-written, unless a test means them to be torn.
struct ErrorDir {
    _root: tempfile::TempDir,
    dir: PathBuf,
    staging: PathBuf,
}

impl ErrorDir {
    fn new() -> ErrorDir {
        let root = tempfile::Builder::new()
            .prefix("gridedge-e2e-cdr-err-")
            .tempdir()
            .expect("temp dir");
        let dir = root.path().join("json_cdr");
        let staging = root.path().join("staging");
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(&staging).unwrap();
        ErrorDir {
            _root: root,
            dir,
            staging,
        }
    }

    fn config(&self) -> String {
        format!(
            "[cdr]\nerror_dirs = [{}]\nsweep_interval_secs = 1\n",
            toml::Value::from(self.dir.display().to_string())
        )
    }

    /// Puts `content` at `<dir>/<name>` in one step.
    fn place(&self, name: &str, content: &[u8]) {
        let staged = self.staging.join(name);
        fs::write(&staged, content).unwrap();
        fs::rename(&staged, self.dir.join(name)).unwrap();
    }

    fn path(&self, sub: &str, name: &str) -> PathBuf {
        if sub.is_empty() {
            self.dir.join(name)
        } else {
            self.dir.join(sub).join(name)
        }
    }

    /// Waits until `<dir>/<sub>/<name>` exists and `<dir>/<name>` does not; returns its bytes.
    fn wait_moved(&self, d: &Daemon, sub: &str, name: &str) -> Vec<u8> {
        let target = self.path(sub, name);
        poll_until(SWEEP_WAIT, || {
            (!self.path("", name).exists())
                .then(|| fs::read(&target).ok())
                .flatten()
        })
        .unwrap_or_else(|| {
            d.fail(&format!(
                "{name} not moved to {sub}/ within {SWEEP_WAIT:?}; {}",
                self.listing()
            ))
        })
    }

    fn listing(&self) -> String {
        let mut out = Vec::new();
        for sub in ["", "ingested", "refused"] {
            let names: Vec<String> = fs::read_dir(self.path(sub, ""))
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            out.push(format!(
                "{}/: {names:?}",
                if sub.is_empty() { "." } else { sub }
            ));
        }
        out.join("; ")
    }
}

#[test]
fn sweeper_ingests_error_files_and_sets_torn_ones_aside() {
    let errors = ErrorDir::new();
    let notes = b"operator notes: not a CDR\n";
    fs::write(errors.path("", "notes.txt"), notes).unwrap();
    let d = Daemon::start(&errors.config());

    // One CDR reached us by post before FreeSWITCH also wrote it to the error directory.
    expect(
        &post_fixture(&d, ANSWERED_2018, Enc::Json),
        200,
        "stored",
        "post before the sweep",
    );
    // mod_json_cdr (encode=false) writes the JSON and a newline.
    let with_newline = |f: Fixture| {
        let mut b = f.bytes();
        b.push(b'\n');
        b
    };
    let good = [ANSWERED_2018, PREPAID_2015, ABSENT_XML_2019];
    for f in good {
        errors.place(&f.error_file_name(), &with_newline(f));
    }
    for f in good {
        let moved = errors.wait_moved(&d, "ingested", &f.error_file_name());
        assert_eq!(moved, with_newline(f), "{} changed when moved", f.file);
    }
    // Posted then swept: still one row; swept only: stored with its document.
    assert_leg_stored(
        &d,
        ANSWERED_2018,
        &ANSWERED_2018.bytes(),
        "posted, then swept",
    );
    assert_leg_stored(&d, PREPAID_2015, &with_newline(PREPAID_2015), "swept JSON");
    assert_leg_stored(
        &d,
        ABSENT_XML_2019,
        &with_newline(ABSENT_XML_2019),
        "swept XML",
    );
    assert_eq!(count(&d, "cdr_legs"), 3);
    assert_eq!(legs_metric(&d, "sweeper", "stored"), 2.0, "{}", d.metrics());
    assert_eq!(
        legs_metric(&d, "sweeper", "duplicate"),
        1.0,
        "{}",
        d.metrics()
    );

    // A torn file (FreeSWITCH writes without fsync): left alone on the first failed pass,
    // set aside in refused/ on the second, never deleted.
    let torn_name = URLENCODED_2013.error_file_name();
    let whole = URLENCODED_2013.bytes();
    let torn = &whole[..whole.len() / 2];
    errors.place(&torn_name, torn);
    poll_until(SWEEP_WAIT, || {
        (legs_metric(&d, "sweeper", "refused") >= 1.0).then_some(())
    })
    .unwrap_or_else(|| {
        d.fail(&format!(
            "the torn file was never tried; {}",
            errors.listing()
        ))
    });
    let still_there = errors.path("", &torn_name).exists();
    let passes = legs_metric(&d, "sweeper", "refused");
    if passes == 1.0 {
        assert!(
            still_there,
            "a torn file was moved after one failed pass; {}",
            errors.listing()
        );
    } else {
        eprintln!("the second sweep came before the first could be observed ({passes} passes)");
    }
    let set_aside = errors.wait_moved(&d, "refused", &torn_name);
    assert_eq!(set_aside, torn, "the torn file changed when set aside");
    assert!(!errors.path("ingested", &torn_name).exists());
    assert_eq!(
        legs_metric(&d, "sweeper", "refused"),
        2.0,
        "{}",
        d.metrics()
    );
    assert!(
        leg_rows(&d, URLENCODED_2013).is_empty(),
        "a torn file was stored"
    );
    assert_eq!(count(&d, "cdr_legs"), 3);

    // Not a CDR file name: never touched, however many passes went by.
    assert_eq!(
        fs::read(errors.path("", "notes.txt")).ok().as_deref(),
        Some(&notes[..]),
        "notes.txt was touched; {}",
        errors.listing()
    );
    assert!(!errors.path("ingested", "notes.txt").exists());
    assert!(!errors.path("refused", "notes.txt").exists());
    d.http_get("/healthz");
}

/// With `encode=true` (the default json_cdr.conf) or `encode=base64`, mod_json_cdr's
/// `backup_cdr` writes the *encoded* text (url-encoded or base64 JSON, without `cdr=`) and a
/// newline to the error directory. Those files are CDRs the switch will never send again.
#[test]
fn sweeper_reads_error_files_in_every_encoding_mod_json_cdr_writes() {
    let errors = ErrorDir::new();
    let d = Daemon::start(&errors.config());
    let files: [(Fixture, Enc); 3] = [
        (ANSWERED_2018, Enc::Json),
        (PREPAID_2015, Enc::Form),
        (ORIGINATE_2025, Enc::Base64),
    ];
    for (f, enc) in files {
        let (_, wire) = enc.wire(&f.bytes());
        let mut text = wire.strip_prefix(b"cdr=").unwrap_or(&wire).to_vec();
        text.push(b'\n');
        errors.place(&f.error_file_name(), &text);
    }
    let mut c = Checks::new();
    for (f, enc) in files {
        c.run(&format!("{} written with encode={enc:?}", f.file), || {
            let name = f.error_file_name();
            let ingested = poll_until(SWEEP_WAIT, || {
                errors
                    .path("ingested", &name)
                    .exists()
                    .then_some(true)
                    .or_else(|| errors.path("refused", &name).exists().then_some(false))
            });
            assert_eq!(
                ingested,
                Some(true),
                "{name}: want it in ingested/ (Some(true)); got {ingested:?} \
                 (Some(false) = refused/, None = neither); {}",
                errors.listing()
            );
            assert_eq!(leg_rows(&d, f).len(), 1, "{name}: not stored");
        });
    }
    c.finish(&d);
}

// ------------------------------------------------------------------------------------------
// libcurl's `Expect: 100-continue`
// ------------------------------------------------------------------------------------------

/// Sends a POST head with `Expect: 100-continue` and `Content-Length: len` (and no body), and
/// returns the stream and the first answer head the server sends.
fn head_with_expect(addr: SocketAddr, len: usize) -> io::Result<(TcpStream, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "POST {CDR_PATH}?uuid=x HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         User-Agent: freeswitch-json/1.0\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\nExpect: 100-continue\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    Ok((s, String::from_utf8_lossy(&head).into_owned()))
}

/// libcurl (mod_json_cdr's HTTP client) sends `Expect: 100-continue` on CDR-sized posts unless
/// `disable-100-continue` is set: the receiver must invite the body, and refuse an oversized
/// one without making the switch send it.
#[test]
fn expect_100_continue_is_answered_like_libcurl_expects() {
    let d = Daemon::start("");
    let body = ANSWERED_2018.bytes();
    let (mut s, interim) = head_with_expect(d.listeners.http, body.len())
        .unwrap_or_else(|e| d.fail(&format!("POST head with Expect: {e}")));
    assert!(
        interim.starts_with("HTTP/1.1 100"),
        "want 100 Continue before the body, got {interim:?}"
    );
    s.write_all(&body).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    let r = parse_http_response(&rest).unwrap_or_else(|e| d.fail(&format!("answer: {e}")));
    expect(&r, 200, "stored", "POST after 100 Continue");
    assert_leg_stored(&d, ANSWERED_2018, &body, "POST after 100 Continue");

    // Oversized: refused at once, without the body being asked for.
    let (mut s, first) = head_with_expect(d.listeners.http, 10 * 1024 * 1024)
        .unwrap_or_else(|e| d.fail(&format!("oversized POST head with Expect: {e}")));
    let mut rest = first.into_bytes();
    let _ = s.read_to_end(&mut rest);
    let r = parse_http_response(&rest).unwrap_or_else(|e| d.fail(&format!("answer: {e}")));
    expect_refused(&r, 413, &["exceeds"], "oversized POST with Expect");
    assert_eq!(count(&d, "cdr_legs"), 1);
}

// ------------------------------------------------------------------------------------------
// 7. A crash between the post and the build
// ------------------------------------------------------------------------------------------

#[test]
fn an_acknowledged_leg_survives_kill9_and_is_built_once() {
    let mut d = Daemon::start("[cdr]\nsettle_secs = 30\n");
    expect(
        &post_fixture(&d, CANCELLED_A, Enc::Json),
        200,
        "stored",
        "A-leg before the crash",
    );
    assert!(
        calls(&d).is_empty(),
        "built before settling: {:?}",
        calls(&d)
    );
    d.kill9();

    fs::write(
        &d.config_path,
        render_config(&d.state_dir, "[cdr]\nsettle_secs = 1\n"),
    )
    .unwrap();
    d.restart();
    let (outcome, session) = wait_built(&d, CANCELLED_CALL, "after kill -9");
    assert_eq!(outcome, "json_only");
    let n = check_records(&d, CANCELLED_CALL, &session, "after kill -9");
    assert_leg_stored(&d, CANCELLED_A, &CANCELLED_A.bytes(), "after kill -9");
    assert_eq!(calls(&d).len(), 1);
    assert_eq!(
        reconciliation_metric(&d, "json_only"),
        1.0,
        "{}",
        d.metrics()
    );

    // Built once: a further restart reopens nothing and builds nothing.
    d.restart();
    assert_eq!(
        metric(&d, "gridedge_cdr_calls_pending", &[]),
        0.0,
        "a built call was reopened\n{}",
        d.metrics()
    );
    assert_eq!(calls(&d).len(), 1);
    assert_eq!(count(&d, "call_records") as usize, n);
    // The post is a duplicate now, not a second call.
    expect(
        &post_fixture(&d, CANCELLED_A, Enc::Json),
        200,
        "duplicate",
        "A-leg again after the restarts",
    );
    assert_eq!(count(&d, "call_records") as usize, n);
}
