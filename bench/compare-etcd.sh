#!/usr/bin/env bash
# compare-etcd.sh — Berth and etcd side by side on this machine, in one run.
#
# Starts a 3-member Berth cluster (target/release/berth, built here) and a 3-member etcd cluster
# (Debian's etcd-server, installed here if `etcd` is missing) on loopback, runs the same
# `berth bench` workloads against each, alternating which goes first, and prints a markdown table
# of both results and the ratio Berth/etcd, next to the targets of issue 5.
#
# Durability is comparable: etcd fsyncs its WAL before acknowledging (its default; 3.4 has no
# switch to turn that off) and Berth acknowledges a write only once a quorum has fsynced it.
# Both run with their default snapshot settings.
#
# Usage: bench/compare-etcd.sh [--full]
#   --full   also load 1,000,000 keys of 256 B into each cluster, then report each member's
#            resident memory, data dir size, the time a restarted member takes to serve and
#            its resident memory then.
#            Takes many minutes; without it the run takes a few.
# Every workload runs ROUNDS times on each cluster (alternating which goes first) and the table
# shows the median of each number over the rounds, so that one noisy round on a shared machine
# does not decide a ratio.
# Environment: ROUNDS (default 3), PUT_TOTAL, PUT1_TOTAL, RANGE_TOTAL, WATCH_TOTAL, WATCH1_TOTAL
#   (operations per workload),
#   LOAD_TOTAL (keys loaded by --full), BERTH_PORT, ETCD_PORT (first client port of each
#   cluster; member i uses PORT+10*i for clients and PORT+10*i+1 for peers), KEEP=1 (keep the
#   temporary directory with the logs and JSON reports).
set -euo pipefail

FULL=0
for arg in "$@"; do
  case "$arg" in
    --full) FULL=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "compare-etcd.sh: unknown argument $arg (see --help)" >&2
      exit 2
      ;;
  esac
done

ROUNDS=${ROUNDS:-3}
PUT_TOTAL=${PUT_TOTAL:-20000}
PUT1_TOTAL=${PUT1_TOTAL:-2000}
RANGE_TOTAL=${RANGE_TOTAL:-20000}
WATCH_TOTAL=${WATCH_TOTAL:-10000}
WATCH1_TOTAL=${WATCH1_TOTAL:-2000}
LOAD_TOTAL=${LOAD_TOTAL:-1000000}
# High fixed ports below Linux's ephemeral range (32768+), so outgoing connections of other
# programs do not take them; checked to be free before anything starts.
BERTH_PORT=${BERTH_PORT:-23790}
ETCD_PORT=${ETCD_PORT:-24790}
# How long a member may take to serve after (re)start. Restarting with 1M keys is the slow case.
SERVE_DEADLINE_S=120

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BERTH="$ROOT/target/release/berth"
WORK=$(mktemp -d -t berth-vs-etcd.XXXXXX)
mkdir -p "$WORK/results"

# Every server process this script started, by "kind index" (e.g. "berth 0"), so that the exit
# trap kills exactly those and a restart can find the one to stop.
declare -A PIDS=()

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for key in "${!PIDS[@]}"; do
    kill -TERM "${PIDS[$key]}" 2>/dev/null || true
  done
  # A clean stop flushes; give it a few seconds, then make sure.
  for _ in $(seq 50); do
    local alive=0
    for key in "${!PIDS[@]}"; do
      kill -0 "${PIDS[$key]}" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for key in "${!PIDS[@]}"; do
    kill -KILL "${PIDS[$key]}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then
    echo "kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { echo "== $*" >&2; }
die() {
  echo "compare-etcd.sh: $*" >&2
  exit 1
}

install_missing() {
  local missing=()
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v jq >/dev/null || missing+=(jq)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    # The package may try to start a system etcd on 2379; that does not collide with our ports.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

check_ports_free() {
  local port
  for port in "$@"; do
    if [ -n "$(ss -Hltn "sport = :$port")" ]; then
      die "port $port is in use; set BERTH_PORT / ETCD_PORT to other values"
    fi
  done
}

client_port() { echo $(($2 + 10 * $1)); }
peer_port() { echo $(($2 + 10 * $1 + 1)); }
base_port() { if [ "$1" = berth ]; then echo "$BERTH_PORT"; else echo "$ETCD_PORT"; fi; }
data_dir() { echo "$WORK/$1/m$2"; }

endpoints() {
  local kind=$1 base i out=""
  base=$(base_port "$kind")
  for i in 0 1 2; do out+="${out:+,}http://127.0.0.1:$(client_port "$i" "$base")"; done
  echo "$out"
}

initial_cluster() {
  local kind=$1 base i out=""
  base=$(base_port "$kind")
  for i in 0 1 2; do out+="${out:+,}m$i=http://127.0.0.1:$(peer_port "$i" "$base")"; done
  echo "$out"
}

# start KIND I: starts member I of cluster KIND in the background (its log next to its data dir).
# With a non-empty data dir both servers ignore the --initial-cluster* flags and recover.
start_member() {
  local kind=$1 i=$2 base c p
  base=$(base_port "$kind")
  c="http://127.0.0.1:$(client_port "$i" "$base")"
  p="http://127.0.0.1:$(peer_port "$i" "$base")"
  mkdir -p "$WORK/$kind"
  local common=(--name "m$i" --data-dir "$(data_dir "$kind" "$i")"
    --listen-client-urls "$c" --advertise-client-urls "$c"
    --listen-peer-urls "$p" --initial-advertise-peer-urls "$p"
    --initial-cluster "$(initial_cluster "$kind")" --initial-cluster-state new
    --initial-cluster-token "$kind-bench")
  if [ "$kind" = berth ]; then
    RUST_LOG=warn "$BERTH" server "${common[@]}" >>"$WORK/$kind/m$i.log" 2>&1 &
  else
    etcd "${common[@]}" --logger zap --log-level warn --log-outputs stderr >>"$WORK/$kind/m$i.log" 2>&1 &
  fi
  PIDS["$kind $i"]=$!
}

# resident_mib PID: the process's resident memory in MiB.
resident_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

stop_member() {
  local kind=$1 i=$2 pid=${PIDS["$1 $2"]}
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  unset 'PIDS["$kind $i"]'
}

# wait_serving ENDPOINT: waits until ENDPOINT answers a linearizable read (it has a leader and
# has caught up), failing after SERVE_DEADLINE_S.
wait_serving() {
  local endpoint=$1 deadline=$((SECONDS + SERVE_DEADLINE_S))
  while [ $SECONDS -lt $deadline ]; do
    if "$BERTH" bench range --endpoints "$endpoint" --total 1 --timeout 2 --json 2>/dev/null |
      jq -e '.ok == 1' >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.05
  done
  return 1
}

start_cluster() {
  local kind=$1 i
  check_ports_free $(for i in 0 1 2; do client_port "$i" "$(base_port "$kind")"; peer_port "$i" "$(base_port "$kind")"; done)
  for i in 0 1 2; do start_member "$kind" "$i"; done
  for i in 0 1 2; do
    wait_serving "http://127.0.0.1:$(client_port "$i" "$(base_port "$kind")")" ||
      die "$kind member $i did not serve within ${SERVE_DEADLINE_S}s; log: $(tail -5 "$WORK/$kind/m$i.log")"
  done
  log "$kind cluster serving on $(endpoints "$kind")"
}

# bench KIND NAME ARGS...: runs `berth bench ARGS` against cluster KIND, keeps the JSON report
# as results/NAME.KIND.json and says on stderr if anything failed.
bench() {
  local kind=$1 name=$2
  shift 2
  local out="$WORK/results/$name.$kind.json"
  log "$kind: berth bench $*"
  "$BERTH" bench "$@" --endpoints "$(endpoints "$kind")" --json >"$out"
  local errors
  errors=$(jq -r '.errors.count' "$out")
  if [ "$errors" != 0 ]; then
    echo "   $kind $name: $errors errors: $(jq -c '.errors.messages' "$out")" >&2
  fi
}

# pair NAME ARGS...: the same workload on both clusters, ROUNDS times (reports NAME.rN); the
# order alternates from one round to the next so that neither always runs on a machine warmed
# (or tired) by the other.
PAIR=0
pair() {
  local name=$1 round
  shift
  for round in $(seq "$ROUNDS"); do
    if [ $((PAIR % 2)) = 0 ]; then
      bench berth "$name.r$round" "$@"
      bench etcd "$name.r$round" "$@"
    else
      bench etcd "$name.r$round" "$@"
      bench berth "$name.r$round" "$@"
    fi
    PAIR=$((PAIR + 1))
  done
}

ROWS=()
# row LABEL METRIC BERTH ETCD UNIT TARGET: one table line; the ratio is Berth/etcd.
row() {
  local label=$1 metric=$2 b=$3 e=$4 unit=$5 target=$6 ratio
  ratio=$(awk -v b="$b" -v e="$e" 'BEGIN { if (e > 0) printf "%.2f", b / e; else print "n/a" }')
  ROWS+=("| $label | $metric | $b $unit | $e $unit | $ratio | $target |")
}

# median NAME KIND JQ: the median over the rounds of workload NAME on KIND of a number JQ picks.
median() { jq -s "map($3) | sort | .[length / 2 | floor]" "$WORK"/results/"$1".r*."$2".json; }
# metric / ms NAME KIND JQ: that median, rounded for the table (ms: microseconds shown as ms).
metric() { median "$@" | awk '{ printf "%.1f", $1 }'; }
ms() { median "$@" | awk '{ printf "%.3f", $1 / 1000 }'; }

# ---------------------------------------------------------------------------------------------

install_missing
log "building berth (release)"
(cd "$ROOT" && cargo build --release --bin berth)

start_cluster berth
start_cluster etcd

KV=(--key-size 8 --val-size 256)
pair put64 put --conns 8 --clients 64 --total "$PUT_TOTAL" "${KV[@]}"
# A single client's write latency is measured at the leader, as etcd's performance guide does
# (a write sent to a follower is forwarded, and which member leads is an election's chance).
pair put1 put --target-leader --conns 1 --clients 1 --total "$PUT1_TOTAL" "${KV[@]}"
# Reads of the keys written by put64 (sequential keys 0..PUT_TOTAL-1).
pair range_l range --conns 8 --clients 64 --total "$RANGE_TOTAL" --key-space "$PUT_TOTAL" --consistency l "${KV[@]}"
pair range_s range --conns 8 --clients 64 --total "$RANGE_TOTAL" --key-space "$PUT_TOTAL" --consistency s "${KV[@]}"
# Watch fan-out: 100 watchers at the leader and one writer whose puts are in flight together,
# 64 at a time, as etcd's benchmark sends each put of its one writer from a goroutine of its own.
# With a single put in flight (watch1) the delivered events are the watchers times one
# client's put rate, i.e. the single-client put latency again, now under the watchers' load.
WATCH=(watch --target-leader --watchers 100 --conns 8 --clients 1)
pair watch "${WATCH[@]}" --in-flight 64 --total "$WATCH_TOTAL" "${KV[@]}"
pair watch1 "${WATCH[@]}" --in-flight 1 --total "$WATCH1_TOTAL" "${KV[@]}"

row "put, 8 B keys / 256 B values, 64 clients, 8 conns" "throughput" \
  "$(metric put64 berth .throughput)" "$(metric put64 etcd .throughput)" "ops/s" "≥ 2"
row "" "p99" "$(ms put64 berth .latency_us.p99)" "$(ms put64 etcd .latency_us.p99)" "ms" "≤ 1"
row "put, 1 client, 1 conn, to the leader" "p50" "$(ms put1 berth .latency_us.p50)" "$(ms put1 etcd .latency_us.p50)" "ms" "≤ 1"
row "" "throughput" "$(metric put1 berth .throughput)" "$(metric put1 etcd .throughput)" "ops/s" ""
row "range, linearizable, 64 clients" "throughput" \
  "$(metric range_l berth .throughput)" "$(metric range_l etcd .throughput)" "ops/s" "≥ 1.5"
row "" "p99" "$(ms range_l berth .latency_us.p99)" "$(ms range_l etcd .latency_us.p99)" "ms" ""
row "range, serializable, 64 clients" "throughput" \
  "$(metric range_s berth .throughput)" "$(metric range_s etcd .throughput)" "ops/s" "≥ 1.5"
row "" "p99" "$(ms range_s berth .latency_us.p99)" "$(ms range_s etcd .latency_us.p99)" "ms" ""
row "watch, 100 watchers, 1 prefix, 1 writer, 64 puts in flight" "delivered events/s" \
  "$(metric watch berth .watch.events_per_sec)" "$(metric watch etcd .watch.events_per_sec)" "ev/s" "≥ 2"
row "" "put→event p99" "$(ms watch berth .watch.latency_us.p99)" "$(ms watch etcd .watch.latency_us.p99)" "ms" "≤ 1"
row "watch, 100 watchers, 1 writer, 1 put in flight" "delivered events/s" \
  "$(metric watch1 berth .watch.events_per_sec)" "$(metric watch1 etcd .watch.events_per_sec)" "ev/s" ""
row "" "put→event p99" "$(ms watch1 berth .watch.latency_us.p99)" "$(ms watch1 etcd .watch.latency_us.p99)" "ms" ""

if [ "$FULL" = 1 ]; then
  for kind in berth etcd; do
    bench "$kind" load put --conns 8 --clients 64 --total "$LOAD_TOTAL" --key-space "$LOAD_TOTAL" "${KV[@]}"
  done
  for i in 0 1 2; do
    rss=()
    size=()
    for kind in berth etcd; do
      rss+=("$(resident_mib "${PIDS["$kind $i"]}")")
      size+=("$(du -sb "$(data_dir "$kind" "$i")" | awk '{ printf "%.1f", $1 / 1048576 }')")
    done
    row "$LOAD_TOTAL keys of 256 B, member $i" "resident memory" "${rss[0]}" "${rss[1]}" "MiB" "≤ 1"
    row "" "data dir" "${size[0]}" "${size[1]}" "MiB" ""
  done
  # Restart a member that holds the data (member 2) and time it from start to serving a
  # linearizable read, i.e. recovered, back in the cluster and caught up.
  restart=()
  for kind in berth etcd; do
    log "$kind: restarting member 2"
    stop_member "$kind" 2
    start=$(date +%s%N)
    start_member "$kind" 2
    wait_serving "http://127.0.0.1:$(client_port 2 "$(base_port "$kind")")" ||
      die "$kind member 2 did not serve within ${SERVE_DEADLINE_S}s after a restart"
    restart+=("$(awk -v ns=$(($(date +%s%N) - start)) 'BEGIN { printf "%.2f", ns / 1e9 }')")
  done
  row "restart with $LOAD_TOTAL keys" "start → serving" "${restart[0]}" "${restart[1]}" "s" "≤ 1"
  # What the restarted members hold once serving, a few seconds on (memory freed while starting
  # is handed back to the system with a delay).
  sleep 5
  row "" "resident memory, serving" "$(resident_mib "${PIDS["berth 2"]}")" "$(resident_mib "${PIDS["etcd 2"]}")" "MiB" ""
fi

echo
echo "## Berth vs etcd — $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
  "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), Linux $(uname -r)." \
  "Berth $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+changes')," \
  "etcd $(etcd --version | sed -n 's/^etcd Version: //p'). Both clusters: 3 members on loopback, fsync on."
echo "Operations: put $PUT_TOTAL / $PUT1_TOTAL, range $RANGE_TOTAL, watch $WATCH_TOTAL / $WATCH1_TOTAL puts;" \
  "each workload $ROUNDS rounds per cluster, the median of each number shown."
echo
echo "| workload | metric | Berth | etcd | Berth/etcd | target |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
errors=$(jq -s 'map(.errors.count) | add' "$WORK"/results/*.json)
if [ "$errors" != 0 ]; then
  echo
  echo "Errors during the runs (they are not in the numbers above):"
  for f in "$WORK"/results/*.json; do
    jq -r --arg f "$(basename "$f" .json)" 'select(.errors.count > 0) | "- \($f): \(.errors.count): \(.errors.messages | map("\(.count)× \(.message)") | join("; "))"' "$f"
  done
fi
