//! Preview dialing: a call is launched only when an agent asks for the next record (the agent
//! sees it first). No over-dial at all, so no abandons by construction; the baseline below B0
//! in predictive-dialing.md §4.4.

use serde::Deserialize;

use super::{cap, in_flight, PolicyConfigError, Tally};
use crate::dialer::pacing::{Feedback, Pacer, PacingView};

/// `policy = "preview"`: no settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreviewConfig {}

impl PreviewConfig {
    pub fn validate(&self) -> Result<(), PolicyConfigError> {
        Ok(())
    }
}

/// Launches pending agent requests, at most one per READY agent not already covered by a call
/// in flight, and never past the gateways' headroom.
#[derive(Debug, Clone, Default)]
pub struct PreviewPacer {
    pending: u32,
}

impl PreviewPacer {
    pub fn new(_config: &PreviewConfig) -> Self {
        Self::default()
    }

    /// An agent (or `n` agents) asked for the next record; the runtime calls this.
    pub fn request(&mut self, n: u32) {
        self.pending = self.pending.saturating_add(n);
    }

    /// Requests not yet launched.
    pub fn pending(&self) -> u32 {
        self.pending
    }
}

impl Pacer for PreviewPacer {
    fn name(&self) -> String {
        "preview".into()
    }

    fn observe(&mut self, _feedback: &Feedback) {}

    fn launch(&mut self, view: &PacingView<'_>) -> u32 {
        let t = Tally::of(view);
        let free = u64::from(t.ready).saturating_sub(in_flight(view));
        let n = cap(free.min(u64::from(self.pending)), view.line_headroom);
        self.pending -= n;
        n
    }

    fn request(&mut self, n: u32) {
        PreviewPacer::request(self, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialer::pacing::{AgentPhase, AgentView, RingingCall};

    fn agents(ready: usize, talking: usize) -> Vec<AgentView> {
        let mut v = vec![
            AgentView {
                phase: AgentPhase::Ready,
                since_ms: 0
            };
            ready
        ];
        v.extend(std::iter::repeat_n(
            AgentView {
                phase: AgentPhase::Talking,
                since_ms: 0,
            },
            talking,
        ));
        v
    }

    #[test]
    fn launches_only_requests() {
        let mut p = PreviewPacer::default();
        let a = agents(3, 2);
        let view = PacingView {
            now_ms: 1000,
            agents: &a,
            ringing: &[],
            waiting: 0,
            line_headroom: 10,
        };
        assert_eq!(p.launch(&view), 0);
        p.request(2);
        assert_eq!(p.launch(&view), 2);
        assert_eq!(p.launch(&view), 0);
    }

    #[test]
    fn capped_by_ready_minus_in_flight_and_headroom() {
        let mut p = PreviewPacer::default();
        p.request(5);
        let a = agents(3, 0);
        let ringing = [RingingCall { dialed_ms: 0 }];
        let view = PacingView {
            now_ms: 1000,
            agents: &a,
            ringing: &ringing,
            waiting: 0,
            line_headroom: 10,
        };
        assert_eq!(p.launch(&view), 2);
        assert_eq!(p.pending(), 3);
        let view = PacingView {
            line_headroom: 1,
            ringing: &[],
            ..view
        };
        assert_eq!(p.launch(&view), 1);
        assert_eq!(p.pending(), 2);
    }
}
