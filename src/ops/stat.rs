//! `stat_paths`: report each path's attributes (what `check_sync_state`
//! compares across sites) without following symlinks, plus ferry's
//! residency (`hsm`: `premigrated` or `migrated`) for managed files, a
//! digest of a directory's POSIX ACLs (`acl`) when it has any, and a
//! digest of the xattrs a copy carries (`xattrs`) when there are any.

use super::xattrs::ACL_XATTRS;
use super::{OpContext, open_file, par_map};
use crate::entry::write_timestamp;
use crate::sys::{Base, FileStat, StatMask, stat_at};
use crate::task::{Outcome, PathObject};
use serde_json::value::RawValue;
use std::ffi::CString;
use std::fs::File;

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
    // Links and special files are not opened: they carry none of these.
    let kind = kind(&st);
    let Some(f) = matches!(kind, "file" | "directory")
        .then(|| open_file(path, false).ok())
        .flatten()
    else {
        return o;
    };
    if kind == "directory"
        && let Some(acl) = acl_digest(&f)
    {
        o.extra.push(("acl".into(), raw(format!("\"{acl}\""))));
    }
    if let Some(x) = xattr_digest(ctx, &f, kind) {
        o.extra.push(("xattrs".into(), raw(format!("\"{x}\""))));
    }
    if kind == "file"
        && let Ok(Some(Ok(s))) = ctx.xattrs.state(&f)
    {
        o.extra
            .push(("hsm".into(), raw(format!("\"{}\"", s.residency.as_str()))));
    }
    o
}

/// The POSIX ACLs a directory carries (access and default, as the
/// kernel stores them in `system.posix_acl_*`), as one BLAKE3 digest, so
/// `check_sync_state` can compare directories' ACLs across sites without
/// shipping them; `None` when it has neither.
fn acl_digest(f: &File) -> Option<String> {
    use xattr::FileExt;
    let mut h = blake3::Hasher::new();
    let mut any = false;
    for name in ACL_XATTRS {
        let v = f.get_xattr(name).ok().flatten();
        any |= v.is_some();
        let v = v.unwrap_or_default();
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(&v);
    }
    any.then(|| h.finalize().to_hex().to_string())
}

/// The xattrs a copy of the entry carries, as one BLAKE3 digest, so
/// `check_sync_state` sees a changed `user.` xattr or a file's changed ACL
/// (a metadata-only change, which leaves size and times alone): a file's
/// `user.` xattrs outside ferry's and its ACLs, a directory's `user.`
/// xattrs (its ACLs are `acl`, compared only when asked). `None` for
/// none.
fn xattr_digest(ctx: &OpContext, f: &File, kind: &str) -> Option<String> {
    let xattrs = match kind {
        "file" => ctx.xattrs.copied_xattrs(f),
        _ => ctx.xattrs.user_xattrs(f),
    }
    .ok()?;
    if xattrs.is_empty() {
        return None;
    }
    let mut h = blake3::Hasher::new();
    for (name, value) in &xattrs {
        for part in [name, value] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
    }
    Some(h.finalize().to_hex().to_string())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::process::Command;

    /// The field `key` that `stat_paths` reports for `p`, if any.
    fn field_of(ctx: &OpContext, p: &std::path::Path, key: &str) -> Option<String> {
        let o = stat_paths(ctx, &[PathObject::new(p.as_os_str().as_encoded_bytes().to_vec())]).remove(0);
        o.extra.iter().find(|(k, _)| k == key).map(|(_, v)| v.get().to_string())
    }

    fn acl_of(ctx: &OpContext, dir: &std::path::Path) -> Option<String> {
        field_of(ctx, dir, "acl")
    }

    fn xattrs_of(ctx: &OpContext, p: &std::path::Path) -> Option<String> {
        field_of(ctx, p, "xattrs")
    }

    /// The digest follows a copy's xattrs and leaves ferry's own out: a
    /// file's location changes nothing a copy carries.
    #[test]
    fn the_xattrs_a_copy_carries_are_reported_as_a_digest() {
        let ctx = OpContext::new(Config::empty(), Some(1)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(xattrs_of(&ctx, &f), None, "no xattrs, no digest");
        xattr::set(&f, "user.tag", b"v1").unwrap();
        let one = xattrs_of(&ctx, &f).expect("a digest");
        xattr::set(&f, "user.ferry.loc.e", b"f").unwrap();
        assert_eq!(xattrs_of(&ctx, &f).unwrap(), one, "ferry's own xattrs are not a copy's");
        xattr::set(&f, "user.tag", b"v2").unwrap();
        assert_ne!(xattrs_of(&ctx, &f).unwrap(), one, "a changed value changes the digest");
        xattr::set(dir.path(), "user.tag", b"v2").unwrap();
        assert!(xattrs_of(&ctx, dir.path()).is_some(), "a directory's too");
    }

    #[test]
    fn a_directorys_acls_are_reported_as_a_digest_that_follows_them() {
        let ctx = OpContext::new(Config::empty(), Some(1)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(acl_of(&ctx, dir.path()), None, "no ACL, no digest");
        let setfacl = |spec: &str| {
            let ok = Command::new("setfacl")
                .args(["-m", spec])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "setfacl (package acl) is needed");
        };
        setfacl("u:12345:rx");
        let one = acl_of(&ctx, dir.path()).expect("an ACL digest");
        setfacl("u:12345:rwx");
        let two = acl_of(&ctx, dir.path()).expect("an ACL digest");
        assert_ne!(one, two, "a changed ACL changes the digest");
        setfacl("d:u:12345:rx");
        assert_ne!(acl_of(&ctx, dir.path()).unwrap(), two, "a default ACL counts too");
    }
}
