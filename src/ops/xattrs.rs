//! ferry's extended attributes on managed files, all under one prefix
//! (default `user.ferry.`):
//!
//! - `<prefix>state`: the file's residency and the facts that prove a stub
//!   still matches its object, as one line of `key=value` words led by the
//!   state: `migrated size=4096 mtime=1732460000.123456789 stub=0 blake3=<hex>`.
//!   The leading word lets a GPFS policy select files with
//!   `XATTR('user.ferry.state') LIKE 'migrated %'`.
//! - `<prefix>loc.<endpoint>`: the object key of the file on that endpoint.
//! - `<prefix>parent` (on a directory): the directory was made by a
//!   `reverse_stub` as the missing parent of what it built, and its own
//!   object has not been applied yet; applying it removes the mark.
//!
//! Two attributes per file keep the metadata cost of a migrate at two
//! writes. All access is by file descriptor, so symlinks are never followed.
//! Filesystem-internal namespaces (`system.`, `security.`, `trusted.`) are
//! never copied to objects: only `user.` attributes outside ferry's prefix,
//! and the POSIX ACLs as the kernel presents them
//! ([`ACL_XATTRS`], read and written as xattrs, so a synced tree keeps
//! them).

use crate::sys::Timestamp;
use std::fs::File;
use std::io;
use xattr::FileExt;

/// Whether a managed file's data is on disk as well as in the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residency {
    /// Data is in the target and still on disk (premigrated, dual-resident).
    Premigrated,
    /// Data is in the target and punched out beyond the stub size.
    Migrated,
}

impl Residency {
    /// The word used in the xattr and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Residency::Premigrated => "premigrated",
            Residency::Migrated => "migrated",
        }
    }
}

/// The content of the `state` xattr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HsmState {
    /// Premigrated or migrated.
    pub residency: Residency,
    /// The file's size when its data was copied.
    pub size: u64,
    /// The file's mtime when its data was copied (restored after stubbing).
    pub mtime: Timestamp,
    /// Bytes kept at the start of a stub (the `stub_size` asked for).
    pub stub_size: u64,
    /// BLAKE3 hash of the content.
    pub hash: blake3::Hash,
}

impl HsmState {
    /// The xattr value.
    pub fn encode(&self) -> String {
        format!(
            "{} size={} mtime={}.{:09} stub={} blake3={}",
            self.residency.as_str(),
            self.size,
            self.mtime.sec,
            self.mtime.nsec,
            self.stub_size,
            self.hash.to_hex()
        )
    }

    /// Parses an xattr value written by [`HsmState::encode`].
    pub fn decode(value: &[u8]) -> Result<HsmState, DamagedState> {
        Self::parse(value).map_err(DamagedState)
    }

    fn parse(value: &[u8]) -> Result<HsmState, String> {
        let text = std::str::from_utf8(value).map_err(|_| "not UTF-8".to_string())?;
        let mut words = text.split(' ');
        let residency = match words.next() {
            Some("premigrated") => Residency::Premigrated,
            Some("migrated") => Residency::Migrated,
            other => return Err(format!("unknown state {other:?}")),
        };
        let (mut size, mut mtime, mut stub, mut hash) = (None, None, None, None);
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| format!("expected key=value, found {w:?}"))?;
            let bad = || format!("bad {k} {v:?}");
            let slot_taken = match k {
                "size" => size.replace(v.parse::<u64>().map_err(|_| bad())?).is_some(),
                "stub" => stub.replace(v.parse::<u64>().map_err(|_| bad())?).is_some(),
                "mtime" => mtime.replace(parse_time(v).ok_or_else(bad)?).is_some(),
                "blake3" => hash.replace(blake3::Hash::from_hex(v).map_err(|_| bad())?).is_some(),
                _ => return Err(format!("unknown key {k:?}")),
            };
            if slot_taken {
                return Err(format!("{k} given twice"));
            }
        }
        let missing = |k: &str| format!("no {k}");
        Ok(HsmState {
            residency,
            size: size.ok_or_else(|| missing("size"))?,
            mtime: mtime.ok_or_else(|| missing("mtime"))?,
            stub_size: stub.ok_or_else(|| missing("stub"))?,
            hash: hash.ok_or_else(|| missing("blake3"))?,
        })
    }
}

/// A state xattr that does not parse (anyone may set a user xattr), with
/// what is wrong; a damaged state is reported, never guessed at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DamagedState(pub String);

fn parse_time(v: &str) -> Option<Timestamp> {
    let (s, ns) = v.split_once('.')?;
    if ns.len() != 9 || !ns.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Timestamp {
        sec: s.parse().ok()?,
        nsec: ns.parse().ok()?,
    })
}

/// The names of ferry's xattrs under one prefix.
#[derive(Clone, Debug)]
pub struct Xattrs {
    prefix: String,
}

impl Xattrs {
    /// Names under `prefix` (validated by the configuration).
    pub fn new(prefix: &str) -> Xattrs {
        Xattrs {
            prefix: prefix.to_string(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The name of the state attribute.
    pub fn state_name(&self) -> String {
        format!("{}state", self.prefix)
    }

    /// The name of the location attribute for `endpoint`.
    pub fn location_name(&self, endpoint: &str) -> String {
        format!("{}loc.{endpoint}", self.prefix)
    }

    /// The file's state, `Ok(None)` if it has none, `Err` if unreadable
    /// (a damaged state is reported, never guessed at).
    pub fn state(&self, file: &File) -> io::Result<Option<Result<HsmState, DamagedState>>> {
        Ok(file.get_xattr(self.state_name())?.map(|v| HsmState::decode(&v)))
    }

    /// Records the file's state.
    pub fn set_state(&self, file: &File, state: &HsmState) -> io::Result<()> {
        set_explained(file, self.state_name(), state.encode().as_bytes())
    }

    /// Removes the state attribute (absent is fine).
    pub fn clear_state(&self, file: &File) -> io::Result<()> {
        remove_if_present(file, &self.state_name())
    }

    /// The file's object key on `endpoint`.
    pub fn location(&self, file: &File, endpoint: &str) -> io::Result<Option<Vec<u8>>> {
        file.get_xattr(self.location_name(endpoint))
    }

    /// Records the file's object key on `endpoint`.
    pub fn set_location(&self, file: &File, endpoint: &str, key: &str) -> io::Result<()> {
        set_explained(file, self.location_name(endpoint), key.as_bytes())
    }

    /// Every (endpoint, key) location of the file, sorted by endpoint.
    pub fn locations(&self, file: &File) -> io::Result<Vec<(String, Vec<u8>)>> {
        let head = self.location_name("");
        let mut out = Vec::new();
        for name in file.list_xattr()? {
            let Some(endpoint) = name.as_encoded_bytes().strip_prefix(head.as_bytes()) else {
                continue;
            };
            let endpoint = String::from_utf8_lossy(endpoint).into_owned();
            if let Some(key) = file.get_xattr(&name)? {
                out.push((endpoint, key));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The name of the mark on a directory made as a missing parent.
    fn made_parent_name(&self) -> String {
        format!("{}parent", self.prefix)
    }

    /// Marks a directory as made by ferry as a missing parent.
    pub fn mark_made_parent(&self, dir: &File) -> io::Result<()> {
        set_explained(dir, self.made_parent_name(), b"")
    }

    /// Whether a directory carries the missing-parent mark.
    pub fn is_made_parent(&self, dir: &File) -> io::Result<bool> {
        Ok(dir.get_xattr(self.made_parent_name())?.is_some())
    }

    /// Removes the missing-parent mark (absent is fine).
    pub fn clear_made_parent(&self, dir: &File) -> io::Result<()> {
        remove_if_present(dir, &self.made_parent_name())
    }

    /// Removes the location attribute for `endpoint` (absent is fine).
    pub fn remove_location(&self, file: &File, endpoint: &str) -> io::Result<()> {
        remove_if_present(file, &self.location_name(endpoint))
    }

    /// The file's `user.` xattrs other than ferry's own, to store with its
    /// object.
    pub fn user_xattrs(&self, file: &File) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for name in file.list_xattr()? {
            let bytes = name.as_encoded_bytes();
            if !bytes.starts_with(b"user.") || bytes.starts_with(self.prefix.as_bytes()) {
                continue;
            }
            // An attribute removed meanwhile is simply not copied.
            if let Some(v) = file.get_xattr(&name)? {
                out.push((bytes.to_vec(), v));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The POSIX ACLs as xattrs: a file's or directory's access ACL and a
/// directory's default ACL (present only when they say more than the mode).
pub const ACL_XATTRS: [&str; 2] = ["system.posix_acl_access", "system.posix_acl_default"];

impl Xattrs {
    /// What an object records of a file's or directory's xattrs: its
    /// `user.` ones outside ferry's prefix ([`Xattrs::user_xattrs`]) and
    /// its POSIX ACLs, sorted by name.
    pub fn copied_xattrs(&self, file: &File) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = self.user_xattrs(file)?;
        for name in ACL_XATTRS {
            match file.get_xattr(name) {
                Ok(Some(v)) => out.push((name.as_bytes().to_vec(), v)),
                Ok(None) => {}
                // No ACLs on this filesystem: none to copy.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort();
        Ok(out)
    }
}

fn remove_if_present(file: &File, name: &str) -> io::Result<()> {
    match file.remove_xattr(name) {
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(()),
        other => other,
    }
}

/// Sets one xattr; when the filesystem has no room for it, the error says
/// so instead of the bare `ENOSPC` (ext4 keeps all of a file's xattrs in one
/// block, about 4 KB, and says "no space left on device" when they would
/// outgrow it) or `E2BIG`.
pub fn set_explained(file: &File, name: impl AsRef<std::ffi::OsStr>, value: &[u8]) -> io::Result<()> {
    let name = name.as_ref();
    file.set_xattr(name, value).map_err(|e| {
        if no_room(&e) {
            io::Error::new(
                e.kind(),
                format!(
                    "no room for the {}-byte xattr {}: this file's xattrs would exceed what the filesystem allows on one file ({e})",
                    value.len(),
                    name.to_string_lossy()
                ),
            )
        } else {
            e
        }
    })
}

/// Whether an xattr write failed for lack of room on the file (`ENOSPC`,
/// `E2BIG`, `ERANGE`) rather than a real error.
pub fn no_room(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::E2BIG | libc::ERANGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_rejects_damage() {
        let s = HsmState {
            residency: Residency::Migrated,
            size: 4096,
            mtime: Timestamp { sec: -3, nsec: 5 },
            stub_size: 10,
            hash: blake3::hash(b"x"),
        };
        let text = s.encode();
        assert!(text.starts_with("migrated size=4096 mtime=-3.000000005 stub=10 blake3="));
        assert_eq!(HsmState::decode(text.as_bytes()).unwrap(), s);
        for bad in [
            text.replace("migrated", "offline"),
            text.replace("size=4096", "size=x"),
            text.replace("size=4096", "size=1 size=2"),
            text.replace(" stub=10", ""),
            text.replace("000000005", "5"),
            text.replace(" blake3=", " colour=red blake3="),
            format!("{text} "),
        ] {
            assert!(HsmState::decode(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
