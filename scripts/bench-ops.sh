#!/usr/bin/env bash
# Whole-process benchmarks of ferry's operations against the tools an admin
# would otherwise use, in one run on the same data (docs/benchmarks.md):
#
#   1. premigrate of 4 x 1 GiB files to a directory endpoint vs cp -r (and
#      cp -r followed by sync, since ferry makes its copies durable);
#   2. premigrate of 100,000 files of 4 KiB vs cp -r (and cp + sync);
#   3. recall of the 4 x 1 GiB files (stubs) vs cp of the objects back;
#   4. delete -r of a 100,000-file tree vs rm -rf;
#   5. recall of the 100,000 small files (stubs) vs cp of the objects back;
#   6. migrate (with hole punch) of the 4 x 1 GiB files, once.
#
# `scripts/bench-ops.sh 2 5` runs only those sections.
#
# Premigrate is migrate without the final hole punch, so runs repeat on the
# same files; `ferry migrate` adds one punch per file (timed once at the end).
# Data lives in $FERRY_BENCH_DIR (default /work/bench-ops, about 13 GB) and
# is kept for the next run. Needs hyperfine (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine; }
cargo build --release -q
F=$PWD/target/release/ferry
B=${FERRY_BENCH_DIR:-/work/bench-ops}
RUNS=${RUNS:-5}
sections=("$@")
((${#sections[@]})) || sections=(1 2 3 4 5 6)
want() { [[ " ${sections[*]} " == *" $1 "* ]]; }
mkdir -p "$B"

if [ ! -f "$B/large/3" ]; then
  mkdir -p "$B/large"
  for i in 0 1 2 3; do head -c 1G /dev/urandom >"$B/large/$i"; done
fi
if [ ! -f "$B/small/99/999" ]; then
  python3 - "$B/small" <<'EOF'
import os, sys
root = sys.argv[1]
for d in range(100):
    os.makedirs(f"{root}/{d}", exist_ok=True)
    for f in range(1000):
        with open(f"{root}/{d}/{f}", "wb") as fh:
            fh.write(os.urandom(4096))
EOF
fi
cat >"$B/ferry.conf" <<EOF
[settings]
threads = 8
[Endpoint bench]
type = directory
path = $B/objects
root = $B
EOF
C="--config $B/ferry.conf"
reset_objects="rm -rf $B/objects $B/copy && mkdir $B/objects"
find "$B/small" -type f -print0 >"$B/small.list"

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r), $(df -T "$B" | awk 'NR==2 {print $2}') at $B"

want 1 && echo "== 1. premigrate 4 x 1 GiB vs cp" && hyperfine -w 1 -r "$RUNS" --export-json "$B/large.json" \
  --prepare "$reset_objects && $F unmanage $C --no-progress $B/large/* >/dev/null" \
  -n ferry-premigrate "$F premigrate $C --endpoint bench --no-progress $B/large/0 $B/large/1 $B/large/2 $B/large/3 >/dev/null" \
  -n cp "cp -r $B/large $B/copy" \
  -n cp+sync "cp -r $B/large $B/copy && sync"

want 2 && echo "== 2. premigrate 100,000 x 4 KiB vs cp" && hyperfine -w 1 -r "$RUNS" --export-json "$B/small.json" \
  --prepare "$reset_objects && $F unmanage $C --no-progress -0 --from $B/small.list >/dev/null" \
  -n ferry-premigrate "$F premigrate $C --endpoint bench --no-progress --jsonl -0 --from $B/small.list >/dev/null" \
  -n cp "cp -r $B/small $B/copy" \
  -n cp+sync "cp -r $B/small $B/copy && sync"

if want 3; then
  echo "== 3. recall 4 x 1 GiB stubs vs cp of the objects"
  rm -rf "$B/objects" && mkdir "$B/objects"
  $F unmanage $C --no-progress "$B"/large/* >/dev/null
  hyperfine -w 1 -r "$RUNS" --export-json "$B/recall.json" \
    --prepare "rm -rf $B/copy && $F migrate $C --endpoint bench --no-progress $B/large/* >/dev/null" \
    -n ferry-recall "$F recall $C --no-progress $B/large/0 $B/large/1 $B/large/2 $B/large/3 >/dev/null" \
    -n cp "cp -r $B/objects $B/copy"
  # hyperfine prepares every run, the last one included: recall, then check.
  $F recall $C --no-progress "$B"/large/* >/dev/null
  cmp "$B/large/0" "$B/objects/large/0"
fi

want 4 && echo "== 4. delete -r 100,000 files vs rm -rf" && hyperfine -w 1 -r "$RUNS" --export-json "$B/delete.json" \
  --prepare "rm -rf $B/tree && cp -a $B/small $B/tree" \
  -n ferry-delete "$F delete -r --no-progress $B/tree >/dev/null" \
  -n rm "rm -rf $B/tree"

if want 5; then
  echo "== 5. recall 100,000 x 4 KiB stubs vs cp of the objects"
  rm -rf "$B/objects" && mkdir "$B/objects"
  $F unmanage $C --no-progress -0 --from "$B/small.list" >/dev/null
  hyperfine -w 1 -r "$RUNS" --export-json "$B/recall-small.json" \
    --prepare "rm -rf $B/copy && $F migrate $C --endpoint bench --no-progress --jsonl -0 --from $B/small.list >/dev/null" \
    -n ferry-recall "$F recall $C --no-progress --jsonl -0 --from $B/small.list >/dev/null" \
    -n cp "cp -r $B/objects $B/copy"
  $F recall $C --no-progress --jsonl -0 --from "$B/small.list" >/dev/null
  cmp "$B/small/7/7" "$B/objects/small/7/7"
fi

if want 6; then
  echo "== 6. migrate (with hole punch) of 4 x 1 GiB once, after premigrate"
  $F unmanage $C --no-progress "$B"/large/* >/dev/null
  $F premigrate $C --endpoint bench --no-progress "$B"/large/* >/dev/null
  /usr/bin/time -f "migrate of premigrated files (re-hash, verify, punch): %e s" \
    $F migrate $C --endpoint bench --no-progress "$B"/large/* >/dev/null
  $F recall $C --no-progress "$B"/large/* >/dev/null
fi
