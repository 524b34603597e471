#!/usr/bin/env bash
# Whole-process walk benchmarks: `ferry scan` against GNU find, fd, and the
# jwalk and walkdir baselines in examples/, on generated trees, with a warm
# cache. Results (hyperfine JSON, peak RSS, time to first entry and a
# Markdown summary) go to $OUT. See docs/benchmarks.md.
#
# usage: scripts/bench-walk.sh [BENCH_DIR]
#
# BENCH_DIR (default ./bench-trees) holds the trees, one per shape and size
# (e.g. wide-1000000); existing trees are reused. Environment overrides:
#   FILES=1000000          files per tree (small values for a smoke test)
#   SHAPES="wide flat deep mixed"
#   THREADS=2              ferry -j, fd -j, jwalk --threads
#   RUNS=5 WARMUP=1        hyperfine runs per command
#   RSS_RUNS=3             /usr/bin/time runs per command (the maximum counts)
#   RSS_SHAPES="flat wide" trees on which peak RSS is measured (empty: none)
#   FIRST_RUNS=11          runs of the time-to-first-entry probe (flat tree)
#   QUIET_CORES=0.2        before each group of runs, wait until other
#   QUIET_WAIT=900         processes use fewer cores than this (at most
#                          QUIET_WAIT seconds); 0 disables the wait
#   RETRIES=2              rerun a group disturbed by QUIET_CORES or more
#   OUT=BENCH_DIR/results-FILES
#   BASELINE=/path/to/ferry  another ferry binary (an older build) run as
#                          tool "ferry-base" with the same arguments in the
#                          same hyperfine groups; the summary reports the
#                          speed ratio of this build to it (goal >= 0.97)
#   TOOLS="ferry ferry-base"  run only these tools (default: all of them);
#                          e.g. SHAPES=wide RSS_SHAPES= TOOLS="ferry ferry-base"
#                          with BASELINE for a quick before/after comparison
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C

BENCH_DIR=${1:-${BENCH_DIR:-./bench-trees}}
FILES=${FILES:-1000000}
SHAPES=${SHAPES:-"wide flat deep mixed"}
THREADS=${THREADS:-2}
RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
RSS_RUNS=${RSS_RUNS:-3}
RSS_SHAPES=${RSS_SHAPES-"flat wide"}
FIRST_RUNS=${FIRST_RUNS:-11}
QUIET_CORES=${QUIET_CORES:-0.2}
QUIET_WAIT=${QUIET_WAIT:-900}
RETRIES=${RETRIES:-2}
OUT=${OUT:-$BENCH_DIR/results-$FILES}
BASELINE=${BASELINE:-}
TOOLS=${TOOLS:-}

die() {
  echo "bench-walk: $*" >&2
  exit 1
}

# Whether a tool takes part (TOOLS, and ferry-base only with BASELINE).
wanted() {
  [[ $1 != ferry-base || -n $BASELINE ]] && [[ -z $TOOLS || " $TOOLS " == *" $1 "* ]]
}
# The time-to-first-entry probe runs when the flat tree is measured.
first_probe() { [[ " $SHAPES $RSS_SHAPES " == *" flat "* ]]; }

for tool in hyperfine jq /usr/bin/time; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
FD=$(command -v fdfind || command -v fd) || ! wanted fd || die "fd (fdfind) is required"
find --version 2>/dev/null | grep -q GNU || die "GNU find is required"
if [[ -n $BASELINE ]]; then
  [[ -x $BASELINE ]] || die "BASELINE=$BASELINE is not an executable"
  BASE_FERRY=$(realpath "$BASELINE")
fi

echo "== building release binaries" >&2
examples=()
if wanted jwalk || wanted walkdir || first_probe; then
  examples=(--examples)
fi
cargo build --release --quiet --bin ferry "${examples[@]}"
BIN=${CARGO_TARGET_DIR:-target}/release
FERRY=$(realpath "$BIN/ferry")
# (-m: the examples exist only when they were built above.)
JWALK=$(realpath -m "$BIN/examples/jwalk_scan")
WALKDIR=$(realpath -m "$BIN/examples/walkdir_scan")
FIRST=$(realpath -m "$BIN/examples/first_entry")

mkdir -p "$BENCH_DIR" "$OUT"
BENCH_DIR=$(realpath "$BENCH_DIR")
OUT=$(realpath "$OUT")

# The machine, for the record.
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "kernel: $(uname -srm)"
  echo "filesystem: $(df -T "$BENCH_DIR" | awk 'NR==2 {print $2 " (" $1 ")"}')"
  echo "memory: $(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
  echo "ferry: $("$FERRY" --version) ($(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet -- src 2>/dev/null || echo ', src modified'))"
  if [[ -n $BASELINE ]]; then
    # The commit of the checkout the baseline binary was built in, if any.
    base_dir=$(dirname "$BASE_FERRY")
    echo "ferry-base: $("$BASE_FERRY" --version), $BASE_FERRY ($(git -C "$base_dir" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$base_dir" diff --quiet -- src 2>/dev/null || echo ', src modified'))"
  fi
  echo "find: $(find --version | head -1)"
  echo "fd: $(if [[ -n $FD ]]; then "$FD" --version; else echo 'not installed'; fi)"
  echo "hyperfine: $(hyperfine --version)"
  echo "files: $FILES, threads: $THREADS, runs: $RUNS (+$WARMUP warmup)"
} | tee "$OUT/machine.txt" >&2

# Trees are generated under a temporary name and renamed when complete, so
# an interrupted generation is never mistaken for a finished tree.
tree_for() {
  local shape=$1 dir="$BENCH_DIR/$1-$FILES"
  if [[ ! -d $dir ]]; then
    echo "== generating $shape tree with $FILES files in $dir" >&2
    rm -rf "$dir.partial"
    local t0=$SECONDS
    "$FERRY" gen-tree --shape "$shape" --files "$FILES" "$dir.partial"
    sync
    mv "$dir.partial" "$dir"
    echo "   generated in $((SECONDS - t0)) s" >&2
  fi
  echo "$dir"
}

# The command each tool runs, as a shell word string (hyperfine -N splits it).
command_for() {
  local tool=$1 mode=$2 t
  t=$(printf %q "$3")
  case $mode/$tool in
    names/ferry) echo "$FERRY scan -0 --no-progress -j $THREADS $t" ;;
    names/ferry-base) echo "$BASE_FERRY scan -0 --no-progress -j $THREADS $t" ;;
    names/find) echo "find $t -print0" ;;
    names/fd) echo "$FD -u -0 -j $THREADS . $t" ;;
    names/jwalk) echo "$JWALK --threads $THREADS $t" ;;
    names/walkdir) echo "$WALKDIR $t" ;;
    # path and size as JSON Lines: stat is needed for the size.
    stat/ferry) echo "$FERRY scan --no-progress -j $THREADS --fields path,size $t" ;;
    stat/ferry-base) echo "$BASE_FERRY scan --no-progress -j $THREADS --fields path,size $t" ;;
    # Informational: stat everything, write only the counts.
    stat/ferry-summary) echo "$FERRY scan --no-progress -j $THREADS --summary $t" ;;
    stat/find) echo "find $t -printf '%s %p\\0'" ;;
    # fd has no stat-printing output; a modification-time filter that
    # matches everything makes it lstat every entry exactly once (a size
    # filter would stat files twice and drop directories).
    stat/fd) echo "$FD -u -0 -j $THREADS --changed-before 2100-01-01 . $t" ;;
    stat/jwalk) echo "$JWALK --threads $THREADS --stat $t" ;;
    stat/walkdir) echo "$WALKDIR --stat $t" ;;
    *) die "no command for $tool in $mode mode" ;;
  esac
}

tools_for() {
  local tool all
  case $1 in
    names) all="ferry ferry-base find fd jwalk walkdir" ;;
    stat) all="ferry ferry-base ferry-summary find fd jwalk walkdir" ;;
  esac
  for tool in $all; do
    wanted "$tool" && echo "$tool"
  done | paste -sd' '
}

# Peak RSS in KiB of one command: the largest of RSS_RUNS runs.
peak_rss() {
  local cmd=$1 max=0 kib i
  for ((i = 0; i < RSS_RUNS; i++)); do
    kib=$(eval "/usr/bin/time -v $cmd" 2>&1 >/dev/null | awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}')
    ((kib > max)) && max=$kib
  done
  echo "$max"
}

# Other processes disturb the timings (two cores are easily taken by one
# compile). Busy CPU ticks of the whole machine, and ticks used by this
# script's finished children, give the background load of a group of runs.
TICK=$(getconf CLK_TCK)
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
# CPU ticks of process $1 and its waited-for descendants.
own_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13 + $14 + $15}' "/proc/$1/stat"; }
now() { date +%s.%N; }
# Cores used by others over `seconds` while this script is idle.
busy_cores() {
  local m0 t0
  m0=$(machine_ticks) t0=$(now)
  sleep "$1"
  awk -v m="$(($(machine_ticks) - m0))" -v t="$(now)" -v t0="$t0" -v hz="$TICK" 'BEGIN {printf "%.2f", m / hz / (t - t0)}'
}
wait_quiet() {
  local waited=0 busy
  while :; do
    busy=$(busy_cores 2)
    awk -v b="$busy" -v q="$QUIET_CORES" 'BEGIN {exit !(b < q)}' && return 0
    if ((waited >= QUIET_WAIT)); then
      echo "bench-walk: still $busy cores busy after ${waited}s of waiting; going on" >&2
      return 0
    fi
    ((waited == 0)) && echo "== waiting for a quiet machine ($busy cores busy)" >&2
    sleep 3
    waited=$((waited + 5))
  done
}
# Runs a command and prints the average number of cores that processes
# other than its own used meanwhile (to stdout's last line; the command's
# stdout goes to stderr).
with_background() {
  local m0 o0 t0 me=$BASHPID
  m0=$(machine_ticks) o0=$(own_ticks "$me") t0=$(now)
  "$@" >&2
  awk -v m="$(($(machine_ticks) - m0))" -v o="$(($(own_ticks "$me") - o0))" -v t="$(now)" -v t0="$t0" -v hz="$TICK" \
    'BEGIN {b = (m - o) / hz / (t - t0); printf "%.2f", b < 0 ? 0 : b}'
}

summary=$OUT/summary.md
: >"$summary"
md() { echo "$*" | tee -a "$summary"; }

md "# Walk benchmarks ($FILES files per tree, $THREADS threads)"
md
md '```'
md "$(cat "$OUT/machine.txt")"
md '```'

declare -A ENTRIES RSS FIRST_MS
for shape in $SHAPES; do
  tree=$(tree_for "$shape")
  echo "== warming the cache for $tree" >&2
  find "$tree" >/dev/null
  "$FERRY" scan --no-progress -j "$THREADS" --summary "$tree" >/dev/null
  entries=$(find "$tree" -printf x | wc -c)
  ENTRIES[$shape]=$entries

  for mode in names stat; do
    json=$OUT/$shape-$mode.json
    args=()
    for tool in $(tools_for "$mode"); do
      args+=(-n "$tool" "$(command_for "$tool" "$mode" "$tree")")
    done
    # A group disturbed by other processes is run again (up to RETRIES
    # more times); the least disturbed attempt is kept.
    background=
    for ((attempt = 0; attempt <= RETRIES; attempt++)); do
      ((QUIET_WAIT > 0)) && wait_quiet
      echo "== $shape tree ($entries entries), $mode" >&2
      b=$(with_background hyperfine -N --style basic --warmup "$WARMUP" --runs "$RUNS" --export-json "$json.try" "${args[@]}")
      echo "   background load: $b cores" >&2
      if [[ -z $background ]] || awk -v b="$b" -v k="$background" 'BEGIN {exit !(b < k)}'; then
        background=$b
        mv "$json.try" "$json"
      fi
      awk -v b="$background" -v q="$QUIET_CORES" 'BEGIN {exit !(b < q)}' && break
    done
    rm -f "$json.try"

    md
    md "## $shape tree, $entries entries, $mode"
    md
    md "| tool | median s | mean ± σ s | entries/s (median) | ferry speedup |"
    md "|---|---:|---:|---:|---:|"
    jq -r '(.results[] | select(.command == "ferry") | .median) as $f
      | .results[] | [.command, .median, .mean, .stddev, .median / $f] | @tsv' "$json" |
      awk -F'\t' -v n="$entries" '{printf "| %s | %.3f | %.3f ± %.3f | %.0f | %.2f× |\n", $1, $2, $3, $4, n / $2, $5}' |
      tee -a "$summary"
    md
    md "background load from other processes during these runs: $background cores (of $(nproc))"
    md
    md "ratios (entries/s, ferry / other): $(jq -r '
      (.results[] | select(.command == "ferry") | .median) as $f
      | [.results[] | select(.command == "jwalk" or .command == "fd" or .command == "find" or .command == "ferry-base")
         | "ferry/\(.command) = \(.median / $f * 100 | round / 100)"] | join(", ")' "$json")"
  done
done

if [[ -n $RSS_SHAPES ]]; then
  md
  md "## Peak RSS (MiB, largest of $RSS_RUNS runs)"
  md
  md "| tree | mode | $(tools_for stat | sed 's/ / | /g') |"
  md "|---|---|$(for _ in $(tools_for stat); do printf -- '---:|'; done)"
fi
for shape in $RSS_SHAPES; do
  tree=$(tree_for "$shape")
  for mode in names stat; do
    row="| $shape | $mode |"
    for tool in $(tools_for stat); do
      if [[ " $(tools_for "$mode") " == *" $tool "* ]]; then
        kib=$(peak_rss "$(command_for "$tool" "$mode" "$tree")")
        RSS[$shape/$mode/$tool]=$kib
        row+=" $(awk -v k="$kib" 'BEGIN {printf "%.1f", k / 1024}') |"
      else
        row+=" – |"
      fi
    done
    md "$row"
  done
done

if first_probe; then
  tree=$(tree_for flat)
  md
  md "## Time to first entry, flat tree (ms from spawn to first stdout byte, $FIRST_RUNS runs)"
  md
  md "| tool | mode | median | min | max |"
  md "|---|---|---:|---:|---:|"
  ((QUIET_WAIT > 0)) && wait_quiet
  for mode in names stat; do
    for tool in ferry ferry-base find fd jwalk walkdir; do
      wanted "$tool" || continue
      line=$(eval "$FIRST --runs $FIRST_RUNS -- $(command_for "$tool" "$mode" "$tree")" | tail -1)
      FIRST_MS[$mode/$tool]=$(echo "$line" | sed -E 's/.*median_ms=([0-9.]+).*/\1/')
      md "| $tool | $mode | $(echo "$line" | sed -E 's/.*median_ms=([0-9.]+) min_ms=([0-9.]+) max_ms=([0-9.]+).*/\1 | \2 | \3/') |"
    done
  done
fi

# The goals of the scan capability, checked on this run's numbers.
check() { awk -v v="$2" -v lim="$4" -v op="$3" 'BEGIN {exit !((op == ">=") ? v >= lim : v < lim)}' && echo met || echo "NOT met"; }
# Entries/s of ferry divided by those of tool $2 in group $1; empty when
# the group did not run that tool.
ratio() {
  [[ -f $OUT/$1.json ]] || return 0
  jq -r --arg o "$2" '(.results[] | select(.command == "ferry") | .median) as $f
  | .results[] | select(.command == $o) | .median / $f' "$OUT/$1.json"
}
md
md "## Goals"
md
r=$(ratio wide-stat jwalk)
if [[ -n $r ]]; then
  md "- wide tree with stat, ferry/jwalk entries/s = $(printf %.2f "$r") (goal ≥ 1.5): $(check x "$r" ">=" 1.5)"
fi
r=$(ratio wide-stat fd)
if [[ -n $r ]]; then
  md "- wide tree with stat, ferry/fd entries/s = $(printf %.2f "$r") (goal ≥ 1.0): $(check x "$r" ">=" 1.0)"
fi
# This build against BASELINE, run in the same groups: it must not be slower.
# The CPU time (user + system, mean) ratio is printed too: on a busy machine
# it is steadier than the wall-clock one.
for mode in names stat; do
  r=$(ratio "wide-$mode" ferry-base)
  if [[ -n $r ]]; then
    cpu=$(jq -r '(.results[] | select(.command == "ferry") | .user + .system) as $f
      | .results[] | select(.command == "ferry-base") | (.user + .system) / $f' "$OUT/wide-$mode.json")
    md "- wide tree, $mode, entries/s of this build / BASELINE = $(printf %.3f "$r") (goal ≥ 0.97): $(check x "$r" ">=" 0.97); CPU time BASELINE / this build = $(printf %.3f "$cpu")"
  fi
done
for key in flat/names flat/stat wide/names wide/stat; do
  if [[ -n ${RSS[$key/ferry]:-} ]]; then
    mib=$(awk -v k="${RSS[$key/ferry]}" 'BEGIN {printf "%.1f", k / 1024}')
    md "- peak RSS of ferry, ${key%/*} tree, ${key#*/}: $mib MiB (goal < 64 MiB): $(check x "$mib" "<" 64)"
  fi
done
for mode in names stat; do
  if [[ -n ${FIRST_MS[$mode/ferry]:-} ]]; then
    ms=${FIRST_MS[$mode/ferry]}
    md "- time to first entry of ferry, flat tree, $mode: $ms ms median (goal < 50 ms): $(check x "$ms" "<" 50)"
  fi
done

echo "== results in $OUT (summary: $summary)" >&2
