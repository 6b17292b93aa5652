#!/usr/bin/env bash
# Outbox throughput and latency, side by side in one run (this machine is shared and noisy:
# compare the ratios, not the absolute numbers).
#
#   scripts/bench-outbox.sh
#   BENCH_RECORDS=200000 BENCH_RATE=1000 BENCH_SECS=20 scripts/bench-outbox.sh
#
# Runs examples/outbox_load.rs (release) four ways, each against a local HTTP sink on its own
# thread that answers the grid's {"code":"200"} envelope:
#   raw        the same POSTs with the same concurrency, no outbox and no disk: the ceiling
#              this machine's loopback HTTP allows;
#   sustained  durable enqueue (SQLite WAL, synchronous=FULL, group commit) and delivery of
#              BENCH_RECORDS CDR-sized records by 256 concurrent producers, each waiting for
#              its commit; records/s = records / time until the sink has them all;
#   no-group   the same with commit_max_batch=1 (one fsync per record), BENCH_RECORDS/10
#              records: what group commit buys;
#   latency    BENCH_RATE records/s for BENCH_SECS s: enqueue-call-to-sink-arrival p50/p99.
# Goals (issue 5): sustained >= 20,000 records/s; p99 < 50 ms at 1,000 records/s.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RECORDS=${BENCH_RECORDS:-100000}
RATE=${BENCH_RATE:-1000}
SECS=${BENCH_SECS:-10}
CONCURRENCY=${BENCH_CONCURRENCY:-64}
cd "$ROOT"
echo "[bench-outbox] building (release)" >&2
cargo build --release --example outbox_load >&2
BIN="$ROOT/target/release/examples/outbox_load"
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

echo "[bench-outbox] raw HTTP ceiling ($RECORDS records)" >&2
RAW=$("$BIN" raw --records "$RECORDS" --concurrency "$CONCURRENCY")
echo "[bench-outbox] outbox, group commit ($RECORDS records)" >&2
SUS=$("$BIN" sustained --records "$RECORDS" --concurrency "$CONCURRENCY")
NG_RECORDS=$(( RECORDS / 10 ))
echo "[bench-outbox] outbox, one commit per record ($NG_RECORDS records)" >&2
NOG=$("$BIN" sustained --records "$NG_RECORDS" --commit-batch 1 --concurrency "$CONCURRENCY")
echo "[bench-outbox] latency at $RATE records/s for $SECS s" >&2
LAT=$("$BIN" latency --rate "$RATE" --secs "$SECS" --concurrency "$CONCURRENCY")

printf '%s\n%s\n%s\n%s\n' "$RAW" "$SUS" "$NOG" "$LAT"
python3 - "$RAW" "$SUS" "$NOG" "$LAT" <<'PY'
import json, sys
raw, sus, nog, lat = (json.loads(a) for a in sys.argv[1:5])
print()
print(f"{'run':<34}{'records/s':>12}")
print(f"{'raw HTTP, no outbox (ceiling)':<34}{raw['records_per_sec']:>12,.0f}")
print(f"{'outbox, group commit':<34}{sus['records_per_sec']:>12,.0f}")
print(f"{'outbox, one commit per record':<34}{nog['records_per_sec']:>12,.0f}")
print()
print(f"outbox / ceiling          {sus['records_per_sec'] / raw['records_per_sec']:.2f}")
print(f"group commit / per-record {sus['records_per_sec'] / nog['records_per_sec']:.1f}x")
print(f"latency at {lat['rate']}/s: p50 {lat['p50_ms']:.2f} ms, p90 {lat['p90_ms']:.2f} ms, "
      f"p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms over {lat['records']} records")
ok_rate = sus['records_per_sec'] >= 20000
ok_p99 = lat['p99_ms'] < 50
print(f"goal 20,000 records/s: {'met' if ok_rate else 'NOT met'}; goal p99 < 50 ms: {'met' if ok_p99 else 'NOT met'}")
PY
