#!/usr/bin/env bash
# Premigrate to a directory endpoint with this build against a BASELINE
# ferry binary, on the same data in the same run, rounds alternating which
# goes first (docs/benchmarks.md, "Endpoint layout"):
#
#   small: 20,000 files of 4 KiB in 20 directories;
#   large: 2 files of 512 MiB.
#
#   BASELINE=/path/to/old/ferry scripts/bench-endpoint.sh
#
# Before each timed run the files are unmanaged and the store emptied
# (untimed), so both binaries copy everything. Prints each run's seconds,
# the medians and the ratio (baseline time / this build's time: above 1
# means this build is faster). Data lives in $FERRY_BENCH_DIR (default
# /work/bench-endpoint) and is kept for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
BASELINE=${BASELINE:?set BASELINE to a baseline ferry binary}
ROUNDS=${ROUNDS:-5}
cargo build --release -q
NEW=${CARGO_TARGET_DIR:-$PWD/target}/release/ferry
B=${FERRY_BENCH_DIR:-/work/bench-endpoint}
mkdir -p "$B/tree/small" "$B/tree/large"
if [ ! -f "$B/tree/small/19/999" ]; then
  python3 - "$B/tree/small" <<'PY'
import os, sys
for d in range(20):
    os.makedirs(f"{sys.argv[1]}/{d}", exist_ok=True)
    for f in range(1000):
        with open(f"{sys.argv[1]}/{d}/{f}", "wb") as out:
            out.write(os.urandom(4096))
PY
fi
for i in 0 1; do
  [ -f "$B/tree/large/$i" ] || head -c 512M /dev/urandom >"$B/tree/large/$i"
done
cat >"$B/ferry.conf" <<CONF
[settings]
threads = 8
[Endpoint bench]
type = directory
path = $B/store
root = $B/tree
CONF

run() { # binary set -> seconds
  find "$B/tree/$2" -type f -print0 | "$NEW" unmanage --config "$B/ferry.conf" -0 --from - >/dev/null
  rm -rf "$B/store" && mkdir "$B/store" && sync
  local t0 t1
  t0=$(date +%s.%N)
  find "$B/tree/$2" -type f -print0 |
    "$1" premigrate --config "$B/ferry.conf" --endpoint bench -0 --from - >/dev/null || echo failed
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}

for set in small large; do
  base=() new=()
  for ((r = 0; r < ROUNDS; r++)); do
    if ((r % 2)); then
      new+=("$(run "$NEW" $set)"); base+=("$(run "$BASELINE" $set)")
    else
      base+=("$(run "$BASELINE" $set)"); new+=("$(run "$NEW" $set)")
    fi
  done
  python3 - "$set" "${base[*]}" "${new[*]}" <<'PY'
import statistics, sys
name, base, new = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
mb, mn = statistics.median(base), statistics.median(new)
print(f"{name}: baseline {base} median {mb:.3f} s; this build {new} median {mn:.3f} s; ratio {mb/mn:.3f}")
PY
done
