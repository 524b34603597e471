#!/usr/bin/env bash
# The hub's API and scale goals (docs/benchmarks.md, "Hub API at scale"),
# on PostgreSQL: a release `ferry hub serve` on a database loaded by
# scripts/bench-hub-api-load.sql with TASKS task rows over TASKJOBS jobs
# (JOBS jobs in all), then, by examples/hub_api_bench.rs:
#   1. GET /api/jobs/{id}/ of a job with TASKS/TASKJOBS tasks;
#   2. keyset pages of that job's tasks (?job_id=J&after=A&page_size=100)
#      at its first, middle and last task, and of all tasks at the middle
#      and end of the table; for comparison, the same job's middle page by
#      OFFSET (?page=);
#   3. /ui/jobs/ (the jobs table, logged in by the session cookie), first
#      page and a filtered one;
#   each N sequential requests, p50/p99/max of the time to the last byte;
#   4. AGENTS simulated agents' heartbeats every 2 s for BEAT_SECS: the
#      hub's CPU as a share of one core (and PostgreSQL's, RabbitMQ's).
# Then EXPLAIN ANALYZE of the statements behind 1 and 2, and the size of
# the database, which is dropped at the end.
#
#   scripts/bench-hub-api.sh
#   TASKS=1000000 JOBS=10000 N=200 scripts/bench-hub-api.sh
#   DB=benchapi_keep scripts/bench-hub-api.sh   # a database loaded before: kept
#   PERF=/tmp/hub.perf scripts/bench-hub-api.sh  # and a profile of the hub (perf record -g) during step 4
#   HUB_BIN=/tmp/old/ferry scripts/bench-hub-api.sh  # serve with another build of the hub (a baseline)
#
# Needs RabbitMQ on 127.0.0.1:5672 and PostgreSQL on 127.0.0.1:5432 (user
# postgres, trust auth, database `test`); about 4 GB free per 10 M tasks.
# Output: JSON lines, also kept in $OUT (default /tmp/bench-hub-api-<pid>.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."

TASKS=${TASKS:-10000000}
TASKJOBS=${TASKJOBS:-1000}
JOBS=${JOBS:-100000}
N=${N:-1000}
AGENTS=${AGENTS:-1000}
BEAT_SECS=${BEAT_SECS:-60}
PG=${PG:-postgres://postgres@127.0.0.1:5432}

scripts/rabbitmq-up
cargo build --release --bin ferry --example hub_api_bench --example hub_bench
target=${CARGO_TARGET_DIR:-target}
ferry=$target/release/ferry
bench=$target/release/examples/hub_api_bench

tag=$$
site=benchapi$tag
db=${DB:-benchapi_$tag}
dir=$(mktemp -d /tmp/bench-hub-api.XXXXXX)
out=${OUT:-/tmp/bench-hub-api-$tag.jsonl}
: >"$out"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
password=bench-hub-api-password
hub_pid=
psql_db() { psql -h 127.0.0.1 -U postgres -d "$db" -v ON_ERROR_STOP=1 "$@"; }

cleanup() {
  if [ -n "$hub_pid" ]; then
    kill -TERM "$hub_pid" 2>/dev/null || true
    wait "$hub_pid" 2>/dev/null || true
  fi
  if [ -z "${DB:-}" ]; then
    psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

record() { # step, JSON line
  printf '{"engine":"postgres","step":"%s","result":%s}\n' "$1" "$2" | tee -a "$out"
}

echo "== machine"
nproc
grep -m1 'model name' /proc/cpuinfo
free -g | sed -n 2p
psql -h 127.0.0.1 -U postgres -d test -tAc 'SHOW server_version'
git log -1 --format='commit %h %s'

[ -n "${DB:-}" ] || psql -h 127.0.0.1 -U postgres -d test -qc "CREATE DATABASE $db"
cat >"$dir/hub.conf" <<CONF
[settings]
site = $site
broker_url = amqp://guest:guest@127.0.0.1:5672/%2f

[hub]
database = $PG/$db
key_dir = $dir/keys
listen = 127.0.0.1:$port
queue_prefix = $site.hub
CONF
if [ -z "${DB:-}" ]; then
  # Migrates the database.
  printf '%s\n' "$password" | $ferry hub adduser --admin admin --config "$dir/hub.conf" >/dev/null
  echo "== loading $JOBS jobs, $TASKS tasks over $TASKJOBS of them"
  t0=$(date +%s)
  psql_db -q -v jobs="$JOBS" -v tasks="$TASKS" -v taskjobs="$TASKJOBS" -v site="$site" -f scripts/bench-hub-api-load.sql
  record load "{\"jobs\":$JOBS,\"tasks\":$TASKS,\"seconds\":$(($(date +%s) - t0))}"
else
  # A database loaded by an earlier run: its admin may exist already.
  printf '%s\n' "$password" | $ferry hub adduser --admin admin --config "$dir/hub.conf" >/dev/null 2>&1 || true
  TASKS=$(psql_db -tAc 'SELECT COUNT(*) FROM tasks')
  TASKJOBS=$(psql_db -tAc 'SELECT COUNT(DISTINCT job_id) FROM job_task_stats')
fi
record dbsize "{\"tasks\":$TASKS,\"jobs\":$(psql_db -tAc 'SELECT COUNT(*) FROM jobs'),\"bytes\":$(psql_db -tAc 'SELECT pg_database_size(current_database())')}"

RUST_LOG=warn,lapin=error ${HUB_BIN:-$ferry} hub serve --config "$dir/hub.conf" >>"$dir/hub.log" 2>&1 &
hub_pid=$!
for _ in $(seq 300); do
  curl -sf "$url/api/health/" >/dev/null && break
  sleep 0.1
done
key=$($target/release/examples/hub_bench login "$url" admin "$password")
$target/release/examples/hub_bench site "$url" "$key" "$site" >/dev/null
cookies=$($bench token "$url" admin "$password")

job=$((TASKJOBS / 2))
per=$(psql_db -tAc "SELECT COUNT(*) FROM tasks WHERE job_id = $job")
first=$(psql_db -tAc "SELECT MIN(id) - 1 FROM tasks WHERE job_id = $job")
middle=$(psql_db -tAc "SELECT id FROM tasks WHERE job_id = $job ORDER BY id OFFSET $((per / 2)) LIMIT 1")
last=$(psql_db -tAc "SELECT id FROM tasks WHERE job_id = $job ORDER BY id OFFSET $((per - 100)) LIMIT 1")
echo "== job $job: $per tasks; after = $first (first), $middle (middle), $last (last page)"

echo "-- 1. GET /api/jobs/$job/ × $N"
record job "$($bench get "$url" "Api-Key $key" "$N" "/api/jobs/$job/")"
echo "-- 2. keyset pages of tasks × $N each"
record keyset "$($bench get "$url" "Api-Key $key" "$N" \
  "/api/tasks/?job_id=$job&after=$first&page_size=100" \
  "/api/tasks/?job_id=$job&after=$middle&page_size=100" \
  "/api/tasks/?job_id=$job&after=$last&page_size=100" \
  "/api/tasks/?after=$((TASKS / 2))&page_size=100" \
  "/api/tasks/?after=$((TASKS - 100))&page_size=100")"
record offset "$($bench get "$url" "Api-Key $key" "$((N / 10))" \
  "/api/tasks/?job_id=$job&page=$((per / 200))&page_size=100")"
echo "-- 3. /ui/jobs/ × $N"
record ui "$($bench get "$url" "cookie:$cookies" "$N" "/ui/jobs/" "/ui/jobs/?state=FAILURE")"
echo "-- 4. $AGENTS agents' heartbeats every 2 s for ${BEAT_SECS}s"
perf_pid=
if [ -n "${PERF:-}" ]; then
  perf record -F 999 -g -p "$hub_pid" -o "$PERF" -- sleep $((BEAT_SECS + 20)) 2>"$dir/perf.log" &
  perf_pid=$!
fi
record beats "$($bench beats "$site" "$AGENTS" "$BEAT_SECS" "$hub_pid")"
[ -z "$perf_pid" ] || wait "$perf_pid" || true
record nodes "{\"nodes\":$(psql_db -tAc "SELECT COUNT(*) FROM nodes WHERE name LIKE 'benchnode-%'")}"

echo "== EXPLAIN ANALYZE"
psql_db -c "EXPLAIN (ANALYZE, BUFFERS) SELECT id FROM tasks WHERE job_id = $job ORDER BY id LIMIT 1000"
psql_db -c "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM tasks WHERE job_id = $job AND id > $middle ORDER BY id LIMIT 101"
psql_db -c "EXPLAIN (ANALYZE, BUFFERS) SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM job_task_stats WHERE job_id = $job"
psql_db -c "EXPLAIN (ANALYZE, BUFFERS) SELECT COUNT(*) FROM tasks WHERE job_id = $job"
psql_db -c "EXPLAIN (ANALYZE, BUFFERS) SELECT COUNT(*) FROM tasks"
psql_db -c "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM tasks WHERE job_id = $job ORDER BY id LIMIT 100 OFFSET $((per / 2))"
grep -E 'WARN|ERROR' "$dir/hub.log" | head -5 || true
echo "results: $out"
