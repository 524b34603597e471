"""Shared code of the fake IBM Storage Scale (GPFS) ``mm*`` commands.

The fake implements a documented subset of ``mmlsfileset``, ``mmlssnapshot``,
``mmcrsnapshot``, ``mmdelsnapshot`` and ``mmapplypolicy`` on top of btrfs:

* a fileset is a directory; an *independent* fileset is a btrfs subvolume
  (own inode space, like GPFS), a *dependent* one is a plain directory inside
  its parent's subvolume (shares the parent's inode space, like GPFS);
* a fileset snapshot is a read-only btrfs snapshot at
  ``<fileset junction>/.snapshots/<name>``, so inode and generation numbers
  are preserved exactly as GPFS preserves them in snapshots.

Configuration: ``FAKE_MM_CONFIG`` names a JSON file (see README.md).  Snapshot
ids, creation times and failure-injection counters live in a JSON state file,
``FAKE_MM_STATE`` or ``<config>.state.json``, guarded by an flock.

Standard library only.  See README.md for the contract and its sources.
"""

import contextlib
import ctypes
import ctypes.util
import fcntl
import json
import os
import stat
import struct
import sys
import time

# --------------------------------------------------------------------------
# errors and messages
# --------------------------------------------------------------------------

CMD = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "mm"


class MmError(Exception):
    """A failure reported the GPFS way: message lines on stderr, exit 1.

    IBM documents only "0: success, nonzero: failure" for these commands, so
    the fake always uses 1; callers must not depend on other values.
    """

    def __init__(self, *lines, usage=False, rc=1):
        super().__init__("\n".join(lines))
        self.lines = list(lines)
        self.usage = usage
        self.rc = rc


def run_main(main, usage_text):
    """Run ``main(argv)`` and turn MmError into IBM-style stderr + exit 1."""
    try:
        rc = main(sys.argv[1:])
    except MmError as e:
        out = sys.stderr
        for line in e.lines:
            out.write(line + "\n")
        if e.usage:
            out.write("Usage:\n  " + usage_text.strip() + "\n")
        else:
            out.write("%s: Command failed. Examine previous error messages "
                      "to determine cause.\n" % CMD)
        out.flush()
        sys.exit(e.rc)
    except BrokenPipeError:
        sys.exit(1)
    sys.stdout.flush()
    sys.exit(rc or 0)


def usage_error(msg):
    return MmError("%s: %s" % (CMD, msg), usage=True)


# --------------------------------------------------------------------------
# -Y (colon separated, percent encoded) output
# --------------------------------------------------------------------------

_PATH_KEEP = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                       b"0123456789._~")


def y_encode_path(value):
    """Path fields of -Y output: every byte but [A-Za-z0-9._~] as %XX.

    Real output shows '/' as %2F and an unlinked fileset's path "--" as
    %2D%2D; the fake encodes at least that much (strict reading).
    """
    b = value if isinstance(value, bytes) else os.fsencode(value)
    return "".join(chr(c) if c in _PATH_KEEP else "%%%02X" % c for c in b)


def y_encode_text(value):
    """Other -Y fields: ':' '%' '/' and non-printable bytes as %XX.

    Real output keeps spaces ("Wed Jan 20 00%3A30%3A02 2021", "root fileset").
    """
    b = value if isinstance(value, bytes) else os.fsencode(value)
    out = []
    for c in b:
        if c in b":%/" or c < 0x20 or c >= 0x7F:
            out.append("%%%02X" % c)
        else:
            out.append(chr(c))
    return "".join(out)


def y_line(cmd, fields):
    return "%s::0:1:::%s:" % (cmd, ":".join(fields))


def y_header(cmd, names):
    return "%s::HEADER:version:reserved:reserved:%s:" % (cmd, ":".join(names))


def gpfs_ctime(epoch):
    """Creation time as GPFS prints it: C asctime() layout, local time.

    asctime pads the day with a space ("Tue Jun  8 07:08:46 2021"); consumers
    must accept both padded and two-digit days (Go: time.ANSIC).
    """
    t = time.localtime(epoch)
    return "%s %s %2d %02d:%02d:%02d %d" % (
        ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[t.tm_wday],
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
         "Oct", "Nov", "Dec")[t.tm_mon - 1],
        t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, t.tm_year)


# --------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------

class Fileset:
    def __init__(self, device, name, fid, path, independent, comment,
                 created, parent_name):
        self.device = device
        self.name = name
        self.id = fid
        self.path = path
        self.independent = independent
        self.comment = comment
        self.created = created
        self.parent_name = parent_name
        self.parent = None          # Fileset, resolved after loading
        self.inode_space = None     # int, resolved after loading

    @property
    def is_root(self):
        return self.id == 0

    def linked(self):
        return os.path.isdir(self.path) and not os.path.islink(self.path)

    def owner(self):
        """The independent fileset owning this fileset's inode space."""
        f = self
        while not f.independent:
            f = f.parent
        return f

    def snapdir(self):
        return os.path.join(self.path, ".snapshots")

    def created_epoch(self):
        if self.created is not None:
            return self.created
        try:
            return int(os.stat(self.path).st_ctime)
        except OSError:
            return 0


class Device:
    def __init__(self, name, mount):
        self.name = name
        self.mount = mount
        self.filesets = []          # root first

    def fileset(self, name):
        for f in self.filesets:
            if f.name == name:
                return f
        return None

    def by_junction(self, path):
        for f in self.filesets:
            if f.path == path:
                return f
        return None


class Config:
    def __init__(self, path, data):
        self.path = path
        self.devices = {}
        devs = data.get("devices")
        if not isinstance(devs, dict) or not devs:
            raise config_error("'devices' must be a non-empty object")
        for dname, d in devs.items():
            if not isinstance(d, dict) or not isinstance(d.get("mount"), str):
                raise config_error("device %r needs a 'mount' path" % dname)
            mount = os.path.normpath(d["mount"])
            if not os.path.isabs(mount):
                raise config_error("mount of %r must be absolute" % dname)
            dev = Device(dname, mount)
            root = Fileset(dname, "root", 0, mount, True, "root fileset",
                           d.get("created"), None)
            dev.filesets.append(root)
            self.devices[dname] = dev
        fsets = data.get("filesets", {})
        if not isinstance(fsets, dict):
            raise config_error("'filesets' must be an object")
        for dname, lst in fsets.items():
            dev = self.devices.get(dname)
            if dev is None:
                raise config_error("filesets given for unknown device %r" % dname)
            if not isinstance(lst, list):
                raise config_error("filesets of %r must be a list" % dname)
            for e in lst:
                self._add_fileset(dev, e)
        for dev in self.devices.values():
            self._resolve(dev)

    def _add_fileset(self, dev, e):
        if not isinstance(e, dict):
            raise config_error("fileset entries must be objects")
        name, fid, path = e.get("name"), e.get("id"), e.get("path")
        if not isinstance(name, str) or not name or name == "root":
            raise config_error("bad fileset name %r" % (name,))
        if any(c in name for c in ":/,\n") or len(name) > 255:
            raise config_error("fileset name %r has a forbidden character" % name)
        if not isinstance(fid, int) or isinstance(fid, bool) or fid <= 0:
            raise config_error("fileset %r needs an integer id > 0" % name)
        if not isinstance(path, str) or not os.path.isabs(path):
            raise config_error("fileset %r needs an absolute path" % name)
        path = os.path.normpath(path)
        if dev.fileset(name):
            raise config_error("duplicate fileset name %r" % name)
        if any(f.id == fid for f in dev.filesets):
            raise config_error("duplicate fileset id %d" % fid)
        if any(f.path == path for f in dev.filesets):
            raise config_error("duplicate junction path %r" % path)
        if not (path + "/").startswith(dev.mount + "/") or path == dev.mount:
            raise config_error("fileset %r path must lie below the mount %r"
                               % (name, dev.mount))
        indep = e.get("independent", False)
        if not isinstance(indep, bool):
            raise config_error("'independent' of %r must be true/false" % name)
        parent = e.get("parent")
        if parent is not None and not isinstance(parent, str):
            raise config_error("'parent' of %r must be a fileset name" % name)
        dev.filesets.append(Fileset(dev.name, name, fid, path, indep,
                                    e.get("comment", ""), e.get("created"),
                                    parent))

    def _resolve(self, dev):
        for f in dev.filesets:
            if f.is_root:
                continue
            if f.parent_name is not None:
                p = dev.fileset(f.parent_name)
                if p is None:
                    raise config_error("fileset %r: unknown parent %r"
                                       % (f.name, f.parent_name))
                if not (f.path + "/").startswith(p.path + "/"):
                    raise config_error("fileset %r does not lie below its "
                                       "parent %r" % (f.name, p.name))
            else:
                # the nearest enclosing junction, as linking below it implies
                best = dev.filesets[0]
                for g in dev.filesets:
                    if g is not f and (f.path + "/").startswith(g.path + "/") \
                            and len(g.path) > len(best.path):
                        best = g
                p = best
            f.parent = p
        # inode spaces: root 0, independent filesets 1, 2, ... in id order
        n = 0
        for f in sorted(dev.filesets, key=lambda x: x.id):
            if f.independent:
                f.inode_space = n
                n += 1
        for f in dev.filesets:
            if not f.independent:
                seen = set()
                g = f
                while not g.independent:
                    if g.name in seen:
                        raise config_error("parent cycle at %r" % f.name)
                    seen.add(g.name)
                    g = g.parent
                f.inode_space = g.inode_space

    def device(self, name):
        """Look a device up; '/dev/gpfs0' is as good as 'gpfs0'."""
        if name.startswith("/dev/"):
            name = name[5:]
        dev = self.devices.get(name)
        if dev is None:
            raise MmError("%s: 6027-1388 File system %s is not known to the "
                          "GPFS cluster." % (CMD, name))
        return dev

    def device_of_path(self, path):
        """The device whose mount contains path (longest mount wins)."""
        best = None
        for dev in self.devices.values():
            if (path + "/").startswith(dev.mount.rstrip("/") + "/") or \
                    path == dev.mount:
                if best is None or len(dev.mount) > len(best.mount):
                    best = dev
        return best


def config_error(msg):
    return MmError("fake-mm: configuration error: %s" % msg)


def load_config():
    path = os.environ.get("FAKE_MM_CONFIG")
    if not path:
        raise MmError("fake-mm: FAKE_MM_CONFIG is not set (it must name the "
                      "JSON configuration; see tests/fake-mm/README.md)")
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as e:
        raise config_error("cannot read %s: %s" % (path, e))
    if not isinstance(data, dict):
        raise config_error("top level must be an object")
    return Config(path, data)


# --------------------------------------------------------------------------
# state file (snapshot ids, creation times, failure counters)
# --------------------------------------------------------------------------

def state_path(cfg):
    return os.environ.get("FAKE_MM_STATE") or cfg.path + ".state.json"


@contextlib.contextmanager
def locked_state(cfg):
    """Yield the state dict under an exclusive lock; saved on clean exit."""
    sp = state_path(cfg)
    lock_fd = os.open(sp + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            with open(sp, "rb") as f:
                st = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            st = {}
        except ValueError as e:
            raise MmError("fake-mm: state file %s is corrupt: %s" % (sp, e))
        st.setdefault("devices", {})
        st.setdefault("fail_consumed", {})
        before = json.dumps(st, sort_keys=True)
        try:
            yield st
        finally:
            after = json.dumps(st, sort_keys=True)
            if after != before:
                tmp = sp + ".tmp.%d" % os.getpid()
                with open(tmp, "w") as f:
                    f.write(json.dumps(st, indent=1, sort_keys=True))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, sp)
    finally:
        os.close(lock_fd)


def dev_state(st, dev):
    d = st["devices"].setdefault(dev.name, {})
    d.setdefault("next_snap_id", 1)
    d.setdefault("snapshots", {})      # fileset name -> snap name -> record
    return d


def snapshots_of(st, dev, fileset):
    """Snapshots recorded for a fileset whose directory still exists."""
    recs = dev_state(st, dev)["snapshots"].get(fileset.name, {})
    out = {}
    for name, rec in recs.items():
        p = os.path.join(fileset.snapdir(), name)
        if os.path.isdir(p):
            out[name] = rec
    return out


# --------------------------------------------------------------------------
# failure injection: FAKE_MM_FAIL="mmcrsnapshot:2[:after],mmdelsnapshot:1"
# --------------------------------------------------------------------------

def parse_fail_spec():
    spec = os.environ.get("FAKE_MM_FAIL", "").strip()
    out = {}
    if not spec:
        return out
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        bits = part.split(":")
        if len(bits) not in (2, 3) or not bits[1].isdigit():
            raise MmError("fake-mm: bad FAKE_MM_FAIL entry %r (want "
                          "command:count[:before|after])" % part)
        mode = bits[2] if len(bits) == 3 else "before"
        if mode not in ("before", "after"):
            raise MmError("fake-mm: bad FAKE_MM_FAIL mode %r" % mode)
        out[bits[0]] = (int(bits[1]), mode)
    return out


def injected_failure(st, when):
    """True when this call of CMD must fail at point ``when``.

    Counts across invocations in the state file: the first N calls that
    reach the failure point fail, later ones succeed.  The count restarts
    whenever the command's FAKE_MM_FAIL entry changes.
    """
    spec = parse_fail_spec().get(CMD)
    if spec is None:
        return False
    count, mode = spec
    if mode != when:
        return False
    key = "%d:%s" % (count, mode)
    rec = st["fail_consumed"].get(CMD)
    if not isinstance(rec, dict) or rec.get("spec") != key:
        rec = {"spec": key, "used": 0}
    if rec["used"] >= count:
        return False
    rec["used"] += 1
    st["fail_consumed"][CMD] = rec
    return True


def quiesce_failure():
    """The transient failure GPFS reports when a snapshot cannot quiesce."""
    return MmError("Unable to quiesce all nodes; some processes are busy or "
                   "holding required resources.")


# --------------------------------------------------------------------------
# btrfs
# --------------------------------------------------------------------------

BTRFS_SUPER_MAGIC = 0x9123683E
BTRFS_FIRST_FREE_OBJECTID = 256
BTRFS_EMPTY_SUBVOL_DIR_OBJECTID = 2
_IOC_SNAP_CREATE_V2 = 0x50009417   # _IOW(0x94, 23, btrfs_ioctl_vol_args_v2)
_IOC_SNAP_DESTROY = 0x5000940F     # _IOW(0x94, 15, btrfs_ioctl_vol_args)
_SUBVOL_RDONLY = 1 << 1
FS_IOC_GETVERSION = 0x80087601     # _IOR('v', 1, long)

_libc = None


def fs_type(path):
    """statfs(2) f_type of path, or None."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6",
                            use_errno=True)
    buf = ctypes.create_string_buffer(256)
    if _libc.statfs(os.fsencode(path), buf) != 0:
        return None
    return struct.unpack_from("l", buf.raw, 0)[0] & 0xFFFFFFFF


def is_subvolume(path):
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_ino == BTRFS_FIRST_FREE_OBJECTID
            and fs_type(path) == BTRFS_SUPER_MAGIC)


def btrfs_snapshot_ro(src, dstdir, name):
    sfd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        dfd = os.open(dstdir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            nb = os.fsencode(name)
            buf = bytearray(4096)
            struct.pack_into("=qQQ", buf, 0, sfd, 0, _SUBVOL_RDONLY)
            buf[56:56 + len(nb)] = nb
            fcntl.ioctl(dfd, _IOC_SNAP_CREATE_V2, buf)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def btrfs_delete_subvolume(parent, name):
    dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        nb = os.fsencode(name)
        buf = bytearray(4096)
        buf[8:8 + len(nb)] = nb
        fcntl.ioctl(dfd, _IOC_SNAP_DESTROY, buf)
    finally:
        os.close(dfd)


def inode_generation(path, st):
    """i_generation via FS_IOC_GETVERSION for files and directories, else 0."""
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return 0
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK |
                     os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, FS_IOC_GETVERSION, buf)
        return struct.unpack_from("<I", buf, 0)[0]
    except OSError:
        return 0
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# snapshot name handling shared by mmcrsnapshot / mmdelsnapshot / mmlssnapshot
# --------------------------------------------------------------------------

def valid_snap_name(name):
    return (bool(name) and name not in (".", "..") and len(name) <= 255 and
            not any(c in name for c in "/:,\n\0"))


def parse_snap_specs(arg, jlist):
    """'[[Fileset]:]Snapshot[,...]' plus '-j F1,F2' -> [(fileset, snap)].

    An entry with an explicit fileset uses it; an entry without one applies
    to every fileset named by -j; with neither it is a global snapshot
    (fileset None).
    """
    out = []
    for item in arg.split(","):
        if item == "":
            raise usage_error("Incorrect snapshot specification: %r" % arg)
        if ":" in item:
            fs, _, snap = item.partition(":")
            if ":" in snap:
                raise usage_error("Incorrect snapshot specification: %r" % item)
            if fs == "":
                # ':Snap' names a global snapshot explicitly
                out.append((None, snap))
            else:
                out.append((fs, snap))
        elif jlist:
            for fs in jlist:
                out.append((fs, item))
        else:
            out.append((None, item))
    return out


def parse_args(argv, with_arg, flags, unsupported=()):
    """Split argv into (options dict, positionals) the way mm commands do.

    with_arg: options taking a value ('-j', '--scope', ...); flags: options
    without one.  '--opt=value' is accepted for long options.  Options named
    in ``unsupported`` are real GPFS options the fake refuses to emulate.
    Repeating an option is an error except for those listed as repeatable
    (values then collect in a list under the option name).
    """
    opts, pos = {}, []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-") and len(a) > 1:
            name, eq, val = a.partition("=") if a.startswith("--") else (a, "", "")
            base = name
            if base in unsupported:
                raise MmError("%s: option %s is not supported by the fake "
                              "(tests/fake-mm/README.md)" % (CMD, base))
            if base in with_arg:
                if not eq:
                    i += 1
                    if i >= len(argv):
                        raise usage_error("Missing argument after %s" % base)
                    val = argv[i]
                if base in opts and base not in ("-M",):
                    raise usage_error("Option %s specified more than once" % base)
                if base == "-M":
                    opts.setdefault(base, []).append(val)
                else:
                    opts[base] = val
            elif base in flags and not eq:
                if base in opts:
                    raise usage_error("Option %s specified more than once" % base)
                opts[base] = True
            else:
                raise usage_error("Incorrect option: %s" % a)
        else:
            pos.append(a)
        i += 1
    return opts, pos


def split_list(value, what):
    items = value.split(",")
    if any(i == "" for i in items):
        raise usage_error("Incorrect %s list: %r" % (what, value))
    return items
