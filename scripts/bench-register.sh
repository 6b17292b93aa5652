#!/usr/bin/env bash
# Side-by-side authenticated-REGISTER benchmark: Kamailio 5.6 vs gridedge, same SIPp load.
#
#   scripts/bench-register.sh            # both servers, defaults below
#   BENCH_RATE=4000 BENCH_CALLS=40000 scripts/bench-register.sh
#   BENCH_SERVERS=kamailio scripts/bench-register.sh   # only one side
#
# For each server, in one run:
#   1. start it pinned to CPU 0 (Kamailio: children=1; gridedge: GRIDEDGE_WORKER_THREADS=1),
#      wait for readiness with real round trips (never a fixed sleep);
#   2. record its memory, then drive BENCH_CALLS REGISTER->401->REGISTER(auth)->200 "calls" from
#      SIPp pinned to CPU 1 at BENCH_RATE/s over distinct users, recording the server's CPU
#      seconds (utime+stime from /proc/PID/stat, summed over all of its processes);
#   3. register the remaining users (up to BENCH_USERS distinct bindings) and record memory again:
#      memory growth / bindings = bytes per binding (gridedge: VmRSS of the one process;
#      Kamailio: sum of Pss over its processes, because its bindings live in shared memory that
#      every process maps, so summing RSS would count them once per process).
# Latency, two sources:
#   * SIPp's rtd timers ("challenge" = REGISTER->401, "register" = REGISTER(auth)->200), dumped
#     per call with -trace_rtt. SIPp 3.6.1 stamps them with its millisecond scheduler clock
#     (clock_tick), so on loopback they are quantised (0, 4, 8 ms...): p50 "0" means "below
#     SIPp's resolution". (The stat file's ResponseTime columns are averages with the same
#     resolution, so the per-call dump is used for percentiles.)
#   * scripts/bench/latency_probe.py (python3, stdlib only): one extra UDP client doing the same
#     REGISTER dance sequentially at BENCH_PROBE_RATE/s *during* the SIPp load, timed with
#     perf_counter_ns: microsecond p50/p99 under load. Its registrations are added to the
#     successful count used for "per CPU-second" (the server did that work too).
#
# Environment knobs (defaults in brackets):
#   BENCH_RATE [8000]  BENCH_CALLS [80000]  BENCH_USERS [100000]  BENCH_SERVERS ["kamailio gridedge"]
#   BENCH_KAM_PORT [5070]  BENCH_SERVER_CPU [0]  BENCH_SIPP_CPU [1]  BENCH_SKIP_BUILD [0]
#   BENCH_KEEP [0] (keep the work dir)  BENCH_NCFLAG [0] (Kamailio nonce_count)
#   BENCH_PROBE_RATE [100] (latency probe registrations/s; 0 disables the probe)
#   BENCH_KAM_SHM_MB [512] (Kamailio shared memory: its 64 MB default runs out near 50k bindings)
#   BENCH_QUIET_PCT [25] BENCH_QUIET_WAIT [180]: before each measured run, wait (up to
#     QUIET_WAIT s) until the rest of the machine uses < QUIET_PCT % of one CPU; the machine's
#     total busy CPU during each run is printed so disturbed runs are visible.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR="$ROOT/scripts/bench"
RATE=${BENCH_RATE:-8000}
CALLS=${BENCH_CALLS:-80000}
USERS=${BENCH_USERS:-100000}
SERVERS=${BENCH_SERVERS:-"kamailio gridedge"}
KAM_PORT=${BENCH_KAM_PORT:-5070}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
SIPP_CPU=${BENCH_SIPP_CPU:-1}
NCFLAG=${BENCH_NCFLAG:-0}
PROBE_RATE=${BENCH_PROBE_RATE:-100}
if (( PROBE_RATE > 0 )) && ! command -v python3 >/dev/null 2>&1; then
  echo "bench: python3 not found, latency probe disabled" >&2
  PROBE_RATE=0
fi
CLK_TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d /tmp/gridedge-bench.XXXXXX)
GRIDEDGE_BIN="$ROOT/target/release/gridedge"

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup of our own processes
PIDS_TO_KILL=()
cleanup() {
  local rc=$?
  local pid
  for pid in "${PIDS_TO_KILL[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${PIDS_TO_KILL[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ "${BENCH_KEEP:-0}" == 1 || $rc -ne 0 ]]; then
    log "work dir kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() {
  local victim=$1 p out=()
  for p in "${PIDS_TO_KILL[@]}"; do [[ $p == "$victim" ]] || out+=("$p"); done
  PIDS_TO_KILL=("${out[@]}")
}

# ---------------------------------------------------------------- prerequisites
command -v sipp >/dev/null 2>&1 || "$ROOT/scripts/install-test-deps.sh"
if [[ " $SERVERS " == *" kamailio "* ]] && ! command -v kamailio >/dev/null 2>&1 && [[ ! -x /usr/sbin/kamailio ]]; then
  "$ROOT/scripts/install-test-deps.sh" --bench
fi
KAMAILIO=$(command -v kamailio || echo /usr/sbin/kamailio)
command -v taskset >/dev/null 2>&1 || die "taskset (util-linux) is required"
if [[ " $SERVERS " == *" gridedge "* && "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release --bin gridedge)
fi
if [[ " $SERVERS " == *" gridedge "* && ! -x "$GRIDEDGE_BIN" ]]; then
  die "$GRIDEDGE_BIN missing (build failed?)"
fi
(( CALLS > 0 && USERS > 0 && RATE > 0 )) || die "BENCH_RATE/CALLS/USERS must be positive"

# ---------------------------------------------------------------- inputs
# users_a: the throughput run (CALLS calls; distinct users while CALLS <= USERS, SIPp wraps
# around SEQUENTIAL files otherwise); users_b: the rest, to reach USERS distinct bindings.
A_USERS=$(( CALLS < USERS ? CALLS : USERS ))
gen_users() { # first count
  awk -v first="$1" -v n="$2" 'BEGIN { print "SEQUENTIAL";
    for (i = first; i < first + n; i++)
      printf "user%d;[authentication username=user%d password=secret];127.0.0.1\n", i, i }'
}
gen_users 0 "$A_USERS" >"$WORK/users_a.csv"
gen_users "$A_USERS" $(( USERS - A_USERS )) >"$WORK/users_b.csv"

# ---------------------------------------------------------------- helpers
proc_tree() { # pid -> pid and its direct children (Kamailio forks one level deep)
  echo "$1"
  ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true
}
cpu_ticks() { # sum of utime+stime over a process tree
  local total=0 pid f
  for pid in $(proc_tree "$1"); do
    [[ -r /proc/$pid/stat ]] || continue
    # fields after the ")" of comm: state is $1, utime $12, stime $13
    f=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
    set -- $f
    total=$(( total + ${12} + ${13} ))
  done
  echo "$total"
}
machine_busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
wait_quiet() { # server -> waits until the machine is (nearly) idle, records what it saw
  local server=$1 deadline=$(( SECONDS + ${BENCH_QUIET_WAIT:-180} )) a b busy
  while :; do
    a=$(machine_busy_ticks); sleep 1; b=$(machine_busy_ticks)
    busy=$(( (b - a) * 100 / CLK_TCK ))
    if (( busy < ${BENCH_QUIET_PCT:-25} )); then
      log "$server: machine quiet (${busy}% of one CPU busy)"
      break
    fi
    if (( SECONDS >= deadline )); then
      log "WARNING: machine still busy (${busy}% of one CPU) - $server results may be disturbed"
      break
    fi
    log "$server: machine busy (${busy}% of one CPU used by other processes), waiting"
  done
  R[$server,busy_before]="${busy}%"
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
pss_kib_tree() {
  local total=0 pid v
  for pid in $(proc_tree "$1"); do
    v=$(awk '/^Pss:/ { print $2; exit }' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
    total=$(( total + ${v:-0} ))
  done
  echo "$total"
}

sipp_ping() { # host:port -> 0 when an OPTIONS gets a 200
  (cd "$WORK" && timeout 5 sipp -sf "$BENCH_DIR/options.xml" -m 1 -nostdin -nd -i 127.0.0.1 \
    -recv_timeout 500 -timeout 2s -timeout_error "$1" >/dev/null 2>&1)
}
wait_sip_ready() { # target pid
  local target=$1 pid=$2 deadline=$(( SECONDS + 30 ))
  until sipp_ping "$target"; do
    kill -0 "$pid" 2>/dev/null || die "server (pid $pid) exited before answering OPTIONS on $target"
    (( SECONDS < deadline )) || die "no 200 to OPTIONS from $target within 30 s"
    sleep 0.2
  done
}

# run_sipp label target csv calls -> runs SIPp, leaves $WORK/label.{out,stat.csv,rtt.csv}
run_sipp() {
  local label=$1 target=$2 csv=$3 calls=$4
  local limit=$(( calls / RATE * 3 + 60 ))
  local dir="$WORK/sipp-$label"
  mkdir -p "$dir"
  log "$label: SIPp -r $RATE -m $calls -> $target (cpu $SIPP_CPU)"
  local rc=0
  (cd "$dir" && taskset -c "$SIPP_CPU" sipp -sf "$BENCH_DIR/reg_auth.xml" -inf "$csv" \
      -i 127.0.0.1 -r "$RATE" -rp 1000 -m "$calls" -nostdin -nd \
      -trace_stat -stf stat.csv -fd 1 -trace_rtt -rtt_freq 1000 \
      -timeout "${limit}s" "$target" >sipp.out 2>&1) || rc=$?
  echo "$rc" >"$dir/rc"
  mv "$dir"/*_rtt.csv "$dir/rtt.csv" 2>/dev/null || : >"$dir/rtt.csv"
}
stat_col() { # dir column-name -> last value of that column in SIPp's stat file
  awk -F';' -v name="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) c = i; next }
    { v = $c } END { print (c ? v : "NA") }' "$1/stat.csv"
}
hms_to_s() { # SIPp's HH:MM:SS or HH:MM:SS:usec -> seconds
  awk -F: '{ s = $1 * 3600 + $2 * 60 + $3; if (NF > 3) s += $4 / 1e6; printf "%.3f", s }' <<<"$1"
}
active_elapsed() { # dir -> seconds until the last successful call (ignores a tail of hung calls)
  awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "ElapsedTime(C)") e = i; if ($i == "SuccessfulCall(C)") s = i }; next }
    { split($e, t, ":"); secs = t[1] * 3600 + t[2] * 60 + t[3]; if ($s != last) { last = $s; at = secs } }
    END { printf "%d", (at > 0 ? at : 1) }' "$1/stat.csv"
}
percentile() { # dir rtd pct -> value in ms
  awk -F';' -v r="$2" 'NR > 1 && $3 == r { print $2 }' "$1/rtt.csv" | sort -n |
    awk -v p="$3" '{ a[NR] = $1 } END { if (NR == 0) { print "NA"; exit }
      i = int(NR * p / 100 + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; print a[i] }'
}

declare -A R # results: R[server,key]

measure() { # server pid target counter-cmd
  local server=$1 pid=$2 target=$3 memfn=$4
  local mem0 mem1 t0 t1 dir
  local probe_pid="" probe_out="$WORK/probe-$server.txt" m0 m1
  wait_quiet "$server"
  mem0=$($memfn "$pid")
  t0=$(cpu_ticks "$pid")
  m0=$(machine_busy_ticks)
  if (( PROBE_RATE > 0 )); then
    # same duration as the SIPp run; pinned next to SIPp, never on the server's CPU
    taskset -c "$SIPP_CPU" python3 "$BENCH_DIR/latency_probe.py" "$target" probe secret \
      "$PROBE_RATE" "$(( (CALLS + RATE - 1) / RATE ))" >"$probe_out" 2>&1 &
    probe_pid=$!
    PIDS_TO_KILL+=("$probe_pid")
  fi
  run_sipp "$server" "$target" "$WORK/users_a.csv" "$CALLS"
  if [[ -n "$probe_pid" ]]; then
    wait "$probe_pid" 2>/dev/null || true
    forget_pid "$probe_pid"
  fi
  t1=$(cpu_ticks "$pid")
  m1=$(machine_busy_ticks)
  kill -0 "$pid" 2>/dev/null || die "$server died during the throughput run"
  R[$server,machine]=$(awk -v t=$(( m1 - m0 )) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
  dir="$WORK/sipp-$server"
  R[$server,ok]=$(stat_col "$dir" "SuccessfulCall(C)")
  R[$server,fail]=$(stat_col "$dir" "FailedCall(C)")
  R[$server,fail_retrans]=$(stat_col "$dir" "FailedMaxUDPRetrans(C)")
  R[$server,fail_unexp]=$(stat_col "$dir" "FailedUnexpectedMessage(C)")
  R[$server,retrans]=$(stat_col "$dir" "Retransmissions(C)")
  R[$server,elapsed]=$(hms_to_s "$(stat_col "$dir" "ElapsedTime(C)")")
  R[$server,cpu]=$(awk -v t=$(( t1 - t0 )) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
  probe_kv() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" "$probe_out" 2>/dev/null | head -1; }
  if [[ -n "$probe_pid" ]]; then
    R[$server,probe_ok]=$(probe_kv ok)
    R[$server,probe_fail]=$(probe_kv fail)
    R[$server,probe_c50]=$(probe_kv challenge_p50_us)
    R[$server,probe_c99]=$(probe_kv challenge_p99_us)
    R[$server,probe_r50]=$(probe_kv register_p50_us)
    R[$server,probe_r99]=$(probe_kv register_p99_us)
    R[$server,probe_rmax]=$(probe_kv register_max_us)
  fi
  R[$server,per_cpu]=$(awk -v ok="${R[$server,ok]}" -v p="${R[$server,probe_ok]:-0}" \
    -v c="${R[$server,cpu]}" 'BEGIN { if (c > 0) printf "%.0f", (ok + p) / c; else print "inf" }')
  R[$server,active]=$(active_elapsed "$dir")
  R[$server,rate]=$(awk -v ok="${R[$server,ok]}" -v e="${R[$server,active]}" \
    'BEGIN { if (e > 0) printf "%.0f", ok / e; else print "NA" }')
  R[$server,util]=$(awk -v c="${R[$server,cpu]}" -v e="${R[$server,elapsed]}" \
    'BEGIN { if (e > 0) printf "%.0f%%", 100 * c / e; else print "NA" }')
  R[$server,p50c]=$(percentile "$dir" challenge 50)
  R[$server,p99c]=$(percentile "$dir" challenge 99)
  R[$server,p50]=$(percentile "$dir" register 50)
  R[$server,p99]=$(percentile "$dir" register 99)
  R[$server,sipp_rc]=$(cat "$dir/rc")
  log "$server: ok=${R[$server,ok]} failed=${R[$server,fail]} retrans=${R[$server,retrans]} cpu=${R[$server,cpu]}s"
  # top up to USERS distinct bindings, then memory
  if (( USERS > A_USERS )); then
    run_sipp "$server-fill" "$target" "$WORK/users_b.csv" $(( USERS - A_USERS ))
    R[$server,fill_fail]=$(stat_col "$WORK/sipp-$server-fill" "FailedCall(C)")
  else
    R[$server,fill_fail]=0
  fi
  mem1=$($memfn "$pid")
  R[$server,mem0]=$mem0
  R[$server,mem1]=$mem1
  R[$server,bpb]=$(awk -v a="$mem0" -v b="$mem1" -v n="$USERS" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')
}

# ---------------------------------------------------------------- Kamailio
run_kamailio() {
  local cfg="$WORK/kamailio.cfg" pid
  sed -e "s/CHILDREN/1/" -e "s/NCFLAG/$NCFLAG/" -e "s/LISTEN_PORT/$KAM_PORT/" \
    "$BENCH_DIR/kamailio.cfg" >"$cfg"
  "$KAMAILIO" -c -f "$cfg" >"$WORK/kamailio-check.log" 2>&1 ||
    { cat "$WORK/kamailio-check.log" >&2; die "kamailio config check failed"; }
  if sipp_ping "127.0.0.1:$KAM_PORT"; then die "something already answers on 127.0.0.1:$KAM_PORT"; fi
  log "kamailio: starting on udp:127.0.0.1:$KAM_PORT (children=1, cpu $SERVER_CPU)"
  # -DD: stay in the foreground (still forking workers) so $! is the main process.
  taskset -c "$SERVER_CPU" "$KAMAILIO" -f "$cfg" -DD -E -w "$WORK" -m "${BENCH_KAM_SHM_MB:-512}" \
    >"$WORK/kamailio.log" 2>&1 &
  pid=$!
  PIDS_TO_KILL+=("$pid")
  wait_sip_ready "127.0.0.1:$KAM_PORT" "$pid"
  R[kamailio,version]=$("$KAMAILIO" -v 2>/dev/null | awk 'NR == 1 { print $3 }')
  measure kamailio "$pid" "127.0.0.1:$KAM_PORT" pss_kib_tree
  R[kamailio,procs]=$(proc_tree "$pid" | wc -l)
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

# ---------------------------------------------------------------- gridedge
gridedge_config() {
  local state=$1
  cat <<EOF
[log]
level = "warn"
format = "text"
[state]
dir = "$state"
[http]
listen = "127.0.0.1:0"
[sip]
realm = "gridedge"
domains = []
udp = ["127.0.0.1:0"]
tcp = []
ws = []
tls = []
wss = []
[sip.auth]
algorithms = ["MD5"]
[sip.guard]
enabled = true
allow = ["127.0.0.1/32"]
EOF
  awk -v n="$USERS" 'BEGIN { for (i = 0; i < n; i++)
    printf "[[extensions]]\nuser = \"user%d\"\npassword = \"secret\"\n", i }
    END { printf "[[extensions]]\nuser = \"probe\"\npassword = \"secret\"\n" }'
}
http_get() { # host:port path -> body; status line on stderr-less failure returns 1
  curl -fsS --max-time 2 "http://$1$2" 2>/dev/null
}
run_gridedge() {
  local state="$WORK/gridedge-state" cfg="$WORK/gridedge.toml" pid deadline lj http udp
  mkdir -p "$state"
  gridedge_config "$state" >"$cfg"
  "$GRIDEDGE_BIN" check-config "$cfg" >"$WORK/gridedge-check.log" 2>&1 ||
    { cat "$WORK/gridedge-check.log" >&2; die "gridedge check-config failed"; }
  log "gridedge: starting (GRIDEDGE_WORKER_THREADS=1, cpu $SERVER_CPU, $USERS extensions)"
  GRIDEDGE_WORKER_THREADS=1 taskset -c "$SERVER_CPU" "$GRIDEDGE_BIN" run --config "$cfg" \
    >"$WORK/gridedge.out" 2>"$WORK/gridedge.err" &
  pid=$!
  PIDS_TO_KILL+=("$pid")
  deadline=$(( SECONDS + 60 ))
  lj="$state/listeners.json"
  until [[ -s "$lj" ]]; do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$WORK/gridedge.err" >&2; die "gridedge exited during startup"; }
    (( SECONDS < deadline )) || die "no $lj within 60 s"
    sleep 0.1
  done
  http=$(tr -d ' \n\t' <"$lj" | sed -n 's/.*"http":"\([^"]*\)".*/\1/p')
  udp=$(tr -d ' \n\t' <"$lj" | sed -n 's/.*"udp":\["\([^"]*\)".*/\1/p')
  [[ -n "$http" && -n "$udp" ]] || die "cannot parse $lj: $(cat "$lj")"
  until http_get "$http" /readyz >/dev/null; do
    kill -0 "$pid" 2>/dev/null || die "gridedge exited before /readyz"
    (( SECONDS < deadline )) || die "/readyz not 200 within 60 s"
    sleep 0.1
  done
  wait_sip_ready "$udp" "$pid"
  measure gridedge "$pid" "$udp" rss_kib
  R[gridedge,bindings]=$(http_get "$http" /metrics | awk '/^gridedge_sip_bindings_active/ { print $2 }' | head -1)
  R[gridedge,threads]=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status")
  log "gridedge: stopping (SIGTERM)"
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

for s in $SERVERS; do
  case $s in
    kamailio) run_kamailio ;;
    gridedge) run_gridedge ;;
    *) die "unknown server '$s' in BENCH_SERVERS" ;;
  esac
done

# ---------------------------------------------------------------- summary
v() { echo "${R[$1,$2]:-n/a}"; }
echo
echo "=== authenticated REGISTER benchmark: rate=$RATE/s calls=$CALLS users=$USERS (server cpu $SERVER_CPU, sipp cpu $SIPP_CPU) ==="
printf '%-38s' "metric"; for s in $SERVERS; do printf '%18s' "$s"; done; echo
row() { # label key [suffix]
  printf '%-38s' "$1"; for s in $SERVERS; do printf '%18s' "$(v "$s" "$2")${3:-}"; done; echo
}
row "successful registrations" ok
row "failed registrations" fail
row "  of which: max UDP retransmissions" fail_retrans
row "  of which: unexpected message" fail_unexp
row "SIPp retransmissions" retrans
row "SIPp exit code (0 = all ok)" sipp_rc
row "elapsed incl. hung-call tail (s)" elapsed
row "until last success (s, 1 s steps)" active
row "achieved registrations/s" rate
row "server CPU seconds" cpu
row "all CPUs busy during run (s, /proc/stat)" machine
row "machine busy just before the run" busy_before
row "server CPU utilisation" util
row "auth registrations per CPU-second" per_cpu
row "REGISTER->401 p50 (ms)" p50c
row "REGISTER->401 p99 (ms)" p99c
row "REGISTER(auth)->200 p50 (ms)" p50
row "REGISTER(auth)->200 p99 (ms)" p99
if (( PROBE_RATE > 0 )); then
  row "probe registrations ok" probe_ok
  row "probe failures" probe_fail
  row "probe REGISTER->401 p50 (us)" probe_c50
  row "probe REGISTER->401 p99 (us)" probe_c99
  row "probe REGISTER(auth)->200 p50 (us)" probe_r50
  row "probe REGISTER(auth)->200 p99 (us)" probe_r99
  row "probe REGISTER(auth)->200 max (us)" probe_rmax
fi
row "memory before (KiB)" mem0
row "memory at $USERS bindings (KiB)" mem1
row "fill-up failures" fill_fail
row "bytes per binding" bpb
if [[ " $SERVERS " == *" gridedge "* ]]; then
  echo "gridedge: bindings_active at the end = $(v gridedge bindings), threads = $(v gridedge threads);" \
    "memory = VmRSS; goal < 1024 bytes per binding"
fi
if [[ " $SERVERS " == *" kamailio "* ]]; then
  echo "kamailio $(v kamailio version): CPU and memory summed over its $(v kamailio procs) processes;" \
    "memory = sum of Pss (bindings live in pre-mapped shared memory)"
fi
if [[ " $SERVERS " == *" kamailio "* && " $SERVERS " == *" gridedge "* ]]; then
  awk -v g="$(v gridedge per_cpu)" -v k="$(v kamailio per_cpu)" 'BEGIN {
    if (k + 0 > 0 && g + 0 > 0) printf "ratio gridedge/kamailio (registrations per CPU-second): %.2f\n", g / k;
    else print "ratio gridedge/kamailio: n/a" }'
fi
echo "latency: (ms) rows = SIPp 3.6.1 rtd timers (per call, -trace_rtt; millisecond scheduler-clock"
echo "  resolution, so 0 = below 1 tick); (us) rows = latency_probe.py at ${PROBE_RATE}/s during the same load."
echo "  'per CPU-second' counts SIPp's and the probe's successful registrations."
