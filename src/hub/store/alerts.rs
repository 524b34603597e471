//! Alerts the hub raises (`hub::alerts`) and the housekeeping of old jobs
//! and queues (`hub::housekeeping`).

use super::events::{self, NewEvent, kind};
use super::{Store, StoreError, db, flag, now_us};
use sqlx::Row;
use sqlx::any::AnyRow;

/// An alert as the hub evaluates it: what, where, how bad.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raised {
    /// `SiteHealth`, `WorkerHealth`, `QueueNoConsumer`, `DeadLetter`,
    /// `TaskStuck`.
    pub name: String,
    /// The site it concerns.
    pub site: Option<String>,
    /// The node it concerns.
    pub node: Option<String>,
    /// The queue it concerns.
    pub queue: Option<String>,
    /// `INFO`, `WARNING` or `CRITICAL`.
    pub severity: String,
    /// One line for a person.
    pub summary: String,
}

impl Raised {
    /// What makes two evaluations the same alert: its name and what it is
    /// about (a changed summary or severity updates the alert).
    pub fn subject(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.name,
            self.site.as_deref().unwrap_or(""),
            self.node.as_deref().unwrap_or(""),
            self.queue.as_deref().unwrap_or("")
        )
    }
}

/// An alert row.
#[derive(Clone, Debug)]
pub struct Alert {
    /// Row id.
    pub id: i64,
    /// What was raised.
    pub raised: Raised,
    /// When it was first raised (µs).
    pub created: i64,
    /// When it was last seen to hold (µs).
    pub timestamp: i64,
    /// Muted by an operator.
    pub suppressed: bool,
    /// When its condition ended (µs), if it has.
    pub cleared: Option<i64>,
}

fn alert(r: &AnyRow) -> Alert {
    Alert {
        id: r.get("id"),
        raised: Raised {
            name: r.get("name"),
            site: r.get("site"),
            node: r.get("node"),
            queue: r.get("queue"),
            severity: r.get("severity"),
            summary: r.get("summary"),
        },
        created: r.get("created"),
        timestamp: r.get("timestamp"),
        suppressed: flag(r, "suppressed"),
        cleared: r.get("cleared"),
    }
}

/// The event of alert `id` being raised or cleared.
fn alert_event(id: i64, a: &Raised, state: &str) -> NewEvent {
    NewEvent {
        kind: kind::ALERT,
        job: None,
        node: a.node.clone(),
        state: state.into(),
        detail: serde_json::json!({"alert": id, "name": a.name, "site": a.site, "queue": a.queue,
            "severity": a.severity, "summary": a.summary}),
    }
}

const ALERT_COLUMNS: &str = "id, name, site, node, queue, severity, summary, created, timestamp, suppressed, cleared";

impl Store {
    /// Makes the active alerts exactly `now`: new ones are raised, those
    /// still holding are refreshed (timestamp, severity, summary; a muted
    /// one stays muted), and those not in `now` are cleared. Returns the
    /// alerts raised anew.
    pub async fn sync_alerts(&self, now: &[Raised]) -> Result<Vec<Raised>, StoreError> {
        let t = now_us();
        let mut tx = self.write().await?;
        let active: Vec<Alert> = sqlx::query(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE cleared IS NULL"))
            .fetch_all(&mut *tx)
            .await
            .map_err(db("read the alerts"))?
            .iter()
            .map(alert)
            .collect();
        let mut new = Vec::new();
        let mut changes = Vec::new();
        for a in now {
            let subject = a.subject();
            match active.iter().find(|x| x.raised.subject() == subject) {
                Some(Alert { id, .. }) => {
                    sqlx::query("UPDATE alerts SET timestamp = $2, severity = $3, summary = $4 WHERE id = $1")
                        .bind(*id)
                        .bind(t)
                        .bind(&a.severity)
                        .bind(&a.summary)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("refresh an alert"))?;
                }
                None => {
                    let id: i64 = sqlx::query(
                        "INSERT INTO alerts (name, site, node, queue, severity, summary, created, timestamp, subject)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) RETURNING id",
                    )
                    .bind(&a.name)
                    .bind(&a.site)
                    .bind(&a.node)
                    .bind(&a.queue)
                    .bind(&a.severity)
                    .bind(&a.summary)
                    .bind(t)
                    .bind(&subject)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db("raise an alert"))?
                    .get(0);
                    changes.push(alert_event(id, a, "RAISED"));
                    new.push(a.clone());
                }
            }
        }
        let keep: Vec<String> = now.iter().map(Raised::subject).collect();
        for a in &active {
            if !keep.contains(&a.raised.subject()) {
                sqlx::query("UPDATE alerts SET cleared = $2 WHERE id = $1")
                    .bind(a.id)
                    .bind(t)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("clear an alert"))?;
                changes.push(alert_event(a.id, &a.raised, "CLEARED"));
            }
        }
        events::commit(tx, self.engine, &changes, "commit the alerts").await?;
        Ok(new)
    }

    /// Active alerts, oldest first; muted ones only with `suppressed`.
    pub async fn active_alerts(&self, suppressed: bool) -> Result<Vec<Alert>, StoreError> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE cleared IS NULL AND (suppressed = 0 OR $1 = 1) ORDER BY id"
        );
        let rows = sqlx::query(&sql)
            .bind(suppressed as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db("read the alerts"))?;
        Ok(rows.iter().map(alert).collect())
    }

    /// Alert `id`, active or cleared.
    pub async fn alert(&self, id: i64) -> Result<Option<Alert>, StoreError> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read an alert"))?;
        Ok(row.as_ref().map(alert))
    }

    /// Mutes or unmutes alert `id`; false when there is none.
    pub async fn suppress_alert(&self, id: i64, suppressed: bool) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE alerts SET suppressed = $2 WHERE id = $1")
            .bind(id)
            .bind(suppressed as i64)
            .execute(&self.pool)
            .await
            .map_err(db("mute an alert"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Tasks `STARTED` before `before` (µs) of jobs not final, by job:
    /// `(job id, how many, the oldest's task id, its node, its start)`.
    pub async fn stuck_tasks(&self, before: i64) -> Result<Vec<(i64, i64, String, Option<String>, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.job_id, t.task_id, t.node, t.started FROM tasks t JOIN jobs j ON j.id = t.job_id
             WHERE t.state = 'STARTED' AND t.final = 0 AND t.started < $1
               AND j.state NOT IN ('SUCCESS', 'FAILURE', 'CANCELLED')
             ORDER BY t.job_id, t.started",
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await
        .map_err(db("read stuck tasks"))?;
        let mut out: Vec<(i64, i64, String, Option<String>, i64)> = Vec::new();
        for r in &rows {
            let job: i64 = r.get(0);
            match out.last_mut() {
                Some(last) if last.0 == job => last.1 += 1,
                _ => out.push((job, 1, r.get(1), r.get(2), r.get(3))),
            }
        }
        Ok(out)
    }

    /// Deletes up to `limit` jobs that ended before `before` (µs), each
    /// with its tasks in chunks ([`Store::delete_job`]); how many.
    pub async fn expire_jobs(&self, before: i64, limit: i64) -> Result<u64, StoreError> {
        let ids: Vec<i64> = sqlx::query(
            "SELECT id FROM jobs WHERE state IN ('SUCCESS', 'FAILURE', 'CANCELLED') AND completed < $1 ORDER BY id LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db("read expired jobs"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
        let mut n = 0;
        for id in ids {
            n += self.delete_job(id).await? as u64;
        }
        Ok(n)
    }

    /// Forgets queues no node has heart-beaten on since `before` (µs):
    /// their nodes' links, then every queue left with none (and older
    /// than `before`), with the alerts that name them. Returns the
    /// `(site, queue)` names removed.
    pub async fn remove_dead_queues(&self, before: i64) -> Result<Vec<(String, String)>, StoreError> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM queue_nodes WHERE last_heartbeat < $1")
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(db("forget silent queue consumers"))?;
        let dead: Vec<(i64, String, String)> = sqlx::query(
            "SELECT q.id, s.name, q.name FROM queues q JOIN sites s ON s.id = q.site_id
             WHERE q.created < $1 AND NOT EXISTS (SELECT 1 FROM queue_nodes n WHERE n.queue_id = q.id)",
        )
        .bind(before)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("read dead queues"))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
        for (id, site, queue) in &dead {
            sqlx::query("DELETE FROM queues WHERE id = $1")
                .bind(*id)
                .execute(&mut *tx)
                .await
                .map_err(db("remove a queue"))?;
            sqlx::query("DELETE FROM alerts WHERE site = $1 AND queue = $2")
                .bind(site)
                .bind(queue)
                .execute(&mut *tx)
                .await
                .map_err(db("remove a queue's alerts"))?;
        }
        tx.commit().await.map_err(db("commit"))?;
        Ok(dead.into_iter().map(|(_, s, q)| (s, q)).collect())
    }
}
