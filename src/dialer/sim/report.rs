//! Per-policy metrics with the definitions of predictive-dialing.md §4.3, aggregated over
//! replications as mean ± 95 % confidence half-width (§4.3 protocol), and rendered as JSON
//! and a fixed-width text table.

use serde::Serialize;

use super::engine::RepStats;

/// The §4.3 metrics of one replication.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RepMetrics {
    /// Σ(talk + wrap + AM handling) / Σ logged-in time.
    pub occupancy: f64,
    pub talk_min_per_agent_hour: f64,
    /// Mean READY spell that ended with a call, seconds.
    pub mean_agent_wait_secs: f64,
    /// Abandons / live answers over the shift.
    pub abandon_rate: f64,
    /// Over rolling 1-hour windows (stepped by a minute): the worst, and the 95th percentile.
    pub abandon_rate_worst_hour: f64,
    pub abandon_rate_p95_hour: f64,
    pub dials_per_agent_hour: f64,
    pub connects_per_agent_hour: f64,
    pub peak_trunks: f64,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Rolling 1-hour windows over per-minute bins (§4.3: "rolling 1 h windows (max, p95)").
/// Windows without a live answer have no rate and are skipped; a shift under an hour is one
/// window.
fn hour_windows(live: &[u32], aband: &[u32]) -> (f64, f64) {
    let n = live.len();
    let w = 60.min(n);
    if w == 0 {
        return (0.0, 0.0);
    }
    let mut rates = Vec::new();
    let (mut l, mut a) = (0u64, 0u64);
    for i in 0..n {
        l += live[i] as u64;
        a += aband[i] as u64;
        if i >= w {
            l -= live[i - w] as u64;
            a -= aband[i - w] as u64;
        }
        if i + 1 >= w && l > 0 {
            rates.push(a as f64 / l as f64);
        }
    }
    if rates.is_empty() {
        return (0.0, 0.0);
    }
    rates.sort_by(f64::total_cmp);
    let worst = *rates.last().unwrap_or(&0.0);
    // Nearest-rank percentile.
    let idx = ((0.95 * rates.len() as f64).ceil() as usize).clamp(1, rates.len()) - 1;
    (worst, rates[idx])
}

impl RepMetrics {
    pub fn from_stats(s: &RepStats) -> Self {
        let agent_hours = s.logged_in_ms as f64 / 3_600_000.0;
        // The bins cover whole minutes up to the shift end; the last, partial bin is kept.
        let bins = s.live_by_minute.len().saturating_sub(1).max(1);
        let (worst, p95) = hour_windows(
            &s.live_by_minute[..bins.min(s.live_by_minute.len())],
            &s.abandons_by_minute[..bins.min(s.abandons_by_minute.len())],
        );
        RepMetrics {
            occupancy: ratio(s.busy_ms as f64, s.logged_in_ms as f64),
            talk_min_per_agent_hour: ratio(s.talk_ms as f64 / 60_000.0, agent_hours),
            mean_agent_wait_secs: ratio(s.agent_wait_ms as f64 / 1000.0, s.agent_waits as f64),
            abandon_rate: ratio(s.abandons as f64, s.live_answers as f64),
            abandon_rate_worst_hour: worst,
            abandon_rate_p95_hour: p95,
            dials_per_agent_hour: ratio(s.dials as f64, agent_hours),
            connects_per_agent_hour: ratio(s.connects as f64, agent_hours),
            peak_trunks: s.peak_lines as f64,
        }
    }
}

/// Mean and 95 % confidence half-width across replications.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Stat {
    pub mean: f64,
    pub ci95: f64,
}

/// Student-t 97.5 % quantile for `df` degrees of freedom.
fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => 0.0,
        1..=30 => T[df - 1],
        31..=60 => 2.00,
        61..=120 => 1.98,
        _ => 1.96,
    }
}

impl Stat {
    pub fn of(xs: &[f64]) -> Stat {
        let n = xs.len();
        if n == 0 {
            return Stat::default();
        }
        let mean = xs.iter().sum::<f64>() / n as f64;
        if n == 1 {
            return Stat { mean, ci95: 0.0 };
        }
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
        Stat {
            mean,
            ci95: t975(n - 1) * (var / n as f64).sqrt(),
        }
    }
}

/// One policy's results (JSON field names are the §4.3 metric names).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyReport {
    pub policy: String,
    pub replications: u32,
    pub occupancy: Stat,
    pub talk_min_per_agent_hour: Stat,
    pub mean_agent_wait_secs: Stat,
    pub abandon_rate: Stat,
    pub abandon_rate_worst_hour: Stat,
    pub abandon_rate_p95_hour: Stat,
    pub dials_per_agent_hour: Stat,
    pub connects_per_agent_hour: Stat,
    pub peak_trunks: Stat,
}

impl PolicyReport {
    pub fn aggregate(policy: &str, reps: &[RepMetrics]) -> Self {
        let f = |g: fn(&RepMetrics) -> f64| Stat::of(&reps.iter().map(g).collect::<Vec<_>>());
        PolicyReport {
            policy: policy.to_string(),
            replications: reps.len() as u32,
            occupancy: f(|m| m.occupancy),
            talk_min_per_agent_hour: f(|m| m.talk_min_per_agent_hour),
            mean_agent_wait_secs: f(|m| m.mean_agent_wait_secs),
            abandon_rate: f(|m| m.abandon_rate),
            abandon_rate_worst_hour: f(|m| m.abandon_rate_worst_hour),
            abandon_rate_p95_hour: f(|m| m.abandon_rate_p95_hour),
            dials_per_agent_hour: f(|m| m.dials_per_agent_hour),
            connects_per_agent_hour: f(|m| m.connects_per_agent_hour),
            peak_trunks: f(|m| m.peak_trunks),
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    pub scenario: String,
    pub seed: u64,
    pub replications: u32,
    pub shift_hours: f64,
    /// §4.4's closed-form progressive occupancy, when the scenario fits its assumptions.
    pub analytic_progressive_occupancy: Option<f64>,
    pub policies: Vec<PolicyReport>,
}

impl SimReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Fixed-width table, one row per policy; rates in %, ± the 95 % half-width.
    pub fn to_table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario: {}  (seed {}, {} replications × {} h; mean ± 95 % CI)",
            self.scenario, self.seed, self.replications, self.shift_hours
        );
        if let Some(a) = self.analytic_progressive_occupancy {
            let _ = writeln!(
                out,
                "analytic progressive occupancy (§4.4): {:.1} %",
                a * 100.0
            );
        }
        let _ = writeln!(
            out,
            "{:<18} {:>13} {:>11} {:>10} {:>11} {:>10} {:>10} {:>10} {:>10} {:>6}",
            "policy",
            "occupancy %",
            "talk m/ah",
            "wait s",
            "abandon %",
            "worst h %",
            "p95 h %",
            "dials/ah",
            "conn/ah",
            "trunks"
        );
        let pct = |s: Stat| format!("{:.1}±{:.1}", s.mean * 100.0, s.ci95 * 100.0);
        let pct2 = |s: Stat| format!("{:.2}±{:.2}", s.mean * 100.0, s.ci95 * 100.0);
        let num = |s: Stat| format!("{:.1}±{:.1}", s.mean, s.ci95);
        for p in &self.policies {
            let _ = writeln!(
                out,
                "{:<18} {:>13} {:>11} {:>10} {:>11} {:>10} {:>10} {:>10} {:>10} {:>6.0}",
                p.policy,
                pct(p.occupancy),
                num(p.talk_min_per_agent_hour),
                num(p.mean_agent_wait_secs),
                pct2(p.abandon_rate),
                pct(p.abandon_rate_worst_hour),
                pct(p.abandon_rate_p95_hour),
                num(p.dials_per_agent_hour),
                num(p.connects_per_agent_hour),
                p.peak_trunks.mean
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_worst_and_p95() {
        let mut live = vec![10u32; 120];
        let mut ab = vec![0u32; 120];
        ab[100] = 60; // one bad minute: 60 abandons in windows covering minute 100
        live[100] = 10;
        let (worst, p95) = hour_windows(&live, &ab);
        assert!((worst - 0.1).abs() < 1e-12, "{worst}");
        assert!(p95 <= worst);
        assert_eq!(hour_windows(&[], &[]), (0.0, 0.0));
    }

    #[test]
    fn stat_ci() {
        let s = Stat::of(&[1.0, 2.0, 3.0]);
        assert_eq!(s.mean, 2.0);
        assert!((s.ci95 - 4.303 / 3f64.sqrt()).abs() < 1e-9);
    }
}
