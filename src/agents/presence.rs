//! Presence: every seat's state machine, counters and current call, as one sans-IO core.
//!
//! A seat is an extension that an agent works from (seed 004 identifies agents by extension
//! number; the grid's agent id, when known, rides along). [`Presence`] takes registration
//! changes, commands and [`CallEvent`]s with `now_ms`, drives each seat's
//! [`AgentMachine`] and [`DailyCounters`], and returns [`AgentEvent`]s. Timers (after-call
//! work, rest, local midnight) are exposed through [`Presence::next_deadline`]; the shell calls
//! [`Presence::tick`] when it passes.
//!
//! Architecture invariant: a refused command or call event changes nothing (not the machine,
//! not the counters, not the dirty set), and every accepted change to a seat marks it dirty
//! so the shell persists it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use serde::Serialize;

use super::counters::{DailyCounters, DayClock, LiveState};
use super::directory::ProjectCode;
use super::state::{
    AgentConfig, AgentInput, AgentMachine, AgentSnapshot, AgentState, CallId, NotReadyReason,
    RestReason, Transition, TransitionError,
};
use crate::events::{CallDirection, CallEvent, CallPhase};

/// A command from an API caller or an agent desktop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    SignIn,
    SignOut,
    SetIdle,
    SetBusy(NotReadyReason),
    StartRest {
        reason: RestReason,
        duration_ms: Option<u64>,
    },
    EndRest,
    /// Seed 004's `workStatus` 1 (可通话): sign in if needed, then go idle; all or nothing.
    Available,
    /// Seed 004's `workStatus` 0 (不可通话): sign in if needed, then go not ready.
    Unavailable,
}

/// The call a seat is in, as far as presence knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallInfo {
    pub call_id: CallId,
    pub direction: CallDirection,
    pub remote_number: Option<String>,
    pub task_code: Option<String>,
}

/// Why a presence input was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    #[error("extension {0} is not an agent seat")]
    UnknownSeat(String),
    #[error("extension {extension}: {source}")]
    Refused {
        extension: String,
        source: TransitionError,
    },
}

/// What changed for a seat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEventKind {
    /// The state machine moved.
    Transition(Transition),
    /// The extension's registration flag changed without a state change.
    Registration,
}

/// Emitted on every transition and every registration change: what the grid's agent-event
/// push (坐席事件/考勤, 000:L472-L488), the event stream and the metrics need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEvent {
    pub extension: String,
    pub project: Option<ProjectCode>,
    pub agent_id: Option<String>,
    pub kind: AgentEventKind,
    /// The state after the event.
    pub state: AgentState,
    pub registered: bool,
    /// The seat's call after the event (for ringing and talking), or the call that just ended.
    pub call: Option<CallInfo>,
    /// The sign-in session after the event (for a sign-out, the one that ended is in the
    /// transition).
    pub signin_session: Option<u64>,
    /// Where the phone registered from (the grid push's `ip`).
    pub source_ip: Option<IpAddr>,
    pub at_ms: u64,
}

/// One agent seat.
#[derive(Debug, Clone)]
pub struct Seat {
    pub machine: AgentMachine,
    pub counters: DailyCounters,
    pub project: Option<ProjectCode>,
    pub agent_id: Option<String>,
    pub call: Option<CallInfo>,
    pub source_ip: Option<IpAddr>,
}

/// Persisted form of a seat (see `store::PresenceRow`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SeatSnapshot {
    pub machine: AgentSnapshot,
}

/// Label values for `gridedge_agents{state}`, in [`state_index`] order.
pub const STATE_LABELS: [&str; 8] = [
    "signed_out",
    "not_ready",
    "idle",
    "ringing",
    "talking",
    "hold",
    "after_call_work",
    "rest",
];

pub fn state_index(s: &AgentState) -> usize {
    match s {
        AgentState::SignedOut => 0,
        AgentState::NotReady { .. } => 1,
        AgentState::Idle => 2,
        AgentState::Reserved => 3,
        AgentState::Talking => 4,
        AgentState::Hold => 5,
        AgentState::AfterCallWork { .. } => 6,
        AgentState::Rest { .. } => 7,
    }
}

pub struct Presence {
    seats: HashMap<String, Seat>,
    cfg: AgentConfig,
    clock: DayClock,
    /// (deadline, extension) for every seat with a running timer.
    deadlines: BTreeSet<(u64, String)>,
    next_midnight_ms: u64,
    dirty: HashSet<String>,
    removed: Vec<String>,
    by_state: [usize; 8],
}

impl Presence {
    pub fn new(cfg: AgentConfig, clock: DayClock, now_ms: u64) -> Self {
        let next_midnight_ms = clock.next_midnight_ms(now_ms);
        Self {
            seats: HashMap::new(),
            cfg,
            clock,
            deadlines: BTreeSet::new(),
            next_midnight_ms,
            dirty: HashSet::new(),
            removed: Vec::new(),
            by_state: [0; 8],
        }
    }

    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    /// New policy for every seat (timers already running keep their deadlines).
    pub fn set_config(&mut self, cfg: AgentConfig, clock: DayClock, now_ms: u64) {
        for s in self.seats.values_mut() {
            s.machine.set_config(cfg.clone());
        }
        self.cfg = cfg;
        self.next_midnight_ms = clock.next_midnight_ms(now_ms);
        self.clock = clock;
    }

    pub fn clock(&self) -> &DayClock {
        &self.clock
    }

    pub fn len(&self) -> usize {
        self.seats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seats.is_empty()
    }

    pub fn seat(&self, extension: &str) -> Option<&Seat> {
        self.seats.get(extension)
    }

    pub fn seats(&self) -> impl Iterator<Item = (&str, &Seat)> {
        self.seats.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many seats are in each state, in [`STATE_LABELS`] order.
    pub fn counts_by_state(&self) -> [usize; 8] {
        self.by_state
    }

    /// Adds a seat (signed out), or restores it from a snapshot. An existing seat is only
    /// re-labelled (project, agent id).
    pub fn add_seat(
        &mut self,
        extension: &str,
        project: Option<ProjectCode>,
        agent_id: Option<String>,
        registered: bool,
        restored: Option<(SeatSnapshot, DailyCounters)>,
        now_ms: u64,
    ) {
        if let Some(s) = self.seats.get_mut(extension) {
            s.project = project;
            s.agent_id = agent_id;
            return;
        }
        // A number freed and handed out again before the next save: its row must be written,
        // not deleted after the write.
        self.removed.retain(|e| e != extension);
        let (machine, counters) = match restored {
            Some((snap, mut counters)) => {
                let before = snap.machine.clone();
                let m = AgentMachine::restore(self.cfg.clone(), snap.machine, registered, now_ms);
                if *m.state() != before.state {
                    // The restore repaired the state (a call nobody can vouch for, idle without
                    // a phone): account the old state up to the repair, as a transition would,
                    // so today's time still adds up.
                    let at_ms = m.since_ms().max(before.since_ms);
                    let t = Transition {
                        from: before.state,
                        to: m.state().clone(),
                        from_since_ms: before.since_ms,
                        at_ms,
                        duration_ms: at_ms - before.since_ms,
                        signin_session: before.signin_session,
                        call_id: None,
                    };
                    counters.on_transition(&t, None, &self.clock);
                }
                (m, counters)
            }
            None => {
                let mut m = AgentMachine::new(self.cfg.clone(), now_ms);
                if registered {
                    // Registration never changes a signed-out state; this cannot fail.
                    let _ = m.handle(AgentInput::RegistrationUp, now_ms);
                }
                (m, DailyCounters::new(now_ms, &self.clock))
            }
        };
        self.by_state[state_index(machine.state())] += 1;
        if let Some(d) = machine.next_deadline() {
            self.deadlines.insert((d, extension.to_owned()));
        }
        self.seats.insert(
            extension.to_owned(),
            Seat {
                machine,
                counters,
                project,
                agent_id,
                call: None,
                source_ip: None,
            },
        );
        self.dirty.insert(extension.to_owned());
    }

    /// Removes a seat (extension freed or disabled): the agent is signed out first, so the
    /// attendance record closes properly. Returns that sign-out's event, if there was one.
    pub fn remove_seat(&mut self, extension: &str, now_ms: u64) -> Vec<AgentEvent> {
        let mut out = Vec::new();
        if self.seats.contains_key(extension) {
            if let Ok(mut evs) = self.apply(extension, AgentInput::ForceSignOut, None, now_ms) {
                out.append(&mut evs);
            }
            if let Some(seat) = self.seats.remove(extension) {
                self.by_state[state_index(seat.machine.state())] -= 1;
                if let Some(d) = seat.machine.next_deadline() {
                    self.deadlines.remove(&(d, extension.to_owned()));
                }
            }
            self.dirty.remove(extension);
            self.removed.push(extension.to_owned());
        }
        out
    }

    /// Signs the agent out whatever it is doing (the extension was disabled).
    pub fn force_sign_out(&mut self, extension: &str, now_ms: u64) -> Vec<AgentEvent> {
        self.apply(extension, AgentInput::ForceSignOut, None, now_ms)
            .unwrap_or_default()
    }

    /// The registrar says the extension has (or no longer has) a binding.
    pub fn registration(
        &mut self,
        extension: &str,
        online: bool,
        source_ip: Option<IpAddr>,
        now_ms: u64,
    ) -> Vec<AgentEvent> {
        let Some(seat) = self.seats.get_mut(extension) else {
            return Vec::new();
        };
        if online {
            seat.source_ip = source_ip.or(seat.source_ip);
        }
        if seat.machine.registered() == online {
            return Vec::new();
        }
        let input = if online {
            AgentInput::RegistrationUp
        } else {
            AgentInput::RegistrationDown
        };
        match self.apply(extension, input, None, now_ms) {
            Ok(evs) if !evs.is_empty() => evs,
            // Accepted without a state change: still news for `/topic/register`.
            Ok(_) => {
                self.dirty.insert(extension.to_owned());
                vec![self.event(extension, AgentEventKind::Registration, now_ms)]
            }
            Err(_) => Vec::new(),
        }
    }

    /// A command from the API or a desktop. Composite commands are all or nothing.
    pub fn command(
        &mut self,
        extension: &str,
        cmd: Command,
        now_ms: u64,
    ) -> Result<Vec<AgentEvent>, PresenceError> {
        let seat = self
            .seats
            .get(extension)
            .ok_or_else(|| PresenceError::UnknownSeat(extension.to_owned()))?;
        let steps: Vec<AgentInput> = match cmd {
            Command::SignIn => vec![AgentInput::SignIn],
            Command::SignOut => vec![AgentInput::SignOut],
            Command::SetIdle => vec![AgentInput::SetIdle],
            Command::SetBusy(reason) => vec![AgentInput::SetBusy { reason }],
            Command::StartRest {
                reason,
                duration_ms,
            } => vec![AgentInput::StartRest {
                reason,
                duration_ms,
            }],
            Command::EndRest => vec![AgentInput::EndRest],
            Command::Available | Command::Unavailable => {
                let mut v = Vec::new();
                if *seat.machine.state() == AgentState::SignedOut {
                    v.push(AgentInput::SignIn);
                }
                v.push(if cmd == Command::Available {
                    AgentInput::SetIdle
                } else {
                    AgentInput::SetBusy {
                        reason: NotReadyReason::MANUAL,
                    }
                });
                v
            }
        };
        // Dry run on a copy, so a refused second step leaves the first undone too.
        let mut probe = seat.machine.clone();
        for step in &steps {
            probe
                .handle(step.clone(), now_ms)
                .map_err(|source| PresenceError::Refused {
                    extension: extension.to_owned(),
                    source,
                })?;
        }
        let mut out = Vec::new();
        for step in steps {
            out.extend(self.apply(extension, step, None, now_ms)?);
        }
        Ok(out)
    }

    /// A softswitch call event for a seat.
    ///
    /// Events for seats that are signed out are ignored (presence tracks agents at work; the
    /// CDR path records the call regardless). A ring for a second call while in a call, or an
    /// event naming another call, is refused like any illegal input.
    pub fn call_event(&mut self, ev: &CallEvent) -> Result<Vec<AgentEvent>, PresenceError> {
        let seat = self
            .seats
            .get(&ev.extension)
            .ok_or_else(|| PresenceError::UnknownSeat(ev.extension.clone()))?;
        if *seat.machine.state() == AgentState::SignedOut {
            return Ok(Vec::new());
        }
        let info = CallInfo {
            call_id: ev.call_id.clone(),
            direction: ev.direction,
            remote_number: ev.remote_number.clone(),
            task_code: ev.task_code.clone(),
        };
        let (inputs, direction): (Vec<AgentInput>, CallDirection) = match &ev.phase {
            CallPhase::Ringing => (
                vec![AgentInput::CallOffered {
                    call_id: ev.call_id.clone(),
                }],
                ev.direction,
            ),
            CallPhase::Answered => {
                let mut v = Vec::new();
                // An answer without a ring (ESL lost the ring, or an agent-dialled call
                // reported at answer): offer first, as one step.
                if !seat.machine.state().in_call() {
                    v.push(AgentInput::CallOffered {
                        call_id: ev.call_id.clone(),
                    });
                }
                v.push(AgentInput::CallAnswered {
                    call_id: ev.call_id.clone(),
                });
                (v, ev.direction)
            }
            CallPhase::Held => (vec![AgentInput::CallHeld], ev.direction),
            CallPhase::Resumed => (vec![AgentInput::CallResumed], ev.direction),
            CallPhase::Ended { .. } => {
                if !seat.machine.state().in_call() {
                    // The call was never tracked (it began before sign-in): nothing to end.
                    return Ok(Vec::new());
                }
                (
                    vec![AgentInput::CallEnded {
                        call_id: ev.call_id.clone(),
                    }],
                    seat.call.as_ref().map_or(ev.direction, |c| c.direction),
                )
            }
        };
        let mut probe = seat.machine.clone();
        for i in &inputs {
            probe
                .handle(i.clone(), ev.at_ms)
                .map_err(|source| PresenceError::Refused {
                    extension: ev.extension.clone(),
                    source,
                })?;
        }
        let mut out = Vec::new();
        for i in inputs {
            let keep = if matches!(i, AgentInput::CallOffered { .. }) {
                Some(info.clone())
            } else {
                None
            };
            out.extend(self.apply(&ev.extension, i, keep.map(|c| (c, direction)), ev.at_ms)?);
        }
        Ok(out)
    }

    /// The earliest instant [`Presence::tick`] has work: a seat timer or local midnight.
    pub fn next_deadline(&self) -> u64 {
        self.deadlines
            .first()
            .map_or(self.next_midnight_ms, |(d, _)| {
                (*d).min(self.next_midnight_ms)
            })
    }

    /// Fires every timer due at `now_ms`, and rolls the counters over at local midnight.
    pub fn tick(&mut self, now_ms: u64) -> Vec<AgentEvent> {
        let mut out = Vec::new();
        while let Some((d, ext)) = self.deadlines.first().cloned() {
            if d > now_ms {
                break;
            }
            self.deadlines.remove(&(d, ext.clone()));
            if let Ok(evs) = self.apply(&ext, AgentInput::Tick, None, now_ms) {
                out.extend(evs);
            }
        }
        if now_ms >= self.next_midnight_ms {
            for (ext, seat) in self.seats.iter_mut() {
                seat.counters
                    .roll_over(now_ms, LiveState::from(&seat.machine), &self.clock);
                self.dirty.insert(ext.clone());
            }
            self.next_midnight_ms = self.clock.next_midnight_ms(now_ms);
        }
        out
    }

    /// Seats changed since the last call (to persist), and seats removed.
    pub fn take_dirty(&mut self) -> (Vec<(String, SeatSnapshot, DailyCounters)>, Vec<String>) {
        let dirty: Vec<(String, SeatSnapshot, DailyCounters)> = self
            .dirty
            .drain()
            .filter_map(|ext| {
                let s = self.seats.get(&ext)?;
                Some((
                    ext,
                    SeatSnapshot {
                        machine: s.machine.snapshot(),
                    },
                    s.counters.clone(),
                ))
            })
            .collect();
        (dirty, std::mem::take(&mut self.removed))
    }

    /// Puts seats back on the dirty list after a failed write, so the next round retries.
    pub fn mark_dirty(&mut self, seats: impl IntoIterator<Item = String>, removed: Vec<String>) {
        self.dirty.extend(seats);
        self.removed.extend(removed);
    }

    /// Applies one input to one seat, keeping timers, counters, the call and the state tally
    /// in step. `offered` carries the call being offered and its direction.
    fn apply(
        &mut self,
        extension: &str,
        input: AgentInput,
        offered: Option<(CallInfo, CallDirection)>,
        now_ms: u64,
    ) -> Result<Vec<AgentEvent>, PresenceError> {
        let seat = self
            .seats
            .get_mut(extension)
            .ok_or_else(|| PresenceError::UnknownSeat(extension.to_owned()))?;
        let old_deadline = seat.machine.next_deadline();
        let t = seat
            .machine
            .handle(input, now_ms)
            .map_err(|source| PresenceError::Refused {
                extension: extension.to_owned(),
                source,
            })?;
        if !self.dirty.contains(extension) {
            self.dirty.insert(extension.to_owned());
        }
        let Some(t) = t else {
            return Ok(Vec::new());
        };
        if let Some(d) = old_deadline {
            self.deadlines.remove(&(d, extension.to_owned()));
        }
        if let Some(d) = seat.machine.next_deadline() {
            self.deadlines.insert((d, extension.to_owned()));
        }
        self.by_state[state_index(&t.from)] -= 1;
        self.by_state[state_index(&t.to)] += 1;
        if let Some((info, _)) = offered {
            seat.call = Some(info);
        }
        let direction = seat.call.as_ref().map(|c| c.direction);
        seat.counters.on_transition(&t, direction, &self.clock);
        // The event names the call that just ended; the seat forgets it.
        let call = seat.call.clone();
        if !t.to.in_call() {
            seat.call = None;
        }
        let mut ev = self.event(extension, AgentEventKind::Transition(t), now_ms);
        ev.call = call;
        Ok(vec![ev])
    }

    fn event(&self, extension: &str, kind: AgentEventKind, now_ms: u64) -> AgentEvent {
        let seat = &self.seats[extension];
        AgentEvent {
            extension: extension.to_owned(),
            project: seat.project.clone(),
            agent_id: seat.agent_id.clone(),
            kind,
            state: seat.machine.state().clone(),
            registered: seat.machine.registered(),
            call: seat.call.clone(),
            signin_session: seat.machine.signin_session(),
            source_ip: seat.source_ip,
            at_ms: now_ms,
        }
    }
}
