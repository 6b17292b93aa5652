//! Property tests of every policy over arbitrary views and feedback sequences (issue 6):
//! - never more than `line_headroom`;
//! - never absurd: at most `bound(policy, view)`, which is ⌊max(15, max level, max lines)·active⌋
//!   overall and tighter per policy (progressive and preview ≤ READY; ratio ≤ round(k·active));
//! - zero when no agent is active (all paused or none signed in);
//! - for progressive, ratio per idle agent and predictive: zero when no agent is READY and none
//!   can free up within the horizon (every busy agent entered its phase at `now`, under the
//!   default 180 s talk / 30 s wrap priors, and no feedback has shortened them);
//! - deterministic: the same config, feedback and views give the same launches.

use proptest::prelude::*;

use super::*;
use crate::dialer::pacing::{AgentView, Feedback, RingingCall};

fn phase() -> impl Strategy<Value = AgentPhase> {
    prop_oneof![
        Just(AgentPhase::Ready),
        Just(AgentPhase::Talking),
        Just(AgentPhase::WrapUp),
        Just(AgentPhase::Paused),
    ]
}

fn big_ms() -> impl Strategy<Value = u64> {
    prop_oneof![0..600_000u64, Just(0), Just(u64::MAX), any::<u64>()]
}

fn feedback() -> impl Strategy<Value = Feedback> {
    prop_oneof![
        (big_ms(), big_ms(), any::<bool>()).prop_map(|(at_ms, ring_ms, live)| Feedback::Answered {
            at_ms,
            ring_ms,
            live
        }),
        (big_ms(), big_ms()).prop_map(|(at_ms, after_ms)| Feedback::Failed { at_ms, after_ms }),
        (big_ms(), big_ms()).prop_map(|(at_ms, wait_ms)| Feedback::Connected { at_ms, wait_ms }),
        big_ms().prop_map(|at_ms| Feedback::Abandoned { at_ms }),
        (big_ms(), big_ms(), big_ms()).prop_map(|(at_ms, talk_ms, wrap_ms)| {
            Feedback::HandleDone {
                at_ms,
                talk_ms,
                wrap_ms,
            }
        }),
    ]
}

/// One step: feedback to observe, then a view to decide on (times relative to the step's now).
#[derive(Debug, Clone)]
struct Step {
    advance_ms: u64,
    feedback: Vec<Feedback>,
    agents: Vec<(AgentPhase, u64)>,
    ringing: Vec<u64>,
    waiting: u32,
    headroom: u32,
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop_oneof![0..5_000u64, 0..100_000_000u64],
        prop::collection::vec(feedback(), 0..8),
        prop::collection::vec((phase(), 0..2_000_000u64), 0..25),
        prop::collection::vec(0..200_000u64, 0..40),
        prop_oneof![0..5u32, any::<u32>()],
        prop_oneof![0..100u32, any::<u32>()],
    )
        .prop_map(
            |(advance_ms, feedback, agents, ringing, waiting, headroom)| Step {
                advance_ms,
                feedback,
                agents,
                ringing,
                waiting,
                headroom,
            },
        )
}

fn configs() -> Vec<PacerConfig> {
    vec![
        PacerConfig::Preview(PreviewConfig::default()),
        PacerConfig::Progressive(ProgressiveConfig::default()),
        PacerConfig::Ratio(RatioConfig {
            ratio: 2.5,
            per: RatioSemantics::Idle,
        }),
        PacerConfig::Ratio(RatioConfig {
            ratio: 15.0,
            per: RatioSemantics::Active,
        }),
        PacerConfig::Vicidial(VicidialConfig::default()),
        PacerConfig::Vicidial(VicidialConfig {
            method: DropMethod::Tapered,
            max_level: 10.0,
            intensity: 40.0,
            ..VicidialConfig::default()
        }),
        PacerConfig::Erlang(ErlangConfig::default()),
        PacerConfig::Predictive(PredictiveConfig::default()),
        PacerConfig::Predictive(PredictiveConfig {
            cold_start_outcomes: 0,
            cold_start_handles: 0,
            min_agents: 0,
            normal_above: 10,
            ..PredictiveConfig::default()
        }),
        PacerConfig::Predictive(PredictiveConfig {
            cold_start_outcomes: 0,
            cold_start_handles: 0,
            ..PredictiveConfig::default()
        }),
    ]
}

/// The per-policy "never absurd" bound.
fn bound(cfg: &PacerConfig, t: &Tally) -> u64 {
    let active = u64::from(t.active());
    match cfg {
        PacerConfig::Preview(_) | PacerConfig::Progressive(_) => u64::from(t.ready),
        PacerConfig::Ratio(c) => (c.ratio * active as f64).round() as u64,
        PacerConfig::Vicidial(c) => (c.max_level * active as f64).round() as u64,
        PacerConfig::Erlang(c) => (c.max_lines_per_agent * active as f64).floor() as u64,
        PacerConfig::Predictive(c) => {
            (c.max_lines_per_agent * active as f64).floor() as u64 + u64::from(t.ready)
        }
    }
}

/// Runs the steps; returns the launches.
fn run(cfg: &PacerConfig, steps: &[Step], check: bool) -> Vec<u32> {
    let mut p = cfg.build();
    let mut now = 0u64;
    let mut out = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        now = now.saturating_add(s.advance_ms);
        for f in &s.feedback {
            p.observe(f);
        }
        if i % 3 == 0 {
            p.request(2);
        }
        let agents: Vec<AgentView> = s
            .agents
            .iter()
            .map(|&(phase, ago)| AgentView {
                phase,
                since_ms: now.saturating_sub(ago),
            })
            .collect();
        let ringing: Vec<RingingCall> = s
            .ringing
            .iter()
            .map(|&ago| RingingCall {
                dialed_ms: now.saturating_sub(ago),
            })
            .collect();
        let view = PacingView {
            now_ms: now,
            agents: &agents,
            ringing: &ringing,
            waiting: s.waiting,
            line_headroom: s.headroom,
        };
        let n = p.launch(&view);
        if check {
            let t = Tally::of(&view);
            assert!(
                n <= s.headroom,
                "{}: {n} > headroom {}",
                p.name(),
                s.headroom
            );
            assert!(
                u64::from(n) <= bound(cfg, &t),
                "{}: {n} above bound {} for {t:?}",
                p.name(),
                bound(cfg, &t)
            );
            if t.active() == 0 {
                assert_eq!(n, 0, "{}: launched with no active agent", p.name());
            }
        }
        out.push(n);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn caps_bounds_and_determinism(steps in prop::collection::vec(step(), 1..30)) {
        for cfg in configs() {
            let a = run(&cfg, &steps, true);
            let b = run(&cfg, &steps, false);
            prop_assert_eq!(a, b, "nondeterministic: {:?}", cfg);
        }
    }

    /// Nobody READY, every busy agent just started (elapsed 0), estimates at the default
    /// priors: progressive, ratio-per-idle and predictive launch nothing; with everyone paused,
    /// no policy launches.
    #[test]
    fn zero_when_nobody_frees_within_the_horizon(
        phases in prop::collection::vec(prop_oneof![Just(AgentPhase::Talking), Just(AgentPhase::WrapUp), Just(AgentPhase::Paused)], 0..25),
        ringing in prop::collection::vec(0..60_000u64, 0..40),
        waiting in 0..5u32,
        headroom in 0..200u32,
        now in 100_000..10_000_000u64,
        outcomes in prop::collection::vec(any::<bool>(), 0..120),
    ) {
        let agents: Vec<AgentView> = phases.iter().map(|&phase| AgentView { phase, since_ms: now }).collect();
        let ringing: Vec<RingingCall> = ringing.iter().map(|&a| RingingCall { dialed_ms: now - a }).collect();
        let view = PacingView { now_ms: now, agents: &agents, ringing: &ringing, waiting, line_headroom: headroom };
        for cfg in [
            PacerConfig::Progressive(ProgressiveConfig::default()),
            PacerConfig::Ratio(RatioConfig { ratio: 3.0, per: RatioSemantics::Idle }),
            PacerConfig::Predictive(PredictiveConfig::default()),
            PacerConfig::Predictive(PredictiveConfig { cold_start_outcomes: 0, cold_start_handles: 0, min_agents: 0, ..PredictiveConfig::default() }),
        ] {
            let mut p = cfg.build();
            for (i, &live) in outcomes.iter().enumerate() {
                let at_ms = i as u64 * 100;
                if live {
                    p.observe(&Feedback::Answered { at_ms, ring_ms: 9_000, live: true });
                } else {
                    p.observe(&Feedback::Failed { at_ms, after_ms: 26_000 });
                }
            }
            prop_assert_eq!(p.launch(&view), 0, "{}", p.name());
        }
        if phases.iter().all(|&p| p == AgentPhase::Paused) {
            for cfg in configs() {
                let mut p = cfg.build();
                p.request(3);
                prop_assert_eq!(p.launch(&view), 0, "{}", p.name());
            }
        }
    }
}

#[test]
fn config_parses_tagged_and_refuses_unknown_keys() {
    let c: PacerConfig =
        toml::from_str("policy = \"ratio\"\nratio = 2.0\nper = \"active\"\n").unwrap();
    assert_eq!(
        c,
        PacerConfig::Ratio(RatioConfig {
            ratio: 2.0,
            per: RatioSemantics::Active
        })
    );
    assert!(c.validate().is_ok());
    assert_eq!(c.build().name(), "ratio-active-2");
    let c: PacerConfig = toml::from_str("policy = \"predictive\"\nalpha = 0.01\n").unwrap();
    assert!(c.validate().is_ok());
    assert!(toml::from_str::<PacerConfig>("policy = \"predictive\"\nalpah = 0.01\n").is_err());
    assert!(toml::from_str::<PacerConfig>("policy = \"nope\"\n").is_err());
    let c: PacerConfig = toml::from_str("policy = \"vicidial\"\nmax_level = 12.0\n").unwrap();
    let e = c.validate().unwrap_err();
    assert_eq!(e.key, "max_level");
    assert!(e.to_string().contains("pacing.max_level"));
    for name in ["preview", "progressive", "erlang"] {
        let c: PacerConfig = toml::from_str(&format!("policy = \"{name}\"\n")).unwrap();
        assert!(c.validate().is_ok());
        assert!(c.build().name().starts_with(name));
    }
}
