//! The configuration file, `/etc/ferry/ferry.conf`: an INI file in the
//! shape of the seed's worker configuration, with a `[settings]` section,
//! one `[Endpoint <name>]` section per storage target and one
//! `[Queue <name>]` section per extra queue the agent serves.
//!
//! Every value is checked when the file is read, and every error names the
//! file and line, so a typo never surfaces later as a failed migration.
//! `docs/configuration.md` documents each key.

use crate::agent::queues::{AGENT_KEYS, AgentSettings, ConsumerSpec, QueueConfig};
use crate::target::EndpointConfig;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where ferry looks for its configuration when `--config` and
/// `FERRY_CONFIG` are not given.
pub const DEFAULT_PATH: &str = "/etc/ferry/ferry.conf";

/// The default xattr prefix for ferry's own attributes.
pub const DEFAULT_XATTR_PREFIX: &str = "user.ferry.";

/// A parsed, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from, for messages.
    pub source: String,
    /// The `[settings]` section.
    pub settings: Settings,
    /// Storage targets by name (the seed's `endpoint`).
    pub endpoints: BTreeMap<String, EndpointConfig>,
    /// The agent's broker, batching and health settings.
    pub agent: AgentSettings,
    /// The queues the agent serves: `default` first, then each
    /// `[Queue <name>]` section in file order.
    pub queues: Vec<QueueConfig>,
}

/// The `[settings]` section.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The site name (the seed's `site`), used in queue names and logs.
    pub site: Option<String>,
    /// Prefix of every extended attribute ferry writes (`xattr_prefix`).
    pub xattr_prefix: String,
    /// Files worked on at once by one operation (`threads`).
    pub threads: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            site: None,
            xattr_prefix: DEFAULT_XATTR_PREFIX.to_string(),
            threads: 10,
        }
    }
}

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
        parse: impl FnOnce(&str) -> Result<T, String>,
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

/// Parses a boolean the way the seed writes them (`true`/`false`, any case,
/// also `yes`/`no`, `1`/`0`).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err(format!("expected true or false, found {s:?}")),
    }
}

/// Parses a positive count.
pub fn parse_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a whole number above 0, found {s:?}")),
    }
}

impl Config {
    /// An empty configuration: default settings and no endpoints.
    pub fn empty() -> Config {
        Config {
            source: "(no configuration file)".into(),
            settings: Settings::default(),
            endpoints: BTreeMap::new(),
            agent: AgentSettings::default(),
            queues: vec![QueueConfig::default_queue()],
        }
    }

    /// Reads the configuration ferry should use: `explicit` (from
    /// `--config`), else `$FERRY_CONFIG`, else [`DEFAULT_PATH`] if it exists,
    /// else an empty configuration.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let env = std::env::var_os("FERRY_CONFIG").map(PathBuf::from);
        let path = match explicit.map(Path::to_path_buf).or(env) {
            Some(p) => p,
            None if Path::new(DEFAULT_PATH).exists() => PathBuf::from(DEFAULT_PATH),
            None => return Ok(Config::empty()),
        };
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&file, &text)
    }

    /// Parses configuration text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let mut config = Config::empty();
        config.source = file.to_string();
        let mut seen_settings = false;
        for (header, line, keys) in sections(file, text)? {
            let mut section = Section { file, line, keys };
            if header == "settings" {
                if seen_settings {
                    return Err(section.error(line, "a second [settings] section"));
                }
                seen_settings = true;
                config.settings = read_settings(&mut section)?;
                config.agent = AgentSettings::read(&mut section)?;
                config.queues[0].read_functions(&mut section)?;
                section.finish(&format!("site, xattr_prefix, threads, {AGENT_KEYS}"))?;
            } else if let Some(name) = header.strip_prefix("Endpoint ") {
                let name = name.trim();
                valid_name(name).map_err(|e| section.error(line, format!("endpoint name: {e}")))?;
                if config.endpoints.contains_key(name) {
                    return Err(section.error(line, format!("endpoint `{name}` is defined twice")));
                }
                let endpoint = EndpointConfig::from_section(name, &mut section)?;
                section.finish(crate::target::ENDPOINT_KEYS)?;
                config.endpoints.insert(name.to_string(), endpoint);
            } else if let Some(name) = header.strip_prefix("Queue ") {
                let name = name.trim();
                if config.queues.iter().any(|q| q.name == name) {
                    return Err(section.error(line, format!("queue `{name}` is defined twice")));
                }
                let queue = QueueConfig::from_section(name, &mut section)?;
                section.finish("threads, worker, discovery, custom")?;
                config.queues.push(queue);
            } else {
                return Err(section.error(
                    line,
                    format!("unknown section [{header}] (expected [settings], [Endpoint <name>] or [Queue <name>])"),
                ));
            }
        }
        Ok(config)
    }

    /// Every consumer the agent runs, or an error when `site` is not set
    /// (queue names begin with it).
    pub fn consumers(&self) -> Result<Vec<ConsumerSpec>, String> {
        let site = self
            .settings
            .site
            .as_deref()
            .ok_or_else(|| format!("{}: the agent needs `site = <name>` in [settings]", self.source))?;
        let all: Vec<ConsumerSpec> = self
            .queues
            .iter()
            .flat_map(|q| q.consumers(site, self.settings.threads))
            .collect();
        if all.is_empty() {
            return Err(format!(
                "{}: every function of every queue is switched off",
                self.source
            ));
        }
        Ok(all)
    }

    /// The endpoint called `name`, or an error listing the defined ones.
    pub fn endpoint(&self, name: &str) -> Result<&EndpointConfig, String> {
        self.endpoints.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.endpoints.keys().map(String::as_str).collect();
            if known.is_empty() {
                format!(
                    "no endpoint `{name}`: {} defines no [Endpoint <name>] sections",
                    self.source
                )
            } else {
                format!(
                    "no endpoint `{name}` in {} (defined: {})",
                    self.source,
                    known.join(", ")
                )
            }
        })
    }
}

fn read_settings(s: &mut Section<'_>) -> Result<Settings, ConfigError> {
    let mut settings = Settings::default();
    if let Some(v) = s.take("site") {
        valid_name(&v.text).map_err(|e| s.error(v.line, format!("`site`: {e}")))?;
        settings.site = Some(v.text);
    }
    if let Some(p) = s.take_parsed("xattr_prefix", parse_xattr_prefix)? {
        settings.xattr_prefix = p;
    }
    if let Some(n) = s.take_parsed("threads", parse_count)? {
        settings.threads = n;
    }
    Ok(settings)
}

/// Checks an xattr prefix: it must name the `user.` or `trusted.` namespace
/// and end with a separator, so ferry's names never collide with others'.
pub fn parse_xattr_prefix(s: &str) -> Result<String, String> {
    let ns_ok = s.starts_with("user.") || s.starts_with("trusted.");
    if !ns_ok || !s.ends_with(['.', '-', '_']) || s.len() > 200 || s.contains('\0') {
        return Err(format!(
            "expected a prefix in the user. or trusted. namespace ending in '.', '-' or '_' (like {DEFAULT_XATTR_PREFIX}), found {s:?}"
        ));
    }
    Ok(s.to_string())
}

/// Site, queue and endpoint names: letters, digits, `_` and `-` (the seed's
/// rule for queue names), so they fit in queue names and xattr names.
pub fn valid_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 100 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(format!(
            "expected letters, digits, '_' or '-' (at most 100), found {s:?}"
        ));
    }
    Ok(())
}

type RawSection = (String, usize, BTreeMap<String, Value>);

/// Splits INI text into sections of unique keys.
fn sections(file: &str, text: &str) -> Result<Vec<RawSection>, ConfigError> {
    let err = |line: usize, message: String| ConfigError {
        file: file.to_string(),
        line,
        message,
    };
    let mut out: Vec<RawSection> = Vec::new();
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
            out.push((header.trim().to_string(), line, BTreeMap::new()));
            continue;
        }
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| err(line, format!("expected `key = value` or `[section]`, found {l:?}")))?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            return Err(err(line, "a value without a key".into()));
        }
        let (_, _, keys) = out
            .last_mut()
            .ok_or_else(|| err(line, format!("`{k}` comes before any [section]")))?;
        let value = Value {
            text: v.to_string(),
            line,
        };
        if let Some(first) = keys.insert(k.to_string(), value) {
            return Err(err(line, format!("`{k}` is already set on line {}", first.line)));
        }
    }
    Ok(out)
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_settings_and_endpoints() {
        let c = Config::parse(
            "t.conf",
            "# comment\n[settings]\nsite = site1\nxattr_prefix = user.x.\n\n[Endpoint archive]\ntype = directory\npath = /srv/archive\nroot = /data\n",
        )
        .unwrap();
        assert_eq!(c.settings.site.as_deref(), Some("site1"));
        assert_eq!(c.settings.xattr_prefix, "user.x.");
        assert_eq!(c.settings.threads, 10);
        assert!(c.endpoint("archive").is_ok());
        assert!(c.endpoint("nope").unwrap_err().contains("defined: archive"));
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("[settings]\nsite = a\nsite = b\n", 3, "already set on line 2"),
            ("site = a\n", 1, "before any [section]"),
            ("[settings]\nthreads = zero\n", 2, "whole number"),
            ("[settings]\nthraeds = 3\n", 2, "unknown key `thraeds`"),
            ("[Queues x]\n", 1, "unknown section"),
            ("[settings\n", 1, "closing"),
            ("[settings]\nxattr_prefix = security.x.\n", 2, "user. or trusted."),
            ("[Endpoint a b]\n", 1, "endpoint name"),
            ("[Endpoint a]\ntype = directory\n", 1, "needs `path"),
            ("[Endpoint a]\ntype = tape\n", 2, "`type`"),
        ];
        for (text, line, msg) in cases {
            let e = Config::parse("t.conf", text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(msg), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("t.conf:{line}: ")), "{e}");
        }
    }
}
