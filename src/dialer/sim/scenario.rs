//! The scenario file (TOML) of `gridedge simulate-dialer`: the §4.1 model parameters and the
//! §4.2 grid cells (predictive-dialing.md). Unknown keys are refused (`deny_unknown_fields`)
//! so a typo never silently falls back to a default, and [`Scenario::validate`] names the key
//! of every value it refuses: the file is user input and the simulator must not panic on it.

use serde::{Deserialize, Serialize};

/// Upper bounds that keep a hostile or mistyped scenario from running for days or eating
/// memory; generous for any §4.2 cell (100 agents × 8 h × 30 replications × 8 policies is
/// ~10 % of the agent-hour bound).
pub const MAX_REPLICATIONS: u32 = 10_000;
pub const MAX_AGENTS: u32 = 10_000;
pub const MAX_SHIFT_HOURS: f64 = 24.0 * 7.0;
/// Replications × shift hours × peak agents, summed over policies by the caller.
pub const MAX_AGENT_HOURS: f64 = 2_000_000.0;
/// Agent sign-ins and sign-outs over all shocks.
pub const MAX_AGENT_STEPS: u64 = 100_000;
/// Any single duration (mean or sd) above this is a typo (a day).
const MAX_SECS: f64 = 86_400.0;

/// A time distribution given by its mean and standard deviation (§4.1 states every time
/// that way: "lognormal, mean 10 s, CV 0.5").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dist {
    pub dist: DistKind,
    pub mean: f64,
    /// Ignored for `constant` and `exponential` (whose sd is its mean).
    #[serde(default)]
    pub sd: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistKind {
    Constant,
    Exponential,
    Lognormal,
    Gamma,
}

impl Dist {
    pub const fn constant(secs: f64) -> Self {
        Dist {
            dist: DistKind::Constant,
            mean: secs,
            sd: 0.0,
        }
    }

    fn validate(&self, key: &str) -> Result<(), String> {
        check_secs(&format!("{key}.mean"), self.mean)?;
        check_secs(&format!("{key}.sd"), self.sd)?;
        if matches!(self.dist, DistKind::Lognormal | DistKind::Gamma) && self.mean == 0.0 {
            return Err(format!("{key}.mean must be > 0 for {:?}", self.dist));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Shown in reports.
    #[serde(default)]
    pub name: String,
    /// Replication `r` runs on a seed derived from this one (§4.3: "fixed seeds listed in the
    /// config").
    pub seed: u64,
    /// §4.3 protocol: 30.
    #[serde(default = "default_replications")]
    pub replications: u32,
    /// §4.1: 8 h.
    #[serde(default = "default_shift_hours")]
    pub shift_hours: f64,
    /// Agents signed in at the start; changes over time are [`Shock`]s.
    pub agents: u32,
    /// Trunk cap L_max. Default 3 × the agents signed in at the time (§4.1).
    #[serde(default)]
    pub trunks: Option<u32>,
    /// The pacer is asked at every event and on this periodic tick.
    #[serde(default = "default_tick_secs")]
    pub tick_secs: f64,
    /// Policies to compare when the command line names none.
    #[serde(default)]
    pub policies: Vec<String>,
    pub outcomes: Outcomes,
    #[serde(default)]
    pub times: Times,
    #[serde(default)]
    pub amd: Amd,
    #[serde(default)]
    pub abandon: Abandon,
    #[serde(default)]
    pub routing: Option<Routing>,
    #[serde(default)]
    pub shocks: Vec<Shock>,
}

/// Attempt outcome probabilities, drawn at dial time (§4.1); NO-ANSWER is the rest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcomes {
    pub p_live: f64,
    #[serde(default)]
    pub p_am: f64,
    #[serde(default)]
    pub p_busy: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Times {
    /// Setup + ring until answer (live or machine). §4.1: lognormal, mean 10 s, CV 0.5.
    pub answer_delay: Dist,
    /// Busy/SIT fails after this (§4.1: 5 s).
    pub busy_secs: f64,
    /// No-answer hangs up here; an answer drawn later than this becomes a no-answer too
    /// (§4.1: T_rna = 26 s).
    pub ring_timeout_secs: f64,
    /// §4.1 base: lognormal, mean 180 s, CV 1.0.
    pub talk: Dist,
    /// §4.1 base: gamma, mean 30 s, CV 0.5.
    pub wrap: Dist,
}

impl Default for Times {
    fn default() -> Self {
        Times {
            answer_delay: Dist {
                dist: DistKind::Lognormal,
                mean: 10.0,
                sd: 5.0,
            },
            busy_secs: 5.0,
            ring_timeout_secs: 26.0,
            talk: Dist {
                dist: DistKind::Lognormal,
                mean: 180.0,
                sd: 180.0,
            },
            wrap: Dist {
                dist: DistKind::Gamma,
                mean: 30.0,
                sd: 15.0,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AmdMode {
    /// The dialer classifies and drops machines `decision_secs` after answer.
    Drop,
    /// No AMD: every machine is passed to an agent.
    Off,
}

/// Answering-machine detection (§4.1: decision 3 s after answer; false positives are silent
/// calls, false negatives cost an agent 10 s).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Amd {
    pub mode: AmdMode,
    pub decision_secs: f64,
    /// Live answers classed as machines and dropped: abandoned (silent) calls.
    pub false_positive: f64,
    /// Machines passed to an agent anyway.
    pub false_negative: f64,
    /// What a machine passed to an agent costs the agent.
    pub agent_secs: Dist,
}

impl Default for Amd {
    fn default() -> Self {
        Amd {
            mode: AmdMode::Drop,
            decision_secs: 3.0,
            false_positive: 0.0,
            false_negative: 0.0,
            agent_secs: Dist::constant(10.0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Abandon {
    /// A live answer not bridged within this is abandoned (FCC/TSR, Genesys: 2 s).
    pub threshold_secs: f64,
    /// The dialer drops a still-waiting live answer here (§4.1 `drop_call_seconds`: 2 s
    /// strict, 5 s VICIdial default). Never before the threshold.
    pub drop_secs: f64,
}

impl Default for Abandon {
    fn default() -> Self {
        Abandon {
            threshold_secs: 2.0,
            drop_secs: 2.0,
        }
    }
}

/// Post-answer routing delay δ (§4.1, VICIdial `OUTBOUND_OPTIMIZATIONS.txt`): each step is
/// (delay, probability); the remaining probability is "never" (lost, counted abandoned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    pub delays: Vec<RoutingStep>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingStep {
    pub secs: f64,
    pub p: f64,
}

/// A change at a given time (§4.2 S7 "p_live 0.15 → 0.40 at t = 2 h; N 20 → 8 at t = 4 h",
/// S8 "0 → 20 over 10 min"). Unset fields are unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shock {
    pub at_secs: f64,
    #[serde(default)]
    pub p_live: Option<f64>,
    #[serde(default)]
    pub p_am: Option<f64>,
    #[serde(default)]
    pub p_busy: Option<f64>,
    /// New number of signed-in agents, reached one agent at a time over `ramp_secs`.
    #[serde(default)]
    pub agents: Option<u32>,
    #[serde(default)]
    pub ramp_secs: f64,
}

fn default_replications() -> u32 {
    30
}
fn default_shift_hours() -> f64 {
    8.0
}
fn default_tick_secs() -> f64 {
    1.0
}

fn check_secs(key: &str, v: f64) -> Result<(), String> {
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{key} must be a finite number ≥ 0, got {v}"));
    }
    if v > MAX_SECS {
        return Err(format!("{key} = {v} s is more than a day"));
    }
    Ok(())
}

fn check_p(key: &str, v: f64) -> Result<(), String> {
    if !v.is_finite() || !(0.0..=1.0).contains(&v) {
        return Err(format!("{key} must be a probability in [0, 1], got {v}"));
    }
    Ok(())
}

fn check_outcomes(key: &str, live: f64, am: f64, busy: f64) -> Result<(), String> {
    check_p(&format!("{key}.p_live"), live)?;
    check_p(&format!("{key}.p_am"), am)?;
    check_p(&format!("{key}.p_busy"), busy)?;
    let sum = live + am + busy;
    if sum > 1.0 + 1e-9 {
        return Err(format!(
            "{key}: p_live + p_am + p_busy = {sum} exceeds 1 (no-answer is the rest)"
        ));
    }
    Ok(())
}

impl Scenario {
    /// Parses and validates. Errors name the offending key (toml's own for syntax, unknown
    /// and mistyped keys; ours for values).
    pub fn from_toml(text: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| format!("scenario: {e}"))?;
        s.validate().map_err(|e| format!("scenario: {e}"))?;
        Ok(s)
    }

    pub fn shift_ms(&self) -> u64 {
        (self.shift_hours * 3_600_000.0).round() as u64
    }

    /// The most agents ever signed in (before ramps, which only move between set points).
    pub fn peak_agents(&self) -> u32 {
        self.shocks
            .iter()
            .filter_map(|s| s.agents)
            .fold(self.agents, u32::max)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.replications == 0 || self.replications > MAX_REPLICATIONS {
            return Err(format!(
                "replications must be in 1..={MAX_REPLICATIONS}, got {}",
                self.replications
            ));
        }
        if !self.shift_hours.is_finite() || self.shift_hours <= 0.0 {
            return Err(format!("shift_hours must be > 0, got {}", self.shift_hours));
        }
        if self.shift_hours > MAX_SHIFT_HOURS {
            return Err(format!(
                "shift_hours must be ≤ {MAX_SHIFT_HOURS}, got {}",
                self.shift_hours
            ));
        }
        if self.agents > MAX_AGENTS {
            return Err(format!(
                "agents must be ≤ {MAX_AGENTS}, got {}",
                self.agents
            ));
        }
        if self.peak_agents() == 0 {
            return Err(
                "agents: no agent is ever signed in (agents = 0 and no shock adds any)".into(),
            );
        }
        if let Some(t) = self.trunks {
            if t == 0 || t > 3 * MAX_AGENTS {
                return Err(format!("trunks must be in 1..={}, got {t}", 3 * MAX_AGENTS));
            }
        }
        if !self.tick_secs.is_finite() || !(0.01..=3600.0).contains(&self.tick_secs) {
            return Err(format!(
                "tick_secs must be in [0.01, 3600], got {}",
                self.tick_secs
            ));
        }
        let o = &self.outcomes;
        check_outcomes("outcomes", o.p_live, o.p_am, o.p_busy)?;
        let t = &self.times;
        t.answer_delay.validate("times.answer_delay")?;
        check_secs("times.busy_secs", t.busy_secs)?;
        check_secs("times.ring_timeout_secs", t.ring_timeout_secs)?;
        t.talk.validate("times.talk")?;
        t.wrap.validate("times.wrap")?;
        check_secs("amd.decision_secs", self.amd.decision_secs)?;
        check_p("amd.false_positive", self.amd.false_positive)?;
        check_p("amd.false_negative", self.amd.false_negative)?;
        self.amd.agent_secs.validate("amd.agent_secs")?;
        check_secs("abandon.threshold_secs", self.abandon.threshold_secs)?;
        check_secs("abandon.drop_secs", self.abandon.drop_secs)?;
        if self.abandon.drop_secs < self.abandon.threshold_secs {
            return Err(format!(
                "abandon.drop_secs ({}) must be ≥ abandon.threshold_secs ({})",
                self.abandon.drop_secs, self.abandon.threshold_secs
            ));
        }
        if let Some(r) = &self.routing {
            if r.delays.len() > 16 {
                return Err("routing.delays: at most 16 steps".into());
            }
            let mut sum = 0.0;
            for (i, step) in r.delays.iter().enumerate() {
                check_secs(&format!("routing.delays[{i}].secs"), step.secs)?;
                check_p(&format!("routing.delays[{i}].p"), step.p)?;
                sum += step.p;
            }
            if sum > 1.0 + 1e-9 {
                return Err(format!(
                    "routing.delays: probabilities sum to {sum} > 1 (lost is the rest)"
                ));
            }
        }
        if self.shocks.len() > 1000 {
            return Err("shocks: at most 1000".into());
        }
        let (mut live, mut am, mut busy) = (o.p_live, o.p_am, o.p_busy);
        let mut sorted: Vec<&Shock> = self.shocks.iter().collect();
        sorted.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
        for (i, s) in self.shocks.iter().enumerate() {
            let key = format!("shocks[{i}]");
            if !s.at_secs.is_finite() || s.at_secs < 0.0 {
                return Err(format!(
                    "{key}.at_secs must be a finite number ≥ 0, got {}",
                    s.at_secs
                ));
            }
            check_secs(&format!("{key}.ramp_secs"), s.ramp_secs)?;
            if let Some(a) = s.agents {
                if a > MAX_AGENTS {
                    return Err(format!("{key}.agents must be ≤ {MAX_AGENTS}, got {a}"));
                }
            }
        }
        // Each agent step is an event; bound them so a ramp storm can't eat memory.
        let mut level = self.agents as u64;
        let mut steps = 0u64;
        for s in &sorted {
            if let Some(a) = s.agents {
                steps += level.abs_diff(a as u64);
                level = a as u64;
            }
        }
        if steps > MAX_AGENT_STEPS {
            return Err(format!(
                "shocks: {steps} agent sign-ins/outs in total, more than {MAX_AGENT_STEPS}"
            ));
        }
        for s in sorted {
            live = s.p_live.unwrap_or(live);
            am = s.p_am.unwrap_or(am);
            busy = s.p_busy.unwrap_or(busy);
            check_outcomes(&format!("shock at {} s", s.at_secs), live, am, busy)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_scenario_takes_the_4_1_defaults() {
        let s = Scenario::from_toml("seed = 1\nagents = 20\n[outcomes]\np_live = 0.3\n").unwrap();
        assert_eq!(s.replications, 30);
        assert_eq!(s.times.ring_timeout_secs, 26.0);
        assert_eq!(s.abandon.threshold_secs, 2.0);
        assert_eq!(s.amd.decision_secs, 3.0);
    }
}
