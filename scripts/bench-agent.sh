#!/usr/bin/env bash
# Agent benchmarks (docs/benchmarks.md, "Agent benchmarks"), against the
# local RabbitMQ, with the release build:
#   1. paths published per second by recursive discovery (one child task
#      per batch, to a queue nobody consumes), beside `ferry scan` of the
#      same tree (the walk alone) in the same run;
#   2. time from sending a discovery to its first child arriving;
#   3. round trip of a small task (stat_paths of one file);
#   4. publishing alone: 1 M path objects built into child tasks and
#      published with confirms, no walk (the pipeline's own capacity).
#
#   scripts/bench-agent.sh            FILES=500000 RUNS=3 by default
#   BASELINE=/path/to/old/ferry scripts/bench-agent.sh
#                                     only 1., this build's agent and the
#                                     BASELINE agent alternately, RUNS each
# The tree is kept in $BENCH_DIR (default /work/bench-agent) for reuse.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/rabbitmq-up
cargo build --release --bin ferry --example agent_bench
ferry=target/release/ferry
bench=target/release/examples/agent_bench
files=${FILES:-500000}
runs=${RUNS:-3}
dir=${BENCH_DIR:-/work/bench-agent}
tree=$dir/tree-$files
mkdir -p "$dir"
if [ ! -d "$tree" ]; then
  echo "generating $files files in $tree"
  $ferry gen-tree --shape wide --files "$files" "$tree"
fi
small=$dir/one-file
echo x > "$small"

site=bench$$
agent_pid=
start_agent() { # batch size, dynamic sizing, batch GB, [agent binary]
  cat > "$dir/ferry.conf" <<CONF
[settings]
site = $site
threads = 4
file_batch_size = $1
enable_auto_file_batch_sizing = $2
file_batch_gb = ${3:-1}
CONF
  RUST_LOG=warn "${4:-$ferry}" agent --config "$dir/ferry.conf" 2>"$dir/agent.log" &
  agent_pid=$!
  sleep 1
}
stop_agent() { kill -TERM "$agent_pid"; wait "$agent_pid" || true; }
trap 'stop_agent 2>/dev/null || true' EXIT

echo "== machine"
nproc; grep -m1 'model name' /proc/cpuinfo; uname -r
if [ -n "${BASELINE:-}" ]; then
  # The same client publishes through each agent in turn, so both see the
  # same broker, tree and machine load.
  for cfg in "40 true 1" "1000 false 0"; do
    set -- $cfg
    echo "== publish, this build vs BASELINE: file_batch_size=$1 dynamic=$2 file_batch_gb=$3"
    for _ in $(seq "$runs"); do
      for who in current baseline; do
        bin=$ferry
        [ "$who" = baseline ] && bin=$BASELINE
        start_agent "$1" "$2" "$3" "$bin"
        printf '%s ' "$who"
        $bench publish "$site" "$tree" 1 2>/dev/null
        stop_agent
      done
    done
  done
  exit 0
fi
echo "== walk alone: ferry scan, full stat and names only, JSON to /dev/null (warm cache)"
$ferry scan --summary "$tree" >/dev/null
for _ in $(seq "$runs"); do
  /usr/bin/time -f "scan (stat) wall=%e s" $ferry scan "$tree" >/dev/null
  /usr/bin/time -f "scan (names) wall=%e s" $ferry scan --fields path,type "$tree" >/dev/null
done
for cfg in "40 true 1" "1000 false 1" "40 true 0" "1000 false 0"; do
  set -- $cfg
  echo "== publish: file_batch_size=$1 dynamic=$2 file_batch_gb=$3"
  start_agent "$1" "$2" "$3"
  $bench publish "$site" "$tree" "$runs"
  stop_agent
done
echo "== publishing alone (no walk): 1,000,000 paths, batches of 40 and 1,000"
$bench pipeline "$site" 40 1000000
$bench pipeline "$site" 1000 1000000
echo "== time to first child and small-task round trip (seed defaults)"
start_agent 40 true
$bench first-child "$site" "$tree" 20
$bench roundtrip "$site" "$small" 200
stop_agent
