//! Statements over many rows at once: `IN (...)` lookups and multi-row
//! `VALUES`, cut into chunks.
//!
//! Why: each statement is a round trip (to the server on PostgreSQL, to
//! the connection's worker thread on SQLite), and at 10,000 results a
//! second the hub cannot afford three or four of them per result. A
//! batch of 1,000 results costs a handful of statements instead (measured
//! in docs/benchmarks.md, "Hub").

use super::workflows::RecordFiles;
use super::{Engine, StoreError, db};
use rustc_hash::FxHashMap;
use sqlx::Row;

/// Most rows one statement reads or writes. At 17 columns a row that is
/// 8,500 bound values, well below both engines' limits (SQLite 32,766,
/// PostgreSQL 65,535); only statements of exactly this many rows stay
/// prepared ([`statement`]).
pub const CHUNK: usize = 500;

/// A statement over `rows` rows: kept prepared on its connection only
/// when it is a full [`CHUNK`]. Batches come in every size, and each size
/// is another statement text; caching them all (sqlx keeps 100 per
/// connection) held hundreds of prepared multi-row statements, and the
/// hub's memory grew by a third over a long run (docs/benchmarks.md,
/// "Hub").
pub fn statement(sql: &str, rows: usize) -> super::Statement<'_> {
    sqlx::query(sql).persistent(rows == CHUNK)
}

/// `n` placeholders for the values `from`, `from + 1`, ... of a
/// statement: `$from, ...` on PostgreSQL, `?, ...` on SQLite, so a
/// statement of many rows uses one style throughout.
///
/// Why not `$N` on SQLite too: sqlx binds each SQLite parameter by asking
/// its name (`sqlite3_bind_parameter_name`), which SQLite finds by a
/// linear scan of the statement's names. With thousands of `$N` in one
/// statement that is quadratic: 8,500 values took tens of milliseconds to
/// bind, more than the insert itself (docs/benchmarks.md, "Hub"). A `?`
/// has no name and is bound by position.
pub fn placeholders(engine: Engine, from: usize, n: usize) -> String {
    let mut s = String::with_capacity(n * 6);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        match engine {
            Engine::Sqlite => s.push('?'),
            Engine::Postgres => {
                s.push('$');
                s.push_str(&(from + i).to_string());
            }
        }
    }
    s
}

/// `rows` tuples of `cols` placeholders for a multi-row `VALUES`, the
/// first value being the statement's first.
pub fn tuples(engine: Engine, rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", placeholders(engine, r * cols + 1, cols)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// [`tuples`] whose values are cast to `types`, one a column: for a
/// `VALUES` list read as a table (`UPDATE … FROM (VALUES …)`), where
/// PostgreSQL takes an untyped parameter as text, which it would not
/// compare with a number.
pub fn typed_tuples(engine: Engine, rows: usize, types: &[&str]) -> String {
    let cols = types.len();
    (0..rows)
        .map(|r| {
            let typed: Vec<String> = types
                .iter()
                .enumerate()
                .map(|(c, t)| format!("CAST({} AS {t})", placeholders(engine, r * cols + c + 1, 1)))
                .collect();
            format!("({})", typed.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A task row as counting and starting read it.
#[derive(Clone, Debug)]
pub struct Known {
    /// Its job.
    pub job_id: i64,
    /// A final result was filed.
    pub fin: bool,
    /// One of the tasks the hub published.
    pub is_root: bool,
    /// Its state.
    pub state: String,
    /// Its task name.
    pub tasktype: String,
    /// 0 (not counted, or not final), `COUNTED` or `ORPHAN`.
    pub counted: i64,
    /// The execution that published its children.
    pub run: Option<String>,
    /// Children it published.
    pub children_count: i64,
}

impl Known {
    /// Final and counted or orphaned: its verdict will not change, so its
    /// children's can be given.
    pub fn settled(&self) -> bool {
        self.fin && self.counted != 0
    }
}

/// The rows of the tasks `ids` that exist, by task id (each id read
/// once, however often it is given).
pub async fn known_tasks(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    engine: Engine,
    mut ids: Vec<&str>,
) -> Result<FxHashMap<String, Known>, StoreError> {
    ids.sort_unstable();
    ids.dedup();
    let mut out = FxHashMap::default();
    out.reserve(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT task_id, job_id, final, is_root, state, tasktype, counted, run, children_count FROM tasks
             WHERE task_id IN ({})",
            placeholders(engine, 1, chunk.len())
        );
        let mut q = statement(&sql, chunk.len());
        for id in chunk {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&mut **tx).await.map_err(db("read tasks"))? {
            out.insert(
                row.get(0),
                Known {
                    job_id: row.get(1),
                    fin: row.get::<i64, _>(2) != 0,
                    is_root: row.get::<i64, _>(3) != 0,
                    state: row.get(4),
                    tasktype: row.get(5),
                    counted: row.get(6),
                    run: row.get(7),
                    children_count: row.get(8),
                },
            );
        }
    }
    Ok(out)
}

/// Which of the jobs `ids` exist, with the files each keeps a row for.
pub async fn existing_jobs(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    engine: Engine,
    ids: &[i64],
) -> Result<FxHashMap<i64, RecordFiles>, StoreError> {
    let mut out = FxHashMap::default();
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT id, record_files FROM jobs WHERE id IN ({})",
            placeholders(engine, 1, chunk.len())
        );
        let mut q = statement(&sql, chunk.len());
        for id in chunk {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&mut **tx).await.map_err(db("read jobs"))? {
            out.insert(row.get::<i64, _>(0), RecordFiles::read(&row, "jobs")?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_every_value_once() {
        let pg = Engine::Postgres;
        assert_eq!(placeholders(pg, 1, 3), "$1, $2, $3");
        assert_eq!(placeholders(pg, 4, 1), "$4");
        assert_eq!(tuples(pg, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(tuples(pg, 1, 1), "($1)");
        assert_eq!(tuples(Engine::Sqlite, 2, 2), "(?, ?), (?, ?)");
    }
}
