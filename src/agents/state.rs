//! The agent presence state machine: a sans-IO core.
//!
//! One [`AgentMachine`] per agent. It owns no clock, socket or task: every input comes with
//! `now_ms` (Unix milliseconds), and timers are exposed through [`AgentMachine::next_deadline`]
//! so the shell can arm one timer and feed [`AgentInput::Tick`] when it fires (the str0m
//! `poll_timeout` pattern).
//!
//! Every accepted input produces at most one [`Transition`]. A transition carries the previous
//! state, when it started and how long it lasted, which is what the grid's agent-event push
//! (坐席事件/考勤, grid reference A.2.2, 000:L472-L485: `lastState`, `lastTime`, `lastDuration`,
//! `ssid`) and the daily attendance counters need. Refused inputs return a [`TransitionError`]
//! and change nothing, so the shell can answer an API caller with the message as is.
//!
//! # Choices
//!
//! - **Registration gates idleness, it does not grant it.** An agent whose extension goes
//!   offline while idle becomes `NotReady(EXTENSION_OFFLINE)`; when it comes back the agent stays
//!   not ready until it asks to be idle. A phone that flaps (Wi-Fi, NAT rebinding, a softphone
//!   restart) must not silently put an absent agent back into the predictive dialer's pool,
//!   where every offered call would be abandoned. Huawei records the same situation as a busy
//!   state with cause 5 "phone unavailable" (huawei reference §3.5, Table 13-134, L67648-L67688),
//!   hence the code.
//! - **A call outlives its registration.** Registration down while reserved, talking or on hold
//!   changes no state: REGISTER refreshes get lost while the dialog and its media are fine. The
//!   call then ends normally (after-call work if configured). Wherever the machine would enter
//!   idle by itself (end of after-call work, `acw_ms == 0`, end of rest), it enters
//!   `NotReady(EXTENSION_OFFLINE)` instead if the extension is offline; so `Idle` always implies
//!   registered.
//! - **Rest that runs out does not make the agent ready.** Huawei only raises a reminder when a
//!   rest runs over (`AgentState_Rest_Timeout`, "a reminder only", huawei reference §3.2 L7929 and
//!   §3.3 L19367) and counts the over-run (`restoutnums`/`restouttime`, §3.5 L13001). We end the
//!   rest at its deadline (so rest time is exact) into `NotReady(REST_ENDED)` by default, for the
//!   same reason as above: nobody confirmed the agent is back at the desk.
//!   [`AgentConfig::idle_after_rest`] switches to going idle.
//! - **Sign-in lands in not ready.** Huawei's sign-in defaults to idle (`status` 4, §3.2 L6822);
//!   here the agent confirms readiness with [`AgentInput::SetIdle`], consistent with the
//!   registration rule.
//! - **Sign-out is refused during a call**, as Huawei refuses `logout` "while talking or
//!   answering" (§3.2 L8424).
//! - **An unanswered offer** (`CallEnded` while reserved) returns to idle without after-call
//!   work: there was no conversation to wrap up.
//! - **A not-ready agent can still be in a call.** Agents dial out by hand while busy, and a
//!   direct call to an extension rings whatever the agent's state; so a call is accepted while
//!   idle or not ready. A call that began while not ready ends (after its after-call work) back in
//!   the same not-ready reason, never in idle: being busy was the agent's choice.
//! - **Time never runs backwards inside the machine:** a `now_ms` earlier than the current
//!   state's start is treated as that start (a wall-clock step must not produce negative
//!   durations or wedge the agent).

use serde::{Deserialize, Serialize};

/// A softswitch call identifier (for FreeSWITCH, the channel or call UUID).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CallId(pub String);

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why an agent is not ready, as a numeric code.
///
/// The low codes follow Huawei's busy causes (Table 13-134, huawei reference §3.5,
/// L67648-L67688: 1 self, 4 rest, 5 phone unavailable); 200-250 are business-defined reasons
/// as in Huawei's `saybusy?reason=` (§3.2 L7765). Other values pass through untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NotReadyReason(pub u16);

impl NotReadyReason {
    /// No reason given (also the state right after sign-in).
    pub const NONE: Self = Self(0);
    /// The agent chose to be busy without a specific reason.
    pub const MANUAL: Self = Self(1);
    /// A rest reached its end and the agent has not confirmed being back.
    pub const REST_ENDED: Self = Self(4);
    /// The agent's extension is not registered.
    pub const EXTENSION_OFFLINE: Self = Self(5);
    /// The daemon restarted while the agent was in a call; nobody knows how the call went, so
    /// the agent is not offered work until it says it is ready.
    pub const INTERRUPTED: Self = Self(6);
}

/// Why an agent is resting (Huawei's rest cause, 0-255, §3.2 L7929).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RestReason(pub u8);

/// An agent's presence state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AgentState {
    /// Not signed in.
    SignedOut,
    /// Signed in, takes no ACD or dialer calls.
    NotReady {
        /// Why.
        reason: NotReadyReason,
    },
    /// Ready: the ACD and the dialer may offer a call.
    Idle,
    /// A call has been offered and is ringing at the agent.
    Reserved,
    /// In conversation.
    Talking,
    /// In a call that the agent has put on hold.
    Hold,
    /// Wrapping up after a call, until `until_ms` (Unix ms).
    AfterCallWork {
        /// When after-call work ends by itself.
        until_ms: u64,
    },
    /// On a break.
    Rest {
        /// Why.
        reason: RestReason,
        /// When the rest ends by itself, if it has a duration.
        until_ms: Option<u64>,
    },
}

impl AgentState {
    /// A short human name, used in error messages ("cannot go idle while talking").
    pub fn name(&self) -> &'static str {
        match self {
            AgentState::SignedOut => "signed out",
            AgentState::NotReady { .. } => "not ready",
            AgentState::Idle => "idle",
            AgentState::Reserved => "ringing",
            AgentState::Talking => "talking",
            AgentState::Hold => "on hold",
            AgentState::AfterCallWork { .. } => "in after-call work",
            AgentState::Rest { .. } => "resting",
        }
    }

    /// Whether the state belongs to a call (and so requires a current call id).
    pub fn in_call(&self) -> bool {
        matches!(
            self,
            AgentState::Reserved | AgentState::Talking | AgentState::Hold
        )
    }
}

/// Something that happened to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentInput {
    /// The SIP registrar has a binding for the agent's extension.
    RegistrationUp,
    /// The agent's extension has no binding left.
    RegistrationDown,
    /// The agent signs in (API).
    SignIn,
    /// The agent signs out (API). Refused during a call.
    SignOut,
    /// An administrator takes the extension away (disabled, or its project finished): the agent
    /// is signed out whatever it was doing, calls included. The call itself is the
    /// softswitch's business; presence just stops attributing it to the agent.
    ForceSignOut,
    /// The agent asks to be ready (API; also ends rest or after-call work).
    SetIdle,
    /// The agent asks to be not ready (API; with a reason, which may change while not ready).
    SetBusy {
        /// Why.
        reason: NotReadyReason,
    },
    /// The agent starts (or, while resting, restarts) a break (API).
    StartRest {
        /// Why.
        reason: RestReason,
        /// How long, if bounded; must be positive.
        duration_ms: Option<u64>,
    },
    /// The agent ends a break early (API).
    EndRest,
    /// A call reaches the agent: the ACD or the dialer offers one (only while idle), or the agent
    /// dials out or is dialled directly (idle or not ready).
    CallOffered {
        /// The offered call.
        call_id: CallId,
    },
    /// The agent answered the offered call.
    CallAnswered {
        /// Must be the offered call.
        call_id: CallId,
    },
    /// The current call was put on hold.
    CallHeld,
    /// The current call was taken off hold.
    CallResumed,
    /// The current call ended (answered or not).
    CallEnded {
        /// Must be the current call.
        call_id: CallId,
    },
    /// A timer may have expired (see [`AgentMachine::next_deadline`]).
    Tick,
}

/// Per-agent policy. The default is no after-call work and rest ending in not ready.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// After-call work after a conversation, in ms; 0 goes straight back to idle (Huawei's
    /// default `autoenteridle=true`, §3.2 L6822).
    pub acw_ms: u64,
    /// Whether a rest that reaches its end goes to idle (true) or to
    /// `NotReady(REST_ENDED)` (false, the default; see the module docs).
    pub idle_after_rest: bool,
}

/// One change of state, with what the attendance push and daily counters need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The state left.
    pub from: AgentState,
    /// The state entered.
    pub to: AgentState,
    /// When `from` was entered (Unix ms).
    pub from_since_ms: u64,
    /// When the change happened (Unix ms); `to` starts here.
    pub at_ms: u64,
    /// `at_ms - from_since_ms`: how long `from` lasted.
    pub duration_ms: u64,
    /// The sign-in session this change belongs to: the new one for a sign-in, the ending one
    /// for a sign-out (grid `ssid`, 000:L474). `None` only while signed out.
    pub signin_session: Option<u64>,
    /// The call involved: the current call when entering or leaving a call state.
    pub call_id: Option<CallId>,
}

/// What survives a restart of the daemon (persisted by the presence shell).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSnapshot {
    pub state: AgentState,
    pub since_ms: u64,
    pub signin_session: Option<u64>,
    pub last_session: u64,
    #[serde(default)]
    pub resume: Option<NotReadyReason>,
}

/// Why an input was refused. The machine is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The input makes no sense in the current state.
    #[error("cannot {action} while {state}")]
    NotAllowed {
        /// What was attempted ("go idle").
        action: &'static str,
        /// The current state's name ("talking").
        state: &'static str,
    },
    /// The input needs a registered extension.
    #[error("cannot {action}: the extension is not registered")]
    ExtensionOffline {
        /// What was attempted.
        action: &'static str,
    },
    /// A call event names a call that is not the agent's current call.
    #[error("cannot {action}: call {got} is not the current call ({})", .current.as_ref().map_or("none", |c| c.0.as_str()))]
    WrongCall {
        /// What was attempted.
        action: &'static str,
        /// The agent's current call, if any.
        current: Option<CallId>,
        /// The call named by the input.
        got: CallId,
    },
    /// A rest of zero length was requested.
    #[error("cannot start a rest of 0 ms")]
    ZeroRest,
}

/// The presence state of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentMachine {
    state: AgentState,
    since_ms: u64,
    registered: bool,
    signin_session: Option<u64>,
    /// The last session id handed out, so ids stay unique even for two sign-ins in one ms.
    last_session: u64,
    current_call: Option<CallId>,
    /// The not-ready reason to return to after the current call, when it began while not ready.
    resume: Option<NotReadyReason>,
    cfg: AgentConfig,
}

impl AgentMachine {
    /// A signed-out agent whose extension is not (yet) registered, as of `now_ms`.
    pub fn new(cfg: AgentConfig, now_ms: u64) -> Self {
        Self {
            state: AgentState::SignedOut,
            since_ms: now_ms,
            registered: false,
            signin_session: None,
            last_session: 0,
            current_call: None,
            resume: None,
            cfg,
        }
    }

    /// What to persist so that [`AgentMachine::restore`] can rebuild this machine.
    pub fn snapshot(&self) -> AgentSnapshot {
        AgentSnapshot {
            state: self.state.clone(),
            since_ms: self.since_ms,
            signin_session: self.signin_session,
            last_session: self.last_session,
            resume: self.resume,
        }
    }

    /// Rebuilds a machine after a restart, at `now_ms`, knowing whether the extension is
    /// registered now.
    ///
    /// A call state cannot be trusted (the call may have ended while the daemon was down, and
    /// the softswitch adapter resynchronizes calls separately), so it becomes
    /// `NotReady(INTERRUPTED)` from now. Idle without a registration becomes
    /// `NotReady(EXTENSION_OFFLINE)`. A snapshot that breaks an invariant (a signed-out state
    /// with a session, say, from a damaged row) is repaired the same conservative way.
    pub fn restore(cfg: AgentConfig, snap: AgentSnapshot, registered: bool, now_ms: u64) -> Self {
        let mut m = Self {
            state: snap.state,
            since_ms: snap.since_ms.min(now_ms),
            registered,
            signin_session: snap.signin_session,
            last_session: snap.last_session.max(snap.signin_session.unwrap_or(0)),
            current_call: None,
            resume: snap.resume,
            cfg,
        };
        let signed_out = m.state == AgentState::SignedOut;
        if signed_out != m.signin_session.is_none() {
            m.state = AgentState::SignedOut;
            m.signin_session = None;
            m.resume = None;
            m.since_ms = now_ms;
        } else if m.state.in_call() {
            m.state = not_ready(NotReadyReason::INTERRUPTED);
            m.resume = None;
            m.since_ms = now_ms;
        } else if m.state == AgentState::Idle && !registered {
            m.state = not_ready(NotReadyReason::EXTENSION_OFFLINE);
            m.since_ms = now_ms;
        }
        if !matches!(m.state, AgentState::AfterCallWork { .. }) {
            m.resume = None;
        }
        if let Some(deadline) = m.next_deadline() {
            if deadline < m.since_ms {
                m.since_ms = deadline;
            }
        }
        debug_assert_eq!(m.invariant_violation(), None);
        m
    }

    /// The current state.
    pub fn state(&self) -> &AgentState {
        &self.state
    }

    /// When the current state was entered (Unix ms).
    pub fn since_ms(&self) -> u64 {
        self.since_ms
    }

    /// Whether the agent's extension is registered.
    pub fn registered(&self) -> bool {
        self.registered
    }

    /// The current sign-in session id: the sign-in time in ms, bumped if needed to stay
    /// strictly increasing for this agent.
    pub fn signin_session(&self) -> Option<u64> {
        self.signin_session
    }

    /// The call the agent is ringing with, talking on or holding.
    pub fn current_call(&self) -> Option<&CallId> {
        self.current_call.as_ref()
    }

    /// The policy in force.
    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    /// Replaces the policy. Timers already running keep their deadlines.
    pub fn set_config(&mut self, cfg: AgentConfig) {
        self.cfg = cfg;
    }

    /// When the shell must deliver [`AgentInput::Tick`] next, if a timer runs.
    pub fn next_deadline(&self) -> Option<u64> {
        match self.state {
            AgentState::AfterCallWork { until_ms } => Some(until_ms),
            AgentState::Rest { until_ms, .. } => until_ms,
            _ => None,
        }
    }

    /// Applies one input at `now_ms`.
    ///
    /// Returns the transition it caused, `None` if it was accepted without a state change (a
    /// registration change that leaves the state alone, a repeated request, a tick before any
    /// deadline), or an error that leaves the machine exactly as it was.
    pub fn handle(
        &mut self,
        input: AgentInput,
        now_ms: u64,
    ) -> Result<Option<Transition>, TransitionError> {
        // Clamped so that durations are never negative; see the module docs.
        let now = now_ms.max(self.since_ms);
        match input {
            AgentInput::RegistrationUp => {
                // Deliberately no state change: the agent must choose to be ready.
                self.registered = true;
                Ok(None)
            }
            AgentInput::RegistrationDown => {
                self.registered = false;
                if self.state == AgentState::Idle {
                    Ok(Some(
                        self.go(not_ready(NotReadyReason::EXTENSION_OFFLINE), now),
                    ))
                } else {
                    // Calls continue; not-ready reasons chosen by the agent are kept.
                    Ok(None)
                }
            }
            AgentInput::SignIn => {
                if self.state != AgentState::SignedOut {
                    return Err(self.refuse("sign in"));
                }
                let session = now.max(self.last_session.saturating_add(1));
                self.last_session = session;
                self.signin_session = Some(session);
                let reason = if self.registered {
                    NotReadyReason::NONE
                } else {
                    NotReadyReason::EXTENSION_OFFLINE
                };
                Ok(Some(self.go(not_ready(reason), now)))
            }
            AgentInput::SignOut => match self.state {
                AgentState::NotReady { .. }
                | AgentState::Idle
                | AgentState::AfterCallWork { .. }
                | AgentState::Rest { .. } => {
                    let t = self.go(AgentState::SignedOut, now);
                    self.signin_session = None;
                    Ok(Some(t))
                }
                _ => Err(self.refuse("sign out")),
            },
            AgentInput::ForceSignOut => {
                if self.state == AgentState::SignedOut {
                    return Ok(None);
                }
                let t = self.go(AgentState::SignedOut, now);
                self.signin_session = None;
                self.current_call = None;
                Ok(Some(t))
            }
            AgentInput::SetIdle => match self.state {
                AgentState::Idle => Ok(None),
                AgentState::NotReady { .. }
                | AgentState::AfterCallWork { .. }
                | AgentState::Rest { .. } => {
                    if !self.registered {
                        return Err(TransitionError::ExtensionOffline { action: "go idle" });
                    }
                    Ok(Some(self.go(AgentState::Idle, now)))
                }
                _ => Err(self.refuse("go idle")),
            },
            AgentInput::SetBusy { reason } => match self.state {
                AgentState::NotReady { reason: r } if r == reason => Ok(None),
                AgentState::NotReady { .. }
                | AgentState::Idle
                | AgentState::AfterCallWork { .. }
                | AgentState::Rest { .. } => Ok(Some(self.go(not_ready(reason), now))),
                _ => Err(self.refuse("go busy")),
            },
            AgentInput::StartRest {
                reason,
                duration_ms,
            } => match self.state {
                AgentState::NotReady { .. }
                | AgentState::Idle
                | AgentState::AfterCallWork { .. }
                | AgentState::Rest { .. } => {
                    if duration_ms == Some(0) {
                        return Err(TransitionError::ZeroRest);
                    }
                    let until_ms = duration_ms.map(|d| now.saturating_add(d));
                    let rest = AgentState::Rest { reason, until_ms };
                    if rest == self.state {
                        // The same open rest again (or the same deadline): nothing changes.
                        return Ok(None);
                    }
                    // Otherwise restarting a rest is a transition (Huawei `prolong`, §3.2
                    // L7929): the new period is counted from now.
                    Ok(Some(self.go(rest, now)))
                }
                _ => Err(self.refuse("start a rest")),
            },
            AgentInput::EndRest => match self.state {
                AgentState::Rest { .. } => Ok(Some(self.go(self.auto_idle(), now))),
                _ => Err(self.refuse("end a rest")),
            },
            AgentInput::CallOffered { call_id } => match self.state {
                // Idle implies registered (an invariant), so no separate check.
                AgentState::Idle => {
                    self.current_call = Some(call_id);
                    Ok(Some(self.go(AgentState::Reserved, now)))
                }
                AgentState::NotReady { reason } => {
                    self.current_call = Some(call_id);
                    let t = self.go(AgentState::Reserved, now);
                    self.resume = Some(reason);
                    Ok(Some(t))
                }
                _ => Err(self.refuse("offer a call")),
            },
            AgentInput::CallAnswered { call_id } => match self.state {
                AgentState::Reserved => {
                    self.check_call("answer", &call_id)?;
                    Ok(Some(self.go(AgentState::Talking, now)))
                }
                _ => Err(self.refuse("answer a call")),
            },
            AgentInput::CallHeld => match self.state {
                AgentState::Talking => Ok(Some(self.go(AgentState::Hold, now))),
                _ => Err(self.refuse("hold a call")),
            },
            AgentInput::CallResumed => match self.state {
                AgentState::Hold => Ok(Some(self.go(AgentState::Talking, now))),
                _ => Err(self.refuse("resume a call")),
            },
            AgentInput::CallEnded { call_id } => match self.state {
                AgentState::Reserved | AgentState::Talking | AgentState::Hold => {
                    self.check_call("end", &call_id)?;
                    let next = if self.state != AgentState::Reserved && self.cfg.acw_ms > 0 {
                        AgentState::AfterCallWork {
                            until_ms: now.saturating_add(self.cfg.acw_ms),
                        }
                    } else {
                        self.after_call()
                    };
                    let t = self.go(next, now);
                    self.current_call = None;
                    Ok(Some(t))
                }
                _ => Err(self.refuse("end a call")),
            },
            AgentInput::Tick => match self.next_deadline() {
                Some(deadline) if now >= deadline => {
                    let next = match self.state {
                        AgentState::Rest { .. } if !self.cfg.idle_after_rest => {
                            not_ready(NotReadyReason::REST_ENDED)
                        }
                        AgentState::AfterCallWork { .. } => self.after_call(),
                        _ => self.auto_idle(),
                    };
                    Ok(Some(self.go(next, now)))
                }
                _ => Ok(None),
            },
        }
    }

    /// Where the machine goes when it would become idle by itself.
    fn auto_idle(&self) -> AgentState {
        if self.registered {
            AgentState::Idle
        } else {
            not_ready(NotReadyReason::EXTENSION_OFFLINE)
        }
    }

    /// Where a finished call (or its after-call work) leads: back to the agent's not-ready
    /// reason if the call began while not ready, else as [`Self::auto_idle`].
    fn after_call(&self) -> AgentState {
        match self.resume {
            Some(reason) => not_ready(reason),
            None => self.auto_idle(),
        }
    }

    fn refuse(&self, action: &'static str) -> TransitionError {
        TransitionError::NotAllowed {
            action,
            state: self.state.name(),
        }
    }

    fn check_call(&self, action: &'static str, got: &CallId) -> Result<(), TransitionError> {
        if self.current_call.as_ref() == Some(got) {
            Ok(())
        } else {
            Err(TransitionError::WrongCall {
                action,
                current: self.current_call.clone(),
                got: got.clone(),
            })
        }
    }

    /// Enters `to` at `now` (already clamped) and describes the change. The caller adjusts the
    /// current call and session afterwards, so the transition names the call and session
    /// that were in effect.
    fn go(&mut self, to: AgentState, now: u64) -> Transition {
        if !(to.in_call() || matches!(to, AgentState::AfterCallWork { .. })) {
            // The call and its wrap-up are over (or were cut short): nothing to resume.
            self.resume = None;
        }
        let from = std::mem::replace(&mut self.state, to.clone());
        let from_since_ms = std::mem::replace(&mut self.since_ms, now);
        Transition {
            from,
            to,
            from_since_ms,
            at_ms: now,
            duration_ms: now - from_since_ms,
            signin_session: self.signin_session,
            call_id: self.current_call.clone(),
        }
    }

    /// Describes the first broken invariant, if any. Used by tests and debug assertions in
    /// shells; a `Some` is a bug in this module.
    pub fn invariant_violation(&self) -> Option<&'static str> {
        if self.state.in_call() != self.current_call.is_some() {
            return Some("a call state needs exactly a current call");
        }
        if self.state == AgentState::Idle && !self.registered {
            return Some("idle with an unregistered extension");
        }
        if (self.state == AgentState::SignedOut) != self.signin_session.is_none() {
            return Some("a sign-in session exists exactly while signed in");
        }
        if self.resume.is_some()
            && !(self.state.in_call() || matches!(self.state, AgentState::AfterCallWork { .. }))
        {
            return Some("a not-ready reason to resume outside a call");
        }
        if let Some(deadline) = self.next_deadline() {
            if deadline < self.since_ms {
                return Some("a timer ends before its state began");
            }
        }
        None
    }
}

fn not_ready(reason: NotReadyReason) -> AgentState {
    AgentState::NotReady { reason }
}

/// The grid platform's `agentState` (grid reference A.3.3, 000:L819 and L840; summary L732).
///
/// | grid | meaning | states |
/// |---|---|---|
/// | 0 | 未登录 not logged in | `SignedOut` |
/// | 1 | 未就绪 not ready | `NotReady`, `Rest` |
/// | 2 | 空闲 idle | `Idle` |
/// | 3 | 通话中 talking | `Reserved`, `Talking`, `Hold` |
/// | 4 | 后处理 after-call work | `AfterCallWork` |
///
/// Ringing as 3 follows the reference's proposal (grid reference L743, "needs confirming"): a
/// reserved agent is not available, and reporting it idle would overstate the idle count.
pub fn grid_agent_state(state: &AgentState) -> u8 {
    match state {
        AgentState::SignedOut => 0,
        AgentState::NotReady { .. } | AgentState::Rest { .. } => 1,
        AgentState::Idle => 2,
        AgentState::Reserved | AgentState::Talking | AgentState::Hold => 3,
        AgentState::AfterCallWork { .. } => 4,
    }
}

/// An extension's status in seed 004's terms (its extension list, `setWorkStatus`, and the
/// `/topic/callExtStatus` push: 004:L313-L315, L996-L998, L1172-L1174).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seed004Status {
    /// `status`: 1 registered, 0 not (004:L313, L996).
    pub status: u8,
    /// `workStatus`: -1 unavailable, 0 cannot take calls, 1 can take calls (004:L314, L997).
    pub work_status: i8,
    /// `sessionStatus`: 0 not in a call, 10 in a call (004:L315, L998, L1173; 7 "conference"
    /// is not modelled; L400 says 1 for in-call, but three of four places say 10).
    pub session_status: u8,
}

/// Seed 004's status triple for an agent.
///
/// | state | `workStatus` | `sessionStatus` |
/// |---|---|---|
/// | `SignedOut` | -1 | 0 |
/// | `Idle` | 1 | 0 |
/// | `NotReady`, `AfterCallWork`, `Rest` | 0 | 0 |
/// | `Reserved` | 0 | 0 (ringing is not yet 通话) |
/// | `Talking`, `Hold` | 0 | 10 |
///
/// `status` is the registration flag; `workStatus` -1 is read as "no agent behind the
/// extension", since seed 004 sets 0/1 through `setWorkStatus` (L390) and never says what -1
/// comes from.
pub fn seed004_status(state: &AgentState, registered: bool) -> Seed004Status {
    let work_status = match state {
        AgentState::SignedOut => -1,
        AgentState::Idle => 1,
        _ => 0,
    };
    let session_status = match state {
        AgentState::Talking | AgentState::Hold => 10,
        _ => 0,
    };
    Seed004Status {
        status: u8::from(registered),
        work_status,
        session_status,
    }
}

/// Huawei CC-Gateway agent state (Table 6-452, huawei reference §3.1, L21220-L21232), as
/// returned by `agentstatus` (§3.2 L8683).
///
/// | Huawei | meaning | states |
/// |---|---|---|
/// | 2 | signed out | `SignedOut` |
/// | 3 | busy (示忙) | `NotReady` |
/// | 4 | idle | `Idle` |
/// | 5 | after-call work (整理态) | `AfterCallWork` |
/// | 7 | talking (CTI 2-5: pre-occupied, occupied, answering, talking) | `Reserved`, `Talking`, `Hold` |
/// | 8 | rest | `Rest` |
pub fn huawei_agent_state(state: &AgentState) -> u8 {
    match state {
        AgentState::SignedOut => 2,
        AgentState::NotReady { .. } => 3,
        AgentState::Idle => 4,
        AgentState::AfterCallWork { .. } => 5,
        AgentState::Reserved | AgentState::Talking | AgentState::Hold => 7,
        AgentState::Rest { .. } => 8,
    }
}

/// Huawei's finer activity state (Table 6-454, huawei reference §3.1, L21250-L21270), as in
/// `syncagentinfo.state`: 1 idle, 2 after-call work, 3 rest, 4 busy, 8 ringing, 9 talking,
/// 11 held. The table has no signed-out value, hence `None`.
pub fn huawei_activity_state(state: &AgentState) -> Option<u8> {
    match state {
        AgentState::SignedOut => None,
        AgentState::Idle => Some(1),
        AgentState::AfterCallWork { .. } => Some(2),
        AgentState::Rest { .. } => Some(3),
        AgentState::NotReady { .. } => Some(4),
        AgentState::Reserved => Some(8),
        AgentState::Talking => Some(9),
        AgentState::Hold => Some(11),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> CallId {
        CallId(id.to_owned())
    }

    fn machine(acw_ms: u64) -> AgentMachine {
        AgentMachine::new(
            AgentConfig {
                acw_ms,
                idle_after_rest: false,
            },
            1_000,
        )
    }

    /// Drives a fresh machine through `inputs` (all at t = 1000), panicking on refusal.
    fn at(inputs: &[AgentInput], acw_ms: u64) -> AgentMachine {
        let mut m = machine(acw_ms);
        for i in inputs {
            m.handle(i.clone(), 1_000)
                .unwrap_or_else(|e| panic!("setup {i:?}: {e}"));
        }
        m
    }

    use AgentInput as I;

    fn idle() -> Vec<AgentInput> {
        vec![I::RegistrationUp, I::SignIn, I::SetIdle]
    }
    fn with(mut base: Vec<AgentInput>, more: &[AgentInput]) -> Vec<AgentInput> {
        base.extend_from_slice(more);
        base
    }

    #[test]
    fn legal_transitions() {
        let offered = || with(idle(), &[I::CallOffered { call_id: call("c") }]);
        let talking = || with(offered(), &[I::CallAnswered { call_id: call("c") }]);
        let busy7 = || NotReadyReason(7);
        // (setup, input, expected state afterwards)
        let cases: Vec<(Vec<AgentInput>, AgentInput, AgentState)> = vec![
            (
                vec![I::RegistrationUp],
                I::SignIn,
                not_ready(NotReadyReason::NONE),
            ),
            (
                vec![],
                I::SignIn,
                not_ready(NotReadyReason::EXTENSION_OFFLINE),
            ),
            (
                vec![I::RegistrationUp, I::SignIn],
                I::SetIdle,
                AgentState::Idle,
            ),
            (idle(), I::SetBusy { reason: busy7() }, not_ready(busy7())),
            (
                with(idle(), &[I::SetBusy { reason: busy7() }]),
                I::SetBusy {
                    reason: NotReadyReason(200),
                },
                not_ready(NotReadyReason(200)),
            ),
            (idle(), I::SignOut, AgentState::SignedOut),
            (
                idle(),
                I::RegistrationDown,
                not_ready(NotReadyReason::EXTENSION_OFFLINE),
            ),
            (
                idle(),
                I::StartRest {
                    reason: RestReason(3),
                    duration_ms: Some(60_000),
                },
                AgentState::Rest {
                    reason: RestReason(3),
                    until_ms: Some(61_000),
                },
            ),
            (
                with(
                    idle(),
                    &[I::StartRest {
                        reason: RestReason(3),
                        duration_ms: None,
                    }],
                ),
                I::EndRest,
                AgentState::Idle,
            ),
            (
                with(
                    idle(),
                    &[I::StartRest {
                        reason: RestReason(3),
                        duration_ms: None,
                    }],
                ),
                I::SetBusy { reason: busy7() },
                not_ready(busy7()),
            ),
            (
                idle(),
                I::CallOffered { call_id: call("c") },
                AgentState::Reserved,
            ),
            (
                offered(),
                I::CallAnswered { call_id: call("c") },
                AgentState::Talking,
            ),
            (
                offered(),
                I::CallEnded { call_id: call("c") },
                AgentState::Idle,
            ),
            (talking(), I::CallHeld, AgentState::Hold),
            (
                with(talking(), &[I::CallHeld]),
                I::CallResumed,
                AgentState::Talking,
            ),
            (
                with(talking(), &[I::CallHeld]),
                I::CallEnded { call_id: call("c") },
                AgentState::AfterCallWork { until_ms: 6_000 },
            ),
            (
                talking(),
                I::CallEnded { call_id: call("c") },
                AgentState::AfterCallWork { until_ms: 6_000 },
            ),
            (
                with(talking(), &[I::CallEnded { call_id: call("c") }]),
                I::SetIdle,
                AgentState::Idle,
            ),
            (
                with(talking(), &[I::CallEnded { call_id: call("c") }]),
                I::SignOut,
                AgentState::SignedOut,
            ),
        ];
        for (setup, input, expected) in cases {
            let mut m = at(&setup, 5_000);
            let before = m.state().clone();
            let t = m
                .handle(input.clone(), 2_000)
                .unwrap_or_else(|e| panic!("{setup:?} + {input:?}: {e}"));
            let expected = match expected {
                // Deadlines in the table are written relative to t = 1000; the input is at 2000.
                AgentState::AfterCallWork { until_ms } => AgentState::AfterCallWork {
                    until_ms: until_ms + 1_000,
                },
                AgentState::Rest { reason, until_ms } => AgentState::Rest {
                    reason,
                    until_ms: until_ms.map(|u| u + 1_000),
                },
                s => s,
            };
            assert_eq!(m.state(), &expected, "{setup:?} + {input:?}");
            let t = t.expect("a transition");
            assert_eq!((t.from, t.to), (before, expected.clone()));
            assert_eq!(
                (t.from_since_ms, t.at_ms, t.duration_ms),
                (1_000, 2_000, 1_000)
            );
            assert_eq!(m.since_ms(), 2_000);
            assert_eq!(m.invariant_violation(), None, "{setup:?} + {input:?}");
        }
    }

    #[test]
    fn illegal_transitions_change_nothing() {
        let offered = || with(idle(), &[I::CallOffered { call_id: call("c") }]);
        let talking = || with(offered(), &[I::CallAnswered { call_id: call("c") }]);
        let cases: Vec<(Vec<AgentInput>, AgentInput, &str)> = vec![
            (talking(), I::SetIdle, "cannot go idle while talking"),
            (talking(), I::SignOut, "cannot sign out while talking"),
            (offered(), I::SignOut, "cannot sign out while ringing"),
            (
                with(talking(), &[I::CallHeld]),
                I::SignOut,
                "cannot sign out while on hold",
            ),
            (vec![], I::SetIdle, "cannot go idle while signed out"),
            (
                vec![],
                I::SetBusy {
                    reason: NotReadyReason(1),
                },
                "cannot go busy while signed out",
            ),
            (vec![], I::SignOut, "cannot sign out while signed out"),
            (idle(), I::SignIn, "cannot sign in while idle"),
            (
                vec![I::SignIn],
                I::SetIdle,
                "cannot go idle: the extension is not registered",
            ),
            (
                vec![
                    I::RegistrationUp,
                    I::SignIn,
                    I::StartRest {
                        reason: RestReason(1),
                        duration_ms: None,
                    },
                ],
                I::CallOffered { call_id: call("c") },
                "cannot offer a call while resting",
            ),
            (
                offered(),
                I::CallOffered { call_id: call("d") },
                "cannot offer a call while ringing",
            ),
            (
                offered(),
                I::CallAnswered { call_id: call("d") },
                "cannot answer: call d is not the current call (c)",
            ),
            (
                talking(),
                I::CallEnded { call_id: call("d") },
                "cannot end: call d is not the current call (c)",
            ),
            (
                idle(),
                I::CallEnded { call_id: call("c") },
                "cannot end a call while idle",
            ),
            (
                idle(),
                I::CallAnswered { call_id: call("c") },
                "cannot answer a call while idle",
            ),
            (
                talking(),
                I::CallAnswered { call_id: call("c") },
                "cannot answer a call while talking",
            ),
            (idle(), I::CallHeld, "cannot hold a call while idle"),
            (offered(), I::CallHeld, "cannot hold a call while ringing"),
            (
                talking(),
                I::CallResumed,
                "cannot resume a call while talking",
            ),
            (idle(), I::EndRest, "cannot end a rest while idle"),
            (
                talking(),
                I::StartRest {
                    reason: RestReason(1),
                    duration_ms: None,
                },
                "cannot start a rest while talking",
            ),
            (
                idle(),
                I::StartRest {
                    reason: RestReason(1),
                    duration_ms: Some(0),
                },
                "cannot start a rest of 0 ms",
            ),
            (
                talking(),
                I::SetBusy {
                    reason: NotReadyReason(1),
                },
                "cannot go busy while talking",
            ),
        ];
        for (setup, input, message) in cases {
            let mut m = at(&setup, 5_000);
            let before = m.clone();
            let err = m
                .handle(input.clone(), 2_000)
                .expect_err(&format!("{setup:?} + {input:?} should be refused"));
            assert_eq!(err.to_string(), message);
            assert_eq!(m, before, "{setup:?} + {input:?} changed the machine");
        }
    }

    #[test]
    fn repeated_requests_are_accepted_without_a_transition() {
        let mut m = at(&idle(), 0);
        assert_eq!(m.handle(I::SetIdle, 2_000), Ok(None));
        assert_eq!(m.handle(I::RegistrationUp, 2_000), Ok(None));
        m.handle(
            I::SetBusy {
                reason: NotReadyReason(9),
            },
            2_000,
        )
        .unwrap();
        assert_eq!(
            m.handle(
                I::SetBusy {
                    reason: NotReadyReason(9)
                },
                3_000
            ),
            Ok(None)
        );
        assert_eq!(m.since_ms(), 2_000);
    }

    #[test]
    fn acw_ends_exactly_at_its_deadline() {
        let mut m = at(
            &with(
                idle(),
                &[
                    I::CallOffered { call_id: call("c") },
                    I::CallAnswered { call_id: call("c") },
                ],
            ),
            30_000,
        );
        assert_eq!(m.next_deadline(), None);
        let t = m
            .handle(I::CallEnded { call_id: call("c") }, 10_000)
            .unwrap()
            .unwrap();
        assert_eq!(t.call_id, Some(call("c")));
        assert_eq!(m.current_call(), None);
        assert_eq!(m.next_deadline(), Some(40_000));
        assert_eq!(m.handle(I::Tick, 39_999), Ok(None));
        assert_eq!(m.state(), &AgentState::AfterCallWork { until_ms: 40_000 });
        let t = m.handle(I::Tick, 40_000).unwrap().unwrap();
        assert_eq!(t.to, AgentState::Idle);
        assert_eq!(t.duration_ms, 30_000);
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn zero_acw_goes_straight_to_idle() {
        let mut m = at(
            &with(
                idle(),
                &[
                    I::CallOffered { call_id: call("c") },
                    I::CallAnswered { call_id: call("c") },
                ],
            ),
            0,
        );
        let t = m
            .handle(I::CallEnded { call_id: call("c") }, 5_000)
            .unwrap()
            .unwrap();
        assert_eq!((t.from, t.to), (AgentState::Talking, AgentState::Idle));
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn a_call_taken_while_not_ready_returns_to_the_same_reason() {
        let busy = NotReadyReason(210);
        for acw_ms in [0, 5_000] {
            let mut m = at(
                &[
                    I::RegistrationUp,
                    I::SignIn,
                    I::SetBusy { reason: busy },
                    I::CallOffered { call_id: call("c") },
                    I::CallAnswered { call_id: call("c") },
                    I::CallEnded { call_id: call("c") },
                ],
                acw_ms,
            );
            if acw_ms > 0 {
                assert!(matches!(m.state(), AgentState::AfterCallWork { .. }));
                m.handle(I::Tick, 1_000 + acw_ms).unwrap();
            }
            assert_eq!(m.state(), &not_ready(busy), "acw {acw_ms}");
            assert_eq!(m.invariant_violation(), None);
        }
        // Unanswered, and an idle agent's call still returns to idle.
        let m = at(
            &[
                I::RegistrationUp,
                I::SignIn,
                I::SetBusy { reason: busy },
                I::CallOffered { call_id: call("c") },
                I::CallEnded { call_id: call("c") },
            ],
            0,
        );
        assert_eq!(m.state(), &not_ready(busy));
        let m = at(
            &with(
                idle(),
                &[
                    I::CallOffered { call_id: call("c") },
                    I::CallAnswered { call_id: call("c") },
                    I::CallEnded { call_id: call("c") },
                ],
            ),
            0,
        );
        assert_eq!(m.state(), &AgentState::Idle);
    }

    #[test]
    fn rest_with_a_duration_ends_at_its_deadline_into_not_ready() {
        let mut m = at(&idle(), 0);
        m.handle(
            I::StartRest {
                reason: RestReason(2),
                duration_ms: Some(900_000),
            },
            2_000,
        )
        .unwrap();
        assert_eq!(m.next_deadline(), Some(902_000));
        assert_eq!(m.handle(I::Tick, 901_999), Ok(None));
        let t = m.handle(I::Tick, 902_000).unwrap().unwrap();
        assert_eq!(t.to, not_ready(NotReadyReason::REST_ENDED));
        assert_eq!(t.duration_ms, 900_000);
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn rest_can_be_configured_to_end_idle_and_open_rest_has_no_deadline() {
        let mut m = at(&idle(), 0);
        m.set_config(AgentConfig {
            acw_ms: 0,
            idle_after_rest: true,
        });
        m.handle(
            I::StartRest {
                reason: RestReason(2),
                duration_ms: None,
            },
            2_000,
        )
        .unwrap();
        assert_eq!(m.next_deadline(), None);
        assert_eq!(m.handle(I::Tick, u64::MAX), Ok(None));
        m.handle(
            I::StartRest {
                reason: RestReason(2),
                duration_ms: Some(10),
            },
            3_000,
        )
        .unwrap();
        assert_eq!(
            m.handle(I::Tick, 3_010).unwrap().unwrap().to,
            AgentState::Idle
        );
        // ...but never into idle with the extension offline.
        m.handle(
            I::StartRest {
                reason: RestReason(2),
                duration_ms: Some(10),
            },
            4_000,
        )
        .unwrap();
        m.handle(I::RegistrationDown, 4_001).unwrap();
        assert_eq!(
            m.handle(I::Tick, 4_010).unwrap().unwrap().to,
            not_ready(NotReadyReason::EXTENSION_OFFLINE)
        );
    }

    #[test]
    fn registration_back_up_does_not_make_the_agent_idle() {
        let mut m = at(&idle(), 0);
        m.handle(I::RegistrationDown, 2_000).unwrap();
        assert_eq!(m.handle(I::RegistrationUp, 3_000), Ok(None));
        assert_eq!(m.state(), &not_ready(NotReadyReason::EXTENSION_OFFLINE));
        m.handle(I::SetIdle, 4_000).unwrap();
        assert_eq!(m.state(), &AgentState::Idle);
    }

    #[test]
    fn registration_down_while_not_ready_keeps_the_reason() {
        let mut m = at(
            &with(
                idle(),
                &[I::SetBusy {
                    reason: NotReadyReason(201),
                }],
            ),
            0,
        );
        assert_eq!(m.handle(I::RegistrationDown, 2_000), Ok(None));
        assert_eq!(m.state(), &not_ready(NotReadyReason(201)));
        assert!(!m.registered());
    }

    #[test]
    fn registration_down_while_talking_keeps_the_call_then_acw_then_not_ready() {
        let mut m = at(
            &with(
                idle(),
                &[
                    I::CallOffered { call_id: call("c") },
                    I::CallAnswered { call_id: call("c") },
                ],
            ),
            5_000,
        );
        assert_eq!(m.handle(I::RegistrationDown, 2_000), Ok(None));
        assert_eq!(m.state(), &AgentState::Talking);
        assert_eq!(m.current_call(), Some(&call("c")));
        m.handle(I::CallHeld, 2_500).unwrap();
        m.handle(I::CallResumed, 2_600).unwrap();
        let t = m
            .handle(I::CallEnded { call_id: call("c") }, 3_000)
            .unwrap()
            .unwrap();
        assert_eq!(t.to, AgentState::AfterCallWork { until_ms: 8_000 });
        let t = m.handle(I::Tick, 8_000).unwrap().unwrap();
        assert_eq!(t.to, not_ready(NotReadyReason::EXTENSION_OFFLINE));

        // Without after-call work the call ends straight into not ready.
        let mut m = at(
            &with(
                idle(),
                &[
                    I::CallOffered { call_id: call("c") },
                    I::CallAnswered { call_id: call("c") },
                    I::RegistrationDown,
                ],
            ),
            0,
        );
        let t = m
            .handle(I::CallEnded { call_id: call("c") }, 3_000)
            .unwrap()
            .unwrap();
        assert_eq!(t.to, not_ready(NotReadyReason::EXTENSION_OFFLINE));
        // And going idle is refused until the extension is back.
        assert!(matches!(
            m.handle(I::SetIdle, 3_001),
            Err(TransitionError::ExtensionOffline { .. })
        ));
    }

    #[test]
    fn sessions_are_unique_and_carried_by_transitions() {
        let mut m = machine(0);
        m.handle(I::RegistrationUp, 5_000).unwrap();
        let t = m.handle(I::SignIn, 5_000).unwrap().unwrap();
        assert_eq!(t.signin_session, Some(5_000));
        let t = m.handle(I::SignOut, 5_000).unwrap().unwrap();
        assert_eq!(
            t.signin_session,
            Some(5_000),
            "sign-out names the session it ends"
        );
        assert_eq!(m.signin_session(), None);
        let t = m.handle(I::SignIn, 5_000).unwrap().unwrap();
        assert_eq!(t.signin_session, Some(5_001), "same ms, new session");
    }

    #[test]
    fn time_going_backwards_is_clamped() {
        let mut m = at(&idle(), 0);
        m.handle(
            I::SetBusy {
                reason: NotReadyReason(1),
            },
            5_000,
        )
        .unwrap();
        let t = m.handle(I::SetIdle, 4_000).unwrap().unwrap();
        assert_eq!((t.at_ms, t.duration_ms), (5_000, 0));
    }

    #[test]
    fn mappings() {
        let states = [
            AgentState::SignedOut,
            not_ready(NotReadyReason::MANUAL),
            AgentState::Idle,
            AgentState::Reserved,
            AgentState::Talking,
            AgentState::Hold,
            AgentState::AfterCallWork { until_ms: 1 },
            AgentState::Rest {
                reason: RestReason(0),
                until_ms: None,
            },
        ];
        let grid: Vec<u8> = states.iter().map(grid_agent_state).collect();
        assert_eq!(grid, [0, 1, 2, 3, 3, 3, 4, 1]);
        let huawei: Vec<u8> = states.iter().map(huawei_agent_state).collect();
        assert_eq!(huawei, [2, 3, 4, 7, 7, 7, 5, 8]);
        let activity: Vec<Option<u8>> = states.iter().map(huawei_activity_state).collect();
        assert_eq!(
            activity,
            [
                None,
                Some(4),
                Some(1),
                Some(8),
                Some(9),
                Some(11),
                Some(2),
                Some(3)
            ]
        );
        let seed: Vec<(i8, u8)> = states
            .iter()
            .map(|s| {
                let v = seed004_status(s, true);
                assert_eq!(v.status, 1);
                (v.work_status, v.session_status)
            })
            .collect();
        assert_eq!(
            seed,
            [
                (-1, 0),
                (0, 0),
                (1, 0),
                (0, 0),
                (0, 10),
                (0, 10),
                (0, 0),
                (0, 0)
            ]
        );
        assert_eq!(seed004_status(&AgentState::Talking, false).status, 0);
    }

    #[test]
    fn transitions_serialize_with_tagged_states() {
        let t = Transition {
            from: AgentState::Idle,
            to: not_ready(NotReadyReason::EXTENSION_OFFLINE),
            from_since_ms: 1,
            at_ms: 3,
            duration_ms: 2,
            signin_session: Some(1),
            call_id: None,
        };
        let _ = &t; // serde_json is not a dependency here; the derive compiling is the check.
        fn assert_serde<T: Serialize + for<'de> Deserialize<'de>>() {}
        assert_serde::<Transition>();
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn input() -> impl Strategy<Value = AgentInput> {
            let id = prop_oneof![Just("a"), Just("b")].prop_map(call);
            prop_oneof![
                Just(I::RegistrationUp),
                Just(I::RegistrationDown),
                Just(I::SignIn),
                Just(I::SignOut),
                Just(I::ForceSignOut),
                Just(I::SetIdle),
                (0u16..3).prop_map(|r| I::SetBusy {
                    reason: NotReadyReason(r)
                }),
                (0u8..2, proptest::option::of(0u64..3_000)).prop_map(|(r, d)| I::StartRest {
                    reason: RestReason(r),
                    duration_ms: d
                }),
                Just(I::EndRest),
                id.clone().prop_map(|call_id| I::CallOffered { call_id }),
                id.clone().prop_map(|call_id| I::CallAnswered { call_id }),
                Just(I::CallHeld),
                Just(I::CallResumed),
                id.prop_map(|call_id| I::CallEnded { call_id }),
                Just(I::Tick),
                Just(I::Tick),
            ]
        }

        proptest! {
            #[test]
            fn random_sequences_keep_invariants_and_account_for_all_time(
                acw_ms in prop_oneof![Just(0u64), 1u64..2_000],
                idle_after_rest in any::<bool>(),
                start in 0u64..1_000_000,
                steps in proptest::collection::vec((input(), 0u64..1_500), 1..120),
            ) {
                let mut m = AgentMachine::new(AgentConfig { acw_ms, idle_after_rest }, start);
                let mut now = start;
                let mut accounted = 0u64;
                for (input, dt) in steps {
                    now += dt;
                    let before = m.clone();
                    match m.handle(input.clone(), now) {
                        Ok(Some(t)) => {
                            prop_assert_eq!(&t.from, before.state());
                            prop_assert_eq!(&t.to, m.state());
                            prop_assert_ne!(&t.from, &t.to);
                            prop_assert_eq!(t.from_since_ms, before.since_ms());
                            prop_assert_eq!(t.at_ms, now);
                            prop_assert_eq!(t.duration_ms, t.at_ms - t.from_since_ms);
                            accounted += t.duration_ms;
                        }
                        Ok(None) => {
                            prop_assert_eq!(m.state(), before.state());
                            prop_assert_eq!(m.since_ms(), before.since_ms());
                        }
                        Err(e) => prop_assert_eq!(&m, &before, "{:?} refused ({}) but changed", input, e),
                    }
                    prop_assert_eq!(m.invariant_violation(), None, "after {:?}", input);
                    // A timer never stays overdue after a tick.
                    if input == I::Tick {
                        prop_assert!(m.next_deadline().is_none_or(|d| d > now));
                    }
                }
                prop_assert_eq!(accounted + (now - m.since_ms()), now - start);
                // A restart restores every state outside a call exactly, and never builds an
                // impossible machine.
                let r = AgentMachine::restore(m.config().clone(), m.snapshot(), m.registered(), now);
                prop_assert_eq!(r.invariant_violation(), None);
                if !m.state().in_call() {
                    prop_assert_eq!(&r, &m);
                }
            }
        }
    }
}
