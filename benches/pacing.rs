//! One pacing decision of each policy (issue 6: "one pacing decision under 5 µs"), with 20
//! agents in mixed phases (4 READY, 10 talking, 4 in wrap-up, 2 paused) and 30 calls ringing,
//! after warm-up feedback (300 dial outcomes, 30 finished handles) so the predictive policy is
//! past cold start and uses its model (exact Poisson-binomial convolution at 20 agents).
//!
//! `predictive-refresh` is the predictive policy's worst case: every iteration brings new
//! feedback and `refresh_ms = 0`, so the decision also rebuilds its distribution tables (by
//! default that happens at most once per 5 s of clock).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gridedge::dialer::pacing::{AgentPhase, AgentView, Feedback, Pacer, PacingView, RingingCall};
use gridedge::dialer::policies::predictive::Mode;
use gridedge::dialer::policies::{
    DropMethod, ErlangConfig, PacerConfig, PredictiveConfig, PredictivePacer, PreviewConfig,
    ProgressiveConfig, RatioConfig, RatioSemantics, VicidialConfig,
};

const NOW: u64 = 3_600_000;

fn agents() -> Vec<AgentView> {
    let mut v = Vec::new();
    for i in 0..20u64 {
        let phase = match i {
            0..=3 => AgentPhase::Ready,
            4..=13 => AgentPhase::Talking,
            14..=17 => AgentPhase::WrapUp,
            _ => AgentPhase::Paused,
        };
        v.push(AgentView {
            phase,
            since_ms: NOW - i * 17_000 % 400_000,
        });
    }
    v
}

fn ringing() -> Vec<RingingCall> {
    (0..30u64)
        .map(|i| RingingCall {
            dialed_ms: NOW - i * 1000,
        })
        .collect()
}

fn warm(p: &mut dyn Pacer) {
    let mut t = NOW - 600_000;
    for i in 0..300u64 {
        t += 1000;
        let f = match i % 10 {
            0..=2 => Feedback::Answered {
                at_ms: t,
                ring_ms: 6_000 + (i % 7) * 1000,
                live: true,
            },
            3 => Feedback::Answered {
                at_ms: t,
                ring_ms: 9_000,
                live: false,
            },
            4 => Feedback::Failed {
                at_ms: t,
                after_ms: 5_000,
            },
            _ => Feedback::Failed {
                at_ms: t,
                after_ms: 26_000,
            },
        };
        p.observe(&f);
    }
    for i in 0..30u64 {
        p.observe(&Feedback::HandleDone {
            at_ms: t,
            talk_ms: 60_000 + i * 8_000,
            wrap_ms: 20_000 + i * 500,
        });
    }
}

fn bench(c: &mut Criterion) {
    let a = agents();
    let r = ringing();
    let view = PacingView {
        now_ms: NOW,
        agents: &a,
        ringing: &r,
        waiting: 1,
        line_headroom: 100,
    };
    let policies = [
        PacerConfig::Preview(PreviewConfig::default()),
        PacerConfig::Progressive(ProgressiveConfig::default()),
        PacerConfig::Ratio(RatioConfig {
            ratio: 2.0,
            per: RatioSemantics::Idle,
        }),
        PacerConfig::Ratio(RatioConfig {
            ratio: 2.0,
            per: RatioSemantics::Active,
        }),
        PacerConfig::Vicidial(VicidialConfig {
            method: DropMethod::Tapered,
            ..VicidialConfig::default()
        }),
        PacerConfig::Erlang(ErlangConfig::default()),
        PacerConfig::Predictive(PredictiveConfig::default()),
    ];
    let mut g = c.benchmark_group("pacing");
    for cfg in &policies {
        let mut p = cfg.build();
        warm(p.as_mut());
        p.launch(&view);
        let name = p.name();
        g.bench_function(name, |b| b.iter(|| black_box(p.launch(black_box(&view)))));
    }
    // The predictive figure above is the model's, not a fallback's.
    let mut check = PredictivePacer::new(&PredictiveConfig::default());
    warm(&mut check);
    check.launch(&view);
    assert_eq!(check.mode(), Mode::Model);
    // refresh_ms = 0: every decision after new feedback rebuilds the tables.
    let mut p = PacerConfig::Predictive(PredictiveConfig {
        refresh_ms: 0,
        ..PredictiveConfig::default()
    })
    .build();
    warm(p.as_mut());
    g.bench_function("predictive-refresh", |b| {
        b.iter(|| {
            p.observe(&Feedback::Answered {
                at_ms: NOW,
                ring_ms: 8_000,
                live: true,
            });
            black_box(p.launch(black_box(&view)))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
