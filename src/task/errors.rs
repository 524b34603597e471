//! What kind of failure a per-file message reports: the error's name
//! (`EACCES`, from Rust's `... (os error 13)` suffix), and whether trying
//! again later can help ([`Category`]). Agents decide retries by it and
//! hubs show it with each failed file, from the same rules.

use std::fmt;

/// Whether a failure may go away by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// Busy, stale, timed out, or the endpoint unreachable: worth trying
    /// again after a while.
    Transient,
    /// Missing, forbidden, invalid, full: trying again changes nothing
    /// until someone fixes it.
    Permanent,
}

impl Category {
    /// `transient` or `permanent`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Transient => "transient",
            Category::Permanent => "permanent",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of the error a message reports (`... (os error 13)` →
/// `EACCES`; an errno without a name here → `errno N`).
pub fn error_code(message: &str) -> Option<String> {
    let n: i32 = message.rsplit("(os error ").next()?.split(')').next()?.parse().ok()?;
    let name = match n {
        1 => "EPERM",
        2 => "ENOENT",
        5 => "EIO",
        7 => "E2BIG",
        11 => "EAGAIN",
        13 => "EACCES",
        16 => "EBUSY",
        17 => "EEXIST",
        18 => "EXDEV",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        24 => "EMFILE",
        27 => "EFBIG",
        28 => "ENOSPC",
        30 => "EROFS",
        36 => "ENAMETOOLONG",
        40 => "ELOOP",
        61 => "ENODATA",
        95 => "EOPNOTSUPP",
        101 => "ENETUNREACH",
        104 => "ECONNRESET",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        113 => "EHOSTUNREACH",
        116 => "ESTALE",
        122 => "EDQUOT",
        _ => return Some(format!("errno {n}")),
    };
    Some(name.to_string())
}

/// Errors that pass: the file or server is busy, a handle went stale, the
/// network or the endpoint is away for now.
const TRANSIENT_CODES: &[&str] = &[
    "EAGAIN",
    "EBUSY",
    "ESTALE",
    "ETIMEDOUT",
    "ECONNREFUSED",
    "ECONNRESET",
    "EHOSTUNREACH",
    "ENETUNREACH",
    "EMFILE",
];

/// What an endpoint's client says when it cannot reach its server (the
/// S3 client's words; lower case).
const UNREACHABLE: &[&str] = &[
    "error sending request",
    "connection refused",
    "connection reset",
    "timed out",
    "dns error",
    "endpoint unavailable",
    "endpoint unreachable",
];

/// What a file that another operation holds says (`ops::lock`): the other
/// operation ends, so a later try finds the file free.
const BUSY: &[&str] = &["locked by another operation"];

/// The category of the failure `message` reports: transient for the codes
/// above, a file another operation holds, and an unreachable endpoint,
/// permanent for everything else
/// (`ENOENT` on the source, `EACCES`, a checksum mismatch, ...).
pub fn category(message: &str) -> Category {
    if error_code(message).is_some_and(|c| TRANSIENT_CODES.contains(&c.as_str())) {
        return Category::Transient;
    }
    let lower = message.to_ascii_lowercase();
    if UNREACHABLE.iter().chain(BUSY).any(|m| lower.contains(m)) {
        return Category::Transient;
    }
    Category::Permanent
}

/// A failure message with what differs from file to file taken out, so
/// that the same error on many files reads the same: the file's own
/// `path` and any other absolute path become `<path>`, numbers `N`,
/// except in the errno suffix (`(os error 13)`), which [`error_code`] and
/// [`category`] read.
pub fn normalise(message: &str, path: &str) -> String {
    let (message, errno) = match message.rfind("(os error ") {
        Some(at) => message.split_at(at),
        None => (message, ""),
    };
    let text = if path.is_empty() {
        message.to_string()
    } else {
        message.replace(path, "<path>")
    };
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let bare = word.trim_start_matches(['\'', '"', '(', '[']);
        if bare.starts_with('/') {
            let lead = &word[..word.len() - bare.len()];
            let tail: String = bare
                .chars()
                .rev()
                .take_while(|c| matches!(c, ':' | ',' | ';' | '\'' | '"' | ')' | ']'))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            out.push_str(lead);
            out.push_str("<path>");
            out.push_str(&tail);
            continue;
        }
        let mut digits = false;
        for c in word.chars() {
            if c.is_ascii_digit() {
                if !digits {
                    out.push('N');
                }
                digits = true;
            } else {
                digits = false;
                out.push(c);
            }
        }
    }
    out.push_str(errno);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_normalise_to_one_reason_per_error() {
        let a = normalise("open /data/a/f1: Permission denied (os error 13)", "/data/a/f1");
        let b = normalise("open '/data/b/f22': Permission denied (os error 13)", "/x");
        assert_eq!(a, "open <path>: Permission denied (os error 13)");
        assert_eq!(b, "open '<path>': Permission denied (os error 13)");
        assert_eq!(
            category(&normalise("lock /a: busy (os error 16)", "/a")),
            Category::Transient
        );
        assert_eq!(
            normalise("short read: 10 of 4096 bytes", ""),
            "short read: N of N bytes"
        );
    }

    #[test]
    fn codes_and_categories() {
        assert_eq!(
            error_code("open: Permission denied (os error 13)").as_deref(),
            Some("EACCES")
        );
        assert_eq!(error_code("x (os error 999)").as_deref(), Some("errno 999"));
        assert_eq!(error_code("no errno here"), None);
        for (m, c) in [
            ("open: Permission denied (os error 13)", Category::Permanent),
            ("stat: No such file or directory (os error 2)", Category::Permanent),
            ("lock: Device or resource busy (os error 16)", Category::Transient),
            ("read: Stale file handle (os error 116)", Category::Transient),
            (
                "upload: error sending request for url (http://127.0.0.1:9/b/k)",
                Category::Transient,
            ),
            (
                "endpoint archive: endpoint unavailable: no such directory",
                Category::Transient,
            ),
            ("checksum mismatch", Category::Permanent),
            (
                "locked by another operation (flock held elsewhere); try again later",
                Category::Transient,
            ),
        ] {
            assert_eq!(category(m), c, "{m}");
        }
    }
}
