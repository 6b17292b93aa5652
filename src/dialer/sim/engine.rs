//! The discrete-event simulation of one replication (predictive-dialing.md §4.1).
//!
//! Time is an integer millisecond clock driven by a binary-heap event queue ordered by
//! (time, insertion sequence), so two runs with the same inputs process the same events in the
//! same order: the engine is deterministic. The pacer is a sans-IO [`Pacer`]: it is shown a
//! [`PacingView`] after every event and on every tick, and told every [`Feedback`] as it
//! happens, exactly as the campaign runtime will do (DESIGN.md, "sans-IO cores").
//!
//! Common random numbers (§4.3 protocol): everything about attempt `k` (outcome uniform,
//! answer delay, routing and AMD draws, machine handling) comes from a stream seeded by
//! (replication seed, attempt, k), and talk/wrap of the `j`-th bridged live call from
//! (replication seed, connect, j); so every policy faces the same "list" whatever it dials
//! when.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::rng::{derive, Rng};
use super::scenario::{AmdMode, Dist, DistKind, Scenario};
use crate::dialer::pacing::{AgentPhase, AgentView, Feedback, Pacer, PacingView, RingingCall};

const STREAM_ATTEMPT: u64 = 1;
const STREAM_CONNECT: u64 = 2;
/// The shortest an attempt lasts, dial to answer or failure.
const MIN_ATTEMPT_MS: u64 = 100;

/// What an attempt does, drawn at dial time (§4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Live,
    Machine,
    Busy,
    NoAnswer,
}

/// Raw counts of one replication; [`super::report`] turns them into §4.3 metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepStats {
    pub logged_in_ms: u64,
    /// Talk + wrap + machine handling (§4.3 occupancy numerator).
    pub busy_ms: u64,
    /// Talk on live calls only.
    pub talk_ms: u64,
    pub dials: u64,
    pub live_answers: u64,
    /// Compliance abandons + system drops + lost in routing + AMD false positives (§4.3 US
    /// abandon numerator).
    pub abandons: u64,
    /// Live answers bridged to an agent.
    pub connects: u64,
    /// Sum and count of READY spells that ended with a call ("mean agent wait between
    /// calls", §4.3).
    pub agent_wait_ms: u64,
    pub agent_waits: u64,
    pub peak_lines: u32,
    /// Live answers and abandons per minute of answer time, for the rolling 1-hour windows.
    pub live_by_minute: Vec<u32>,
    pub abandons_by_minute: Vec<u32>,
    /// The outcome of every attempt, in attempt order (only when asked for: tests of the
    /// common random numbers).
    pub outcomes: Vec<Outcome>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    Ringing,
    /// Answered, AMD deciding: still in flight as far as the dialer knows.
    Amd,
    /// Answered, in the post-answer routing delay (or lost there).
    Routing,
    Queued,
    Bridged,
    Done,
}

#[derive(Debug, Clone)]
struct Call {
    dialed_ms: u64,
    answered_ms: u64,
    outcome: Outcome,
    state: CallState,
    /// A live answer AMD will class as a machine (silent call).
    amd_false_positive: bool,
    /// A machine AMD passes to an agent.
    amd_false_negative: bool,
    /// Post-answer routing delay; `None` = lost.
    route_ms: Option<u64>,
    machine_handle_ms: u64,
}

#[derive(Debug, Clone)]
struct Agent {
    phase: AgentPhase,
    since_ms: u64,
    logged_in: bool,
    login_ms: u64,
    leave_pending: bool,
    /// The current call is a live one (talk counted as talk).
    live_call: bool,
    /// Talk and wrap of the current call, for `HandleDone`.
    talk_ms: u64,
    wrap_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Tick,
    Shock(usize),
    AgentJoin,
    AgentLeave,
    /// Ringing ends: answered or failed, per the drawn outcome.
    Resolve(usize),
    AmdDone(usize),
    Routed(usize),
    AbandonCheck(usize),
    Drop(usize),
    TalkEnd(usize),
    WrapEnd(usize),
}

fn secs_to_ms(s: f64) -> u64 {
    if s.is_finite() && s > 0.0 {
        (s * 1000.0).round().min(1e15) as u64
    } else {
        0
    }
}

pub(crate) fn sample(rng: &mut Rng, d: &Dist) -> f64 {
    match d.dist {
        DistKind::Constant => d.mean,
        DistKind::Exponential => rng.exponential(d.mean),
        DistKind::Lognormal => rng.lognormal(d.mean, d.sd),
        DistKind::Gamma => rng.gamma(d.mean, d.sd),
    }
}

pub struct Engine<'a> {
    sc: &'a Scenario,
    pacer: Box<dyn Pacer>,
    seed: u64,
    now: u64,
    shift_ms: u64,
    seq: u64,
    heap: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    calls: Vec<Call>,
    agents: Vec<Agent>,
    ringing: Vec<usize>,
    queue: VecDeque<usize>,
    /// Answered calls not yet bridged or dropped (routing + queue): the view's `waiting`.
    waiting: u32,
    lines: u32,
    logged_in: u32,
    p_live: f64,
    p_am: f64,
    p_busy: f64,
    stats: RepStats,
    trace: bool,
    view_agents: Vec<AgentView>,
    view_ringing: Vec<RingingCall>,
}

impl<'a> Engine<'a> {
    /// One replication of `sc` with seed `seed` (derive it with [`replication_seed`]). `sc`
    /// must have passed [`Scenario::validate`] (as [`super::simulate`] ensures): the bounds
    /// there are what keep a run finite. `trace` records every attempt's outcome.
    pub fn new(sc: &'a Scenario, pacer: Box<dyn Pacer>, seed: u64, trace: bool) -> Self {
        let shift_ms = sc.shift_ms();
        let minutes = shift_ms.div_ceil(60_000) as usize + 1;
        Engine {
            sc,
            pacer,
            seed,
            now: 0,
            shift_ms,
            seq: 0,
            heap: BinaryHeap::new(),
            calls: Vec::new(),
            agents: Vec::new(),
            ringing: Vec::new(),
            queue: VecDeque::new(),
            waiting: 0,
            lines: 0,
            logged_in: 0,
            p_live: sc.outcomes.p_live,
            p_am: sc.outcomes.p_am,
            p_busy: sc.outcomes.p_busy,
            stats: RepStats {
                live_by_minute: vec![0; minutes],
                abandons_by_minute: vec![0; minutes],
                ..RepStats::default()
            },
            trace,
            view_agents: Vec::new(),
            view_ringing: Vec::new(),
        }
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((t, self.seq, ev)));
    }

    /// Runs the shift and returns the raw counts.
    pub fn run(self) -> RepStats {
        self.run_with_progress(&mut |_| {})
    }

    /// Runs the shift, calling `tenth(k)` as simulated time passes k tenths of it (long
    /// runs show progress, issue 6).
    pub fn run_with_progress(mut self, tenth: &mut dyn FnMut(u32)) -> RepStats {
        let sc = self.sc;
        let mut last_tenth = 0u32;
        for _ in 0..sc.agents.min(super::scenario::MAX_AGENTS) {
            self.join();
        }
        // Agent-count changes: one agent at a time, spread evenly over the ramp (§4.2 S8
        // "0 → 20 over 10 min"), from the count the previous set point left.
        let mut shocks: Vec<(usize, &super::scenario::Shock)> =
            sc.shocks.iter().enumerate().collect();
        shocks.sort_by(|a, b| a.1.at_secs.total_cmp(&b.1.at_secs).then(a.0.cmp(&b.0)));
        let mut level = sc.agents as i64;
        for (i, s) in shocks {
            let t0 = secs_to_ms(s.at_secs);
            self.at(t0, Ev::Shock(i));
            if let Some(target) = s.agents {
                let diff = target as i64 - level;
                let steps = diff.unsigned_abs();
                let ramp = secs_to_ms(s.ramp_secs);
                for k in 1..=steps {
                    let t = t0.saturating_add(ramp.saturating_mul(k) / steps);
                    self.at(
                        t,
                        if diff > 0 {
                            Ev::AgentJoin
                        } else {
                            Ev::AgentLeave
                        },
                    );
                }
                level = target as i64;
            }
        }
        self.at(0, Ev::Tick);
        while let Some(Reverse((t, _, ev))) = self.heap.pop() {
            if t >= self.shift_ms {
                break;
            }
            self.now = t;
            let k = (t.saturating_mul(10) / self.shift_ms.max(1)) as u32;
            if k > last_tenth {
                last_tenth = k;
                tenth(k);
            }
            self.handle(ev);
            self.pace();
        }
        self.now = self.shift_ms;
        self.finish();
        self.stats
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick => {
                let tick = secs_to_ms(self.sc.tick_secs).max(1);
                self.at(self.now + tick, Ev::Tick);
            }
            Ev::Shock(i) => {
                let s = self.sc.shocks[i];
                self.p_live = s.p_live.unwrap_or(self.p_live);
                self.p_am = s.p_am.unwrap_or(self.p_am);
                self.p_busy = s.p_busy.unwrap_or(self.p_busy);
            }
            Ev::AgentJoin => self.join(),
            Ev::AgentLeave => self.leave(),
            Ev::Resolve(c) => self.resolve(c),
            Ev::AmdDone(c) => self.amd_done(c),
            Ev::Routed(c) => {
                if self.calls[c].state == CallState::Routing {
                    self.calls[c].state = CallState::Queued;
                    self.queue.push_back(c);
                    self.bridge_waiting();
                }
            }
            Ev::AbandonCheck(c) => self.abandon_check(c),
            Ev::Drop(c) => self.drop_call(c),
            Ev::TalkEnd(a) => self.talk_end(a),
            Ev::WrapEnd(a) => self.wrap_end(a),
        }
    }

    fn feedback(&mut self, f: Feedback) {
        self.pacer.observe(&f);
    }

    fn trunk_cap(&self) -> u32 {
        self.sc
            .trunks
            .unwrap_or_else(|| self.logged_in.saturating_mul(3))
    }

    fn pace(&mut self) {
        if self.now >= self.shift_ms {
            return;
        }
        self.view_agents.clear();
        self.view_agents.extend(
            self.agents
                .iter()
                .filter(|a| a.logged_in)
                .map(|a| AgentView {
                    phase: a.phase,
                    since_ms: a.since_ms,
                }),
        );
        self.view_ringing.clear();
        let calls = &self.calls;
        self.view_ringing
            .extend(self.ringing.iter().map(|&c| RingingCall {
                dialed_ms: calls[c].dialed_ms,
            }));
        let headroom = self.trunk_cap().saturating_sub(self.lines);
        let view = PacingView {
            now_ms: self.now,
            agents: &self.view_agents,
            ringing: &self.view_ringing,
            waiting: self.waiting,
            line_headroom: headroom,
        };
        let n = self.pacer.launch(&view).min(headroom);
        for _ in 0..n {
            self.dial();
        }
    }

    fn dial(&mut self) {
        let k = self.calls.len() as u64;
        let mut rng = Rng::new(derive(self.seed, &[STREAM_ATTEMPT, k]));
        let sc = self.sc;
        // Fixed draw order per attempt, whatever the outcome, so the stream stays aligned.
        let u = rng.uniform();
        let answer_s = sample(&mut rng, &sc.times.answer_delay);
        let u_route = rng.uniform();
        let u_amd = rng.uniform();
        let machine_s = sample(&mut rng, &sc.amd.agent_secs);
        let outcome = if u < self.p_live {
            Outcome::Live
        } else if u < self.p_live + self.p_am {
            Outcome::Machine
        } else if u < self.p_live + self.p_am + self.p_busy {
            Outcome::Busy
        } else {
            Outcome::NoAnswer
        };
        if self.trace {
            self.stats.outcomes.push(outcome);
        }
        let timeout_ms = secs_to_ms(sc.times.ring_timeout_secs);
        let answer_ms = secs_to_ms(answer_s);
        // An answer later than the ring timeout never happens: the dialer has hung up.
        let (outcome, ring_ms) = match outcome {
            Outcome::Live | Outcome::Machine if answer_ms > timeout_ms => {
                (Outcome::NoAnswer, timeout_ms)
            }
            Outcome::Live | Outcome::Machine => (outcome, answer_ms),
            Outcome::Busy => (Outcome::Busy, secs_to_ms(sc.times.busy_secs)),
            Outcome::NoAnswer => (Outcome::NoAnswer, timeout_ms),
        };
        // Time must move on: an attempt that resolved at its own dial instant would let a
        // pacer redial in a loop without the clock advancing. No real attempt resolves in
        // under 100 ms.
        let ring_ms = ring_ms.max(MIN_ATTEMPT_MS);
        let amd_drop = sc.amd.mode == AmdMode::Drop;
        let route_ms = match &sc.routing {
            None => Some(0),
            Some(r) => {
                let mut acc = 0.0;
                let mut out = None;
                for step in &r.delays {
                    acc += step.p;
                    if u_route < acc {
                        out = Some(secs_to_ms(step.secs));
                        break;
                    }
                }
                out
            }
        };
        let id = self.calls.len();
        self.calls.push(Call {
            dialed_ms: self.now,
            answered_ms: 0,
            outcome,
            state: CallState::Ringing,
            amd_false_positive: amd_drop
                && outcome == Outcome::Live
                && u_amd < sc.amd.false_positive,
            amd_false_negative: amd_drop
                && outcome == Outcome::Machine
                && u_amd < sc.amd.false_negative,
            route_ms,
            machine_handle_ms: secs_to_ms(machine_s),
        });
        self.ringing.push(id);
        self.lines += 1;
        self.stats.dials += 1;
        self.stats.peak_lines = self.stats.peak_lines.max(self.lines);
        self.at(self.now + ring_ms, Ev::Resolve(id));
    }

    fn minute(&self, t: u64) -> usize {
        ((t / 60_000) as usize).min(self.stats.live_by_minute.len() - 1)
    }

    fn unring(&mut self, c: usize) {
        if let Some(pos) = self.ringing.iter().position(|&x| x == c) {
            self.ringing.remove(pos);
        }
    }

    fn free_line(&mut self) {
        self.lines = self.lines.saturating_sub(1);
    }

    fn resolve(&mut self, c: usize) {
        let now = self.now;
        let call = self.calls[c].clone();
        let ring_ms = now - call.dialed_ms;
        self.calls[c].answered_ms = now;
        match call.outcome {
            Outcome::Busy | Outcome::NoAnswer => {
                self.unring(c);
                self.calls[c].state = CallState::Done;
                self.free_line();
                self.feedback(Feedback::Failed {
                    at_ms: now,
                    after_ms: ring_ms,
                });
            }
            Outcome::Live => {
                let m = self.minute(now);
                self.stats.live_answers += 1;
                self.stats.live_by_minute[m] += 1;
                if call.amd_false_positive {
                    // AMD decides later; the dialer still sees a call in flight until then.
                    self.calls[c].state = CallState::Amd;
                    let t = now + secs_to_ms(self.sc.amd.decision_secs);
                    self.at(t, Ev::AmdDone(c));
                    return;
                }
                self.unring(c);
                self.feedback(Feedback::Answered {
                    at_ms: now,
                    ring_ms,
                    live: true,
                });
                self.route_to_agents(c);
            }
            Outcome::Machine => {
                if self.sc.amd.mode == AmdMode::Drop {
                    // The dialer learns it is a machine only when AMD decides (§4.1: 3 s
                    // after answer); until then the call is still in flight as the pacer sees
                    // it. This is also what §4.4's closed form counts as a machine's cost.
                    self.calls[c].state = CallState::Amd;
                    let t = now + secs_to_ms(self.sc.amd.decision_secs);
                    self.at(t, Ev::AmdDone(c));
                } else {
                    self.unring(c);
                    self.feedback(Feedback::Answered {
                        at_ms: now,
                        ring_ms,
                        live: false,
                    });
                    self.route_to_agents(c);
                }
            }
        }
    }

    fn amd_done(&mut self, c: usize) {
        let now = self.now;
        let call = self.calls[c].clone();
        self.unring(c);
        self.feedback(Feedback::Answered {
            at_ms: now,
            ring_ms: call.answered_ms - call.dialed_ms,
            live: false,
        });
        if call.outcome == Outcome::Machine && call.amd_false_negative {
            self.route_to_agents(c);
            return;
        }
        if call.amd_false_positive {
            // A silent call: a live answer the dialer hung up on (§4.3 counts it abandoned).
            let m = self.minute(call.answered_ms);
            self.stats.abandons += 1;
            self.stats.abandons_by_minute[m] += 1;
        }
        self.calls[c].state = CallState::Done;
        self.free_line();
    }

    /// An answered call heads for an agent: routing delay (or lost), then the queue; the
    /// abandon clock runs from answer (§4.1: "not bridged within 2.0 s of answer").
    fn route_to_agents(&mut self, c: usize) {
        let now = self.now;
        let call = &self.calls[c];
        let live = call.outcome == Outcome::Live;
        let route = if live { call.route_ms } else { Some(0) };
        self.waiting += 1;
        self.calls[c].state = CallState::Routing;
        match route {
            Some(0) => {
                self.calls[c].state = CallState::Queued;
                self.queue.push_back(c);
                self.bridge_waiting();
            }
            Some(d) => self.at(now + d, Ev::Routed(c)),
            None => {}
        }
        let threshold = secs_to_ms(self.sc.abandon.threshold_secs);
        let drop = secs_to_ms(self.sc.abandon.drop_secs);
        if live {
            self.at(now + threshold, Ev::AbandonCheck(c));
        }
        // A machine passed to an agent is hung up at the same drop time, uncounted.
        if drop > threshold || !live {
            self.at(now + drop, Ev::Drop(c));
        }
    }

    fn abandon_check(&mut self, c: usize) {
        let st = self.calls[c].state;
        if matches!(st, CallState::Routing | CallState::Queued) {
            let m = self.minute(self.calls[c].answered_ms);
            self.stats.abandons += 1;
            self.stats.abandons_by_minute[m] += 1;
            self.feedback(Feedback::Abandoned { at_ms: self.now });
            let threshold = secs_to_ms(self.sc.abandon.threshold_secs);
            let drop = secs_to_ms(self.sc.abandon.drop_secs);
            if drop <= threshold {
                self.drop_call(c);
            }
        }
    }

    fn drop_call(&mut self, c: usize) {
        let st = self.calls[c].state;
        if matches!(st, CallState::Routing | CallState::Queued) {
            if st == CallState::Queued {
                if let Some(pos) = self.queue.iter().position(|&x| x == c) {
                    self.queue.remove(pos);
                }
            }
            self.calls[c].state = CallState::Done;
            self.waiting = self.waiting.saturating_sub(1);
            self.free_line();
        }
    }

    /// Longest-idle READY agent, for fairness and determinism.
    fn ready_agent(&self) -> Option<usize> {
        self.agents
            .iter()
            .enumerate()
            .filter(|(_, a)| a.logged_in && a.phase == AgentPhase::Ready)
            .min_by_key(|(i, a)| (a.since_ms, *i))
            .map(|(i, _)| i)
    }

    fn bridge_waiting(&mut self) {
        while !self.queue.is_empty() {
            let Some(a) = self.ready_agent() else { return };
            let Some(c) = self.queue.pop_front() else {
                return;
            };
            self.bridge(c, a);
        }
    }

    fn bridge(&mut self, c: usize, a: usize) {
        let now = self.now;
        self.waiting = self.waiting.saturating_sub(1);
        self.calls[c].state = CallState::Bridged;
        let ready_since = self.agents[a].since_ms;
        self.stats.agent_wait_ms += now - ready_since;
        self.stats.agent_waits += 1;
        let (talk_ms, wrap_ms, live) = if self.calls[c].outcome == Outcome::Live {
            let j = self.stats.connects;
            self.stats.connects += 1;
            let mut rng = Rng::new(derive(self.seed, &[STREAM_CONNECT, j]));
            let talk = secs_to_ms(sample(&mut rng, &self.sc.times.talk));
            let wrap = secs_to_ms(sample(&mut rng, &self.sc.times.wrap));
            self.feedback(Feedback::Connected {
                at_ms: now,
                wait_ms: now - self.calls[c].answered_ms,
            });
            (talk, wrap, true)
        } else {
            (self.calls[c].machine_handle_ms, 0, false)
        };
        let ag = &mut self.agents[a];
        ag.phase = AgentPhase::Talking;
        ag.since_ms = now;
        ag.live_call = live;
        ag.talk_ms = talk_ms;
        ag.wrap_ms = wrap_ms;
        self.at(now + talk_ms, Ev::TalkEnd(a));
    }

    fn talk_end(&mut self, a: usize) {
        let now = self.now;
        let ag = &mut self.agents[a];
        let talk = now - ag.since_ms;
        self.stats.busy_ms += talk;
        if ag.live_call {
            self.stats.talk_ms += talk;
        }
        ag.phase = AgentPhase::WrapUp;
        ag.since_ms = now;
        let wrap = ag.wrap_ms;
        // The customer hangs up: the line is free; after-call work holds no line.
        self.free_line();
        if wrap == 0 {
            self.finish_handle(a, talk, 0);
        } else {
            self.at(now + wrap, Ev::WrapEnd(a));
        }
    }

    fn wrap_end(&mut self, a: usize) {
        let now = self.now;
        let wrap = now - self.agents[a].since_ms;
        self.stats.busy_ms += wrap;
        let talk = self.agents[a].talk_ms;
        self.finish_handle(a, talk, wrap);
    }

    fn finish_handle(&mut self, a: usize, talk_ms: u64, wrap_ms: u64) {
        let now = self.now;
        self.feedback(Feedback::HandleDone {
            at_ms: now,
            talk_ms,
            wrap_ms,
        });
        let ag = &mut self.agents[a];
        ag.phase = AgentPhase::Ready;
        ag.since_ms = now;
        ag.live_call = false;
        ag.talk_ms = 0;
        ag.wrap_ms = 0;
        if ag.leave_pending {
            self.logout(a);
        } else {
            self.bridge_waiting();
        }
    }

    fn join(&mut self) {
        let now = self.now;
        // Undo a pending departure first: net effect of "leave then join" is no change.
        if let Some(ag) = self
            .agents
            .iter_mut()
            .find(|a| a.logged_in && a.leave_pending)
        {
            ag.leave_pending = false;
            return;
        }
        self.agents.push(Agent {
            phase: AgentPhase::Ready,
            since_ms: now,
            logged_in: true,
            login_ms: now,
            leave_pending: false,
            live_call: false,
            talk_ms: 0,
            wrap_ms: 0,
        });
        self.logged_in += 1;
        self.bridge_waiting();
    }

    /// A READY agent leaves now; otherwise a busy one leaves when done with its call.
    fn leave(&mut self) {
        let ready = self
            .agents
            .iter()
            .enumerate()
            .rev()
            .find(|(_, a)| a.logged_in && !a.leave_pending && a.phase == AgentPhase::Ready)
            .map(|(i, _)| i);
        if let Some(i) = ready {
            self.logout(i);
            return;
        }
        if let Some(ag) = self
            .agents
            .iter_mut()
            .rev()
            .find(|a| a.logged_in && !a.leave_pending)
        {
            ag.leave_pending = true;
        }
    }

    fn logout(&mut self, a: usize) {
        let now = self.now;
        let ag = &mut self.agents[a];
        if !ag.logged_in {
            return;
        }
        ag.logged_in = false;
        ag.leave_pending = false;
        self.stats.logged_in_ms += now - ag.login_ms;
        self.logged_in = self.logged_in.saturating_sub(1);
    }

    /// Closes every open spell at the end of the shift.
    fn finish(&mut self) {
        let now = self.now;
        for ag in self.agents.iter_mut().filter(|a| a.logged_in) {
            self.stats.logged_in_ms += now - ag.login_ms;
            match ag.phase {
                AgentPhase::Talking => {
                    self.stats.busy_ms += now - ag.since_ms;
                    if ag.live_call {
                        self.stats.talk_ms += now - ag.since_ms;
                    }
                }
                AgentPhase::WrapUp => self.stats.busy_ms += now - ag.since_ms,
                _ => {}
            }
        }
    }
}

/// The seed of replication `r` (§4.3: independent replications from the scenario's seed).
pub fn replication_seed(scenario_seed: u64, r: u32) -> u64 {
    derive(scenario_seed, &[0x5245_504C, r as u64])
}
