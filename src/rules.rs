//! Include/exclude filtering of discovered paths, with the seed's semantics:
//! patterns are shell globs over the whole path (`*` also matches `/`); a
//! path is kept when it matches any include (or there are none) and no
//! exclude; an excluded directory is not descended.

use globset::GlobBuilder;
use regex::bytes::{RegexSet, RegexSetBuilder};

/// What to do with one discovered path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Emit it (and descend, if it is a directory).
    Keep,
    /// Do not emit it, but descend: an include pattern may match below.
    Hide,
    /// Neither emit nor descend: it matched an exclude pattern.
    Prune,
}

/// A pattern that is not a valid glob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid glob '{pattern}': {reason}")]
pub struct FilterError {
    /// The offending pattern.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Compiled include and exclude patterns.
///
/// globset parses each glob and translates it to a regular expression over
/// bytes; the set is matched against the whole raw path. (globset's own
/// matcher derives file names and extensions through `Path`, which has no
/// file name for a path ending in `..`; matching the translated regexes
/// directly has no such special cases.)
#[derive(Clone, Debug, Default)]
pub struct Filter {
    include: Option<RegexSet>,
    exclude: Option<RegexSet>,
}

impl Filter {
    /// Compiles the patterns. An empty include list includes everything.
    pub fn new<S: AsRef<str>>(includes: &[S], excludes: &[S]) -> Result<Filter, FilterError> {
        Ok(Filter {
            include: compile(includes)?,
            exclude: compile(excludes)?,
        })
    }

    /// Whether this filter keeps everything (no patterns at all).
    pub fn is_empty(&self) -> bool {
        self.include.is_none() && self.exclude.is_none()
    }

    /// Decides the fate of a full path.
    pub fn verdict(&self, path: &[u8]) -> Verdict {
        if self.exclude.as_ref().is_some_and(|x| x.is_match(path)) {
            return Verdict::Prune;
        }
        match &self.include {
            Some(inc) if !inc.is_match(path) => Verdict::Hide,
            _ => Verdict::Keep,
        }
    }
}

fn compile<S: AsRef<str>>(patterns: &[S]) -> Result<Option<RegexSet>, FilterError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut regexes = Vec::with_capacity(patterns.len());
    for p in patterns {
        let p = p.as_ref();
        let glob = GlobBuilder::new(p)
            .literal_separator(false)
            .backslash_escape(true)
            .empty_alternates(true)
            .build()
            .map_err(|e| FilterError {
                pattern: p.to_string(),
                reason: e.kind().to_string(),
            })?;
        regexes.push(glob.regex().to_string());
    }
    // As globset compiles them: `.` (from `*` and `?`) matches a newline too,
    // since names may contain one.
    RegexSetBuilder::new(&regexes)
        .dot_matches_new_line(true)
        .build()
        .map(Some)
        .map_err(|e| FilterError {
            pattern: patterns.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(" "),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_semantics() {
        let f = Filter::new(&["*.txt", "/data/keep/*"], &["*/tmp", "*.bak.txt"]).unwrap();
        assert_eq!(f.verdict(b"/data/a/b.txt"), Verdict::Keep);
        assert_eq!(f.verdict(b"/data/keep/x/y"), Verdict::Keep);
        assert_eq!(f.verdict(b"/data/a/b.dat"), Verdict::Hide);
        assert_eq!(f.verdict(b"/data/a/tmp"), Verdict::Prune);
        assert_eq!(f.verdict(b"/data/a/x.bak.txt"), Verdict::Prune);
        // Whole-path match: a bare name pattern does not match a full path.
        let g = Filter::new(&["b.txt"], &[] as &[&str]).unwrap();
        assert_eq!(g.verdict(b"/data/b.txt"), Verdict::Hide);
        assert_eq!(g.verdict(b"b.txt"), Verdict::Keep);
    }

    #[test]
    fn no_patterns_keeps_everything_including_non_utf8() {
        let f = Filter::default();
        assert!(f.is_empty());
        assert_eq!(f.verdict(b"/\xff\xfe"), Verdict::Keep);
        let x = Filter::new(&[] as &[&str], &["*\u{fffd}*"]).unwrap();
        // Names may hold newlines: `*` and `?` match them like any byte.
        let nl = Filter::new(&["/d/*.txt", "/d/a?b"], &[] as &[&str]).unwrap();
        assert_eq!(nl.verdict(b"/d/x\ny.txt"), Verdict::Keep);
        assert_eq!(nl.verdict(b"/d/a\nb"), Verdict::Keep);
        assert_eq!(
            Filter::new(&[] as &[&str], &["*"]).unwrap().verdict(b"\n\n"),
            Verdict::Prune
        );
        assert_eq!(x.verdict(b"/a\xffb"), Verdict::Keep);
    }

    #[test]
    fn bad_glob_is_a_clear_error() {
        let e = Filter::new(&["[a-"], &[] as &[&str]).unwrap_err();
        assert_eq!(e.pattern, "[a-");
        assert!(e.to_string().contains("invalid glob"));
    }
}
