#!/usr/bin/env bash
# Self-test of the fake mm* commands on a real (loop-mounted) btrfs.
#
# Needs root, btrfs in the kernel, mkfs.btrfs and btrfs (btrfs-progs) and
# python3.  Without them it prints "SKIP: ..." and exits 77.
# Everything lives in a fresh directory under /tmp and is removed on exit
# (the loop mount is unmounted and its loop device released).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONDONTWRITEBYTECODE=1

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (loop mount)"
command -v mkfs.btrfs >/dev/null || skip "mkfs.btrfs not installed (apt-get install btrfs-progs)"
command -v btrfs >/dev/null || skip "btrfs not installed (apt-get install btrfs-progs)"
command -v python3 >/dev/null || skip "python3 not installed"
grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null || true
grep -qw btrfs /proc/filesystems || skip "kernel has no btrfs"

WORK="$(mktemp -d /tmp/fake-mm-selftest.XXXXXX)"
IMG="$WORK/disk.img"
MNT="$WORK/mnt"
mkdir -p "$MNT"
cleanup() {
    set +e
    if mountpoint -q "$MNT"; then umount "$MNT" || umount -l "$MNT"; fi
    for dev in $(losetup -j "$IMG" 2>/dev/null | cut -d: -f1); do
        losetup -d "$dev"
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

truncate -s 512M "$IMG"
mkfs.btrfs -q "$IMG" >/dev/null
mount -o loop "$IMG" "$MNT" || skip "cannot loop-mount a btrfs image here"

# filesets: fs1 (independent subvolume), fs1/dep (dependent: plain dir),
# fs1/nested (independent subvolume linked inside fs1)
btrfs -q subvolume create "$MNT/fs1" >/dev/null
mkdir "$MNT/fs1/dep"
btrfs -q subvolume create "$MNT/fs1/nested" >/dev/null
echo nested > "$MNT/fs1/nested/inner"
echo dep > "$MNT/fs1/dep/depfile"

cat > "$WORK/config.json" <<EOF
{"devices": {"gpfs0": {"mount": "$MNT"}},
 "filesets": {"gpfs0": [
   {"name": "fs1", "id": 1, "path": "$MNT/fs1", "independent": true},
   {"name": "dep", "id": 2, "path": "$MNT/fs1/dep", "independent": false},
   {"name": "nested", "id": 7, "path": "$MNT/fs1/nested", "independent": true}
 ]}}
EOF

export FAKE_MM_CONFIG="$WORK/config.json"
export PATH="$HERE:$PATH"
export WORK MNT HERE
unset FAKE_MM_FAIL FAKE_MM_STATE

python3 - <<'PYEOF'
import os, re, stat, subprocess, sys, time

WORK, MNT, HERE = os.environ["WORK"], os.environ["MNT"], os.environ["HERE"]
FS1 = os.path.join(MNT, "fs1")
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, file=sys.stderr)


def run(*args, env=None, input=None):
    e = dict(os.environ)
    e.pop("FAKE_MM_FAIL", None)
    if env:
        e.update(env)
    p = subprocess.run(list(args), capture_output=True, env=e, input=input)
    return p.returncode, p.stdout.decode("utf-8", "replace"), \
        p.stderr.decode("utf-8", "replace")


def unquote(b):
    """Strict RFC 3986 percent-decoding of bytes."""
    out, i = bytearray(), 0
    while i < len(b):
        if b[i] == 0x25:
            h = b[i + 1:i + 3]
            if len(h) != 2 or not re.fullmatch(rb"[0-9A-Fa-f]{2}", h):
                raise ValueError("bad escape in %r" % b)
            out.append(int(h, 16))
            i += 3
        else:
            out.append(b[i])
            i += 1
    return bytes(out)


def ydecode(s):
    return unquote(s.encode()).decode("utf-8", "surrogateescape")


def yparse(text, cmd):
    lines = text.splitlines()
    hdr = lines[0].split(":")
    assert hdr[:3] == [cmd, "", "HEADER"], lines[0]
    names = hdr[6:]
    rows = []
    for l in lines[1:]:
        f = l.split(":")
        assert f[0] == cmd and f[2] == "0", l
        assert len(f) == len(hdr), (len(f), len(hdr), l)
        rows.append({n: ydecode(v) for n, v in zip(names, f[6:]) if n})
    return rows


# --- awkward names --------------------------------------------------------
names = [b"new\nline", b"sp ace", b"per%cent", b"\xff", b"x" * 200,
         b"dash -- dash", b"col:on", b"plus+at@hash#", b"tab\tname",
         b"back\\slash", "ünï".encode(), b"%41", b"-- leading"]
base = os.fsencode(FS1)
os.mkdir(base + b"/d")
for n in names:
    with open(base + b"/d/" + n, "wb") as f:
        f.write(b"data " + n)
os.mkdir(base + b"/d/" + b"sub dir\n2")
with open(base + b"/d/sub dir\n2/" + b"\xff\xfe%", "wb") as f:
    f.write(b"z")
os.mkdir(base + b"/d/empty")
os.symlink(b"d/\xff", base + b"/link\xff")
os.symlink(b"/nonexistent", base + b"/dangling")
os.mkfifo(base + b"/fifo")
os.link(base + b"/d/sp ace", base + b"/hardlink")
for n, m in ((b"suid", 0o4755), (b"suid_nox", 0o4644), (b"sgid", 0o2750),
             (b"sticky_dir", 0o1777), (b"sticky_nox", 0o1776)):
    p = base + b"/" + n
    if n.startswith(b"sticky"):
        os.mkdir(p)
    else:
        open(p, "wb").close()
    if n == b"suid":
        os.chown(p, 1234, 5678)   # before chmod: chown clears set-user-ID
    os.chmod(p, m)
os.utime(base + b"/d/sp ace", ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))

# --- mmlsfileset ----------------------------------------------------------
rc, out, err = run("mmlsfileset", "gpfs0", "-Y")
check(rc == 0, "mmlsfileset -Y rc %d %s" % (rc, err))
check(out.startswith("mmlsfileset::HEADER:version:reserved:reserved:"
                     "filesystemName:filesetName:id:rootInode:status:path:"
                     "parentId:created:"), "mmlsfileset header")
rows = {r["filesetName"]: r for r in yparse(out, "mmlsfileset")}
check(set(rows) == {"root", "fs1", "dep", "nested"}, "fileset names %s" % rows.keys())
check(rows["root"]["path"] == MNT and rows["root"]["id"] == "0"
      and rows["root"]["parentId"] == "--", "root row")
check(rows["fs1"]["path"] == FS1 and rows["fs1"]["status"] == "Linked", "fs1 path")
check(rows["fs1"]["isInodeSpaceOwner"] == "1" and rows["nested"]["isInodeSpaceOwner"] == "1"
      and rows["dep"]["isInodeSpaceOwner"] == "0", "independence flags")
check(rows["dep"]["inodeSpace"] == rows["fs1"]["inodeSpace"] != rows["nested"]["inodeSpace"]
      != rows["root"]["inodeSpace"], "inode spaces")
check(rows["dep"]["parentId"] == "1" and rows["nested"]["parentId"] == "1", "parents")
check(rows["fs1"]["rootInode"] == str(os.stat(FS1).st_ino), "rootInode")
check(re.fullmatch(r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}", rows["fs1"]["created"])
      is not None, "created format %r" % rows["fs1"]["created"])
check("%2F" in out and "%3A" in out, "-Y percent encoding")
rc, out, err = run("mmlsfileset", "gpfs0", "fs1,dep", "-Y")
check(rc == 0 and [r["filesetName"] for r in yparse(out, "mmlsfileset")] == ["fs1", "dep"],
      "mmlsfileset fileset list")
rc, out, err = run("mmlsfileset", "/dev/gpfs0", "-J", FS1, "-Y")
check(rc == 0 and [r["filesetName"] for r in yparse(out, "mmlsfileset")] == ["fs1"], "-J")
rc, out, err = run("mmlsfileset", "gpfs0", "nosuch", "-Y")
check(rc != 0 and "nosuch" in err, "unknown fileset")
rc, out, err = run("mmlsfileset", "gpfs9", "-Y")
check(rc != 0 and "6027-1388" in err, "unknown device")
rc, out, err = run("mmlsfileset")
check(rc != 0 and "Usage" in err, "mmlsfileset usage")
rc, out, err = run("mmlsfileset", "gpfs0", "-Z")
check(rc != 0 and "Incorrect option" in err, "bad option")

# --- mmlssnapshot / mmcrsnapshot ------------------------------------------
rc, out, err = run("mmlssnapshot", "gpfs0", "-Y")
check(rc == 0 and out.strip() == "No snapshots in file system gpfs0", "no snapshots")
rc, out, err = run("mmcrsnapshot", "gpfs0", "fs1:snapA")
check(rc == 0 and "Snapshot fs1:snapA created with id" in out, "mmcrsnapshot new form %s" % err)
rc, out, err = run("mmcrsnapshot", "gpfs0", "fs1:snapA")
check(rc != 0 and "already exists" in err, "snapshot exists")
rc, out, err = run("mmcrsnapshot", "gpfs0", "dep:x")
check(rc != 0 and "independent" in err and not os.path.exists(FS1 + "/dep/.snapshots"),
      "dependent fileset refused")
rc, out, err = run("mmcrsnapshot", "gpfs0", "snapG")
check(rc != 0 and "global" in err, "global snapshot refused")
rc, out, err = run("mmcrsnapshot", "gpfs0", "fs1:a/b")
check(rc != 0, "bad snapshot name")
rc, out, err = run("mmcrsnapshot", "gpfs0")
check(rc != 0 and "Usage" in err, "mmcrsnapshot usage")
# failure injection: first two calls fail (transient), third succeeds
for i in range(2):
    rc, out, err = run("mmcrsnapshot", "gpfs0", "snapB", "-j", "fs1",
                       env={"FAKE_MM_FAIL": "mmcrsnapshot:2"})
    check(rc == 1 and "Unable to quiesce all nodes" in err
          and not os.path.exists(FS1 + "/.snapshots/snapB"), "injected failure %d" % i)
rc, out, err = run("mmcrsnapshot", "gpfs0", "snapB", "-j", "fs1",
                   env={"FAKE_MM_FAIL": "mmcrsnapshot:2"})
check(rc == 0 and os.path.isdir(FS1 + "/.snapshots/snapB"), "after injected failures %s" % err)
rc, out, err = run("mmlssnapshot", "gpfs0", "-Y")
snaps = yparse(out, "mmlssnapshot")
check(rc == 0 and [s["directory"] for s in snaps] == ["snapA", "snapB"], "mmlssnapshot rows")
check(all(s["fileset"] == "fs1" and s["status"] == "Valid" and s["filesystemName"] == "gpfs0"
          for s in snaps), "mmlssnapshot fields")
ids = {s["directory"]: int(s["snapID"]) for s in snaps}
check(ids["snapA"] < ids["snapB"], "snapshot ids increase")
rc, out, err = run("mmlssnapshot", "gpfs0", "-j", "fs1", "-Y")
check(rc == 0 and len(yparse(out, "mmlssnapshot")) == 2, "mmlssnapshot -j")
rc, out, err = run("mmlssnapshot", "gpfs0", "-j", "nested", "-Y")
check(rc == 0 and out.startswith("No snapshots"), "mmlssnapshot -j other fileset")
rc, out, err = run("mmlssnapshot", "gpfs0", "-s", "fs1:nosuch", "-Y")
check(rc != 0 and "6027-2612" in err, "mmlssnapshot -s missing")
SNAP = FS1 + "/.snapshots/snapA"
# snapshot is read-only and frozen
try:
    open(SNAP + "/newfile", "w")
    check(False, "snapshot writable")
except OSError:
    check(True, "")
with open(base + b"/after_snapshot", "wb") as f:
    f.write(b"later")
check(not os.path.exists(SNAP + "/after_snapshot"), "snapshot frozen")

# --- mmapplypolicy on the snapshot ----------------------------------------
POL = os.path.join(HERE, "ferry-list.pol")
prefix = os.path.join(WORK, "lists", "snapA")
os.makedirs(os.path.dirname(prefix))
rc, out, err = run("mmapplypolicy", SNAP, "-P", POL, "-I", "defer", "-f", prefix,
                   "--scope", "inodespace", "-N", "all", "-g", WORK, "-s", "/tmp",
                   "-a", "4", "-B", "1000", "-L", "1", "-m", "8", "--qos", "maintenance")
check(rc == 0, "mmapplypolicy rc %d %s" % (rc, err))
check("Summary of Rule Applicability" in out, "mmapplypolicy summary")
listfile = prefix + ".list.ferry"
check(os.path.isfile(listfile), "list file name Prefix.list.ListName")
data = open(listfile, "rb").read()
check(data.endswith(b"\n"), "list ends with newline")
LINE = re.compile(rb"(\d+) (\d+) (\d+)  ([A-Za-z0-9._~%-]*) -- ([A-Za-z0-9._~%-]+)")
recs = []
for line in data.split(b"\n")[:-1]:
    m = LINE.fullmatch(line)
    check(m is not None, "record format %r" % line)
    if m:
        recs.append((int(m.group(1)), int(m.group(2)), int(m.group(3)),
                     unquote(m.group(4)), unquote(m.group(5))))
check([r[0] for r in recs] == sorted(r[0] for r in recs), "records sorted by inode")
# expected: find -print0, minus the hidden .snapshots and the junction of the
# nested independent fileset (another inode space)
snapb = os.fsencode(SNAP)
found = subprocess.run(["find", snapb, "(", "-path", snapb + b"/.snapshots", "-o",
                        "-path", snapb + b"/nested", ")", "-prune", "-o", "-print0"],
                       capture_output=True, check=True).stdout
expected = set(found.split(b"\0")[:-1])
got = [r[4] for r in recs]
check(len(got) == len(set(got)), "no duplicate paths")
check(set(got) == expected, "escaping round-trips: decoded paths == find -print0 "
      "(missing %r, extra %r)" % (sorted(expected - set(got))[:5], sorted(set(got) - expected)[:5]))
check(snapb in set(got), "root directory itself listed")
check(all(r[2] == ids["snapA"] for r in recs), "snapid = snapshot id")
check(not any(b"after_snapshot" in p for p in got), "list reflects the snapshot")
for ino, gen, sid, show, path in recs:
    st = os.lstat(path)
    check(ino == st.st_ino, "inode of %r" % path)
    f = show.split(b" ")
    check(len(f) == 9, "show fields %r" % show)
    if len(f) != 9:
        continue
    check(f[0].decode() == stat.filemode(st.st_mode), "MODE %r %r" % (f[0], path))
    check(int(f[1]) == st.st_size and int(f[2]) == st.st_uid and int(f[3]) == st.st_gid
          and int(f[4]) == st.st_nlink, "size/uid/gid/nlink %r" % path)
    def ts(ns):
        s, r = divmod(ns, 10**9)
        return (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s)) + ".%06d" % (r // 1000)).encode()
    check(f[5] + b" " + f[6] == ts(st.st_mtime_ns) and f[7] + b" " + f[8] == ts(st.st_ctime_ns),
          "timestamps %r" % path)
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        check(gen != 0, "generation of %r" % path)
    else:
        check(gen == 0, "generation 0 for non-file %r" % path)
bypath = {r[4]: r for r in recs}
spath = snapb + b"/d/sp ace"
check(bypath[spath][3].split(b" ")[5:7] == [b"2017-07-14", b"02:40:00.987654"], "mtime value")
check(bypath[snapb + b"/suid"][3].split(b" ")[0:4] == [b"-rwsr-xr-x", b"0", b"1234", b"5678"],
      "setuid mode + uid/gid")
check(bypath[snapb + b"/suid_nox"][3].split(b" ")[0] == b"-rwSr--r--", "setuid no x")
check(bypath[snapb + b"/sgid"][3].split(b" ")[0] == b"-rwxr-s---", "setgid")
check(bypath[snapb + b"/sticky_dir"][3].split(b" ")[0] == b"drwxrwxrwt", "sticky")
check(bypath[snapb + b"/sticky_nox"][3].split(b" ")[0] == b"drwxrwxrwT", "sticky no x")
check(bypath[snapb + b"/fifo"][3].startswith(b"prw"), "fifo listed")
check(bypath[snapb + b"/dangling"][3].startswith(b"lrwxrwxrwx"), "symlink listed")
check(bypath[snapb + b"/hardlink"][0] == bypath[spath][0], "hard link: same inode, both paths")
check(bypath[snapb + b"/dep/depfile"], "dependent fileset included (inodespace)")
# raw escaping spot checks
check(b"%0A" in data and b"%FF" in data and b"%25" in data and b"%20" in data
      and b"%2F" in data and b"%3A" in data, "percent escapes present")
# inode and generation preserved between snapshot and live fileset
live = os.lstat(base + b"/d/sp ace")
check(bypath[spath][0] == live.st_ino, "snapshot inode == live inode")
liverc, liveout, _ = run("mmapplypolicy", FS1, "-P", POL, "-I", "defer", "-f",
                         os.path.join(WORK, "lists"), "--scope", "fileset", "-L", "0")
check(liverc == 0 and liveout == "", "live scan, -L 0 is quiet")
ldata = open(os.path.join(WORK, "lists", "list.ferry"), "rb").read()
lrecs = {}
for line in ldata.split(b"\n")[:-1]:
    m = LINE.fullmatch(line)
    check(m is not None, "live record format %r" % line)
    lrecs[unquote(m.group(5))] = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
lp = base + b"/d/sp ace"
check(lrecs[lp][0] == bypath[spath][0] and lrecs[lp][1] == bypath[spath][1],
      "inode+generation equal in snapshot and live")
check(all(v[2] == 0 for v in lrecs.values()), "live snapid 0")
check(not any(b"/.snapshots" in p for p in lrecs), ".snapshots not descended")
check(not any(p.startswith(base + b"/dep") or p.startswith(base + b"/nested") for p in lrecs),
      "--scope fileset excludes dependent and nested filesets")
check(base + b"/after_snapshot" in lrecs, "live scan sees live data")
rc, out, err = run("mmapplypolicy", FS1, "-P", POL, "-I", "defer", "-f",
                   os.path.join(WORK, "all"), "-L", "0")
allp = {unquote(LINE.fullmatch(l).group(5)) for l in
        open(os.path.join(WORK, "all.list.ferry"), "rb").read().split(b"\n")[:-1]}
check(rc == 0 and base + b"/nested/inner" in allp and base + b"/dep/depfile" in allp,
      "default scope descends into nested filesets")

# other ESCAPE settings
open(WORK + "/noesc.pol", "w").write(
    "RULE EXTERNAL LIST 'l' EXEC ''\nRULE 'r' LIST 'l' SHOW(VARCHAR(FILE_SIZE))\n")
rc, out, err = run("mmapplypolicy", SNAP + "/d", "-P", WORK + "/noesc.pol", "-I", "defer",
                   "-f", WORK + "/noesc", "-L", "0")
nd = open(WORK + "/noesc.list.l", "rb").read()
check(rc == 0 and b"/d/new\\nline\n" in nd and b"back\\\\slash" in nd, "no ESCAPE: \\n and \\\\")
check(b" -- " + snapb + b"/d\n" not in nd, "without DIRECTORIES_PLUS only regular files")
open(WORK + "/slash.pol", "w").write(
    "RULE EXTERNAL LIST 'l' EXEC '' ESCAPE '%/ '\nRULE 'r' LIST 'l' DIRECTORIES_PLUS\n")
rc, out, err = run("mmapplypolicy", SNAP + "/d", "-P", WORK + "/slash.pol", "-I", "defer",
                   "-f", WORK + "/slash", "-L", "0")
sd = open(WORK + "/slash.list.l", "rb").read()
check(rc == 0 and b"   -- " + snapb + b"/d/sp ace\n" in sd and b"/d/new%0Aline\n" in sd,
      "ESCAPE '%/ ' keeps / and space, empty SHOW gives three spaces")

# policy errors
for bad in ["RULE LIST 'l'\n",
            "RULE EXTERNAL LIST 'l' EXEC ''\nRULE LIST 'l' WHERE NAME LIKE 'x%'\n",
            "RULE EXTERNAL LIST 'l' EXEC ''\nRULE LIST 'l' SHOW(FILE_SIZE)\n",
            "RULE EXTERNAL LIST 'l' EXEC '' ESCAPE 'x'\nRULE LIST 'l'\n",
            "RULE EXTERNAL LIST 'l' EXEC ''\nRULE LIST 'l' SHOW(VARCHAR(MODE)) DIRECTORIES_PLUS\n",
            "RULE 'm' MIGRATE FROM POOL 'a' TO POOL 'b'\n",
            "RULE EXTERNAL LIST 'l' EXEC '' /* unterminated\n"]:
    open(WORK + "/bad.pol", "w").write(bad)
    rc, out, err = run("mmapplypolicy", SNAP, "-P", WORK + "/bad.pol", "-I", "defer",
                       "-f", WORK + "/bad")
    check(rc != 0 and "[E]" in err, "bad policy accepted: %r" % bad)
rc, out, err = run("mmapplypolicy", SNAP, "-P", POL, "-I", "defer")
check(rc != 0, "-I defer without -f")
rc, out, err = run("mmapplypolicy", SNAP, "-P", POL, "-I", "defer", "-f", WORK + "/x",
                   "--scope", "bogus")
check(rc != 0 and "Usage" in err, "bad --scope")
rc, out, err = run("mmapplypolicy", SNAP, "-P", POL, "-I", "defer", "-f", WORK + "/x",
                   "-g", "/nonexistent")
check(rc != 0, "missing -g dir")
rc, out, err = run("mmapplypolicy", FS1 + "/.snapshots/nosuch", "-P", POL, "-I", "defer",
                   "-f", WORK + "/x")
check(rc != 0, "scan of a missing snapshot")

# --- mmdelsnapshot ----------------------------------------------------------
rc, out, err = run("mmdelsnapshot", "gpfs0", "fs1:snapB", env={"FAKE_MM_FAIL": "mmdelsnapshot:1"})
check(rc == 1 and "Unable to quiesce" in err and os.path.isdir(FS1 + "/.snapshots/snapB"),
      "mmdelsnapshot injected failure")
rc, out, err = run("mmdelsnapshot", "gpfs0", "fs1:snapB", env={"FAKE_MM_FAIL": "mmdelsnapshot:1"})
check(rc == 0 and not os.path.exists(FS1 + "/.snapshots/snapB"), "mmdelsnapshot new form %s" % err)
rc, out, err = run("mmdelsnapshot", "gpfs0", "fs1:snapB")
check(rc != 0 and "6027-2683" in err, "mmdelsnapshot missing")
rc, out, err = run("mmdelsnapshot", "gpfs0", "snapA", "-j", "fs1")
check(rc == 0 and not os.path.exists(SNAP), "mmdelsnapshot old form %s" % err)
rc, out, err = run("mmlssnapshot", "gpfs0", "-Y")
check(rc == 0 and out.startswith("No snapshots in file system gpfs0"), "all deleted")
rc, out, err = run("mmcrsnapshot", "gpfs0", "fs1:late", env={"FAKE_MM_FAIL": "mmcrsnapshot:1:after"})
check(rc == 1 and os.path.isdir(FS1 + "/.snapshots/late"), "failure after creation")
rc, out, err = run("mmlssnapshot", "gpfs0", "-s", "fs1:late", "-Y")
check(rc == 0 and yparse(out, "mmlssnapshot")[0]["directory"] == "late", "-s lists it")
rc, out, err = run("mmdelsnapshot", "gpfs0", "fs1:late")
check(rc == 0, "cleanup delete")

print("fake-mm selftest: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
PYEOF
