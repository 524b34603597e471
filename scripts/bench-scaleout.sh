#!/usr/bin/env bash
# Scale-out of discovery: one `recursive_navigate` split over N agents of one
# site (distinct node names, one broker, one machine), walking latencyfs
# (tests/latencyfs/), a FUSE passthrough that makes every metadata request a
# round trip of LATENCY ms. Each agent stands for a node: WALK_THREADS
# requests in flight, one discovery at a time (`discovery = {"threads": 1}`),
# splitting at once (`walk_split_after = 0`). scripts/scaleout-driver.py
# stands for the hub and the workers: it sends the walk, drops the batches,
# and times the walk until its last piece answered. Each N runs on a fresh
# mount with fresh agents; the median of RUNS counts. Throughput is compared
# with N = 1 in the same run, and each agent's peak RSS (VmHWM) is recorded.
# See docs/benchmarks.md.
#
# usage: scripts/bench-scaleout.sh [BENCH_DIR]
#
# Environment overrides:
#   FILES=100000        files in the (wide) tree, made by `ferry gen-tree`
#   AGENTS="1 2 4 8"    agent counts
#   LATENCY=2           ms per metadata request
#   WALK_THREADS=16     requests in flight per agent
#   RUNS=3              runs per agent count (the median counts)
#   BATCH=100           file_batch_size; batches are also limited to
#                       10 GB (file_batch_gb), so every file is stat'ed,
#                       as on a site that limits batches by size
#   OUT=BENCH_DIR/scaleout-FILES
#   FERRY=path          a ferry binary to run instead of building this tree's
#                       (to compare two builds, one after the other)
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C

BENCH_DIR=${1:-${BENCH_DIR:-./bench-trees}}
FILES=${FILES:-100000}
AGENTS=${AGENTS:-"1 2 4 8"}
LATENCY=${LATENCY:-2}
WALK_THREADS=${WALK_THREADS:-16}
RUNS=${RUNS:-3}
BATCH=${BATCH:-100}
OUT=${OUT:-$BENCH_DIR/scaleout-$FILES}

die() {
  echo "bench-scaleout: $*" >&2
  exit 1
}

[[ $(id -u) == 0 ]] || die "mounting latencyfs needs root"
[[ -e /dev/fuse ]] || die "/dev/fuse is missing"
command -v jq >/dev/null || die "jq is required"
python3 -c 'import amqp' 2>/dev/null || die "python3's amqp (installed with celery) is required"
scripts/rabbitmq-up >/dev/null

echo "== building release binaries" >&2
if [[ -z ${FERRY:-} ]]; then
  cargo build --release --quiet --bin ferry
  FERRY=${CARGO_TARGET_DIR:-target}/release/ferry
fi
FERRY=$(realpath "$FERRY")
cargo build --release --quiet --locked --manifest-path tests/latencyfs/Cargo.toml
LATENCYFS=$(realpath tests/latencyfs/target/release/latencyfs)

mkdir -p "$BENCH_DIR" "$OUT"
BENCH_DIR=$(realpath "$BENCH_DIR")
OUT=$(realpath "$OUT")
MNT=$OUT/mnt
mkdir -p "$MNT"
mountpoint -q "$MNT" && umount -l "$MNT"

TREE=$BENCH_DIR/wide-$FILES
if [[ ! -d $TREE ]]; then
  echo "== generating a wide tree of $FILES files in $TREE" >&2
  rm -rf "$TREE.partial"
  "$FERRY" gen-tree --shape wide --files "$FILES" "$TREE.partial"
  sync
  mv "$TREE.partial" "$TREE"
fi
FOUND=$(find "$TREE" -type f | wc -l)

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "kernel: $(uname -srm)"
  echo "ferry: $("$FERRY" --version) ($(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet -- src 2>/dev/null || echo ', src modified'))"
  echo "latencyfs: latency ${LATENCY} ms"
  echo "tree: wide, $FOUND files, $(find "$TREE" -type d | wc -l) directories"
  echo "agents: $AGENTS, walk_threads $WALK_THREADS each, $RUNS runs each"
} | tee "$OUT/machine.txt" >&2

SITE=scaleout$$
AGENT_PIDS=()
stop_agents() {
  local p
  for p in "${AGENT_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${AGENT_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  AGENT_PIDS=()
}
cleanup() {
  stop_agents
  mountpoint -q "$MNT" && umount -l "$MNT"
  return 0
}
trap cleanup EXIT

# Starts `n` agents of $SITE; waits until each consumes.
start_agents() {
  local n=$1 i
  for ((i = 0; i < n; i++)); do
    cat >"$OUT/agent$i.conf" <<EOF
[settings]
site = $SITE
node_name = ferry@$SITE-n$i
broker_url = amqp://guest:guest@127.0.0.1:5672/%2f
walk_threads = $WALK_THREADS
walk_split_after = 0
control_wait = 0
heartbeat = false
task_events = false
endpoint_check_interval = 0
worker = false
custom = false
interactive = false
settings = false
discovery = {"threads": 1}
EOF
    RUST_LOG=info "$FERRY" agent --config "$OUT/agent$i.conf" >"$OUT/agent$i.log" 2>&1 &
    AGENT_PIDS+=($!)
  done
  for ((i = 0; i < n; i++)); do
    local waited=0
    until grep -q "connected; consuming" "$OUT/agent$i.log"; do
      sleep 0.1
      waited=$((waited + 1))
      ((waited < 300)) || die "agent $i did not start: $(tail -5 "$OUT/agent$i.log")"
    done
  done
}

# The machine's busy and total CPU ticks so far (/proc/stat).
cpu_ticks() {
  awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat
}

# One run with `n` agents on a fresh mount: prints "seconds first_batch_ms
# first_piece_ms walks paths max_rss_kib walks_per_agent cpu_busy_percent".
run_once() {
  local n=$1 stats=$OUT/stats.json
  rm -f "$stats"
  "$LATENCYFS" --latency "$LATENCY" --stats "$stats" "$TREE" "$MNT" >"$OUT/latencyfs.out" 2>"$OUT/latencyfs.err" &
  local fs=$!
  local waited=0
  until grep -q ready "$OUT/latencyfs.out" 2>/dev/null; do
    sleep 0.05
    waited=$((waited + 1))
    ((waited < 200)) || die "latencyfs did not mount: $(cat "$OUT/latencyfs.err")"
  done
  start_agents "$n"
  local spec
  local logs
  logs=$(for ((i = 0; i < n; i++)); do echo "$OUT/agent$i.log"; done | jq -R . | jq -sc .)
  spec=$(jq -cn --arg site "$SITE" --arg path "$MNT" --argjson batch "$BATCH" --argjson logs "$logs" \
    '{site: $site, path: $path, timeout: 900, logs: $logs,
      kwargs: {file_batch_size: $batch, file_batch_gb: 10, enable_auto_file_batch_sizing: false,
               filter_rules: [{state: "all", type: "file", action: [{name: "dynamo.tasks.stat_paths"}]}]}}')
  local out c0 c1
  c0=$(cpu_ticks)
  out=$(python3 scripts/scaleout-driver.py "$spec") || die "the driver failed: $out"
  c1=$(cpu_ticks)
  local rss=0 per="" i p
  for ((i = 0; i < n; i++)); do
    p=${AGENT_PIDS[$i]}
    local hwm
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$p/status")
    ((hwm > rss)) && rss=$hwm
    per+="$(grep -c 'task started.*recursive_navigate' "$OUT/agent$i.log" || true),"
  done
  stop_agents
  umount -l "$MNT"
  wait "$fs" || true
  local busy
  busy=$(awk -v a="$c0" -v b="$c1" 'BEGIN {split(a, x, " "); split(b, y, " "); printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2])}')
  jq -r --arg rss "$rss" --arg per "${per%,}" --arg busy "$busy" \
    '[.seconds, .first_batch_ms, (.first_piece_ms // "-"), .walks, .paths, $rss, $per, $busy] | @tsv' <<<"$out"
}

RESULTS=$OUT/results.tsv
printf 'agents\tfiles\tseconds\tfiles_per_s\tspeedup\tfirst_batch_ms\tfirst_piece_ms\twalks\tmax_agent_rss_mib\twalks_per_agent\tcpu_busy_percent\n' >"$RESULTS"
base=""
for n in $AGENTS; do
  echo "== $n agent(s)" >&2
  : >"$OUT/runs.tsv"
  for ((r = 0; r < RUNS; r++)); do
    run_once "$n" | tee -a "$OUT/runs.tsv" | sed 's/^/   /' >&2
  done
  read -r s first piece walks paths rss per busy < <(sort -n "$OUT/runs.tsv" | sed -n "$(((RUNS + 1) / 2))p")
  [[ $paths == "$FOUND" ]] || die "$n agents batched $paths files, the tree has $FOUND"
  rate=$(awk -v n="$FOUND" -v s="$s" 'BEGIN {printf "%.0f", n / s}')
  [[ -n $base ]] || base=$rate
  awk -v a="$n" -v f="$FOUND" -v s="$s" -v rate="$rate" -v base="$base" -v first="$first" -v piece="$piece" -v w="$walks" \
    -v rss="$rss" -v per="$per" -v busy="$busy" 'BEGIN {
      printf "%d\t%d\t%.2f\t%d\t%.2f\t%s\t%s\t%d\t%.1f\t%s\t%s\n", a, f, s, rate, rate / base, first, piece, w, rss / 1024, per, busy
    }' | tee -a "$RESULTS" >&2
done
column -t -s $'\t' "$RESULTS"
