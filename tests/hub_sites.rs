//! Two sites on one machine, driven by the hub over REST as an admin
//! drives them: one agent per site, each in a mount namespace of its own
//! where its site's fileset (a btrfs subvolume) is mounted at the same
//! path, as two clusters mount their filesystems; and a second pair where
//! site B sees its fileset at another path and maps it (`path_map`). The
//! endpoint, a directory or a bucket on the S3 server, is shared by both
//! sites.
//!
//! `site_sync` must converge: after each round of random changes on site
//! A and a sync, `rsync -aHAXn --delete --itemize-changes` between A's
//! snapshot and B prints nothing; synced dehydrated, every file on B is a
//! stub and a recalled copy of B matches A's snapshot the same way. Three
//! rounds by default; `FERRY_SOAK=1` runs the 20 the issue asks for.
//!
//! `bidirectional_sync` (a `bidirectional_snapdiff` schedule run by
//! `POST /run/`) settles each conflict kind as docs/hub.md says and lists
//! what a site loses; converges under random changes on both sites (three
//! rounds, 20 with `FERRY_SOAK=1`); and a run whose snapdiff fails on one
//! site applies nothing, so the next run sends both sites' changes.
//!
//! Also: a sync survives B's agent SIGKILLed and the S3 endpoint cut off
//! for 30 s mid-run (through a proxy); `send` of a tree of many small and
//! four large files arrives whole and as stubs, and an import of its key
//! prefix into an empty directory is the same tree; and the throughput
//! benchmark `scripts/bench-site-sync.sh` runs.

mod common;

use common::Rng;
use common::btrfs::LoopBtrfs;
use common::hub::{HubSite, sqlite};
use common::loopfs::LoopFs;
use common::proxy::Proxy;
use serde_json::{Value, json};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Two sites and their filesets.
struct Rig {
    s: HubSite,
    /// The directory endpoint's own filesystem (`Variant::ep_fs`), dropped
    /// after the agents that use it.
    _ep_fs: Option<LoopFs>,
    /// Site B's name (site A's is `s.site`).
    b_site: String,
    /// Site A's fileset as the host sees it.
    a: PathBuf,
    /// Site B's fileset as the host sees it.
    b: PathBuf,
    /// The proxy in front of the S3 server (`Variant::proxy`).
    proxy: Option<Proxy>,
    _fs: LoopBtrfs,
    /// Site B's own filesystem, when it has one (`Variant::two_fs`).
    _fs_b: Option<LoopBtrfs>,
}

/// How the two sites are set up.
#[derive(Clone, Copy, Default)]
struct Variant {
    /// Site B's agent runs in the host's namespace, sees its fileset where
    /// the host does, and maps the wire path (site A's mount point) onto it.
    mapped: bool,
    /// The shared endpoint is a bucket on the S3 server, not a directory.
    s3: bool,
    /// Sync hydrated (files) or dehydrated (stubs).
    hydrate: bool,
    /// The S3 server is reached through a proxy the test can cut.
    proxy: bool,
    /// The btrfs image's size in MiB (0: 1 GiB).
    fs_mb: u64,
    /// Site B's subvolume is on a btrfs of its own (of `fs_mb` too), as
    /// two clusters' filesystems are: a flush on one site does not stall
    /// the other's writes. Otherwise both share one image.
    two_fs: bool,
    /// The directory endpoint is on an ext4 of its own (of `fs_mb`), as an
    /// archive is storage of its own: its flushes do not also write what
    /// the hub's database, the broker and every test keep on the host's
    /// filesystem. Otherwise it is in the hub's scratch directory.
    ep_fs: bool,
}

/// The rig for `v`.
fn rig(v: Variant) -> Option<Rig> {
    if !common::agent::broker_or_skip() || !common::require_root("two sites in mount namespaces") {
        return None;
    }
    let s3 = if v.s3 { Some(common::s3::S3Server::get()?) } else { None };
    let mb = if v.fs_mb == 0 { 1024 } else { v.fs_mb };
    let fs = LoopBtrfs::new(mb)?;
    let fs_b = if v.two_fs { Some(LoopBtrfs::new(mb)?) } else { None };
    let (a, b) = (fs.subvolume("a"), fs_b.as_ref().unwrap_or(&fs).subvolume("b"));
    let mut s = HubSite::new(sqlite(), 2, "");
    let ep_fs = match v.ep_fs && !v.s3 {
        true => Some(LoopFs::ext4(mb)?),
        false => None,
    };
    if let Some(fs) = &ep_fs {
        // Not the top: it holds ext4's `lost+found`.
        let store = fs.path().join("archive");
        std::fs::create_dir(&store).unwrap();
        s.archive = Some(format!("type = directory\npath = {}\n", store.display()));
    }
    let mut proxy = None;
    if let Some(server) = &s3 {
        let bucket = server.unique_bucket("hub-sites");
        let url = match v.proxy {
            true => proxy.insert(Proxy::new(&server.endpoint)).url.clone(),
            false => server.endpoint.clone(),
        };
        s.archive = Some(format!(
            "type = s3\nbucket = {bucket}\nurl = {url}\naccess_key_id = test\nsecret_access_key = test\n"
        ));
    }
    let b_site = format!("{}-b", s.site);
    let data = s.data();
    let a_site = s.site.clone();
    s.place_agent(0, &a_site, &data, Some(&a), "");
    if v.mapped {
        let map = format!("path_map = {}:{}", b.display(), data.display());
        s.place_agent(1, &b_site, &b, None, &map);
    } else {
        s.place_agent(1, &b_site, &data, Some(&b), "");
    }
    s.start_hub();
    s.start_agent(0);
    s.start_agent(1);
    s.wait_online(1, Duration::from_secs(30));
    let t0 = std::time::Instant::now();
    while !s.health()["site_status"].as_array().is_some_and(|a| {
        a.iter()
            .any(|x| x["site"] == b_site.as_str() && x["nodes"][0]["online"] == true)
    }) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "site B not online: {}",
            s.health()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(Rig {
        s,
        _ep_fs: ep_fs,
        b_site,
        a,
        b,
        proxy,
        _fs: fs,
        _fs_b: fs_b,
    })
}

impl Rig {
    /// Submits `site_sync` of the fileset to site B and waits for its job.
    fn sync(&self, hydrate: bool) -> Value {
        self.s.wait_job(self.submit_sync(hydrate), Duration::from_secs(300))
    }

    /// Submits `site_sync` of the fileset to site B; the job's id.
    fn submit_sync(&self, hydrate: bool) -> i64 {
        let job = self.s.api(
            "POST",
            "/api/file/workflow/",
            Some(
                json!({"workflow": "site_sync", "site": self.s.site, "paths": [self.s.data().to_str().unwrap()],
                        "fields": {"destination": self.b_site, "hydrate": hydrate}}),
            ),
            201,
        );
        job["id"].as_i64().unwrap()
    }

    /// Site A's newest snapdiff snapshot: what the last sync sent.
    fn snapshot(&self) -> PathBuf {
        let mut snaps: Vec<PathBuf> = std::fs::read_dir(self.a.join(".snapshots"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".snapdiff."))
            .collect();
        snaps.sort();
        snaps.pop().expect("a snapshot")
    }

    /// What rsync would change to make B like A's snapshot (nothing when
    /// they match: content, modes, owners, times, ACLs, xattrs, links),
    /// leaving out the snapdiff's own `.snapshots` and `.rotate`.
    fn differences(&self) -> String {
        self.rsync(&self.b)
    }

    /// What rsync would change to make `to` like A's snapshot, with what
    /// both hold when files differ in xattrs or the link index shows.
    fn rsync(&self, to: &Path) -> String {
        self.rsync_with(&self.snapshot(), to, &[])
    }

    /// What rsync would change to make `to` like `from`, with rsync's
    /// `extra` arguments (filters, after its own).
    fn rsync_with(&self, from: &Path, to: &Path, extra: &[&str]) -> String {
        let out = Command::new("rsync")
            .args([
                "-aHAXn",
                "--delete",
                "--itemize-changes",
                "--exclude=/.snapshots",
                "--exclude=/.rotate",
                // ferry's own bookkeeping (each site's record of where a
                // file's object is and whether it is resident) is per site
                // by design.
                "--filter=-x user.ferry.*",
            ])
            .args(extra)
            .arg(format!("{}/", from.display()))
            .arg(format!("{}/", to.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "rsync: {}", String::from_utf8_lossy(&out.stderr));
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        // What both sides hold, for the message: every directory, and every
        // file with its inode, link count and xattrs.
        if text
            .lines()
            .any(|l| (l.starts_with(".f") && l.contains('x')) || l.contains(".ferry-links"))
        {
            let dump = r#"
import os, sys
for side in sys.argv[1:]:
    for root, dirs, files in os.walk(side.encode()):
        dirs[:] = [d for d in dirs if d not in (b'.snapshots', b'.rotate')]
        print("dir", root, os.lstat(root).st_nlink)
        for f in files:
            p = os.path.join(root, f)
            try:
                xs = {x: os.getxattr(p, x, follow_symlinks=False) for x in os.listxattr(p, follow_symlinks=False)}
            except OSError as e:
                xs = str(e)
            st = os.lstat(p)
            print(os.path.relpath(p, side.encode()), st.st_ino, st.st_nlink, xs)
"#;
            let o = Command::new("python3")
                .arg("-c")
                .arg(dump)
                .arg(from)
                .arg(to)
                .output()
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&o.stdout));
        }
        text
    }

    /// Checks that every regular file on B is a stub, then recalls a
    /// reflink copy of B (stubs, their xattrs and hard links kept) from the
    /// endpoint, each file against its recorded hash, and returns what
    /// rsync would change to make that copy like A's snapshot. B's own
    /// directories are compared first; the copy's then get B's times
    /// back, since recalling into them is not what is under test.
    fn recalled_differences(&self) -> String {
        self.recalled_differences_of(&self.snapshot(), &self.b)
    }

    /// [`Rig::recalled_differences`] of `on_b` (B's fileset or a tree in
    /// it) against `from`.
    fn recalled_differences_of(&self, from: &Path, on_b: &Path) -> String {
        let dirs = self.rsync_with(from, on_b, &["--include=*/", "--exclude=*"]);
        if !dirs.is_empty() {
            return format!("B's directories:\n{dirs}");
        }
        let (_, files, _) = entries(on_b);
        // An empty file has no data to leave behind: it is whole (and once
        // moved on B, it forgets the location of its old key).
        let hydrated: Vec<&PathBuf> = files
            .iter()
            .filter(|f| {
                let state = xattr::get(f, "user.ferry.state").ok().flatten().unwrap_or_default();
                let empty = std::fs::symlink_metadata(f).unwrap().len() == 0;
                !(state.starts_with(b"migrated ")
                    || (empty && (state.is_empty() || state.starts_with(b"premigrated "))))
            })
            .collect();
        if !hydrated.is_empty() {
            self.s.keep_logs();
        }
        let states: Vec<String> = hydrated
            .iter()
            .map(|f| {
                let state = xattr::get(f, "user.ferry.state").ok().flatten().unwrap_or_default();
                format!("{}: {}", f.display(), String::from_utf8_lossy(&state))
            })
            .collect();
        assert!(hydrated.is_empty(), "not stubs on B: {states:#?}");
        let copy = self.b.parent().unwrap().join("recalled");
        let _ = std::fs::remove_dir_all(&copy);
        common::ops::sh(
            "cp",
            &[
                "-a".as_ref(),
                "--reflink=auto".as_ref(),
                on_b.as_os_str(),
                copy.as_os_str(),
            ],
        );
        let conf = self.s.dir.path().join("recall.conf");
        std::fs::write(
            &conf,
            format!(
                "[settings]\nsite = recall\n\n[Endpoint archive]\n{}root = {}\n",
                self.s.archive_settings(),
                copy.display()
            ),
        )
        .unwrap();
        let (_, files, _) = entries(&copy);
        let list: Vec<u8> = files
            .iter()
            .flat_map(|f| [f.as_os_str().as_bytes(), b"\0"].concat())
            .collect();
        let list_file = self.s.dir.path().join("recall.list");
        std::fs::write(&list_file, list).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["recall", "--jsonl", "-0", "--endpoint", "archive", "--config"])
            .arg(&conf)
            .arg("--from")
            .arg(&list_file)
            .output()
            .unwrap();
        if !out.status.success() {
            self.s.keep_logs();
        }
        assert!(
            out.status.success(),
            "recall: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let (dirs, _, _) = entries(&copy);
        for d in dirs.iter().chain([&copy]) {
            let there = on_b.join(d.strip_prefix(&copy).unwrap());
            let m = std::fs::symlink_metadata(&there).unwrap();
            let times = std::fs::FileTimes::new()
                .set_accessed(m.accessed().unwrap())
                .set_modified(m.modified().unwrap());
            std::fs::File::open(d).unwrap().set_times(times).unwrap();
        }
        self.rsync_with(from, &copy, &[])
    }

    /// The job's failed files, for messages.
    fn failures(&self, job: &Value) -> Value {
        let id = job["id"].as_i64().unwrap();
        let files = self.s.api(
            "GET",
            &format!("/api/jobstats/?job={id}&state[]=failures&page_size=20"),
            None,
            200,
        );
        let tasks = self
            .s
            .api("GET", &format!("/api/tasks/?job_id={id}&state=FAILURE"), None, 200);
        json!({"files": files["results"], "failed_tasks": tasks["results"]})
    }
}

/// Every entry under `root` (not `root` itself, not the snapdiff's own
/// `.snapshots` and `.rotate`), split
/// into directories, regular files and symlinks.
fn entries(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>, Vec<PathBuf>) {
    let (mut dirs, mut files, mut links) = (Vec::new(), Vec::new(), Vec::new());
    for e in walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() != 1 || (e.file_name() != ".snapshots" && e.file_name() != ".rotate"))
    {
        let e = e.unwrap();
        let t = e.file_type();
        let list = if t.is_dir() {
            &mut dirs
        } else if t.is_symlink() {
            &mut links
        } else {
            &mut files
        };
        list.push(e.into_path());
    }
    (dirs, files, links)
}

/// A new name: plain, with a newline, or not UTF-8.
fn name(rng: &mut Rng) -> std::ffi::OsString {
    let n = rng.next() % 100_000;
    let bytes = match rng.below(6) {
        0 => format!("line\nbreak-{n}").into_bytes(),
        1 => [b"bad-".as_slice(), &[0xff, 0xfe], format!("-{n}").as_bytes()].concat(),
        _ => format!("f{n}").into_bytes(),
    };
    OsStr::from_bytes(&bytes).to_os_string()
}

fn content(rng: &mut Rng) -> Vec<u8> {
    let len = [0, 1, 100, 5000, 70_000][rng.below(5)];
    (0..len).map(|_| (rng.next() & 0xff) as u8).collect()
}

/// One round of random changes in `root`: creates, appends, same-size
/// rewrites, mode, owner and xattr changes, renames of files and
/// directories, swaps, deletes of files and trees, hard links, symlinks.
/// Returns what it did, for messages.
fn change(root: &Path, rng: &mut Rng, n: usize) -> Vec<String> {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let mut did = Vec::new();
    for _ in 0..n {
        let (dirs, files, links) = entries(root);
        let dir = |rng: &mut Rng| {
            let mut all = vec![root.to_path_buf()];
            all.extend(dirs.iter().cloned());
            all[rng.below(all.len())].clone()
        };
        let op = rng.below(15);
        let r: std::io::Result<()> = (|| {
            match op {
                0 | 1 => {
                    let p = dir(rng).join(name(rng));
                    std::fs::write(&p, content(rng))?;
                    did.push(format!("create {p:?}"));
                }
                2 => {
                    let d = dir(rng).join(name(rng));
                    std::fs::create_dir(&d)?;
                    for _ in 0..rng.below(3) {
                        std::fs::write(d.join(name(rng)), content(rng))?;
                    }
                    did.push(format!("mkdir {d:?}"));
                }
                3 => {
                    if let Some(f) = rng.pick(&files) {
                        use std::io::Write;
                        std::fs::OpenOptions::new()
                            .append(true)
                            .open(f)?
                            .write_all(&content(rng))?;
                        did.push(format!("append {f:?}"));
                    }
                }
                4 => {
                    if let Some(f) = rng.pick(&files) {
                        let len = std::fs::metadata(f)?.len() as usize;
                        let body: Vec<u8> = (0..len).map(|_| (rng.next() & 0xff) as u8).collect();
                        std::fs::write(f, body)?;
                        did.push(format!("rewrite same size {f:?}"));
                    }
                }
                5 => {
                    if let Some(f) = rng.pick(&files) {
                        let mode = [0o600, 0o640, 0o644, 0o755, 0o444][rng.below(5)];
                        std::fs::set_permissions(f, std::fs::Permissions::from_mode(mode))?;
                        did.push(format!("chmod {mode:o} {f:?}"));
                    }
                }
                6 => {
                    if let Some(f) = rng.pick(&files) {
                        let id = 1000 + rng.below(5) as u32;
                        std::os::unix::fs::lchown(f, Some(id), Some(id + 1))?;
                        did.push(format!("chown {id} {f:?}"));
                    }
                }
                7 => {
                    if let Some(f) = rng.pick(&files) {
                        let v = format!("v{}", rng.next() % 1000);
                        xattr::set(f, "user.tag", v.as_bytes())?;
                        did.push(format!("xattr {f:?}"));
                    }
                }
                8 => {
                    if let Some(f) = rng.pick(&files) {
                        let to = dir(rng).join(name(rng));
                        std::fs::rename(f, &to)?;
                        did.push(format!("rename {f:?} -> {to:?}"));
                    }
                }
                9 => {
                    if let Some(d) = rng.pick(&dirs) {
                        let to = root.join(name(rng));
                        if !to.starts_with(d) {
                            std::fs::rename(d, &to)?;
                            did.push(format!("rename dir {d:?} -> {to:?}"));
                        }
                    }
                }
                10 => {
                    if files.len() >= 2 {
                        let (x, y) = (&files[rng.below(files.len())], &files[rng.below(files.len())]);
                        if x != y {
                            let tmp = root.join(".swap");
                            std::fs::rename(x, &tmp)?;
                            std::fs::rename(y, x)?;
                            std::fs::rename(&tmp, y)?;
                            did.push(format!("swap {x:?} {y:?}"));
                        }
                    }
                }
                11 => {
                    if let Some(f) = rng.pick(&files).or(rng.pick(&links)) {
                        std::fs::remove_file(f)?;
                        did.push(format!("delete {f:?}"));
                    }
                }
                12 => {
                    if let Some(d) = rng.pick(&dirs) {
                        std::fs::remove_dir_all(d)?;
                        did.push(format!("delete tree {d:?}"));
                    }
                }
                13 => {
                    if let Some(f) = rng.pick(&files) {
                        let to = dir(rng).join(name(rng));
                        std::fs::hard_link(f, &to)?;
                        did.push(format!("hard link {f:?} <- {to:?}"));
                    }
                }
                _ => {
                    let p = dir(rng).join(name(rng));
                    let target = match rng.pick(&files) {
                        Some(f) if rng.below(2) == 0 => f.strip_prefix(root).unwrap().to_path_buf(),
                        _ => PathBuf::from("../nowhere"),
                    };
                    symlink(&target, &p)?;
                    did.push(format!("symlink {p:?} -> {target:?}"));
                }
            }
            Ok(())
        })();
        if let Err(e) = r {
            did.push(format!("(op {op} failed: {e})"));
        }
    }
    did
}

fn rounds() -> usize {
    if std::env::var_os("FERRY_SOAK").is_some() {
        20
    } else {
        3
    }
}

/// Round 0 sends the first tree; each of `rounds` later rounds changes A
/// at random and syncs; after each, B matches A's snapshot exactly.
fn converges(v: Variant, rounds: usize) {
    let Some(r) = rig(v) else { return };
    let mut rng = Rng(0x5eed_0000 + v.mapped as u64 + 2 * v.s3 as u64);
    // A first tree with a bit of everything.
    std::fs::create_dir_all(r.a.join("dir/sub")).unwrap();
    std::fs::write(r.a.join("dir/sub/file"), b"hello").unwrap();
    std::fs::write(r.a.join("top"), b"top").unwrap();
    change(&r.a, &mut rng, 30);
    for round in 0..=rounds {
        let did = if round == 0 {
            vec!["the first tree".to_string()]
        } else {
            change(&r.a, &mut rng, 12)
        };
        let job = r.sync(v.hydrate);
        let diff = if v.hydrate {
            r.differences()
        } else {
            r.recalled_differences()
        };
        if job["state"] != "SUCCESS" || !diff.is_empty() {
            r.s.keep_logs();
        }
        assert_eq!(
            job["state"],
            "SUCCESS",
            "round {round} ({did:#?}): {job}\nfailures: {}",
            r.failures(&job)
        );
        assert!(
            diff.is_empty(),
            "round {round} ({did:#?}): B differs from A's snapshot:\n{diff}"
        );
    }
    // Nothing changed since: the next sync finds nothing to do, although
    // the last one stamped each file it sent with its location on A,
    // which moved their ctimes after the snapshot.
    let job = r.sync(v.hydrate);
    assert_eq!(job["state"], "SUCCESS", "{job}");
    let c = &job["counts"];
    assert_eq!(
        (&c["files_found"], &c["processed"], &c["skipped"]),
        (&json!(0), &json!(0), &json!(0)),
        "a sync after no change: {job}"
    );
}

/// The first sync of a tree with files, directories, symlinks, hard
/// links, xattrs and awkward names makes B exactly A's snapshot.
#[test]
fn site_sync_sends_a_first_tree_exactly() {
    converges(
        Variant {
            hydrate: true,
            ..Variant::default()
        },
        0,
    );
}

#[test]
fn site_sync_converges_between_sites_mounted_at_the_same_path() {
    converges(
        Variant {
            hydrate: true,
            ..Variant::default()
        },
        rounds(),
    );
}

/// The same through a bucket on the S3 server.
#[test]
fn site_sync_converges_through_an_s3_endpoint() {
    converges(
        Variant {
            hydrate: true,
            s3: true,
            ..Variant::default()
        },
        rounds(),
    );
}

/// Dehydrated: every file on B is a stub, and recalling them gives A's
/// snapshot exactly.
#[test]
fn dehydrated_site_sync_leaves_stubs_that_recall_to_the_source() {
    converges(Variant::default(), rounds());
}

#[test]
fn site_sync_converges_onto_a_site_that_maps_its_paths() {
    converges(
        Variant {
            mapped: true,
            hydrate: true,
            ..Variant::default()
        },
        rounds(),
    );
}

impl Rig {
    /// Runs built-in `workflow` on `site` for `path` with `fields`, as an
    /// admin submits it, waits for its job and says how long it took.
    fn run(&self, workflow: &str, site: &str, path: &str, fields: Value) -> Value {
        let t0 = std::time::Instant::now();
        let job = self.s.api(
            "POST",
            "/api/file/workflow/",
            Some(json!({"workflow": workflow, "site": site, "paths": [path], "fields": fields})),
            201,
        );
        let done = self.s.wait_job(job["id"].as_i64().unwrap(), Duration::from_secs(600));
        if done["state"] != "SUCCESS" {
            self.s.keep_logs();
        }
        assert_eq!(done["state"], "SUCCESS", "{workflow}: {done}\n{}", self.failures(&done));
        eprintln!("{workflow} {fields} of {path}: {:.1} s", t0.elapsed().as_secs_f64());
        done
    }
}

/// `send` of a tree of many small files and four large ones (1,000 small
/// files of up to 4 KiB and 4 of 8 MiB; `FERRY_SOAK=1`: 10,000 and 4 of
/// 16 MiB, what the rig's 1 GiB filesystem holds three times over), hydrated and dehydrated, then the endpoint's objects imported
/// by key prefix into an empty directory of site B: the hydrated copy and
/// the import are A's tree exactly, the dehydrated one is stubs that
/// recall to it.
#[test]
fn send_hydrated_and_dehydrated_then_import_the_prefix_into_an_empty_place() {
    let Some(r) = rig(Variant::default()) else { return };
    let soak = std::env::var_os("FERRY_SOAK").is_some();
    let (small, big_mib) = if soak { (10_000, 16) } else { (1_000, 8) };
    let t = r.a.join("t");
    let mut rng = Rng(0x5e4d);
    for i in 0..small {
        let dir = t.join(format!("d{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let n = rng.below(4097);
        let data: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        std::fs::write(dir.join(format!("f{i}")), data).unwrap();
    }
    std::fs::create_dir(t.join("big")).unwrap();
    for i in 0..4u8 {
        let data: Vec<u8> = (0..big_mib << 20).map(|j: usize| (j / 4096) as u8 ^ i).collect();
        std::fs::write(t.join(format!("big/large{i}")), data).unwrap();
    }
    let wire = |name: &str| r.s.data().join(name).to_str().unwrap().to_string();
    r.run(
        "send",
        &r.s.site,
        &wire("t"),
        json!({"destinationsite": r.b_site, "hydrate": true}),
    );
    assert_eq!(r.rsync_with(&t, &r.b.join("t"), &[]), "", "the hydrated send differs");

    // The same tree under another name, sent as stubs.
    common::ops::sh(
        "cp",
        &[
            "-a",
            "--reflink=always",
            t.to_str().unwrap(),
            r.a.join("u").to_str().unwrap(),
        ],
    );
    r.run(
        "send",
        &r.s.site,
        &wire("u"),
        json!({"destinationsite": r.b_site, "hydrate": false}),
    );
    assert_eq!(r.recalled_differences_of(&r.a.join("u"), &r.b.join("u")), "");

    // Import the prefix `t/` into an empty directory of B.
    std::fs::create_dir(r.b.join("imported")).unwrap();
    r.run(
        "import_to_site_hydrated",
        &r.b_site,
        "t/",
        json!({"endpoint": "archive", "location": wire("imported")}),
    );
    assert_eq!(r.rsync_with(&t, &r.b.join("imported/t"), &[]), "", "the import differs");
}

/// Regular files under `root`, relative to it.
fn files_under(root: &Path) -> std::collections::BTreeSet<PathBuf> {
    entries(root)
        .1
        .into_iter()
        .map(|f| f.strip_prefix(root).unwrap().to_path_buf())
        .collect()
}

/// Files B held that A still has at the same path and B has lost.
fn lost_on_b(r: &Rig, held: &std::collections::BTreeSet<PathBuf>) -> Vec<PathBuf> {
    let (on_a, on_b) = (files_under(&r.a), files_under(&r.b));
    held.iter()
        .filter(|f| on_a.contains(*f) && !on_b.contains(*f))
        .cloned()
        .collect()
}

/// Faults mid-sync: site B's agent SIGKILLed, and the endpoint (the S3
/// server, behind a proxy) cut off for 30 s, while a sync runs. The run
/// still ends in SUCCESS: the steps' retries (`max_tries` 6: 2 + 4 + 8 +
/// 16 + 32 s) outlast the outage, and B's unfinished tasks are redelivered
/// when its agent is back. Nothing A still has is deleted on B, and B
/// matches A's snapshot; the next run finds nothing left to do and
/// completes.
#[test]
fn site_sync_survives_a_killed_destination_and_an_endpoint_away_for_30_s() {
    let Some(mut r) = rig(Variant {
        s3: true,
        proxy: true,
        hydrate: true,
        ..Variant::default()
    }) else {
        return;
    };
    let mut rng = Rng(0xfa17);
    let payload = |rng: &mut Rng| -> Vec<u8> { (0..64 * 1024).map(|_| rng.next() as u8).collect() };
    for d in 0..30 {
        std::fs::create_dir(r.a.join(format!("d{d}"))).unwrap();
        for f in 0..10 {
            std::fs::write(r.a.join(format!("d{d}/f{f}")), payload(&mut rng)).unwrap();
        }
    }
    let job = r.sync(true);
    assert_eq!(job["state"], "SUCCESS", "{job}\n{}", r.failures(&job));
    assert_eq!(r.differences(), "");
    // A change set with every kind of step: rewrites, creates, a moved
    // directory, a deleted one.
    for d in 0..15 {
        for f in 0..10 {
            std::fs::write(r.a.join(format!("d{d}/f{f}")), payload(&mut rng)).unwrap();
        }
    }
    std::fs::create_dir(r.a.join("new")).unwrap();
    for f in 0..60 {
        std::fs::write(r.a.join(format!("new/f{f}")), payload(&mut rng)).unwrap();
    }
    std::fs::rename(r.a.join("d20"), r.a.join("moved")).unwrap();
    std::fs::remove_dir_all(r.a.join("d21")).unwrap();
    let held = files_under(&r.b);
    // B's reverse_stub tasks begun and ended, by its log.
    let stubs = |r: &Rig| {
        let log = r.s.log("agent1.log");
        let count = |what: &[&str]| {
            log.lines()
                .filter(|l| l.contains("task=dynamo.tasks.reverse_stub") && what.iter().any(|w| l.contains(w)))
                .count()
        };
        (count(&["task started"]), count(&["task succeeded", "task failed"]))
    };
    let (begun_before, _) = stubs(&r);
    let id = r.submit_sync(true);
    // B is storing files: kill it (mid-task, when the log shows one begun
    // and not ended), and cut the endpoint off.
    let t0 = std::time::Instant::now();
    while !matches!(stubs(&r), (begun, ended) if begun > begun_before && begun > ended) {
        assert!(t0.elapsed() < Duration::from_secs(60), "B never began");
        std::thread::sleep(Duration::from_millis(5));
    }
    r.s.stop_agent(1, true);
    let (begun, ended) = stubs(&r);
    let in_flight = begun > ended;
    let proxy = r.proxy.as_ref().unwrap();
    proxy.cut();
    let cut = std::time::Instant::now();
    assert_eq!(
        lost_on_b(&r, &held),
        Vec::<PathBuf>::new(),
        "lost on B when it was killed"
    );
    std::thread::sleep(Duration::from_secs(3));
    r.s.start_agent(1);
    std::thread::sleep(Duration::from_secs(30).saturating_sub(cut.elapsed()));
    let refused = proxy.refused();
    proxy.restore();
    assert!(refused > 0, "no agent met the outage");
    let job = r.s.wait_job(id, Duration::from_secs(300));
    if job["state"] != "SUCCESS" || !r.differences().is_empty() {
        r.s.keep_logs();
    }
    assert_eq!(job["state"], "SUCCESS", "{job}\n{}", r.failures(&job));
    // Both faults were met: B got back the task it was killed in (when
    // that task had not ended by the time the kill landed), and steps
    // deferred files to later tries.
    eprintln!("B was killed with a reverse_stub task in flight: {in_flight}");
    if in_flight {
        assert!(
            r.s.log("agent1.log").contains("redelivered=true"),
            "the task B was killed in was not redelivered"
        );
    }
    let tasks =
        r.s.api("GET", &format!("/api/tasks/?job_id={id}&page_size=0"), None, 200);
    let retried: i64 = tasks["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| ["dynamo.tasks.migrate", "dynamo.tasks.reverse_stub"].contains(&t["tasktype"].as_str().unwrap()))
        .map(|t| {
            let one = r.s.api("GET", &format!("/api/tasks/{}/", t["id"]), None, 200);
            one["result"]["status"]["summary"]["retried"].as_i64().unwrap_or(0)
        })
        .sum();
    assert!(retried > 0, "no file waited for a later try");
    assert_eq!(lost_on_b(&r, &held), Vec::<PathBuf>::new(), "lost on B");
    assert_eq!(r.differences(), "", "B differs from A's snapshot after the faults");
    let again = r.sync(true);
    if again["state"] != "SUCCESS" {
        r.s.keep_logs();
    }
    assert_eq!(again["state"], "SUCCESS", "{again}\n{}", r.failures(&again));
    assert_eq!(r.differences(), "");
}

/// Throughput of `site_sync` through the hub, against `rsync -aHAX` of the
/// same tree in the same run (whole-process wall time; a benchmark, not a
/// check: `scripts/bench-site-sync.sh` runs it and prints one JSON line).
/// `FERRY_BENCH_FILES` files (2,500) of `FERRY_BENCH_KB` KiB (64) in
/// `FERRY_BENCH_DIRS` directories (50): the first sync, a sync with nothing
/// changed (the diff reads the xattrs the first run set), then
/// `FERRY_BENCH_ROUNDS` (1) rounds of one sync after `FERRY_BENCH_PERCENT`
/// % (10) of the files were rewritten, each against
/// `rsync -aHAX --delete` (`rewritten` in the output: one entry a round).
/// Sites A and B are on two btrfs images of
/// `FERRY_BENCH_FS_MB` MiB each (1024), as two clusters are; B's holds
/// rsync's copy too. `FERRY_BENCH_ONE_FS` puts both sites on one image.
/// The directory endpoint is on an ext4 image of its own, of the same
/// size; `FERRY_BENCH_EP_ON_ROOT` puts it in the hub's scratch directory.
/// `FERRY_BENCH_BATCH=N` fixes the site's batch size; `FERRY_BENCH_BATCHES`
/// (`dyn,250`, say) sets it for each round in turn (`batch` in the output).
#[test]
#[ignore = "benchmark: run by scripts/bench-site-sync.sh"]
fn site_sync_throughput() {
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (n, kb) = (env("FERRY_BENCH_FILES", 2500), env("FERRY_BENCH_KB", 64));
    let (dirs, percent) = (
        env("FERRY_BENCH_DIRS", 50).max(1),
        env("FERRY_BENCH_PERCENT", 10).clamp(1, 100),
    );
    let Some(r) = rig(Variant {
        hydrate: true,
        fs_mb: env("FERRY_BENCH_FS_MB", 1024) as u64,
        two_fs: std::env::var_os("FERRY_BENCH_ONE_FS").is_none(),
        ep_fs: std::env::var_os("FERRY_BENCH_EP_ON_ROOT").is_none(),
        ..Variant::default()
    }) else {
        return;
    };
    if let Some(n) = std::env::var("FERRY_BENCH_BATCH").ok().and_then(|v| v.parse().ok()) {
        r.s.batch_size(n);
    }
    let mut rng = Rng(0xbe9c);
    let body = |rng: &mut Rng| -> Vec<u8> { (0..kb * 1024).map(|_| (rng.next() & 0xff) as u8).collect() };
    for i in 0..n {
        let d = r.a.join(format!("d{}", i % dirs));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), body(&mut rng)).unwrap();
    }
    // Each timed run starts with nothing dirty: the loop images' pages
    // that an earlier run (or rsync, which flushes nothing) left in the
    // host's cache would otherwise be written by the first flush of the
    // next run, and charged to it.
    let settled = || assert!(Command::new("sync").status().unwrap().success());
    let timed = |f: &mut dyn FnMut()| {
        settled();
        let t = std::time::Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    // rsync copies onto B's filesystem, as ferry does.
    let copy = r.b.parent().unwrap().join("rsync-copy");
    let rsync = |copy: &Path| {
        let out = Command::new("rsync")
            .args(["-aHAX", "--delete", "--exclude=/.snapshots", "--exclude=/.rotate"])
            .arg(format!("{}/", r.a.display()))
            .arg(format!("{}/", copy.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "rsync: {}", String::from_utf8_lossy(&out.stderr));
    };
    // The last job's counts.
    let found = std::cell::Cell::new(Value::Null);
    // A sync's time is its job's life as the hub records it, from
    // submission to completion (the test's polling adds nothing to it).
    let sync = || {
        settled();
        let job = r.sync(true);
        assert_eq!(job["state"], "SUCCESS", "{job}\n{}", r.failures(&job));
        found.set(job["counts"].clone());
        let at = |k: &str| job[k].as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
        at("completed").duration_since(at("created")).as_secs_f64()
    };
    let ferry_first = sync();
    let rsync_first = timed(&mut || rsync(&copy));
    // The run after the first, with nothing changed: the first run's
    // xattrs (location, state) on A moved the ctimes of every file it
    // sent, which the diff tells from a user's change (snapdiff's
    // `own_xattrs`). Timed on its own; the measured run comes after it.
    let ferry_settle = sync();
    let settle_checked = found.take();
    // Each round rewrites the same files with new content, then times a
    // sync and rsync.
    let rounds = env("FERRY_BENCH_ROUNDS", 1).max(1);
    // `FERRY_BENCH_BATCHES=dyn,250`: the site's batch sizing for each round
    // in turn (`dyn` the default dynamic sizing, a number a fixed size), so
    // that two sizings compare in one run.
    let batches: Vec<Option<u64>> = std::env::var("FERRY_BENCH_BATCHES")
        .map(|v| {
            v.split(',')
                .map(|b| match b {
                    "dyn" => None,
                    n => Some(
                        n.parse()
                            .unwrap_or_else(|_| panic!("FERRY_BENCH_BATCHES: {b:?} is neither `dyn` nor a batch size")),
                    ),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut again = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let batch = batches.get(round % batches.len().max(1)).copied().flatten();
        if !batches.is_empty() {
            match batch {
                Some(n) => r.s.batch_size(n),
                None => r.s.dynamic_batches(),
            }
        }
        for i in (0..n).step_by(100 / percent) {
            let f = r.a.join(format!("d{}/f{i}", i % dirs));
            std::fs::write(f, body(&mut rng)).unwrap();
        }
        let ferry_s = sync();
        let counts = found.take();
        let rsync_s = timed(&mut || rsync(&copy));
        // Checked against A's live tree, which nothing changes between
        // rounds: a walk of the snapshot would fill the dentry cache under
        // it, which the next run's deletion of that snapshot then prunes
        // (0.36 CPU-seconds of 2 cores for 200,000 entries, 2026-12-07).
        assert_eq!(r.both_ways_differences(), "", "B differs from A");
        again.push(
            json!({"percent": percent, "ferry_s": ferry_s, "rsync_s": rsync_s, "counts": counts, "batch": batch,
                          "ratio_rsync_over_ferry": rsync_s / ferry_s}),
        );
    }
    if std::env::var_os("FERRY_BENCH_KEEP_LOGS").is_some() {
        r.s.keep_logs();
    }
    let mb = (n * kb) as f64 / 1024.0;
    println!(
        "{}",
        json!({
            "files": n, "kib_each": kb, "mib": mb,
            "first": {"ferry_s": ferry_first, "rsync_s": rsync_first, "ferry_mib_s": mb / ferry_first,
                      "ratio_rsync_over_ferry": rsync_first / ferry_first},
            "settle_after_first": {"ferry_s": ferry_settle, "counts": settle_checked},
            "rewritten": again,
        })
    );
}

impl Rig {
    /// A `bidirectional_snapdiff` schedule of the fileset on site A with
    /// `bidirectional_sync` to site B subscribed (never due by itself: it
    /// runs through `POST /run/`); its id.
    fn bisync_schedule(&self) -> i64 {
        let sched = self.s.api(
            "POST",
            "/api/schedules/",
            Some(
                json!({"name": "both ways", "site": self.s.site, "managed_paths": [self.s.data().to_str().unwrap()],
                        "discovery": "bidirectional_snapdiff", "minute": "0", "hour": "0", "day_of_month": "1",
                        "month_of_year": "1", "enabled": false}),
            ),
            201,
        );
        let id = sched["id"].as_i64().unwrap();
        self.s.api(
            "POST",
            &format!("/api/schedules/{id}/workflows/"),
            Some(json!({"workflow": "bidirectional_sync", "fields": {"destinationsite": self.b_site}})),
            201,
        );
        id
    }

    /// Runs the schedule and waits for its one job.
    fn bisync(&self, schedule: i64) -> Value {
        let run = self
            .s
            .api("POST", &format!("/api/schedules/{schedule}/run/"), None, 201);
        let jobs = run["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), 1, "one job per run: {run}");
        self.s
            .wait_job(jobs[0]["id"].as_i64().unwrap(), Duration::from_secs(300))
    }

    /// A job's listed files in `state`, by path (relative to the fileset).
    fn listed(&self, job: &Value, state: &str) -> Vec<String> {
        let id = job["id"].as_i64().unwrap();
        let files = self.s.api(
            "GET",
            &format!("/api/jobstats/?job={id}&state[]={state}&page_size=0"),
            None,
            200,
        );
        let root = format!("{}/", self.s.data().display());
        let mut out: Vec<String> = files["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap().trim_start_matches(&root).to_string())
            .collect();
        out.sort();
        out
    }

    /// The changes a bidirectional job compared, with its decisions.
    fn sync_events(&self, job: &Value) -> Value {
        let id = job["id"].as_i64().unwrap();
        let text = self.s.raw(&format!("/api/jobs/{id}/syncevents/?page_size=0"));
        // Names that are not UTF-8 come as surrogate escapes, which serde
        // reads as the replacement character.
        let text = text.replace("\\udc", "\\u00");
        match serde_json::from_str::<Value>(&text) {
            Ok(page) => page["results"].clone(),
            Err(_) => Value::String(text),
        }
    }

    /// What rsync would change to make B like A (both live).
    fn both_ways_differences(&self) -> String {
        self.rsync_with(&self.a, &self.b, &[])
    }
}

/// Writes `data` at `rel` under `root` with mtime `age` seconds ago.
fn write_aged(root: &Path, rel: &str, data: &[u8], age: u64) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    let t = std::time::SystemTime::now() - Duration::from_secs(age);
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// `bidirectional_sync`: changes on both sites between runs, with each
/// conflict kind of the seed (003:L11569-11634), settle as documented
/// (docs/decisions.md, "Bidirectional sync"), and what a site loses is
/// listed in the job's files; a run with nothing new moves no data.
#[test]
fn bidirectional_sync_settles_each_conflict_as_documented() {
    let Some(r) = rig(Variant::default()) else { return };
    let (a, b) = (&r.a, &r.b);
    for name in [
        "del_vs_mod",
        "mod_vs_del",
        "swap_a",
        "swap_b",
        "sw2_a",
        "sw2_b",
        "mv_src",
        "mvdel",
        "ren",
        "lww_b",
        "lww_a",
        "dir1/x",
        "dir1/y",
        "keep",
    ] {
        write_aged(a, name, format!("first {name}").as_bytes(), 1000);
    }
    // B starts with a file of its own: it travels to A.
    write_aged(b, "from_b", b"B's own", 900);
    let sched = r.bisync_schedule();
    let first = r.bisync(sched);
    assert_eq!(first["state"], "SUCCESS", "{first}\n{}", r.failures(&first));
    let diff = r.both_ways_differences();
    assert!(diff.is_empty(), "after the first run, B differs from A:\n{diff}");
    assert_eq!(std::fs::read(a.join("from_b")).unwrap(), b"B's own");

    // A run with nothing new moves no data and touches no file: what each
    // site reports is the echo of what the first run wrote there (dropped)
    // or the sync's own bookkeeping on the files it sent (checked against
    // the other site, found equal).
    let touched = |root: &Path| -> Vec<(PathBuf, (u64, i64, i64))> {
        let (_, files, links) = entries(root);
        files
            .iter()
            .chain(&links)
            .map(|f| {
                let m = std::fs::symlink_metadata(f).unwrap();
                use std::os::unix::fs::MetadataExt;
                (f.clone(), (m.ino(), m.ctime(), m.ctime_nsec()))
            })
            .collect()
    };
    let before = (touched(a), touched(b));
    let quiet = r.bisync(sched);
    assert_eq!(quiet["state"], "SUCCESS", "{quiet}\n{}", r.failures(&quiet));
    assert!(
        before == (touched(a), touched(b)),
        "a quiet run touched files; events: {:#}",
        r.sync_events(&quiet)
    );
    let echoes = r
        .sync_events(&quiet)
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["decision"] == "echo")
        .count();
    assert_eq!(
        echoes,
        16,
        "every file the first run wrote is its echo: {:#}",
        r.sync_events(&quiet)
    );

    // Changes on both sites, each conflict kind.
    let sh = |cmd: &str| common::ops::sh("sh", &[OsStr::new("-c"), OsStr::new(cmd)]);
    // Create/modify beats delete, either way round.
    std::fs::remove_file(a.join("del_vs_mod")).unwrap();
    write_aged(b, "del_vs_mod", b"B changed it", 10);
    write_aged(a, "mod_vs_del", b"A changed it", 10);
    std::fs::remove_file(b.join("mod_vs_del")).unwrap();
    // A swap on one site is made on the other.
    sh(&format!(
        "cd {} && mv swap_a t && mv swap_b swap_a && mv t swap_b",
        a.display()
    ));
    // A swap on A while B changed one of the two: B's change follows it.
    sh(&format!(
        "cd {} && mv sw2_a t && mv sw2_b sw2_a && mv t sw2_b",
        a.display()
    ));
    write_aged(b, "sw2_a", b"B changed sw2_a", 10);
    // A move onto a path the other site wrote: refused, both kept.
    std::fs::rename(a.join("mv_src"), a.join("mv_dst")).unwrap();
    write_aged(b, "mv_dst", b"B made mv_dst", 10);
    // Moved on A, deleted on B: sent again.
    std::fs::rename(a.join("mvdel"), a.join("mvdel_new")).unwrap();
    std::fs::remove_file(b.join("mvdel")).unwrap();
    // Renamed differently on both: both names kept.
    std::fs::rename(a.join("ren"), a.join("ren_a")).unwrap();
    std::fs::rename(b.join("ren"), b.join("ren_b")).unwrap();
    // Last write wins, whichever site wrote last.
    write_aged(a, "lww_b", b"A's older write", 60);
    write_aged(b, "lww_b", b"B's newer write", 20);
    write_aged(a, "lww_a", b"A's newer write", 20);
    write_aged(b, "lww_a", b"B's older write", 60);
    // A directory moved on B while A changed a file in it and deleted
    // another: both land in its new place.
    std::fs::rename(b.join("dir1"), b.join("dir1_moved")).unwrap();
    write_aged(a, "dir1/x", b"A changed x", 10);
    std::fs::remove_file(a.join("dir1/y")).unwrap();
    // New files on both, with awkward names.
    write_aged(a, "a new\nline", b"from A", 10);
    std::fs::write(b.join(OsStr::from_bytes(b"b-\xff-name")), b"from B").unwrap();

    let job = r.bisync(sched);
    // The refused move fails the job, and is listed.
    assert_eq!(job["state"], "FAILURE", "{job}");
    assert_eq!(r.listed(&job, "failures"), ["mv_dst"], "{}", r.failures(&job));
    let why = r.failures(&job)["files"][0]["message"][0].as_str().unwrap().to_string();
    assert!(
        why.contains("moved here from") && why.contains("neither overwrites"),
        "both sites' side of the refused move: {why}"
    );
    // Deletes the other site's change overrode are listed as skipped.
    assert_eq!(
        r.listed(&job, "skipped"),
        ["del_vs_mod", "mod_vs_del", "mvdel"],
        "{}",
        r.failures(&job)
    );
    let read = |root: &Path, rel: &str| String::from_utf8_lossy(&std::fs::read(root.join(rel)).unwrap()).into_owned();
    for root in [a, b] {
        let at = root.display();
        assert_eq!(read(root, "del_vs_mod"), "B changed it", "{at}");
        assert_eq!(read(root, "mod_vs_del"), "A changed it", "{at}");
        assert_eq!(read(root, "swap_a"), "first swap_b", "{at}");
        assert_eq!(read(root, "swap_b"), "first swap_a", "{at}");
        assert_eq!(read(root, "sw2_a"), "first sw2_b", "{at}");
        assert_eq!(read(root, "sw2_b"), "B changed sw2_a", "{at}");
        assert_eq!(read(root, "mvdel_new"), "first mvdel", "{at}");
        assert!(!root.join("mvdel").exists(), "{at}");
        assert_eq!(read(root, "ren_a"), "first ren", "{at}");
        assert_eq!(read(root, "ren_b"), "first ren", "{at}");
        assert!(!root.join("ren").exists(), "{at}");
        assert_eq!(read(root, "lww_b"), "B's newer write", "{at}");
        assert_eq!(read(root, "lww_a"), "A's newer write", "{at}");
        assert_eq!(read(root, "dir1_moved/x"), "A changed x", "{at}");
        assert!(!root.join("dir1_moved/y").exists(), "{at}");
        assert!(!root.join("dir1").exists(), "{at}");
        assert_eq!(read(root, "a new\nline"), "from A", "{at}");
        assert_eq!(
            std::fs::read(root.join(OsStr::from_bytes(b"b-\xff-name"))).unwrap(),
            b"from B",
            "{at}"
        );
    }
    // The refused move: each site keeps what it had, nothing overwritten.
    assert_eq!(read(a, "mv_dst"), "first mv_src");
    assert!(!a.join("mv_src").exists());
    assert_eq!(read(b, "mv_dst"), "B made mv_dst");
    assert_eq!(read(b, "mv_src"), "first mv_src");
    // Apart from it, the sites match.
    let diff = r.rsync_with(a, b, &["--exclude=/mv_dst", "--exclude=/mv_src"]);
    assert!(diff.is_empty(), "B differs from A:\n{diff}");

    // And the next run, with nothing new, changes nothing.
    let after = r.bisync(sched);
    assert_eq!(after["state"], "SUCCESS", "{after}\n{}", r.failures(&after));
    let diff = r.rsync_with(a, b, &["--exclude=/mv_dst", "--exclude=/mv_src"]);
    assert!(diff.is_empty(), "after a quiet run, B differs from A:\n{diff}");
    assert_eq!(read(a, "mv_dst"), "first mv_src");
    assert_eq!(read(b, "mv_dst"), "B made mv_dst");
}

/// `bidirectional_sync` converges: each round, random changes on both
/// sites (each in a tree of its own, so none conflicts: the conflicts
/// have their own test), then a run; after it both sites hold the same
/// tree, exactly (content, modes, owners, times, xattrs, links).
#[test]
fn bidirectional_sync_converges_under_random_changes_on_both_sites() {
    let Some(r) = rig(Variant::default()) else { return };
    let mut rng = Rng(0xb1d1_0000);
    let (on_a, on_b) = (r.a.join("made-on-a"), r.b.join("made-on-b"));
    std::fs::create_dir(&on_a).unwrap();
    std::fs::create_dir(&on_b).unwrap();
    let sched = r.bisync_schedule();
    // What each site made, as it was before the run: after it, both sites
    // hold exactly that (the two sites matching each other is not enough:
    // a loss on both would match too).
    let refs = r.s.dir.path().join("made");
    let copy = |from: &Path, to: &Path| {
        let (from, to) = (format!("{}/", from.display()), format!("{}/", to.display()));
        common::ops::sh("rsync", &["-aHAX", "--delete", "--mkpath", &from, &to]);
    };
    for round in 0..=rounds() {
        let did_a = change(&on_a, &mut rng, if round == 0 { 30 } else { 10 });
        let did_b = change(&on_b, &mut rng, if round == 0 { 30 } else { 10 });
        copy(&on_a, &refs.join("made-on-a"));
        copy(&on_b, &refs.join("made-on-b"));
        let job = r.bisync(sched);
        let mut diff = String::new();
        for made in ["made-on-a", "made-on-b"] {
            for site in [&r.a, &r.b] {
                let d = r.rsync_with(&refs.join(made), &site.join(made), &[]);
                if !d.is_empty() {
                    diff.push_str(&format!(
                        "{} differs from what was made:\n{d}",
                        site.join(made).display()
                    ));
                }
            }
        }
        diff.push_str(&r.both_ways_differences());
        if job["state"] != "SUCCESS" || !diff.is_empty() {
            r.s.keep_logs();
        }
        assert_eq!(
            job["state"],
            "SUCCESS",
            "round {round} (A: {did_a:#?}, B: {did_b:#?}): {job}\nfailures: {}",
            r.failures(&job)
        );
        assert!(
            diff.is_empty(),
            "round {round} (A: {did_a:#?}, B: {did_b:#?}): the sites differ:\n{diff}\nevents: {:#}",
            r.sync_events(&job)
        );
    }
}

/// A bidirectional run whose snapdiff fails on one site (another run
/// holds that fileset's lock) applies nothing and rolls the other site's
/// snapshot back: the job fails, saying why, and the next run sends both
/// sites' changes.
#[test]
fn a_bidirectional_run_that_cannot_diff_one_site_applies_nothing_and_the_next_run_does_it_all() {
    let Some(r) = rig(Variant::default()) else { return };
    let (a, b) = (&r.a, &r.b);
    write_aged(a, "first", b"first", 100);
    let sched = r.bisync_schedule();
    let job = r.bisync(sched);
    assert_eq!(job["state"], "SUCCESS", "{job}\n{}", r.failures(&job));
    // Another live run holds B's lock (this process, on this host).
    let lastsnap = std::fs::read_dir(b.join(".rotate"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.contains(".lastsnap."))
        .expect("B's last-snap file");
    let key = &lastsnap[lastsnap.find("name.").unwrap()..];
    let lock = b.join(".rotate").join(format!("snapdiff.{key}.lock"));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    std::fs::write(
        &lock,
        json!({"pid": std::process::id(), "host": host.trim(), "run": "blocker", "started": "2026-12-05T00:00:00+00:00"})
            .to_string(),
    )
    .unwrap();
    write_aged(a, "made-on-a", b"A", 10);
    write_aged(b, "made-on-b", b"B", 10);
    let job = r.bisync(sched);
    assert_eq!(job["state"], "FAILURE", "{job}");
    let failed = r.failures(&job)["failed_tasks"].clone();
    let failed = failed.as_array().unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(
        (failed[0]["tasktype"].as_str(), failed[0]["site"].as_str()),
        (Some("dynamo.tasks.snapdiff"), Some(r.b_site.as_str()))
    );
    let why =
        r.s.api("GET", &format!("/api/tasks/{}/", failed[0]["id"]), None, 200)
            .to_string();
    assert!(why.contains("SnapdiffLockError"), "{why}");
    assert!(!b.join("made-on-a").exists() && !a.join("made-on-b").exists());
    std::fs::remove_file(&lock).unwrap();
    let job = r.bisync(sched);
    assert_eq!(job["state"], "SUCCESS", "{job}\n{}", r.failures(&job));
    assert_eq!(std::fs::read(b.join("made-on-a")).unwrap(), b"A");
    assert_eq!(std::fs::read(a.join("made-on-b")).unwrap(), b"B");
    let diff = r.both_ways_differences();
    assert!(diff.is_empty(), "the sites differ:\n{diff}");
}
