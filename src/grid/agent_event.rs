//! 呼叫平台坐席事件（坐席考勤）推送: an [`AgentEvent`] in the grid contract's exact field
//! names (seed 000 L454-495; digest §A.2.2, §C.2).
//!
//! Sans-IO: the caller passes the event, the agent's identity (looked up in the directory), a
//! sequence number and the compiled [`AgentEventFormat`]; nothing here reads a clock.
//!
//! # Payload
//!
//! Keys in contract order (L472-487), every value a JSON string (the contract types every field
//! `String`):
//!
//! `steamNumber`, `ym`, `ssid`, `agentId`, `agentName`, `callId`, `event`, `esate`,
//! `estateName`, `etime`, `lastState`, `lastTime`, `lastDuration`, `inOutDuration`, `ip`,
//! `mac`.
//!
//! `port` (L488, 备注 删除) is never sent.
//!
//! # Decisions on what the seed leaves open
//!
//! - **Key spellings.** `steamNumber` (L472) and `esate` (L479) look like typos of
//!   streamNumber/estate, and the 年月 row (L473) has no key name at all. All three are
//!   configurable ([`AgentEventConfig::stream_number_key`], `state_key`, `year_month_key`);
//!   the defaults are the seed's spellings and `ym`, the name the CDR push uses for its 年月
//!   field (L436).
//! - **`steamNumber`** (primary key, L472): `format!("{:013}{:020}", ms, sequence)`: the event
//!   time in Unix ms, zero-padded to 13 digits, then the caller's sequence zero-padded to 20
//!   digits (the width of `u64::MAX`). All digits, and time-first like the CDR's
//!   `streamnumber` rule (L375). Uniqueness rests on the sequence alone: the suffix has a fixed
//!   width, so two numbers with different sequences differ in the suffix whatever the prefix.
//!   The caller must therefore hand out a sequence that is unique across restarts (the durable
//!   outbox's row id is the natural one).
//! - **`ym`**: `yyyymm` of `etime` in the configured zone (as the CDR's `ym`, L436).
//! - **`ssid`** (L474, "constant within one login cycle"): the state machine's sign-in
//!   session id (`agents::state`), in decimal. A sign-out carries the session that ended.
//! - **`event`** (L478) lists only 0 签出 / 1 签入. Every event is sent with the agent's
//!   signed-in-ness *after* the event: "1" while signed in (every state change between sign-in
//!   and sign-out, and heartbeats), "0" for the sign-out. So a consumer that reads `event` as
//!   "is the agent signed in" is always right, and the sign-in/out boundaries are the events
//!   whose `inOutDuration` is non-empty.
//! - **`inOutDuration`** (L485: "only valid when event=0 or 1; event=0 is the sign-in duration,
//!   event=1 the sign-out duration"): on a sign-out (event 0), how long the agent was signed
//!   in; on a sign-in (event 1), how long it had been signed out. Empty on every other event
//!   (those are not sign-in/out boundaries). The sign-in time is read from the session id,
//!   which `AgentMachine` hands out as the sign-in instant in Unix ms (bumped by 1 ms only
//!   when two sign-ins fall in the same ms), so the duration is exact to a few ms. A
//!   signed-out period that began before a daemon restart is counted from the restart.
//! - **`esate`/`estateName`** (L479-480): the code set 1,302,3,13,16,0,15,307,-13,9,2,4 comes
//!   without meanings. The table is configurable ([`EstateTable`]); configured codes must be in
//!   the seed's set ([`ESTATE_CODES`]). Default mapping (a placeholder until 合众 sends the
//!   dictionary):
//!
//!   | internal state | code | name |
//!   |---|---|---|
//!   | signed out | 0 | 签出 |
//!   | not ready, no reason (the state sign-in lands in) | 1 | 签入 |
//!   | idle | 2 | 空闲 |
//!   | not ready (any other reason) | 3 | 示忙 |
//!   | after-call work | 4 | 话后整理 |
//!   | ringing (reserved) | 9 | 振铃 |
//!   | talking | 13 | 通话 |
//!   | hold | 15 | 保持 |
//!   | rest | 16 | 小休 |
//!
//!   0/1 mirror `event` 0/1; 2 "idle" and 4 "after-call work" match the grid's own `agentState`
//!   (L840). 302, 307 and -13 are left for per-reason overrides
//!   ([`EstateTable::not_ready_reasons`]).
//! - **`lastState`/`lastTime`/`lastDuration`** (L482-484): the state left, when it was
//!   entered, and how long it lasted in whole seconds (rounded half up, as the CDR builder
//!   rounds). In heartbeats `lastDuration` is "0" (L484).
//! - **Heartbeats** (implied by L484): [`heartbeat`] reports a signed-in agent's current state:
//!   `etime` = the heartbeat instant, `esate` = `lastState` = the current state,
//!   `lastTime` = when it was entered, `lastDuration` "0", `inOutDuration` empty, `event` "1".
//! - **`ip`** (L486): where the phone registered from; empty when unknown.
//! - **`mac`** (L487): a SIP registrar never sees a remote phone's MAC (it is not in any SIP
//!   header and is lost at the first router), so it comes from configuration per extension
//!   ([`AgentEventConfig::macs`]) and is empty otherwise.
//! - **Registration-only events** (the extension's registration changed, the state did not)
//!   are not attendance events and produce no push.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cdr::TimeFormat;
use crate::agents::presence::{AgentEvent, AgentEventKind, Seat};
use crate::agents::state::{AgentState, CallId, NotReadyReason};

/// The `esate` codes the contract allows (L479), in its order.
pub const ESTATE_CODES: [i16; 12] = [1, 302, 3, 13, 16, 0, 15, 307, -13, 9, 2, 4];

/// The fixed keys (the three configurable ones, stream number, year-month and state, are
/// not among them).
const FIXED_KEYS: [&str; 13] = [
    "ssid",
    "agentId",
    "agentName",
    "callId",
    "event",
    "estateName",
    "etime",
    "lastState",
    "lastTime",
    "lastDuration",
    "inOutDuration",
    "ip",
    "mac",
];

/// One `esate` code and its `estateName`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Estate {
    pub code: i16,
    pub name: String,
}

impl Estate {
    fn new(code: i16, name: &str) -> Self {
        Estate {
            code,
            name: name.to_owned(),
        }
    }
}

/// A per-reason override for not-ready states (`[[...states.not_ready_reasons]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonEstate {
    /// The internal not-ready reason (`agents::state::NotReadyReason`, e.g. 5 = extension
    /// offline).
    pub reason: u16,
    pub code: i16,
    pub name: String,
}

/// Internal state → `esate`/`estateName` (see the module docs for the defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EstateTable {
    pub signed_out: Estate,
    /// Not ready without a reason: the state sign-in lands in.
    pub signed_in: Estate,
    pub idle: Estate,
    /// Not ready with any reason not listed in `not_ready_reasons`.
    pub not_ready: Estate,
    pub after_call_work: Estate,
    pub ringing: Estate,
    pub talking: Estate,
    pub hold: Estate,
    pub rest: Estate,
    /// Overrides by not-ready reason; empty by default.
    pub not_ready_reasons: Vec<ReasonEstate>,
}

impl Default for EstateTable {
    fn default() -> Self {
        EstateTable {
            signed_out: Estate::new(0, "签出"),
            signed_in: Estate::new(1, "签入"),
            idle: Estate::new(2, "空闲"),
            not_ready: Estate::new(3, "示忙"),
            after_call_work: Estate::new(4, "话后整理"),
            ringing: Estate::new(9, "振铃"),
            talking: Estate::new(13, "通话"),
            hold: Estate::new(15, "保持"),
            rest: Estate::new(16, "小休"),
            not_ready_reasons: Vec::new(),
        }
    }
}

impl EstateTable {
    /// The code and name of a state.
    pub fn of(&self, state: &AgentState) -> (i16, &str) {
        let e = match state {
            AgentState::SignedOut => &self.signed_out,
            AgentState::NotReady { reason } => {
                if let Some(r) = self.not_ready_reasons.iter().find(|r| r.reason == reason.0) {
                    return (r.code, &r.name);
                }
                if *reason == NotReadyReason::NONE {
                    &self.signed_in
                } else {
                    &self.not_ready
                }
            }
            AgentState::Idle => &self.idle,
            AgentState::Reserved => &self.ringing,
            AgentState::Talking => &self.talking,
            AgentState::Hold => &self.hold,
            AgentState::AfterCallWork { .. } => &self.after_call_work,
            AgentState::Rest { .. } => &self.rest,
        };
        (e.code, &e.name)
    }

    fn validate(&self, prefix: &str) -> Result<(), String> {
        let entries = [
            ("signed_out", &self.signed_out),
            ("signed_in", &self.signed_in),
            ("idle", &self.idle),
            ("not_ready", &self.not_ready),
            ("after_call_work", &self.after_call_work),
            ("ringing", &self.ringing),
            ("talking", &self.talking),
            ("hold", &self.hold),
            ("rest", &self.rest),
        ];
        for (key, e) in entries {
            check_estate(&format!("{prefix}.{key}"), e.code, &e.name)?;
        }
        let mut seen = BTreeSet::new();
        for (i, r) in self.not_ready_reasons.iter().enumerate() {
            let key = format!("{prefix}.not_ready_reasons[{i}]");
            if !seen.insert(r.reason) {
                return Err(format!("{key}.reason: duplicate reason {}", r.reason));
            }
            check_estate(&key, r.code, &r.name)?;
        }
        Ok(())
    }
}

fn check_estate(key: &str, code: i16, name: &str) -> Result<(), String> {
    if !ESTATE_CODES.contains(&code) {
        return Err(format!(
            "{key}.code: {code} is not one of the contract's esate codes {ESTATE_CODES:?} (seed 000 L479)"
        ));
    }
    if name.trim().is_empty() {
        return Err(format!(
            "{key}.name: must not be empty (estateName is required, L480)"
        ));
    }
    Ok(())
}

/// `[grid.agent_event]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentEventConfig {
    /// Key of the primary key (seed spelling `steamNumber`, L472).
    pub stream_number_key: String,
    /// Key of the current state code (seed spelling `esate`, L479).
    pub state_key: String,
    /// Key of the 年月 field, which the seed leaves unnamed (L473).
    pub year_month_key: String,
    /// IANA zone of `etime`, `lastTime` and the year-month.
    pub timezone: String,
    /// Internal state → `esate`/`estateName`.
    pub states: EstateTable,
    /// Extension → MAC address (`aa:bb:cc:dd:ee:ff` or with `-`), for `mac`; a registrar
    /// cannot learn MACs itself.
    pub macs: BTreeMap<String, String>,
    /// How often the shell sends a [`heartbeat`] per signed-in agent, in seconds; 0 sends
    /// none. The seed implies heartbeats (L484) without a cadence; 60 s is the default until
    /// the grid team names one.
    pub heartbeat_secs: u64,
}

impl Default for AgentEventConfig {
    fn default() -> Self {
        AgentEventConfig {
            stream_number_key: "steamNumber".into(),
            state_key: "esate".into(),
            year_month_key: "ym".into(),
            timezone: "Asia/Shanghai".into(),
            states: EstateTable::default(),
            macs: BTreeMap::new(),
            heartbeat_secs: 60,
        }
    }
}

impl AgentEventConfig {
    /// Checks every key; the error names the bad key (relative to `[grid.agent_event]`).
    pub fn validate(&self) -> Result<(), String> {
        AgentEventFormat::new(self).map(|_| ())
    }
}

/// A validated [`AgentEventConfig`], ready to serialize with.
#[derive(Debug, Clone)]
pub struct AgentEventFormat {
    stream_number_key: String,
    state_key: String,
    year_month_key: String,
    time: TimeFormat,
    states: EstateTable,
    macs: BTreeMap<String, String>,
    heartbeat_secs: u64,
}

impl AgentEventFormat {
    pub fn new(cfg: &AgentEventConfig) -> Result<Self, String> {
        let aliases = [
            ("stream_number_key", &cfg.stream_number_key),
            ("state_key", &cfg.state_key),
            ("year_month_key", &cfg.year_month_key),
        ];
        let mut keys: BTreeSet<&str> = FIXED_KEYS.iter().copied().collect();
        keys.insert("port");
        for (name, value) in aliases {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
                return Err(format!(
                    "{name}: must be a non-empty key of printable ASCII without quotes"
                ));
            }
            if !keys.insert(value.as_str()) {
                return Err(format!(
                    "{name}: {value:?} collides with another key of the agent-event payload"
                ));
            }
        }
        let time =
            TimeFormat::new("%Y%m%d%H%M%S", &cfg.timezone).map_err(|e| format!("timezone: {e}"))?;
        cfg.states.validate("states")?;
        let mut macs = BTreeMap::new();
        for (ext, mac) in &cfg.macs {
            let parsed = parse_mac(mac)
                .ok_or_else(|| format!("macs.{ext}: {mac:?} is not a MAC address"))?;
            macs.insert(ext.clone(), parsed);
        }
        if cfg.heartbeat_secs > 86_400 {
            return Err("heartbeat_secs: must be at most 86400 (0 = off)".into());
        }
        Ok(AgentEventFormat {
            stream_number_key: cfg.stream_number_key.clone(),
            state_key: cfg.state_key.clone(),
            year_month_key: cfg.year_month_key.clone(),
            time,
            states: cfg.states.clone(),
            macs,
            heartbeat_secs: cfg.heartbeat_secs,
        })
    }

    /// The heartbeat cadence in seconds; 0 = no heartbeats.
    pub fn heartbeat_secs(&self) -> u64 {
        self.heartbeat_secs
    }

    /// Every key of the payload, in the order it is sent.
    pub fn keys(&self) -> [&str; 16] {
        [
            &self.stream_number_key,
            &self.year_month_key,
            "ssid",
            "agentId",
            "agentName",
            "callId",
            "event",
            &self.state_key,
            "estateName",
            "etime",
            "lastState",
            "lastTime",
            "lastDuration",
            "inOutDuration",
            "ip",
            "mac",
        ]
    }
}

impl Default for AgentEventFormat {
    fn default() -> Self {
        AgentEventFormat::new(&AgentEventConfig::default()).expect("the default config is valid")
    }
}

/// `aa:bb:cc:dd:ee:ff` / `AA-BB-...` → lower-case colon form.
fn parse_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(parts.join(":").to_ascii_lowercase())
}

/// Who the agent is, as the caller's directory knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentInfo<'a> {
    /// The grid's agent id (工号); when `None`, the event's own id and then the extension
    /// are used.
    pub agent_id: Option<&'a str>,
    pub agent_name: &'a str,
}

/// One agent-event push, ready for the outbox. Its idempotency key is the `steamNumber`,
/// which the grid stores as its primary key (L472), so a redelivery is a duplicate at the grid
/// too; its lane is the agent.
pub type AgentEventPush = super::push::GridPush;

/// The ordering lane of an agent's events: its agent id, or its extension when it has none.
pub fn lane_key(agent_id: Option<&str>, extension: &str) -> String {
    match agent_id {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => extension.to_owned(),
    }
}

/// The primary key: 13-digit ms + 20-digit sequence (see the module docs).
pub fn steam_number(at_ms: u64, sequence: u64) -> String {
    format!("{at_ms:013}{sequence:020}")
}

/// Whole seconds, rounded half up, without overflow.
fn secs(ms: u64) -> u64 {
    ms / 1000 + u64::from(ms % 1000 >= 500)
}

/// Everything one payload says, before rendering.
struct Fields<'a> {
    at_ms: u64,
    sequence: u64,
    session: Option<u64>,
    agent_id: String,
    agent_name: &'a str,
    call_id: Option<&'a CallId>,
    signed_in: bool,
    state: &'a AgentState,
    last_state: &'a AgentState,
    last_since_ms: u64,
    last_duration_ms: u64,
    in_out_ms: Option<u64>,
    ip: Option<IpAddr>,
    extension: &'a str,
}

fn render(f: Fields<'_>, fmt: &AgentEventFormat) -> AgentEventPush {
    let steam = steam_number(f.at_ms, f.sequence);
    let estate = fmt.states.of(f.state);
    let last = fmt.states.of(f.last_state);
    let values: [String; 16] = [
        steam.clone(),
        fmt.time.year_month(f.at_ms),
        f.session.map(|s| s.to_string()).unwrap_or_default(),
        f.agent_id.clone(),
        f.agent_name.to_owned(),
        f.call_id.map(|c| c.0.clone()).unwrap_or_default(),
        if f.signed_in { "1" } else { "0" }.to_owned(),
        estate.0.to_string(),
        estate.1.to_owned(),
        fmt.time.format_ms(f.at_ms),
        last.0.to_string(),
        fmt.time.format_ms(f.last_since_ms),
        secs(f.last_duration_ms).to_string(),
        f.in_out_ms
            .map(|ms| secs(ms).to_string())
            .unwrap_or_default(),
        f.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        fmt.macs.get(f.extension).cloned().unwrap_or_default(),
    ];
    let body = fmt
        .keys()
        .iter()
        .zip(values)
        .map(|(k, v)| ((*k).to_owned(), Value::String(v)))
        .collect();
    AgentEventPush::new(body, steam, f.agent_id)
}

fn resolve_agent_id(who: &AgentInfo<'_>, own: Option<&str>, extension: &str) -> String {
    let id = who.agent_id.filter(|s| !s.is_empty()).or(own);
    lane_key(id, extension)
}

/// The push for one presence event, or `None` for a registration-only event (no state
/// change, so nothing for attendance). `sequence` must be unique across restarts (see the
/// module docs on `steamNumber`).
pub fn from_event(
    ev: &AgentEvent,
    who: &AgentInfo<'_>,
    sequence: u64,
    fmt: &AgentEventFormat,
) -> Option<AgentEventPush> {
    let AgentEventKind::Transition(t) = &ev.kind else {
        return None;
    };
    let signing_in = t.from == AgentState::SignedOut && t.to != AgentState::SignedOut;
    let signing_out = t.from != AgentState::SignedOut && t.to == AgentState::SignedOut;
    let in_out_ms = if signing_in {
        // How long the agent had been signed out.
        Some(t.duration_ms)
    } else if signing_out {
        // How long it was signed in: the session id is the sign-in instant in ms.
        Some(
            t.signin_session
                .map_or(0, |since| t.at_ms.saturating_sub(since)),
        )
    } else {
        None
    };
    let call_id = t.call_id.as_ref().or(ev.call.as_ref().map(|c| &c.call_id));
    Some(render(
        Fields {
            at_ms: t.at_ms,
            sequence,
            session: t.signin_session,
            agent_id: resolve_agent_id(who, ev.agent_id.as_deref(), &ev.extension),
            agent_name: who.agent_name,
            call_id,
            signed_in: t.to != AgentState::SignedOut,
            state: &t.to,
            last_state: &t.from,
            last_since_ms: t.from_since_ms,
            last_duration_ms: t.duration_ms,
            in_out_ms,
            ip: ev.source_ip,
            extension: &ev.extension,
        },
        fmt,
    ))
}

/// A signed-in agent's current state, for heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStatus {
    pub extension: String,
    pub agent_id: Option<String>,
    pub state: AgentState,
    /// When `state` was entered (Unix ms).
    pub since_ms: u64,
    pub signin_session: Option<u64>,
    pub call_id: Option<CallId>,
    pub source_ip: Option<IpAddr>,
}

impl AgentStatus {
    /// The status of a presence seat.
    pub fn of_seat(extension: &str, seat: &Seat) -> Self {
        AgentStatus {
            extension: extension.to_owned(),
            agent_id: seat.agent_id.clone(),
            state: seat.machine.state().clone(),
            since_ms: seat.machine.since_ms(),
            signin_session: seat.machine.signin_session(),
            call_id: seat.machine.current_call().cloned(),
            source_ip: seat.source_ip,
        }
    }
}

/// A heartbeat (periodic state report, L484) at `now_ms`, or `None` when the agent is signed
/// out (there is nothing to report between sign-out and sign-in).
pub fn heartbeat(
    status: &AgentStatus,
    who: &AgentInfo<'_>,
    sequence: u64,
    now_ms: u64,
    fmt: &AgentEventFormat,
) -> Option<AgentEventPush> {
    if status.state == AgentState::SignedOut {
        return None;
    }
    Some(render(
        Fields {
            at_ms: now_ms,
            sequence,
            session: status.signin_session,
            agent_id: resolve_agent_id(who, status.agent_id.as_deref(), &status.extension),
            agent_name: who.agent_name,
            call_id: status.call_id.as_ref(),
            signed_in: true,
            state: &status.state,
            last_state: &status.state,
            last_since_ms: status.since_ms,
            last_duration_ms: 0,
            in_out_ms: None,
            ip: status.source_ip,
            extension: &status.extension,
        },
        fmt,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::state::Transition;

    fn ev(
        from: AgentState,
        to: AgentState,
        since: u64,
        at: u64,
        session: Option<u64>,
    ) -> AgentEvent {
        AgentEvent {
            extension: "8001".into(),
            project: None,
            agent_id: None,
            kind: AgentEventKind::Transition(Transition {
                from,
                to: to.clone(),
                from_since_ms: since,
                at_ms: at,
                duration_ms: at.saturating_sub(since),
                signin_session: session,
                call_id: None,
            }),
            state: to,
            registered: true,
            call: None,
            signin_session: session,
            source_ip: None,
            at_ms: at,
        }
    }

    #[test]
    fn steam_number_is_time_then_fixed_width_sequence() {
        assert_eq!(
            steam_number(1_723_729_199_123, 42),
            "172372919912300000000000000000042"
        );
        assert_eq!(
            steam_number(0, u64::MAX),
            "000000000000018446744073709551615"
        );
    }

    #[test]
    fn registration_only_events_are_not_pushed() {
        let mut e = ev(AgentState::Idle, AgentState::Idle, 0, 1, Some(1));
        e.kind = AgentEventKind::Registration;
        assert!(from_event(&e, &AgentInfo::default(), 1, &AgentEventFormat::default()).is_none());
    }

    #[test]
    fn agent_id_falls_back_to_the_event_then_the_extension() {
        let fmt = AgentEventFormat::default();
        let mut e = ev(AgentState::Idle, AgentState::Talking, 0, 1_000, Some(1));
        let p = from_event(&e, &AgentInfo::default(), 1, &fmt).unwrap();
        assert_eq!(
            (p.lane_key(), &p.body()["agentId"]),
            ("8001", &Value::from("8001"))
        );
        e.agent_id = Some("a1".into());
        let p = from_event(&e, &AgentInfo::default(), 1, &fmt).unwrap();
        assert_eq!(p.lane_key(), "a1");
        let who = AgentInfo {
            agent_id: Some("a2"),
            agent_name: "张三",
        };
        let p = from_event(&e, &who, 1, &fmt).unwrap();
        assert_eq!(p.lane_key(), "a2");
        assert_eq!(
            p.idempotency_key(),
            p.body()["steamNumber"].as_str().unwrap()
        );
        assert_eq!(lane_key(Some(""), "8001"), "8001");
    }

    #[test]
    fn reason_overrides_win() {
        let mut cfg = AgentEventConfig::default();
        cfg.states.not_ready_reasons.push(ReasonEstate {
            reason: 5,
            code: -13,
            name: "分机离线".into(),
        });
        let fmt = AgentEventFormat::new(&cfg).unwrap();
        let off = AgentState::NotReady {
            reason: NotReadyReason::EXTENSION_OFFLINE,
        };
        assert_eq!(fmt.states.of(&off), (-13, "分机离线"));
        let manual = AgentState::NotReady {
            reason: NotReadyReason::MANUAL,
        };
        assert_eq!(fmt.states.of(&manual), (3, "示忙"));
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |cfg: AgentEventConfig| cfg.validate().unwrap_err();
        let mut c = AgentEventConfig::default();
        c.states.talking.code = 14;
        assert!(err(c).starts_with("states.talking.code:"));
        let c = AgentEventConfig {
            state_key: "ssid".into(),
            ..AgentEventConfig::default()
        };
        assert!(err(c).starts_with("state_key:"));
        let c = AgentEventConfig {
            year_month_key: "port".into(),
            ..AgentEventConfig::default()
        };
        assert!(err(c).starts_with("year_month_key:"));
        let c = AgentEventConfig {
            stream_number_key: "".into(),
            ..AgentEventConfig::default()
        };
        assert!(err(c).starts_with("stream_number_key:"));
        let mut c = AgentEventConfig::default();
        c.macs.insert("8001".into(), "00:11:22:33:44".into());
        assert!(err(c).starts_with("macs.8001:"));
        let c = AgentEventConfig {
            timezone: "Mars/Base".into(),
            ..AgentEventConfig::default()
        };
        assert!(err(c).starts_with("timezone:"));
        let mut c = AgentEventConfig::default();
        c.states.rest.name = " ".into();
        assert!(err(c).starts_with("states.rest.name:"));
        let mut c = AgentEventConfig::default();
        for _ in 0..2 {
            c.states.not_ready_reasons.push(ReasonEstate {
                reason: 7,
                code: 302,
                name: "x".into(),
            });
        }
        assert!(err(c).starts_with("states.not_ready_reasons[1].reason:"));
        assert!(AgentEventConfig::default().validate().is_ok());
        assert!(toml::from_str::<AgentEventConfig>("port = \"x\"").is_err());
        let parsed: AgentEventConfig = toml::from_str(
            "state_key = \"estate\"\n[states.idle]\ncode = 2\nname = \"就绪\"\n[macs]\n\"8001\" = \"AA-BB-CC-DD-EE-FF\"\n",
        )
        .unwrap();
        let fmt = AgentEventFormat::new(&parsed).unwrap();
        assert_eq!(fmt.keys()[7], "estate");
        assert_eq!(fmt.macs["8001"], "aa:bb:cc:dd:ee:ff");
        assert_eq!(parsed.states.talking, EstateTable::default().talking);
    }

    #[test]
    fn rounding_is_half_up() {
        assert_eq!((secs(0), secs(499), secs(500), secs(1_499)), (0, 0, 1, 1));
        assert_eq!(secs(u64::MAX), u64::MAX / 1000 + 1);
    }
}
