//! The FreeSWITCH adapter end to end: the real daemon with `[esl] enabled = true`, connected to
//! the scripted event socket of `support/esl_server.rs` (real framing, real `show channels`),
//! fed the events a call produces and, where the test needs it, the call's mod_json_cdr
//! documents over HTTP. Everything is observed through the daemon's own outputs: `/metrics`,
//! the STOMP event stream, the CDR receiver's answers and its SQLite file (read-only).
//!
//! The events and documents of a leg are both rendered from one [`Leg`], so the two sources
//! describe the same channel the way FreeSWITCH would (headers and variables as a 1.10
//! `CHANNEL_HANGUP_COMPLETE` carries them; the document shaped like
//! `tests/fixtures/freeswitch/cdr-outbound-cancelled-bleg-2025.json`, values percent-encoded).
//!
//! No fixed sleeps: every wait polls a condition with a deadline, or waits on the scripted
//! server's state.

mod common;
#[path = "support/esl_server.rs"]
mod esl_server;
#[path = "support/mgmt.rs"]
mod mgmt;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};

use common::{poll_until, register_ok, Daemon, UdpConn};
use esl_server::{EslServer, HOSTNAME};
use mgmt::{http_request, supervisor_login, Framing, Mgmt, Stomp, ACCOUNT, SECRET};

/// Upper bound for anything that should happen "soon".
const WAIT: Duration = Duration::from_secs(10);
const ESL_PASSWORD: &str = "e2e-ClueCon";
/// A configured extension (`common`'s base config seeds 1001..=1010) with an agent on it.
const AGENT_EXT: &str = "1001";
const AGENT_ID: &str = "A1001";
const CUSTOMER: &str = "13900000000";
const GATEWAY: &str = "carrier-1";
/// The core uuid of the scripted switch (a leg's identity is core uuid + uuid).
const CORE: &str = esl_server::CORE_UUID;

// ------------------------------------------------------------------------------------------
// The scripted switch
// ------------------------------------------------------------------------------------------

/// The scripted event socket on a runtime of its own, so the tests stay plain blocking
/// functions that can mix it with the blocking daemon harness and STOMP client.
struct Switch {
    // Dropped before the runtime its tasks run on.
    server: EslServer,
    rt: tokio::runtime::Runtime,
}

impl Switch {
    fn start() -> Switch {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let server = rt.block_on(EslServer::start(ESL_PASSWORD));
        Switch { server, rt }
    }

    fn wait_until(&self, within: Duration, cond: impl Fn(&esl_server::State) -> bool) -> bool {
        self.rt.block_on(self.server.wait_until(within, cond))
    }

    /// Sends an event (`text/event-json`) on the current connection.
    fn push(&self, d: &Daemon, headers: &[(String, String)]) {
        if !self.rt.block_on(self.server.push_event(headers)) {
            d.fail(&format!(
                "no event socket connection to push {:?} on",
                header(headers, "Event-Name")
            ));
        }
    }

    fn push_raw(&self, d: &Daemon, bytes: &[u8]) {
        if !self.rt.block_on(self.server.push_raw(bytes)) {
            d.fail("no event socket connection to push raw bytes on");
        }
    }

    fn seq(&self) -> u64 {
        self.server.next_sequence()
    }

    /// Waits until the daemon has authenticated, subscribed and taken its channel snapshot
    /// `connections` times in all.
    fn wait_connected(&self, d: &Daemon, connections: u64) {
        let subscribed = self.wait_until(WAIT, |s| {
            s.subscriptions >= connections
                && s.commands
                    .iter()
                    .filter(|c| c.as_str() == "api show channels as json")
                    .count() as u64
                    >= connections
        });
        if !subscribed {
            d.fail(&format!(
                "the daemon did not subscribe and resync ({connections} times) within {WAIT:?}; \
                 commands seen: {:?}",
                self.server.commands()
            ));
        }
        // The snapshot's answer reaches the consumer after the server wrote it.
        wait_metric(
            d,
            "the resync delivered",
            "gridedge_esl_resyncs_total",
            &["result=\"ok\""],
            |v| v >= connections as f64,
        );
        wait_metric(
            d,
            "gridedge_esl_connected = 1",
            "gridedge_esl_connected",
            &[],
            |v| v == 1.0,
        );
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| v.as_str())
}

// ------------------------------------------------------------------------------------------
// The daemon
// ------------------------------------------------------------------------------------------

struct Setup {
    acw_secs: u64,
    documents: &'static str,
    settle_secs: u64,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            acw_secs: 30,
            documents: "all_legs",
            settle_secs: 60,
        }
    }
}

impl Setup {
    /// Config overrides: the management API and stream (for signing the agent in and
    /// watching it), the agent on [`AGENT_EXT`], the event socket and the CDR policy.
    fn render(&self, sw: &Switch) -> String {
        format!(
            r#"
[directory]
ranges = ["8000-8099"]

[presence]
timezone = "Asia/Shanghai"
acw_secs = {acw}

[management]
allow = ["127.0.0.1/32"]
timestamp_window_secs = 300

[[management.accounts]]
account = "{ACCOUNT}"
secret = "{SECRET}"

[esl]
enabled = true
address = "{addr}"
password = "{ESL_PASSWORD}"
reconnect_min_ms = 20
reconnect_max_ms = 200

[cdr]
documents = "{documents}"
settle_secs = {settle}
# A call missing its first leg waits this long for it (4 h by default); test 5 relies on it.
orphan_secs = {settle}

[[agents]]
agent_id = "{AGENT_ID}"
name = "Agent One"
org_no = "3340101"
org_name = "City Office"
extension = "{AGENT_EXT}"
"#,
            acw = self.acw_secs,
            addr = sw.server.addr(),
            documents = self.documents,
            settle = self.settle_secs,
        )
    }

    fn start(self, sw: &Switch) -> Daemon {
        let d = Daemon::start(&self.render(sw));
        sw.wait_connected(&d, 1);
        d
    }
}

fn metric(d: &Daemon, name: &str, labels: &[&str]) -> f64 {
    d.metric(name, labels).unwrap_or(0.0)
}

fn wait_metric(d: &Daemon, what: &str, name: &str, labels: &[&str], ok: impl Fn(f64) -> bool) {
    let mut last = 0.0;
    if poll_until(WAIT, || {
        last = metric(d, name, labels);
        ok(last).then_some(())
    })
    .is_none()
    {
        d.fail(&format!(
            "{what}: {name}{labels:?} is {last} after {WAIT:?}\n{}",
            d.metrics()
        ));
    }
}

/// Waits until the one signed-in agent is in `state` (a `gridedge_agents` label).
fn wait_state(d: &Daemon, state: &str) {
    wait_metric(
        d,
        &format!("the agent is {state}"),
        "gridedge_agents",
        &[&format!("state=\"{state}\"")],
        |v| v == 1.0,
    );
}

fn transitions(d: &Daemon, from: &str, to: &str) -> f64 {
    metric(
        d,
        "gridedge_agent_transitions_total",
        &[&format!("from=\"{from}\""), &format!("to=\"{to}\"")],
    )
}

/// Registers the agent's phone and makes the agent available (signed in, idle). Returns the
/// phone's socket (keep it).
fn sign_in(d: &Daemon) -> UdpConn {
    let mut phone = d.udp_client();
    let contact = format!("<sip:{AGENT_EXT}@{}>", phone.local_addr());
    register_ok(
        &mut phone,
        AGENT_EXT,
        &contact,
        Some(3600),
        "REGISTER the agent's phone",
    );
    // The registrar tells presence asynchronously; setWorkStatus needs the phone registered.
    let api = Mgmt::new(d.listeners.http);
    let mut last = None;
    if poll_until(WAIT, || {
        let r = api.set_work_status(AGENT_EXT, "1");
        let ok = r.status() == 200 && r.code() == Some(1);
        last = Some(r);
        ok.then_some(())
    })
    .is_none()
    {
        d.fail(&format!("setWorkStatus {AGENT_EXT} 1: {last:?}"));
    }
    wait_state(d, "idle");
    phone
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// POSTs a document to the CDR receiver as mod_json_cdr does (`encode=false`): (status,
/// `result` of the JSON answer).
fn post_cdr(d: &Daemon, doc: &Value) -> (u16, String) {
    let body = doc.to_string();
    let r = http_request(
        d.listeners.http,
        "POST",
        "/freeswitch/cdr",
        &[("Content-Type".into(), "application/json".into())],
        body.as_bytes(),
    )
    .unwrap_or_else(|e| d.fail(&format!("POST /freeswitch/cdr: {e}")));
    let result = serde_json::from_str::<Value>(&r.body)
        .ok()
        .and_then(|v| v["result"].as_str().map(str::to_owned))
        .unwrap_or_else(|| d.fail(&format!("CDR receiver answer is not JSON: {r:?}")));
    (r.status, result)
}

// ------------------------------------------------------------------------------------------
// The CDR tables
// ------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Cdrs {
    /// (core uuid, uuid, source, call key)
    legs: Vec<(String, String, String, String)>,
    /// (call key, session id, outcome)
    calls: Vec<(String, String, String)>,
    /// (call key, segment, record)
    records: Vec<(String, String, Value)>,
}

impl Cdrs {
    fn read(db: &Path) -> Result<Cdrs, rusqlite::Error> {
        let conn = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(2))?;
        let mut out = Cdrs::default();
        let mut q = conn.prepare(
            "SELECT core_uuid, uuid, source, call_key FROM cdr_legs ORDER BY received_ms, uuid",
        )?;
        out.legs = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        let mut q = conn.prepare("SELECT call_key, session_id, outcome FROM cdr_calls")?;
        out.calls = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let mut q = conn
            .prepare("SELECT call_key, segment, record FROM call_records ORDER BY stream_number")?;
        out.records = q
            .query_map([], |r| {
                let text: String = r.get(2)?;
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    serde_json::from_str(&text).unwrap_or(Value::Null),
                ))
            })?
            .collect::<Result<_, _>>()?;
        Ok(out)
    }
}

fn cdrs(d: &Daemon) -> Cdrs {
    Cdrs::read(&d.state_dir.join("gridedge.db"))
        .unwrap_or_else(|e| d.fail(&format!("reading the CDR tables: {e}")))
}

/// Waits until the CDR tables satisfy `ok`; returns them.
fn wait_cdrs(d: &Daemon, what: &str, ok: impl Fn(&Cdrs) -> bool) -> Cdrs {
    let mut last = Cdrs::default();
    match poll_until(WAIT, || {
        last = cdrs(d);
        ok(&last).then(|| std::mem::take(&mut last))
    }) {
        Some(c) => c,
        None => d.fail(&format!("{what}: not within {WAIT:?}; tables: {last:#?}")),
    }
}

// ------------------------------------------------------------------------------------------
// Calls as FreeSWITCH describes them
// ------------------------------------------------------------------------------------------

/// Percent-encodes a variable value as mod_json_cdr does with `encode-values` (the default).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_./,".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// One channel of a scripted call, rendered both as ESL events and as its CDR document.
#[derive(Debug, Clone)]
struct Leg {
    uuid: String,
    /// FreeSWITCH's view: an outbound leg was placed by the switch (to a phone or a trunk).
    outbound: bool,
    /// The registered user on the phone side; None for a trunk leg.
    user: Option<String>,
    /// The gateway of a trunk leg.
    gateway: Option<String>,
    cid_name: String,
    cid_number: String,
    destination: String,
    /// The leg that originated this one (a B-leg's A-leg).
    originator: Option<String>,
    /// The leg this one is bridged to.
    bridged_to: Option<String>,
    /// The call's first leg.
    call_uuid: String,
    session_id: u32,
    created_us: u64,
    answered_us: Option<u64>,
    bridged_us: Option<u64>,
    ended_us: Option<u64>,
    /// `sip_hangup_disposition`: `recv_bye` when this leg's far end hung up.
    disposition: String,
}

fn new_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

impl Leg {
    /// A customer calling in through a gateway (the A-leg).
    fn customer_in(created_us: u64) -> Leg {
        let uuid = new_uuid();
        Leg {
            call_uuid: uuid.clone(),
            uuid,
            outbound: false,
            user: None,
            gateway: Some(GATEWAY.into()),
            cid_name: CUSTOMER.into(),
            cid_number: CUSTOMER.into(),
            destination: "95598".into(),
            originator: None,
            bridged_to: None,
            session_id: 41,
            created_us,
            answered_us: None,
            bridged_us: None,
            ended_us: None,
            disposition: "send_bye".into(),
        }
    }

    /// The switch calling the agent's phone for `a` (the B-leg), bridged to it.
    fn to_agent(a: &mut Leg, created_us: u64) -> Leg {
        let b = Leg {
            uuid: new_uuid(),
            outbound: true,
            user: Some(AGENT_EXT.into()),
            gateway: None,
            cid_name: a.cid_name.clone(),
            cid_number: a.cid_number.clone(),
            destination: AGENT_EXT.into(),
            originator: Some(a.uuid.clone()),
            bridged_to: Some(a.uuid.clone()),
            call_uuid: a.uuid.clone(),
            session_id: a.session_id + 1,
            created_us,
            answered_us: None,
            bridged_us: None,
            ended_us: None,
            disposition: "recv_bye".into(),
        };
        a.bridged_to = Some(b.uuid.clone());
        b
    }

    /// A call the switch originates through a gateway on its own (`bgapi originate ...
    /// &playback(...)`): one leg.
    fn originated(created_us: u64) -> Leg {
        let uuid = new_uuid();
        Leg {
            call_uuid: uuid.clone(),
            uuid,
            outbound: true,
            user: None,
            gateway: Some(GATEWAY.into()),
            cid_name: "Outbound Call".into(),
            cid_number: "9111110001".into(),
            destination: "13900000001".into(),
            originator: None,
            bridged_to: None,
            session_id: 7,
            created_us,
            answered_us: None,
            bridged_us: None,
            ended_us: None,
            disposition: "send_bye".into(),
        }
    }

    fn direction(&self) -> &'static str {
        if self.outbound {
            "outbound"
        } else {
            "inbound"
        }
    }

    fn network_addr(&self) -> &'static str {
        if self.gateway.is_some() {
            "203.0.113.7"
        } else {
            "10.0.0.21"
        }
    }

    fn channel_name(&self) -> String {
        match (&self.gateway, &self.user, self.outbound) {
            (Some(gw), _, true) => format!("sofia/gateway/{gw}/{}", self.destination),
            (Some(_), _, false) => format!("sofia/external/{}@203.0.113.7", self.cid_number),
            (None, Some(u), _) => format!("sofia/internal/{u}@10.0.0.21:5060"),
            (None, None, _) => format!("sofia/internal/{}", self.destination),
        }
    }

    /// The channel variables at hang-up (a subset of the hundred-odd FreeSWITCH sets, holding
    /// every one gridedge reads), values as they are (not encoded).
    fn variables(&self) -> Vec<(String, String)> {
        let mut v = pairs(&[
            ("direction", self.direction()),
            ("uuid", &self.uuid),
            ("session_id", &self.session_id.to_string()),
            ("call_uuid", &self.call_uuid),
            ("channel_name", &self.channel_name()),
            (
                "sip_call_id",
                &format!("{}@{}", &self.uuid[..8], self.network_addr()),
            ),
            ("sip_network_ip", self.network_addr()),
            ("sip_network_port", "5060"),
            (
                "sip_profile_name",
                if self.gateway.is_some() {
                    "external"
                } else {
                    "internal"
                },
            ),
            ("effective_caller_id_number", &self.cid_number),
            ("effective_caller_id_name", &self.cid_name),
        ]);
        if let Some(gw) = &self.gateway {
            v.extend(pairs(&[("sip_gateway_name", gw)]));
        }
        match (&self.user, self.outbound) {
            (Some(u), true) => v.extend(pairs(&[
                ("dialed_user", u),
                ("dialed_domain", "10.0.0.5"),
                ("sip_to_user", u),
                ("presence_id", &format!("{u}@10.0.0.5")),
            ])),
            (Some(u), false) => v.extend(pairs(&[("user_name", u), ("sip_from_user", u)])),
            (None, true) => v.extend(pairs(&[("sip_to_user", &self.destination)])),
            (None, false) => v.extend(pairs(&[
                ("sip_from_user", &self.cid_number),
                ("sip_to_user", &self.destination),
            ])),
        }
        if let Some(o) = &self.originator {
            v.extend(pairs(&[
                ("originator", o),
                ("originating_leg_uuid", o),
                ("signal_bond", o),
            ]));
        }
        if let Some(b) = &self.bridged_to {
            if self.bridged_us.is_some() {
                v.extend(pairs(&[("last_bridge_to", b)]));
            }
        }
        if let Some(end) = self.ended_us {
            let epoch = |us: u64| (us / 1_000_000).to_string();
            let answered = self.answered_us.unwrap_or(0);
            let billsec = if answered > 0 {
                (end - answered) / 1_000_000
            } else {
                0
            };
            v.extend(pairs(&[
                ("hangup_cause", "NORMAL_CLEARING"),
                ("hangup_cause_q850", "16"),
                ("sip_hangup_disposition", &self.disposition),
                ("sip_term_status", "200"),
                ("proto_specific_hangup_cause", "sip:200"),
                ("start_epoch", &epoch(self.created_us)),
                ("start_uepoch", &self.created_us.to_string()),
                ("progress_uepoch", &self.created_us.to_string()),
                ("answer_epoch", &epoch(answered)),
                ("answer_uepoch", &answered.to_string()),
                ("bridge_uepoch", &self.bridged_us.unwrap_or(0).to_string()),
                ("end_epoch", &epoch(end)),
                ("end_uepoch", &end.to_string()),
                (
                    "duration",
                    &((end - self.created_us) / 1_000_000).to_string(),
                ),
                ("billsec", &billsec.to_string()),
            ]));
        }
        v
    }

    /// The profile times (µs, "0" = never) as both the event and the document carry them.
    fn times(&self) -> Vec<(&'static str, String)> {
        let t = |x: Option<u64>| x.unwrap_or(0).to_string();
        vec![
            ("created_time", self.created_us.to_string()),
            ("profile_created_time", self.created_us.to_string()),
            ("progress_time", self.created_us.to_string()),
            ("progress_media_time", "0".into()),
            ("answered_time", t(self.answered_us)),
            ("bridged_time", t(self.bridged_us)),
            ("last_hold_time", "0".into()),
            ("hold_accum_time", "0".into()),
            ("hangup_time", t(self.ended_us)),
            ("resurrect_time", "0".into()),
            ("transfer_time", "0".into()),
        ]
    }

    /// The event `name` for this leg at `at_us`, as FreeSWITCH 1.10 sends it in JSON.
    fn event(&self, name: &str, at_us: u64, seq: u64) -> Vec<(String, String)> {
        let (state, state_no, call_state, answer_state) = match name {
            "CHANNEL_CREATE" => ("CS_INIT", "2", "DOWN", "ringing"),
            "CHANNEL_HOLD" => ("CS_EXCHANGE_MEDIA", "6", "HELD", "answered"),
            "CHANNEL_HANGUP_COMPLETE" => ("CS_REPORTING", "11", "HANGUP", "hangup"),
            _ => ("CS_EXCHANGE_MEDIA", "6", "ACTIVE", "answered"),
        };
        let ts = jiff::Timestamp::from_microsecond(at_us as i64).expect("a valid timestamp");
        let mut h = pairs(&[
            ("Event-Name", name),
            ("Core-UUID", CORE),
            ("FreeSWITCH-Hostname", HOSTNAME),
            ("FreeSWITCH-Switchname", HOSTNAME),
            ("FreeSWITCH-IPv4", "10.0.0.5"),
            ("FreeSWITCH-IPv6", "::1"),
            (
                "Event-Date-Local",
                &ts.strftime("%Y-%m-%d %H:%M:%S").to_string(),
            ),
            (
                "Event-Date-GMT",
                &ts.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string(),
            ),
            ("Event-Date-Timestamp", &at_us.to_string()),
            ("Event-Calling-File", "switch_channel.c"),
            ("Event-Calling-Function", "switch_channel_event_set_data"),
            ("Event-Calling-Line-Number", "2800"),
            ("Event-Sequence", &seq.to_string()),
        ]);
        if name == "CHANNEL_HANGUP_COMPLETE" {
            h.extend(pairs(&[("Hangup-Cause", "NORMAL_CLEARING")]));
        }
        let channel = self.channel_name();
        h.extend(pairs(&[
            ("Channel-State", state),
            ("Channel-Call-State", call_state),
            ("Channel-State-Number", state_no),
            ("Channel-Name", &channel),
            ("Unique-ID", &self.uuid),
            ("Call-Direction", self.direction()),
            ("Presence-Call-Direction", self.direction()),
            (
                "Channel-HIT-Dialplan",
                if self.outbound { "false" } else { "true" },
            ),
            ("Channel-Call-UUID", &self.call_uuid),
            ("Answer-State", answer_state),
            ("Caller-Direction", self.direction()),
            ("Caller-Logical-Direction", self.direction()),
            (
                "Caller-Username",
                self.user.as_deref().unwrap_or(&self.cid_number),
            ),
            ("Caller-Dialplan", "XML"),
            ("Caller-Caller-ID-Name", &self.cid_name),
            ("Caller-Caller-ID-Number", &self.cid_number),
            ("Caller-Orig-Caller-ID-Name", &self.cid_name),
            ("Caller-Orig-Caller-ID-Number", &self.cid_number),
            ("Caller-Network-Addr", self.network_addr()),
            ("Caller-ANI", &self.cid_number),
            ("Caller-Destination-Number", &self.destination),
            ("Caller-Unique-ID", &self.uuid),
            ("Caller-Source", "mod_sofia"),
            (
                "Caller-Context",
                if self.gateway.is_some() {
                    "public"
                } else {
                    "default"
                },
            ),
            ("Caller-Channel-Name", &channel),
            ("Caller-Profile-Index", "1"),
        ]));
        for (name, value) in self.times() {
            let title: String = name
                .trim_end_matches("_time")
                .split('_')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join("-");
            h.push((format!("Caller-Channel-{title}-Time"), value));
        }
        let other = match (&self.originator, &self.bridged_to) {
            (Some(o), _) => Some(("originator", o)),
            (None, Some(b)) if self.bridged_us.is_some() => Some(("originatee", b)),
            _ => None,
        };
        if let Some((kind, uuid)) = other {
            h.extend(pairs(&[
                ("Other-Type", kind),
                ("Other-Leg-Unique-ID", uuid),
            ]));
        }
        h.extend(
            self.variables()
                .into_iter()
                .map(|(k, v)| (format!("variable_{k}"), v)),
        );
        h
    }

    /// The leg's `CHANNEL_HANGUP_COMPLETE` (requires `ended_us`).
    fn hangup(&self, seq: u64) -> Vec<(String, String)> {
        let end = self.ended_us.expect("the leg has ended");
        self.event("CHANNEL_HANGUP_COMPLETE", end, seq)
    }

    /// The leg's mod_json_cdr document (requires `ended_us`).
    fn document(&self) -> Value {
        assert!(self.ended_us.is_some(), "a CDR is written at hang-up");
        let variables: serde_json::Map<String, Value> = self
            .variables()
            .into_iter()
            .map(|(k, v)| (k, Value::String(url_encode(&v))))
            .collect();
        let times: serde_json::Map<String, Value> = self
            .times()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v)))
            .collect();
        let mut profile = json!({
            "username": self.user.as_deref().unwrap_or(&self.cid_number),
            "dialplan": "XML",
            "caller_id_name": self.cid_name,
            "ani": self.cid_number,
            "aniii": "",
            "caller_id_number": self.cid_number,
            "network_addr": self.network_addr(),
            "rdnis": "",
            "destination_number": self.destination,
            "uuid": self.uuid,
            "source": "mod_sofia",
            "context": if self.gateway.is_some() { "public" } else { "default" },
            "chan_name": self.channel_name(),
        });
        if let Some(o) = &self.originator {
            profile["originator"] = json!({"originator_caller_profiles": [{
                "username": self.cid_number,
                "dialplan": "XML",
                "caller_id_name": self.cid_name,
                "ani": self.cid_number,
                "caller_id_number": self.cid_number,
                "network_addr": "203.0.113.7",
                "destination_number": self.destination,
                "uuid": o,
                "source": "mod_sofia",
                "context": "public",
                "chan_name": format!("sofia/external/{}@203.0.113.7", self.cid_number),
            }]});
        }
        json!({
            "core-uuid": CORE,
            "switchname": HOSTNAME,
            "channel_data": {
                "state": "CS_REPORTING",
                "direction": self.direction(),
                "state_number": "11",
                "flags": "0=1;1=1;3=1;38=1;39=1;41=1;54=1;76=1;113=1;114=1",
                "caps": "1=1;2=1;3=1;4=1;5=1;6=1;8=1;9=1;10=1",
            },
            "variables": variables,
            "callflow": [{
                "dialplan": "XML",
                "profile_index": "1",
                "caller_profile": profile,
                "times": times,
            }],
        })
    }
}

/// A CUSTOM `sofia::*` registration event as mod_sofia sends it for `user`.
fn sofia_event(subclass: &str, user: &str, seq: u64) -> Vec<(String, String)> {
    let at = now_us().to_string();
    pairs(&[
        ("Event-Subclass", subclass),
        ("Event-Name", "CUSTOM"),
        ("Core-UUID", CORE),
        ("FreeSWITCH-Hostname", HOSTNAME),
        ("FreeSWITCH-Switchname", HOSTNAME),
        ("FreeSWITCH-IPv4", "10.0.0.5"),
        ("Event-Date-Timestamp", &at),
        ("Event-Calling-File", "sofia_reg.c"),
        ("Event-Calling-Function", "sofia_reg_handle_register_token"),
        ("Event-Calling-Line-Number", "2052"),
        ("Event-Sequence", &seq.to_string()),
        ("profile-name", "internal"),
        ("from-user", user),
        ("from-host", "10.0.0.5"),
        ("presence-hosts", "10.0.0.5"),
        (
            "contact",
            &format!("\"{user}\" <sip:{user}@10.0.0.31:5060>"),
        ),
        ("call-id", &format!("{}@10.0.0.31", new_uuid())),
        ("rpid", "unknown"),
        ("status", "Registered(UDP)"),
        ("expires", "3600"),
        ("to-user", user),
        ("to-host", "10.0.0.5"),
        ("network-ip", "10.0.0.31"),
        ("network-port", "5060"),
        ("username", user),
        ("realm", "10.0.0.5"),
        ("user-agent", "Yealink SIP-T46U 108.86.0.20"),
    ])
}

fn registration_checks(d: &Daemon, result: &str) -> f64 {
    metric(
        d,
        "gridedge_esl_registration_checks_total",
        &[&format!("result=\"{result}\"")],
    )
}

// ------------------------------------------------------------------------------------------
// STOMP
// ------------------------------------------------------------------------------------------

/// A supervisor connection subscribed to the agent's status, call and bye topics.
fn supervisor(d: &Daemon) -> Stomp {
    let mut c = Stomp::connect(d.listeners.http, Framing::Raw, &supervisor_login())
        .unwrap_or_else(|e| d.fail(&format!("STOMP CONNECT as supervisor: {e}")));
    for (id, topic) in [("st", "status"), ("call", "call"), ("bye", "bye")] {
        if let Err(e) = c.subscribe(id, &format!("/topic/{topic}/{AGENT_EXT}")) {
            d.fail(&format!("SUBSCRIBE /topic/{topic}/{AGENT_EXT}: {e}"));
        }
    }
    c
}

/// The next message on `/topic/{topic}/{AGENT_EXT}`, in order.
fn next_on(d: &Daemon, c: &mut Stomp, topic: &str, what: &str) -> Value {
    let dest = format!("/topic/{topic}/{AGENT_EXT}");
    c.next_message_matching(&dest, WAIT)
        .and_then(|f| f.json())
        .unwrap_or_else(|| {
            d.fail(&format!(
                "{what}: no JSON message on {dest} within {WAIT:?}\n{}",
                c.transcript()
            ))
        })
}

/// The next `/topic/status` message must carry (workStatus, sessionStatus).
fn expect_status(d: &Daemon, c: &mut Stomp, work: i64, session: i64, what: &str) {
    let v = next_on(d, c, "status", what);
    assert_eq!(
        (v["workStatus"].as_i64(), v["sessionStatus"].as_i64()),
        (Some(work), Some(session)),
        "{what}: /topic/status/{AGENT_EXT} message {v}"
    );
}

// ------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------

/// 1. The daemon authenticates with the configured password, subscribes in JSON to every
///    event it consumes, takes a channel snapshot, and reports itself connected.
#[test]
fn connects_authenticates_and_subscribes() {
    let sw = Switch::start();
    let mut d = Setup::default().start(&sw);
    let commands = sw.server.commands();
    assert_eq!(
        commands.first().map(String::as_str),
        Some(format!("auth {ESL_PASSWORD}").as_str()),
        "the first command is auth with the configured password: {commands:?}"
    );
    let subscribe = commands
        .iter()
        .find(|c| c.starts_with("event "))
        .unwrap_or_else(|| d.fail(&format!("no `event` command: {commands:?}")));
    let words: Vec<&str> = subscribe.split_whitespace().collect();
    assert_eq!(words.get(1), Some(&"json"), "JSON events: {subscribe:?}");
    for name in [
        "CHANNEL_CREATE",
        "CHANNEL_ANSWER",
        "CHANNEL_BRIDGE",
        "CHANNEL_HOLD",
        "CHANNEL_UNHOLD",
        "CHANNEL_HANGUP_COMPLETE",
        "CUSTOM",
        "sofia::register",
        "sofia::unregister",
        "sofia::expire",
    ] {
        assert!(
            words.contains(&name),
            "{name} not subscribed: {subscribe:?}"
        );
    }
    let custom = words.iter().position(|w| *w == "CUSTOM").unwrap_or(0);
    assert!(
        words[custom + 1..].iter().all(|w| w.contains("::")),
        "only subclasses follow CUSTOM (FreeSWITCH reads every later name as one): {subscribe:?}"
    );
    assert_eq!(sw.server.connections(), 1);
    assert_eq!(sw.server.auth_attempts(), 1);
    assert_eq!(metric(&d, "gridedge_esl_connected", &[]), 1.0);
    assert_eq!(
        metric(&d, "gridedge_esl_connects_total", &["result=\"ok\""]),
        1.0
    );
    assert_eq!(
        metric(&d, "gridedge_esl_resyncs_total", &["result=\"ok\""]),
        1.0
    );
    d.assert_alive("connected to the event socket");
}

/// 2. A customer call to the signed-in agent, event by event: the agent rings, talks, is held,
///    talks again, and goes to after-call work, seen on the metrics and the STOMP stream.
#[test]
fn call_events_drive_the_agent_through_ringing_talking_hold_and_after_call_work() {
    let sw = Switch::start();
    let mut d = Setup::default().start(&sw);
    let _phone = sign_in(&d);
    let mut sup = supervisor(&d);

    let t0 = now_us();
    let mut a = Leg::customer_in(t0);
    sw.push(&d, &a.event("CHANNEL_CREATE", t0, sw.seq()));
    let mut b = Leg::to_agent(&mut a, now_us());
    sw.push(&d, &b.event("CHANNEL_CREATE", b.created_us, sw.seq()));
    wait_state(&d, "ringing");
    assert_eq!(transitions(&d, "idle", "ringing"), 1.0);
    let offered = next_on(&d, &mut sup, "call", "the call offered");
    assert_eq!(
        offered["callId"].as_str(),
        Some(b.uuid.as_str()),
        "{offered}"
    );
    assert_eq!(offered["telNo"].as_str(), Some(CUSTOMER), "{offered}");
    expect_status(&d, &mut sup, 0, 0, "ringing");

    let answered = now_us();
    b.answered_us = Some(answered);
    sw.push(&d, &b.event("CHANNEL_ANSWER", answered, sw.seq()));
    wait_state(&d, "talking");
    assert_eq!(transitions(&d, "ringing", "talking"), 1.0);
    expect_status(&d, &mut sup, 0, 10, "talking");
    // The switch answers the customer and bridges: nothing new for the agent.
    a.answered_us = Some(now_us());
    sw.push(&d, &a.event("CHANNEL_ANSWER", now_us(), sw.seq()));
    a.bridged_us = Some(now_us());
    b.bridged_us = a.bridged_us;
    let mut bridge = a.event("CHANNEL_BRIDGE", now_us(), sw.seq());
    bridge.extend(pairs(&[
        ("Bridge-A-Unique-ID", &a.uuid),
        ("Bridge-B-Unique-ID", &b.uuid),
    ]));
    sw.push(&d, &bridge);

    sw.push(&d, &b.event("CHANNEL_HOLD", now_us(), sw.seq()));
    wait_state(&d, "hold");
    assert_eq!(transitions(&d, "talking", "hold"), 1.0);
    expect_status(&d, &mut sup, 0, 10, "held");
    sw.push(&d, &b.event("CHANNEL_UNHOLD", now_us(), sw.seq()));
    wait_state(&d, "talking");
    assert_eq!(transitions(&d, "hold", "talking"), 1.0);
    expect_status(&d, &mut sup, 0, 10, "resumed");

    // The agent hangs up: the phone's leg ends first (recv_bye), then the customer's.
    b.ended_us = Some(now_us());
    sw.push(&d, &b.hangup(sw.seq()));
    a.ended_us = Some(now_us());
    sw.push(&d, &a.hangup(sw.seq()));
    wait_state(&d, "after_call_work");
    assert_eq!(transitions(&d, "talking", "after_call_work"), 1.0);
    let bye = next_on(&d, &mut sup, "bye", "the call ended");
    assert_eq!(bye["callId"].as_str(), Some(b.uuid.as_str()), "{bye}");
    expect_status(&d, &mut sup, 0, 0, "after-call work");

    // Nothing else moved: no second ring or answer from the A-leg's events or the bridge.
    assert_eq!(transitions(&d, "idle", "ringing"), 1.0);
    assert_eq!(transitions(&d, "ringing", "talking"), 1.0);
    if let Some(extra) =
        sup.next_message_matching(&format!("/topic/status/{AGENT_EXT}"), Duration::ZERO)
    {
        d.fail(&format!(
            "unexpected status message after after-call work: {extra:?}"
        ));
    }
    assert_eq!(
        metric(&d, "gridedge_esl_events_total", &["event=\"CHANNEL_HOLD\""]),
        1.0
    );
    d.assert_alive("a call driven by ESL events");
    sup.close();
}

/// 3. With no CDR documents configured, the two legs' hang-up events alone build the call at
///    once: one closed call (esl_only) and one agent record naming the agent.
#[test]
fn hangup_events_alone_build_the_cdr_when_no_documents_are_configured() {
    let sw = Switch::start();
    let d = Setup {
        documents: "none",
        settle_secs: 60,
        ..Setup::default()
    }
    .start(&sw);

    let t0 = now_us() - 30_000_000;
    let mut a = Leg::customer_in(t0);
    let mut b = Leg::to_agent(&mut a, t0 + 2_000_000);
    b.answered_us = Some(t0 + 6_000_000);
    a.answered_us = b.answered_us;
    a.bridged_us = b.answered_us;
    b.bridged_us = b.answered_us;
    b.ended_us = Some(t0 + 26_000_000);
    a.ended_us = Some(t0 + 26_020_000);
    let pushed = Instant::now();
    sw.push(&d, &b.hangup(sw.seq()));
    sw.push(&d, &a.hangup(sw.seq()));

    let t = wait_cdrs(&d, "the call closed from ESL alone", |t| {
        !t.calls.is_empty()
    });
    let built_in = pushed.elapsed();
    assert!(
        built_in < Duration::from_secs(5),
        "built {built_in:?} after the last hang-up: it must not wait for settle_secs (60)"
    );
    let key = format!("{CORE}/{}", a.uuid);
    assert_eq!(t.calls.len(), 1, "{t:#?}");
    assert_eq!(t.calls[0].0, key, "the call key is the A-leg's: {t:#?}");
    assert_eq!(t.calls[0].2, "esl_only", "{t:#?}");
    let mut legs: Vec<(&str, &str)> = t
        .legs
        .iter()
        .map(|(core, uuid, source, call)| {
            assert_eq!(
                (core.as_str(), call.as_str()),
                (CORE, key.as_str()),
                "{t:#?}"
            );
            (uuid.as_str(), source.as_str())
        })
        .collect();
    legs.sort_unstable();
    let mut want = vec![(a.uuid.as_str(), "esl"), (b.uuid.as_str(), "esl")];
    want.sort_unstable();
    assert_eq!(legs, want, "{t:#?}");

    let agent: Vec<&Value> = t
        .records
        .iter()
        .filter(|(call, segment, _)| call == &key && segment == "agent")
        .map(|(_, _, r)| r)
        .collect();
    assert_eq!(agent.len(), 1, "one agent segment: {t:#?}");
    let r = agent[0];
    assert_eq!(r["agent"]["extension"].as_str(), Some(AGENT_EXT), "{r}");
    assert_eq!(r["agent"]["agent_id"].as_str(), Some(AGENT_ID), "{r}");
    assert_eq!(r["leg_uuid"].as_str(), Some(b.uuid.as_str()), "{r}");
    assert_eq!(r["direction"].as_str(), Some("inbound"), "{r}");
    assert_eq!(r["user_number"].as_str(), Some(CUSTOMER), "{r}");
    assert_eq!(
        r["answer_ms"].as_u64(),
        b.answered_us.map(|us| us / 1000),
        "{r}"
    );
    assert_eq!(r["answer_secs"].as_u64(), Some(20), "{r}");
    assert_eq!(r["session_id"].as_str(), Some(t.calls[0].1.as_str()), "{r}");
    assert!(
        t.records.iter().all(|(call, _, _)| call == &key),
        "every record belongs to the call: {t:#?}"
    );
    assert_eq!(
        metric(
            &d,
            "gridedge_cdr_reconciliation_total",
            &["outcome=\"esl_only\""]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &d,
            "gridedge_cdr_legs_total",
            &["source=\"esl\"", "result=\"stored\""]
        ),
        2.0
    );
    assert_eq!(
        metric(&d, "gridedge_cdrs_built_total", &["segment=\"agent\""]),
        1.0
    );
}

/// 4. The hang-up event and the document of the same leg reconcile into one call (both),
///    built when the document arrives rather than at settle time; a re-post is acknowledged
///    and builds nothing.
#[test]
fn hangup_event_and_document_reconcile_into_one_call() {
    let sw = Switch::start();
    let d = Setup {
        documents: "all_legs",
        settle_secs: 30,
        ..Setup::default()
    }
    .start(&sw);

    let t0 = now_us() - 10_000_000;
    let mut leg = Leg::originated(t0);
    leg.answered_us = Some(t0 + 1_500_000);
    leg.ended_us = Some(t0 + 8_500_000);
    sw.push(&d, &leg.hangup(sw.seq()));
    wait_metric(
        &d,
        "the hang-up event stored",
        "gridedge_cdr_legs_total",
        &["source=\"esl\"", "result=\"stored\""],
        |v| v == 1.0,
    );
    let t = cdrs(&d);
    assert_eq!(t.legs.len(), 1, "{t:#?}");
    assert!(
        t.calls.is_empty(),
        "the call waits for its document (settle 30 s): {t:#?}"
    );

    let posted = Instant::now();
    assert_eq!(post_cdr(&d, &leg.document()), (200, "stored".into()));
    let t = wait_cdrs(&d, "the call closed once its document came", |t| {
        !t.calls.is_empty()
    });
    assert!(
        posted.elapsed() < Duration::from_secs(5),
        "closed {:?} after the document: it must not wait for settle_secs",
        posted.elapsed()
    );
    let key = format!("{CORE}/{}", leg.uuid);
    assert_eq!(t.calls.len(), 1, "{t:#?}");
    assert_eq!(
        (t.calls[0].0.as_str(), t.calls[0].2.as_str()),
        (key.as_str(), "both")
    );
    let mut sources: Vec<&str> = t.legs.iter().map(|l| l.2.as_str()).collect();
    sources.sort_unstable();
    assert_eq!(sources, ["document", "esl"], "{t:#?}");
    assert!(!t.records.is_empty(), "the call has records: {t:#?}");
    assert!(t.records.iter().all(|(call, _, _)| call == &key), "{t:#?}");
    let records = t.records.len();

    // FreeSWITCH retries a post whose answer it missed; the event may be replayed too.
    let (status, result) = post_cdr(&d, &leg.document());
    assert_eq!(status, 200, "a re-post is acknowledged");
    assert!(
        result == "duplicate" || result == "late",
        "a re-post is a duplicate or late, got {result:?}"
    );
    sw.push(&d, &leg.hangup(sw.seq()));
    wait_metric(
        &d,
        "the replayed event handled",
        "gridedge_cdr_legs_total",
        &["source=\"esl\"", "result=\"duplicate\""],
        |v| v == 1.0,
    );
    let t = cdrs(&d);
    assert_eq!(t.calls.len(), 1, "{t:#?}");
    assert_eq!(t.records.len(), records, "no new records: {t:#?}");
    assert_eq!(t.legs.len(), 2, "{t:#?}");
    assert_eq!(
        metric(
            &d,
            "gridedge_cdr_reconciliation_total",
            &["outcome=\"both\""]
        ),
        1.0
    );
    assert_eq!(
        metric(&d, "gridedge_cdr_reconciliation_total", &[]),
        1.0,
        "{}",
        d.metrics()
    );
}

/// 5. The event socket dies in the middle of a call and the call ends during the outage: the
///    reconnect's snapshot no longer lists it, so the agent leaves talking; the leg's document
///    still builds the call (json_only, once the orphan timeout, here the settle time, has
///    passed without the A-leg).
#[test]
fn a_call_that_ends_while_the_event_socket_is_down_is_reconciled() {
    let sw = Switch::start();
    let d = Setup {
        documents: "all_legs",
        settle_secs: 1,
        ..Setup::default()
    }
    .start(&sw);
    let _phone = sign_in(&d);

    let t0 = now_us();
    let mut a = Leg::customer_in(t0);
    let mut b = Leg::to_agent(&mut a, t0 + 1_000);
    sw.push(&d, &b.event("CHANNEL_CREATE", b.created_us, sw.seq()));
    wait_state(&d, "ringing");
    b.answered_us = Some(now_us());
    sw.push(&d, &b.event("CHANNEL_ANSWER", now_us(), sw.seq()));
    wait_state(&d, "talking");
    assert!(
        sw.server.state(|s| s.channels.contains_key(&b.uuid)),
        "the switch lists the live call"
    );

    // The call ends while the daemon is cut off: the switch forgets the channel, and the
    // connection is reset (no disconnect notice) before any hang-up event could be sent.
    b.ended_us = Some(now_us());
    sw.server.update(|s| s.channels.remove(&b.uuid));
    assert!(sw.server.kill(), "a connection to kill");
    sw.wait_connected(&d, 2);
    wait_state(&d, "after_call_work");
    assert_eq!(transitions(&d, "talking", "after_call_work"), 1.0);
    assert_eq!(metric(&d, "gridedge_agents", &["state=\"talking\""]), 0.0);
    assert_eq!(sw.server.connections(), 2);
    assert_eq!(
        metric(&d, "gridedge_esl_connects_total", &["result=\"ok\""]),
        2.0
    );

    // mod_json_cdr posts the agent leg's document; the customer's never comes.
    assert_eq!(post_cdr(&d, &b.document()), (200, "stored".into()));
    let t = wait_cdrs(&d, "the call built from its document after settling", |t| {
        !t.calls.is_empty()
    });
    let key = format!("{CORE}/{}", a.uuid);
    assert_eq!(t.calls.len(), 1, "{t:#?}");
    assert_eq!(
        (t.calls[0].0.as_str(), t.calls[0].2.as_str()),
        (key.as_str(), "json_only")
    );
    assert_eq!(t.legs.len(), 1, "{t:#?}");
    assert_eq!(t.legs[0].2, "document", "{t:#?}");
    let agent: Vec<&Value> = t
        .records
        .iter()
        .filter(|(_, s, _)| s == "agent")
        .map(|(_, _, r)| r)
        .collect();
    assert_eq!(agent.len(), 1, "{t:#?}");
    assert_eq!(agent[0]["agent"]["agent_id"].as_str(), Some(AGENT_ID));
    assert_eq!(
        metric(
            &d,
            "gridedge_cdr_reconciliation_total",
            &["outcome=\"json_only\""]
        ),
        1.0
    );
}

/// 6. mod_sofia's registration events are compared with the registrar's own view.
#[test]
fn sofia_registration_events_are_cross_checked_with_the_registrar() {
    let sw = Switch::start();
    let mut d = Setup::default().start(&sw);
    // 1003 registered here; 1002 configured but not registered; 7777 unknown.
    let mut phone = d.udp_client();
    let contact = format!("<sip:1003@{}>", phone.local_addr());
    register_ok(&mut phone, "1003", &contact, Some(3600), "REGISTER 1003");

    let check = |event: Vec<(String, String)>, result: &str, what: &str| {
        let before = registration_checks(&d, result);
        sw.push(&d, &event);
        wait_metric(
            &d,
            what,
            "gridedge_esl_registration_checks_total",
            &[&format!("result=\"{result}\"")],
            |v| v == before + 1.0,
        );
    };
    check(
        sofia_event("sofia::register", "1002", sw.seq()),
        "disagree",
        "FreeSWITCH has 1002 registered, the registrar does not",
    );
    check(
        sofia_event("sofia::register", "7777", sw.seq()),
        "unknown_user",
        "7777 is no extension",
    );
    check(
        sofia_event("sofia::register", "1003", sw.seq()),
        "agree",
        "both have 1003 registered",
    );
    check(
        sofia_event("sofia::unregister", "1002", sw.seq()),
        "agree",
        "neither has 1002",
    );
    check(
        sofia_event("sofia::expire", "1003", sw.seq()),
        "disagree",
        "FreeSWITCH expired 1003, the registrar still has it",
    );
    assert_eq!(registration_checks(&d, "disagree"), 2.0);
    assert_eq!(registration_checks(&d, "unknown_user"), 1.0);
    assert_eq!(registration_checks(&d, "agree"), 2.0);
    assert_eq!(
        metric(
            &d,
            "gridedge_esl_events_total",
            &["event=\"sofia::register\""]
        ),
        3.0
    );
    // Only observed, never acted upon: 1002 did not become registered.
    let mut probe = d.udp_client();
    let bindings = common::query_bindings(&mut probe, "1002", "query 1002");
    assert!(bindings.contacts().is_empty(), "{}", bindings.raw);
    d.assert_alive("sofia registration events");
}

/// 7. Garbage on the event socket costs nothing: undecodable JSON, an event without a
///    Unique-ID, a 10k-character user. The daemon stays up, stores nothing, keeps the
///    connection, and the next call works.
#[test]
fn hostile_event_socket_input_is_ignored_without_harm() {
    let sw = Switch::start();
    let mut d = Setup {
        documents: "none",
        ..Setup::default()
    }
    .start(&sw);
    let _phone = sign_in(&d);

    let frame = |body: &[u8]| {
        let mut f = format!(
            "Content-Length: {}\nContent-Type: text/event-json\n\n",
            body.len()
        )
        .into_bytes();
        f.extend_from_slice(body);
        f
    };
    sw.push_raw(
        &d,
        &frame(b"{\"Event-Name\": \"CHANNEL_CREATE\", \"Unique-ID\": "),
    );
    sw.push_raw(&d, &frame(b"[\"CHANNEL_CREATE\"]"));
    sw.push_raw(
        &d,
        &frame(b"{\"Event-Name\":\"CHANNEL_CREATE\",\"Unique-ID\":42,\"variable_dialed_user\":\"1001\"}"),
    );
    sw.push_raw(
        &d,
        &frame(b"{\"Event-Name\":\"CHANNEL_CREATE\",\"Unique-ID\":\"\xff\xfe\"}"),
    );

    let t0 = now_us();
    let mut a = Leg::customer_in(t0);
    let mut b = Leg::to_agent(&mut a, t0);
    let without_id = |ev: Vec<(String, String)>| -> Vec<(String, String)> {
        ev.into_iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "Unique-ID" | "Caller-Unique-ID" | "variable_uuid"
                )
            })
            .collect()
    };
    sw.push(&d, &without_id(b.event("CHANNEL_CREATE", t0, sw.seq())));
    sw.push(&d, &without_id(b.event("CHANNEL_ANSWER", t0, sw.seq())));
    b.answered_us = Some(t0);
    b.ended_us = Some(now_us());
    sw.push(&d, &without_id(b.hangup(sw.seq())));
    let mut long = Leg::to_agent(&mut a, t0);
    long.user = Some("9".repeat(10_000));
    long.destination = long.user.clone().unwrap_or_default();
    sw.push(&d, &long.event("CHANNEL_CREATE", t0, sw.seq()));
    sw.push(&d, &long.event("CHANNEL_ANSWER", t0, sw.seq()));

    // Events are consumed in order: once this one is counted, everything above was handled.
    sw.push(&d, &sofia_event("sofia::register", "7777", sw.seq()));
    wait_metric(
        &d,
        "the marker event after the hostile input",
        "gridedge_esl_registration_checks_total",
        &["result=\"unknown_user\""],
        |v| v == 1.0,
    );
    d.assert_alive("hostile event socket input");
    assert_eq!(metric(&d, "gridedge_agents", &["state=\"idle\""]), 1.0);
    for state in ["ringing", "talking"] {
        assert_eq!(
            metric(&d, "gridedge_agents", &[&format!("state=\"{state}\"")]),
            0.0,
            "no presence change from hostile events"
        );
    }
    let t = cdrs(&d);
    assert!(
        t.legs.is_empty() && t.calls.is_empty() && t.records.is_empty(),
        "nothing stored: {t:#?}"
    );
    assert_eq!(
        metric(
            &d,
            "gridedge_cdr_legs_total",
            &["source=\"esl\"", "result=\"refused\""]
        ),
        1.0,
        "the hang-up without any uuid is refused"
    );
    assert_eq!(sw.server.connections(), 1, "the connection was kept");
    assert_eq!(metric(&d, "gridedge_esl_connected", &[]), 1.0);

    // A real call afterwards works end to end.
    let t1 = now_us();
    let mut a = Leg::customer_in(t1);
    let mut b = Leg::to_agent(&mut a, t1);
    sw.push(&d, &b.event("CHANNEL_CREATE", t1, sw.seq()));
    wait_state(&d, "ringing");
    b.answered_us = Some(now_us());
    sw.push(&d, &b.event("CHANNEL_ANSWER", now_us(), sw.seq()));
    wait_state(&d, "talking");
    a.answered_us = b.answered_us;
    a.bridged_us = b.answered_us;
    b.bridged_us = b.answered_us;
    b.ended_us = Some(now_us());
    a.ended_us = b.ended_us;
    sw.push(&d, &b.hangup(sw.seq()));
    sw.push(&d, &a.hangup(sw.seq()));
    wait_state(&d, "after_call_work");
    let t = wait_cdrs(&d, "the call after the hostile input built", |t| {
        !t.calls.is_empty()
    });
    assert_eq!(t.calls.len(), 1, "{t:#?}");
    assert_eq!(t.legs.len(), 2, "{t:#?}");
    d.assert_alive("a call after hostile input");
}
