//! The hub's database: one set of statements for SQLite (the embedded
//! default, a file in WAL mode) and PostgreSQL (chosen by URL), through
//! sqlx's `Any` driver.
//!
//! Portable types only: times are BIGINT microseconds since the epoch
//! (UTC), JSON, ids and paths are TEXT, booleans BIGINT 0/1; placeholders
//! are `$N`, which both engines read (sqlx's SQLite driver maps `$N` to
//! argument N). Only the DDL differs, in one word: the row-id column
//! (`{pk}` in the migrations) is SQLite's `INTEGER PRIMARY KEY` or
//! PostgreSQL's identity column (`{serial}`: one that never reuses an id,
//! SQLite's `AUTOINCREMENT`). Migrations are versioned, applied in
//! order on start, each in its own transaction, recorded in
//! `ferry_schema`.

pub mod alerts;
pub mod batch;
pub mod bisync;
pub mod configs;
pub mod events;
pub mod files;
pub mod holds;
pub mod jobs;
pub mod ledger;
pub mod plan;
pub mod results;
pub mod rollups;
pub mod schedules;
pub mod sites;
pub mod sync_run;
pub mod tasktypes;
pub mod users;
pub mod workflows;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::time::Duration;

/// Why the database cannot be used, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement.
    #[error("database: {context}: {source}")]
    Db {
        /// What was being done.
        context: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The SQLite file's directory cannot be made.
    #[error("cannot create {path}: {source}")]
    Dir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A stored JSON column does not parse (the database was edited by
    /// hand, or by a newer ferry).
    #[error("database: {column} of {table} {id} is not valid JSON: {source}")]
    Json {
        /// The table.
        table: &'static str,
        /// The row's id.
        id: i64,
        /// The column.
        column: &'static str,
        /// Why.
        source: serde_json::Error,
    },
    /// A stored setting holds a value this ferry does not know (the
    /// database was edited by hand, or by a newer ferry).
    #[error("database: {column} of {table} {id} is {value:?}, which this ferry does not know")]
    Value {
        /// The table.
        table: &'static str,
        /// The row's id.
        id: i64,
        /// The column.
        column: &'static str,
        /// What it holds.
        value: String,
    },
}

impl StoreError {
    /// Whether trying the same statements again later may succeed: the
    /// connection, the pool or the server failed, or the database was
    /// busy, locked, out of space or being shut down. Anything else (a
    /// value the database refuses, a constraint) fails again every time.
    pub fn is_transient(&self) -> bool {
        let StoreError::Db { source, .. } = self else {
            // A directory that cannot be made, a bad stored JSON column:
            // nothing a retry changes, but no result is at fault either.
            return true;
        };
        match source {
            sqlx::Error::Database(d) => {
                let code = d.code().unwrap_or_default();
                if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // SQLite (extended) result codes: the primary code is
                    // the low byte. BUSY, LOCKED, IOERR, FULL, CANTOPEN,
                    // PROTOCOL.
                    code.parse::<i64>()
                        .is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 10 | 13 | 14 | 15))
                } else {
                    // PostgreSQL SQLSTATE classes (five characters, often
                    // all digits: never read as SQLite's): connection
                    // exception, transaction rollback (serialization,
                    // deadlock), insufficient resources, operator
                    // intervention, system error.
                    ["08", "40", "53", "57", "58"].iter().any(|c| code.starts_with(c))
                }
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            _ => false,
        }
    }

    /// Whether a unique constraint refused the write.
    pub fn is_conflict(&self) -> bool {
        match self {
            StoreError::Db {
                source: sqlx::Error::Database(d),
                ..
            } => d.is_unique_violation(),
            _ => false,
        }
    }
}

/// A statement being bound.
pub(crate) type Statement<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Adds what was being done to a driver error.
pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Db { context, source }
}

/// Which engine a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// An SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// The database: a pool of connections.
#[derive(Clone, Debug)]
pub struct Store {
    /// The pool.
    pub pool: AnyPool,
    /// Its engine.
    pub engine: Engine,
    /// Held by every filing of results ([`Store::ingest`]) and of started
    /// tasks ([`Store::mark_started`]): the results consumer, the
    /// monitor's lost tasks and its started tasks file one batch at a
    /// time, so on PostgreSQL (where transactions run side by side) a
    /// child cannot be held by one batch while another releases its
    /// parent's children, and a task's counters move once per change.
    pub(crate) filing: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// The versioned migrations, applied in order; a version not yet applied
/// is applied even after a later one (numbers are handed out to branches
/// ahead of their merge).
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_held_index.sql")),
    (3, include_str!("migrations/0003_pause_resubmit.sql")),
    (4, include_str!("migrations/0004_configurations_alerts.sql")),
    (5, include_str!("migrations/0005_schedules.sql")),
    (6, include_str!("migrations/0006_record_files_dry_run.sql")),
    (7, include_str!("migrations/0007_events.sql")),
    (9, include_str!("migrations/0009_tasktype_pauses.sql")),
    (10, include_str!("migrations/0010_bisync.sql")),
    (11, include_str!("migrations/0011_split_walks.sql")),
    (12, include_str!("migrations/0012_pausing_since.sql")),
];

impl Store {
    /// Opens (creating an SQLite file and its directory when needed) and
    /// migrates the database at `url`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("postgres") {
            Engine::Postgres
        } else {
            Engine::Sqlite
        };
        let url = match engine {
            Engine::Postgres => url.to_string(),
            Engine::Sqlite => {
                let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
                let path = path.split('?').next().unwrap_or(path);
                if let Some(dir) = std::path::Path::new(path).parent()
                    && !dir.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                        path: dir.display().to_string(),
                        source,
                    })?;
                }
                format!("sqlite://{path}?mode=rwc")
            }
        };
        let pool = AnyPoolOptions::new()
            .max_connections(match engine {
                Engine::Sqlite => 4,
                Engine::Postgres => 8,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        // WAL: readers never block the writer; NORMAL is
                        // durable across a process crash (the WAL is
                        // synced at checkpoints), which is what the hub
                        // needs: results are acknowledged to the broker
                        // only after commit.
                        for p in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA busy_timeout = 10000",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::query(p).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(db("connect"))?;
        let store = Store {
            pool,
            engine,
            filing: Default::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// A write transaction. On SQLite it takes the write lock at its
    /// start (`BEGIN IMMEDIATE`): a transaction that reads first and
    /// writes later would otherwise fail with SQLITE_BUSY_SNAPSHOT when
    /// another writer commits in between, which no busy timeout waits out.
    pub async fn write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        match self.engine {
            Engine::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Engine::Postgres => self.pool.begin().await,
        }
        .map_err(db("begin a write"))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS ferry_schema (version BIGINT PRIMARY KEY, applied BIGINT NOT NULL)")
            .execute(&self.pool)
            .await
            .map_err(db("create ferry_schema"))?;
        let done: Vec<i64> = sqlx::query("SELECT version FROM ferry_schema")
            .fetch_all(&self.pool)
            .await
            .map_err(db("read ferry_schema"))?
            .iter()
            .map(|r| r.get::<i64, _>(0))
            .collect();
        for &(version, text) in MIGRATIONS {
            if done.contains(&version) {
                continue;
            }
            // Comment lines go first: a `;` in one would cut a statement.
            let text = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
                .replace(
                    "{serial}",
                    match self.engine {
                        Engine::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
                        Engine::Postgres => "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
                    },
                )
                .replace(
                    "{pk}",
                    match self.engine {
                        Engine::Sqlite => "INTEGER PRIMARY KEY",
                        Engine::Postgres => "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
                    },
                );
            let mut tx = self.write().await?;
            for statement in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("apply a migration"))?;
            }
            sqlx::query("INSERT INTO ferry_schema (version, applied) VALUES ($1, $2)")
                .bind(version)
                .bind(now_us())
                .execute(&mut *tx)
                .await
                .map_err(db("record a migration"))?;
            tx.commit().await.map_err(db("commit migration"))?;
            tracing::info!(version, "database migrated");
        }
        Ok(())
    }
}

/// Now, in microseconds since the epoch.
pub fn now_us() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

/// A stored time as the API writes it: `2025-05-14T13:00:40.153027Z`.
pub fn iso(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us)
        .map(|t| format!("{t:.6}"))
        .unwrap_or_default()
}

/// A JSON column of `row`.
pub(crate) fn json_col(
    row: &AnyRow,
    table: &'static str,
    column: &'static str,
) -> Result<serde_json::Value, StoreError> {
    let text: String = row.get(column);
    serde_json::from_str(&text).map_err(|source| StoreError::Json {
        table,
        id: row.try_get::<i64, _>("id").unwrap_or(0),
        column,
        source,
    })
}

/// A boolean column (BIGINT 0/1).
pub(crate) fn flag(row: &AnyRow, column: &str) -> bool {
    row.get::<i64, _>(column) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_render_as_the_seed_writes_them() {
        assert_eq!(iso(1_747_227_640_153_027), "2025-05-14T13:00:40.153027Z");
    }
}
