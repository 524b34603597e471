//! The configuration file, `/etc/ferry/ferry.conf`: an INI file in the
//! shape of the seed's worker configuration, with a `[settings]` section,
//! one `[Endpoint <name>]` section per storage endpoint and one
//! `[Queue <name>]` section per extra queue the agent serves, and a
//! `[hub]` section for `ferry hub`.
//!
//! This is the bottom of the crate's settings: [`ini`] reads sections and
//! values, and one file per concern turns them into typed settings
//! ([`agent`], [`endpoint`], [`gpfs`]); [`defaults`] is the one source of
//! every default. Every value is checked when the file is read, and every
//! error names the file and line, so a typo never surfaces later as a
//! failed migration. `docs/configuration.md` documents each key.

pub mod agent;
pub mod defaults;
pub mod endpoint;
pub mod gpfs;
pub mod hub;
pub mod ini;
pub mod path_map;

pub use agent::{AgentSettings, BatchSettings, ConsumerSpec, Function, QueueConfig, queue_name};
pub use endpoint::{EndpointConfig, StoreConfig};
pub use gpfs::GpfsSettings;
pub use hub::HubSettings;
pub use ini::{BadValue, ConfigError, Section, parse_bool, parse_count, valid_name};
pub use path_map::PathMap;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A parsed, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from, for messages.
    pub source: String,
    /// The `[settings]` section's general keys.
    pub settings: Settings,
    /// Storage endpoints by name (the seed's `endpoint`).
    pub endpoints: BTreeMap<String, EndpointConfig>,
    /// The agent's broker, batching and health settings.
    pub agent: AgentSettings,
    /// How to reach GPFS.
    pub gpfs: GpfsSettings,
    /// The hub's settings (`[hub]`), read by `ferry hub` only.
    pub hub: HubSettings,
    /// The queues the agent serves: `default` first, then each
    /// `[Queue <name>]` section in file order.
    pub queues: Vec<QueueConfig>,
}

/// The general keys of `[settings]`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The site name (the seed's `site`), used in queue names and logs.
    pub site: Option<String>,
    /// Prefix of every extended attribute ferry writes (`xattr_prefix`).
    pub xattr_prefix: String,
    /// Files worked on at once by one operation (`threads`).
    pub threads: usize,
    /// Most megabits per second this process moves to and from its
    /// endpoints (`bandwidth`; 0, the default, is no cap).
    pub bandwidth: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            site: None,
            xattr_prefix: defaults::XATTR_PREFIX.to_string(),
            threads: defaults::THREADS,
            bandwidth: 0,
        }
    }
}

/// Why the agent cannot run with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    /// Queue names begin with the site.
    #[error("{0}: the agent needs `site = <name>` in [settings]")]
    NoSite(String),
    /// Nothing to consume.
    #[error("{0}: every function of every queue is switched off")]
    NothingToServe(String),
}

/// An endpoint name the configuration does not define.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.describe())]
pub struct UnknownEndpoint {
    /// The name asked for.
    pub name: String,
    /// The configuration file.
    pub source_file: String,
    /// The names it defines.
    pub defined: Vec<String>,
}

impl UnknownEndpoint {
    fn describe(&self) -> String {
        if self.defined.is_empty() {
            format!(
                "no endpoint `{}`: {} defines no [Endpoint <name>] sections",
                self.name, self.source_file
            )
        } else {
            format!(
                "no endpoint `{}` in {} (defined: {})",
                self.name,
                self.source_file,
                self.defined.join(", ")
            )
        }
    }
}

impl Config {
    /// The endpoint whose `root` holds `path` (absolute), the deepest root
    /// when several do (ties go to the first name): where migrate sends a
    /// file when no endpoint is named, as the seed's target file match does.
    /// A root holds itself (its directory object is kept there).
    pub fn endpoint_for_path(&self, path: &[u8]) -> Option<&EndpointConfig> {
        let holds = |root: &[u8]| {
            let root = if root == b"/" { &b""[..] } else { root };
            path.starts_with(root) && (path.len() == root.len() || path[root.len()] == b'/')
        };
        self.endpoints
            .values()
            .filter(|e| holds(&e.root))
            .fold(None, |best: Option<&EndpointConfig>, e| match best {
                Some(b) if b.root.len() >= e.root.len() => Some(b),
                _ => Some(e),
            })
    }

    /// An empty configuration: default settings and no endpoints.
    pub fn empty() -> Config {
        Config {
            source: "(no configuration file)".into(),
            settings: Settings::default(),
            endpoints: BTreeMap::new(),
            agent: AgentSettings::default(),
            gpfs: GpfsSettings::default(),
            hub: HubSettings::default(),
            queues: vec![QueueConfig::default_queue()],
        }
    }

    /// Reads the configuration ferry should use: `explicit` (from
    /// `--config`), else `$FERRY_CONFIG`, else [`defaults::CONFIG_PATH`] if it exists,
    /// else an empty configuration.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let env = std::env::var_os("FERRY_CONFIG").map(PathBuf::from);
        let path = match explicit.map(Path::to_path_buf).or(env) {
            Some(p) => p,
            None if Path::new(defaults::CONFIG_PATH).exists() => PathBuf::from(defaults::CONFIG_PATH),
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
        let mut seen_hub = false;
        for mut section in ini::sections(file, text)? {
            let line = section.line;
            let header = std::mem::take(&mut section.header);
            if header == "settings" {
                if seen_settings {
                    return Err(section.error(line, "a second [settings] section"));
                }
                seen_settings = true;
                config.settings = read_settings(&mut section)?;
                config.agent = AgentSettings::read(&mut section)?;
                config.gpfs = GpfsSettings::read(&mut section)?;
                config.queues[0].read_functions(&mut section)?;
                section.finish(&format!(
                    "site, xattr_prefix, threads, bandwidth, {}, {}",
                    agent::AGENT_KEYS,
                    gpfs::GPFS_KEYS
                ))?;
            } else if header == "hub" {
                if seen_hub {
                    return Err(section.error(line, "a second [hub] section"));
                }
                seen_hub = true;
                config.hub = HubSettings::read(&mut section)?;
                section.finish(hub::HUB_KEYS)?;
            } else if let Some(name) = header.strip_prefix("Endpoint ") {
                let name = name.trim();
                valid_name(name).map_err(|e| section.error(line, format!("endpoint name: {e}")))?;
                if config.endpoints.contains_key(name) {
                    return Err(section.error(line, format!("endpoint `{name}` is defined twice")));
                }
                let endpoint = EndpointConfig::from_section(name, &mut section)?;
                section.finish(endpoint::ENDPOINT_KEYS)?;
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
                    format!(
                        "unknown section [{header}] (expected [settings], [hub], [Endpoint <name>] or [Queue <name>])"
                    ),
                ));
            }
        }
        Ok(config)
    }

    /// The site, which the agent needs (queue names begin with it).
    pub fn site(&self) -> Result<&str, AgentConfigError> {
        self.settings
            .site
            .as_deref()
            .ok_or_else(|| AgentConfigError::NoSite(self.source.clone()))
    }

    /// Every consumer the agent runs, or an error when `site` is not set
    /// or every function is switched off.
    pub fn consumers(&self) -> Result<Vec<ConsumerSpec>, AgentConfigError> {
        let site = self.site()?;
        let all: Vec<ConsumerSpec> = self
            .queues
            .iter()
            .flat_map(|q| q.consumers(site, self.settings.threads))
            .collect();
        if all.is_empty() {
            return Err(AgentConfigError::NothingToServe(self.source.clone()));
        }
        Ok(all)
    }

    /// The endpoint called `name`, or an error listing the defined ones.
    pub fn endpoint(&self, name: &str) -> Result<&EndpointConfig, UnknownEndpoint> {
        self.endpoints.get(name).ok_or_else(|| UnknownEndpoint {
            name: name.to_string(),
            source_file: self.source.clone(),
            defined: self.endpoints.keys().cloned().collect(),
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
    if let Some(n) = s.take_parsed("bandwidth", |v| {
        v.parse::<u64>()
            .map_err(|_| BadValue::expected("a whole number of megabits per second (0: no cap)", v))
    })? {
        settings.bandwidth = n;
    }
    Ok(settings)
}

/// Checks an xattr prefix: it must name the `user.` or `trusted.` namespace
/// and end with a separator, so ferry's names never collide with others'.
pub fn parse_xattr_prefix(s: &str) -> Result<String, BadValue> {
    let ns_ok = s.starts_with("user.") || s.starts_with("trusted.");
    if !ns_ok || !s.ends_with(['.', '-', '_']) || s.len() > 200 || s.contains('\0') {
        return Err(BadValue::expected(
            &format!(
                "a prefix in the user. or trusted. namespace ending in '.', '-' or '_' (like {})",
                defaults::XATTR_PREFIX
            ),
            s,
        ));
    }
    Ok(s.to_string())
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
        assert!(c.endpoint("nope").unwrap_err().to_string().contains("defined: archive"));
    }

    #[test]
    fn the_deepest_root_holding_a_path_names_its_endpoint() {
        let c = Config::parse(
            "t.conf",
            "[Endpoint all]\ntype = directory\npath = /s1\n\n[Endpoint data]\ntype = directory\npath = /s2\nroot = /data\n\n[Endpoint deep]\ntype = directory\npath = /s3\nroot = /data/projects\n",
        )
        .unwrap();
        let name = |p: &[u8]| c.endpoint_for_path(p).map(|e| e.name.as_str());
        assert_eq!(name(b"/data/projects/x"), Some("deep"));
        assert_eq!(name(b"/data/projectsX/x"), Some("data"));
        assert_eq!(name(b"/data/x"), Some("data"));
        assert_eq!(name(b"/database/x"), Some("all"));
        // A root is held by its own endpoint: its directory object is there.
        assert_eq!(name(b"/data"), Some("data"));
        let none = Config::parse(
            "t.conf",
            "[Endpoint data]\ntype = directory\npath = /s2\nroot = /data\n",
        )
        .unwrap();
        assert!(none.endpoint_for_path(b"/elsewhere/x").is_none());
        assert_eq!(none.endpoint_for_path(b"/data").map(|e| e.name.as_str()), Some("data"));
    }

    #[test]
    fn gpfs_settings_reach_one_place() {
        let c = Config::parse(
            "t.conf",
            "[settings]\ngpfs_bin_dir = /opt/mm\ngpfs_nodes = [\"n1\",\"n2\"]\ngpfs_iscan_threads = 8\ngpfs_iscan_buckets = 64\n",
        )
        .unwrap();
        assert_eq!(c.gpfs.bin_dir, Path::new("/opt/mm"));
        assert_eq!(c.gpfs.nodes, ["n1", "n2"]);
        assert_eq!((c.gpfs.iscan_threads, c.gpfs.iscan_buckets), (Some(8), Some(64)));
        assert_eq!(Config::empty().gpfs.bin_dir, Path::new(defaults::GPFS_BIN_DIR));
    }

    #[test]
    fn a_path_map_is_read_from_settings() {
        let c = Config::parse("t", "[settings]\npath_map = /gpfs/fs2:/mmfs1\n").unwrap();
        assert_eq!(c.agent.path_map.to_local(b"/mmfs1/x").unwrap(), b"/gpfs/fs2/x");
        assert!(Config::empty().agent.path_map.is_empty());
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
            (
                "[Endpoint a]\ntype = directory\npath = /s\nprefix = x#1\n",
                4,
                "without `#`",
            ),
            (
                "[settings]\nendpoint_check_interval = soon\n",
                2,
                "whole number of seconds",
            ),
            ("[Endpoint a]\ntype = directory\n", 1, "needs `path"),
            ("[Endpoint a]\ntype = tape\n", 2, "`type`"),
            ("[settings]\ngpfs_bin_dir = bin\n", 2, "absolute"),
            (
                "[settings]\npath_map = /gpfs/fs2\n",
                2,
                "`path_map`: expected <local path>:<wire path>",
            ),
            ("[settings]\ngpfs_iscan_threads = 0\n", 2, "above 0"),
        ];
        for (text, line, msg) in cases {
            let e = Config::parse("t.conf", text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(msg), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("t.conf:{line}: ")), "{e}");
        }
    }
}
