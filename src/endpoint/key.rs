//! Object keys from local paths: the path relative to the endpoint's local
//! root, under the endpoint's key prefix, in a layout with no length or byte
//! limits of its own.
//!
//! **Encoding.** Keys must be UTF-8 and object stores reject control
//! characters, while Linux names are any bytes but `/` and NUL. Each path
//! component is kept as it is where it can be, and every other byte is
//! written `%XX`: control characters, `%` itself, `#` and every byte of an
//! invalid UTF-8 sequence. The mapping is injective and readable for
//! ordinary names (`projects/café/a b.txt` stays as it is).
//!
//! **Bounds.** An encoded component can be three times its 255 bytes, and a
//! path has no depth limit, while a directory store's names must fit
//! NAME_MAX (255 bytes) and S3 keys 1,024 bytes. So an encoded component
//! longer than [`PLAIN_MAX`] is stored as `#<readable start>#<blake3 hex>`,
//! the hash taken over the component's raw bytes, and a key that would be
//! longer than [`KEY_MAX`] keeps its leading components and folds the rest
//! into one such name, hashed over the raw remaining path. `#` never occurs
//! in a plain component (it is escaped), so a hashed name can never equal a
//! plain one, and distinct raw inputs give distinct 256-bit hashes. An
//! object whose key holds a hashed name records the full relative path in
//! its metadata ([`super::ObjectMeta::path`]).
//!
//! **Directories.** A directory's own object (its metadata, see
//! [`super::EntryKind`]) cannot sit at its path's key: in a directory
//! store that name is the directory holding its children's objects, and
//! in S3 it would be the prefix of theirs. It is stored at the key with
//! [`DIR_SUFFIX`] (`#d`) appended ([`dir_key`]): `#` never occurs in a
//! plain component and a hashed name ends in hex digits, so no file's key
//! ends in `#d`, and the names stay apart from every child's.
//!
//! The budgets leave room for what ferry appends to a stored name: a new
//! instance's `.<uuid>` ([`instance_key`]), a metadata sidecar's `#m`
//! ([`SIDECAR_SUFFIX`]), and a directory's `#d` (directory objects never
//! get instances, so `#d#m` fits in the instance's room). Names that start with `#` and do not end in a hash
//! are ferry's own (a directory store's `#staging`).
//!
//! Stores written before this layout (by ferry up to 53a13dd) used the
//! plain encoding for every component; recall follows the key a file's
//! location xattr records, so their objects stay readable, and
//! [`legacy_key_for`] finds them by path.

/// Bytes a stored name may take after ferry appends an instance suffix
/// and a sidecar suffix: NAME_MAX.
const NAME_MAX: usize = 255;

/// The `.<32 hex digits>` a new instance of a key gets ([`instance_key`]).
const INSTANCE_SUFFIX: usize = 33;

/// The suffix of a metadata sidecar's name: `<object name>#m`.
pub const SIDECAR_SUFFIX: &str = "#m";

/// The suffix of a directory's own object: `<key of its path>#d`.
pub const DIR_SUFFIX: &str = "#d";

/// The longest encoded component stored as it is.
pub const PLAIN_MAX: usize = NAME_MAX - INSTANCE_SUFFIX - SIDECAR_SUFFIX.len();

/// The longest key: S3's 1,024 bytes less the suffixes.
pub const KEY_MAX: usize = 1024 - INSTANCE_SUFFIX - SIDECAR_SUFFIX.len();

/// Bytes of the encoded start kept readable in a hashed name.
const READABLE_MAX: usize = 96;

/// The longest hashed name: `#`, the readable start, `#`, 64 hex digits.
const HASHED_MAX: usize = 1 + READABLE_MAX + 1 + 64;

/// An object key for a local path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// The key in the store.
    pub key: String,
    /// The path relative to the endpoint's root, when the key holds a
    /// hashed name and so cannot be read back from the key alone.
    pub source: Option<Vec<u8>>,
}

/// Why a path has no key under an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The path is not below the endpoint's local root.
    #[error("path is outside the endpoint's root")]
    OutsideRoot,
    /// The path is the endpoint's root itself.
    #[error("path is the endpoint's root itself, which has no object")]
    IsRoot,
    /// The path has a `.` or `..` component, so its place is ambiguous.
    #[error("path has a '.' or '..' component")]
    DotComponent,
    /// A key given relative to the prefix (as an import names objects)
    /// is not a valid object key.
    #[error("{key:?} is no object key: {reason}")]
    NotAKey {
        /// The key as given.
        key: String,
        /// What the object store said of it.
        reason: String,
    },
}

/// The key of `path` (absolute) for an endpoint whose local `root`
/// (absolute, no trailing slash except `/` itself) maps to `prefix` (no
/// leading or trailing slash; empty for the store's top; at most
/// [`crate::config::endpoint::PREFIX_MAX`] bytes).
pub fn key_for(root: &[u8], prefix: &str, path: &[u8]) -> Result<Key, KeyError> {
    let rel = relative(root, path).ok_or(KeyError::OutsideRoot)?;
    let parts = components(rel)?;
    let encoded: Vec<String> = parts
        .iter()
        .map(|p| {
            let mut s = String::new();
            encode_part(p, &mut s);
            s
        })
        .collect();
    let mut stored: Vec<String> = parts
        .iter()
        .zip(&encoded)
        .map(|(raw, enc)| {
            if enc.len() <= PLAIN_MAX {
                enc.clone()
            } else {
                hashed(raw, enc)
            }
        })
        .collect();
    let mut hashed_any = stored.iter().any(|s| s.starts_with('#'));
    let len = |names: &[String]| prefix.len() + names.iter().map(|n| n.len() + 1).sum::<usize>();
    if len(&stored) > KEY_MAX {
        // Keep as many leading names as leave room for one hashed tail.
        let mut keep = stored.len() - 1;
        while keep > 0 && len(&stored[..keep]) + 1 + HASHED_MAX > KEY_MAX {
            keep -= 1;
        }
        let tail = rel_join(&parts[keep..]);
        stored.truncate(keep);
        stored.push(hashed(&tail, &encoded[keep]));
        hashed_any = true;
    }
    let mut key = String::with_capacity(len(&stored));
    key.push_str(prefix);
    for name in &stored {
        if !key.is_empty() {
            key.push('/');
        }
        key.push_str(name);
    }
    Ok(Key {
        key,
        source: hashed_any.then(|| rel_join(&parts)),
    })
}

/// The key ferry up to 53a13dd gave `path`: every component in the plain
/// encoding, whatever its length.
pub fn legacy_key_for(root: &[u8], prefix: &str, path: &[u8]) -> Result<String, KeyError> {
    let rel = relative(root, path).ok_or(KeyError::OutsideRoot)?;
    let mut key = String::with_capacity(prefix.len() + rel.len() + 1);
    key.push_str(prefix);
    for part in components(rel)? {
        if !key.is_empty() {
            key.push('/');
        }
        encode_part(part, &mut key);
    }
    Ok(key)
}

/// A new instance of `key` beside an object that must not be replaced:
/// `key.<uuid>`, which fits the budget [`PLAIN_MAX`] keeps free.
pub fn instance_key(key: &str) -> String {
    format!("{key}.{}", uuid::Uuid::new_v4().simple())
}

/// The key of a directory's own object, for a directory whose path has
/// the key `key`.
pub fn dir_key(key: &str) -> String {
    format!("{key}{DIR_SUFFIX}")
}

/// The raw path a plain key (or relative key) encodes: each valid `%XX`
/// back to its byte; anything else, a name another tool wrote included,
/// as it is.
pub fn decode(key: &str) -> Vec<u8> {
    let b = key.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Whether a stored name is a metadata sidecar (`<object name>#m`).
pub fn is_sidecar(name: &str) -> bool {
    name.ends_with(SIDECAR_SUFFIX)
}

/// The non-empty components of a relative path; `.` and `..` have no
/// place.
fn components(rel: &[u8]) -> Result<Vec<&[u8]>, KeyError> {
    let parts: Vec<&[u8]> = rel.split(|&b| b == b'/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == b"." || *p == b"..") {
        return Err(KeyError::DotComponent);
    }
    if parts.is_empty() {
        return Err(KeyError::IsRoot);
    }
    Ok(parts)
}

fn rel_join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&b'/')
}

/// `#<readable start of enc>#<blake3 of raw>`: a bounded name for a
/// component (or a folded tail of components) too long to store plainly.
fn hashed(raw: &[u8], enc: &str) -> String {
    let mut out = String::with_capacity(HASHED_MAX);
    out.push('#');
    // Cut at a character and never inside a `%XX` escape.
    let mut end = 0;
    let mut chars = enc.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = if c == '%' { i + 3 } else { i + c.len_utf8() };
        if next > READABLE_MAX {
            break;
        }
        if c == '%' {
            chars.next();
            chars.next();
        }
        end = next;
    }
    out.push_str(&enc[..end]);
    out.push('#');
    out.push_str(blake3::hash(raw).to_hex().as_str());
    out
}

/// `path` with `root` taken off, if `path` is below `root` as a whole
/// component (`/data` holds `/data/x`, not `/database`).
fn relative<'a>(root: &[u8], path: &'a [u8]) -> Option<&'a [u8]> {
    let root = if root == b"/" { &b""[..] } else { root };
    let rest = path.strip_prefix(root)?;
    if rest.is_empty() || rest[0] == b'/' {
        Some(rest)
    } else {
        None
    }
}

fn encode_part(mut part: &[u8], out: &mut String) {
    while !part.is_empty() {
        let (valid, bad) = match std::str::from_utf8(part) {
            Ok(s) => (s, &b""[..]),
            Err(e) => {
                let (good, rest) = part.split_at(e.valid_up_to());
                let bad_len = e.error_len().unwrap_or(rest.len());
                // SAFETY-free: `good` is valid UTF-8 by `valid_up_to`.
                (std::str::from_utf8(good).unwrap_or_default(), &rest[..bad_len])
            }
        };
        for c in valid.chars() {
            if c.is_control() || c == '%' || c == '#' {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    push_escape(b, out);
                }
            } else {
                out.push(c);
            }
        }
        for &b in bad {
            push_escape(b, out);
        }
        part = &part[valid.len() + bad.len()..];
    }
}

fn push_escape(b: u8, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 15)] as char);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The inverse of one plain component, to prove the mapping injective.
    fn decode_part(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    fn key(root: &[u8], prefix: &str, path: &[u8]) -> String {
        key_for(root, prefix, path).unwrap().key
    }

    #[test]
    fn ordinary_names_stay_readable() {
        assert_eq!(key(b"/", "", "/data/café/a b.txt".as_bytes()), "data/café/a b.txt");
        assert_eq!(key(b"/data", "site1", b"/data/x//y"), "site1/x/y");
        assert_eq!(key(b"/data", "", b"/data/a%b#1\n\xff"), "a%25b%231%0A%FF");
        assert_eq!(key_for(b"/data", "", b"/data/x").unwrap().source, None);
        // Short keys are what the previous layout gave.
        assert_eq!(
            legacy_key_for(b"/data", "", b"/data/a%b#1\n\xff").unwrap(),
            "a%25b%231%0A%FF"
        );
    }

    #[test]
    fn refuses_paths_without_a_place() {
        for (root, path, err) in [
            (&b"/data"[..], &b"/database/x"[..], KeyError::OutsideRoot),
            (b"/data", b"/data", KeyError::IsRoot),
            (b"/data", b"/data/", KeyError::IsRoot),
            (b"/", b"/a/../b", KeyError::DotComponent),
            (b"/", b"relative", KeyError::OutsideRoot),
        ] {
            assert_eq!(key_for(root, "", path), Err(err.clone()));
            assert_eq!(legacy_key_for(root, "", path), Err(err));
        }
    }

    #[test]
    fn long_components_are_hashed_and_fit() {
        // 255 bytes: the staging suffix the old layout appended overflowed.
        let name = vec![b'L'; 255];
        let path = [&b"/r/"[..], &name].concat();
        let k = key_for(b"/r", "", &path).unwrap();
        assert!(
            k.key.starts_with(&format!("#{}#", "L".repeat(READABLE_MAX))),
            "{}",
            k.key
        );
        assert_eq!(k.key.len(), HASHED_MAX);
        assert_eq!(k.source.as_deref(), Some(&name[..]));
        // 90 bytes of 0xff triple to 270 encoded; the readable start never
        // splits an escape.
        let path = [&b"/r/"[..], &[0xff; 90][..]].concat();
        let k = key_for(b"/r", "", &path).unwrap().key;
        assert_eq!(
            k,
            format!("#{}#{}", "%FF".repeat(32), blake3::hash(&[0xff; 90]).to_hex())
        );
        // The longest plain component stays plain.
        let path = [&b"/r/"[..], &[b'a'; PLAIN_MAX][..]].concat();
        assert_eq!(key(b"/r", "", &path), "a".repeat(PLAIN_MAX));
    }

    #[test]
    fn deep_paths_fold_their_tail() {
        // 5,601 bytes: deeper than PATH_MAX.
        let mut path = b"/r".to_vec();
        for i in 0..800 {
            path.extend_from_slice(format!("/dir{i:03}").as_bytes());
        }
        assert!(path.len() > 4096);
        let k = key_for(b"/r", "pre", &path).unwrap();
        assert!(k.key.len() <= KEY_MAX, "{}", k.key.len());
        assert!(k.key.starts_with("pre/dir000/dir001/"));
        let last = k.key.rsplit('/').next().unwrap();
        assert!(last.starts_with('#') && last.len() <= HASHED_MAX);
        assert_eq!(k.source.as_deref(), Some(&path[3..]));
        // A different deep path differs only in its folded tail.
        let mut other = path.clone();
        *other.last_mut().unwrap() = b'X';
        let k2 = key_for(b"/r", "pre", &other).unwrap().key;
        assert_ne!(k.key, k2);
        assert_eq!(k.key.rsplit_once('/').unwrap().0, k2.rsplit_once('/').unwrap().0);
    }

    #[test]
    fn instances_and_sidecars_still_fit_name_max() {
        let path = [&b"/r/"[..], &[b'a'; PLAIN_MAX][..]].concat();
        let inst = instance_key(&key(b"/r", "", &path));
        assert_eq!(inst.len() + SIDECAR_SUFFIX.len(), NAME_MAX);
        assert!(is_sidecar(&format!("{inst}{SIDECAR_SUFFIX}")) && !is_sidecar(&inst));
        let dir = dir_key(&key(b"/r", "", &path));
        assert!(dir.len() + SIDECAR_SUFFIX.len() <= NAME_MAX);
    }

    #[test]
    fn keys_decode_to_their_paths() {
        let k = key(b"/r", "", b"/r/a%b#1\n\xff/caf\xc3\xa9");
        assert_eq!(decode(&k), b"a%b#1\n\xff/caf\xc3\xa9");
        // What another tool wrote stays as it is.
        assert_eq!(decode("50%/x%zz%4"), b"50%/x%zz%4");
    }

    #[test]
    fn directory_keys_are_no_files_keys() {
        // A hashed name ends in hex digits, a plain one never holds `#`.
        let long = [&b"/r/"[..], &[b'd'; 300][..]].concat();
        for path in [&b"/r/a"[..], b"/r/a#d", b"/r/x/%23d", &long] {
            let k = key(b"/r", "", path);
            assert!(!k.ends_with(DIR_SUFFIX), "{k}");
            assert!(dir_key(&k).ends_with(DIR_SUFFIX));
        }
    }

    fn name() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(1u8..=255, 1..=255),
            proptest::collection::vec(prop_oneof![Just(b'%'), Just(b'#'), Just(0xffu8), Just(b'a')], 1..=255),
        ]
        .prop_filter("a legal name", |p| !p.contains(&b'/') && p != b"." && p != b"..")
    }

    proptest! {
        #[test]
        fn keys_are_bounded_valid_and_distinct(a in name(), b in name(), depth in 1usize..30) {
            let mut pa = b"/r".to_vec();
            let mut pb = b"/r".to_vec();
            for _ in 0..depth {
                pa.push(b'/');
                pa.extend_from_slice(&a);
                pb.push(b'/');
                pb.extend_from_slice(&b);
            }
            let ka = key_for(b"/r", "", &pa).unwrap();
            let kb = key_for(b"/r", "", &pb).unwrap();
            prop_assert_eq!(ka.key == kb.key, a == b);
            prop_assert!(ka.key.len() <= KEY_MAX);
            for part in ka.key.split('/') {
                prop_assert!(part.len() <= PLAIN_MAX);
                prop_assert!(!part.chars().any(char::is_control));
                if !part.starts_with('#') {
                    prop_assert_eq!(decode_part(part), a.clone());
                }
            }
            prop_assert!(object_store::path::Path::parse(&ka.key).is_ok());
            prop_assert_eq!(ka.source.is_some(), ka.key.contains('#'));
        }
    }
}
