//! `path_map`: where this site mounts what every other site calls by
//! another name, for sites whose filesystems are mounted at different
//! paths (site A at `/mmfs1`, site B at `/gpfs/fs2`).
//!
//! Paths on the wire (task messages, results, the hub's records) are
//! *wire paths*: the same on every site. Each agent turns a task's paths
//! into its own local paths as it reads them and its local paths back into
//! wire paths in everything it sends, so a step that runs on another site
//! names the same files there. A site mounted where the others are needs
//! no setting: with no `path_map`, wire and local paths are the same (the
//! seed's assumption). The usual choice is to take one site's mount points
//! as the wire names and give every other site a map onto them.
//!
//! Written `path_map = <local>:<wire>, <local>:<wire>, ...` in
//! `[settings]`, e.g. `path_map = /gpfs/fs2:/mmfs1`. A prefix matches
//! whole path components only (`/mmfs1` does not match `/mmfs10`), the
//! longest one wins, and a path under no prefix is the same on both sides.

use super::ini::BadValue;

/// Local prefixes and the wire prefixes they stand for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathMap {
    /// (local, wire), both absolute, normalised, neither nested in another
    /// of its own side.
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl PathMap {
    /// Reads `<local>:<wire>` pairs separated by commas.
    pub fn parse(text: &str) -> Result<PathMap, BadValue> {
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((local, wire)) = item.split_once(':') else {
                return Err(BadValue::expected(
                    "<local path>:<wire path> pairs separated by commas",
                    item,
                ));
            };
            let (local, wire) = (prefix(local.trim())?, prefix(wire.trim())?);
            for (side, new, old) in [("local", &local, 0), ("wire", &wire, 1)] {
                if let Some(p) = pairs.iter().find(|p| {
                    let other = if old == 0 { &p.0 } else { &p.1 };
                    under(new, other).is_some() || under(other, new).is_some()
                }) {
                    let other = if old == 0 { &p.0 } else { &p.1 };
                    return Err(BadValue(format!(
                        "{side} prefixes {:?} and {:?} overlap: each path must map one way only",
                        String::from_utf8_lossy(new),
                        String::from_utf8_lossy(other)
                    )));
                }
            }
            pairs.push((local, wire));
        }
        Ok(PathMap { pairs })
    }

    /// Whether there is nothing to map (wire and local paths are the same).
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The local path a wire path names, when it differs.
    pub fn to_local(&self, wire: &[u8]) -> Option<Vec<u8>> {
        self.pairs
            .iter()
            .find_map(|(local, w)| under(wire, w).map(|rest| [local.as_slice(), rest].concat()))
    }

    /// The wire path of a local path, when it differs.
    pub fn to_wire(&self, local: &[u8]) -> Option<Vec<u8>> {
        self.pairs
            .iter()
            .find_map(|(l, wire)| under(local, l).map(|rest| [wire.as_slice(), rest].concat()))
    }
}

/// What follows `prefix` in `path` (empty or starting with `/`), when
/// `path` is `prefix` or lies under it.
fn under<'p>(path: &'p [u8], prefix: &[u8]) -> Option<&'p [u8]> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest[0] == b'/').then_some(rest)
}

/// Checks one prefix: absolute, normalised, not the root (mapping `/`
/// would rename every path, which is never what a mount difference is).
fn prefix(p: &str) -> Result<Vec<u8>, BadValue> {
    let normal = p.starts_with('/')
        && p.len() > 1
        && !p.ends_with('/')
        && p[1..].split('/').all(|c| !c.is_empty() && c != "." && c != "..");
    if !normal {
        return Err(BadValue::expected(
            "an absolute path other than / without `.`, `..`, `//` or a trailing `/`",
            p,
        ));
    }
    Ok(p.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_both_ways_by_whole_components() {
        let m = PathMap::parse("/gpfs/fs2:/mmfs1, /gpfs/fs3:/mmfs3").unwrap();
        assert_eq!(m.to_local(b"/mmfs1/a/b\n").unwrap(), b"/gpfs/fs2/a/b\n");
        assert_eq!(m.to_local(b"/mmfs1").unwrap(), b"/gpfs/fs2");
        assert_eq!(m.to_local(b"/mmfs10/x"), None, "not a whole component");
        assert_eq!(m.to_local(b"/other/x"), None);
        assert_eq!(m.to_wire(b"/gpfs/fs3/\xff").unwrap(), b"/mmfs3/\xff");
        assert_eq!(m.to_wire(b"/gpfs/fs2x"), None);
        for p in [&b"/gpfs/fs2/q"[..], b"/gpfs/fs3", b"/elsewhere"] {
            let wire = m.to_wire(p).unwrap_or(p.to_vec());
            assert_eq!(m.to_local(&wire).unwrap_or(wire.clone()), p, "round trip");
        }
        assert!(PathMap::parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_maps_are_refused_with_the_reason() {
        for (text, why) in [
            ("/a", "<local path>:<wire path>"),
            ("a:/b", "an absolute path"),
            ("/a/:/b", "trailing"),
            ("/:/b", "other than /"),
            ("/a/../b:/c", "`..`"),
            ("/a:/x, /a/b:/y", "local prefixes \"/a/b\" and \"/a\" overlap"),
            ("/a:/x, /b:/x/y", "wire prefixes \"/x/y\" and \"/x\" overlap"),
        ] {
            let e = PathMap::parse(text).unwrap_err().0;
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
