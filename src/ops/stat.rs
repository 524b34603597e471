//! `stat_paths`: report each path's attributes (what `check_sync_state`
//! compares across sites) without following symlinks, plus ferry's
//! residency (`hsm`: `premigrated` or `migrated`) for managed files.

use super::{OpContext, open_file, par_map};
use crate::entry::write_timestamp;
use crate::sys::{Base, FileStat, StatMask, stat_at};
use crate::task::{Outcome, PathObject};
use serde_json::value::RawValue;
use std::ffi::CString;

/// Stats `paths`, one outcome per path in order; a missing path fails.
pub fn stat_paths(ctx: &OpContext, paths: &[PathObject]) -> Vec<Outcome> {
    par_map(paths.iter().collect(), ctx.threads, |obj: &PathObject| {
        let outcome = stat_one(ctx, &obj.path);
        ctx.count(&outcome, 0);
        outcome
    })
}

fn stat_one(ctx: &OpContext, path: &[u8]) -> Outcome {
    let Ok(c) = CString::new(path) else {
        return Outcome::failed("path contains a NUL byte");
    };
    let st = match stat_at(Base::Cwd, &c, false, StatMask::ALL) {
        Ok(st) => st,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Outcome::failed("no such file or directory"),
        Err(e) => return Outcome::failed(format!("stat: {e}")),
    };
    let mut o = Outcome::processed();
    let num = |v: u64| raw(itoa::Buffer::new().format(v).to_string());
    let time = |t| {
        let mut b = Vec::new();
        write_timestamp(&mut b, t);
        raw(String::from_utf8(b).expect("digits"))
    };
    o.extra = vec![
        ("type".into(), raw(format!("\"{}\"", kind(&st)))),
        ("size".into(), num(st.size)),
        ("mtime".into(), time(st.mtime)),
        ("ctime".into(), time(st.ctime)),
        ("atime".into(), time(st.atime)),
        ("mode".into(), num(u64::from(st.mode))),
        ("uid".into(), num(u64::from(st.uid))),
        ("gid".into(), num(u64::from(st.gid))),
        ("inode".into(), num(st.ino)),
        ("nlink".into(), num(st.nlink)),
    ];
    if kind(&st) == "file"
        && let Ok(f) = open_file(path, false)
        && let Ok(Some(Ok(s))) = ctx.xattrs.state(&f)
    {
        o.extra
            .push(("hsm".into(), raw(format!("\"{}\"", s.residency.as_str()))));
    }
    o
}

fn kind(st: &FileStat) -> &'static str {
    match st.mode & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symlink",
        _ => "other",
    }
}

fn raw(json: String) -> Box<RawValue> {
    RawValue::from_string(json).expect("valid JSON")
}
