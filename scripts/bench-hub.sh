#!/usr/bin/env bash
# Hub benchmarks (docs/benchmarks.md, "Hub"): a release `ferry hub serve`
# on SQLite and then on PostgreSQL, fed the agents' own result documents
# by examples/hub_bench.rs through the local RabbitMQ:
#   0. the broker alone (publish, then consume and parse), and the seed's
#      design: a Celery-style recorder (scripts/bench-hub-recorder.py,
#      one row and one commit per result) draining the same messages;
#   per engine:
#   1. completion latency: last result published → job final (10 ms polls);
#   2. submit latency: POST /api/file/workflow/ at 100/s;
#   3. publish→commit latency of 40-path results at fixed rates;
#   4. drain: the hub started on a results queue holding DRAIN results of
#      one job (compare with 0.); then HELD children whose parent's result
#      comes last (as when children finish during the walk): time from the
#      parent's result to the job's end;
#   5. the store alone: Store::ingest in-process, no broker, no HTTP;
#   6. sustained ingest at full speed of one job of BIG results, with the
#      hub's RSS sampled, stopped after MAXSECS; database size per task.
#
#   scripts/bench-hub.sh
#   BIG=1000000 MAXSECS=600 ENGINES=sqlite scripts/bench-hub.sh
#
# Needs RabbitMQ on 127.0.0.1:5672 (guest/guest; started or installed by
# scripts/rabbitmq-up) and, for PostgreSQL, a server on 127.0.0.1:5432
# (user postgres, trust auth, database `test`). Creates and drops its own
# databases and queues and stops its hub. Output: JSON lines, also kept in
# $OUT (default /tmp/bench-hub-<pid>.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."

BIG=${BIG:-2500000}
MAXSECS=${MAXSECS:-900}
LAT_RATES=${LAT_RATES:-"10000 5000 2000"}
LAT_SECONDS=${LAT_SECONDS:-10}
DRAIN=${DRAIN:-50000}
JOBS=${JOBS:-10}
CHILDREN=${CHILDREN:-1000}
SUBMITS=${SUBMITS:-1000}
STORE_N=${STORE_N:-50000}
HELD=${HELD:-100000}
ENGINES=${ENGINES:-"sqlite postgres"}
PG=${PG:-postgres://postgres@127.0.0.1:5432}

scripts/rabbitmq-up
need=()
command -v psql >/dev/null || need+=(postgresql-client)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
python3 -c 'import amqp' 2>/dev/null || python3 -m pip install -q amqp
cargo build --release --bin ferry --example hub_bench
target=${CARGO_TARGET_DIR:-target}
ferry=$target/release/ferry
bench=$target/release/examples/hub_bench

tag=$$
site=benchhub$tag
prefix=$site.hub
dir=$(mktemp -d /tmp/bench-hub.XXXXXX)
out=${OUT:-/tmp/bench-hub-$tag.jsonl}
: >"$out"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
password=bench-hub-password
hub_pid=
pg_dbs=()

delete_queues() {
  python3 - "$@" <<'PY'
import sys, amqp
c = amqp.Connection(host="127.0.0.1:5672", userid="guest", password="guest"); c.connect()
for q in sys.argv[1:]:
    ch = c.channel()
    try:
        ch.queue_delete(q)
    except Exception:
        pass
c.close()
PY
}
stop_hub() {
  if [ -n "$hub_pid" ]; then
    kill -TERM "$hub_pid" 2>/dev/null || true
    wait "$hub_pid" 2>/dev/null || true
    hub_pid=
  fi
}
cleanup() {
  stop_hub
  for d in "${pg_dbs[@]}"; do
    psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE IF EXISTS $d" >/dev/null 2>&1 || true
  done
  delete_queues "$prefix.results" "$prefix.events" "$prefix.rejected" "$site.default#discovery" \
    "$site.default#worker" "benchrec$tag" "benchbroker$tag" || true
  rm -rf "$dir"
}
trap cleanup EXIT

record() { # label, JSON line
  printf '{"engine":"%s","step":"%s","result":%s}\n' "$engine" "$1" "$2" | tee -a "$out"
}

start_hub() {
  RUST_LOG=warn,lapin=error $ferry hub serve --config "$dir/hub.conf" >>"$dir/hub-$engine.log" 2>&1 &
  hub_pid=$!
  for _ in $(seq 300); do
    curl -sf "$url/api/health/" >/dev/null && return 0
    sleep 0.1
  done
  echo "the hub did not start:" >&2
  cat "$dir/hub-$engine.log" >&2
  exit 1
}

echo "== machine"
nproc
grep -m1 'model name' /proc/cpuinfo
free -g | sed -n 2p
uname -r
git log -1 --format='commit %h %s'

engine=none
echo "== the broker alone: publish $DRAIN results confirmed, then consume + parse them"
record broker "$($bench broker "benchbroker$tag" "$DRAIN")"
echo "== Celery-style recorder (one row, one commit per result) draining $DRAIN results on SQLite"
$bench feed "benchrec$tag" 1 00000000-0000-4000-8000-000000000000 $((DRAIN - 1)) >/dev/null
record recorder "$(python3 scripts/bench-hub-recorder.py "benchrec$tag" "$dir/recorder.db" "$DRAIN")"
rm -f "$dir"/recorder.db*

for engine in $ENGINES; do
  echo "== hub on $engine"
  case $engine in
    sqlite)
      db=sqlite://$dir/hub.db
      store_db=sqlite://$dir/store.db
      ;;
    postgres)
      psql -h 127.0.0.1 -U postgres -d test -qc "CREATE DATABASE benchhub_$tag"
      psql -h 127.0.0.1 -U postgres -d test -qc "CREATE DATABASE benchhub_store_$tag"
      pg_dbs+=("benchhub_$tag" "benchhub_store_$tag")
      db=$PG/benchhub_$tag
      store_db=$PG/benchhub_store_$tag
      ;;
  esac
  cat >"$dir/hub.conf" <<CONF
[settings]
site = $site
broker_url = amqp://guest:guest@127.0.0.1:5672/%2f

[hub]
database = $db
key_dir = $dir/keys
listen = 127.0.0.1:$port
queue_prefix = $prefix
CONF
  printf '%s\n' "$password" | $ferry hub adduser --admin admin --config "$dir/hub.conf" >/dev/null
  start_hub
  key=$($bench login "$url" admin "$password")
  $bench site "$url" "$key" "$site" >/dev/null

  echo "-- completion latency ($JOBS jobs × 2, $CHILDREN results each)"
  record complete "$($bench complete "$url" "$key" "$site" "$prefix.results" "$JOBS" "$CHILDREN")"
  echo "-- submit latency at 100/s ($SUBMITS submissions)"
  record submit "$($bench submit "$url" "$key" "$site" 100 "$SUBMITS")"
  delete_queues "$site.default#discovery"
  for rate in $LAT_RATES; do
    echo "-- publish→commit latency at $rate results/s for ${LAT_SECONDS}s"
    record "latency@$rate" "$($bench ingest "$url" "$key" "$site" "$prefix.results" $((rate * LAT_SECONDS)) "$rate" "$hub_pid" 600)"
  done
  echo "-- drain: $DRAIN results waiting when the hub starts"
  read -r job root < <($bench mkjob "$url" "$key" "$site")
  stop_hub
  $bench feed "$prefix.results" "$job" "$root" $((DRAIN - 1)) >/dev/null
  start_hub
  record drain "$($bench wait "$url" "$key" "$job" "$DRAIN" "$hub_pid")"
  echo "-- held children: $HELD results before their parent's, then the parent's"
  record held "$($bench held "$url" "$key" "$site" "$prefix.results" "$HELD")"
  echo "-- the store alone (Store::ingest in-process, batches of 1,000)"
  record store "$($bench store "$store_db" "$STORE_N")"
  echo "-- sustained ingest: $BIG results at full speed (stops after ${MAXSECS}s), RSS sampled"
  res=$(HUB_BENCH_SERIES=$dir/series-$engine.tsv $bench ingest "$url" "$key" "$site" "$prefix.results" "$BIG" 0 "$hub_pid" "$MAXSECS")
  record sustained "$res"
  cp "$dir/series-$engine.tsv" "/tmp/bench-hub-$tag-series-$engine.tsv"
  case $engine in
    sqlite)
      rows=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT COUNT(*) FROM tasks').fetchone()[0])" "$dir/hub.db")
      bytes=$(cat "$dir"/hub.db* | wc -c)
      ;;
    postgres)
      rows=$(psql -h 127.0.0.1 -U postgres -d "benchhub_$tag" -tAc 'SELECT COUNT(*) FROM tasks')
      bytes=$(psql -h 127.0.0.1 -U postgres -d "benchhub_$tag" -tAc 'SELECT pg_database_size(current_database())')
      ;;
  esac
  record dbsize "{\"task_rows\":$rows,\"bytes\":$bytes,\"bytes_per_task\":$((bytes / rows))}"
  stop_hub
  grep -E 'WARN|ERROR' "$dir/hub-$engine.log" | head -5 || true
done
echo "results: $out"
