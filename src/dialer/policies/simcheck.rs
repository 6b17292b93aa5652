//! A crude time-stepped check of the policies in predictive-dialing.md §4.2 S2 (20 agents,
//! p_live 0.30 / machine 0.15 / busy 0.10, ring lognormal mean 10 s CV 0.5, RNA 26 s, talk
//! lognormal 180 s CV 1, wrap 30 s CV 0.5, perfect AMD, abandon at 2 s). Not the simulator
//! (another module's job): a sanity check that the predictive policy over-dials enough to beat
//! progressive on occupancy while keeping abandons near target.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::dialer::pacing::{AgentView, Feedback, RingingCall};

fn lognormal(rng: &mut StdRng, mean: f64, cv: f64) -> f64 {
    let s2 = (1.0 + cv * cv).ln();
    let mu = mean.ln() - 0.5 * s2;
    let u1: f64 = rng.gen_range(1e-12..1.0);
    let u2: f64 = rng.gen();
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (mu + s2.sqrt() * z).exp()
}

#[derive(Clone, Copy)]
enum Fate {
    Live(u64),
    Machine(u64),
    Fail(u64),
}

pub(crate) struct Report {
    pub live: u64,
    pub abandons: u64,
    pub occupancy: f64,
}

/// Runs `hours` of S2 with `agents_n` agents; decisions every 500 ms.
pub(crate) fn run(
    cfg: &PacerConfig,
    agents_n: usize,
    p_live: f64,
    hours: u64,
    seed: u64,
) -> Report {
    run_shock(cfg, agents_n, p_live, hours, seed, false)
}

/// With `shock`, §4.2 S7 compressed: p_live 0.15 → 0.40 after 1 h, and every agent past the
/// 8th goes on break (Paused) from 2 h on.
pub(crate) fn run_shock(
    cfg: &PacerConfig,
    agents_n: usize,
    p_live: f64,
    hours: u64,
    seed: u64,
    shock: bool,
) -> Report {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut p = cfg.build();
    let step = 500u64;
    let end = hours * 3_600_000;
    // (view, phase end ms, talk ms of the current call)
    let mut agents: Vec<(AgentView, u64, u64)> = (0..agents_n)
        .map(|_| {
            (
                AgentView {
                    phase: AgentPhase::Ready,
                    since_ms: 0,
                },
                0,
                0,
            )
        })
        .collect();
    let mut calls: Vec<(u64, Fate)> = Vec::new();
    let mut waiting: Vec<u64> = Vec::new();
    let (mut live, mut abandons, mut busy_ms, mut signed_ms) = (0u64, 0u64, 0u64, 0u64);
    let mut now = 0;
    while now < end {
        // Resolve calls.
        let mut i = 0;
        while i < calls.len() {
            let (dialed, fate) = calls[i];
            let at = match fate {
                Fate::Live(d) | Fate::Machine(d) | Fate::Fail(d) => dialed + d,
            };
            if at <= now {
                match fate {
                    Fate::Live(d) => {
                        p.observe(&Feedback::Answered {
                            at_ms: at,
                            ring_ms: d,
                            live: true,
                        });
                        live += 1;
                        waiting.push(at);
                    }
                    Fate::Machine(d) => p.observe(&Feedback::Answered {
                        at_ms: at,
                        ring_ms: d,
                        live: false,
                    }),
                    Fate::Fail(d) => p.observe(&Feedback::Failed {
                        at_ms: at,
                        after_ms: d,
                    }),
                }
                calls.swap_remove(i);
            } else {
                i += 1;
            }
        }
        // Agents' phase ends.
        for a in agents.iter_mut() {
            if a.1 <= now {
                match a.0.phase {
                    AgentPhase::Talking => {
                        a.0 = AgentView {
                            phase: AgentPhase::WrapUp,
                            since_ms: a.1,
                        };
                        a.1 += (lognormal(&mut rng, 30.0, 0.5) * 1000.0) as u64;
                    }
                    AgentPhase::WrapUp => {
                        p.observe(&Feedback::HandleDone {
                            at_ms: a.1,
                            talk_ms: a.2,
                            wrap_ms: a.1 - a.0.since_ms,
                        });
                        a.0 = AgentView {
                            phase: AgentPhase::Ready,
                            since_ms: a.1,
                        };
                    }
                    _ => {}
                }
            }
        }
        let p_live = if shock && now >= 3_600_000 {
            0.40
        } else {
            p_live
        };
        if shock && now >= 7_200_000 {
            for a in agents.iter_mut().skip(8) {
                if a.0.phase == AgentPhase::Ready {
                    a.0 = AgentView {
                        phase: AgentPhase::Paused,
                        since_ms: now,
                    };
                    a.1 = u64::MAX;
                }
            }
        }
        // Abandons, then bridging FIFO.
        waiting.retain(|&at| {
            if now - at > 2000 {
                p.observe(&Feedback::Abandoned { at_ms: at + 2000 });
                abandons += 1;
                false
            } else {
                true
            }
        });
        for a in agents.iter_mut() {
            if waiting.is_empty() {
                break;
            }
            if a.0.phase == AgentPhase::Ready {
                let at = waiting.remove(0);
                p.observe(&Feedback::Connected {
                    at_ms: now,
                    wait_ms: now - at,
                });
                let talk = (lognormal(&mut rng, 180.0, 1.0) * 1000.0) as u64;
                a.0 = AgentView {
                    phase: AgentPhase::Talking,
                    since_ms: now,
                };
                a.1 = now + talk;
                a.2 = talk;
            }
        }
        for a in &agents {
            match a.0.phase {
                AgentPhase::Talking | AgentPhase::WrapUp => {
                    busy_ms += step;
                    signed_ms += step;
                }
                AgentPhase::Ready => signed_ms += step,
                AgentPhase::Paused => {}
            }
        }
        let views: Vec<AgentView> = agents.iter().map(|a| a.0).collect();
        let ringing: Vec<RingingCall> = calls
            .iter()
            .map(|c| RingingCall { dialed_ms: c.0 })
            .collect();
        let n = p.launch(&PacingView {
            now_ms: now,
            agents: &views,
            ringing: &ringing,
            waiting: waiting.len() as u32,
            line_headroom: (3 * agents_n).saturating_sub(calls.len()) as u32,
        });
        for _ in 0..n {
            let u: f64 = rng.gen();
            let ring = (lognormal(&mut rng, 10.0, 0.5) * 1000.0) as u64;
            let fate = if u < p_live && ring < 26_000 {
                Fate::Live(ring)
            } else if u < p_live + 0.15 && ring < 26_000 {
                Fate::Machine(ring)
            } else if u < p_live + 0.25 {
                Fate::Fail(5000)
            } else {
                Fate::Fail(26_000)
            };
            calls.push((now, fate));
        }
        now += step;
    }
    Report {
        live,
        abandons,
        occupancy: busy_ms as f64 / signed_ms.max(1) as f64,
    }
}

#[test]
#[ignore = "slow in debug builds; run with --ignored --nocapture to see the figures"]
fn predictive_beats_progressive_in_s2() {
    for (agents, p_live) in [(20, 0.30), (10, 0.30), (5, 0.30), (20, 0.15)] {
        let prog = run(
            &PacerConfig::Progressive(ProgressiveConfig::default()),
            agents,
            p_live,
            4,
            7,
        );
        let pred = run(
            &PacerConfig::Predictive(PredictiveConfig::default()),
            agents,
            p_live,
            4,
            7,
        );
        let rate = |r: &Report| r.abandons as f64 / r.live.max(1) as f64;
        println!(
            "N={agents} p={p_live}: progressive occ {:.3} aband {:.4} ({} live); predictive occ {:.3} aband {:.4} ({} live)",
            prog.occupancy,
            rate(&prog),
            prog.live,
            pred.occupancy,
            rate(&pred),
            pred.live
        );
        assert!(pred.occupancy >= prog.occupancy - 0.01);
        assert!(rate(&pred) < 0.045);
    }
    let prog = run_shock(
        &PacerConfig::Progressive(ProgressiveConfig::default()),
        20,
        0.15,
        3,
        7,
        true,
    );
    let pred = run_shock(
        &PacerConfig::Predictive(PredictiveConfig::default()),
        20,
        0.15,
        3,
        7,
        true,
    );
    let rate = |r: &Report| r.abandons as f64 / r.live.max(1) as f64;
    println!(
        "S7-like shocks: progressive occ {:.3} aband {:.4}; predictive occ {:.3} aband {:.4}",
        prog.occupancy,
        rate(&prog),
        pred.occupancy,
        rate(&pred)
    );
    assert!(rate(&pred) < 0.045);
}
