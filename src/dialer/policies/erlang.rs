//! Open-loop Erlang-B rate dialer (B3a of predictive-dialing.md §4.4, Korolev et al. style).
//! Live answers are treated as Poisson arrivals to an M/G/N/N loss system; the offered load a*
//! with ErlangB(N, a*) = α gives a dial rate λ = a*/(p̂·ĥ). It ignores the state of agents and
//! calls, which is the point: it is the open-loop *lower reference*, and with Poisson dialing
//! its measured abandon rate validates the simulator against Erlang-B.

use serde::Deserialize;

use super::estimate::{MomentEstimator, Outcome, OutcomeEstimator};
use super::{cap, check_range, in_flight, PolicyConfigError, Tally};
use crate::dialer::pacing::{Feedback, Pacer, PacingView};

/// Erlang-B blocking probability B(n, a) by the stable recursion
/// B(0) = 1, B(k) = a·B(k−1)/(k + a·B(k−1)).
pub fn erlang_b(n: u32, a: f64) -> f64 {
    if a.is_nan() || a <= 0.0 {
        return if n == 0 { 1.0 } else { 0.0 };
    }
    if !a.is_finite() {
        return 1.0;
    }
    let mut b = 1.0;
    for k in 1..=n {
        let ab = a * b;
        b = ab / (f64::from(k) + ab);
    }
    b
}

/// The offered load a with ErlangB(n, a) = alpha, by bisection (B is increasing in a).
/// 0 when n = 0 or alpha is not in (0, 1).
pub fn offered_load_for_blocking(n: u32, alpha: f64) -> f64 {
    if n == 0 || !(alpha > 0.0 && alpha < 1.0) {
        return 0.0;
    }
    let mut lo = 0.0;
    let mut hi = f64::from(n).max(1.0);
    let mut guard = 0;
    while erlang_b(n, hi) < alpha && guard < 64 {
        lo = hi;
        hi *= 2.0;
        guard += 1;
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if erlang_b(n, mid) < alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// `policy = "erlang"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ErlangConfig {
    /// Target blocking (abandon) probability α, in (0, 0.5]. Default 0.03.
    pub alpha: f64,
    /// Re-estimation period of the dial rate (ms), in [1000, 3600000]. Default 30000.
    pub reestimate_ms: u64,
    /// Cap on calls in flight plus bridged, per active agent, in [1, 10]. Default 3 (§4.1 trunks).
    pub max_lines_per_agent: f64,
    /// Prior live-answer probability, in [0.01, 1]. Default 0.3 (§4.2 S2).
    pub prior_live: f64,
    /// Prior handle time (talk + wrap) in seconds, in [1, 7200]. Default 210 (§4.1).
    pub prior_handle_s: f64,
    /// Memory of the estimators, in observations, in [10, 100000]. Default 500.
    pub window: f64,
}

impl Default for ErlangConfig {
    fn default() -> Self {
        ErlangConfig {
            alpha: 0.03,
            reestimate_ms: 30_000,
            max_lines_per_agent: 3.0,
            prior_live: 0.3,
            prior_handle_s: 210.0,
            window: 500.0,
        }
    }
}

impl ErlangConfig {
    pub fn validate(&self) -> Result<(), PolicyConfigError> {
        check_range("alpha", self.alpha, 1e-6, 0.5)?;
        check_range("reestimate_ms", self.reestimate_ms as f64, 1000.0, 3.6e6)?;
        check_range("max_lines_per_agent", self.max_lines_per_agent, 1.0, 10.0)?;
        check_range("prior_live", self.prior_live, 0.01, 1.0)?;
        check_range("prior_handle_s", self.prior_handle_s, 1.0, 7200.0)?;
        check_range("window", self.window, 10.0, 1e5)
    }
}

/// The open-loop rate dialer: a deterministic fractional accumulator over elapsed `now_ms`.
#[derive(Debug, Clone)]
pub struct ErlangPacer {
    alpha: f64,
    reestimate_ms: u64,
    max_lines: f64,
    outcomes: OutcomeEstimator,
    handle: MomentEstimator,
    /// Dials per second, and the agent count it was computed for.
    rate: f64,
    rate_for_agents: u32,
    last_estimate_ms: Option<u64>,
    last_ms: Option<u64>,
    acc: f64,
}

impl ErlangPacer {
    pub fn new(c: &ErlangConfig) -> Self {
        let fin = |v: f64, d: f64, lo: f64, hi: f64| {
            if v.is_finite() {
                v.clamp(lo, hi)
            } else {
                d
            }
        };
        ErlangPacer {
            alpha: fin(c.alpha, 0.03, 1e-6, 0.5),
            reestimate_ms: c.reestimate_ms.max(1000),
            max_lines: fin(c.max_lines_per_agent, 3.0, 1.0, 10.0),
            outcomes: OutcomeEstimator::new(fin(c.prior_live, 0.3, 0.01, 1.0), 0.0, 20.0, c.window),
            handle: MomentEstimator::new(
                fin(c.prior_handle_s, 210.0, 1.0, 7200.0),
                1.0,
                5.0,
                c.window,
            ),
            rate: 0.0,
            rate_for_agents: 0,
            last_estimate_ms: None,
            last_ms: None,
            acc: 0.0,
        }
    }

    /// Current dial rate (calls per second).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn estimate(&mut self, n: u32) {
        let a = offered_load_for_blocking(n, self.alpha);
        let p = self.outcomes.p_live().max(0.01);
        let h = self.handle.mean().max(1.0);
        let r = a / (p * h);
        self.rate = if r.is_finite() { r.max(0.0) } else { 0.0 };
        self.rate_for_agents = n;
    }
}

impl Pacer for ErlangPacer {
    fn name(&self) -> String {
        format!("erlang-{}%", self.alpha * 100.0)
    }

    fn observe(&mut self, feedback: &Feedback) {
        match *feedback {
            Feedback::Answered { live, .. } => self.outcomes.push(if live {
                Outcome::Live
            } else {
                Outcome::Machine
            }),
            Feedback::Failed { .. } => self.outcomes.push(Outcome::Fail),
            Feedback::HandleDone {
                talk_ms, wrap_ms, ..
            } => self
                .handle
                .push(talk_ms.saturating_add(wrap_ms) as f64 / 1000.0),
            Feedback::Connected { .. } | Feedback::Abandoned { .. } => {}
        }
    }

    fn launch(&mut self, view: &PacingView<'_>) -> u32 {
        let now = view.now_ms;
        let t = Tally::of(view);
        let n = t.active();
        let elapsed = self.last_ms.map_or(0, |l| now.saturating_sub(l));
        self.last_ms = Some(self.last_ms.map_or(now, |l| l.max(now)));
        // Re-estimate every period, and at once when the agent count changes (N is an input
        // of the load, not an estimate).
        if n != self.rate_for_agents
            || self
                .last_estimate_ms
                .is_none_or(|e| now.saturating_sub(e) >= self.reestimate_ms)
        {
            self.estimate(n);
            self.last_estimate_ms = Some(now);
        }
        if n == 0 {
            self.acc = 0.0;
            return 0;
        }
        self.acc += self.rate * elapsed as f64 / 1000.0;
        let lines = (self.max_lines * f64::from(n)).floor() as u64;
        let room = lines.saturating_sub(in_flight(view) + u64::from(t.talking));
        let want = if self.acc.is_finite() && self.acc > 0.0 {
            self.acc.floor().min(1e9) as u64
        } else {
            0
        };
        let k = cap(want.min(room), view.line_headroom);
        self.acc -= f64::from(k);
        // What the caps held back is not owed later: an open-loop dialer must not burst.
        self.acc = self.acc.clamp(0.0, 1.0);
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialer::pacing::{AgentPhase, AgentView};

    fn util(n: u32, b: f64) -> f64 {
        let a = offered_load_for_blocking(n, b);
        assert!((erlang_b(n, a) - b).abs() < 1e-9);
        a * (1.0 - b) / f64::from(n)
    }

    #[test]
    fn erlang_b_table_of_section_4_4() {
        for (n, u) in [
            (5, 0.364),
            (10, 0.536),
            (20, 0.679),
            (30, 0.746),
            (50, 0.813),
            (100, 0.881),
        ] {
            assert!(
                (util(n, 0.03) - u).abs() < 0.0015,
                "N={n}: {}",
                util(n, 0.03)
            );
        }
        assert!((util(20, 0.01) - 0.596).abs() < 0.0015);
        assert!((util(100, 0.01) - 0.832).abs() < 0.0015);
    }

    #[test]
    fn erlang_b_edges() {
        assert_eq!(erlang_b(0, 3.0), 1.0);
        assert_eq!(erlang_b(5, 0.0), 0.0);
        assert_eq!(erlang_b(5, f64::NAN), 0.0);
        assert_eq!(erlang_b(5, f64::INFINITY), 1.0);
        assert!((erlang_b(1, 1.0) - 0.5).abs() < 1e-12);
        assert_eq!(offered_load_for_blocking(0, 0.03), 0.0);
        assert_eq!(offered_load_for_blocking(10, 1.5), 0.0);
    }

    #[test]
    fn emits_at_the_rate() {
        let mut p = ErlangPacer::new(&ErlangConfig::default());
        let agents = vec![
            AgentView {
                phase: AgentPhase::Ready,
                since_ms: 0
            };
            20
        ];
        let mut total = 0u64;
        for s in 0..=600u64 {
            total += u64::from(p.launch(&PacingView {
                now_ms: s * 1000,
                agents: &agents,
                ringing: &[],
                waiting: 0,
                line_headroom: 1000,
            }));
        }
        // a* ≈ 13.99 at N = 20, α = 3 %; λ = a*/(0.3·210) ≈ 0.222/s → ≈ 133 in 600 s.
        let expect = p.rate() * 600.0;
        assert!((total as f64 - expect).abs() <= 1.0, "{total} vs {expect}");
        assert!((p.rate() - 0.222).abs() < 0.002);
    }
}
