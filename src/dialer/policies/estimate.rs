//! Online estimators for the model-based policies (Erlang B3a and predictive B3b of
//! predictive-dialing.md §4.4): live-answer probability, ring time to answer, failure durations,
//! talk and wrap time. All forget exponentially so that a shift in the list or in agent
//! behaviour (§4.2 S7) is followed, and all start from a prior so that a cold start is defined.
//! Every function here is total: no input (NaN, 0, huge) panics or yields NaN.

/// Standard normal CDF Φ(z), Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): cheap enough for
/// the hot path and far below the estimators' own noise.
pub fn normal_cdf(z: f64) -> f64 {
    if z.is_nan() {
        return 0.5;
    }
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-x * x).exp();
    let v = if z >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    };
    v.clamp(0.0, 1.0)
}

/// Standard normal density φ(z).
pub fn normal_pdf(z: f64) -> f64 {
    if !z.is_finite() {
        return 0.0;
    }
    (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// E[X⁺] for X ~ Normal(mean, var): σφ(μ/σ) + μΦ(μ/σ); the overflow of the normal
/// approximation (§4.4 B3b, "normal approximation when N > 30").
pub fn normal_positive_part(mean: f64, var: f64) -> f64 {
    if !mean.is_finite() {
        return 0.0;
    }
    if var.is_nan() || var <= 1e-12 {
        return mean.max(0.0);
    }
    let s = var.sqrt();
    let z = mean / s;
    (s * normal_pdf(z) + mean * normal_cdf(z)).max(0.0)
}

/// A lognormal distribution, fitted by the method of moments (the times of §4.1 are lognormal
/// or gamma; a lognormal with the same two moments is close enough for residual-life
/// questions and has a cheap CDF).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogNormal {
    pub mu: f64,
    pub sigma: f64,
}

impl LogNormal {
    /// From mean and variance (seconds, seconds²); degenerate inputs give a narrow
    /// distribution around a sane mean instead of NaN.
    pub fn from_moments(mean: f64, var: f64) -> LogNormal {
        let m = if mean.is_finite() && mean > 1e-3 {
            mean
        } else {
            1e-3
        };
        let v = if var.is_finite() && var > 0.0 {
            var
        } else {
            0.0
        };
        let s2 = (1.0 + v / (m * m)).ln().max(1e-6);
        LogNormal {
            mu: m.ln() - 0.5 * s2,
            sigma: s2.sqrt(),
        }
    }

    pub fn mean(&self) -> f64 {
        (self.mu + 0.5 * self.sigma * self.sigma).exp()
    }

    /// P(X ≤ x).
    pub fn cdf(&self, x: f64) -> f64 {
        if x.is_nan() || x <= 0.0 {
            return 0.0;
        }
        normal_cdf((x.ln() - self.mu) / self.sigma)
    }
}

/// A CDF tabulated on a uniform grid with linear interpolation, recomputed when estimates move
/// so the decision does no `ln`/`exp` per agent or call (the < 5 µs budget of issue 6). Beyond
/// the grid it evaluates the distribution directly.
#[derive(Debug, Clone)]
pub struct CdfTable {
    dist: LogNormal,
    step: f64,
    inv_step: f64,
    vals: Vec<f64>,
}

impl CdfTable {
    pub fn new(dist: LogNormal, step: f64, max: f64) -> CdfTable {
        let mut t = CdfTable {
            dist,
            step,
            inv_step: 1.0 / step,
            vals: Vec::new(),
        };
        let n = (max / step).ceil() as usize + 1;
        t.vals.reserve(n);
        t.refill(dist);
        t
    }

    /// Recomputes in place for a new distribution (no allocation after the first fill).
    pub fn refill(&mut self, dist: LogNormal) {
        self.dist = dist;
        let n = self.vals.capacity().max(2);
        self.vals.clear();
        for i in 0..n {
            self.vals.push(dist.cdf(i as f64 * self.step));
        }
    }

    pub fn dist(&self) -> LogNormal {
        self.dist
    }

    /// P(X ≤ x).
    #[inline]
    pub fn cdf(&self, x: f64) -> f64 {
        if x.is_nan() || x <= 0.0 {
            return 0.0;
        }
        let pos = x * self.inv_step;
        let i = pos as usize; // saturating cast; x > 0 and finite or +inf
        if i + 1 >= self.vals.len() {
            return self.dist.cdf(x);
        }
        let f = pos - i as f64;
        self.vals[i] + (self.vals[i + 1] - self.vals[i]) * f
    }

    /// P(X ≤ e + h | X > e): the residual-life probability that a process already `e` seconds
    /// old ends within `h` more (§4.4 B3b, "from fitted residual life, not Issabel's
    /// unconditional CDF"). 0 when the survival is numerically nil (far in the tail we do not
    /// count on the end: the conservative side).
    #[inline]
    pub fn residual(&self, e: f64, h: f64) -> f64 {
        let fe = self.cdf(e);
        let s = 1.0 - fe;
        if s < 1e-9 {
            return 0.0;
        }
        ((self.cdf(e + h) - fe) / s).clamp(0.0, 1.0)
    }
}

impl CdfTable {
    /// The residual-life probability averaged over several horizons: P(X ≤ e + hₖ | X > e)
    /// averaged over k. The predictive policy pairs an answer arriving at τ with an agent
    /// free by τ + grace, τ spread over the horizon, instead of "any time within H".
    #[inline]
    pub fn residual_avg(&self, e: f64, hs: &[f64; 3]) -> f64 {
        let fe = self.cdf(e);
        let s = 1.0 - fe;
        if s < 1e-9 {
            return 0.0;
        }
        let sum: f64 = hs.iter().map(|&h| self.cdf(e + h) - fe).sum();
        (sum / (3.0 * s)).clamp(0.0, 1.0)
    }
}

/// Exponentially weighted mean and variance of a positive duration, with a prior worth
/// `prior_weight` observations (Finch 2009, "Incremental calculation of weighted mean and
/// variance"). The effective memory is `window` observations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MomentEstimator {
    mean: f64,
    var: f64,
    weight: f64,
    lambda: f64,
    seen: u64,
}

impl MomentEstimator {
    /// Prior mean and coefficient of variation (seconds), prior weight, memory in observations.
    pub fn new(prior_mean: f64, prior_cv: f64, prior_weight: f64, window: f64) -> Self {
        let mean = if prior_mean.is_finite() && prior_mean > 0.0 {
            prior_mean
        } else {
            1.0
        };
        let cv = if prior_cv.is_finite() && prior_cv > 0.0 {
            prior_cv
        } else {
            1.0
        };
        MomentEstimator {
            mean,
            var: (cv * mean).powi(2),
            weight: if prior_weight.is_finite() {
                prior_weight.max(0.0)
            } else {
                1.0
            },
            lambda: forgetting(window),
            seen: 0,
        }
    }

    /// Adds one observation (seconds). Non-finite or negative values are ignored.
    pub fn push(&mut self, x: f64) {
        if !(x.is_finite() && x >= 0.0) {
            return;
        }
        self.seen += 1;
        self.weight = self.lambda * self.weight + 1.0;
        let a = 1.0 / self.weight;
        let diff = x - self.mean;
        let incr = a * diff;
        self.mean += incr;
        self.var = (1.0 - a) * (self.var + diff * incr);
    }

    pub fn mean(&self) -> f64 {
        self.mean
    }

    pub fn var(&self) -> f64 {
        self.var
    }

    /// Observations pushed (not decayed): for cold-start decisions.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    pub fn lognormal(&self) -> LogNormal {
        LogNormal::from_moments(self.mean, self.var)
    }
}

/// λ for an exponential memory of `window` observations (λ = 1 − 1/window), in [0, 1).
fn forgetting(window: f64) -> f64 {
    if window.is_finite() && window > 1.0 {
        1.0 - 1.0 / window
    } else {
        0.0
    }
}

/// How dial attempts resolve: live answer, machine answer, failure, as forgetting pseudo-counts
/// starting from a Dirichlet prior (the "Beta prior + exponential forgetting"; live vs
/// not-live is the Beta marginal).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutcomeEstimator {
    live: f64,
    machine: f64,
    fail: f64,
    lambda: f64,
    seen: u64,
}

/// One resolved dial attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Live,
    Machine,
    Fail,
}

impl OutcomeEstimator {
    pub fn new(prior_live: f64, prior_machine: f64, prior_weight: f64, window: f64) -> Self {
        let pl = finite_unit(prior_live);
        let pm = finite_unit(prior_machine).min(1.0 - pl);
        let w = if prior_weight.is_finite() && prior_weight > 0.0 {
            prior_weight
        } else {
            1.0
        };
        OutcomeEstimator {
            live: pl * w,
            machine: pm * w,
            fail: (1.0 - pl - pm).max(0.0) * w,
            lambda: forgetting(window),
            seen: 0,
        }
    }

    pub fn push(&mut self, o: Outcome) {
        self.seen += 1;
        self.live *= self.lambda;
        self.machine *= self.lambda;
        self.fail *= self.lambda;
        match o {
            Outcome::Live => self.live += 1.0,
            Outcome::Machine => self.machine += 1.0,
            Outcome::Fail => self.fail += 1.0,
        }
    }

    fn total(&self) -> f64 {
        self.live + self.machine + self.fail
    }

    /// P(live answer) per dial.
    pub fn p_live(&self) -> f64 {
        let t = self.total();
        if t > 1e-12 {
            self.live / t
        } else {
            0.0
        }
    }

    /// P(any answer, live or machine) per dial.
    pub fn p_answer(&self) -> f64 {
        let t = self.total();
        if t > 1e-12 {
            (self.live + self.machine) / t
        } else {
            0.0
        }
    }

    /// Effective number of observations behind the estimate (pseudo-counts included).
    pub fn weight(&self) -> f64 {
        self.total()
    }

    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Replaces this estimate's proportions with `other`'s, keeping `other`'s weight: used after
    /// a detected shock, to re-converge at once instead of at the slow window's pace.
    pub fn reseed_from(&mut self, other: &OutcomeEstimator) {
        self.live = other.live;
        self.machine = other.machine;
        self.fail = other.fail;
    }
}

fn finite_unit(x: f64) -> f64 {
    if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// Failure durations (busy ≈ 5 s, no answer at the ring timeout, §4.1) are bimodal, so they
/// are kept as a forgetting histogram of 1 s bins rather than a fitted curve.
#[derive(Debug, Clone)]
pub struct FailHistogram {
    bins: Vec<f64>,
    /// survival[i] = P(duration > i s), rebuilt by [`refresh`](Self::refresh).
    survival: Vec<f64>,
    lambda: f64,
}

/// Seconds covered by the failure histogram; longer failures land in the last bin.
pub const FAIL_BINS: usize = 121;

impl FailHistogram {
    /// Prior: `prior_weight` failures at `ring_timeout_s`.
    pub fn new(ring_timeout_s: f64, prior_weight: f64, window: f64) -> Self {
        let mut bins = vec![0.0; FAIL_BINS];
        let i = bin_of(ring_timeout_s);
        bins[i] = if prior_weight.is_finite() && prior_weight > 0.0 {
            prior_weight
        } else {
            1.0
        };
        let mut h = FailHistogram {
            bins,
            survival: vec![0.0; FAIL_BINS + 1],
            lambda: forgetting(window),
        };
        h.refresh();
        h
    }

    pub fn push(&mut self, seconds: f64) {
        if !(seconds.is_finite() && seconds >= 0.0) {
            return;
        }
        for b in &mut self.bins {
            *b *= self.lambda;
        }
        self.bins[bin_of(seconds)] += 1.0;
    }

    pub fn refresh(&mut self) {
        let total: f64 = self.bins.iter().sum();
        let inv = if total > 1e-12 { 1.0 / total } else { 0.0 };
        let mut above = total;
        for (i, b) in self.bins.iter().enumerate() {
            // A failure in bin i ended in [i, i+1): still ringing at i, gone at i+1.
            self.survival[i] = (above * inv).clamp(0.0, 1.0);
            above -= b;
        }
        self.survival[FAIL_BINS] = 0.0;
    }

    /// P(failure duration > e seconds), as of the last refresh.
    #[inline]
    pub fn survival(&self, e: f64) -> f64 {
        if e.is_nan() || e <= 0.0 {
            return 1.0;
        }
        let i = e as usize;
        if i >= FAIL_BINS {
            0.0
        } else {
            self.survival[i]
        }
    }
}

fn bin_of(seconds: f64) -> usize {
    if seconds.is_finite() && seconds > 0.0 {
        (seconds as usize).min(FAIL_BINS - 1)
    } else {
        0
    }
}

/// Live answers and abandons over the trailing hour, in one-minute bins: what a rolling
/// 1-hour abandon rate (§4.3) will see of the past when the current hour closes. Fixed size,
/// no allocation; events older than the newest minute are still binned if within the hour
/// (feedback may arrive slightly out of order in the daemon).
#[derive(Debug, Clone)]
pub struct HourWindow {
    live: [u32; 60],
    abandons: [u32; 60],
    /// Newest minute held (ms / 60 000); `None` before the first event.
    minute: Option<u64>,
    first_minute: u64,
    sum_live: u32,
    sum_abandons: u32,
}

impl Default for HourWindow {
    fn default() -> Self {
        HourWindow {
            live: [0; 60],
            abandons: [0; 60],
            minute: None,
            first_minute: 0,
            sum_live: 0,
            sum_abandons: 0,
        }
    }
}

impl HourWindow {
    /// Moves the window's end to the minute of `now_ms`, dropping bins that fell out.
    pub fn advance(&mut self, now_ms: u64) {
        let m = now_ms / 60_000;
        let Some(cur) = self.minute else {
            self.minute = Some(m);
            self.first_minute = m;
            return;
        };
        if m <= cur {
            return;
        }
        if m >= cur + 60 {
            // Nothing left of the old hour: a fresh start, projected like the first one.
            self.first_minute = m;
        }
        for k in cur + 1..=(cur + 60).min(m) {
            let i = (k % 60) as usize;
            self.sum_live -= self.live[i];
            self.sum_abandons -= self.abandons[i];
            self.live[i] = 0;
            self.abandons[i] = 0;
        }
        self.minute = Some(m);
    }

    fn slot(&mut self, at_ms: u64) -> Option<usize> {
        self.advance(at_ms);
        let m = at_ms / 60_000;
        let cur = self.minute?;
        (m + 60 > cur).then_some((m % 60) as usize)
    }

    pub fn push_live(&mut self, at_ms: u64) {
        if let Some(i) = self.slot(at_ms) {
            self.live[i] = self.live[i].saturating_add(1);
            self.sum_live = self.sum_live.saturating_add(1);
        }
    }

    pub fn push_abandon(&mut self, at_ms: u64) {
        if let Some(i) = self.slot(at_ms) {
            self.abandons[i] = self.abandons[i].saturating_add(1);
            self.sum_abandons = self.sum_abandons.saturating_add(1);
        }
    }

    /// Live answers and abandons in the trailing hour.
    pub fn counts(&self) -> (u32, u32) {
        (self.sum_live, self.sum_abandons)
    }

    /// Minutes the window has covered, 1..=60 (the current, partial minute counts).
    pub fn span_minutes(&self) -> u64 {
        self.minute
            .map_or(1, |m| (m - self.first_minute + 1).min(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
        assert!((normal_cdf(-1.0) - 0.158_655).abs() < 1e-5);
        assert_eq!(normal_cdf(f64::NAN), 0.5);
        assert_eq!(normal_cdf(f64::INFINITY), 1.0);
    }

    #[test]
    fn lognormal_moments_round_trip() {
        let d = LogNormal::from_moments(10.0, 25.0);
        assert!((d.mean() - 10.0).abs() < 1e-9);
        let d = LogNormal::from_moments(f64::NAN, -1.0);
        assert!(d.mu.is_finite() && d.sigma > 0.0);
    }

    #[test]
    fn moment_estimator_converges() {
        let mut m = MomentEstimator::new(180.0, 1.0, 5.0, 200.0);
        for _ in 0..2000 {
            m.push(60.0);
            m.push(100.0);
        }
        assert!((m.mean() - 80.0).abs() < 2.0);
        assert!((m.var() - 400.0).abs() < 40.0);
        m.push(f64::NAN);
        assert!(m.mean().is_finite());
    }

    #[test]
    fn outcome_estimator_forgets() {
        let mut o = OutcomeEstimator::new(0.3, 0.1, 20.0, 100.0);
        assert!((o.p_live() - 0.3).abs() < 1e-12);
        for _ in 0..1000 {
            o.push(Outcome::Live);
        }
        assert!(o.p_live() > 0.99);
    }

    #[test]
    fn residual_life_grows_with_short_horizon_in_the_tail() {
        let t = CdfTable::new(LogNormal::from_moments(10.0, 25.0), 0.5, 300.0);
        assert!((t.cdf(10.0) - t.dist().cdf(10.0)).abs() < 1e-3);
        assert!(t.residual(0.0, 10.0) > 0.5);
        assert_eq!(t.residual(1e9, 10.0), 0.0);
        assert!(t.cdf(1e6) > 0.99);
    }

    #[test]
    fn hour_window_forgets_after_an_hour() {
        let mut w = HourWindow::default();
        w.push_live(0);
        w.push_abandon(1_000);
        w.push_live(30 * 60_000);
        assert_eq!(w.counts(), (2, 1));
        assert_eq!(w.span_minutes(), 31);
        w.advance(60 * 60_000);
        assert_eq!(w.counts(), (1, 0));
        assert_eq!(w.span_minutes(), 60);
        // Late but within the hour: binned; older than the hour: ignored.
        w.push_abandon(59 * 60_000);
        w.push_abandon(0);
        assert_eq!(w.counts(), (1, 1));
        w.advance(1000 * 60_000);
        assert_eq!(w.counts(), (0, 0));
        assert_eq!(w.span_minutes(), 1);
    }

    #[test]
    fn fail_histogram_survival() {
        let mut h = FailHistogram::new(26.0, 1.0, 1e9);
        h.push(5.0);
        h.refresh();
        assert!((h.survival(3.0) - 1.0).abs() < 1e-12);
        assert!((h.survival(10.0) - 0.5).abs() < 1e-6);
        assert_eq!(h.survival(30.0), 0.0);
    }
}
