//! The simulator's own reference pacers and closed forms, used to validate it
//! (predictive-dialing.md §4.4 B0 and B1). They are deliberately minimal: the production
//! policies live in `dialer::policies`; these exist so the simulator can be checked against
//! arithmetic that does not depend on them.

use super::scenario::{AmdMode, Scenario};
use super::PacerFactory;
use crate::dialer::pacing::{AgentPhase, Feedback, Pacer, PacingView};

/// §4.4 B0 "Progressive 1:1": keep in-flight calls ≤ READY agents
/// (dial = READY − ringing − waiting).
#[derive(Debug, Default, Clone)]
pub struct RefProgressive;

impl Pacer for RefProgressive {
    fn name(&self) -> String {
        "progressive".into()
    }
    fn observe(&mut self, _: &Feedback) {}
    fn launch(&mut self, view: &PacingView<'_>) -> u32 {
        let ready = view.count(AgentPhase::Ready);
        let inflight = view.ringing.len() as u32 + view.waiting;
        ready.saturating_sub(inflight).min(view.line_headroom)
    }
}

/// §4.4 B1 fixed ratio k, both variants.
#[derive(Debug, Clone)]
pub struct RefFixedRatio {
    pub k: f64,
    /// (b) VICIdial RATIO: total calls including bridged = round(k·(READY+INCALL));
    /// otherwise (a) per idle agent: in-flight = round(k·READY).
    pub vicidial: bool,
}

impl Pacer for RefFixedRatio {
    fn name(&self) -> String {
        if self.vicidial {
            format!("ratio-vici-{}", self.k)
        } else {
            format!("ratio-idle-{}", self.k)
        }
    }
    fn observe(&mut self, _: &Feedback) {}
    fn launch(&mut self, view: &PacingView<'_>) -> u32 {
        let ready = view.count(AgentPhase::Ready) as f64;
        let inflight = view.ringing.len() as u32 + view.waiting;
        let target = if self.vicidial {
            let incall = view.count(AgentPhase::Talking) as f64;
            // Bridged calls count towards the total (they hold a line).
            let total = (self.k * (ready + incall)).round() as u32;
            total.saturating_sub(inflight + incall as u32)
        } else {
            ((self.k * ready).round() as u32).saturating_sub(inflight)
        };
        target.min(view.line_headroom)
    }
}

/// Resolves the reference policy names: `progressive`, `ratio-idle-K`, `ratio-vici-K`
/// (K in 0.5..=10).
pub fn resolve(name: &str) -> anyhow::Result<PacerFactory> {
    if name == "progressive" {
        return Ok(Box::new(|| Box::new(RefProgressive)));
    }
    for (prefix, vicidial) in [("ratio-idle-", false), ("ratio-vici-", true)] {
        if let Some(k) = name.strip_prefix(prefix) {
            let k: f64 = k
                .parse()
                .map_err(|_| anyhow::anyhow!("policy `{name}`: `{k}` is not a number"))?;
            if !(0.5..=10.0).contains(&k) {
                anyhow::bail!("policy `{name}`: ratio must be in 0.5..=10");
            }
            return Ok(Box::new(move || Box::new(RefFixedRatio { k, vicidial })));
        }
    }
    anyhow::bail!(
        "unknown policy `{name}` (reference policies: progressive, ratio-idle-K, ratio-vici-K)"
    )
}

/// §4.4's closed form for progressive occupancy (renewal-reward, one line per free agent,
/// perfect AMD): occupancy = h/(h + search), search = ((1−p)/p)·E[fail duration] +
/// E[answer delay], where a machine's "fail" lasts answer delay + AMD decision time.
/// `None` when the scenario is outside the form's assumptions (AMD off or imperfect, no live
/// answers, routing delays, shocks).
///
/// Like §4.4 it uses mean times only and ignores answers drawn beyond the ring timeout (the
/// engine turns those into no-answers; with §4.1's lognormal 10 s / CV 0.5 that is ~1 % of
/// answers and costs ~0.2 pp in S2).
pub fn progressive_occupancy(sc: &Scenario) -> Option<f64> {
    let o = &sc.outcomes;
    if sc.amd.mode != AmdMode::Drop
        || sc.amd.false_positive > 0.0
        || sc.amd.false_negative > 0.0
        || sc.routing.is_some()
        || !sc.shocks.is_empty()
        || o.p_live <= 0.0
    {
        return None;
    }
    let t = &sc.times;
    let ans = t.answer_delay.mean;
    let p_na = (1.0 - o.p_live - o.p_am - o.p_busy).max(0.0);
    let fail_time =
        o.p_am * (ans + sc.amd.decision_secs) + o.p_busy * t.busy_secs + p_na * t.ring_timeout_secs;
    // ((1−p)/p)·E[fail] = Σ_fail p_i·d_i / p.
    let search = fail_time / o.p_live + ans;
    let h = t.talk.mean + t.wrap.mean;
    Some(h / (h + search))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s2() -> Scenario {
        Scenario::from_toml(
            "seed = 1\nagents = 20\n[outcomes]\np_live = 0.30\np_am = 0.15\np_busy = 0.10\n\
             [times]\ntalk = { dist = \"exponential\", mean = 180.0 }\n\
             wrap = { dist = \"constant\", mean = 30.0 }\n",
        )
        .unwrap()
    }

    #[test]
    fn closed_form_reproduces_4_4_figures() {
        let occ = progressive_occupancy(&s2()).unwrap();
        assert!((occ - 0.786).abs() < 0.0005, "{occ}");
        let mut s1 = s2();
        s1.outcomes.p_live = 1.0 / 3.0;
        s1.outcomes.p_am = 0.0;
        s1.outcomes.p_busy = 0.0;
        s1.times.talk.mean = 90.0;
        s1.times.wrap.mean = 0.0;
        let occ = progressive_occupancy(&s1).unwrap();
        assert!((occ - 0.592).abs() < 0.0005, "{occ}");
        let mut s3 = s2();
        s3.outcomes.p_live = 0.10;
        s3.times.talk.mean = 240.0;
        let occ = progressive_occupancy(&s3).unwrap();
        assert!((occ - 0.570).abs() < 0.0005, "{occ}");
    }

    #[test]
    fn resolve_names() {
        assert_eq!(resolve("progressive").unwrap()().name(), "progressive");
        assert_eq!(
            resolve("ratio-idle-1.5").unwrap()().name(),
            "ratio-idle-1.5"
        );
        assert!(resolve("ratio-idle-x").is_err());
        assert!(resolve("ratio-idle-99").is_err());
        assert!(resolve("nope").is_err());
    }
}
