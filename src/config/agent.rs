//! The agent's part of the configuration: broker and batching settings in
//! `[settings]`, and the queues it serves, each split into functions
//! (`worker`, `discovery`, `custom`, and on the default queue also
//! `interactive` and `settings`), as the seed's worker configuration does.
//!
//! A queue's functions share its `threads` unless a function sets its own
//! (`custom = {"threads": 10}`); `custom = false` switches one off. Every
//! enabled function becomes one consumer of `<site>.<queue>#<function>`.

use super::defaults;
use super::ini::{
    BadValue, ConfigError, Section, parse_bool, parse_count, parse_gb, parse_seconds, parse_whole_seconds, valid_name,
};
use super::path_map::PathMap;
use std::fmt;
use std::time::Duration;

/// What a queue's consumer is for; the part of a queue name after `#`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Function {
    /// Workflow steps: migrate, recall, move, delete, ...
    Worker,
    /// Recursive scans and snapshot diffs.
    Discovery,
    /// Plugin tasks (`dynamo.custom.*`).
    Custom,
    /// Browsing (default queue only).
    Interactive,
    /// Configuration tasks (default queue only).
    Settings,
}

impl Function {
    /// Every function, in queue-name order.
    pub const ALL: [Function; 5] = [
        Function::Worker,
        Function::Discovery,
        Function::Custom,
        Function::Interactive,
        Function::Settings,
    ];

    /// The name used in queue names and configuration keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Worker => "worker",
            Function::Discovery => "discovery",
            Function::Custom => "custom",
            Function::Interactive => "interactive",
            Function::Settings => "settings",
        }
    }

    /// Whether custom queues have this function (the last two exist only
    /// on the default queue).
    pub fn on_custom_queues(self) -> bool {
        matches!(self, Function::Worker | Function::Discovery | Function::Custom)
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One function's setting in a queue section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FunctionSetting {
    /// Served with the queue's threads (`true`, or no key).
    On,
    /// Served with its own thread count (`{"threads": N}`).
    Threads(usize),
    /// Not served (`false`).
    Off,
}

/// Parses `true`, `false` or `{"threads": N}`.
pub fn parse_function(s: &str) -> Result<FunctionSetting, BadValue> {
    if let Ok(b) = parse_bool(s) {
        return Ok(if b { FunctionSetting::On } else { FunctionSetting::Off });
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Threads {
        threads: usize,
    }
    match serde_json::from_str::<Threads>(s) {
        Ok(Threads { threads }) if threads > 0 => Ok(FunctionSetting::Threads(threads)),
        _ => Err(BadValue::expected("true, false or {\"threads\": N} with N above 0", s)),
    }
}

/// One queue the agent serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// The queue's name (`default` or a `[Queue <name>]` section's name).
    pub name: String,
    /// Its own `threads`, if set; otherwise `[settings]` `threads` applies.
    pub threads: Option<usize>,
    /// Settings of the functions named in the section, in [`Function::ALL`] order.
    pub functions: Vec<(Function, FunctionSetting)>,
}

impl QueueConfig {
    /// The default queue with every function on.
    pub fn default_queue() -> QueueConfig {
        QueueConfig {
            name: "default".into(),
            threads: None,
            functions: Vec::new(),
        }
    }

    /// Reads the function keys (and, for custom queues, `threads`) of a
    /// section. `[settings]` carries the default queue's functions.
    pub fn read_functions(&mut self, s: &mut Section<'_>) -> Result<(), ConfigError> {
        for f in Function::ALL {
            let allowed = self.name == "default" || f.on_custom_queues();
            if let Some(v) = s.take(f.as_str()) {
                if !allowed {
                    return Err(s.error(v.line, format!("the `{f}` function exists only on the default queue")));
                }
                let setting = parse_function(&v.text).map_err(|e| s.error(v.line, format!("`{f}`: {e}")))?;
                self.functions.push((f, setting));
            }
        }
        Ok(())
    }

    /// Reads a `[Queue <name>]` section.
    pub fn from_section(name: &str, s: &mut Section<'_>) -> Result<QueueConfig, ConfigError> {
        valid_name(name).map_err(|e| s.error(s.line, format!("queue name: {e}")))?;
        let mut q = QueueConfig {
            name: name.to_string(),
            threads: s.take_parsed("threads", parse_count)?,
            functions: Vec::new(),
        };
        q.read_functions(s)?;
        Ok(q)
    }

    /// The consumers this queue needs: one per enabled function, with its
    /// thread count (`default_threads` unless the queue or function says).
    pub fn consumers(&self, site: &str, default_threads: usize) -> Vec<ConsumerSpec> {
        let threads = self.threads.unwrap_or(default_threads);
        Function::ALL
            .into_iter()
            .filter(|f| self.name == "default" || f.on_custom_queues())
            .filter_map(|f| {
                let setting = self
                    .functions
                    .iter()
                    .find(|(g, _)| *g == f)
                    .map_or(FunctionSetting::On, |(_, s)| *s);
                let threads = match setting {
                    FunctionSetting::Off => return None,
                    FunctionSetting::On => threads,
                    FunctionSetting::Threads(n) => n,
                };
                Some(ConsumerSpec {
                    queue: queue_name(site, &self.name, f),
                    queue_config: self.name.clone(),
                    function: f,
                    threads,
                })
            })
            .collect()
    }
}

/// One consumer: a broker queue and how many of its tasks run at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// The broker queue, `<site>.<queue>#<function>`.
    pub queue: String,
    /// The configured queue it belongs to.
    pub queue_config: String,
    /// The function.
    pub function: Function,
    /// Tasks at once, and the prefetch count.
    pub threads: usize,
}

/// The seed's queue name: `<site>.<queue>#<function>`.
pub fn queue_name(site: &str, queue: &str, function: Function) -> String {
    format!("{site}.{queue}#{function}")
}

/// How discovery cuts batches, as the seed's site settings say it
/// (`file_batch_size`, `file_batch_gb`, `enable_auto_file_batch_sizing`).
/// `crate::batch::BatchLimits` turns them into limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchSettings {
    /// Most paths in one batch.
    pub file_batch_size: usize,
    /// Most decimal gigabytes of file data in one batch; 0 for no limit.
    pub file_batch_gb: f64,
    /// Grow the path limit with the number of paths found so far.
    pub auto_sizing: bool,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            file_batch_size: defaults::FILE_BATCH_SIZE,
            file_batch_gb: defaults::FILE_BATCH_GB,
            auto_sizing: defaults::AUTO_FILE_BATCH_SIZING,
        }
    }
}

/// Agent settings from `[settings]`, with the seed's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSettings {
    /// The broker, an `amqp://` or `amqps://` URL (`broker_url`).
    pub broker_url: String,
    /// The node name in events and results; `ferry@<hostname>` by default.
    pub node_name: Option<String>,
    /// Batches cut by discovery.
    pub batch: BatchSettings,
    /// Age after which a snapdiff lock is stale (`lock_threshold`, seconds
    /// in the file).
    pub lock_threshold: Duration,
    /// Send `worker-heartbeat` events (`heartbeat`).
    pub heartbeat: bool,
    /// Seconds between heartbeats (`heartbeat_interval`, Celery's 2.0).
    pub heartbeat_interval: Duration,
    /// Send `task-*` events (`task_events`).
    pub task_events: bool,
    /// Largest task message accepted, bytes (`max_message_bytes`).
    pub max_message_bytes: usize,
    /// Most published messages awaiting the broker's confirmation (`confirm_window`).
    pub confirm_window: usize,
    /// Longest wait for a hub's cancel snapshot before taking tasks, on
    /// each connection (`control_wait`, seconds; zero does not wait).
    pub control_wait: Duration,
    /// Metadata calls in flight per discovery walk (`walk_threads`): the
    /// core count by default; 64 to 256 on a parallel filesystem, where each
    /// call waits on the network.
    pub walk_threads: usize,
    /// How long a discovery walks alone before it gives subtrees to the
    /// site's other nodes (`walk_split_after`, seconds, or `off`: never).
    pub walk_split_after: Option<Duration>,
    /// Where to serve Prometheus metrics (`metrics_listen`), if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Longest wait for one delete or move batch of a snapdiff to be
    /// handled (`snapdiff_stream_timeout`, minutes in the file).
    pub snapdiff_stream_timeout: Duration,
    /// How often the endpoints' stores are checked and leftovers of
    /// interrupted writes removed (`endpoint_check_interval`, seconds; zero
    /// turns it off).
    pub endpoint_check_interval: Duration,
    /// How long a leftover must have stood before that upkeep removes it
    /// (`endpoint_check_grace`, seconds).
    pub endpoint_check_grace: Duration,
    /// Where this site mounts what the other sites' paths name
    /// (`path_map`; empty: the same paths everywhere).
    pub path_map: PathMap,
    /// Filesets whose event journal the agent keeps while it runs
    /// (`journal`, comma-separated paths), so that their snapdiffs look
    /// only where files changed (`none`), or read only the inodes that
    /// changed from their snapshots (btrfs).
    pub journal: Vec<std::path::PathBuf>,
    /// Where those journals are kept (`journal_state_dir`; default each
    /// filesystem's `.rotate`, as for snapdiff runs: it must be the
    /// `state_dir` their snapdiff tasks give).
    pub journal_state_dir: Option<std::path::PathBuf>,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            broker_url: defaults::BROKER_URL.into(),
            node_name: None,
            batch: BatchSettings::default(),
            lock_threshold: defaults::LOCK_THRESHOLD,
            heartbeat: true,
            heartbeat_interval: Duration::from_secs(2),
            task_events: true,
            max_message_bytes: 64 << 20,
            confirm_window: 1024,
            control_wait: defaults::CONTROL_WAIT,
            walk_threads: defaults::walk_threads(),
            walk_split_after: Some(defaults::WALK_SPLIT_AFTER),
            metrics_listen: None,
            snapdiff_stream_timeout: defaults::SNAPDIFF_STREAM_TIMEOUT,
            endpoint_check_interval: defaults::ENDPOINT_CHECK_INTERVAL,
            endpoint_check_grace: defaults::ENDPOINT_CHECK_GRACE,
            path_map: PathMap::default(),
            journal: Vec::new(),
            journal_state_dir: None,
        }
    }
}

/// The `[settings]` keys [`AgentSettings::read`] knows.
pub const AGENT_KEYS: &str = "broker_url, node_name, file_batch_size, file_batch_gb, enable_auto_file_batch_sizing, lock_threshold, heartbeat, heartbeat_interval, task_events, max_message_bytes, confirm_window, control_wait, walk_threads, walk_split_after, metrics_listen, snapdiff_stream_timeout, endpoint_check_interval, endpoint_check_grace, path_map, journal, journal_state_dir, worker, discovery, custom, interactive, settings";

impl AgentSettings {
    /// Reads the agent's keys from `[settings]`.
    pub fn read(s: &mut Section<'_>) -> Result<AgentSettings, ConfigError> {
        let mut a = AgentSettings::default();
        if let Some(v) = s.take("broker_url") {
            if !(v.text.starts_with("amqp://") || v.text.starts_with("amqps://")) {
                return Err(s.error(
                    v.line,
                    format!("`broker_url`: expected amqp://... or amqps://..., found {:?}", v.text),
                ));
            }
            a.broker_url = v.text;
        }
        if let Some(v) = s.take("node_name") {
            if v.text.is_empty() || v.text.chars().any(char::is_whitespace) {
                return Err(s.error(v.line, "`node_name`: expected a name without spaces"));
            }
            a.node_name = Some(v.text);
        }
        if let Some(n) = s.take_parsed("file_batch_size", parse_count)? {
            a.batch.file_batch_size = n;
        }
        if let Some(g) = s.take_parsed("file_batch_gb", parse_gb)? {
            a.batch.file_batch_gb = g;
        }
        if let Some(b) = s.take_parsed("enable_auto_file_batch_sizing", parse_bool)? {
            a.batch.auto_sizing = b;
        }
        if let Some(n) = s.take_parsed("lock_threshold", parse_count)? {
            a.lock_threshold = Duration::from_secs(n as u64);
        }
        if let Some(b) = s.take_parsed("heartbeat", parse_bool)? {
            a.heartbeat = b;
        }
        if let Some(d) = s.take_parsed("heartbeat_interval", parse_seconds)? {
            a.heartbeat_interval = d;
        }
        if let Some(b) = s.take_parsed("task_events", parse_bool)? {
            a.task_events = b;
        }
        if let Some(n) = s.take_parsed("max_message_bytes", parse_count)? {
            a.max_message_bytes = n;
        }
        if let Some(n) = s.take_parsed("confirm_window", parse_count)? {
            a.confirm_window = n;
        }
        if let Some(d) = s.take_parsed("control_wait", parse_whole_seconds)? {
            a.control_wait = d;
        }
        if let Some(m) = s.take_parsed("path_map", PathMap::parse)? {
            a.path_map = m;
        }
        if let Some(v) = s.take("journal") {
            a.journal = v
                .text
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(std::path::PathBuf::from)
                .collect();
            if let Some(p) = a.journal.iter().find(|p| !p.is_absolute()) {
                return Err(s.error(v.line, format!("`journal`: {} is not an absolute path", p.display())));
            }
        }
        if let Some(v) = s.take("journal_state_dir") {
            a.journal_state_dir = Some(v.text.into());
        }
        if let Some(n) = s.take_parsed("walk_threads", parse_count)? {
            a.walk_threads = n;
        }
        if let Some(d) = s.take_parsed("walk_split_after", |t| match t {
            "off" => Ok(None),
            t => parse_whole_seconds(t)
                .map(Some)
                .map_err(|_| BadValue::expected("a whole number of seconds, or off", t)),
        })? {
            a.walk_split_after = d;
        }
        a.metrics_listen = s.take_parsed("metrics_listen", |t| {
            t.parse()
                .map_err(|_| BadValue::expected("an address such as 127.0.0.1:9464", t))
        })?;
        if let Some(m) = s.take_parsed("snapdiff_stream_timeout", parse_count)? {
            a.snapdiff_stream_timeout = Duration::from_secs(m as u64 * 60);
        }
        if let Some(d) = s.take_parsed("endpoint_check_interval", parse_whole_seconds)? {
            a.endpoint_check_interval = d;
        }
        if let Some(d) = s.take_parsed("endpoint_check_grace", parse_whole_seconds)? {
            a.endpoint_check_grace = d;
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::time::Duration;

    #[test]
    fn consumers_follow_the_seed() {
        let c = Config::parse(
            "t.conf",
            "[settings]\nsite = london\nthreads = 20\nsettings = false\ncustom = {\"threads\": 3}\n\n[Queue highpriority]\nthreads = 4\ncustom = false\n",
        )
        .unwrap();
        let all: Vec<(String, usize)> = c
            .consumers()
            .unwrap()
            .into_iter()
            .map(|s| (s.queue, s.threads))
            .collect();
        assert_eq!(
            all,
            [
                ("london.default#worker".to_string(), 20),
                ("london.default#discovery".into(), 20),
                ("london.default#custom".into(), 3),
                ("london.default#interactive".into(), 20),
                ("london.highpriority#worker".into(), 4),
                ("london.highpriority#discovery".into(), 4),
            ]
        );
    }

    #[test]
    fn walks_split_after_ten_seconds_unless_told() {
        let after = |text: &str| Config::parse("t.conf", text).unwrap().agent.walk_split_after;
        assert_eq!(after("[settings]\n"), Some(Duration::from_secs(10)));
        assert_eq!(after("[settings]\nwalk_split_after = 0\n"), Some(Duration::ZERO));
        assert_eq!(after("[settings]\nwalk_split_after = off\n"), None);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("[settings]\nsite=a\ncustom = maybe\n", 3, "`custom`"),
            (
                "[settings]\nsite=a\n[Queue q]\ninteractive = true\n",
                4,
                "only on the default queue",
            ),
            ("[Queue bad name]\n", 1, "queue name"),
            ("[settings]\nbroker_url = redis://x\n", 2, "amqp://"),
            ("[settings]\nfile_batch_gb = -1\n", 2, "GB"),
            ("[settings]\nsite=a\n[Queue q]\n[Queue q]\n", 4, "twice"),
            ("[settings]\ncustom = {\"threads\": 0}\n", 2, "above 0"),
            ("[settings]\nwalk_split_after = soon\n", 2, "or off"),
        ];
        for (text, line, msg) in cases {
            let e = Config::parse("t.conf", text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(msg), "{text:?}: {e}");
        }
    }
}
