//! Workflows: a discovery, filter rules and runtime fields, by name.

use super::{Statement, Store, StoreError, db, flag, json_col};
use sqlx::Row;
use sqlx::any::AnyRow;

/// A stored workflow, in the seed's fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Workflow {
    /// Row id.
    pub id: i64,
    /// Unique, no spaces.
    pub name: String,
    /// Display name.
    pub label: String,
    /// Icon classes for a UI.
    pub icon_classes: serde_json::Value,
    /// `recursive`, `snapdiff`, or none.
    pub discovery: Option<String>,
    /// May be submitted.
    pub enabled: bool,
    /// Shown in a UI.
    pub visible: bool,
    /// Only from a schedule.
    pub schedule_only: bool,
    /// Only on external targets.
    pub external_only: bool,
    /// Runtime fields (a JSON array).
    pub fields: serde_json::Value,
    /// Filter rules (a JSON array).
    pub filter_rules: serde_json::Value,
    /// Options of the default discovery (a JSON object).
    pub discovery_options: serde_json::Value,
    /// The queue used when a submission names none.
    pub preferred_queue: Option<String>,
    /// Installed by ferry.
    pub builtin: bool,
    /// Which files its jobs keep a row for.
    pub record_files: RecordFiles,
}

/// Which files of a job the hub keeps a row for (`record_files`, a
/// workflow setting copied onto each job). Counts are exact whichever is
/// chosen: they come from each task's summary, not from rows. The default
/// keeps failed and aborted files only, so a 100 M-file job costs rows in
/// proportion to what went wrong, not to its size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordFiles {
    /// Failed and aborted files.
    #[default]
    Failures,
    /// Every file a task reports (processed and skipped ones too).
    All,
    /// None: counts only.
    None,
}

/// The file states a job's Failed items list (and `failures` records).
pub const FAILED_STATES: [&str; 2] = ["failures", "aborted"];

/// The file states a job's Completed items list (recorded with `all`).
pub const COMPLETED_STATES: [&str; 2] = ["processed", "skipped"];

impl RecordFiles {
    /// Every setting, as workflows spell it.
    pub const NAMES: [&str; 3] = ["failures", "all", "none"];

    /// The setting called `name`.
    pub fn parse(name: &str) -> Option<RecordFiles> {
        match name {
            "failures" => Some(RecordFiles::Failures),
            "all" => Some(RecordFiles::All),
            "none" => Some(RecordFiles::None),
            _ => None,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordFiles::Failures => "failures",
            RecordFiles::All => "all",
            RecordFiles::None => "none",
        }
    }

    /// Whether a file reported in `state` (`processed`, `skipped`,
    /// `aborted`, `failures`) gets a row.
    pub fn keeps(self, state: &str) -> bool {
        match self {
            RecordFiles::All => true,
            RecordFiles::Failures => FAILED_STATES.contains(&state),
            RecordFiles::None => false,
        }
    }

    /// The `record_files` column of row `r` of `table`.
    pub(super) fn read(r: &AnyRow, table: &'static str) -> Result<RecordFiles, StoreError> {
        let value: String = r.get("record_files");
        RecordFiles::parse(&value).ok_or_else(|| StoreError::Value {
            table,
            id: r.get("id"),
            column: "record_files",
            value,
        })
    }
}

/// Binds a workflow's fields after its first placeholder (its name or
/// id), in the order of the columns `label` to `record_files`, as both
/// the insert and the update write them.
fn bind_fields<'q>(q: Statement<'q>, w: &'q Workflow) -> Statement<'q> {
    q.bind(&w.label)
        .bind(w.icon_classes.to_string())
        .bind(&w.discovery)
        .bind(w.enabled as i64)
        .bind(w.visible as i64)
        .bind(w.schedule_only as i64)
        .bind(w.external_only as i64)
        .bind(w.fields.to_string())
        .bind(w.filter_rules.to_string())
        .bind(w.discovery_options.to_string())
        .bind(&w.preferred_queue)
        .bind(w.record_files.as_str())
}

const COLUMNS: &str = "id, name, label, icon_classes, discovery, enabled, visible, schedule_only, external_only, fields, filter_rules, discovery_options, preferred_queue, builtin, record_files";

fn workflow(r: &AnyRow) -> Result<Workflow, StoreError> {
    Ok(Workflow {
        id: r.get("id"),
        name: r.get("name"),
        label: r.get("label"),
        icon_classes: json_col(r, "workflows", "icon_classes")?,
        discovery: r.get("discovery"),
        enabled: flag(r, "enabled"),
        visible: flag(r, "visible"),
        schedule_only: flag(r, "schedule_only"),
        external_only: flag(r, "external_only"),
        fields: json_col(r, "workflows", "fields")?,
        filter_rules: json_col(r, "workflows", "filter_rules")?,
        discovery_options: json_col(r, "workflows", "discovery_options")?,
        preferred_queue: r.get("preferred_queue"),
        builtin: flag(r, "builtin"),
        record_files: RecordFiles::read(r, "workflows")?,
    })
}

impl Store {
    /// Every workflow, by id.
    pub async fn workflows(&self) -> Result<Vec<Workflow>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM workflows ORDER BY id"))
            .fetch_all(&self.pool)
            .await
            .map_err(db("list workflows"))?;
        rows.iter().map(workflow).collect()
    }

    /// The workflow with id `id`.
    pub async fn workflow(&self, id: i64) -> Result<Option<Workflow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM workflows WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read a workflow"))?;
        row.as_ref().map(workflow).transpose()
    }

    /// The workflow called `name`.
    pub async fn workflow_by_name(&self, name: &str) -> Result<Option<Workflow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM workflows WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read a workflow"))?;
        row.as_ref().map(workflow).transpose()
    }

    /// Creates a workflow; its id. A name in use is a conflict
    /// ([`StoreError::is_conflict`]).
    pub async fn create_workflow(&self, w: &Workflow) -> Result<i64, StoreError> {
        let q = sqlx::query(
            "INSERT INTO workflows (name, label, icon_classes, discovery, enabled, visible, schedule_only, external_only, fields,
               filter_rules, discovery_options, preferred_queue, record_files, builtin)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
        )
        .bind(&w.name);
        let row = bind_fields(q, w)
            .bind(w.builtin as i64)
            .fetch_one(&self.pool)
            .await
            .map_err(db("create a workflow"))?;
        Ok(row.get(0))
    }

    /// Writes every field of `w` (by its id) but its name.
    pub async fn update_workflow(&self, w: &Workflow) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE workflows SET label = $2, icon_classes = $3, discovery = $4, enabled = $5, visible = $6, schedule_only = $7,
               external_only = $8, fields = $9, filter_rules = $10, discovery_options = $11, preferred_queue = $12,
               record_files = $13 WHERE id = $1",
        )
        .bind(w.id);
        let done = bind_fields(q, w)
            .execute(&self.pool)
            .await
            .map_err(db("update a workflow"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes a workflow; jobs keep its name.
    pub async fn delete_workflow(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM workflows WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db("delete a workflow"))?;
        Ok(done.rows_affected() > 0)
    }
}
