//! A FreeSWITCH stand-in for the campaign runtime's end-to-end tests: it plays the switch of
//! `/work/campaign-contract.md`, section "The FreeSWITCH side", over the real event socket
//! framing of `support/esl_server.rs` (`#[path]`-included next to it as `esl_server`).
//!
//! It wraps [`EslServer`] with `hold_jobs` on: the server still authenticates, subscribes,
//! answers `api show channels as json` from its channel table and replies `+OK Job-UUID` to
//! every `bgapi`, but keeps the job; a driver task takes each held job and answers it the way
//! FreeSWITCH would, with the `BACKGROUND_JOB` body and the channel events that command
//! causes:
//!
//! * `originate {origination_uuid=U,...}sofia/gateway/<gw>/<prefix><number> &park()`: the
//!   number's [`Plan`] (drawn from the [`Scenario`]'s mix with an RNG seeded by the scenario
//!   seed and the number, so a number's fate does not depend on dialling order) decides what
//!   happens: `CHANNEL_CREATE`, a ring of `ring_ms`, then either `CHANNEL_HANGUP_COMPLETE` with
//!   the cause followed by `BACKGROUND_JOB -ERR <cause>`, or `CHANNEL_ANSWER` (with
//!   `variable_amd_result: MACHINE` for a machine, sometimes `HUMAN` for a person) followed by
//!   `BACKGROUND_JOB +OK U`. A machine hangs up by itself after `machine_ms` if nobody kills
//!   it; an impatient person hangs up after `patience_ms` unless a transfer arrived first; a
//!   person that gridedge neither connects nor drops within `stuck_ms` is hung up and
//!   recorded as a violation.
//! * `uuid_transfer U bridge:user/<ext> inline`: `+OK`, then the agent leg (`CHANNEL_CREATE`,
//!   `CHANNEL_ANSWER`, direction outbound, `variable_dialed_user: <ext>`), `CHANNEL_BRIDGE`
//!   for U with `Other-Leg-Unique-ID`, a talk of `talk_ms`, and both hang-ups, the customer
//!   first (U's `variable_sip_hangup_disposition: recv_bye`) or the agent first (U's
//!   `send_bye`). A transfer to an extension already on a call, not among the agents, of a
//!   machine, or before the answer is recorded as a violation.
//! * `uuid_kill U`: `+OK` and U's hang-up (`send_bye`), the agent leg's too; a kill of a
//!   ringing call also fails its originate job with `-ERR ORIGINATOR_CANCEL`.
//!
//! Everything is recorded per originate in a [`Call`] (what the peer decided, when it
//! answered, to which extension it bridged, whether it was killed, how it ended), with the
//! number of calls in flight (from the originate's arrival to U's hang-up, counted down
//! *before* the hang-up is written so gridedge can never see a free line the peer does not)
//! and its maximum. Tests wait on the record with [`DialerPeer::wait_until`] (a condition
//! variable, no polling).
#![allow(dead_code)] // each test uses a different subset

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::esl_server::{self, background_job_headers, event_frame, EslServer};

// ------------------------------------------------------------------------------------------
// Scenario
// ------------------------------------------------------------------------------------------

/// What a dialled number does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// A person answers.
    Live,
    /// An answering machine answers (`variable_amd_result: MACHINE`).
    Machine,
    /// Never answered: the hang-up cause (`USER_BUSY`, `NO_ANSWER`, ...).
    Fail(&'static str),
}

/// The kinds a scenario mixes, with their weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Live,
    Machine,
    Busy,
    NoAnswer,
    NoUserResponse,
    Rejected,
    Unallocated,
    TemporaryFailure,
}

impl Kind {
    fn fate(self) -> Fate {
        match self {
            Kind::Live => Fate::Live,
            Kind::Machine => Fate::Machine,
            Kind::Busy => Fate::Fail("USER_BUSY"),
            Kind::NoAnswer => Fate::Fail("NO_ANSWER"),
            Kind::NoUserResponse => Fate::Fail("NO_USER_RESPONSE"),
            Kind::Rejected => Fate::Fail("CALL_REJECTED"),
            Kind::Unallocated => Fate::Fail("UNALLOCATED_NUMBER"),
            Kind::TemporaryFailure => Fate::Fail("NORMAL_TEMPORARY_FAILURE"),
        }
    }
}

/// Everything decided about one number before it is dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub fate: Fate,
    pub ring_ms: u64,
    pub agent_ring_ms: u64,
    pub talk_ms: u64,
    /// A person hangs up this long after the answer unless a transfer arrived first.
    pub patience_ms: Option<u64>,
    /// After a bridge: the customer hangs up first (else the agent does).
    pub customer_ends: bool,
    /// A person's answer carries `variable_amd_result: HUMAN` (else no AMD variable).
    pub amd_human: bool,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub mix: Vec<(Kind, u32)>,
    pub ring_ms: (u64, u64),
    pub agent_ring_ms: (u64, u64),
    pub talk_ms: (u64, u64),
    /// Percentage of persons who hang up when not connected within their patience.
    pub impatient_pct: u32,
    pub patience_ms: (u64, u64),
    /// A machine gridedge does not kill hangs up by itself this long after the answer.
    pub machine_ms: u64,
    /// A person gridedge neither transfers nor kills this long after the answer is hung up
    /// by the peer and recorded as a violation.
    pub stuck_ms: u64,
    /// The gateway every originate must name and its number prefixes.
    pub gateway: String,
    pub mobile_prefix: String,
    pub fixed_prefix: String,
}

impl Scenario {
    /// The mix (40 % live, 10 % machine, 15 % busy, 35 % not answered, a few of those
    /// as rejections and unallocated numbers) with short times so a test runs in seconds.
    pub fn campaign(seed: u64, gateway: &str, mobile_prefix: &str, fixed_prefix: &str) -> Self {
        Scenario {
            seed,
            mix: vec![
                (Kind::Live, 40),
                (Kind::Machine, 10),
                (Kind::Busy, 15),
                (Kind::NoAnswer, 22),
                (Kind::NoUserResponse, 3),
                (Kind::Rejected, 5),
                (Kind::Unallocated, 3),
                (Kind::TemporaryFailure, 2),
            ],
            ring_ms: (50, 300),
            agent_ring_ms: (10, 60),
            talk_ms: (150, 500),
            impatient_pct: 20,
            patience_ms: (200, 1200),
            machine_ms: 3000,
            stuck_ms: 8000,
            gateway: gateway.to_owned(),
            mobile_prefix: mobile_prefix.to_owned(),
            fixed_prefix: fixed_prefix.to_owned(),
        }
    }

    /// The plan of `number` (deterministic in the seed and the number).
    pub fn plan(&self, number: &str) -> Plan {
        let mut rng = StdRng::seed_from_u64(self.seed ^ fnv1a(number));
        let total: u32 = self.mix.iter().map(|(_, w)| w).sum();
        assert!(total > 0, "a scenario needs a non-empty mix");
        let mut x = rng.gen_range(0..total);
        let mut kind = self.mix[0].0;
        for (k, w) in &self.mix {
            if x < *w {
                kind = *k;
                break;
            }
            x -= w;
        }
        let range = |rng: &mut StdRng, (lo, hi): (u64, u64)| rng.gen_range(lo..=hi);
        let ring_ms = range(&mut rng, self.ring_ms);
        let agent_ring_ms = range(&mut rng, self.agent_ring_ms);
        let talk_ms = range(&mut rng, self.talk_ms);
        let impatient = rng.gen_range(0..100) < self.impatient_pct;
        let patience = range(&mut rng, self.patience_ms);
        Plan {
            fate: kind.fate(),
            ring_ms,
            agent_ring_ms,
            talk_ms,
            patience_ms: impatient.then_some(patience),
            customer_ends: rng.gen_bool(0.5),
            amd_human: rng.gen_bool(0.3),
        }
    }

    /// Whether `number` is a mobile number (starts with 1, 11 digits): it takes the mobile
    /// prefix, everything else the fixed one.
    pub fn is_mobile(number: &str) -> bool {
        number.len() == 11 && number.starts_with('1') && number.bytes().all(|b| b.is_ascii_digit())
    }

    /// `<prefix><number>` as the originate must dial it.
    pub fn dial_string(&self, number: &str) -> String {
        if Self::is_mobile(number) {
            format!("{}{number}", self.mobile_prefix)
        } else {
            format!("{}{number}", self.fixed_prefix)
        }
    }

    /// The number inside a dial string, if the prefix is the right one for it.
    fn number_of(&self, dial: &str) -> Option<String> {
        if let Some(rest) = dial.strip_prefix(self.mobile_prefix.as_str()) {
            if Self::is_mobile(rest) {
                return Some(rest.to_owned());
            }
        }
        if let Some(rest) = dial.strip_prefix(self.fixed_prefix.as_str()) {
            if !Self::is_mobile(rest) && !rest.is_empty() {
                return Some(rest.to_owned());
            }
        }
        None
    }
}

fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

// ------------------------------------------------------------------------------------------
// The record
// ------------------------------------------------------------------------------------------

/// One originate and everything that happened to it, as the peer saw and did it. Times are
/// Unix ms of the peer's clock (the same machine as gridedge's).
#[derive(Debug, Clone)]
pub struct Call {
    /// Order of arrival (0-based).
    pub index: usize,
    pub job: String,
    /// The `bgapi` argument, verbatim.
    pub command: String,
    /// `origination_uuid`.
    pub uuid: String,
    /// The `{...}` variables.
    pub vars: BTreeMap<String, String>,
    pub gateway: String,
    /// What follows `sofia/gateway/<gw>/`.
    pub dial: String,
    /// The application after the dial string (`&park()`).
    pub app: String,
    pub number: String,
    pub plan: Plan,
    pub originated_ms: u64,
    pub answered_ms: Option<u64>,
    pub transfer_ms: Option<u64>,
    pub transfer_ext: Option<String>,
    pub agent_leg: Option<String>,
    pub agent_answered_ms: Option<u64>,
    pub agent_ended_ms: Option<u64>,
    pub bridged_ms: Option<u64>,
    pub bridged_ext: Option<String>,
    pub killed_ms: Option<u64>,
    /// The person hung up while waiting for an agent.
    pub customer_gave_up: bool,
    /// The machine hung up by itself (nobody killed it).
    pub machine_hung_up: bool,
    /// The peer ended a person nobody connected or dropped (a violation).
    pub stuck: bool,
    pub ended_ms: Option<u64>,
    /// U's `Hangup-Cause` and `variable_sip_hangup_disposition`.
    pub hangup_cause: String,
    pub disposition: String,
}

impl Call {
    pub fn ended(&self) -> bool {
        self.ended_ms.is_some()
    }

    /// One line for failure messages.
    pub fn describe(&self) -> String {
        let rel = |t: Option<u64>| {
            t.map_or_else(
                || "-".to_owned(),
                |t| format!("+{}", t.saturating_sub(self.originated_ms)),
            )
        };
        format!(
            "#{:<3} {} num={} fate={:?} ring={} answered={} transfer={}{} bridged={}{} killed={} \
             gave_up={} machine_hung_up={} stuck={} ended={} cause={} disp={}",
            self.index,
            self.uuid,
            self.number,
            self.plan.fate,
            self.plan.ring_ms,
            rel(self.answered_ms),
            rel(self.transfer_ms),
            self.transfer_ext
                .as_deref()
                .map(|e| format!("->{e}"))
                .unwrap_or_default(),
            rel(self.bridged_ms),
            self.bridged_ext
                .as_deref()
                .map(|e| format!("@{e}"))
                .unwrap_or_default(),
            rel(self.killed_ms),
            self.customer_gave_up,
            self.machine_hung_up,
            self.stuck,
            rel(self.ended_ms),
            self.hangup_cause,
            self.disposition,
        )
    }
}

/// The peer's whole record.
#[derive(Debug, Default)]
pub struct PeerState {
    pub calls: Vec<Call>,
    by_uuid: HashMap<String, usize>,
    /// Originates whose customer leg has not hung up yet.
    pub in_flight: usize,
    pub max_in_flight: usize,
    /// The extensions gridedge may transfer to.
    pub agents: Vec<String>,
    /// Extension → the customer uuid it is connected (or being connected) to.
    pub agent_busy: BTreeMap<String, String>,
    /// Every transfer per extension, in order: (customer uuid, peer ms).
    pub transfers: Vec<(String, String, u64)>,
    /// Every `uuid_kill` argument with its time.
    pub kills: Vec<(String, u64)>,
    /// Contract violations the peer saw (malformed originates, double bookings, ...).
    pub violations: Vec<String>,
    /// `bgapi` commands that are none of originate / uuid_transfer / uuid_kill.
    pub other_commands: Vec<String>,
}

impl PeerState {
    pub fn all_ended(&self) -> bool {
        self.calls.iter().all(Call::ended)
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "peer: {} originates, {} in flight (max {}), agents {:?} busy {:?}\n",
            self.calls.len(),
            self.in_flight,
            self.max_in_flight,
            self.agents,
            self.agent_busy
        );
        for c in &self.calls {
            s.push_str(&c.describe());
            s.push('\n');
        }
        if !self.violations.is_empty() {
            s.push_str(&format!("violations: {:#?}\n", self.violations));
        }
        if !self.other_commands.is_empty() {
            s.push_str(&format!(
                "other bgapi commands: {:?}\n",
                self.other_commands
            ));
        }
        s
    }

    /// Ends U: sets the end, counts the line free. False if it had ended already.
    fn end_customer(&mut self, idx: usize, cause: &str, disposition: &str) -> bool {
        let c = &mut self.calls[idx];
        if c.ended_ms.is_some() {
            return false;
        }
        c.ended_ms = Some(now_ms());
        c.hangup_cause = cause.to_owned();
        c.disposition = disposition.to_owned();
        self.in_flight -= 1;
        true
    }

    /// Ends the agent leg (if there is one still up) and frees its extension: the extension.
    fn end_agent(&mut self, idx: usize) -> Option<String> {
        let c = &mut self.calls[idx];
        if c.agent_leg.is_none() || c.agent_ended_ms.is_some() {
            return None;
        }
        c.agent_ended_ms = Some(now_ms());
        let ext = c.transfer_ext.clone()?;
        if self.agent_busy.get(&ext) == Some(&c.uuid) {
            self.agent_busy.remove(&ext);
        }
        Some(ext)
    }
}

// ------------------------------------------------------------------------------------------
// The peer
// ------------------------------------------------------------------------------------------

struct Shared {
    state: Mutex<PeerState>,
    changed: Condvar,
    scenario: Scenario,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PeerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update<R>(&self, f: impl FnOnce(&mut PeerState) -> R) -> R {
        let r = f(&mut self.lock());
        self.changed.notify_all();
        r
    }
}

/// The scripted switch on a runtime of its own (tests stay plain blocking functions).
pub struct DialerPeer {
    driver: tokio::task::JoinHandle<()>,
    server: Arc<Wire>,
    shared: Arc<Shared>,
    // Last: dropped after everything that runs on it.
    rt: tokio::runtime::Runtime,
}

impl Drop for DialerPeer {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl DialerPeer {
    pub fn start(password: &str, scenario: Scenario) -> DialerPeer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let esl = rt.block_on(EslServer::start(password));
        esl.hold_jobs(true);
        let server = Arc::new(Wire {
            esl,
            order: tokio::sync::Mutex::new(()),
        });
        let shared = Arc::new(Shared {
            state: Mutex::new(PeerState::default()),
            changed: Condvar::new(),
            scenario,
        });
        let driver = rt.spawn(drive(server.clone(), shared.clone()));
        DialerPeer {
            driver,
            server,
            shared,
            rt,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.esl.addr()
    }

    pub fn scenario(&self) -> &Scenario {
        &self.shared.scenario
    }

    pub fn set_agents(&self, agents: &[String]) {
        self.shared.update(|s| s.agents = agents.to_vec());
    }

    /// Reads the record.
    pub fn state<R>(&self, f: impl FnOnce(&PeerState) -> R) -> R {
        f(&self.shared.lock())
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state(|s| s.calls.clone())
    }

    pub fn summary(&self) -> String {
        self.state(PeerState::summary)
    }

    /// Waits until `cond` holds on the record, re-checking on every change; false at the
    /// deadline.
    pub fn wait_until(&self, within: Duration, cond: impl Fn(&PeerState) -> bool) -> bool {
        let deadline = Instant::now() + within;
        let mut guard = self.shared.lock();
        loop {
            if cond(&guard) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = self
                .shared
                .changed
                .wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits on the event socket's state (connections, subscriptions, commands).
    pub fn wait_server(&self, within: Duration, cond: impl Fn(&esl_server::State) -> bool) -> bool {
        self.rt.block_on(self.server.esl.wait_until(within, cond))
    }

    pub fn commands(&self) -> Vec<String> {
        self.server.esl.commands()
    }
}

// ------------------------------------------------------------------------------------------
// The driver
// ------------------------------------------------------------------------------------------

async fn drive(server: Arc<Wire>, shared: Arc<Shared>) {
    loop {
        server
            .esl
            .wait_until(Duration::from_secs(3600), |s| !s.held_jobs.is_empty())
            .await;
        let jobs = server.esl.update(|s| std::mem::take(&mut s.held_jobs));
        for (job, command, _) in jobs {
            let (verb, arg) = command.split_once(' ').unwrap_or((command.as_str(), ""));
            match verb {
                "originate" => originate(&server, &shared, &job, &command, arg).await,
                "uuid_transfer" => transfer(&server, &shared, &job, &command, arg).await,
                "uuid_kill" => kill(&server, &shared, &job, &command, arg).await,
                _ => {
                    shared.update(|s| s.other_commands.push(command.clone()));
                    job_reply(
                        &server,
                        &job,
                        &command,
                        &format!("-ERR {verb} Command not found!\n"),
                    )
                    .await;
                }
            }
        }
    }
}

/// The event socket plus a lock that keeps "take the next Event-Sequence, write the event"
/// atomic, so concurrent calls write their events with increasing sequence numbers.
struct Wire {
    esl: EslServer,
    order: tokio::sync::Mutex<()>,
}

async fn push(server: &Wire, mut headers: Vec<(String, String)>) {
    let _order = server.order.lock().await;
    let seq = server.esl.next_sequence().to_string();
    match headers.iter_mut().find(|(n, _)| n == "Event-Sequence") {
        Some(h) => h.1 = seq,
        None => headers.push(("Event-Sequence".to_owned(), seq)),
    }
    // No connection (the daemon is restarting): the event is lost, as with a real switch.
    let _ = server.esl.push_event(&headers).await;
}

async fn job_reply(server: &Wire, job: &str, command: &str, body: &str) {
    let _order = server.order.lock().await;
    let seq = server.esl.next_sequence();
    let frame = event_frame(&background_job_headers(job, command, seq), Some(body));
    let _ = server.esl.push_raw(&frame).await;
}

/// `{k=v,k=v}target app` → (vars, target, app).
fn parse_originate(arg: &str) -> Result<(BTreeMap<String, String>, String, String), String> {
    let rest = arg
        .strip_prefix('{')
        .ok_or_else(|| format!("originate without {{variables}}: {arg:?}"))?;
    let close = rest
        .find('}')
        .ok_or_else(|| format!("originate variables not closed: {arg:?}"))?;
    let mut vars = BTreeMap::new();
    for pair in rest[..close].split(',') {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("originate variable without '=': {pair:?} in {arg:?}"))?;
        if vars.insert(k.trim().to_owned(), v.to_owned()).is_some() {
            return Err(format!("originate variable {k} given twice: {arg:?}"));
        }
    }
    let mut words = rest[close + 1..].split_whitespace();
    let target = words
        .next()
        .ok_or_else(|| format!("originate without a dial string: {arg:?}"))?
        .to_owned();
    let app = words.collect::<Vec<_>>().join(" ");
    Ok((vars, target, app))
}

async fn originate(server: &Arc<Wire>, shared: &Arc<Shared>, job: &str, command: &str, arg: &str) {
    let sc = &shared.scenario;
    let parsed = parse_originate(arg).and_then(|(vars, target, app)| {
        let path = target
            .strip_prefix("sofia/gateway/")
            .ok_or_else(|| format!("originate not through sofia/gateway/: {target:?}"))?;
        let (gateway, dial) = path
            .split_once('/')
            .ok_or_else(|| format!("originate dial string without a number: {target:?}"))?;
        let uuid = vars
            .get("origination_uuid")
            .filter(|u| !u.is_empty())
            .ok_or_else(|| format!("originate without origination_uuid: {arg:?}"))?
            .clone();
        Ok((vars, gateway.to_owned(), dial.to_owned(), app, uuid))
    });
    let (vars, gateway, dial, app, uuid) = match parsed {
        Ok(p) => p,
        Err(e) => {
            shared.update(|s| s.violations.push(e));
            job_reply(server, job, command, "-ERR INVALID_GATEWAY\n").await;
            return;
        }
    };
    let number = sc.number_of(&dial);
    let idx = shared.update(|s| {
        if s.by_uuid.contains_key(&uuid) {
            s.violations.push(format!(
                "origination_uuid {uuid} used by two originates: {command:?}"
            ));
        }
        if gateway != sc.gateway {
            s.violations.push(format!(
                "originate through gateway {gateway:?}, want {:?}: {command:?}",
                sc.gateway
            ));
        }
        if app != "&park()" {
            s.violations.push(format!(
                "originate application {app:?}, want \"&park()\": {command:?}"
            ));
        }
        let number = number.clone().unwrap_or_else(|| {
            s.violations.push(format!(
                "dial string {dial:?} is not mobile prefix {:?} + 1xxxxxxxxxx or fixed prefix {:?} \
                 + another number: {command:?}",
                sc.mobile_prefix, sc.fixed_prefix
            ));
            dial.clone()
        });
        let idx = s.calls.len();
        s.calls.push(Call {
            index: idx,
            job: job.to_owned(),
            command: command.to_owned(),
            uuid: uuid.clone(),
            vars: vars.clone(),
            gateway: gateway.clone(),
            dial: dial.clone(),
            app: app.clone(),
            plan: sc.plan(&number),
            number,
            originated_ms: now_ms(),
            answered_ms: None,
            transfer_ms: None,
            transfer_ext: None,
            agent_leg: None,
            agent_answered_ms: None,
            agent_ended_ms: None,
            bridged_ms: None,
            bridged_ext: None,
            killed_ms: None,
            customer_gave_up: false,
            machine_hung_up: false,
            stuck: false,
            ended_ms: None,
            hangup_cause: String::new(),
            disposition: String::new(),
        });
        s.by_uuid.insert(uuid.clone(), idx);
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        idx
    });
    tokio::spawn(run_call(server.clone(), shared.clone(), idx));
}

/// The customer leg's life from the originate to the answer (and what follows for machines,
/// impatient persons and persons nobody handles).
async fn run_call(server: Arc<Wire>, shared: Arc<Shared>, idx: usize) {
    let sc = &shared.scenario;
    let (plan, job, command, create) = shared.update(|s| {
        let c = &s.calls[idx];
        (
            c.plan.clone(),
            c.job.clone(),
            c.command.clone(),
            customer_event("CHANNEL_CREATE", c, &[]),
        )
    });
    push(&server, create).await;
    tokio::time::sleep(Duration::from_millis(plan.ring_ms)).await;

    if let Fate::Fail(cause) = plan.fate {
        let disposition = if cause == "NO_ANSWER" || cause == "NO_USER_RESPONSE" {
            "send_cancel"
        } else {
            "recv_refuse"
        };
        let hangup = shared.update(|s| {
            s.end_customer(idx, cause, disposition).then(|| {
                customer_event(
                    "CHANNEL_HANGUP_COMPLETE",
                    &s.calls[idx],
                    &hangup_headers(cause, disposition),
                )
            })
        });
        if let Some(h) = hangup {
            push(&server, h).await;
            job_reply(&server, &job, &command, &format!("-ERR {cause}\n")).await;
        }
        return;
    }

    let answer = shared.update(|s| {
        let c = &mut s.calls[idx];
        if c.ended() {
            return None; // killed while ringing
        }
        c.answered_ms = Some(now_ms());
        let amd = match (plan.fate, plan.amd_human) {
            (Fate::Machine, _) => Some("MACHINE"),
            (_, true) => Some("HUMAN"),
            _ => None,
        };
        let extra: Vec<(&str, &str)> = amd
            .map(|a| vec![("variable_amd_result", a)])
            .unwrap_or_default();
        Some((c.uuid.clone(), customer_event("CHANNEL_ANSWER", c, &extra)))
    });
    let Some((uuid, answer)) = answer else {
        return;
    };
    let answered = tokio::time::Instant::now();
    push(&server, answer).await;
    job_reply(&server, &job, &command, &format!("+OK {uuid}\n")).await;

    if plan.fate == Fate::Machine {
        tokio::time::sleep(Duration::from_millis(sc.machine_ms)).await;
        let events = shared.update(|s| {
            if s.calls[idx].ended() {
                return Vec::new();
            }
            s.calls[idx].machine_hung_up = true;
            hang_up_customer(s, idx, "NORMAL_CLEARING", "recv_bye")
        });
        for e in events {
            push(&server, e).await;
        }
        return;
    }

    if let Some(patience) = plan.patience_ms {
        tokio::time::sleep(Duration::from_millis(patience)).await;
        let events = shared.update(|s| {
            let c = &s.calls[idx];
            if c.ended() || c.transfer_ms.is_some() {
                return Vec::new();
            }
            s.calls[idx].customer_gave_up = true;
            hang_up_customer(s, idx, "NORMAL_CLEARING", "recv_bye")
        });
        for e in events {
            push(&server, e).await;
        }
    }

    tokio::time::sleep_until(answered + Duration::from_millis(sc.stuck_ms)).await;
    let events = shared.update(|s| {
        let c = &s.calls[idx];
        if c.ended() || c.transfer_ms.is_some() {
            return Vec::new();
        }
        s.violations.push(format!(
            "call {} ({}) answered by a person was neither transferred nor killed within {} ms",
            c.uuid, c.number, sc.stuck_ms
        ));
        s.calls[idx].stuck = true;
        hang_up_customer(s, idx, "NORMAL_CLEARING", "recv_bye")
    });
    for e in events {
        push(&server, e).await;
    }
}

/// Ends U (and the agent leg if one is up): the events to write, U's first.
fn hang_up_customer(
    s: &mut PeerState,
    idx: usize,
    cause: &str,
    disposition: &str,
) -> Vec<Vec<(String, String)>> {
    let mut events = Vec::new();
    if !s.end_customer(idx, cause, disposition) {
        return events;
    }
    events.push(customer_event(
        "CHANNEL_HANGUP_COMPLETE",
        &s.calls[idx],
        &hangup_headers(cause, disposition),
    ));
    if let Some(ext) = s.end_agent(idx) {
        let c = &s.calls[idx];
        let (cause, disposition) = if c.agent_answered_ms.is_some() {
            ("NORMAL_CLEARING", "send_bye")
        } else {
            ("ORIGINATOR_CANCEL", "send_cancel")
        };
        events.push(agent_event(
            "CHANNEL_HANGUP_COMPLETE",
            c,
            &ext,
            &hangup_headers(cause, disposition),
        ));
    }
    events
}

async fn transfer(server: &Arc<Wire>, shared: &Arc<Shared>, job: &str, command: &str, arg: &str) {
    let mut words = arg.split_whitespace();
    let uuid = words.next().unwrap_or("").to_owned();
    let dest = words.next().unwrap_or("");
    let flag = words.next();
    let ext = dest
        .strip_prefix("bridge:")
        .and_then(|d| d.strip_prefix("user/"))
        .map(str::to_owned);
    let accepted = shared.update(|s| {
        let now = now_ms();
        if flag != Some("inline") || words.next().is_some() {
            s.violations.push(format!(
                "uuid_transfer is not `<U> bridge:user/<ext> inline`: {command:?}"
            ));
        }
        let Some(ext) = ext.clone() else {
            s.violations.push(format!(
                "uuid_transfer destination is not bridge:user/<ext>: {command:?}"
            ));
            return None;
        };
        s.transfers.push((ext.clone(), uuid.clone(), now));
        let Some(&idx) = s.by_uuid.get(&uuid) else {
            s.violations.push(format!(
                "uuid_transfer of a uuid never originated: {command:?}"
            ));
            return None;
        };
        let c = &s.calls[idx];
        if c.transfer_ms.is_some() {
            s.violations.push(format!(
                "call {uuid} transferred twice ({:?} then {ext})",
                c.transfer_ext
            ));
            return None;
        }
        if c.ended() {
            // The customer hung up (or was dropped) while the transfer was on its way.
            return None;
        }
        if c.answered_ms.is_none() {
            s.violations
                .push(format!("call {uuid} transferred before it was answered"));
        }
        if c.plan.fate == Fate::Machine {
            s.violations.push(format!(
                "call {uuid} answered by a machine transferred to agent {ext}"
            ));
        }
        if !s.agents.contains(&ext) {
            s.violations.push(format!(
                "call {uuid} transferred to {ext}, not one of the agents {:?}",
                s.agents
            ));
        }
        if let Some(other) = s.agent_busy.get(&ext) {
            s.violations.push(format!(
                "agent {ext} sent call {uuid} while still on call {other}"
            ));
        }
        s.agent_busy.insert(ext.clone(), uuid.clone());
        let c = &mut s.calls[idx];
        c.transfer_ms = Some(now);
        c.transfer_ext = Some(ext.clone());
        c.agent_leg = Some(new_uuid());
        Some((idx, ext))
    });
    match accepted {
        None => job_reply(server, job, command, "-ERR No such channel!\n").await,
        Some((idx, ext)) => {
            job_reply(server, job, command, "+OK\n").await;
            tokio::spawn(agent_leg(server.clone(), shared.clone(), idx, ext));
        }
    }
}

/// The agent's phone rings, answers, is bridged to the customer; they talk; one hangs up.
async fn agent_leg(server: Arc<Wire>, shared: Arc<Shared>, idx: usize, ext: String) {
    let plan = shared.state_plan(idx);
    let create = shared.update(|s| agent_event("CHANNEL_CREATE", &s.calls[idx], &ext, &[]));
    push(&server, create).await;
    tokio::time::sleep(Duration::from_millis(plan.agent_ring_ms)).await;

    // Answer the agent's phone, unless the customer is gone (then stop ringing it).
    let step = shared.update(|s| {
        if s.calls[idx].agent_ended_ms.is_some() {
            return Vec::new();
        }
        if s.calls[idx].ended() {
            s.end_agent(idx);
            return vec![agent_event(
                "CHANNEL_HANGUP_COMPLETE",
                &s.calls[idx],
                &ext,
                &hangup_headers("ORIGINATOR_CANCEL", "send_cancel"),
            )];
        }
        s.calls[idx].agent_answered_ms = Some(now_ms());
        vec![agent_event("CHANNEL_ANSWER", &s.calls[idx], &ext, &[])]
    });
    let answered = step
        .first()
        .is_some_and(|e| header(e, "Event-Name") == "CHANNEL_ANSWER");
    for e in step {
        push(&server, e).await;
    }
    if !answered {
        return;
    }

    // Bridge.
    let bridge = shared.update(|s| {
        let c = &s.calls[idx];
        if c.agent_ended_ms.is_some() {
            return None;
        }
        if c.ended() {
            s.end_agent(idx);
            return Some((
                false,
                agent_event(
                    "CHANNEL_HANGUP_COMPLETE",
                    &s.calls[idx],
                    &ext,
                    &hangup_headers("NORMAL_CLEARING", "send_bye"),
                ),
            ));
        }
        let c = &mut s.calls[idx];
        c.bridged_ms = Some(now_ms());
        c.bridged_ext = Some(ext.clone());
        let agent = c.agent_leg.clone().unwrap_or_default();
        let extra = [
            ("Other-Type", "originatee"),
            ("Other-Leg-Unique-ID", agent.as_str()),
            ("Bridge-A-Unique-ID", c.uuid.as_str()),
            ("Bridge-B-Unique-ID", agent.as_str()),
            ("variable_bridge_uuid", agent.as_str()),
            ("variable_last_bridge_to", agent.as_str()),
        ];
        let ev = customer_event("CHANNEL_BRIDGE", c, &extra);
        Some((true, ev))
    });
    let Some((bridged, ev)) = bridge else {
        return;
    };
    push(&server, ev).await;
    if !bridged {
        return;
    }

    tokio::time::sleep(Duration::from_millis(plan.talk_ms)).await;
    if plan.customer_ends {
        let events = shared.update(|s| hang_up_customer(s, idx, "NORMAL_CLEARING", "recv_bye"));
        for e in events {
            push(&server, e).await;
        }
    } else {
        // The agent hangs up: its leg first, then the switch sends BYE to the customer.
        let agent_bye = shared.update(|s| {
            if s.calls[idx].ended() || s.end_agent(idx).is_none() {
                return None;
            }
            Some(agent_event(
                "CHANNEL_HANGUP_COMPLETE",
                &s.calls[idx],
                &ext,
                &hangup_headers("NORMAL_CLEARING", "recv_bye"),
            ))
        });
        let Some(agent_bye) = agent_bye else {
            return;
        };
        push(&server, agent_bye).await;
        let events = shared.update(|s| hang_up_customer(s, idx, "NORMAL_CLEARING", "send_bye"));
        for e in events {
            push(&server, e).await;
        }
    }
}

impl Shared {
    fn state_plan(&self, idx: usize) -> Plan {
        self.lock().calls[idx].plan.clone()
    }
}

async fn kill(server: &Arc<Wire>, shared: &Arc<Shared>, job: &str, command: &str, arg: &str) {
    let uuid = arg.split_whitespace().next().unwrap_or("").to_owned();
    let done = shared.update(|s| {
        s.kills.push((arg.to_owned(), now_ms()));
        let Some(&idx) = s.by_uuid.get(&uuid) else {
            s.violations
                .push(format!("uuid_kill of a uuid never originated: {command:?}"));
            return None;
        };
        if s.calls[idx].ended() {
            return None;
        }
        s.calls[idx].killed_ms = Some(now_ms());
        let ringing = s.calls[idx].answered_ms.is_none();
        let cancel = ringing.then(|| (s.calls[idx].job.clone(), s.calls[idx].command.clone()));
        let events = hang_up_customer(s, idx, "NORMAL_CLEARING", "send_bye");
        Some((events, cancel))
    });
    match done {
        None => job_reply(server, job, command, "-ERR No such channel!\n").await,
        Some((events, cancel)) => {
            job_reply(server, job, command, "+OK\n").await;
            for e in events {
                push(server, e).await;
            }
            if let Some((orig_job, orig_command)) = cancel {
                job_reply(server, &orig_job, &orig_command, "-ERR ORIGINATOR_CANCEL\n").await;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Events as FreeSWITCH 1.10 writes them (JSON)
// ------------------------------------------------------------------------------------------

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

pub fn new_uuid() -> String {
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

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| v.as_str())
}

fn hangup_headers<'a>(cause: &'a str, disposition: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("Hangup-Cause", cause),
        ("variable_hangup_cause", cause),
        ("variable_sip_hangup_disposition", disposition),
    ]
}

fn state_of(name: &str) -> (&'static str, &'static str, &'static str, &'static str) {
    match name {
        "CHANNEL_CREATE" => ("CS_INIT", "2", "DOWN", "ringing"),
        "CHANNEL_HANGUP_COMPLETE" => ("CS_REPORTING", "11", "HANGUP", "hangup"),
        _ => ("CS_EXECUTE", "4", "ACTIVE", "answered"),
    }
}

struct LegView<'a> {
    uuid: &'a str,
    call_uuid: &'a str,
    channel: String,
    /// `Caller-Username`: the customer's caller ID on the gateway leg, the extension on the
    /// agent leg (as in `e2e_switch.rs`).
    username: &'a str,
    cid: &'a str,
    dest: &'a str,
    created_ms: u64,
    answered_ms: Option<u64>,
    bridged_ms: Option<u64>,
    ended_ms: Option<u64>,
    vars: Vec<(String, String)>,
}

fn leg_event(name: &str, leg: &LegView, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let (state, state_no, call_state, answer_state) = state_of(name);
    let at = now_us();
    let us = |t: Option<u64>| t.map_or_else(|| "0".to_owned(), |ms| (ms * 1000).to_string());
    let mut h: Vec<(String, String)> = [
        ("Event-Name", name),
        ("Core-UUID", esl_server::CORE_UUID),
        ("FreeSWITCH-Hostname", esl_server::HOSTNAME),
        ("FreeSWITCH-Switchname", esl_server::HOSTNAME),
        ("FreeSWITCH-IPv4", "10.0.0.5"),
        ("Event-Date-Timestamp", &at.to_string()),
        ("Event-Calling-File", "switch_channel.c"),
        ("Event-Calling-Function", "switch_channel_event_set_data"),
        ("Event-Calling-Line-Number", "2800"),
        // Stamped when written (`push`), so sequences follow the wire order.
        ("Event-Sequence", "0"),
        ("Channel-State", state),
        ("Channel-Call-State", call_state),
        ("Channel-State-Number", state_no),
        ("Channel-Name", &leg.channel),
        ("Unique-ID", leg.uuid),
        ("Call-Direction", "outbound"),
        ("Presence-Call-Direction", "outbound"),
        ("Channel-HIT-Dialplan", "false"),
        ("Channel-Call-UUID", leg.call_uuid),
        ("Answer-State", answer_state),
        ("Caller-Direction", "outbound"),
        ("Caller-Logical-Direction", "outbound"),
        ("Caller-Username", leg.username),
        ("Caller-Dialplan", "XML"),
        ("Caller-Caller-ID-Name", leg.cid),
        ("Caller-Caller-ID-Number", leg.cid),
        ("Caller-Orig-Caller-ID-Name", leg.cid),
        ("Caller-Orig-Caller-ID-Number", leg.cid),
        ("Caller-Callee-ID-Number", leg.dest),
        ("Caller-Network-Addr", "10.0.0.5"),
        ("Caller-ANI", leg.cid),
        ("Caller-Destination-Number", leg.dest),
        ("Caller-Unique-ID", leg.uuid),
        ("Caller-Source", "src/switch_ivr_originate.c"),
        ("Caller-Context", "default"),
        ("Caller-Channel-Name", &leg.channel),
        ("Caller-Profile-Index", "1"),
        ("Caller-Profile-Created-Time", &us(Some(leg.created_ms))),
        ("Caller-Channel-Created-Time", &us(Some(leg.created_ms))),
        ("Caller-Channel-Answered-Time", &us(leg.answered_ms)),
        ("Caller-Channel-Progress-Time", "0"),
        ("Caller-Channel-Progress-Media-Time", "0"),
        ("Caller-Channel-Hangup-Time", &us(leg.ended_ms)),
        ("Caller-Channel-Transfer-Time", "0"),
        ("Caller-Channel-Resurrect-Time", "0"),
        ("Caller-Channel-Bridged-Time", &us(leg.bridged_ms)),
        ("Caller-Channel-Last-Hold", "0"),
        ("Caller-Channel-Hold-Accum", "0"),
        ("variable_direction", "outbound"),
        ("variable_uuid", leg.uuid),
        ("variable_call_uuid", leg.call_uuid),
        ("variable_session_id", "11"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    h.extend(
        leg.vars
            .iter()
            .map(|(k, v)| (format!("variable_{k}"), v.clone())),
    );
    if name == "CHANNEL_HANGUP_COMPLETE" {
        let end = leg.ended_ms.unwrap_or_else(now_ms);
        let billsec = leg.answered_ms.map_or(0, |a| end.saturating_sub(a) / 1000);
        let duration = end.saturating_sub(leg.created_ms) / 1000;
        h.push(("variable_billsec".into(), billsec.to_string()));
        h.push(("variable_duration".into(), duration.to_string()));
    }
    for (k, v) in extra {
        match h.iter_mut().find(|(n, _)| n == k) {
            Some(p) => p.1 = (*v).to_owned(),
            None => h.push(((*k).to_owned(), (*v).to_owned())),
        }
    }
    h
}

/// An event of the customer leg U (the gateway channel gridedge originated).
fn customer_event(name: &str, c: &Call, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let cid = c
        .vars
        .get("origination_caller_id_number")
        .map_or("", String::as_str);
    let mut vars: Vec<(String, String)> =
        c.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.extend([
        ("sip_gateway_name".to_owned(), c.gateway.clone()),
        ("sip_to_user".to_owned(), c.dial.clone()),
        ("sip_profile_name".to_owned(), "external".to_owned()),
    ]);
    let leg = LegView {
        uuid: &c.uuid,
        call_uuid: &c.uuid,
        channel: format!("sofia/gateway/{}/{}", c.gateway, c.dial),
        username: cid,
        cid,
        dest: &c.dial,
        created_ms: c.originated_ms,
        answered_ms: c.answered_ms,
        bridged_ms: c.bridged_ms,
        ended_ms: c.ended_ms,
        vars,
    };
    leg_event(name, &leg, extra)
}

/// An event of the agent leg of call `c` (the switch ringing the agent's phone for U).
fn agent_event(name: &str, c: &Call, ext: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let agent_uuid = c.agent_leg.clone().unwrap_or_default();
    let vars = vec![
        ("dialed_user".to_owned(), ext.to_owned()),
        ("dialed_domain".to_owned(), "10.0.0.5".to_owned()),
        ("sip_to_user".to_owned(), ext.to_owned()),
        ("presence_id".to_owned(), format!("{ext}@10.0.0.5")),
        ("originator".to_owned(), c.uuid.clone()),
        ("originating_leg_uuid".to_owned(), c.uuid.clone()),
        ("signal_bond".to_owned(), c.uuid.clone()),
        ("sip_profile_name".to_owned(), "internal".to_owned()),
    ];
    let leg = LegView {
        uuid: &agent_uuid,
        call_uuid: &c.uuid,
        channel: format!("sofia/internal/{ext}@10.0.0.21:5060"),
        username: ext,
        cid: &c.number,
        dest: ext,
        created_ms: c.transfer_ms.unwrap_or(c.originated_ms),
        answered_ms: c.agent_answered_ms,
        bridged_ms: if c.bridged_ext.as_deref() == Some(ext) {
            c.bridged_ms
        } else {
            None
        },
        ended_ms: c.agent_ended_ms,
        vars,
    };
    let mut all: Vec<(&str, &str)> = vec![
        ("Other-Type", "originator"),
        ("Other-Leg-Unique-ID", c.uuid.as_str()),
    ];
    all.extend_from_slice(extra);
    leg_event(name, &leg, &all)
}
