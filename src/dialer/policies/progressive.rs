//! Progressive 1:1 (B0 of predictive-dialing.md §4.4): keep calls in flight at most equal to
//! READY agents, so every live answer has an agent waiting for it. The reference every other
//! policy must not be worse than on abandons, and the predictive policy's fallback.

use serde::Deserialize;

use super::{progressive_count, PolicyConfigError, Tally};
use crate::dialer::pacing::{Feedback, Pacer, PacingView};

/// `policy = "progressive"`: no settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProgressiveConfig {}

impl ProgressiveConfig {
    pub fn validate(&self) -> Result<(), PolicyConfigError> {
        Ok(())
    }
}

/// launch = READY − ringing − waiting, floored at 0, capped by headroom.
#[derive(Debug, Clone, Default)]
pub struct ProgressivePacer;

impl ProgressivePacer {
    pub fn new(_config: &ProgressiveConfig) -> Self {
        ProgressivePacer
    }
}

impl Pacer for ProgressivePacer {
    fn name(&self) -> String {
        "progressive".into()
    }

    fn observe(&mut self, _feedback: &Feedback) {}

    fn launch(&mut self, view: &PacingView<'_>) -> u32 {
        progressive_count(view, Tally::of(view).ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialer::pacing::{AgentPhase, AgentView, RingingCall};

    #[test]
    fn ready_minus_in_flight() {
        let a = [
            AgentView {
                phase: AgentPhase::Ready,
                since_ms: 0,
            },
            AgentView {
                phase: AgentPhase::Ready,
                since_ms: 0,
            },
            AgentView {
                phase: AgentPhase::Ready,
                since_ms: 0,
            },
            AgentView {
                phase: AgentPhase::Talking,
                since_ms: 0,
            },
        ];
        let r = [RingingCall { dialed_ms: 0 }];
        let mut p = ProgressivePacer;
        let v = PacingView {
            now_ms: 5,
            agents: &a,
            ringing: &r,
            waiting: 1,
            line_headroom: 9,
        };
        assert_eq!(p.launch(&v), 1);
        let v = PacingView { waiting: 5, ..v };
        assert_eq!(p.launch(&v), 0);
        let v = PacingView {
            waiting: 0,
            ringing: &[],
            line_headroom: 2,
            ..v
        };
        assert_eq!(p.launch(&v), 2);
    }
}
