//! Browsing (`dynamo.tasks.browse`, the hub's `GET /api/file/`): one
//! directory's attributes and one page of its entries, in name order, as
//! the seed's file browser shows them (003:L21263-21344).
//!
//! Only the page's entries are looked at beyond their names and types
//! (from the directory itself), so a page of a directory of a million
//! entries costs one read of its names, a sort, and at most 100 `lstat`s.
//! Restricted entries (hidden names, and ferry's own: `.snapshots`,
//! `.rotate`, `.ferry-*`) are left out unless asked for. An entry's
//! `status` is its residency: `online`, or for a file ferry manages,
//! `premigrated` or `migrated` (a stub).

use super::{OpContext, open_file};
use crate::task::surrogate;
use serde::Deserialize;
use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

/// The smallest page the seed allows (0 means no paging).
pub const MIN_PAGE_SIZE: u64 = 20;
/// The largest page the seed allows.
pub const MAX_PAGE_SIZE: u64 = 100;

/// What to list.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct BrowseArgs {
    /// The page, from 1.
    pub page: u64,
    /// Entries per page, 20 to 100; 0 lists them all.
    pub page_size: u64,
    /// Times and disk usage of each entry too.
    pub details: bool,
    /// Include restricted entries.
    pub restricted: bool,
    /// Only entries of this type (`file`, `directory`, `symlink`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

impl Default for BrowseArgs {
    fn default() -> Self {
        BrowseArgs {
            page: 1,
            page_size: MIN_PAGE_SIZE,
            details: false,
            restricted: false,
            kind: None,
        }
    }
}

impl BrowseArgs {
    /// Checks the arguments, naming the one at fault.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.page == 0 {
            return Err(("page", "pages count from 1".into()));
        }
        if self.page_size != 0 && !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&self.page_size) {
            return Err((
                "page_size",
                format!(
                    "{MIN_PAGE_SIZE} to {MAX_PAGE_SIZE}, or 0 for no paging, not {}",
                    self.page_size
                ),
            ));
        }
        if let Some(k) = &self.kind
            && !matches!(k.as_str(), "file" | "directory" | "symlink")
        {
            return Err(("type", format!("file, directory or symlink, not {k:?}")));
        }
        Ok(())
    }
}

/// Why a path cannot be browsed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct BrowseError {
    /// The path, for the message (lossy).
    pub path: String,
    /// What the filesystem said.
    #[source]
    pub source: io::Error,
}

/// Lists `local` (this site's path), naming it and its entries by `wire`
/// (the path every site uses) and `site`: the JSON document the hub
/// serves, without its `url`, `next` and `previous`.
pub fn browse(
    ctx: &OpContext,
    local: &[u8],
    wire: &[u8],
    site: &str,
    args: &BrowseArgs,
) -> Result<Vec<u8>, BrowseError> {
    let fail = |source| BrowseError {
        path: String::from_utf8_lossy(wire).into_owned(),
        source,
    };
    let meta = fs::symlink_metadata(OsStr::from_bytes(local)).map_err(fail)?;
    let mut names: Vec<(Vec<u8>, fs::FileType)> = Vec::new();
    if meta.is_dir() {
        for e in fs::read_dir(OsStr::from_bytes(local)).map_err(fail)? {
            let Ok(e) = e else { continue };
            let name = e.file_name().as_bytes().to_vec();
            let Ok(t) = e.file_type() else { continue };
            if !args.restricted && restricted(&name) {
                continue;
            }
            if args.kind.as_deref().is_some_and(|k| k != type_name(t)) {
                continue;
            }
            names.push((name, t));
        }
    }
    names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let count = names.len();
    let page: &[(Vec<u8>, fs::FileType)] = if args.page_size == 0 {
        &names
    } else {
        let from = ((args.page - 1) * args.page_size) as usize;
        let to = (from + args.page_size as usize).min(count);
        names.get(from..to).unwrap_or_default()
    };
    let mut out = Vec::with_capacity(256 + 200 * page.len());
    out.extend_from_slice(b"{\"site\":");
    surrogate::encode(site.as_bytes(), &mut out);
    out.extend_from_slice(b",\"path\":");
    surrogate::encode(wire, &mut out);
    out.extend_from_slice(format!(",\"type\":\"{}\"", type_name(meta.file_type())).as_bytes());
    attributes(&meta, true, &mut out);
    out.extend_from_slice(format!(",\"children\":{{\"count\":{count},\"results\":[").as_bytes());
    for (i, (name, t)) in page.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let child_local = [local, b"/", name].concat();
        let child_wire = [wire, b"/", name].concat();
        out.extend_from_slice(b"{\"site\":");
        surrogate::encode(site.as_bytes(), &mut out);
        out.extend_from_slice(b",\"path\":");
        surrogate::encode(&child_wire, &mut out);
        out.extend_from_slice(b",\"name\":");
        surrogate::encode(name, &mut out);
        out.extend_from_slice(format!(",\"type\":\"{}\"", type_name(*t)).as_bytes());
        // An entry gone since the directory was read is listed, deleted.
        match fs::symlink_metadata(OsStr::from_bytes(&child_local)) {
            Ok(m) => {
                out.extend_from_slice(format!(",\"size\":{},\"deleted\":false", m.len()).as_bytes());
                let status = if m.is_file() {
                    residency(ctx, &child_local)
                } else {
                    "online"
                };
                out.extend_from_slice(format!(",\"status\":\"{status}\"").as_bytes());
                if args.details {
                    attributes(&m, false, &mut out);
                    out.extend_from_slice(format!(",\"disk_usage\":{}", m.blocks() * 512).as_bytes());
                }
            }
            Err(_) => out.extend_from_slice(b",\"size\":0,\"deleted\":true,\"status\":\"online\""),
        }
        out.extend_from_slice(format!(",\"restricted\":{}}}", restricted(name)).as_bytes());
    }
    out.extend_from_slice(b"]}}");
    Ok(out)
}

/// Hidden names and ferry's own working entries.
fn restricted(name: &[u8]) -> bool {
    name.starts_with(b".")
}

fn type_name(t: fs::FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_file() {
        "file"
    } else {
        "other"
    }
}

/// `,"size":..` (with `size`), `"ctime"`, `"mtime"`, `"atime"` in ISO form.
fn attributes(m: &Metadata, size: bool, out: &mut Vec<u8>) {
    if size {
        out.extend_from_slice(format!(",\"size\":{}", m.len()).as_bytes());
    }
    for (key, sec, nsec) in [
        ("ctime", m.ctime(), m.ctime_nsec()),
        ("mtime", m.mtime(), m.mtime_nsec()),
        ("atime", m.atime(), m.atime_nsec()),
    ] {
        let t = jiff::Timestamp::new(sec, nsec as i32).map_or_else(|_| "null".to_string(), |t| format!("\"{t:.6}\""));
        out.extend_from_slice(format!(",\"{key}\":{t}").as_bytes());
    }
}

/// A regular file's residency by ferry's state xattr.
fn residency(ctx: &OpContext, path: &[u8]) -> &'static str {
    match open_file(path, false)
        .ok()
        .and_then(|f| ctx.xattrs.state(&f).ok().flatten())
    {
        Some(Ok(s)) => s.residency.as_str(),
        _ => "online",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::Value;

    fn list(dir: &std::path::Path, args: BrowseArgs) -> Value {
        let ctx = OpContext::new(Config::empty(), Some(1)).unwrap();
        let local = dir.as_os_str().as_bytes();
        let doc = browse(&ctx, local, b"/wire/d", "s1", &args).unwrap();
        serde_json::from_slice(&doc).unwrap()
    }

    #[test]
    fn a_directory_lists_in_name_order_one_page_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..45 {
            std::fs::write(dir.path().join(format!("f{i:02}")), "x".repeat(i)).unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join(".hidden"), "").unwrap();
        let v = list(dir.path(), BrowseArgs::default());
        assert_eq!(v["type"], "directory");
        assert_eq!(v["path"], "/wire/d");
        assert_eq!(v["children"]["count"], 46, "hidden left out");
        let r = v["children"]["results"].as_array().unwrap();
        assert_eq!(r.len(), 20);
        assert_eq!(r[0]["name"], "f00");
        assert_eq!(r[3]["size"], 3);
        assert_eq!(r[3]["path"], "/wire/d/f03");
        assert_eq!(
            (r[3]["site"].as_str(), r[3]["status"].as_str()),
            (Some("s1"), Some("online"))
        );
        assert!(r[0].get("mtime").is_none(), "times only with details");
        let last = list(
            dir.path(),
            BrowseArgs {
                page: 3,
                details: true,
                restricted: true,
                ..BrowseArgs::default()
            },
        );
        let r = last["children"]["results"].as_array().unwrap();
        assert_eq!(last["children"]["count"], 47);
        let names: Vec<&str> = r.iter().map(|x| x["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["f39", "f40", "f41", "f42", "f43", "f44", "sub"]);
        assert!(r[0]["mtime"].as_str().unwrap().ends_with('Z'));
        let dirs = list(
            dir.path(),
            BrowseArgs {
                page_size: 0,
                kind: Some("directory".into()),
                ..BrowseArgs::default()
            },
        );
        assert_eq!(dirs["children"]["count"], 1);
        assert_eq!(dirs["children"]["results"][0]["type"], "directory");
    }

    #[test]
    fn bad_arguments_name_themselves() {
        for (args, field) in [
            (
                BrowseArgs {
                    page: 0,
                    ..BrowseArgs::default()
                },
                "page",
            ),
            (
                BrowseArgs {
                    page_size: 10,
                    ..BrowseArgs::default()
                },
                "page_size",
            ),
            (
                BrowseArgs {
                    kind: Some("fifo".into()),
                    ..BrowseArgs::default()
                },
                "type",
            ),
        ] {
            assert_eq!(args.check().unwrap_err().0, field);
        }
        let ctx = OpContext::new(Config::empty(), Some(1)).unwrap();
        let e = browse(&ctx, b"/no/such/dir", b"/no/such/dir", "s", &BrowseArgs::default()).unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::NotFound);
    }
}
