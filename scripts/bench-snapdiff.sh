#!/usr/bin/env bash
# End-to-end snapdiff benchmark on a real btrfs fileset (loop-mounted
# image): a FILES-entry tree, a baseline run, then a change set of 1 %
# created, 1 % updated, 1 % deleted files and 0.1 % of directories moved.
# Compares `ferry snapdiff --dry-run` (repeatable: it deletes its snapshot
# and leaves the state alone) with a full `ferry scan` of the same fileset,
# and measures peak RSS with the memory budget below the manifest size.
#
#   scripts/bench-snapdiff.sh [WORKDIR]     (root; default /work/bench-snapdiff)
#
# Environment: FILES (1000000), RUNS (5), MEM_LIMIT (16M), THREADS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/work/bench-snapdiff}
files=${FILES:-1000000}
runs=${RUNS:-5}
mem=${MEM_LIMIT:-16M}
threads=${THREADS:-2}
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
echo "bench-snapdiff: baseline run"
"$ferry" snapdiff --provider btrfs --state-dir "$state" -j "$threads" --summary "$fs"

echo "bench-snapdiff: applying the change set"
python3 - "$fs/tree" <<'PY'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(42)
dirs, files = [], []
for d, ds, fs in os.walk(root):
    dirs.append(d)
    files.extend(os.path.join(d, f) for f in fs)
n = len(files)
rnd.shuffle(files)
deleted, updated = files[: n // 100], files[n // 100 : n // 50]
for f in deleted:
    os.unlink(f)
for f in updated:
    with open(f, "ab") as h:
        h.write(b"changed")
for i in range(n // 100):
    with open(os.path.join(rnd.choice(dirs), f"created-{i}"), "wb") as h:
        h.write(b"new")
movable = [d for d in dirs if d.count("/") == root.count("/") + 2]
moved = 0
for d in rnd.sample(movable, max(1, len(dirs) // 1000)):
    target = rnd.choice(movable)
    if target.startswith(d) or not os.path.exists(d) or not os.path.exists(target):
        continue
    os.rename(d, os.path.join(target, f"moved-{moved}"))
    moved += 1
print(f"files {n}: deleted {len(deleted)}, updated {len(updated)}, created {n // 100}, dirs moved {moved} of {len(dirs)}")
PY
sync

echo "bench-snapdiff: one dry run (counts)"
"$ferry" snapdiff --provider btrfs --state-dir "$state" -j "$threads" --dry-run --summary "$fs"
hyperfine --warmup 1 --runs "$runs" --export-markdown "$work/snapdiff-vs-scan.md" \
  -n "ferry snapdiff (1 % changes)" "$ferry snapdiff --provider btrfs --state-dir $state -j $threads --dry-run --summary $fs" \
  -n "ferry scan (full rescan)" "$ferry scan -j $threads --summary $fs"
ls -l "$state"/ferry.manifest.*
for m in "$mem" 1G; do
  /usr/bin/time -v "$ferry" snapdiff --provider btrfs --state-dir "$state" -j "$threads" --dry-run --summary \
    --mem-limit "$m" "$fs" 2>&1 >/dev/null | grep -E "Maximum resident|Elapsed" | sed "s/^/mem-limit $m: /"
done
/usr/bin/time -v "$ferry" scan -j "$threads" --summary "$fs" 2>&1 >/dev/null | grep -E "Maximum resident|Elapsed" | sed "s/^/scan: /"
