#!/usr/bin/env bash
# Replacing objects at a directory endpoint (docs/benchmarks.md, "Site
# sync"): N small files are premigrated once, then each round rewrites
# them and times `ferry premigrate --overwrite` of all of them, which
# replaces every object in place, as the migrate step of an incremental
# site_sync does. Two binaries, alternating in the same run, each with
# its own files and endpoint under DIR (put DIR on the filesystem to
# measure: the endpoint's is the one that matters).
#
#   scripts/bench-dir-replace.sh OLD_FERRY NEW_FERRY DIR
#   N=2000 ROUNDS=5 scripts/bench-dir-replace.sh ./ferry-old ./ferry-new /var/tmp/bench
#
# Prints one line per binary and round: seconds, user, system.
set -euo pipefail
old=$1 new=$2 dir=$3
n=${N:-2000} rounds=${ROUNDS:-5}
mkdir -p "$dir"
for b in old new; do
  root="$dir/$b"
  rm -rf "$root"
  mkdir -p "$root/data" "$root/ep"
  printf '[Endpoint ep]\ntype = directory\nroot = %s/data\npath = %s/ep\n' "$root" "$root" > "$root/ferry.conf"
  python3 - "$root/data" "$n" > "$root/list.json" <<'EOF'
import json, os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = f"{root}/d{i % (n // 50 or 1)}"
    os.makedirs(d, exist_ok=True)
    open(f"{d}/f{i}", "wb").write(os.urandom(1024))
    print(json.dumps({"path": f"{d}/f{i}"}))
EOF
done
# Premigrates with binary $2 the files of copy $1 (old or new).
run() {
  "$2" premigrate --config "$dir/$1/ferry.conf" --no-progress --overwrite --from "$dir/$1/list.json" > /dev/null
}
run old "$old"
run new "$new"
TIMEFORMAT='%R s, %U s user, %S s system'
for r in $(seq "$rounds"); do
  for b in old new; do
    bin=$old
    [ "$b" = new ] && bin=$new
    python3 -c '
import json, os, sys
for l in open(sys.argv[1]):
    open(json.loads(l)["path"], "wb").write(os.urandom(1024))' "$dir/$b/list.json"
    sync
    printf '%s round %s: ' "$b" "$r" >&2
    time run "$b" "$bin"
  done
done
