//! VICIdial's adaptive dial level (B2 of predictive-dialing.md §4.4), a port of
//! `AST_VDadapt.pl` as described in §1.1(b): a multiplicative integral controller on
//! "idle agents − calls waiting", with the drop guards, feeding B1(b)'s launch rule (§1.1(a)).
//! It is here as the reference the predictive policy is judged against, so it keeps VICIdial's
//! quirks (the HHMM arithmetic of TAPERED, L floored at 1.0) on purpose.

use serde::Deserialize;

use super::ratio::vicidial_launch;
use super::{bad, check_range, PolicyConfigError, Tally};
use crate::dialer::pacing::{Feedback, Pacer, PacingView};

/// What happens when the since-start drop rate exceeds the target (`dial_method` ADAPT_*).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropMethod {
    /// ADAPT_HARD_LIMIT: L = 1.0.
    #[default]
    HardLimit,
    /// ADAPT_AVERAGE: L /= 2.
    Average,
    /// ADAPT_TAPERED: L ×= min(1, (latest − now, in HHMM)/1000); L = 1 after the latest time.
    Tapered,
}

/// `policy = "vicidial"`. Defaults are VICIdial's campaign defaults (§1.1(b)).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VicidialConfig {
    /// `hard-limit` (default), `average` or `tapered`.
    pub method: DropMethod,
    /// `adaptive_maximum_level`, in [1.0, 10.0]. Default 3.0.
    pub max_level: f64,
    /// Starting `auto_dial_level`, in [1.0, max_level]. Default 1.0.
    pub initial_level: f64,
    /// `adaptive_intensity`, in [−40, 40]. Default 0.
    pub intensity: f64,
    /// `adaptive_dl_diff_target` (agents), in [−10, 10]. Default 0.
    pub dl_diff_target: f64,
    /// `adaptive_dropped_percentage`, in (0, 100]. Default 3.
    pub dropped_percentage: f64,
    /// `adaptive_latest_server_time` as HHMM (TAPERED). Default 2100.
    pub latest_hhmm: u16,
    /// The wall-clock HHMM at `now_ms` = 0 (the simulator's shift start; 0000 when `now_ms`
    /// counts from midnight or is Unix time in UTC). Default 0.
    pub clock_origin_hhmm: u16,
    /// `dial_level_threshold`: fewer active agents than this force L = 1.0; 0 = off (default).
    pub level_threshold_agents: u32,
}

impl Default for VicidialConfig {
    fn default() -> Self {
        VicidialConfig {
            method: DropMethod::HardLimit,
            max_level: 3.0,
            initial_level: 1.0,
            intensity: 0.0,
            dl_diff_target: 0.0,
            dropped_percentage: 3.0,
            latest_hhmm: 2100,
            clock_origin_hhmm: 0,
            level_threshold_agents: 0,
        }
    }
}

fn valid_hhmm(v: u16) -> bool {
    v / 100 < 24 && v % 100 < 60
}

impl VicidialConfig {
    pub fn validate(&self) -> Result<(), PolicyConfigError> {
        check_range("max_level", self.max_level, 1.0, 10.0)?;
        check_range("initial_level", self.initial_level, 1.0, self.max_level)?;
        check_range("intensity", self.intensity, -40.0, 40.0)?;
        check_range("dl_diff_target", self.dl_diff_target, -10.0, 10.0)?;
        check_range("dropped_percentage", self.dropped_percentage, 0.0, 100.0)?;
        if self.dropped_percentage <= 0.0 {
            return Err(bad("dropped_percentage", "must be above 0"));
        }
        if !valid_hhmm(self.latest_hhmm) {
            return Err(bad(
                "latest_hhmm",
                format!("{} is not HHMM", self.latest_hhmm),
            ));
        }
        if !valid_hhmm(self.clock_origin_hhmm) {
            return Err(bad(
                "clock_origin_hhmm",
                format!("{} is not HHMM", self.clock_origin_hhmm),
            ));
        }
        Ok(())
    }
}

const SAMPLES: usize = 15;
const SAMPLE_MS: u64 = 1_000;
const UPDATE_MS: u64 = 15_000;
const DROP_STATS_MS: u64 = 60_000;

/// Per-second counts for the 1-minute drop window.
#[derive(Debug, Clone, Copy, Default)]
struct SecondBucket {
    second: u64,
    calls: u32,
    live: u32,
    drops: u32,
}

/// The adaptive-level policy's state.
#[derive(Debug, Clone)]
pub struct VicidialPacer {
    cfg: VicidialConfig,
    level: f64,
    /// (READY, waiting, logged-in) samples, a ring of the last 15.
    samples: [(f64, f64, f64); SAMPLES],
    n_samples: usize,
    next_sample: usize,
    last_sample_ms: Option<u64>,
    last_update_ms: Option<u64>,
    last_drop_stats_ms: Option<u64>,
    minute: [SecondBucket; 60],
    /// Since start: calls resolved, live answers, drops.
    total_calls: u64,
    total_live: u64,
    total_drops: u64,
    /// Drop statistics as of the last 60 s recomputation: (1-min calls, 1-min drop %,
    /// since-start calls, since-start drop %).
    stats: (u64, f64, u64, f64),
}

impl VicidialPacer {
    pub fn new(config: &VicidialConfig) -> Self {
        let mut cfg = config.clone();
        if !(cfg.max_level.is_finite()) {
            cfg.max_level = 3.0;
        }
        cfg.max_level = cfg.max_level.clamp(1.0, 10.0);
        let level = if cfg.initial_level.is_finite() {
            cfg.initial_level.clamp(1.0, cfg.max_level)
        } else {
            1.0
        };
        for v in [&mut cfg.intensity, &mut cfg.dl_diff_target] {
            if !v.is_finite() {
                *v = 0.0;
            }
        }
        cfg.intensity = cfg.intensity.clamp(-40.0, 40.0);
        if !(cfg.dropped_percentage.is_finite() && cfg.dropped_percentage > 0.0) {
            cfg.dropped_percentage = 3.0;
        }
        VicidialPacer {
            cfg,
            level,
            samples: [(0.0, 0.0, 0.0); SAMPLES],
            n_samples: 0,
            next_sample: 0,
            last_sample_ms: None,
            last_update_ms: None,
            last_drop_stats_ms: None,
            minute: [SecondBucket::default(); 60],
            total_calls: 0,
            total_live: 0,
            total_drops: 0,
            stats: (0, 0.0, 0, 0.0),
        }
    }

    /// The current dial level L (lines per active agent).
    pub fn level(&self) -> f64 {
        self.level
    }

    fn bucket(&mut self, at_ms: u64) -> &mut SecondBucket {
        let second = at_ms / 1000;
        let b = &mut self.minute[(second % 60) as usize];
        if b.second != second {
            *b = SecondBucket {
                second,
                ..SecondBucket::default()
            };
        }
        b
    }

    fn recompute_drop_stats(&mut self, now_ms: u64) {
        let now_s = now_ms / 1000;
        let (mut calls, mut live, mut drops) = (0u64, 0u64, 0u64);
        for b in &self.minute {
            if b.second <= now_s && now_s - b.second < 60 {
                calls += u64::from(b.calls);
                live += u64::from(b.live);
                drops += u64::from(b.drops);
            }
        }
        self.stats = (
            calls,
            drop_pct(drops, live),
            self.total_calls,
            drop_pct(self.total_drops, self.total_live),
        );
    }

    /// The wall-clock HHMM at `now_ms`, from the configured origin.
    fn hhmm(&self, now_ms: u64) -> i64 {
        let origin = u64::from(self.cfg.clock_origin_hhmm / 100) * 60
            + u64::from(self.cfg.clock_origin_hhmm % 100);
        let minutes = (origin + now_ms / 60_000) % 1440;
        (minutes / 60 * 100 + minutes % 60) as i64
    }

    /// One 15 s update (§1.1(b)): the level step, then the drop guards, then the floor.
    fn update_level(&mut self, now_ms: u64, active: u32) {
        if self.n_samples > 0 {
            let n = self.n_samples as f64;
            let (mut r, mut w, mut a) = (0.0, 0.0, 0.0);
            for s in &self.samples[..self.n_samples] {
                r += s.0;
                w += s.1;
                a += s.2;
            }
            let differential = (r - w) / n;
            let agents_avg = a / n;
            if agents_avg > 0.0 {
                self.level = next_level(
                    self.level,
                    differential,
                    agents_avg,
                    self.cfg.dl_diff_target,
                    self.cfg.intensity,
                    self.cfg.max_level,
                );
            }
        }
        let (min_calls, min_pct, day_calls, day_pct) = self.stats;
        if min_calls > 20 && min_pct > 50.0 {
            self.level /= 2.0;
        }
        if day_calls > 50 && day_pct > self.cfg.dropped_percentage {
            match self.cfg.method {
                DropMethod::HardLimit => self.level = 1.0,
                DropMethod::Average => self.level /= 2.0,
                DropMethod::Tapered => {
                    let left = i64::from(self.cfg.latest_hhmm) - self.hhmm(now_ms);
                    if left <= 0 {
                        self.level = 1.0;
                    } else {
                        self.level *= (left as f64 / 1000.0).min(1.0);
                    }
                }
            }
        }
        if self.cfg.level_threshold_agents > 0 && active < self.cfg.level_threshold_agents {
            self.level = 1.0;
        }
        self.level = self.level.max(1.0);
    }
}

fn drop_pct(drops: u64, live: u64) -> f64 {
    if live == 0 {
        0.0
    } else {
        drops as f64 * 100.0 / live as f64
    }
}

/// The level step of `calculate_dial_level` (§1.1(b)):
/// d = (differential + dl_diff_target)/agents_avg; d_eff = d(1+I) if d ≥ 0 else d·|I − 1|;
/// L' = L(1 + d_eff) clamped to [1, max].
pub fn next_level(
    level: f64,
    differential: f64,
    agents_avg: f64,
    dl_diff_target: f64,
    intensity: f64,
    max_level: f64,
) -> f64 {
    if agents_avg.is_nan() || agents_avg <= 0.0 {
        return level;
    }
    let d = (differential + dl_diff_target) / agents_avg;
    let i = intensity / 100.0;
    let d_eff = if d >= 0.0 {
        d * (1.0 + i)
    } else {
        d * (i - 1.0).abs()
    };
    let l = level * (1.0 + d_eff);
    if l.is_finite() {
        l.clamp(1.0, max_level)
    } else {
        level
    }
}

impl Pacer for VicidialPacer {
    fn name(&self) -> String {
        let m = match self.cfg.method {
            DropMethod::HardLimit => "hard-limit",
            DropMethod::Average => "average",
            DropMethod::Tapered => "tapered",
        };
        format!("vicidial-{m}")
    }

    fn observe(&mut self, feedback: &Feedback) {
        match *feedback {
            Feedback::Answered { at_ms, live, .. } => {
                self.total_calls += 1;
                let b = self.bucket(at_ms);
                b.calls += 1;
                if live {
                    b.live += 1;
                    self.total_live += 1;
                }
            }
            Feedback::Failed { at_ms, .. } => {
                self.total_calls += 1;
                self.bucket(at_ms).calls += 1;
            }
            Feedback::Abandoned { at_ms } => {
                self.total_drops += 1;
                self.bucket(at_ms).drops += 1;
            }
            Feedback::Connected { .. } | Feedback::HandleDone { .. } => {}
        }
    }

    fn launch(&mut self, view: &PacingView<'_>) -> u32 {
        let now = view.now_ms;
        let t = Tally::of(view);
        if self
            .last_sample_ms
            .is_none_or(|s| now.saturating_sub(s) >= SAMPLE_MS)
        {
            self.samples[self.next_sample] = (
                f64::from(t.ready),
                f64::from(view.waiting),
                view.agents.len() as f64,
            );
            self.next_sample = (self.next_sample + 1) % SAMPLES;
            self.n_samples = (self.n_samples + 1).min(SAMPLES);
            self.last_sample_ms = Some(now);
        }
        if self
            .last_drop_stats_ms
            .is_none_or(|s| now.saturating_sub(s) >= DROP_STATS_MS)
        {
            self.recompute_drop_stats(now);
            self.last_drop_stats_ms = Some(now);
        }
        match self.last_update_ms {
            None => self.last_update_ms = Some(now),
            Some(u) if now.saturating_sub(u) >= UPDATE_MS => {
                self.update_level(now, t.active());
                self.last_update_ms = Some(now);
            }
            Some(_) => {}
        }
        vicidial_launch(view, &t, self.level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialer::pacing::{AgentPhase, AgentView};

    #[test]
    fn level_step_with_intensity() {
        // 4 idle, 0 waiting, 20 agents: d = 0.2.
        assert!((next_level(1.0, 4.0, 20.0, 0.0, 0.0, 3.0) - 1.2).abs() < 1e-12);
        // +20 intensity speeds up: d_eff = 0.2·1.2.
        assert!((next_level(1.0, 4.0, 20.0, 0.0, 20.0, 3.0) - 1.24).abs() < 1e-12);
        // Slowing down with +20: d_eff = −0.25·|0.2 − 1| = −0.2.
        assert!((next_level(2.0, -5.0, 20.0, 0.0, 20.0, 3.0) - 1.6).abs() < 1e-12);
        // −20 slows down faster: d_eff = −0.25·1.2 = −0.3.
        assert!((next_level(2.0, -5.0, 20.0, 0.0, -20.0, 3.0) - 1.4).abs() < 1e-12);
        // dl_diff_target −1 pulls the differential down.
        assert!((next_level(1.0, 4.0, 20.0, -1.0, 0.0, 3.0) - 1.15).abs() < 1e-12);
        // Clamped.
        assert_eq!(next_level(2.9, 20.0, 20.0, 0.0, 0.0, 3.0), 3.0);
        assert_eq!(next_level(1.1, -20.0, 20.0, 0.0, 0.0, 3.0), 1.0);
        assert_eq!(next_level(1.5, 1.0, 0.0, 0.0, 0.0, 3.0), 1.5);
    }

    fn ready_agents(n: usize) -> Vec<AgentView> {
        vec![
            AgentView {
                phase: AgentPhase::Ready,
                since_ms: 0
            };
            n
        ]
    }

    fn run_until(p: &mut VicidialPacer, agents: &[AgentView], from: u64, to: u64) {
        let mut t = from;
        while t <= to {
            p.launch(&PacingView {
                now_ms: t,
                agents,
                ringing: &[],
                waiting: 0,
                line_headroom: 0,
            });
            t += 1000;
        }
    }

    #[test]
    fn rises_while_agents_idle_then_launches_by_level() {
        let mut p = VicidialPacer::new(&VicidialConfig::default());
        let a = ready_agents(10);
        run_until(&mut p, &a, 0, 15_000);
        // All idle: d = 1 → L doubles, clamped at 3? 1·(1+1) = 2.
        assert!((p.level() - 2.0).abs() < 1e-12);
        let n = p.launch(&PacingView {
            now_ms: 15_500,
            agents: &a,
            ringing: &[],
            waiting: 0,
            line_headroom: 100,
        });
        assert_eq!(n, 20);
        run_until(&mut p, &a, 16_000, 30_000);
        assert_eq!(p.level(), 3.0);
    }

    fn feed_drops(p: &mut VicidialPacer, at: u64, calls: u32, live: u32, drops: u32) {
        for i in 0..calls {
            if i < live {
                p.observe(&Feedback::Answered {
                    at_ms: at,
                    ring_ms: 1000,
                    live: true,
                });
            } else {
                p.observe(&Feedback::Failed {
                    at_ms: at,
                    after_ms: 1000,
                });
            }
        }
        for _ in 0..drops {
            p.observe(&Feedback::Abandoned { at_ms: at });
        }
    }

    #[test]
    fn one_minute_guard_halves() {
        let mut p = VicidialPacer::new(&VicidialConfig {
            initial_level: 3.0,
            dropped_percentage: 100.0,
            ..VicidialConfig::default()
        });
        let a = ready_agents(0);
        feed_drops(&mut p, 500, 25, 10, 6);
        // First launch computes stats (25 calls, 60 % drops) and starts the 15 s clock.
        run_until(&mut p, &a, 1000, 16_000);
        // No agents: level step skipped, guard halves 3 → 1.5.
        assert!((p.level() - 1.5).abs() < 1e-12);
    }

    #[test]
    fn since_start_guards_by_method() {
        for (method, expect) in [
            (DropMethod::HardLimit, 1.0),
            (DropMethod::Average, 1.5),
            // 09:00 origin, ~09:00 now, latest 0930: left = 30 → ×0.03, floored at 1.
            (DropMethod::Tapered, 1.0),
        ] {
            let mut p = VicidialPacer::new(&VicidialConfig {
                initial_level: 3.0,
                method,
                clock_origin_hhmm: 900,
                latest_hhmm: 930,
                ..VicidialConfig::default()
            });
            feed_drops(&mut p, 500, 60, 40, 2); // 60 calls, 5 % > 3 %, 1-min % < 50
            run_until(&mut p, &[], 1000, 16_000);
            assert!((p.level() - expect).abs() < 1e-12, "{method:?}");
        }
        // Tapered with 10 h left does nothing.
        let mut p = VicidialPacer::new(&VicidialConfig {
            initial_level: 3.0,
            method: DropMethod::Tapered,
            clock_origin_hhmm: 900,
            latest_hhmm: 2100,
            ..VicidialConfig::default()
        });
        feed_drops(&mut p, 500, 60, 40, 2);
        run_until(&mut p, &[], 1000, 16_000);
        assert!((p.level() - 3.0).abs() < 1e-12);
        // 19:59 with latest 21:00: HHMM difference 141 → ×0.141 (§1.1(b)'s quirk).
        assert_eq!(p.hhmm(((19 - 9) * 60 + 59) * 60_000), 1959);
    }

    #[test]
    fn validate_names_keys() {
        let c = VicidialConfig {
            max_level: 11.0,
            ..VicidialConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "max_level");
        let c = VicidialConfig {
            latest_hhmm: 2170,
            ..VicidialConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "latest_hhmm");
        assert!(VicidialConfig::default().validate().is_ok());
    }
}
