//! Fixed ratio k (B1 of predictive-dialing.md §4.4; seed 004's `rate`, 拨打倍率), in both
//! semantics found in the field, because the same number means very different aggression:
//! (a) per idle agent (Wombat, Huawei fixed, Genesys LPA) and (b) VICIdial's RATIO, which counts
//! every non-paused agent and every call already bridged (§1.1(a), default tally).

use serde::Deserialize;

use super::{cap, check_range, in_flight, round_count, PolicyConfigError, Tally};
use crate::dialer::pacing::{Feedback, Pacer, PacingView};

/// What the ratio multiplies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RatioSemantics {
    /// In-flight target = round(k·READY).
    #[default]
    Idle,
    /// VICIdial RATIO: goal = round(k·active), counting calls bridged to agents in the goal.
    Active,
}

/// `policy = "ratio"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RatioConfig {
    /// Lines per agent, in [1.0, 15.0] (seed 000's speed range). Default 1.5.
    pub ratio: f64,
    /// `idle` (default) or `active`.
    pub per: RatioSemantics,
}

impl Default for RatioConfig {
    fn default() -> Self {
        RatioConfig {
            ratio: 1.5,
            per: RatioSemantics::Idle,
        }
    }
}

impl RatioConfig {
    pub fn validate(&self) -> Result<(), PolicyConfigError> {
        check_range("ratio", self.ratio, 1.0, 15.0)
    }
}

/// The fixed-ratio policy.
#[derive(Debug, Clone)]
pub struct RatioPacer {
    k: f64,
    per: RatioSemantics,
}

impl RatioPacer {
    pub fn new(config: &RatioConfig) -> Self {
        let k = if config.ratio.is_finite() {
            config.ratio.clamp(1.0, 15.0)
        } else {
            1.0
        };
        RatioPacer { k, per: config.per }
    }
}

/// VICIdial's launch rule (§1.1(a)) for level `level`: goal = round(level·active), minus every
/// call that exists (ringing, waiting, bridged to a Talking agent). Shared with B2.
pub(crate) fn vicidial_launch(view: &PacingView<'_>, t: &Tally, level: f64) -> u32 {
    let goal = round_count(level * f64::from(t.active()));
    let exist = in_flight(view) + u64::from(t.talking);
    cap(goal.saturating_sub(exist), view.line_headroom)
}

impl Pacer for RatioPacer {
    fn name(&self) -> String {
        match self.per {
            RatioSemantics::Idle => format!("ratio-idle-{}", self.k),
            RatioSemantics::Active => format!("ratio-active-{}", self.k),
        }
    }

    fn observe(&mut self, _feedback: &Feedback) {}

    fn launch(&mut self, view: &PacingView<'_>) -> u32 {
        let t = Tally::of(view);
        match self.per {
            RatioSemantics::Idle => {
                let target = round_count(self.k * f64::from(t.ready));
                cap(target.saturating_sub(in_flight(view)), view.line_headroom)
            }
            RatioSemantics::Active => vicidial_launch(view, &t, self.k),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialer::pacing::{AgentPhase, AgentView, RingingCall};

    fn agents(ready: usize, talking: usize, paused: usize) -> Vec<AgentView> {
        let mk = |phase| AgentView { phase, since_ms: 0 };
        let mut v = vec![mk(AgentPhase::Ready); ready];
        v.extend(std::iter::repeat_n(mk(AgentPhase::Talking), talking));
        v.extend(std::iter::repeat_n(mk(AgentPhase::Paused), paused));
        v
    }

    #[test]
    fn idle_semantics() {
        let mut p = RatioPacer::new(&RatioConfig {
            ratio: 2.5,
            per: RatioSemantics::Idle,
        });
        let a = agents(3, 5, 2);
        let r = [RingingCall { dialed_ms: 0 }; 2];
        let v = PacingView {
            now_ms: 0,
            agents: &a,
            ringing: &r,
            waiting: 1,
            line_headroom: 100,
        };
        // round(7.5) = 8, minus 3 in flight.
        assert_eq!(p.launch(&v), 5);
    }

    #[test]
    fn active_semantics_counts_bridged_calls() {
        let mut p = RatioPacer::new(&RatioConfig {
            ratio: 2.0,
            per: RatioSemantics::Active,
        });
        let a = agents(3, 5, 2);
        let r = [RingingCall { dialed_ms: 0 }; 2];
        let v = PacingView {
            now_ms: 0,
            agents: &a,
            ringing: &r,
            waiting: 1,
            line_headroom: 100,
        };
        // goal = 2·8 = 16; exist = 2 ringing + 1 waiting + 5 talking.
        assert_eq!(p.launch(&v), 8);
        let v = PacingView {
            line_headroom: 4,
            ..v
        };
        assert_eq!(p.launch(&v), 4);
    }

    #[test]
    fn validate_names_the_key() {
        let e = RatioConfig {
            ratio: 16.0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.key, "ratio");
        assert!(RatioConfig {
            ratio: f64::NAN,
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
