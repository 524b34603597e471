#!/usr/bin/env bash
# Latency-bound walks: `ferry scan` with stat against fd, jwalk and GNU find
# on latencyfs (tests/latencyfs/), a FUSE passthrough that makes every
# metadata request a round trip of LATENCY ms, as on GPFS, Lustre or NFS.
# Every run gets a fresh mount (a cold client cache: nothing is answered
# without a round trip). Results and a Markdown summary go to $OUT; see
# docs/benchmarks.md.
#
# usage: scripts/bench-latency.sh [BENCH_DIR]
#
# BENCH_DIR (default ./bench-trees) holds the trees (made by `ferry
# gen-tree`, reused when present). Environment overrides:
#   FILES=200000            files per tree
#   SHAPES="wide flat deep" tree shapes
#   LATENCY=1               ms per metadata request
#   SERVERS=1024            requests latencyfs serves at once (its cap)
#   THREADS="16 64 256"     -j of ferry (and of ferry-base)
#   OTHER_THREADS=64        -j of fd, --threads of jwalk
#   RUNS=3                  runs per ferry command (the median counts)
#   OTHER_RUNS=1            runs per command of the other tools (they are
#                           slower by more than the noise: jwalk takes
#                           minutes on one big directory)
#   FIND_DIRS=5             GNU find is single-threaded (one round trip at
#                           a time): it walks only the first FIND_DIRS
#                           top-level directories, and its rate is compared
#   TOOLS="ferry fd jwalk find dwalk pfind ferry-base"  (default: all
#                           available)
#   BASELINE=/path/to/ferry another ferry build, run as tool ferry-base
#   HPC=/work/hpc/install   where mpiFileUtils' dwalk and IO500's pfind are
#                           installed (bin/dwalk, bin/pfind; built from their
#                           public sources as docs/benchmarks.md says); each
#                           runs as OTHER_THREADS MPI ranks (mpirun -np)
#   OUT=BENCH_DIR/latency-FILES
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C

BENCH_DIR=${1:-${BENCH_DIR:-./bench-trees}}
FILES=${FILES:-200000}
SHAPES=${SHAPES:-"wide flat deep"}
LATENCY=${LATENCY:-1}
SERVERS=${SERVERS:-1024}
THREADS=${THREADS:-"16 64 256"}
OTHER_THREADS=${OTHER_THREADS:-64}
RUNS=${RUNS:-3}
OTHER_RUNS=${OTHER_RUNS:-1}
FIND_DIRS=${FIND_DIRS:-5}
OUT=${OUT:-$BENCH_DIR/latency-$FILES}
BASELINE=${BASELINE:-}
TOOLS=${TOOLS:-}
HPC=${HPC:-/work/hpc/install}

die() {
  echo "bench-latency: $*" >&2
  exit 1
}
wanted() {
  [[ $1 != ferry-base || -n $BASELINE ]] && [[ -z $TOOLS || " $TOOLS " == *" $1 "* ]] &&
    [[ $1 != dwalk && $1 != pfind || -x $HPC/bin/$1 ]]
}

[[ $(id -u) == 0 ]] || die "mounting latencyfs needs root"
[[ -e /dev/fuse ]] || die "/dev/fuse is missing"
command -v jq >/dev/null || die "jq is required"
FD=$(command -v fdfind || command -v fd) || ! wanted fd || die "fd (fdfind) is required"

echo "== building release binaries" >&2
cargo build --release --quiet --bin ferry --example jwalk_scan
cargo build --release --quiet --locked --manifest-path tests/latencyfs/Cargo.toml
BIN=${CARGO_TARGET_DIR:-target}/release
FERRY=$(realpath "$BIN/ferry")
JWALK=$(realpath "$BIN/examples/jwalk_scan")
LATENCYFS=$(realpath tests/latencyfs/target/release/latencyfs)
[[ -z $BASELINE ]] || BASE_FERRY=$(realpath "$BASELINE")

mkdir -p "$BENCH_DIR" "$OUT"
BENCH_DIR=$(realpath "$BENCH_DIR")
OUT=$(realpath "$OUT")
MNT=$OUT/mnt
mkdir -p "$MNT"
mountpoint -q "$MNT" && umount -l "$MNT"
touch -d 2000-01-01 "$OUT/old-stamp"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "kernel: $(uname -srm)"
  echo "ferry: $("$FERRY" --version) ($(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet -- src 2>/dev/null || echo ', src modified'))"
  [[ -z $BASELINE ]] || echo "ferry-base: $("$BASE_FERRY" --version), $BASE_FERRY"
  echo "fd: $([[ -n $FD ]] && "$FD" --version || echo 'not installed')"
  echo "find: $(find --version | head -1)"
  for t in dwalk pfind; do
    if wanted "$t"; then echo "$t: $HPC/bin/$t, $(mpirun --version | head -1), ranks: $OTHER_THREADS"; fi
  done
  echo "latencyfs: latency ${LATENCY} ms, servers $SERVERS"
  echo "files: $FILES, ferry -j: $THREADS ($RUNS runs), fd and jwalk -j: $OTHER_THREADS ($OTHER_RUNS runs)"
} | tee "$OUT/machine.txt" >&2

tree_for() {
  local shape=$1 dir="$BENCH_DIR/$1-$FILES"
  if [[ ! -d $dir ]]; then
    echo "== generating $shape tree with $FILES files in $dir" >&2
    rm -rf "$dir.partial"
    "$FERRY" gen-tree --shape "$shape" --files "$FILES" "$dir.partial"
    sync
    mv "$dir.partial" "$dir"
  fi
  echo "$dir"
}

# The roots each tool walks under the mount: all of it, or for find the
# first FIND_DIRS top-level directories (or all of a tree that has fewer).
roots_for() {
  local tool=$1 tree=$2
  if [[ $tool == find ]]; then
    local tops
    tops=$(find "$tree" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort | head -n "$FIND_DIRS")
    if [[ -n $tops ]] && (($(find "$tree" -mindepth 1 -maxdepth 1 -type d | wc -l) > FIND_DIRS)); then
      sed "s|^|$MNT/|" <<<"$tops"
      return
    fi
  fi
  echo "$MNT"
}

# Entries below (and including) the roots, counted on the source.
entries_for() {
  local tree=$1 n=0 r
  shift
  for r in "$@"; do
    n=$((n + $(find "$tree${r#"$MNT"}" | wc -l)))
  done
  echo "$n"
}

# Sets CMD to what `tool` runs with `j` threads on the roots that follow.
command_for() {
  local tool=$1 j=$2
  shift 2
  case $tool in
    ferry) CMD=("$FERRY" scan --no-progress --summary -j "$j" "$@") ;;
    ferry-base) CMD=("$BASE_FERRY" scan --no-progress --summary -j "$j" "$@") ;;
    # A modification-time filter that matches everything makes fd lstat
    # every entry (as in scripts/bench-walk.sh).
    fd) CMD=("$FD" -u -j "$j" --changed-before 2100-01-01 . "$@") ;;
    jwalk) CMD=("$JWALK" --threads "$j" --stat "$@") ;;
    find) CMD=(find "$@" -printf '%s %p\n') ;;
    # One MPI rank per thread; ranks yield when idle (two cores hold them
    # all). dwalk lstats every entry by default.
    dwalk) CMD=(mpirun --allow-run-as-root --oversubscribe --mca mpi_yield_when_idle 1 -np "$j" "$HPC/bin/dwalk" "$@") ;;
    # pfind lstats files only for a test that needs it: with -newer it
    # lstats every file, whatever it matches.
    pfind) CMD=(mpirun --allow-run-as-root --oversubscribe --mca mpi_yield_when_idle 1 -np "$j" "$HPC/bin/pfind" "$@" -newer "$OUT/old-stamp" -s 0 -C) ;;
  esac
}

# One run on a fresh mount: prints "seconds requests mean_in_flight".
run_once() {
  local tree=$1 stats=$OUT/stats.json
  shift
  rm -f "$stats"
  "$LATENCYFS" --latency "$LATENCY" --servers "$SERVERS" --stats "$stats" "$tree" "$MNT" >"$OUT/latencyfs.out" 2>"$OUT/latencyfs.err" &
  local pid=$!
  local waited=0
  until grep -q ready "$OUT/latencyfs.out" 2>/dev/null; do
    sleep 0.05
    waited=$((waited + 1))
    ((waited < 200)) || die "latencyfs did not mount: $(cat "$OUT/latencyfs.err")"
  done
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>"$OUT/tool.err" || die "$* failed: $(tail -3 "$OUT/tool.err")"
  t1=$(date +%s.%N)
  umount -l "$MNT"
  wait "$pid"
  jq -r --arg s "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')" \
    '[$s, (.lookup + .getattr + .opendir + .readdir + .readlink + .getxattr + .listxattr + .open), .mean_in_flight] | @tsv' "$stats"
}

# The round trip one request takes as the client sees it (FUSE's own cost
# included): one thread walking one top-level directory.
echo "== the single-request round trip" >&2
probe_tree=$(tree_for wide)
probe_root=$(find "$probe_tree" -mindepth 1 -maxdepth 1 -type d | sort | head -1)
read -r ps preq _ < <(run_once "$probe_tree" "$FERRY" scan --no-progress --summary -j 1 "$MNT/${probe_root##*/}")
RTT=$(awk -v s="$ps" -v r="$preq" 'BEGIN {printf "%.3f", s * 1000 / r}')
echo "   $preq requests in $ps s on one thread: $RTT ms a request" >&2
echo "round trip seen by one thread: $RTT ms (configured $LATENCY ms)" >>"$OUT/machine.txt"

RESULTS=$OUT/results.tsv
printf 'shape\ttool\tthreads\tentries\tseconds\tentries_per_s\tof_limit\trequests_per_entry\tmean_in_flight\n' >"$RESULTS"
for shape in $SHAPES; do
  tree=$(tree_for "$shape")
  for tool in ferry ferry-base fd jwalk dwalk pfind find; do
    wanted "$tool" || continue
    [[ $tool != fd || -n $FD ]] || continue
    threads=$THREADS runs=$RUNS
    case $tool in
      fd | jwalk | dwalk | pfind) threads=$OTHER_THREADS runs=$OTHER_RUNS ;;
      find) threads=1 runs=$OTHER_RUNS ;;
    esac
    mapfile -t roots < <(roots_for "$tool" "$tree")
    entries=$(entries_for "$tree" "${roots[@]}")
    for j in $threads; do
      echo "== $shape: $tool -j $j ($entries entries)" >&2
      command_for "$tool" "$j" "${roots[@]}"
      : >"$OUT/runs.tsv"
      for ((r = 0; r < runs; r++)); do
        run_once "$tree" "${CMD[@]}" | tee -a "$OUT/runs.tsv" | sed 's/^/   /' >&2
      done
      # The median run by time.
      read -r s req inflight < <(sort -n "$OUT/runs.tsv" | sed -n "$(((runs + 1) / 2))p")
      awk -v shape="$shape" -v tool="$tool" -v j="$j" -v n="$entries" -v s="$s" -v req="$req" \
        -v f="$inflight" -v lat="$LATENCY" 'BEGIN {
          rate = n / s
          printf "%s\t%s\t%d\t%d\t%.2f\t%.0f\t%.2f\t%.2f\t%.1f\n", shape, tool, j, n, s, rate,
            rate / (j / (lat / 1000)), req / n, f
        }' >>"$RESULTS"
    done
  done
done

# The summary: each row, then ferry's speed over each other tool at each -j.
{
  echo "# Latency-bound walks ($LATENCY ms a request; $(date -u +%Y-%m-%d))"
  echo
  sed 's/^/    /' "$OUT/machine.txt"
  echo
  echo "of_limit: entries/s over threads / latency (the issue's ceiling)."
  echo "mean_in_flight: requests latencyfs held in service on average over the mount's life."
  echo
  echo "| shape | tool | -j | entries | s | entries/s | of N/latency | requests/entry | mean in flight |"
  echo "|---|---|---|---|---|---|---|---|---|"
  tail -n +2 "$RESULTS" | awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s | %.0f %% | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7 * 100, $8, $9}'
  echo
  echo "ferry's rate over the other tools' (same shape, same -j; find at -j 1):"
  echo
  awk -F'\t' 'NR > 1 {rate[$1 "/" $2 "/" $3] = $6; shapes[$1] = 1; js[$3] = 1}
    END {
      for (sh in shapes) for (j in js) {
        f = rate[sh "/ferry/" j]; if (f == "") continue
        line = ""
        split("ferry-base fd jwalk dwalk pfind", others, " ")
        for (k in others) { o = rate[sh "/" others[k] "/" j]; if (o != "") line = line sprintf(" %s %.2fx", others[k], f / o) }
        o = rate[sh "/find/1"]; if (o != "") line = line sprintf(" find %.1fx", f / o)
        printf "- %s -j %s:%s\n", sh, j, line
      }
    }' "$RESULTS" | sort
} >"$OUT/summary.md"
cat "$OUT/summary.md"
