//! The hub's global configurations (`/api/configurations/`, the seed's
//! §1.14 subset that means something to ferry): read at start from the
//! `[hub]` file's values and the database, changed at run time through
//! the API, and read by every loop that uses one (each reads
//! [`Live::get`] on every round, so a change applies without a restart).
//!
//! Values changed through the API are kept in the database (table
//! `configurations`) and win over the file's, which only gives the
//! starting values: an operator who set a value on the web page would not
//! expect a restart to undo it.

use crate::config::HubSettings;
use crate::config::defaults;
use crate::hub::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::RwLock;
use std::time::Duration;

/// The configurations, in the seed's names and units.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Configurations {
    /// Days a job is kept after it ended (then deleted with its tasks).
    pub jobs_ttl: i64,
    /// Minutes a task may stay STARTED with no live node before it is
    /// failed as lost.
    pub task_invalidation_timeout: i64,
    /// Minutes a snapdiff waits, idle, for its streamed delete and move
    /// results (passed to its discovery).
    pub snapdiff_stream_timeout: i64,
    /// Seconds since its last heartbeat within which a node is online.
    pub node_health_last_heartbeat_interval: i64,
    /// Whether schedules fire (a run asked for by hand always runs).
    pub schedules_enabled: bool,
    /// Seconds the hub waits for a health check of the broker.
    pub health_timeout: f64,
    /// ferry's own: most messages a discovery lets wait in its children's
    /// queue before it publishes more (0: no limit). Applies to jobs
    /// started from then on.
    pub max_queue_depth: i64,
    /// Seconds the hub waits for a site to answer a browse
    /// (`GET /api/file/`, 003:L11261).
    pub stat_timeout: i64,
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value out of its range; the text names the field.
    #[error("{field}: {problem}")]
    Invalid {
        /// The configuration's name.
        field: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Configurations {
    /// The starting values: the `[hub]` file's (or ferry's defaults).
    pub fn from_settings(s: &HubSettings) -> Configurations {
        Configurations {
            jobs_ttl: (defaults::JOBS_TTL.as_secs() / 86_400) as i64,
            task_invalidation_timeout: (s.task_invalidation_timeout.as_secs() / 60) as i64,
            snapdiff_stream_timeout: (defaults::SNAPDIFF_STREAM_TIMEOUT.as_secs() / 60) as i64,
            node_health_last_heartbeat_interval: s.node_health_interval.as_secs() as i64,
            schedules_enabled: defaults::SCHEDULES_ENABLED,
            health_timeout: defaults::HEALTH_TIMEOUT.as_secs_f64(),
            max_queue_depth: i64::from(s.max_queue_depth),
            stat_timeout: defaults::STAT_TIMEOUT.as_secs() as i64,
        }
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, problem| Err(ConfigError::Invalid { field, problem });
        if self.jobs_ttl < 1 {
            return bad("jobs_ttl", "must be at least 1 (days)");
        }
        if self.task_invalidation_timeout < 1 {
            return bad("task_invalidation_timeout", "must be at least 1 (minutes)");
        }
        if self.snapdiff_stream_timeout < 1 {
            return bad("snapdiff_stream_timeout", "must be at least 1 (minutes)");
        }
        if self.node_health_last_heartbeat_interval < 1 {
            return bad("node_health_last_heartbeat_interval", "must be at least 1 (seconds)");
        }
        if !(0..=i64::from(u32::MAX)).contains(&self.max_queue_depth) {
            return bad("max_queue_depth", "must be from 0 (no limit) to 4294967295");
        }
        if !(1..=300).contains(&self.stat_timeout) {
            return bad("stat_timeout", "must be from 1 to 300 (seconds)");
        }
        if !(self.health_timeout > 0.0 && self.health_timeout <= 60.0) {
            return bad("health_timeout", "must be more than 0 and at most 60 (seconds)");
        }
        Ok(())
    }

    /// `jobs_ttl` as a duration.
    pub fn jobs_ttl(&self) -> Duration {
        Duration::from_secs(self.jobs_ttl as u64 * 86_400)
    }

    /// `task_invalidation_timeout` as a duration.
    pub fn task_invalidation(&self) -> Duration {
        Duration::from_secs(self.task_invalidation_timeout as u64 * 60)
    }

    /// `node_health_last_heartbeat_interval` as a duration.
    pub fn node_health_interval(&self) -> Duration {
        Duration::from_secs(self.node_health_last_heartbeat_interval as u64)
    }

    /// `max_queue_depth` as a discovery's keyword argument.
    pub fn queue_depth(&self) -> u32 {
        u32::try_from(self.max_queue_depth).unwrap_or(u32::MAX)
    }

    /// `health_timeout` as a duration.
    pub fn health(&self) -> Duration {
        Duration::from_secs_f64(self.health_timeout)
    }

    /// `stat_timeout` as a duration.
    pub fn stat(&self) -> Duration {
        Duration::from_secs(self.stat_timeout as u64)
    }
}

/// The configurations in force, shared by the API and the hub's loops.
#[derive(Debug)]
pub struct Live {
    now: RwLock<Configurations>,
}

impl Live {
    /// The configurations from `settings`, overridden by those the
    /// database keeps.
    pub async fn load(store: &Store, settings: &HubSettings) -> Result<Live, StoreError> {
        let mut c = serde_json::to_value(Configurations::from_settings(settings)).expect("json");
        for (name, value) in store.configurations().await? {
            if let (Some(slot), Ok(v)) = (c.get_mut(&name), serde_json::from_str(&value)) {
                *slot = v;
            }
        }
        // A stored value of the wrong type keeps the file's.
        let now = serde_json::from_value(c).unwrap_or_else(|_| Configurations::from_settings(settings));
        Ok(Live { now: RwLock::new(now) })
    }

    /// A set of values fixed for tests.
    pub fn fixed(c: Configurations) -> Live {
        Live { now: RwLock::new(c) }
    }

    /// The values now.
    pub fn get(&self) -> Configurations {
        *self.now.read().expect("configurations")
    }

    /// Applies `patch` (a JSON object of some configurations): checked
    /// whole, stored, then in force. Returns the values now.
    pub async fn patch(
        &self,
        store: &Store,
        patch: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Configurations, ConfigError> {
        let mut c = serde_json::to_value(self.get()).expect("json");
        for (k, v) in patch {
            let Some(slot) = c.get_mut(k) else {
                return Err(ConfigError::Invalid {
                    field: "configurations",
                    problem: "unknown name (jobs_ttl, task_invalidation_timeout, snapdiff_stream_timeout, node_health_last_heartbeat_interval, schedules_enabled, health_timeout, max_queue_depth, stat_timeout)",
                });
            };
            *slot = v.clone();
        }
        let new: Configurations = serde_json::from_value(c).map_err(|_| ConfigError::Invalid {
            field: "configurations",
            problem: "a value of the wrong type (integers, except schedules_enabled: a boolean, and health_timeout: a number)",
        })?;
        new.validate()?;
        let rows: Vec<(String, String)> = patch.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
        store.set_configurations(&rows).await?;
        *self.now.write().expect("configurations") = new;
        Ok(new)
    }
}
