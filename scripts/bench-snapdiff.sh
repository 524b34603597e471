#!/usr/bin/env bash
# End-to-end snapdiff benchmark on a real btrfs fileset (loop-mounted
# image): a FILES-entry tree (every file holds data), then for each change
# set a committed baseline run, the change set, and `ferry snapdiff
# --dry-run` (repeatable: it deletes its snapshot and leaves the state
# alone) against a full `ferry scan` of the same live tree in one hyperfine
# run, warm and with the page cache dropped before every run (cold):
#
#   uniform    1 % deleted, 1 % appended, 1 % created at random, 0.1 % of
#              directories moved (the worst case: every directory touched)
#   clustered  the same number of changes in 300 directories
#   tiny       0.01 % deleted, appended and created at random
#   journal    the uniform set again, with the `none` provider and its
#              event journal (`ferry journal` running; the change made
#              while it runs): `ferry snapdiff --provider none`, which
#              reads only what the journal points at
#   btrfs-journal  the uniform set again on btrfs, with `ferry journal`
#              running on the subvolume: the btrfs provider reads from its
#              snapshot only the inodes the journal's events name
#   tiny-journal   the tiny set the same way
#
# Then the bytes of manifest a committed run writes (its delta) and peak
# RSS against the memory budget: MEM_LIMIT (below what the read of
# changes holds: the run falls back to a full read, which spills) and
# 128M (the read of changes fits), each marked within or OVER.
#
#   scripts/bench-snapdiff.sh [WORKDIR]     (root; default /work/bench-snapdiff)
#
# Environment: FILES (1000000), RUNS (5), MEM_LIMIT (48M), THREADS (2),
# SETS ("uniform clustered tiny journal btrfs-journal tiny-journal"),
# COLD (1: also cold runs).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/work/bench-snapdiff}
files=${FILES:-1000000}
runs=${RUNS:-5}
mem=${MEM_LIMIT:-48M}
threads=${THREADS:-2}
sets=${SETS:-uniform clustered tiny journal btrfs-journal tiny-journal}
cold=${COLD:-1}
for t in hyperfine mkfs.btrfs /usr/bin/time python3; do
  command -v "$t" >/dev/null || { echo "bench-snapdiff: needs $t" >&2; exit 1; }
done
cargo build --release --quiet
ferry=$PWD/target/release/ferry

mkdir -p "$work"
img=$work/btrfs.img mnt=$work/mnt
if ! mountpoint -q "$mnt"; then
  mkdir -p "$mnt"
  [ -f "$img" ] || { truncate -s 16G "$img"; mkfs.btrfs -q "$img"; }
  mount -o loop "$img" "$mnt"
fi
fs=$mnt/fs1 state=$mnt/state
if [ ! -d "$fs" ]; then
  btrfs subvolume create "$fs" >/dev/null
  echo "bench-snapdiff: generating $files files"
  "$ferry" gen-tree --shape wide --files "$files" "$fs/tree"
  sync
fi
rm -rf "$state"
# Peak RSS of a command against budget $1 (K/M/G), labelled $2.
peak() {
  local budget=$1 label=$2; shift 2
  local kb
  /usr/bin/time -f %M -o "$work/peak.kb" "$@" >/dev/null 2>&1 || true
  kb=$(tail -1 "$work/peak.kb")
  python3 -c '
import sys
b, label, kb = sys.argv[1], sys.argv[2], int(sys.argv[3])
limit = int(b[:-1]) * {"K": 1, "M": 1024, "G": 1024 * 1024}[b[-1]]
verdict = "within" if kb <= limit else "OVER"
print(f"{label}, mem-limit {b}: peak RSS {kb / 1024:.1f} MiB: {verdict}")
' "$budget" "$label" "$kb"
}
sd() { "$ferry" snapdiff --provider btrfs --state-dir "$state" -j "$threads" "$@" "$fs"; }
echo "bench-snapdiff: baseline run"
sd --summary >/dev/null

change() {
python3 - "$fs/tree" "$1" <<'PY'
import os, random, sys
root, kind = sys.argv[1], sys.argv[2]
rnd = random.Random(42)
dirs, files = [], []
for d, ds, fs in os.walk(root):
    dirs.append(d)
    files.extend(os.path.join(d, f) for f in fs)
n = len(files)
leaves = [d for d in dirs if d.count("/") == root.count("/") + 2]
if kind == "clustered":
    # The uniform set's number of changes, in 300 directories.
    chosen = set(rnd.sample(leaves, 300))
    files = [f for f in files if os.path.dirname(f) in chosen]
    dirs = sorted(chosen)
    k = n // 100
elif kind.startswith("tiny"):
    k = n // 10000
else:
    k = n // 100
rnd.shuffle(files)
deleted, updated = files[:k], files[k : 2 * k]
for f in deleted:
    os.unlink(f)
for f in updated:
    with open(f, "ab") as h:
        h.write(b"changed")
for i in range(k):
    with open(os.path.join(rnd.choice(dirs), f"created-{kind}-{i}"), "wb") as h:
        h.write(b"new")
moved = 0
if kind in ("uniform", "journal", "btrfs-journal"):
    for d in rnd.sample(leaves, max(1, len(leaves) // 1000)):
        target = rnd.choice(leaves)
        dest = os.path.join(target, f"moved-{moved}")
        # A second run of the script on the same tree may find dest taken.
        if target.startswith(d) or not os.path.exists(d) or not os.path.exists(target) or os.path.exists(dest):
            continue
        os.rename(d, dest)
        moved += 1
print(f"{kind}: files {n}: deleted {len(deleted)}, updated {len(updated)}, created {k}, dirs moved {moved}")
PY
sync
}

journal_bench() {
  local jstate=$mnt/jstate jd=(--provider none --state-dir "$mnt/jstate" -j "$threads")
  rm -rf "$jstate"
  mkdir -p "$jstate"
  "$ferry" journal --state-dir "$jstate" "$fs" 2>"$work/journal.log" &
  local jpid=$!
  for _ in $(seq 100); do grep -q journaling "$work/journal.log" && break; sleep 0.1; done
  echo "bench-snapdiff: journal baseline (a full walk)"
  "$ferry" snapdiff "${jd[@]}" --summary "$fs" >/dev/null
  change journal
  echo "bench-snapdiff: one dry run (counts)"
  "$ferry" snapdiff "${jd[@]}" --dry-run --summary "$fs"
  hyperfine --warmup 1 --runs "$runs" --export-markdown "$work/snapdiff-journal-warm.md" \
    -n "ferry snapdiff --provider none (journal, warm)" "$ferry snapdiff ${jd[*]} --dry-run --summary $fs" \
    -n "ferry scan (full rescan, warm)" "$ferry scan -j $threads --summary $fs"
  for m in "$mem" 128M; do
    peak "$m" journal "$ferry" snapdiff "${jd[@]}" --dry-run --summary --mem-limit "$m" "$fs"
  done
  ls -l "$jstate"
  kill "$jpid"
  wait "$jpid" || true
  # The btrfs sets that follow start from a baseline with these changes.
  sd --summary >/dev/null
}

# The btrfs provider guided by the journal: change set $1 (the uniform
# set's changes, or the tiny set's), made while the writer runs on the
# subvolume, whose journal the runs (state directory $state) find and read.
btrfs_journal_bench() {
  local set=$1
  "$ferry" journal --state-dir "$state" "$fs" 2>"$work/journal.log" &
  local jpid=$!
  for _ in $(seq 100); do grep -q journaling "$work/journal.log" && break; sleep 0.1; done
  echo "bench-snapdiff: $set baseline (records the journal position)"
  sd --summary >/dev/null
  change "$set"
  echo "bench-snapdiff: one dry run (counts)"
  sd --dry-run --summary
  btrfs subvolume sync "$mnt"
  hyperfine --warmup 1 --runs "$runs" --export-markdown "$work/snapdiff-$set-warm.md" \
    -n "ferry snapdiff ($set: btrfs guided by the journal, warm)" "$ferry snapdiff --provider btrfs --state-dir $state -j $threads --dry-run --summary $fs" \
    -n "ferry scan (full rescan, warm)" "$ferry scan -j $threads --summary $fs"
  for m in "$mem" 128M; do
    peak "$m" "$set: btrfs guided by the journal" "$ferry" snapdiff --provider btrfs --state-dir "$state" -j "$threads" \
      --dry-run --summary --mem-limit "$m" "$fs"
  done
  echo "bench-snapdiff: committed run of $set (bytes of manifest written)"
  sd --summary | python3 -c 'import json,sys; r=json.load(sys.stdin); print({k: r.get(k) for k in ("read","examined","entries","manifest_bytes","manifest_seconds","diff_seconds")})'
  kill "$jpid"
  wait "$jpid" || true
  rm -f "$state"/journal.*
  # The sets that follow start from a run that read every change (one
  # guided by the journal may only be followed by such a run).
  sd --summary >/dev/null
}

for set in $sets; do
  if [ "$set" = journal ]; then
    journal_bench
    continue
  fi
  if [ "$set" = btrfs-journal ] || [ "$set" = tiny-journal ]; then
    btrfs_journal_bench "$set"
    continue
  fi
  echo "bench-snapdiff: change set $set"
  change "$set"
  echo "bench-snapdiff: one dry run (counts)"
  sd --dry-run --summary
  # Snapshots deleted so far (the baseline's rotation, the dry run's) are
  # freed by the btrfs cleaner in the background: let it finish first, or
  # the first set's runs time the cleaner (3x slower tiny runs).
  btrfs subvolume sync "$mnt"
  hyperfine --warmup 1 --runs "$runs" --export-markdown "$work/snapdiff-$set-warm.md" \
    -n "ferry snapdiff ($set, warm)" "$ferry snapdiff --provider btrfs --state-dir $state -j $threads --dry-run --summary $fs" \
    -n "ferry scan (full rescan, warm)" "$ferry scan -j $threads --summary $fs"
  if [ "$cold" = 1 ]; then
    hyperfine --runs "$runs" --prepare 'sync; echo 3 > /proc/sys/vm/drop_caches' \
      --export-markdown "$work/snapdiff-$set-cold.md" \
      -n "ferry snapdiff ($set, cold)" "$ferry snapdiff --provider btrfs --state-dir $state -j $threads --dry-run --summary $fs" \
      -n "ferry scan (full rescan, cold)" "$ferry scan -j $threads --summary $fs"
  fi
  if [ "$set" = uniform ]; then
    for m in "$mem" 128M; do
      peak "$m" "btrfs $set" "$ferry" snapdiff --provider btrfs --state-dir "$state" -j "$threads" --dry-run \
        --summary --mem-limit "$m" "$fs"
      peak "$m" "btrfs $set --full" "$ferry" snapdiff --provider btrfs --state-dir "$state" -j "$threads" \
        --dry-run --summary --full --mem-limit "$m" "$fs"
    done
    /usr/bin/time -v "$ferry" scan -j "$threads" --summary "$fs" 2>&1 >/dev/null | grep -E "Maximum resident|Elapsed" | sed "s/^/scan: /"
  fi
  echo "bench-snapdiff: committed run of $set (bytes of manifest written, compaction)"
  sd --summary | python3 -c 'import json,sys; r=json.load(sys.stdin); print({k: r.get(k) for k in ("entries","manifest_bytes","compaction","manifest_seconds","diff_seconds")})'
  ls -l "$state"
done
