//! The INI reader every settings section builds on: sections of unique
//! `key = value` lines, values taken by the code that knows their meaning,
//! and errors that name the file and line.
//!
//! A [`Section`] hands out its keys one at a time; whatever nobody asked for
//! is an unknown key (a typo, most likely) and [`Section::finish`] reports
//! it, so a misspelt setting never silently falls back to its default.

use std::collections::BTreeMap;
use std::time::Duration;

/// A configuration error, with the place it was found.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ConfigError {
    /// The configuration file.
    pub file: String,
    /// 1-based line number; 0 when the error is about the file as a whole.
    pub line: usize,
    /// What is wrong and what would be right.
    pub message: String,
}

/// A value that does not parse, with what was expected instead; the
/// reader adds the file, line and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadValue(pub String);

impl BadValue {
    /// Expected `what`, found `found`.
    pub fn expected(what: &str, found: &str) -> BadValue {
        BadValue(format!("expected {what}, found {found:?}"))
    }
}

/// One `key = value` line, with its line number.
#[derive(Clone, Debug)]
pub struct Value {
    /// The value text, trimmed.
    pub text: String,
    /// 1-based line number.
    pub line: usize,
}

/// One section's keys, handed to the code that knows what they mean.
/// Keys are removed as they are read; whatever is left is an unknown key.
pub struct Section<'a> {
    file: &'a str,
    /// The section's header, without the brackets.
    pub header: String,
    /// The section's line.
    pub line: usize,
    keys: BTreeMap<String, Value>,
}

impl Section<'_> {
    /// An error at `line` of this file.
    pub fn error(&self, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line,
            message: message.into(),
        }
    }

    /// Takes an optional string value.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.keys.remove(key)
    }

    /// Takes a required string value.
    pub fn require(&mut self, key: &str, what: &str) -> Result<Value, ConfigError> {
        self.take(key)
            .ok_or_else(|| self.error(self.line, format!("{what} needs `{key} = ...`")))
    }

    /// Takes an optional value and parses it with `parse`, which explains
    /// what it expected on failure.
    pub fn take_parsed<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, BadValue>,
    ) -> Result<Option<T>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => parse(&v.text)
                .map(Some)
                .map_err(|e| self.error(v.line, format!("`{key}`: {e}"))),
        }
    }

    /// Fails on the first key nobody asked for (a typo, most likely).
    pub fn finish(self, known: &str) -> Result<(), ConfigError> {
        match self.keys.iter().next() {
            None => Ok(()),
            Some((k, v)) => Err(self.error(v.line, format!("unknown key `{k}` (known keys: {known})"))),
        }
    }
}

/// Splits INI text (from `file`, named in errors) into sections of unique
/// keys, in file order.
pub fn sections<'a>(file: &'a str, text: &str) -> Result<Vec<Section<'a>>, ConfigError> {
    let err = |line: usize, message: String| ConfigError {
        file: file.to_string(),
        line,
        message,
    };
    let mut out: Vec<Section<'a>> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(rest) = l.strip_prefix('[') {
            let header = rest
                .strip_suffix(']')
                .ok_or_else(|| err(line, format!("section header without a closing ']': {l:?}")))?;
            out.push(Section {
                file,
                header: header.trim().to_string(),
                line,
                keys: BTreeMap::new(),
            });
            continue;
        }
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| err(line, format!("expected `key = value` or `[section]`, found {l:?}")))?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            return Err(err(line, "a value without a key".into()));
        }
        let section = out
            .last_mut()
            .ok_or_else(|| err(line, format!("`{k}` comes before any [section]")))?;
        let value = Value {
            text: v.to_string(),
            line,
        };
        if let Some(first) = section.keys.insert(k.to_string(), value) {
            return Err(err(line, format!("`{k}` is already set on line {}", first.line)));
        }
    }
    Ok(out)
}

/// Parses a boolean the way the seed writes them (`true`/`false`, any case,
/// also `yes`/`no`, `1`/`0`).
pub fn parse_bool(s: &str) -> Result<bool, BadValue> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err(BadValue::expected("true or false", s)),
    }
}

/// Parses a positive count.
pub fn parse_count(s: &str) -> Result<usize, BadValue> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(BadValue::expected("a whole number above 0", s)),
    }
}

/// Parses a number of decimal gigabytes; 0 means no limit.
pub fn parse_gb(s: &str) -> Result<f64, BadValue> {
    match s.parse::<f64>() {
        Ok(g) if g.is_finite() && g >= 0.0 => Ok(g),
        _ => Err(BadValue::expected("a number of GB (0 for no limit)", s)),
    }
}

/// Parses a number of seconds above 0 and at most an hour.
pub fn parse_seconds(s: &str) -> Result<Duration, BadValue> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x <= 3600.0 => Ok(Duration::from_secs_f64(x)),
        _ => Err(BadValue::expected("seconds above 0 and at most 3600", s)),
    }
}

/// Parses a whole number of seconds, 0 included (a period that may be
/// turned off, or a grace period that may be none).
pub fn parse_whole_seconds(s: &str) -> Result<Duration, BadValue> {
    match s.parse::<u64>() {
        Ok(n) => Ok(Duration::from_secs(n)),
        _ => Err(BadValue::expected("a whole number of seconds (0 or more)", s)),
    }
}

/// Site, queue and endpoint names: letters, digits, `_` and `-` (the seed's
/// rule for queue names), so they fit in queue names and xattr names.
pub fn valid_name(s: &str) -> Result<(), BadValue> {
    if s.is_empty() || s.len() > 100 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(BadValue::expected("letters, digits, '_' or '-' (at most 100)", s));
    }
    Ok(())
}
