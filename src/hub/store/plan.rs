//! A dry run's plan: what each rule of a job's workflow would have
//! taken, read back from its discoveries' results (`status.plan`).

use super::results::DISCOVERY_TASKS;
use super::{Store, StoreError, db};
use sqlx::Row;

/// One rule's line of a dry run: what its actions would have taken.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Planned {
    /// The rule's place in the workflow's `filter_rules`.
    pub rule: u64,
    /// Its actions' task names, first first.
    pub actions: Vec<String>,
    /// Entries the rule matched.
    pub entries: u64,
    /// Their bytes (files' sizes).
    pub bytes: u64,
}

impl Store {
    /// The plan of dry-run job `job`: each rule's entries and bytes added
    /// up over the job's finished discoveries (`status.plan` of their
    /// results), by rule.
    pub async fn dry_run_plan(&self, job: i64) -> Result<Vec<Planned>, StoreError> {
        let names: Vec<String> = DISCOVERY_TASKS.iter().map(|t| format!("'{}'", t.as_str())).collect();
        let rows = sqlx::query(&format!(
            "SELECT result FROM tasks WHERE job_id = $1 AND tasktype IN ({}) AND result IS NOT NULL",
            names.join(", ")
        ))
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .map_err(db("read a dry run's plan"))?;
        let mut plan: std::collections::BTreeMap<u64, Planned> = Default::default();
        for row in rows {
            let text: String = row.get(0);
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            for p in v["status"]["plan"].as_array().into_iter().flatten() {
                let Some(rule) = p["rule"].as_u64() else { continue };
                let e = plan.entry(rule).or_insert_with(|| Planned {
                    rule,
                    actions: p["actions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| a.as_str().map(str::to_string))
                        .collect(),
                    ..Planned::default()
                });
                e.entries += p["entries"].as_u64().unwrap_or(0);
                e.bytes += p["bytes"].as_u64().unwrap_or(0);
            }
        }
        Ok(plan.into_values().collect())
    }
}
