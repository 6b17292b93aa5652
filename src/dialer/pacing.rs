//! Pacing: how many outbound calls to launch now. Every policy (preview, progressive, fixed
//! ratio, VICIdial's adaptive level, an open-loop Erlang rate dialer, predictive) is a sans-IO
//! core behind [`Pacer`]: the campaign runtime and the simulator show it the same
//! [`PacingView`] of agents and calls in flight, tell it what happened ([`Feedback`]), and ask
//! it for a launch count. No clock, no sockets: `now_ms` is in the view and in every feedback,
//! so the simulator drives time and a policy behaves identically there and in the daemon.

/// What an agent of the campaign is doing, as pacing needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentPhase {
    /// Signed in and idle: can take a call now.
    Ready,
    /// On a campaign call (or handling an answering machine the dialer passed on).
    Talking,
    /// After-call work.
    WrapUp,
    /// Signed in but not taking calls (break, not ready): not counted as available.
    Paused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentView {
    pub phase: AgentPhase,
    /// When the agent entered `phase` (ms, same clock as `PacingView::now_ms`).
    pub since_ms: u64,
}

/// A call launched and not yet resolved (ringing, or being set up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingingCall {
    pub dialed_ms: u64,
}

/// Everything a policy may look at when deciding.
#[derive(Debug, Clone, Copy)]
pub struct PacingView<'a> {
    pub now_ms: u64,
    /// Every signed-in agent of the campaign.
    pub agents: &'a [AgentView],
    /// Calls launched, not yet answered or failed.
    pub ringing: &'a [RingingCall],
    /// Calls answered by a person and waiting for an agent.
    pub waiting: u32,
    /// How many more calls the gateways (line caps, `setTaskConcurrent`) allow right now. A
    /// policy never launches more.
    pub line_headroom: u32,
}

impl PacingView<'_> {
    pub fn count(&self, phase: AgentPhase) -> u32 {
        self.agents.iter().filter(|a| a.phase == phase).count() as u32
    }

    /// Agents not paused (VICIdial's "active" agents).
    pub fn active(&self) -> u32 {
        self.agents
            .iter()
            .filter(|a| a.phase != AgentPhase::Paused)
            .count() as u32
    }
}

/// How an attempt went, reported as it happens; policies learn from these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// Answered `ring_ms` after it was launched; `live` false for an answering machine.
    Answered {
        at_ms: u64,
        ring_ms: u64,
        live: bool,
    },
    /// Ended without an answer (busy, no answer at the ring timeout, network failure) after
    /// `after_ms`.
    Failed { at_ms: u64, after_ms: u64 },
    /// A live answer was bridged to an agent after waiting `wait_ms`.
    Connected { at_ms: u64, wait_ms: u64 },
    /// A live answer was not bridged within the abandon threshold (2 s): an abandoned call
    /// in the regulator's sense, whatever happened to it afterwards.
    Abandoned { at_ms: u64 },
    /// An agent finished a call: talk and after-call work.
    HandleDone {
        at_ms: u64,
        talk_ms: u64,
        wrap_ms: u64,
    },
}

/// A pacing policy.
pub trait Pacer: Send {
    /// A short name for reports and metrics (e.g. `progressive`, `ratio-idle-1.5`).
    fn name(&self) -> String;

    /// Learns from what happened.
    fn observe(&mut self, feedback: &Feedback);

    /// Calls to launch now. Never more than `view.line_headroom`; 0 when no agent can take a
    /// call within the policy's horizon.
    fn launch(&mut self, view: &PacingView<'_>) -> u32;

    /// `n` agents asked for the next record (preview dialing). Only the preview policy acts on
    /// it; the others ignore it, so the runtime can drive any boxed policy the same way.
    fn request(&mut self, _n: u32) {}
}
