//! The campaign engine: every running task's calls, from launch to the compliance row.
//! Sans-IO in the str0m manner: the shell (`dialer/service.rs`) feeds it what the switch
//! said ([`SwitchInput`]), what presence says about agents ([`AgentSnapshot`]) and `now`, and
//! carries out what it returns ([`Output`]: `bgapi` commands, finished attempts, status
//! changes). No clock, no socket, no database: the same engine runs under unit tests with
//! made-up time.
//!
//! A call's life: launched (a line taken, `originate` sent) → answered (or failed, which ends
//! it) → a person waits for an agent → `uuid_transfer` to the idle agent who has waited
//! longest → bridged → hung up. A person nobody takes within `drop_ms` is hung up by us (an
//! abandoned call; the 2-second rule is computed from timestamps either way). A machine is
//! hung up at once. A call the switch never reports on is killed at the ring timeout plus a
//! guard, so a lost event cannot hold a line forever.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::compliance::{Attempt, AttemptOutcome};
use super::gateway::Gateway;
use super::lines::LineBook;
use super::pacing::{AgentPhase, AgentView, Feedback, Pacer, PacingView, RingingCall};
use super::policies::ratio::{RatioConfig, RatioSemantics};
use super::policies::{PacerConfig, PredictiveConfig};
use super::result::{classify, AgentMiss, AttemptFacts, ResultDetail};
use super::rules::{FailureGuard, PauseReason};
use super::store::DueNumber;
use super::task::{CallType, Counters, PacingChoice, TaskSpec, TaskStatus};
use super::window::CallingWindow;

/// The engine's timing and dial-string settings (`[dialer]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    pub ring_timeout_ms: u64,
    /// Beyond the ring timeout, how long to wait for the switch to report before killing.
    pub ring_guard_ms: u64,
    /// How long an answered person may wait for an agent before we hang up.
    pub drop_ms: u64,
    /// The regulator's threshold: bridged later than this after the answer is abandoned.
    pub abandon_threshold_ms: u64,
    /// How long an agent chosen for a call stays reserved waiting for the bridge.
    pub reserve_ms: u64,
    /// After-call work assumed in the handle time the pacer learns (presence's ACW).
    pub wrap_ms: u64,
    /// `{ext}` is replaced by the agent's extension.
    pub agent_dial_string: String,
    /// How long a job's `+OK` waits for the answer event before it counts as the answer.
    /// FreeSWITCH sends `CHANNEL_ANSWER` (which carries the machine verdict) before the job
    /// result, but the two reach the engine by different paths and the job can overtake.
    pub answer_grace_ms: u64,
    /// A bridged call longer than this is hung up: its hang-up event was lost (ESL drops
    /// events under load), and it would otherwise hold a line for ever.
    pub max_call_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            ring_timeout_ms: 30_000,
            ring_guard_ms: 15_000,
            drop_ms: 2_000,
            abandon_threshold_ms: 2_000,
            reserve_ms: 10_000,
            wrap_ms: 0,
            agent_dial_string: "user/{ext}".into(),
            answer_grace_ms: 500,
            max_call_ms: 4 * 3_600_000,
        }
    }
}

/// One signed-in agent of a project, as presence sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSnapshot {
    pub ext: String,
    pub phase: AgentPhase,
    /// When the agent entered the phase (Unix ms).
    pub since_ms: u64,
}

/// What the switch said about one of our calls (matched by the origination UUID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchInput {
    /// The originate job's answer: `+OK` (answered) or `-ERR <cause>`.
    Job {
        uuid: String,
        ok: bool,
        cause: String,
    },
    /// The originate was never sent (not connected, queue full, refused): nothing was
    /// dialled. The line is released and the number goes back, with no attempt logged.
    NotSent {
        uuid: String,
    },
    /// The job's answer never came (timeout, connection dropped after sending): the call may
    /// be ringing; its events or the guards end it.
    JobUnknown {
        uuid: String,
    },
    /// What `uuid_kill` got back.
    KillResult {
        uuid: String,
        result: KillResult,
    },
    Answered {
        uuid: String,
        machine: bool,
    },
    Bridged {
        uuid: String,
    },
    /// The transfer to the agent was refused (`-ERR` on `uuid_transfer`).
    TransferFailed {
        uuid: String,
    },
    Hangup {
        uuid: String,
        cause: String,
        /// `sip_hangup_disposition` says the customer's side sent the BYE/CANCEL.
        customer_hung_up: bool,
        sip_status: Option<u16>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillResult {
    /// `+OK`: the hang-up event follows.
    Ok,
    /// `-ERR No such channel`: it was already gone (its hang-up event was lost).
    Gone,
    /// Not sent or refused otherwise: try again.
    Failed,
}

/// An attempt that ended, to be logged (and its number moved on) by the shell.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub task: String,
    pub attempt: Attempt,
    pub result: ResultDetail,
    /// Retries the number had before this attempt.
    pub retries: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A `bgapi` command about call `uuid`.
    Command {
        uuid: String,
        command: String,
    },
    Finished(Finished),
    /// A task's counters or status changed: publish callTaskStatus.
    Status {
        task: String,
    },
    /// The failure guard paused a task.
    Paused {
        task: String,
        reason: PauseReason,
    },
    /// A claimed number was not dialled after all: give it back.
    Unclaim {
        number_id: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    Machine,
    Dropped,
    RingGuard,
    TooLong,
}

#[derive(Debug, Clone)]
struct LiveCall {
    task: String,
    number_id: i64,
    number: String,
    retries: u32,
    caller_id: String,
    gateway: String,
    dialed_ms: u64,
    answered_ms: Option<u64>,
    machine: bool,
    agent: Option<String>,
    bridged_ms: Option<u64>,
    kill: Option<Kill>,
    /// When the kill was last sent, or acknowledged.
    killed_ms: u64,
    /// The switch acknowledged the kill; the hang-up event is expected.
    kill_acked: bool,
    /// The kill must be sent (again) at the next tick.
    kill_resend: bool,
    /// The originate job reported failure; the hang-up event may still follow.
    job_failed: Option<String>,
    /// The originate job said `+OK` (answered) before any answer event.
    job_ok_ms: Option<u64>,
    pacing: String,
}

/// A running (or paused, or initialized) task as the engine holds it.
pub struct TaskRun {
    pub spec: TaskSpec,
    pub status: TaskStatus,
    pub counters: Counters,
    pub total: u64,
    /// Nothing left to dial right now (the last claim came back short).
    pub drained: bool,
    pacer: Box<dyn Pacer>,
    guard: FailureGuard,
    window: Option<CallingWindow>,
    /// Caller ID chosen for the task (groups, 保底号码); `None` falls back to the gateway's.
    pub caller_id: Option<String>,
}

impl TaskRun {
    pub fn pacer_name(&self) -> String {
        self.pacer.name()
    }
}

/// Builds a task's pacer from its spec.
/// The ratio policies take `rate` within their range [1, 15]; seed 004 allows fractions
/// below 1, which would mean "fewer calls than agents": that is progressive at best, so the
/// floor is 1.
pub fn pacer_for(spec: &TaskSpec, cfg: &EngineConfig) -> Box<dyn Pacer> {
    let ratio = |per| {
        PacerConfig::Ratio(RatioConfig {
            ratio: spec.rate.clamp(1.0, 15.0),
            per,
        })
    };
    let cfg = match (spec.call_type, spec.pacing) {
        (CallType::Preview, _) => PacerConfig::Preview(Default::default()),
        (_, PacingChoice::Progressive) => PacerConfig::Progressive(Default::default()),
        (_, PacingChoice::RatioIdle) => ratio(RatioSemantics::Idle),
        (_, PacingChoice::RatioActive) => ratio(RatioSemantics::Active),
        // `rate` caps calls per available agent; the grace and the ring timeout are the
        // runtime's own.
        (_, PacingChoice::Predictive) => PacerConfig::Predictive(PredictiveConfig {
            max_lines_per_agent: spec.rate.clamp(1.0, 10.0),
            grace_s: (cfg.drop_ms as f64 / 1000.0).clamp(0.0, 10.0),
            ring_timeout_s: (cfg.ring_timeout_ms as f64 / 1000.0).clamp(1.0, 120.0),
            ..PredictiveConfig::default()
        }),
    };
    cfg.build()
}

pub struct Engine {
    cfg: EngineConfig,
    tasks: BTreeMap<String, TaskRun>,
    calls: HashMap<String, LiveCall>,
    /// Answered people waiting for an agent, oldest first.
    waiting: VecDeque<String>,
    /// Agent → (call, reserved until).
    reserved: HashMap<String, (String, u64)>,
    lines: LineBook,
    gateways: HashMap<String, Gateway>,
}

/// Q.850 cause values of FreeSWITCH's hang-up cause names that decide a result.
fn q850(cause: &str) -> Option<u16> {
    Some(match cause {
        "UNALLOCATED_NUMBER" => 1,
        "NO_ROUTE_DESTINATION" => 3,
        "NORMAL_CLEARING" => 16,
        "USER_BUSY" => 17,
        "NO_USER_RESPONSE" => 18,
        "NO_ANSWER" => 19,
        "SUBSCRIBER_ABSENT" => 20,
        "CALL_REJECTED" => 21,
        "NUMBER_CHANGED" => 22,
        "INVALID_NUMBER_FORMAT" => 28,
        "NORMAL_TEMPORARY_FAILURE" => 41,
        _ => return None,
    })
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine {
            cfg,
            tasks: BTreeMap::new(),
            calls: HashMap::new(),
            waiting: VecDeque::new(),
            reserved: HashMap::new(),
            lines: LineBook::default(),
            gateways: HashMap::new(),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Replaces the gateway table (after add/update, and at start-up).
    pub fn set_gateways(&mut self, gws: Vec<Gateway>) {
        for g in &gws {
            self.lines.set_gateway(&g.gw_code, g.concurrency, g.enabled);
        }
        self.gateways = gws.into_iter().map(|g| (g.gw_code.clone(), g)).collect();
    }

    pub fn lines(&self) -> &LineBook {
        &self.lines
    }

    /// Adds or replaces a task (submit, load at start-up, setTaskConcurrent). Its pacer is
    /// rebuilt only when the task is new or its pacing inputs changed.
    pub fn upsert_task(
        &mut self,
        spec: TaskSpec,
        status: TaskStatus,
        counters: Counters,
        total: u64,
        caller_id: Option<String>,
    ) -> Result<(), String> {
        let lines: Vec<(String, u32)> = spec
            .lines
            .iter()
            .map(|l| (l.code.clone(), l.concurrency))
            .collect();
        self.lines
            .set_task(spec.code.as_str(), &lines)
            .map_err(|e| e.to_string())?;
        let window = match (&spec.week_periods, &spec.time_periods) {
            (None, None) => None,
            (w, t) => Some(
                CallingWindow::parse(
                    &spec.time_zone,
                    w.as_deref().unwrap_or("0|1|2|3|4|5|6"),
                    t.as_deref().unwrap_or("00:00-23:59"),
                    None,
                    None,
                )
                .map_err(|e| e.to_string())?,
            ),
        };
        let code = spec.code.as_str().to_owned();
        match self.tasks.get_mut(&code) {
            Some(t) => {
                if t.spec.rate != spec.rate || t.spec.pacing != spec.pacing {
                    t.pacer = pacer_for(&spec, &self.cfg);
                }
                t.spec = spec;
                t.status = status;
                t.total = total;
                t.window = window;
                t.caller_id = caller_id;
            }
            None => {
                let guard = FailureGuard::new(spec.continuous_seconds, spec.continuous_failed);
                let pacer = pacer_for(&spec, &self.cfg);
                self.tasks.insert(
                    code,
                    TaskRun {
                        spec,
                        status,
                        counters,
                        total,
                        drained: false,
                        pacer,
                        guard,
                        window,
                        caller_id,
                    },
                );
            }
        }
        Ok(())
    }

    pub fn task(&self, code: &str) -> Option<&TaskRun> {
        self.tasks.get(code)
    }

    pub fn tasks(&self) -> impl Iterator<Item = &TaskRun> {
        self.tasks.values()
    }

    pub fn set_status(&mut self, code: &str, status: TaskStatus) -> Vec<Output> {
        match self.tasks.get_mut(code) {
            Some(t) if t.status != status => {
                t.status = status;
                if status == TaskStatus::Running {
                    t.drained = false;
                }
                vec![Output::Status { task: code.into() }]
            }
            _ => Vec::new(),
        }
    }

    pub fn add_total(&mut self, code: &str, n: u64) {
        if let Some(t) = self.tasks.get_mut(code) {
            t.total += n;
            t.drained = false;
        }
    }

    /// Calls of a task in flight (launched, not yet ended).
    pub fn in_flight(&self, code: &str) -> u32 {
        self.calls.values().filter(|c| c.task == code).count() as u32
    }

    pub fn calls_in_flight(&self) -> usize {
        self.calls.len()
    }

    fn view_agents(&self, agents: &[AgentSnapshot]) -> Vec<AgentView> {
        agents
            .iter()
            .map(|a| {
                // An agent we reserved is as good as talking: presence has not caught up yet.
                let phase = if a.phase == AgentPhase::Ready && self.reserved.contains_key(&a.ext) {
                    AgentPhase::Talking
                } else {
                    a.phase
                };
                AgentView {
                    phase,
                    since_ms: a.since_ms,
                }
            })
            .collect()
    }

    /// How many calls the task's pacer wants launched now (0 when the task is not running,
    /// outside its calling window, expired, or a preview task).
    pub fn launch_count(&mut self, code: &str, agents: &[AgentSnapshot], now_ms: u64) -> u32 {
        let views = self.view_agents(agents);
        let headroom = self.lines.headroom(code);
        let ringing: Vec<RingingCall> = self
            .calls
            .values()
            .filter(|c| c.task == code && c.answered_ms.is_none())
            .map(|c| RingingCall {
                dialed_ms: c.dialed_ms,
            })
            .collect();
        let waiting = self
            .waiting
            .iter()
            .filter(|u| self.calls.get(*u).is_some_and(|c| c.task == code))
            .count() as u32;
        let Some(t) = self.tasks.get_mut(code) else {
            return 0;
        };
        if t.status != TaskStatus::Running
            || t.spec.call_type != CallType::Predictive
            || now_ms >= t.spec.expires_ms
            || t.window.as_ref().is_some_and(|w| !w.allows(now_ms))
        {
            return 0;
        }
        let view = PacingView {
            now_ms,
            agents: &views,
            ringing: &ringing,
            waiting,
            line_headroom: headroom,
        };
        t.pacer.launch(&view).min(headroom)
    }

    /// Tasks past their expiry: ended, with a status output each.
    pub fn expire(&mut self, now_ms: u64) -> Vec<String> {
        let mut out = Vec::new();
        for (code, t) in &mut self.tasks {
            if t.status != TaskStatus::Ended && now_ms >= t.spec.expires_ms {
                t.status = TaskStatus::Ended;
                out.push(code.clone());
            }
        }
        out
    }

    /// Marks a task as having nothing due (the shell's claim came back short).
    pub fn set_drained(&mut self, code: &str, drained: bool) {
        if let Some(t) = self.tasks.get_mut(code) {
            t.drained = drained;
        }
    }

    /// Launches one claimed number: takes a line and returns the originate command, or `None`
    /// when no line is free (the shell gives the number back).
    pub fn launch(
        &mut self,
        code: &str,
        due: &DueNumber,
        uuid: &str,
        now_ms: u64,
    ) -> Option<Output> {
        let t = self.tasks.get(code)?;
        let gw_code = self.lines.acquire(code)?;
        let gw = self.gateways.get(&gw_code);
        let caller_id = t
            .caller_id
            .clone()
            .or_else(|| gw.and_then(|g| g.origination_call_id.clone()))
            .unwrap_or_default();
        let digits = gw.map_or_else(|| due.number.clone(), |g| g.dial_digits(&due.number));
        let ring_secs = self.cfg.ring_timeout_ms.div_ceil(1000).max(1);
        let mut vars = format!(
            "origination_uuid={uuid},originate_timeout={ring_secs},ignore_early_media=true,gridedge_task={code},gridedge_attempt={}",
            due.id
        );
        if !caller_id.is_empty() {
            vars.push_str(&format!(",origination_caller_id_number={caller_id}"));
        }
        let command = format!("originate {{{vars}}}sofia/gateway/{gw_code}/{digits} &park()");
        let pacing = format!(
            "{} in_flight={}",
            t.pacer.name(),
            self.calls.values().filter(|c| c.task == code).count()
        );
        self.calls.insert(
            uuid.to_owned(),
            LiveCall {
                task: code.to_owned(),
                number_id: due.id,
                number: due.number.clone(),
                retries: due.retries,
                caller_id,
                gateway: gw_code,
                dialed_ms: now_ms,
                answered_ms: None,
                machine: false,
                agent: None,
                bridged_ms: None,
                kill: None,
                killed_ms: 0,
                kill_acked: false,
                kill_resend: false,
                job_failed: None,
                job_ok_ms: None,
                pacing,
            },
        );
        Some(Output::Command {
            uuid: uuid.to_owned(),
            command,
        })
    }

    /// Whether a call is ours.
    pub fn knows(&self, uuid: &str) -> bool {
        self.calls.contains_key(uuid)
    }

    /// Applies what the switch said.
    pub fn on_switch(&mut self, input: SwitchInput, now_ms: u64) -> Vec<Output> {
        match input {
            SwitchInput::Job { uuid, ok: true, .. } => {
                if let Some(c) = self.calls.get_mut(&uuid) {
                    if c.answered_ms.is_none() && c.job_ok_ms.is_none() {
                        c.job_ok_ms = Some(now_ms);
                    }
                }
                Vec::new()
            }
            SwitchInput::Job {
                uuid,
                ok: false,
                cause,
            } => {
                let Some(c) = self.calls.get_mut(&uuid) else {
                    return Vec::new();
                };
                if c.answered_ms.is_some() {
                    return Vec::new();
                }
                // `-ERR` means the originate failed before an answer; FreeSWITCH has already
                // torn the channel down, so this ends the attempt.
                c.job_failed = Some(cause.clone());
                self.finish(&uuid, &cause, false, None, now_ms)
            }
            SwitchInput::NotSent { uuid } => {
                let Some(c) = self.calls.get(&uuid) else {
                    return Vec::new();
                };
                if c.answered_ms.is_some() {
                    return Vec::new();
                }
                let Some(c) = self.calls.remove(&uuid) else {
                    return Vec::new();
                };
                self.lines.release(&c.task, &c.gateway);
                vec![Output::Unclaim {
                    number_id: c.number_id,
                }]
            }
            SwitchInput::JobUnknown { .. } => Vec::new(),
            SwitchInput::KillResult { uuid, result } => {
                let Some(c) = self.calls.get_mut(&uuid) else {
                    return Vec::new();
                };
                match result {
                    KillResult::Ok => {
                        c.kill_acked = true;
                        c.killed_ms = now_ms;
                        Vec::new()
                    }
                    KillResult::Failed => {
                        c.kill_resend = true;
                        Vec::new()
                    }
                    KillResult::Gone => self.finish(&uuid, "NORMAL_CLEARING", false, None, now_ms),
                }
            }
            SwitchInput::Answered { uuid, machine } => self.answered(&uuid, machine, now_ms),
            SwitchInput::Bridged { uuid } => {
                let Some(c) = self.calls.get_mut(&uuid) else {
                    return Vec::new();
                };
                if c.bridged_ms.is_some() || c.answered_ms.is_none() {
                    return Vec::new();
                }
                c.bridged_ms = Some(now_ms);
                let wait = now_ms.saturating_sub(c.answered_ms.unwrap_or(now_ms));
                let task = c.task.clone();
                if let Some(a) = c.agent.clone() {
                    if self.reserved.get(&a).is_some_and(|(u, _)| *u == uuid) {
                        self.reserved.remove(&a);
                    }
                }
                if let Some(t) = self.tasks.get_mut(&task) {
                    let fb = if wait <= self.cfg.abandon_threshold_ms {
                        Feedback::Connected {
                            at_ms: now_ms,
                            wait_ms: wait,
                        }
                    } else {
                        Feedback::Abandoned { at_ms: now_ms }
                    };
                    t.pacer.observe(&fb);
                }
                Vec::new()
            }
            SwitchInput::TransferFailed { uuid } => {
                // The agent could not be rung: free the agent, put the caller back in line.
                if let Some(c) = self.calls.get_mut(&uuid) {
                    if c.bridged_ms.is_none() && c.kill.is_none() {
                        if let Some(a) = c.agent.take() {
                            if self.reserved.get(&a).is_some_and(|(u, _)| *u == uuid) {
                                self.reserved.remove(&a);
                            }
                        }
                        if !self.waiting.contains(&uuid) {
                            self.waiting.push_front(uuid);
                        }
                    }
                }
                Vec::new()
            }
            SwitchInput::Hangup {
                uuid,
                cause,
                customer_hung_up,
                sip_status,
            } => self.finish(&uuid, &cause, customer_hung_up, sip_status, now_ms),
        }
    }

    fn answered(&mut self, uuid: &str, machine: bool, now_ms: u64) -> Vec<Output> {
        let Some(c) = self.calls.get_mut(uuid) else {
            return Vec::new();
        };
        if c.answered_ms.is_some() {
            // The job's `+OK` can overtake the answer event (they travel different paths);
            // a machine verdict arriving second still hangs the machine up.
            if machine && !c.machine && c.bridged_ms.is_none() && c.kill.is_none() {
                c.machine = true;
                c.kill = Some(Kill::Machine);
                c.killed_ms = now_ms;
                // An agent already offered this call keeps its reservation until the call
                // ends: their phone may be ringing with it right now.
                self.waiting.retain(|u| u != uuid);
                return vec![Output::Command {
                    uuid: uuid.to_owned(),
                    command: format!("uuid_kill {uuid}"),
                }];
            }
            return Vec::new();
        }
        c.answered_ms = Some(now_ms);
        c.machine = machine;
        let ring = now_ms.saturating_sub(c.dialed_ms);
        let task = c.task.clone();
        if let Some(t) = self.tasks.get_mut(&task) {
            t.pacer.observe(&Feedback::Answered {
                at_ms: now_ms,
                ring_ms: ring,
                live: !machine,
            });
        }
        if machine {
            c.kill = Some(Kill::Machine);
            c.killed_ms = now_ms;
            return vec![Output::Command {
                uuid: uuid.to_owned(),
                command: format!("uuid_kill {uuid}"),
            }];
        }
        self.waiting.push_back(uuid.to_owned());
        Vec::new()
    }

    /// Connects waiting people to idle agents of their task's project, longest-idle agent
    /// first. `agents` maps a project to its signed-in agents.
    pub fn connect(
        &mut self,
        agents: &HashMap<String, Vec<AgentSnapshot>>,
        now_ms: u64,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let mut taken: HashSet<String> = self.reserved.keys().cloned().collect();
        let mut still = VecDeque::new();
        while let Some(uuid) = self.waiting.pop_front() {
            let Some(c) = self.calls.get(&uuid) else {
                continue;
            };
            if c.kill.is_some() || c.bridged_ms.is_some() {
                continue;
            }
            let project = self
                .tasks
                .get(&c.task)
                .map(|t| t.spec.project.clone())
                .unwrap_or_default();
            let pick = agents.get(&project).and_then(|list| {
                list.iter()
                    .filter(|a| a.phase == AgentPhase::Ready && !taken.contains(&a.ext))
                    .min_by(|a, b| a.since_ms.cmp(&b.since_ms).then(a.ext.cmp(&b.ext)))
            });
            match pick {
                Some(a) => {
                    taken.insert(a.ext.clone());
                    self.reserved.insert(
                        a.ext.clone(),
                        (uuid.clone(), now_ms.saturating_add(self.cfg.reserve_ms)),
                    );
                    let dial = self.cfg.agent_dial_string.replace("{ext}", &a.ext);
                    if let Some(c) = self.calls.get_mut(&uuid) {
                        c.agent = Some(a.ext.clone());
                    }
                    out.push(Output::Command {
                        uuid: uuid.clone(),
                        command: format!("uuid_transfer {uuid} bridge:{dial} inline"),
                    });
                }
                None => still.push_back(uuid),
            }
        }
        self.waiting = still;
        out
    }

    /// Timers: drops people who waited too long, kills calls the switch forgot, frees stale
    /// reservations, ends expired tasks.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Output> {
        let mut out = Vec::new();
        // Answers known only from the job: the answer event was lost (or is very late).
        let mut by_job: Vec<(String, u64)> = self
            .calls
            .iter()
            .filter_map(|(u, c)| match (c.answered_ms, c.job_ok_ms) {
                (None, Some(ok)) if now_ms.saturating_sub(ok) >= self.cfg.answer_grace_ms => {
                    Some((u.clone(), ok))
                }
                _ => None,
            })
            .collect();
        by_job.sort();
        for (uuid, at) in by_job {
            out.extend(self.answered(&uuid, false, at));
        }
        let mut kills = Vec::new();
        for (uuid, c) in &mut self.calls {
            if c.kill.is_some() {
                continue;
            }
            let kill = match (c.answered_ms, c.bridged_ms) {
                (_, Some(b)) if now_ms.saturating_sub(b) >= self.cfg.max_call_ms => {
                    Some(Kill::TooLong)
                }
                (_, Some(_)) => None,
                (Some(a), None) if now_ms.saturating_sub(a) >= self.cfg.drop_ms => {
                    Some(Kill::Dropped)
                }
                (None, None)
                    if now_ms.saturating_sub(c.dialed_ms)
                        >= self.cfg.ring_timeout_ms + self.cfg.ring_guard_ms =>
                {
                    Some(Kill::RingGuard)
                }
                _ => None,
            };
            if kill.is_some() {
                c.kill = kill;
                c.killed_ms = now_ms;
                kills.push(uuid.clone());
            }
        }
        // Kills the switch did not take: send again.
        for (uuid, c) in &mut self.calls {
            if c.kill.is_some() && c.kill_resend {
                c.kill_resend = false;
                c.killed_ms = now_ms;
                kills.push(uuid.clone());
            }
        }
        kills.sort();
        for uuid in kills {
            self.waiting.retain(|u| *u != uuid);
            out.push(Output::Command {
                uuid: uuid.clone(),
                command: format!("uuid_kill {uuid}"),
            });
        }
        // A kill the switch acknowledged but whose hang-up event never came (lost): end the
        // call ourselves once the guard passes, so neither a line nor an agent stays held.
        // An unanswered kill is sent again instead: the call may still be up.
        let mut resend = Vec::new();
        for (uuid, c) in &mut self.calls {
            if c.kill.is_some()
                && !c.kill_acked
                && now_ms.saturating_sub(c.killed_ms) >= self.cfg.ring_guard_ms
            {
                c.killed_ms = now_ms;
                resend.push(uuid.clone());
            }
        }
        resend.sort();
        for uuid in resend {
            out.push(Output::Command {
                uuid: uuid.clone(),
                command: format!("uuid_kill {uuid}"),
            });
        }
        let stale: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                c.kill.is_some()
                    && c.kill_acked
                    && now_ms.saturating_sub(c.killed_ms) >= self.cfg.ring_guard_ms
            })
            .map(|(u, _)| u.clone())
            .collect();
        for uuid in stale {
            out.extend(self.finish(&uuid, "LOSE_RACE", false, None, now_ms));
        }
        self.reserved.retain(|_, (_, until)| *until > now_ms);
        for code in self.expire(now_ms) {
            out.push(Output::Status { task: code });
        }
        out
    }

    /// Ends a call: classifies it, frees its line and agent, feeds the pacer and the guard.
    fn finish(
        &mut self,
        uuid: &str,
        cause: &str,
        customer_hung_up: bool,
        sip_status: Option<u16>,
        now_ms: u64,
    ) -> Vec<Output> {
        let Some(c) = self.calls.remove(uuid) else {
            return Vec::new();
        };
        self.waiting.retain(|u| u != uuid);
        let person = c.answered_ms.is_some() && !c.machine;
        let agent_miss = match (person, c.bridged_ms, c.kill, &c.agent) {
            (true, None, Some(Kill::Dropped), None) => Some(AgentMiss::NoneFree),
            (true, None, Some(Kill::Dropped), Some(_)) => Some(AgentMiss::NoAnswer),
            // FreeSWITCH hung the customer up itself: the bridge to the agent failed.
            (true, None, None, Some(_)) if !customer_hung_up => Some(match cause {
                "USER_BUSY" => AgentMiss::Busy,
                _ => AgentMiss::NoAnswer,
            }),
            _ => None,
        };
        if let Some(a) = &c.agent {
            if self.reserved.get(a).is_some_and(|(u, _)| u == uuid) {
                if agent_miss.is_some() {
                    // The agent's phone failed this call: keep them out of the next pick for
                    // a while, or every answer would go to the same dead phone.
                    self.reserved.insert(
                        a.clone(),
                        (uuid.to_owned(), now_ms.saturating_add(self.cfg.reserve_ms)),
                    );
                } else {
                    self.reserved.remove(a);
                }
            }
        }
        self.lines.release(&c.task, &c.gateway);
        let facts = AttemptFacts {
            answered_after_ms: c.answered_ms.map(|a| a.saturating_sub(c.dialed_ms)),
            machine: c.machine,
            bridged_after_ms: match (c.answered_ms, c.bridged_ms) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            },
            agent_hung_up: !customer_hung_up,
            dropped_by_system: false,
            agent_miss,
            q850: q850(cause),
            sip_status,
            ring_timeout: c.kill == Some(Kill::RingGuard),
        };
        let (result, mut outcome) = classify(&facts, self.cfg.abandon_threshold_ms);
        if c.answered_ms.is_none() && matches!(cause, "NO_ANSWER" | "NO_USER_RESPONSE") {
            outcome = AttemptOutcome::NoAnswer;
        }
        let mut out = Vec::new();
        if let Some(t) = self.tasks.get_mut(&c.task) {
            match (c.answered_ms, person, c.bridged_ms) {
                (None, _, _) => t.pacer.observe(&Feedback::Failed {
                    at_ms: now_ms,
                    after_ms: now_ms.saturating_sub(c.dialed_ms),
                }),
                (Some(_), true, None) => t.pacer.observe(&Feedback::Abandoned { at_ms: now_ms }),
                (Some(_), true, Some(b)) => t.pacer.observe(&Feedback::HandleDone {
                    at_ms: now_ms,
                    talk_ms: now_ms.saturating_sub(b),
                    wrap_ms: self.cfg.wrap_ms,
                }),
                _ => {}
            }
            t.counters.add(Some(result), outcome);
            let talk = c.bridged_ms.map(|b| now_ms.saturating_sub(b));
            if let Some(reason) = t.guard.observe(result, talk) {
                if t.status == TaskStatus::Running {
                    t.status = TaskStatus::Paused;
                    out.push(Output::Paused {
                        task: c.task.clone(),
                        reason,
                    });
                }
            }
        }
        out.push(Output::Finished(Finished {
            task: c.task.clone(),
            attempt: Attempt {
                campaign: c.task.clone(),
                number: c.number.clone(),
                caller_id: c.caller_id.clone(),
                dialed_ms: c.dialed_ms,
                answered_ms: c.answered_ms,
                bridged_ms: c.bridged_ms,
                ended_ms: now_ms,
                outcome,
                agent: c.bridged_ms.and(c.agent.clone()),
                call_id: Some(uuid.to_owned()),
                pacing: Some(c.pacing.clone()),
                result_detail: Some(result.code()),
                task_number_id: Some(c.number_id),
            },
            result,
            retries: c.retries,
        }));
        out.push(Output::Status { task: c.task });
        out
    }

    /// After an event-socket (re)connect: the switch's live channels. Our calls launched
    /// before `since_ms` and missing from `live` ended while their events were lost; they are
    /// ended here (an unanswered one as not connected, an answered one as hung up).
    pub fn reconcile(&mut self, live: &HashSet<String>, since_ms: u64, now_ms: u64) -> Vec<Output> {
        let mut gone: Vec<String> = self
            .calls
            .iter()
            .filter(|(u, c)| c.dialed_ms < since_ms && !live.contains(*u))
            .map(|(u, _)| u.clone())
            .collect();
        gone.sort();
        let mut out = Vec::new();
        for uuid in gone {
            out.extend(self.finish(&uuid, "LOSE_RACE", true, None, now_ms));
        }
        out
    }

    /// Counts a number that was never dialled (blacklisted after import).
    pub fn suppressed(&mut self, code: &str) {
        if let Some(t) = self.tasks.get_mut(code) {
            t.counters.add(None, AttemptOutcome::Suppressed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialer::task::{Code, NumberSource, TaskLine};

    fn spec(code: &str, concurrency: u32) -> TaskSpec {
        TaskSpec {
            code: Code::parse(code).unwrap(),
            project: "p1".into(),
            call_type: CallType::Predictive,
            pacing: PacingChoice::Progressive,
            lines: vec![TaskLine {
                code: "1001".into(),
                concurrency,
            }],
            rate: 1.0,
            source: NumberSource::List(Code::parse("l").unwrap()),
            expires_ms: 10_000_000,
            time_zone: "UTC".into(),
            week_periods: None,
            time_periods: None,
            org_no: None,
            service_id: None,
            city_org_no: None,
            caller_id_groups: vec![],
            retry_rules: vec![],
            continuous_seconds: 0,
            continuous_failed: 3,
        }
    }

    fn gateway(cap: u32) -> Gateway {
        serde_json::from_value(serde_json::json!({
            "id": 1, "gwCode": "1001", "gwName": "g", "registerType": 1,
            "originationCallId": "95598", "codec": null, "mobilePhonePrefix": null,
            "fixedPhonePrefix": null, "realm": "127.0.0.1:5080", "username": null,
            "remark": null, "callLimit": null, "billType": null, "billsec": null, "price": null,
            "enabled": true, "concurrency": cap, "returnVisit": false,
            "accountBalance": null, "rechargedAmount": null
        }))
        .unwrap()
    }

    fn engine(cap: u32) -> Engine {
        let mut e = Engine::new(EngineConfig::default());
        e.set_gateways(vec![gateway(cap)]);
        e.upsert_task(
            spec("t1", cap),
            TaskStatus::Running,
            Counters::default(),
            10,
            None,
        )
        .unwrap();
        e
    }

    fn idle(ext: &str, since: u64) -> AgentSnapshot {
        AgentSnapshot {
            ext: ext.into(),
            phase: AgentPhase::Ready,
            since_ms: since,
        }
    }

    fn due(id: i64) -> DueNumber {
        DueNumber {
            id,
            number: format!("1390000{id:04}"),
            original: format!("1390000{id:04}"),
            retries: 0,
        }
    }

    /// The switch reports the answer of `uuid` at `at` (by a machine when `machine`).
    fn answer(e: &mut Engine, uuid: &str, machine: bool, at: u64) -> Vec<Output> {
        e.on_switch(
            SwitchInput::Answered {
                uuid: uuid.into(),
                machine,
            },
            at,
        )
    }

    /// The switch reports a hang-up of `uuid` at `at`.
    fn hang(
        e: &mut Engine,
        uuid: &str,
        cause: &str,
        customer_hung_up: bool,
        at: u64,
    ) -> Vec<Output> {
        e.on_switch(
            SwitchInput::Hangup {
                uuid: uuid.into(),
                cause: cause.into(),
                customer_hung_up,
                sip_status: None,
            },
            at,
        )
    }

    fn finished(out: &[Output]) -> Vec<&Finished> {
        out.iter()
            .filter_map(|o| match o {
                Output::Finished(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn originate_carries_uuid_task_caller_id_and_gateway() {
        let mut e = engine(2);
        let Some(Output::Command { command, .. }) = e.launch("t1", &due(7), "u-1", 0) else {
            panic!("no launch")
        };
        assert_eq!(
            command,
            "originate {origination_uuid=u-1,originate_timeout=30,ignore_early_media=true,gridedge_task=t1,gridedge_attempt=7,origination_caller_id_number=95598}sofia/gateway/1001/13900000007 &park()"
        );
        assert!(e.launch("t1", &due(8), "u-2", 0).is_some());
        assert!(e.launch("t1", &due(9), "u-3", 0).is_none(), "line cap 2");
        assert_eq!(e.in_flight("t1"), 2);
    }

    #[test]
    fn answered_person_goes_to_the_longest_idle_agent_and_connects() {
        let mut e = engine(2);
        e.launch("t1", &due(1), "u-1", 0);
        assert!(e
            .on_switch(
                SwitchInput::Answered {
                    uuid: "u-1".into(),
                    machine: false
                },
                500
            )
            .is_empty());
        let agents = HashMap::from([("p1".to_string(), vec![idle("1002", 50), idle("1001", 100)])]);
        let out = e.connect(&agents, 600);
        assert_eq!(
            out,
            vec![Output::Command {
                uuid: "u-1".into(),
                command: "uuid_transfer u-1 bridge:user/1002 inline".into()
            }]
        );
        e.on_switch(SwitchInput::Bridged { uuid: "u-1".into() }, 900);
        let out = hang(&mut e, "u-1", "NORMAL_CLEARING", true, 60_900);
        let f = finished(&out);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].result, ResultDetail::CustomerHungUp);
        assert_eq!(f[0].attempt.outcome, AttemptOutcome::Connected);
        assert_eq!(f[0].attempt.agent.as_deref(), Some("1002"));
        assert_eq!(e.task("t1").unwrap().counters.success, 1);
        assert_eq!(e.lines().headroom("t1"), 2, "line released");
    }

    #[test]
    fn a_person_nobody_takes_is_dropped_and_logged_abandoned() {
        let mut e = engine(2);
        e.launch("t1", &due(1), "u-1", 0);
        answer(&mut e, "u-1", false, 1_000);
        assert!(e.connect(&HashMap::new(), 1_100).is_empty());
        assert!(e.tick(2_999).is_empty());
        let out = e.tick(3_000);
        assert_eq!(
            out,
            vec![Output::Command {
                uuid: "u-1".into(),
                command: "uuid_kill u-1".into()
            }]
        );
        let out = hang(&mut e, "u-1", "NORMAL_CLEARING", false, 3_050);
        let f = finished(&out);
        assert_eq!(f[0].result, ResultDetail::AllAgentsBusy);
        assert_eq!(f[0].attempt.outcome, AttemptOutcome::Abandoned);
        assert_eq!(e.task("t1").unwrap().counters.miss, 1);
    }

    #[test]
    fn late_bridge_counts_as_abandoned() {
        let mut e = engine(2);
        e.launch("t1", &due(1), "u-1", 0);
        answer(&mut e, "u-1", false, 1_000);
        let agents = HashMap::from([("p1".to_string(), vec![idle("1001", 0)])]);
        e.connect(&agents, 1_000);
        e.on_switch(SwitchInput::Bridged { uuid: "u-1".into() }, 3_500);
        let out = hang(&mut e, "u-1", "NORMAL_CLEARING", false, 9_000);
        let f = finished(&out);
        assert_eq!(f[0].result, ResultDetail::AgentHungUp);
        assert_eq!(f[0].attempt.outcome, AttemptOutcome::Abandoned);
    }

    #[test]
    fn failures_machines_and_the_guard() {
        let mut e = engine(3);
        e.launch("t1", &due(1), "u-1", 0);
        e.launch("t1", &due(2), "u-2", 0);
        e.launch("t1", &due(3), "u-3", 0);
        let out = e.on_switch(
            SwitchInput::Job {
                uuid: "u-1".into(),
                ok: false,
                cause: "USER_BUSY".into(),
            },
            100,
        );
        assert_eq!(finished(&out)[0].attempt.outcome, AttemptOutcome::Busy);
        // The hang-up that follows a failed job is ignored (already finished).
        assert!(e
            .on_switch(
                SwitchInput::Hangup {
                    uuid: "u-1".into(),
                    cause: "USER_BUSY".into(),
                    customer_hung_up: false,
                    sip_status: None
                },
                110
            )
            .is_empty());
        let out = answer(&mut e, "u-2", true, 200);
        assert_eq!(
            out,
            vec![Output::Command {
                uuid: "u-2".into(),
                command: "uuid_kill u-2".into()
            }]
        );
        let out = hang(&mut e, "u-2", "NORMAL_CLEARING", false, 250);
        assert_eq!(finished(&out)[0].attempt.outcome, AttemptOutcome::Machine);
        let out = e.on_switch(
            SwitchInput::Job {
                uuid: "u-3".into(),
                ok: false,
                cause: "UNALLOCATED_NUMBER".into(),
            },
            300,
        );
        assert_eq!(finished(&out)[0].result, ResultDetail::NoSuchNumber);
        assert!(
            out.iter().any(|o| matches!(
                o,
                Output::Paused {
                    reason: PauseReason::Failures(3),
                    ..
                }
            )),
            "three failures in a row pause the task: {out:?}"
        );
        assert_eq!(e.task("t1").unwrap().status, TaskStatus::Paused);
        assert_eq!(e.launch_count("t1", &[idle("1001", 0)], 400), 0);
    }

    #[test]
    fn a_job_ok_waits_for_the_answer_event_and_its_machine_verdict() {
        let mut e = engine(2);
        let agents = HashMap::from([("p1".to_string(), vec![idle("1001", 0)])]);
        // +OK overtakes the answer event of a machine: nobody is rung.
        e.launch("t1", &due(1), "u-1", 0);
        e.on_switch(
            SwitchInput::Job {
                uuid: "u-1".into(),
                ok: true,
                cause: String::new(),
            },
            100,
        );
        assert!(e.tick(150).is_empty());
        assert!(
            e.connect(&agents, 150).is_empty(),
            "not answered yet as far as agents go"
        );
        let out = answer(&mut e, "u-1", true, 200);
        assert_eq!(
            out,
            vec![Output::Command {
                uuid: "u-1".into(),
                command: "uuid_kill u-1".into()
            }]
        );
        // +OK with the answer event lost: answered at the job's time once the grace passes.
        e.launch("t1", &due(2), "u-2", 1_000);
        e.on_switch(
            SwitchInput::Job {
                uuid: "u-2".into(),
                ok: true,
                cause: String::new(),
            },
            1_100,
        );
        assert!(e.tick(1_599).is_empty());
        assert!(e.tick(1_600).is_empty());
        let out = e.connect(&agents, 1_600);
        assert_eq!(out.len(), 1, "{out:?}");
    }

    #[test]
    fn an_unsent_originate_gives_the_number_back_and_an_unanswered_job_keeps_the_call() {
        let mut e = engine(1);
        e.launch("t1", &due(1), "u-1", 0);
        let out = e.on_switch(SwitchInput::NotSent { uuid: "u-1".into() }, 10);
        assert_eq!(out, vec![Output::Unclaim { number_id: 1 }]);
        assert_eq!(e.lines().headroom("t1"), 1, "line back, no attempt logged");
        // Sent, answer lost (timeout or a dropped connection): the call lives on.
        e.launch("t1", &due(2), "u-2", 100);
        assert!(e
            .on_switch(SwitchInput::JobUnknown { uuid: "u-2".into() }, 200)
            .is_empty());
        answer(&mut e, "u-2", false, 5_000);
        let agents = HashMap::from([("p1".to_string(), vec![idle("1001", 0)])]);
        assert_eq!(
            e.connect(&agents, 5_000).len(),
            1,
            "the answered call is connected"
        );
    }

    #[test]
    fn a_failed_agent_bridge_blames_the_agent_and_rests_them() {
        let mut e = engine(2);
        let agents = HashMap::from([("p1".to_string(), vec![idle("1001", 0)])]);
        e.launch("t1", &due(1), "u-1", 0);
        answer(&mut e, "u-1", false, 1_000);
        assert_eq!(e.connect(&agents, 1_000).len(), 1);
        let out = hang(&mut e, "u-1", "USER_BUSY", false, 1_400);
        assert_eq!(finished(&out)[0].result, ResultDetail::AgentBusy);
        // The next person is not sent to the same failing phone at once.
        e.launch("t1", &due(2), "u-2", 1_500);
        answer(&mut e, "u-2", false, 1_600);
        assert!(e.connect(&agents, 1_600).is_empty());
        assert_eq!(
            e.connect(&agents, 11_401).len(),
            0,
            "dropped at drop_ms meanwhile"
        );
    }

    #[test]
    fn kills_are_resent_until_the_switch_takes_them() {
        let mut e = engine(1);
        e.launch("t1", &due(1), "u-1", 0);
        answer(&mut e, "u-1", false, 1_000);
        assert_eq!(e.tick(3_000).len(), 1, "dropped");
        e.on_switch(
            SwitchInput::KillResult {
                uuid: "u-1".into(),
                result: KillResult::Failed,
            },
            3_010,
        );
        let out = e.tick(3_200);
        assert_eq!(
            out,
            vec![Output::Command {
                uuid: "u-1".into(),
                command: "uuid_kill u-1".into()
            }]
        );
        // Never acknowledged: resent after the guard, never forgotten.
        assert!(finished(&e.tick(100_000)).is_empty());
        e.on_switch(
            SwitchInput::KillResult {
                uuid: "u-1".into(),
                result: KillResult::Ok,
            },
            100_010,
        );
        let out = e.tick(115_010);
        assert_eq!(
            finished(&out).len(),
            1,
            "acknowledged, hang-up lost: ended after the guard"
        );
    }

    #[test]
    fn reconcile_ends_calls_the_switch_no_longer_has() {
        let mut e = engine(3);
        e.launch("t1", &due(1), "u-1", 0);
        e.launch("t1", &due(2), "u-2", 0);
        e.launch("t1", &due(3), "u-3", 9_000);
        let live = HashSet::from(["u-2".to_string()]);
        let out = e.reconcile(&live, 5_000, 10_000);
        let f = finished(&out);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].attempt.call_id.as_deref(), Some("u-1"));
        assert_eq!(
            e.in_flight("t1"),
            2,
            "u-2 live, u-3 launched after the snapshot"
        );
    }

    #[test]
    fn a_silent_switch_cannot_hold_a_line() {
        let mut e = engine(1);
        e.launch("t1", &due(1), "u-1", 0);
        assert_eq!(e.lines().headroom("t1"), 0);
        let out = e.tick(45_000);
        assert_eq!(out.len(), 1, "{out:?}");
        // The switch takes the kill but its hang-up event is lost.
        e.on_switch(
            SwitchInput::KillResult {
                uuid: "u-1".into(),
                result: KillResult::Ok,
            },
            45_010,
        );
        let out = e.tick(60_010);
        let f = finished(&out);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].result, ResultDetail::NoAnswer);
        assert_eq!(e.lines().headroom("t1"), 1);
    }

    #[test]
    fn pacing_respects_status_window_and_reservations() {
        let mut e = engine(5);
        let agents = [idle("1001", 0), idle("1002", 0)];
        assert_eq!(
            e.launch_count("t1", &agents, 0),
            2,
            "progressive: one per idle agent"
        );
        e.set_status("t1", TaskStatus::Paused);
        assert_eq!(e.launch_count("t1", &agents, 0), 0);
        e.set_status("t1", TaskStatus::Running);
        e.launch("t1", &due(1), "u-1", 0);
        answer(&mut e, "u-1", false, 10);
        let map = HashMap::from([("p1".to_string(), agents.to_vec())]);
        e.connect(&map, 10);
        // One agent reserved, one call in flight: progressive wants none more... for the
        // other agent, one.
        assert_eq!(e.launch_count("t1", &agents, 20), 1);
        assert_eq!(e.launch_count("t1", &agents, 10_000_001), 0, "expired");
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        /// One step of a random run.
        #[derive(Debug, Clone)]
        enum Step {
            Launch,
            JobOk(usize),
            JobErr(usize, u8),
            Answer(usize, bool),
            Bridge(usize),
            TransferFailed(usize),
            Hangup(usize, bool),
            Connect(u8),
            Advance(u16),
            Kill(usize, u8),
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                3 => Just(Step::Launch),
                1 => (0..12usize).prop_map(Step::JobOk),
                1 => (0..12usize, 0..4u8).prop_map(|(i, c)| Step::JobErr(i, c)),
                2 => (0..12usize, any::<bool>()).prop_map(|(i, m)| Step::Answer(i, m)),
                2 => (0..12usize).prop_map(Step::Bridge),
                1 => (0..12usize).prop_map(Step::TransferFailed),
                2 => (0..12usize, any::<bool>()).prop_map(|(i, c)| Step::Hangup(i, c)),
                2 => (0..8u8).prop_map(Step::Connect),
                2 => (0..5000u16).prop_map(Step::Advance),
                1 => (0..12usize, 0..3u8).prop_map(|(i, k)| Step::Kill(i, k)),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

            /// Whatever the switch says, in whatever order: the line cap holds, no agent is
            /// offered a second call while one is pending, and every launched call ends in
            /// exactly one finished attempt once the switch goes quiet.
            #[test]
            fn lines_agents_and_attempts_stay_consistent(steps in prop::collection::vec(step(), 1..120)) {
                const CAP: u32 = 3;
                let mut e = engine(CAP);
                let mut now = 0u64;
                let mut uuids: Vec<String> = Vec::new();
                let mut finished: HashMap<String, u32> = HashMap::new();
                // agent -> (call, offered at) for offers not yet resolved.
                let mut offered: HashMap<String, (String, u64)> = HashMap::new();
                let mut next = 0i64;
                let causes = ["USER_BUSY", "NO_ANSWER", "UNALLOCATED_NUMBER", "CALL_REJECTED"];
                let absorb = |out: Vec<Output>, now: u64, finished: &mut HashMap<String, u32>, offered: &mut HashMap<String, (String, u64)>| {
                    for o in out {
                        match o {
                            Output::Finished(f) => {
                                let id = f.attempt.call_id.clone().unwrap();
                                *finished.entry(id.clone()).or_default() += 1;
                                offered.retain(|_, (u, _)| *u != id);
                            }
                            Output::Command { uuid, command } if command.starts_with("uuid_transfer") => {
                                let agent = command.split("user/").nth(1).unwrap().split(' ').next().unwrap().to_owned();
                                if let Some((other, at)) = offered.get(&agent) {
                                    prop_assert!(
                                        now >= at + 10_000,
                                        "agent {agent} offered {uuid} while {other} pending since {at}"
                                    );
                                }
                                offered.insert(agent, (uuid, now));
                            }
                            _ => {}
                        }
                    }
                    Ok(())
                };
                for s in steps {
                    let pick = |i: usize| uuids.get(i % uuids.len().max(1)).cloned();
                    let out = match s {
                        Step::Launch => {
                            next += 1;
                            let uuid = format!("u-{next}");
                            match e.launch("t1", &due(next), &uuid, now) {
                                Some(o) => { uuids.push(uuid); vec![o] }
                                None => Vec::new(),
                            }
                        }
                        Step::JobOk(i) => pick(i).map(|u| e.on_switch(SwitchInput::Job { uuid: u, ok: true, cause: String::new() }, now)).unwrap_or_default(),
                        Step::JobErr(i, c) => pick(i).map(|u| e.on_switch(SwitchInput::Job { uuid: u, ok: false, cause: causes[c as usize].into() }, now)).unwrap_or_default(),
                        Step::Answer(i, m) => pick(i).map(|u| e.on_switch(SwitchInput::Answered { uuid: u, machine: m }, now)).unwrap_or_default(),
                        Step::Bridge(i) => {
                            let out = pick(i).map(|u| e.on_switch(SwitchInput::Bridged { uuid: u.clone() }, now)).unwrap_or_default();
                            if let Some(u) = pick(i) { offered.retain(|_, (c, _)| *c != u); }
                            out
                        }
                        Step::TransferFailed(i) => {
                            let out = pick(i).map(|u| e.on_switch(SwitchInput::TransferFailed { uuid: u }, now)).unwrap_or_default();
                            if let Some(u) = pick(i) { offered.retain(|_, (c, _)| *c != u); }
                            out
                        }
                        Step::Hangup(i, c) => pick(i).map(|u| e.on_switch(SwitchInput::Hangup { uuid: u, cause: "NORMAL_CLEARING".into(), customer_hung_up: c, sip_status: None }, now)).unwrap_or_default(),
                        Step::Connect(mask) => {
                            let list: Vec<AgentSnapshot> = (0..3u8)
                                .filter(|b| mask & (1 << b) != 0)
                                .map(|b| idle(&format!("100{b}"), u64::from(b)))
                                .collect();
                            e.connect(&HashMap::from([("p1".to_string(), list)]), now)
                        }
                        Step::Advance(ms) => { now += u64::from(ms); e.tick(now) }
                        Step::Kill(i, k) => {
                            let result = [KillResult::Ok, KillResult::Gone, KillResult::Failed][k as usize];
                            pick(i).map(|u| e.on_switch(SwitchInput::KillResult { uuid: u, result }, now)).unwrap_or_default()
                        }
                    };
                    absorb(out, now, &mut finished, &mut offered)?;
                    prop_assert!(e.in_flight("t1") <= CAP, "in flight {} over cap", e.in_flight("t1"));
                    prop_assert_eq!(e.lines().headroom("t1") + e.in_flight("t1"), CAP);
                    prop_assert!(finished.values().all(|n| *n == 1), "a call finished twice: {:?}", finished);
                }
                // The switch goes quiet but takes every kill (its hang-up events are lost):
                // the guards end everything.
                for _ in 0..6 {
                    now += 5 * 3_600_000;
                    let out = e.tick(now);
                    let kills: Vec<String> = out
                        .iter()
                        .filter_map(|o| match o {
                            Output::Command { uuid, command } if command.starts_with("uuid_kill") => {
                                Some(uuid.clone())
                            }
                            _ => None,
                        })
                        .collect();
                    absorb(out, now, &mut finished, &mut offered)?;
                    for uuid in kills {
                        let out = e.on_switch(
                            SwitchInput::KillResult { uuid, result: KillResult::Ok },
                            now,
                        );
                        absorb(out, now, &mut finished, &mut offered)?;
                    }
                }
                prop_assert_eq!(e.in_flight("t1"), 0);
                prop_assert_eq!(e.lines().headroom("t1"), CAP);
                for u in &uuids {
                    prop_assert_eq!(finished.get(u).copied(), Some(1), "call {} finished {:?} times", u, finished.get(u));
                }
            }
        }
    }
}
