//! Object keys from local paths: the path relative to the endpoint's local
//! root, under the endpoint's key prefix.
//!
//! Keys must be UTF-8 and object stores reject control characters, while
//! Linux names are any bytes but `/` and NUL. Each path component is kept
//! as it is where it can be, and every other byte is written `%XX`:
//! control characters, `%` itself, `#` (the directory store's staging
//! marker) and every byte of an invalid UTF-8 sequence. The mapping is
//! injective, so two files never share a key, and readable for ordinary
//! names (`projects/café/a b.txt` stays as it is).

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
}

/// The key of `path` (absolute) for an endpoint whose local `root`
/// (absolute, no trailing slash except `/` itself) maps to `prefix` (no
/// leading or trailing slash; empty for the store's top).
pub fn key_for(root: &[u8], prefix: &str, path: &[u8]) -> Result<String, KeyError> {
    let rel = relative(root, path).ok_or(KeyError::OutsideRoot)?;
    let mut key = String::with_capacity(prefix.len() + rel.len() + 1);
    key.push_str(prefix);
    let mut any = false;
    for part in rel.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
        if part == b"." || part == b".." {
            return Err(KeyError::DotComponent);
        }
        if !key.is_empty() {
            key.push('/');
        }
        encode_part(part, &mut key);
        any = true;
    }
    if any { Ok(key) } else { Err(KeyError::IsRoot) }
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

    /// The inverse of one encoded component, to prove the mapping injective.
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

    #[test]
    fn ordinary_names_stay_readable() {
        assert_eq!(
            key_for(b"/", "", "/data/café/a b.txt".as_bytes()).unwrap(),
            "data/café/a b.txt"
        );
        assert_eq!(key_for(b"/data", "site1", b"/data/x//y").unwrap(), "site1/x/y");
        assert_eq!(key_for(b"/data", "", b"/data/a%b#1\n\xff").unwrap(), "a%25b%231%0A%FF");
    }

    #[test]
    fn refuses_paths_without_a_place() {
        assert_eq!(key_for(b"/data", "", b"/database/x"), Err(KeyError::OutsideRoot));
        assert_eq!(key_for(b"/data", "", b"/data"), Err(KeyError::IsRoot));
        assert_eq!(key_for(b"/data", "", b"/data/"), Err(KeyError::IsRoot));
        assert_eq!(key_for(b"/", "", b"/a/../b"), Err(KeyError::DotComponent));
        assert_eq!(key_for(b"/", "", b"relative"), Err(KeyError::OutsideRoot));
    }

    proptest! {
        #[test]
        fn components_round_trip_and_stay_valid(part in proptest::collection::vec(1u8..=255, 1..40)) {
            prop_assume!(!part.contains(&b'/') && part != b"." && part != b"..");
            let mut path = b"/r/".to_vec();
            path.extend_from_slice(&part);
            let key = key_for(b"/r", "", &path).unwrap();
            prop_assert_eq!(decode_part(&key), part);
            prop_assert!(!key.chars().any(char::is_control));
            prop_assert!(object_store::path::Path::parse(&key).is_ok());
        }
    }
}
