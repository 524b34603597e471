//! The hub's settings: the `[hub]` section of the same file the agents
//! read, so one file describes an installation. Every key is checked when
//! the file is read and every error names the file and line.

use super::defaults;
use super::ini::{BadValue, ConfigError, Section, parse_bool, parse_count, parse_whole_seconds};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The `[hub]` keys [`HubSettings::read`] knows.
pub const HUB_KEYS: &str = "database, broker_url, queue_prefix, listen, key_dir, tls_certificate, tls_key, public_url, node_health_last_heartbeat_interval, task_invalidation_timeout, auto_create_sites, max_body_bytes, max_queue_depth";

/// Settings of `ferry hub serve`.
#[derive(Clone, Debug, PartialEq)]
pub struct HubSettings {
    /// `sqlite:///path`, a plain path, or `postgres://...` (`database`).
    pub database: String,
    /// The broker the agents use (`broker_url`; `[settings]`'s when unset).
    pub broker_url: Option<String>,
    /// First part of the hub's queue names (`queue_prefix`): two hubs on
    /// one broker need two prefixes.
    pub queue_prefix: String,
    /// Address to serve on (`listen`); see [`HubSettings::listen`].
    pub listen: Option<SocketAddr>,
    /// Directory of the JWT signing key (`key_dir`).
    pub key_dir: PathBuf,
    /// PEM certificate chain and private key for HTTPS (`tls_certificate`,
    /// `tls_key`), both or neither.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The URL clients reach the hub at, for links in responses
    /// (`public_url`); by default, from each request's `Host`.
    pub public_url: Option<String>,
    /// Heartbeat age after which a node is offline, seconds
    /// (`node_health_last_heartbeat_interval`).
    pub node_health_interval: Duration,
    /// Age after which a task no live node holds is failed as lost
    /// (`task_invalidation_timeout`, minutes in the file as in the seed).
    pub task_invalidation_timeout: Duration,
    /// Create a site the first time a node of it sends a heartbeat
    /// (`auto_create_sites`).
    pub auto_create_sites: bool,
    /// Largest request body, bytes (`max_body_bytes`).
    pub max_body_bytes: usize,
    /// Most messages a discovery lets wait in its children's queue before
    /// it publishes more (`max_queue_depth`; 0: no limit).
    pub max_queue_depth: u32,
}

impl Default for HubSettings {
    fn default() -> Self {
        HubSettings {
            database: defaults::HUB_DATABASE.into(),
            broker_url: None,
            queue_prefix: defaults::HUB_QUEUE_PREFIX.into(),
            listen: None,
            key_dir: defaults::HUB_KEY_DIR.into(),
            tls: None,
            public_url: None,
            node_health_interval: defaults::NODE_HEALTH_INTERVAL,
            task_invalidation_timeout: defaults::TASK_INVALIDATION_TIMEOUT,
            auto_create_sites: true,
            max_body_bytes: defaults::HUB_MAX_BODY,
            max_queue_depth: defaults::HUB_MAX_QUEUE_DEPTH,
        }
    }
}

impl HubSettings {
    /// The address to serve on: `listen` if set, else all interfaces
    /// with TLS and loopback without.
    pub fn listen(&self) -> SocketAddr {
        self.listen.unwrap_or_else(|| {
            let d = if self.tls.is_some() {
                defaults::HUB_LISTEN_TLS
            } else {
                defaults::HUB_LISTEN_PLAIN
            };
            d.parse().expect("default address")
        })
    }

    /// The durable queue every result of the hub's jobs comes to.
    pub fn results_queue(&self) -> String {
        format!("{}.results", self.queue_prefix)
    }

    /// The queue of monitoring events the hub reads.
    pub fn events_queue(&self) -> String {
        format!("{}.events", self.queue_prefix)
    }

    /// Where agents park the queued tasks of paused job `job` until it
    /// is resumed (or cancelled).
    pub fn parking_queue(&self, job: i64) -> String {
        format!("{}.parked.{job}", self.queue_prefix)
    }

    /// Where agents park the queued tasks named `task` (a task type,
    /// `dynamo.tasks.delete_paths_from_gpfs`) while the type is paused
    /// cluster-wide. Job ids are numbers, so it never meets a job's
    /// [`HubSettings::parking_queue`].
    pub fn tasktype_parking_queue(&self, task: &str) -> String {
        format!("{}.parked.tasktype.{task}", self.queue_prefix)
    }

    /// Where messages on the results queue that are not results go.
    pub fn rejected_queue(&self) -> String {
        format!("{}.rejected", self.queue_prefix)
    }

    /// Reads `[hub]`.
    pub fn read(s: &mut Section<'_>) -> Result<HubSettings, ConfigError> {
        let mut h = HubSettings::default();
        if let Some(v) = s.take_parsed("database", parse_database)? {
            h.database = v;
        }
        if let Some(v) = s.take("broker_url") {
            if !(v.text.starts_with("amqp://") || v.text.starts_with("amqps://")) {
                return Err(s.error(
                    v.line,
                    format!("`broker_url`: expected amqp://... or amqps://..., found {:?}", v.text),
                ));
            }
            h.broker_url = Some(v.text);
        }
        if let Some(p) = s.take_parsed("queue_prefix", |t| {
            match !t.is_empty() && t.len() <= 200 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                true => Ok(t.to_string()),
                false => Err(BadValue::expected("letters, digits, '.', '_' or '-'", t)),
            }
        })? {
            h.queue_prefix = p;
        }
        h.listen = s.take_parsed("listen", |t| {
            t.parse()
                .map_err(|_| BadValue::expected("an address such as 0.0.0.0:8000", t))
        })?;
        if let Some(p) = s.take_parsed("key_dir", absolute)? {
            h.key_dir = p;
        }
        let cert = s.take("tls_certificate");
        let key = s.take("tls_key");
        h.tls = match (cert, key) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                let c_path = absolute(&c.text).map_err(|e| s.error(c.line, format!("`tls_certificate`: {e}")))?;
                let k_path = absolute(&k.text).map_err(|e| s.error(k.line, format!("`tls_key`: {e}")))?;
                Some((c_path, k_path))
            }
            (Some(v), None) | (None, Some(v)) => {
                return Err(s.error(v.line, "HTTPS needs both `tls_certificate` and `tls_key`"));
            }
        };
        h.public_url = s.take_parsed("public_url", |t| {
            if t.starts_with("http://") || t.starts_with("https://") {
                Ok(t.trim_end_matches('/').to_string())
            } else {
                Err(BadValue::expected("an http:// or https:// URL", t))
            }
        })?;
        if let Some(d) = s.take_parsed("node_health_last_heartbeat_interval", |t| {
            parse_whole_seconds(t).and_then(|d| match d.is_zero() {
                true => Err(BadValue::expected("a whole number of seconds above 0", t)),
                false => Ok(d),
            })
        })? {
            h.node_health_interval = d;
        }
        if let Some(m) = s.take_parsed("task_invalidation_timeout", parse_count)? {
            h.task_invalidation_timeout = Duration::from_secs(m as u64 * 60);
        }
        if let Some(b) = s.take_parsed("auto_create_sites", parse_bool)? {
            h.auto_create_sites = b;
        }
        if let Some(n) = s.take_parsed("max_body_bytes", parse_count)? {
            h.max_body_bytes = n;
        }
        if let Some(n) = s.take_parsed("max_queue_depth", parse_count)? {
            h.max_queue_depth = u32::try_from(n).unwrap_or(u32::MAX);
        }
        Ok(h)
    }
}

/// A database URL: `postgres://`/`postgresql://`, `sqlite://...`, or an
/// absolute path to an SQLite file.
pub fn parse_database(t: &str) -> Result<String, BadValue> {
    if t.starts_with("postgres://") || t.starts_with("postgresql://") || t.starts_with("sqlite:") {
        Ok(t.to_string())
    } else if t.starts_with('/') {
        Ok(format!("sqlite://{t}"))
    } else {
        Err(BadValue::expected(
            "postgres://user@host/db, sqlite:///path/hub.db or an absolute path",
            t,
        ))
    }
}

fn absolute(t: &str) -> Result<PathBuf, BadValue> {
    if t.starts_with('/') {
        Ok(PathBuf::from(t))
    } else {
        Err(BadValue::expected("an absolute path", t))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::time::Duration;

    #[test]
    fn reads_the_hub_section() {
        let c = Config::parse(
            "t.conf",
            "[hub]\ndatabase = /srv/hub.db\nlisten = 0.0.0.0:9000\nnode_health_last_heartbeat_interval = 5\ntask_invalidation_timeout = 10\nauto_create_sites = false\n",
        )
        .unwrap();
        assert_eq!(c.hub.database, "sqlite:///srv/hub.db");
        assert_eq!(c.hub.listen().to_string(), "0.0.0.0:9000");
        assert_eq!(c.hub.node_health_interval, Duration::from_secs(5));
        assert_eq!(c.hub.task_invalidation_timeout, Duration::from_secs(600));
        assert!(!c.hub.auto_create_sites);
        let d = Config::empty();
        assert_eq!(d.hub.listen().to_string(), "127.0.0.1:8000");
        assert_eq!(d.hub.node_health_interval, Duration::from_secs(120));
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, msg) in [
            ("[hub]\ndatabase = mysql://x\n", 2, "postgres://"),
            ("[hub]\nlisten = port 80\n", 2, "address"),
            ("[hub]\ntls_key = /k.pem\n", 2, "both"),
            ("[hub]\nnode_health_last_heartbeat_interval = 0\n", 2, "above 0"),
            ("[hub]\nbroker_url = redis://x\n", 2, "amqp://"),
            ("[hub]\nlsiten = 1\n", 2, "unknown key"),
            ("[hub]\n[hub]\n", 2, "second [hub]"),
        ] {
            let e = Config::parse("t.conf", text).unwrap_err();
            assert_eq!((e.line, e.to_string().contains(msg)), (line, true), "{text:?}: {e}");
        }
    }
}
