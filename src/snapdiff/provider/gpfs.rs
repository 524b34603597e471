//! GPFS (IBM Storage Scale): an independent fileset, found with
//! `mmlsfileset`; snapshots made with `mmcrsnapshot`, listed with
//! `mmlssnapshot`, deleted with `mmdelsnapshot`; a snapshot read with
//! `mmapplypolicy` (an inode scan, much faster than a walk on GPFS) or, on
//! request, by walking `<fileset>/.snapshots/<name>`.
//!
//! Where IBM's `libgpfs.so` loads, a run with a baseline reads only what
//! changed since, with the incremental inode scan ([`super::gpfs_iscan`]);
//! each manifest records its snapshot's numeric id for the next run. When
//! the library is missing or the scan is refused, the run says why and
//! reads the whole snapshot with the policy scan.
//!
//! Commands are called through [`crate::gpfs`] by their documented
//! interfaces only; their messages are never parsed (after a failure, the
//! state is checked by listing).

use super::gpfs_iscan::{self, Snapshots};
use super::{ChangesQuery, ChangesRead, Fileset, Provider, ScanError, SnapshotError, mount_point};
use crate::config::GpfsSettings;
use crate::gpfs::policy::{LIST_POLICY, ListRecord, parse_list_line};
use crate::gpfs::{self, GpfsError, Row};
use crate::snapdiff::build::{GenerationSource, ManifestBuilder, walk_into};
use crate::snapdiff::record::Record;
use crate::sys::gpfs_lib::{Libgpfs, LoadError};
use rustc_hash::FxHashMap;
use std::io::{self, BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A GPFS independent fileset.
pub struct Gpfs {
    fileset: Fileset,
    junction: PathBuf,
    device: String,
    settings: GpfsSettings,
    walk: bool,
    /// IBM's library, for reading only what changed (not loaded when
    /// told to walk).
    lib: Option<Result<Libgpfs, LoadError>>,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl From<GpfsError> for SnapshotError {
    fn from(e: GpfsError) -> SnapshotError {
        SnapshotError {
            transient: e.is_transient(),
            message: e.to_string(),
        }
    }
}

impl Gpfs {
    /// The independent fileset whose junction is `path`; snapshots are
    /// read with a policy scan, or walked when `walk` is set.
    pub fn open(path: &Path, settings: &GpfsSettings, walk: bool) -> io::Result<Gpfs> {
        let junction = std::fs::canonicalize(path)?;
        let device = gpfs::device_for(settings, &junction).map_err(io::Error::other)?;
        let mut g = Gpfs {
            fileset: Fileset {
                name: String::new(),
                id: String::new(),
                path: junction.as_os_str().as_bytes().to_vec(),
                fs_root: PathBuf::new(),
            },
            junction,
            device,
            settings: settings.clone(),
            walk,
            lib: (!walk).then(Libgpfs::load),
        };
        let rows = gpfs::filesets(settings, &g.device).map_err(io::Error::other)?;
        let field = |r: &Row, k: &str| r.get(k).map(|v| text(v)).unwrap_or_default();
        let me = g.fileset.path.clone();
        let row = rows
            .iter()
            .find(|r| r.get("path").is_some_and(|p| *p == me))
            .ok_or_else(|| {
                io::Error::other(format!(
                    "no fileset of {} is linked at {}",
                    g.device,
                    g.junction.display()
                ))
            })?;
        if field(row, "isInodeSpaceOwner") != "1" {
            return Err(io::Error::other(format!(
                "fileset {} is a dependent fileset; snapdiff needs an independent fileset (its own inode space)",
                field(row, "filesetName")
            )));
        }
        g.fileset.name = field(row, "filesetName");
        g.fileset.id = field(row, "id");
        // `.rotate` lives at the filesystem root, where the root fileset is linked.
        g.fileset.fs_root = match rows.iter().find(|r| field(r, "id") == "0") {
            Some(root) => PathBuf::from(std::ffi::OsStr::from_bytes(&root["path"])),
            None => mount_point(&g.junction)?,
        };
        Ok(g)
    }

    fn run(&self, cmd: &str, args: &[&str]) -> Result<Vec<u8>, SnapshotError> {
        Ok(gpfs::run(&self.settings, cmd, args)?)
    }

    fn snapshot_dir(&self, snap: &str) -> PathBuf {
        self.junction.join(".snapshots").join(snap)
    }

    fn exists(&self, snap: &str) -> bool {
        self.snapshots().is_ok_and(|s| s.iter().any(|n| n == snap))
    }

    /// Reads a snapshot with an inode scan: one list record per link.
    fn policy_scan(&self, dir: &Path, builder: &mut ManifestBuilder) -> Result<(), ScanError> {
        let work = tempfile::tempdir().map_err(|e| ScanError::io(&std::env::temp_dir(), e))?;
        let policy = work.path().join("ferry-list.pol");
        std::fs::write(&policy, LIST_POLICY).map_err(|e| ScanError::io(&policy, e))?;
        let prefix = work.path().join("ferry");
        let (d, p, f) = (
            dir.to_string_lossy(),
            policy.to_string_lossy(),
            prefix.to_string_lossy(),
        );
        let mut args = vec![
            &*d,
            "-P",
            &*p,
            "-I",
            "defer",
            "-f",
            &*f,
            "--scope",
            "inodespace",
            "-L",
            "0",
        ];
        let nodes = self.settings.nodes.join(",");
        if !nodes.is_empty() {
            args.extend(["-N", &nodes]);
        }
        let threads = self.settings.iscan_threads.map(|t| t.to_string());
        if let Some(t) = &threads {
            args.extend(["-a", t]);
        }
        let buckets = self.settings.iscan_buckets.map(|b| b.to_string());
        if let Some(b) = &buckets {
            args.extend(["-A", b]);
        }
        gpfs::run(&self.settings, "mmapplypolicy", &args)?;
        let list = work.path().join("ferry.list.ferry");
        let root = dir.as_os_str().as_bytes();
        // Pass 1: directories by path, to find each record's parent inode.
        let mut dirs: FxHashMap<Vec<u8>, u64> = FxHashMap::default();
        for_each_record(&list, |r| {
            if r.mode & libc::S_IFMT == libc::S_IFDIR {
                dirs.insert(r.path, r.ino);
            }
            Ok(())
        })?;
        // Pass 2: every record, placed by its parent directory's inode.
        for_each_record(&list, |r| {
            let rec = to_record(r, root, &dirs)?;
            Ok(builder.push(&rec)?)
        })
    }
}

fn for_each_record(list: &Path, mut f: impl FnMut(ListRecord) -> Result<(), ScanError>) -> Result<(), ScanError> {
    let file = match std::fs::File::open(list) {
        Ok(f) => f,
        // GPFS may not write an empty list.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ScanError::io(list, e)),
    };
    let mut rd = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let mut n = 0u64;
    loop {
        line.clear();
        if rd.read_until(b'\n', &mut line).map_err(|e| ScanError::io(list, e))? == 0 {
            return Ok(());
        }
        n += 1;
        if line.pop() != Some(b'\n') {
            return Err(ScanError::List {
                path: list.to_path_buf(),
                line: n,
                problem: "no newline at the end".into(),
            });
        }
        let r = parse_list_line(&line).map_err(|e| ScanError::List {
            path: list.to_path_buf(),
            line: n,
            problem: e.to_string(),
        })?;
        f(r)?;
    }
}

fn to_record(r: ListRecord, root: &[u8], dirs: &FxHashMap<Vec<u8>, u64>) -> Result<Record, ScanError> {
    let (parent, name) = if r.path == root {
        (0, Vec::new())
    } else {
        let cut = r.path.iter().rposition(|&b| b == b'/').unwrap_or(0);
        let parent = dirs
            .get(&r.path[..cut])
            .copied()
            .ok_or_else(|| ScanError::Orphan(r.path.clone()))?;
        (parent, r.path[cut + 1..].to_vec())
    };
    Ok(Record {
        ino: r.ino,
        generation: r.generation,
        parent,
        name,
        mode: r.mode,
        size: r.size,
        mtime: r.mtime,
        ctime: r.ctime,
        uid: r.uid,
        gid: r.gid,
        nlink: r.nlink,
    })
}

impl Provider for Gpfs {
    fn kind(&self) -> &'static str {
        "gpfs"
    }

    fn fileset(&self) -> &Fileset {
        &self.fileset
    }

    fn generation_source(&self) -> GenerationSource {
        GenerationSource::Inode
    }

    fn has_snapshots(&self) -> bool {
        true
    }

    fn create_snapshot(&self, name: &str) -> Result<(), SnapshotError> {
        let spec = format!("{}:{name}", self.fileset.name);
        match self.run("mmcrsnapshot", &[&self.device, &spec]) {
            // A create that reported failure but happened (a timeout) is done.
            Err(_) if self.exists(name) => Ok(()),
            other => other.map(drop),
        }
    }

    fn delete_snapshot(&self, name: &str) -> Result<(), SnapshotError> {
        let spec = format!("{}:{name}", self.fileset.name);
        match self.run("mmdelsnapshot", &[&self.device, &spec]) {
            Err(_) if !self.exists(name) && self.snapshots().is_ok() => Ok(()),
            other => other.map(drop),
        }
    }

    fn snapshots(&self) -> io::Result<Vec<String>> {
        let rows = gpfs::table(
            &self.settings,
            "mmlssnapshot",
            &[&self.device, "-j", &self.fileset.name, "-Y"],
        )
        .map_err(io::Error::other)?;
        Ok(rows
            .iter()
            .filter(|r| r.get("fileset").is_none_or(|f| *f == self.fileset.name.as_bytes()))
            .filter_map(|r| r.get("directory").map(|d| text(d)))
            .collect())
    }

    /// The snapshot's numeric id from the library; none without it (the
    /// next run then reads the whole snapshot).
    fn snapshot_transid(&self, name: &str) -> io::Result<Option<u64>> {
        Ok(match &self.lib {
            Some(Ok(lib)) => gpfs_iscan::snapshot_id(lib, &self.snapshot_dir(name)).ok(),
            _ => None,
        })
    }

    fn reads_changes(&self) -> bool {
        !self.walk
    }

    fn changed(&self, q: ChangesQuery<'_>) -> Result<ChangesRead, ScanError> {
        let lib = match &self.lib {
            Some(Ok(lib)) => lib,
            Some(Err(e)) => return Ok(ChangesRead::Unable(format!("no incremental inode scan ({e})"))),
            None => return Ok(ChangesRead::Unable("snapshots are walked".into())),
        };
        let (new, old) = (self.snapshot_dir(q.new), self.snapshot_dir(q.old));
        let snaps = Snapshots {
            new: &new,
            old: &old,
            since: q.since,
        };
        let old_records = q.old_records;
        let mut lookup = |inos: &[u64]| old_records.records_of(inos);
        match gpfs_iscan::changed_since(lib, &snaps, q.old_dirs, q.limit, q.split, &mut lookup) {
            Ok(Some(c)) => Ok(ChangesRead::Read(c)),
            Ok(None) => Ok(ChangesRead::TooMany),
            Err(e) if e.falls_back() => Ok(ChangesRead::Unable(format!("no incremental inode scan ({e})"))),
            Err(e) => Err(e.into()),
        }
    }

    fn snapshot_root(&self, name: &str) -> Option<PathBuf> {
        Some(self.snapshot_dir(name))
    }

    fn scan(&self, snapshot: Option<&str>, builder: &mut ManifestBuilder, threads: usize) -> Result<(), ScanError> {
        let dir = match snapshot {
            Some(s) => self.snapshot_dir(s),
            None => self.junction.clone(),
        };
        if self.walk {
            walk_into(dir.as_os_str().as_bytes(), threads, GenerationSource::Inode, builder)?;
            Ok(())
        } else {
            self.policy_scan(&dir, builder)
        }
    }
}
