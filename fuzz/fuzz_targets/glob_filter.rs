//! `Filter::new` never panics on any pattern lists; a filter that compiles
//! never panics on any path; no patterns keeps everything; and each verdict
//! agrees with matching every pattern on its own with globset's matcher.
//!
//! Input: NUL-separated pieces. The first piece is the path (any bytes: a
//! Linux path holds no NUL). Every later piece is a pattern: an exclude if it
//! starts with `!` (which is stripped), otherwise an include. A piece that
//! is not UTF-8 is decoded lossily (the CLI only ever passes `String`s).
#![no_main]

use ferry::rules::{Filter, Verdict};
use globset::{GlobBuilder, GlobMatcher};
use libfuzzer_sys::fuzz_target;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

fn matcher(p: &str) -> Option<GlobMatcher> {
    // The options ferry's rules.rs compiles patterns with.
    GlobBuilder::new(p)
        .literal_separator(false)
        .backslash_escape(true)
        .empty_alternates(true)
        .build()
        .ok()
        .map(|g| g.compile_matcher())
}

fuzz_target!(|data: &[u8]| {
    let mut pieces = data.split(|&b| b == 0);
    let path = pieces.next().unwrap_or_default();
    let mut includes = Vec::new();
    let mut excludes = Vec::new();
    for piece in pieces {
        let text = String::from_utf8_lossy(piece).into_owned();
        match text.strip_prefix('!') {
            Some(x) => excludes.push(x.to_string()),
            None => includes.push(text),
        }
    }

    // No patterns at all: keeps every path, however odd its bytes.
    let none = Filter::new(&[] as &[String], &[] as &[String]).expect("empty filter compiles");
    assert!(none.is_empty());
    assert_eq!(none.verdict(path), Verdict::Keep);
    assert_eq!(Filter::default().verdict(path), Verdict::Keep);

    // `*` matches every path (newlines and non-UTF-8 bytes included).
    let star = Filter::new(&["*".to_string()], &[]).expect("* compiles");
    assert_eq!(star.verdict(path), Verdict::Keep);
    let star = Filter::new(&[], &["*".to_string()]).expect("* compiles");
    assert_eq!(star.verdict(path), Verdict::Prune);

    let Ok(filter) = Filter::new(&includes, &excludes) else {
        // Rejected: then some pattern on its own must be rejected too.
        assert!(
            includes.iter().chain(&excludes).any(|p| matcher(p).is_none()),
            "Filter::new rejected {includes:?} / {excludes:?} though each pattern compiles"
        );
        return;
    };
    let verdict = filter.verdict(path);
    assert_eq!(filter.is_empty(), includes.is_empty() && excludes.is_empty());

    // Reference: every pattern matched alone by globset's single-glob
    // matcher (a plain regex), combined with the documented rule.
    let any = |ps: &[String]| {
        ps.iter().any(|p| {
            matcher(p)
                .expect("accepted by Filter::new")
                .is_match(OsStr::from_bytes(path))
        })
    };
    let want = if any(&excludes) {
        Verdict::Prune
    } else if includes.is_empty() || any(&includes) {
        Verdict::Keep
    } else {
        Verdict::Hide
    };
    assert_eq!(
        verdict, want,
        "path {path:?}, includes {includes:?}, excludes {excludes:?}"
    );
});
