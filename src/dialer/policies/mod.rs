//! The pacing policies behind [`Pacer`]: baselines B0–B3a of predictive-dialing.md §4.4 and the
//! predictive policy (§4.4 B3b plus corrections). Each is a sans-IO core (DESIGN.md,
//! "Sans-IO cores"): it sees a [`PacingView`] and [`Feedback`](crate::dialer::pacing::Feedback)
//! carrying `now_ms`, never a clock, so the simulator and the daemon drive the same code.
//!
//! A campaign or a scenario file chooses a policy with a [`PacerConfig`] table tagged by
//! `policy = "..."`; [`PacerConfig::validate`] names the offending key and
//! [`PacerConfig::build`] returns the boxed policy.

pub mod erlang;
pub mod estimate;
pub mod predictive;
pub mod preview;
pub mod progressive;
pub mod ratio;
pub mod vicidial;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod simcheck;

use serde::Deserialize;

use crate::dialer::pacing::{AgentPhase, Pacer, PacingView};

pub use erlang::{erlang_b, offered_load_for_blocking, ErlangConfig, ErlangPacer};
pub use predictive::{PredictiveConfig, PredictivePacer};
pub use preview::{PreviewConfig, PreviewPacer};
pub use progressive::{ProgressiveConfig, ProgressivePacer};
pub use ratio::{RatioConfig, RatioPacer, RatioSemantics};
pub use vicidial::{DropMethod, VicidialConfig, VicidialPacer};

/// A policy configuration value out of range: `key` is the config key, as written in the file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("pacing.{key}: {reason}")]
pub struct PolicyConfigError {
    pub key: &'static str,
    pub reason: String,
}

pub(crate) fn bad(key: &'static str, reason: impl Into<String>) -> PolicyConfigError {
    PolicyConfigError {
        key,
        reason: reason.into(),
    }
}

/// Checks a float key is finite and within `[lo, hi]`.
pub(crate) fn check_range(
    key: &'static str,
    v: f64,
    lo: f64,
    hi: f64,
) -> Result<(), PolicyConfigError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(bad(key, format!("{v} is outside [{lo}, {hi}]")))
    }
}

/// Which pacing policy a campaign (or a simulator scenario) uses, with its settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "policy", rename_all = "kebab-case")]
pub enum PacerConfig {
    Preview(PreviewConfig),
    Progressive(ProgressiveConfig),
    Ratio(RatioConfig),
    Vicidial(VicidialConfig),
    Erlang(ErlangConfig),
    Predictive(PredictiveConfig),
}

impl Default for PacerConfig {
    fn default() -> Self {
        PacerConfig::Progressive(ProgressiveConfig::default())
    }
}

impl PacerConfig {
    /// Refuses out-of-range settings, naming the key (DESIGN.md: a bad config names the key).
    pub fn validate(&self) -> Result<(), PolicyConfigError> {
        match self {
            PacerConfig::Preview(c) => c.validate(),
            PacerConfig::Progressive(c) => c.validate(),
            PacerConfig::Ratio(c) => c.validate(),
            PacerConfig::Vicidial(c) => c.validate(),
            PacerConfig::Erlang(c) => c.validate(),
            PacerConfig::Predictive(c) => c.validate(),
        }
    }

    /// Builds the policy. Call [`validate`](Self::validate) first; out-of-range values are
    /// clamped here rather than trusted, so a skipped validation cannot make a policy panic.
    pub fn build(&self) -> Box<dyn Pacer> {
        match self {
            PacerConfig::Preview(c) => Box::new(PreviewPacer::new(c)),
            PacerConfig::Progressive(c) => Box::new(ProgressivePacer::new(c)),
            PacerConfig::Ratio(c) => Box::new(RatioPacer::new(c)),
            PacerConfig::Vicidial(c) => Box::new(VicidialPacer::new(c)),
            PacerConfig::Erlang(c) => Box::new(ErlangPacer::new(c)),
            PacerConfig::Predictive(c) => Box::new(PredictivePacer::new(c)),
        }
    }
}

/// Agent counts by phase, in one pass over the view (the hot path looks at each agent once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub ready: u32,
    pub talking: u32,
    pub wrap: u32,
    pub paused: u32,
}

impl Tally {
    pub fn of(view: &PacingView<'_>) -> Tally {
        let mut t = Tally::default();
        for a in view.agents {
            match a.phase {
                AgentPhase::Ready => t.ready += 1,
                AgentPhase::Talking => t.talking += 1,
                AgentPhase::WrapUp => t.wrap += 1,
                AgentPhase::Paused => t.paused += 1,
            }
        }
        t
    }

    /// Non-paused agents (VICIdial's "active").
    pub fn active(&self) -> u32 {
        self.ready + self.talking + self.wrap
    }
}

/// Calls in flight that already claim an agent or will: ringing plus answered-and-waiting.
pub(crate) fn in_flight(view: &PacingView<'_>) -> u64 {
    view.ringing.len() as u64 + u64::from(view.waiting)
}

/// B0's rule (§4.4): READY − ringing − waiting, floored at 0 and capped by the gateways.
pub(crate) fn progressive_count(view: &PacingView<'_>, ready: u32) -> u32 {
    let n = u64::from(ready).saturating_sub(in_flight(view));
    cap(n, view.line_headroom)
}

/// Caps a count at the line headroom (gateway caps are never exceeded).
pub(crate) fn cap(n: u64, headroom: u32) -> u32 {
    n.min(u64::from(headroom)) as u32
}

/// Rounds half away from zero like Perl's `sprintf "%.0f"` closely enough for dial goals, and
/// maps NaN or negatives to 0 (a goal is a count).
pub(crate) fn round_count(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        // Bounded by callers (level ≤ 15 × agents), so the cast cannot saturate meaningfully.
        x.round().min(u64::MAX as f64) as u64
    } else {
        0
    }
}
