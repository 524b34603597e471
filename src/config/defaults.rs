//! The one source of every default a setting, a flag or a task argument
//! falls back to. The command line (`default_value_t`), the configuration
//! reader and the agent's tasks all read these, so they cannot disagree.
//!
//! Where the seed (Ngenea's documentation) gives a default, the value is
//! the seed's, with its line in `shared/reference/seed-worker.md`.

use std::time::Duration;

/// Where ferry looks for its configuration when `--config` and
/// `FERRY_CONFIG` are not given.
pub const CONFIG_PATH: &str = "/etc/ferry/ferry.conf";

/// The prefix of every extended attribute ferry writes on files.
pub const XATTR_PREFIX: &str = "user.ferry.";

/// Files one operation works on at once, and tasks each queue function
/// runs at once (the seed's worker `threads`, 10).
pub const THREADS: usize = 10;

/// Most paths in one batch cut by discovery (seed `file_batch_size`, 40).
pub const FILE_BATCH_SIZE: usize = 40;

/// Most decimal gigabytes of file data in one batch (seed `file_batch_gb`, 1).
pub const FILE_BATCH_GB: f64 = 1.0;

/// Grow batches with the number of paths found so far (seed
/// `enable_auto_file_batch_sizing`, `True`, L11328). The command line keeps
/// it opt-in (`--auto-batch-size`) so that `--file-batch-size N` means
/// exactly N there (docs/batching.md).
pub const AUTO_FILE_BATCH_SIZING: bool = true;

/// Seconds after which a snapdiff lock is stale (seed `lock_threshold`,
/// 86400, L11331).
pub const LOCK_THRESHOLD: Duration = Duration::from_secs(86_400);

/// How long a snapshot create or delete that fails for a transient reason
/// is retried (seed `snapshot_create_delete_retry_timeout`, 1000 s).
pub const SNAPSHOT_RETRY_TIMEOUT: Duration = Duration::from_secs(1000);

/// Prefix of snapshot and snapdiff state file names (the seed uses
/// `ngenea-worker`; ferry's own).
pub const STATE_PREFIX: &str = "ferry";

/// Memory a snapdiff run may use for its sorts before it spills to disk.
pub const SNAPDIFF_MEMORY: usize = 1 << 30;

/// Bytes of `getdents64` buffer per walker thread: one call returns as
/// many entries as fit, so a large buffer means fewer round trips on big
/// directories.
pub const GETDENTS_BUFFER: usize = 128 * 1024;

/// Directory of GPFS's `mm*` commands, where IBM installs them.
pub const GPFS_BIN_DIR: &str = "/usr/lpp/mmfs/bin";

/// The agent's broker when `broker_url` is not set.
pub const BROKER_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// How long a snapdiff waits without news from its delete and move
/// handlers (`snapdiff_stream_timeout`, given in minutes; 10).
pub const SNAPDIFF_STREAM_TIMEOUT: Duration = Duration::from_secs(600);

/// Walker threads (metadata calls in flight) when nothing says: the core
/// count, at least 2. On a parallel filesystem 64 to 256 are better, since
/// each call waits on the network; that is for the admin to say.
pub fn walk_threads() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get()).max(2)
}

/// How long a leftover must have stood untouched before `ferry endpoint
/// check --repair` removes it: a write that old is not under way (an
/// upload of a file too large to finish in that time keeps its staging
/// file locked, which a check also respects).
pub const ENDPOINT_CHECK_GRACE: Duration = Duration::from_secs(3600);

/// Longest wait, on each connection to the broker, for a hub's snapshot of
/// cancelled jobs before the agent starts taking tasks (`control_wait`). A
/// hub answers an agent's `worker-online` within milliseconds, so a node
/// that was down during a cancel refuses that job's queued tasks instead of
/// running them; without a hub the wait only delays the start this long.
pub const CONTROL_WAIT: Duration = Duration::from_secs(2);

/// How long a discovery walks alone before it may give subtrees to the
/// other nodes of its site (`walk_split_after`, seconds; `off` never
/// splits). A walk that ends sooner is not worth its pieces (a message,
/// a task and a part-filled batch each); one of a billion files walks for
/// an hour, and ten seconds of it on one node is lost in the noise.
pub const WALK_SPLIT_AFTER: Duration = Duration::from_secs(10);

/// How often a walk that may split sends the directories it handed over
/// and asks its discovery queue how many consumers could take more: often
/// enough that a piece reaches an idle node within a tenth of a second,
/// seldom enough that one walk's questions cost the broker nothing.
pub const WALK_SPLIT_POLL: Duration = Duration::from_millis(100);

/// How often the agent checks and repairs its endpoints
/// (`endpoint_check_interval`; 0 turns it off).
pub const ENDPOINT_CHECK_INTERVAL: Duration = Duration::from_secs(86_400);

/// Where the hub listens (the seed's `HUB_PORT` 8000). Without TLS the
/// hub serves loopback only unless `listen` says otherwise: passwords
/// and tokens must not cross a network in clear by default.
pub const HUB_LISTEN_TLS: &str = "0.0.0.0:8000";

/// Where the hub listens without a certificate (see [`HUB_LISTEN_TLS`]).
pub const HUB_LISTEN_PLAIN: &str = "127.0.0.1:8000";

/// The hub's database when `database` is not set: an SQLite file.
pub const HUB_DATABASE: &str = "sqlite:///var/lib/ferry/hub.db";

/// Where the hub keeps its JWT signing key (made on first start).
pub const HUB_KEY_DIR: &str = "/var/lib/ferry/hub-keys";

/// A node is online while its last heartbeat is younger than this (seed
/// `node_health_last_heartbeat_interval`, 120 s, 003:L11268).
pub const NODE_HEALTH_INTERVAL: Duration = Duration::from_secs(120);

/// A task STARTED or PENDING this long with no node alive that could
/// hold it is failed as lost (seed `task_invalidation_timeout`, 360 min,
/// 003:L11263).
pub const TASK_INVALIDATION_TIMEOUT: Duration = Duration::from_secs(360 * 60);

/// Jobs are deleted this long after they ended (seed `jobs_ttl`, 90 days
/// at 003:L11253; 30 at 003:L12534).
pub const JOBS_TTL: Duration = Duration::from_secs(90 * 86_400);

/// How long the hub waits for a site to answer a browse (the seed's
/// `stat_timeout`, 10 s: 003:L11261).
pub const STAT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the hub waits for a health check (seed `health_timeout`, 1 s).
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether schedules fire (seed `schedules_enabled`, true).
pub const SCHEDULES_ENABLED: bool = true;

/// Most messages a discovery of the hub's lets wait in its children's
/// queue before it publishes more (hub-design A8: 200,000 batches of 40
/// are 8 M paths; a broker holds them in a few GB).
pub const HUB_MAX_QUEUE_DEPTH: u32 = 200_000;

/// How often a running discovery walk reports its progress (files and
/// bytes found, children published) to where its result will go.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Largest request body the hub reads (a submission of 100,000 paths of
/// 100 bytes fits ten times over).
pub const HUB_MAX_BODY: usize = 100 << 20;

/// The first part of the names of the broker queues a hub owns:
/// `<prefix>.results` (where every result of its jobs arrives: the
/// `reply_to` of the tasks it publishes, which children inherit),
/// `<prefix>.events` (heartbeats and task starts) and `<prefix>.rejected`.
pub const HUB_QUEUE_PREFIX: &str = "ferry.hub";

/// How long a JWT access token is valid (the seed's 1 hour, 003:L18653).
pub const HUB_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// How long a JWT refresh token is valid (the seed's 1 day).
pub const HUB_REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(86_400);

/// The fanout exchange (durable) a hub cancels jobs on: it publishes
/// `{"op": "cancel", ...}` and `{"op": "snapshot", ...}` messages there,
/// and every agent reads them from its own exclusive queue bound to it
/// (docs/agent.md, "Cancel"). Both sides take the name from here.
pub const CONTROL_EXCHANGE: &str = "ferry.control";

/// How long agents remember a cancelled job's tasks (7 days: a message
/// queued longer than that is older than any job's patience).
pub const CANCEL_MEMORY: Duration = Duration::from_secs(7 * 86_400);
