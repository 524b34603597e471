#!/usr/bin/env bash
# The diff engine, before and after: builds criterion's `diff` benchmark
# (benches/diff.rs) from a baseline revision and from the work tree, runs
# the two alternately in one session, and prints each run's median and the
# ratio of the medians (baseline time / current time: above 1 is faster).
#
# usage: scripts/bench-diff.sh [BASE_REV]      (default BASE_REV=HEAD~1)
# Environment: ROUNDS=3 (alternations), FERRY_DIFF_ENTRIES (default 1 M),
# MEASURE=10 (criterion seconds of measurement per run), BASE_DIR (an
# existing checkout of the baseline to build in, instead of a temporary
# worktree of BASE_REV).
set -euo pipefail
cd "$(dirname "$0")/.."
base_rev=${1:-HEAD~1}
rounds=${ROUNDS:-3}
measure=${MEASURE:-10}
export FERRY_DIFF_ENTRIES=${FERRY_DIFF_ENTRIES:-1000000}

bench_binary() { # the diff bench executable built in directory $1
  (cd "$1" && cargo bench --bench diff --no-run --message-format=json 2>/dev/null) |
    jq -r 'select(.reason == "compiler-artifact" and .target.name == "diff" and .executable != null) | .executable' |
    tail -n 1
}

if [ -n "${BASE_DIR:-}" ]; then
  base_dir=$BASE_DIR
else
  work=$(mktemp -d)
  trap 'git worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
  git worktree add --detach "$work/base" "$base_rev" >/dev/null
  base_dir=$work/base
fi
echo "== building the baseline ($(git -C "$base_dir" rev-parse --short HEAD)) and the work tree" >&2
# The baseline builds in its own checkout's target directory, so the two
# never mix.
base=$(unset CARGO_TARGET_DIR; bench_binary "$base_dir")
current=$(bench_binary .)
[ -x "$base" ] && [ -x "$current" ] || { echo "bench-diff: a build failed" >&2; exit 1; }

median() { # criterion's median time of one run, in seconds (awk reads to
  # the end: a closed pipe would kill the benchmark mid-report)
  "$1" --bench --noplot --measurement-time "$measure" diff 2>/dev/null |
    awk '/time:/ && !done { gsub(/[\[\]]/, "")
      for (i = 1; i <= NF; i++) if ($i == "time:") { v = $(i + 3); u = $(i + 4) }
      m = (u == "s") ? 1 : (u == "ms") ? 1e-3 : (u == "µs" || u == "us") ? 1e-6 : 1e-9
      done = 1 }
      END { printf "%.6f\n", v * m }'
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(uname -r)"
echo "entries per manifest: $FERRY_DIFF_ENTRIES; rounds: $rounds"
printf '%-6s %-12s %-12s %s\n' round baseline_s current_s ratio
for r in $(seq "$rounds"); do
  b=$(median "$base")
  c=$(median "$current")
  printf '%-6s %-12s %-12s %s\n' "$r" "$b" "$c" "$(awk -v b="$b" -v c="$c" 'BEGIN { printf "%.3f", b / c }')"
done
