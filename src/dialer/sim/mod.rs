//! `gridedge simulate-dialer`: the discrete-event benchmark of predictive-dialing.md §4 that
//! compares pacing policies on the same simulated calling list.
//!
//! - [`scenario`]: the TOML scenario format (§4.1 model, §4.2 grid cells).
//! - [`engine`]: one replication; sans-IO pacers driven by a deterministic event queue.
//! - [`report`]: the §4.3 metrics, mean ± 95 % CI, JSON and a text table.
//! - [`plot`]: the occupancy-vs-abandon SVG.
//! - [`baseline`]: the simulator's own reference pacers (§4.4 B0, B1) and the closed form that
//!   validates it.
//!
//! Every policy runs every replication `r` on the same seed, and the engine keys its random
//! streams by attempt and connect index, so policies are compared on common random numbers
//! (§4.3 protocol) and a difference between two rows is the policies', not the dice's.

pub mod baseline;
pub mod engine;
pub mod plot;
pub mod report;
pub mod rng;
pub mod scenario;

use std::path::PathBuf;

use crate::dialer::pacing::Pacer;
use engine::{replication_seed, Engine};
use report::{PolicyReport, RepMetrics, SimReport};
use scenario::Scenario;

/// Builds a fresh pacer; called once per replication so no state leaks between them.
pub type PacerFactory = Box<dyn Fn() -> Box<dyn Pacer>>;

/// Where a run is, for progress output.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    pub policy: &'a str,
    /// Replications finished over all policies, with the running one's simulated-time
    /// fraction (reported every tenth of a shift).
    pub done: f64,
    pub total: u64,
}

/// Most policies one run compares (a CLI-supplied list is user input).
pub const MAX_POLICIES: usize = 64;

/// Runs every policy over the scenario's replications and aggregates the §4.3 metrics.
/// Refuses (without running) a scenario that fails validation or whose total simulated
/// agent-hours exceed [`scenario::MAX_AGENT_HOURS`].
pub fn simulate(
    sc: &Scenario,
    policies: &[(String, PacerFactory)],
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<SimReport, String> {
    sc.validate().map_err(|e| format!("scenario: {e}"))?;
    if policies.is_empty() || policies.len() > MAX_POLICIES {
        return Err(format!(
            "policies: between 1 and {MAX_POLICIES} needed, got {}",
            policies.len()
        ));
    }
    let work =
        sc.replications as f64 * sc.shift_hours * sc.peak_agents() as f64 * policies.len() as f64;
    if work > scenario::MAX_AGENT_HOURS {
        return Err(format!(
            "replications × shift_hours × agents × policies = {work:.0} agent-hours exceeds {}",
            scenario::MAX_AGENT_HOURS
        ));
    }
    let total = sc.replications as u64 * policies.len() as u64;
    let mut done = 0;
    let mut out = Vec::with_capacity(policies.len());
    for (name, make) in policies {
        let mut reps = Vec::with_capacity(sc.replications as usize);
        for r in 0..sc.replications {
            let engine = Engine::new(sc, make(), replication_seed(sc.seed, r), false);
            let stats = engine.run_with_progress(&mut |k| {
                progress(Progress {
                    policy: name,
                    done: done as f64 + k as f64 / 10.0,
                    total,
                })
            });
            reps.push(RepMetrics::from_stats(&stats));
            done += 1;
            progress(Progress {
                policy: name,
                done: done as f64,
                total,
            });
        }
        out.push(PolicyReport::aggregate(name, &reps));
    }
    Ok(SimReport {
        scenario: if sc.name.is_empty() {
            "unnamed".into()
        } else {
            sc.name.clone()
        },
        seed: sc.seed,
        replications: sc.replications,
        shift_hours: sc.shift_hours,
        analytic_progressive_occupancy: baseline::progressive_occupancy(sc),
        policies: out,
    })
}

/// The `simulate-dialer` command line.
#[derive(Debug, Clone, Default)]
pub struct CliArgs {
    pub scenario: PathBuf,
    pub json: Option<PathBuf>,
    pub svg: Option<PathBuf>,
    pub replications: Option<u32>,
    /// Comma-separated policy names; default: the scenario's `policies`, else `progressive`.
    pub policies: Option<String>,
}

/// Scenario files are small; anything bigger is not one.
const MAX_SCENARIO_BYTES: u64 = 1 << 20;

/// Runs `simulate-dialer` and returns the text table for stdout; writes the JSON and SVG
/// when asked, and progress to stderr (every 10 % of the total simulated time, so a single
/// long replication shows progress too). `resolve` turns a
/// policy name into a factory: pass [`baseline::resolve`], or the real policies' resolver
/// falling back to it.
pub fn run_cli(
    args: &CliArgs,
    resolve: &dyn Fn(&str) -> anyhow::Result<PacerFactory>,
) -> anyhow::Result<String> {
    use anyhow::Context;
    let path = &args.scenario;
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > MAX_SCENARIO_BYTES {
        anyhow::bail!("{}: {len} bytes is too big for a scenario", path.display());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut sc =
        Scenario::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if let Some(r) = args.replications {
        sc.replications = r;
    }
    let names: Vec<String> = match &args.policies {
        Some(list) => list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        None if !sc.policies.is_empty() => sc.policies.clone(),
        None => vec!["progressive".into()],
    };
    if names.is_empty() || names.len() > MAX_POLICIES {
        anyhow::bail!("--policies: between 1 and {MAX_POLICIES} names needed");
    }
    let mut policies = Vec::with_capacity(names.len());
    for n in names {
        let f = resolve(&n)?;
        policies.push((n, f));
    }
    let mut last_decile = 0;
    let start = std::time::Instant::now();
    let report = simulate(&sc, &policies, &mut |p| {
        let decile = (p.done * 10.0 / p.total.max(1) as f64).floor() as u64;
        if decile > last_decile {
            last_decile = decile;
            eprintln!(
                "simulate-dialer: {:>3} % ({:.1}/{} replications, policy {}, {:.1} s)",
                decile * 10,
                p.done,
                p.total,
                p.policy,
                start.elapsed().as_secs_f64()
            );
        }
    })
    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut out = report.to_table();
    if let Some(j) = &args.json {
        std::fs::write(j, report.to_json()).with_context(|| format!("writing {}", j.display()))?;
        out.push_str(&format!("JSON: {}\n", j.display()));
    }
    if let Some(s) = &args.svg {
        std::fs::write(s, plot::svg(&report))
            .with_context(|| format!("writing {}", s.display()))?;
        out.push_str(&format!("SVG: {}\n", s.display()));
    }
    Ok(out)
}

/// The policies `simulate-dialer` knows by name: `preview`, `progressive`, `predictive` (and
/// `predictive-A` with an abandon target of A percent),
/// `erlang`, `vicidial-hard-limit`, `vicidial-average`, `vicidial-tapered`, `ratio-idle-K` and
/// `ratio-vici-K` (fixed ratio K per idle agent, or VICIdial's per active agent) are the
/// daemon's own policies (`dialer::policies`); `ref-progressive`, `ref-ratio-idle-K` and
/// `ref-ratio-vici-K` are the simulator's independent reference implementations
/// ([`baseline`]), kept for validation.
///
/// Any daemon policy takes overrides of its settings after a colon, as TOML values:
/// `predictive:min_agents=3;alpha=0.02` (for sweeps; the keys are `PacerConfig`'s; `;` because
/// `--policies` already splits on commas).
pub fn resolve_policy(full: &str) -> anyhow::Result<PacerFactory> {
    if let Some(reference) = full.strip_prefix("ref-") {
        return baseline::resolve(reference);
    }
    let (name, overrides) = full.split_once(':').unwrap_or((full, ""));
    let mut toml = match name {
        "preview" | "progressive" | "predictive" | "erlang" => format!("policy = \"{name}\""),
        "vicidial-hard-limit" | "vicidial-average" | "vicidial-tapered" => format!(
            "policy = \"vicidial\"\nmethod = \"{}\"",
            &name["vicidial-".len()..]
        ),
        _ if name.starts_with("predictive-") => {
            // predictive-A: the predictive policy with an abandon target of A percent.
            let a = &name["predictive-".len()..];
            let a: f64 = a
                .parse()
                .map_err(|_| anyhow::anyhow!("policy `{name}`: `{a}` is not a number"))?;
            format!("policy = \"predictive\"\nalpha = {}", a / 100.0)
        }
        _ => {
            let (per, k) = if let Some(k) = name.strip_prefix("ratio-idle-") {
                ("idle", k)
            } else if let Some(k) = name.strip_prefix("ratio-vici-") {
                ("active", k)
            } else {
                anyhow::bail!(
                    "unknown policy `{name}` (preview, progressive, predictive, erlang, \
                     vicidial-hard-limit, vicidial-average, vicidial-tapered, ratio-idle-K, \
                     ratio-vici-K, or ref-progressive / ref-ratio-idle-K / ref-ratio-vici-K)"
                )
            };
            let k: f64 = k
                .parse()
                .map_err(|_| anyhow::anyhow!("policy `{name}`: `{k}` is not a number"))?;
            format!("policy = \"ratio\"\nratio = {k}\nper = \"{per}\"")
        }
    };
    for kv in overrides.split(';').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("policy `{full}`: `{kv}` is not key=value"))?;
        toml.push_str(&format!("\n{} = {}", k.trim(), v.trim()));
    }
    let name = full;
    let cfg: crate::dialer::policies::PacerConfig =
        toml::from_str(&toml).map_err(|e| anyhow::anyhow!("policy `{name}`: {e}"))?;
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("policy `{name}`: {e}"))?;
    Ok(Box::new(move || cfg.build()))
}
