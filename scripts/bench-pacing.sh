#!/usr/bin/env bash
# Pacing benchmark: every reference scenario of predictive-dialing.md §4 (scenarios/*.toml),
# every policy on the same calling list (common random numbers), side by side in one run.
#
#   scripts/bench-pacing.sh                       # all scenarios, 30 replications each
#   BENCH_REPLICATIONS=6 scripts/bench-pacing.sh  # quicker
#   BENCH_POLICIES=progressive,predictive scripts/bench-pacing.sh
#
# Per scenario it prints the simulator's table (occupancy, talk minutes per agent-hour, mean
# agent wait, abandon rate overall / worst hour / 95th-percentile hour, dials and connects per
# agent-hour, peak trunks; mean ± 95 % CI) and writes JSON and an SVG plot of occupancy
# against abandon rate under target/bench-pacing/. Then a summary line per scenario: the
# predictive policy's abandon rate and worst hour against the 3 % / 5 % limits, its occupancy
# against progressive and against the best baseline that also stays at or under 3 %.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=${BENCH_REPLICATIONS:-30}
POLICIES=${BENCH_POLICIES:-progressive,ratio-idle-1.25,ratio-idle-1.5,ratio-idle-2,ratio-idle-2.5,ratio-idle-3,ratio-idle-4,ratio-vici-1.5,vicidial-hard-limit,vicidial-tapered,vicidial-average,erlang,predictive}
OUT="$ROOT/target/bench-pacing"
mkdir -p "$OUT"
cd "$ROOT"
cargo build --release --quiet
BIN="$ROOT/target/release/gridedge"
for sc in scenarios/*.toml; do
  name=$(basename "$sc" .toml)
  echo
  "$BIN" simulate-dialer "$sc" --replications "$REPS" --policies "$POLICIES" \
    --json "$OUT/$name.json" --svg "$OUT/$name.svg"
done
echo
echo "summary (predictive vs limits and baselines; JSON and SVG in $OUT)"
python3 - "$OUT" <<'PY'
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    r = json.loads(f.read_text())
    pols = {p["policy"]: p for p in r.get("policies", [])}
    def m(p, k):
        v = p.get(k)
        return v["mean"] if isinstance(v, dict) else v
    pr = pols.get("predictive")
    if not pr:
        continue
    occ = lambda p: m(p, "occupancy")
    ab = lambda p: m(p, "abandon_rate")
    worst = lambda p: m(p, "abandon_rate_worst_hour")
    ok = [p for n, p in pols.items() if n != "predictive" and ab(p) is not None and ab(p) <= 0.03]
    best = max(ok, key=occ) if ok else None
    prog = pols.get("progressive")
    print(f"{f.stem:<18} predictive occupancy {100*occ(pr):5.1f} %  abandon {100*ab(pr):4.2f} %  worst hour {100*worst(pr):4.1f} %"
          + (f"  | progressive {100*occ(prog):5.1f} %" if prog else "")
          + (f"  | best baseline <=3 %: {best['policy']} {100*occ(best):5.1f} %" if best else ""))
PY
