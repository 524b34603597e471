//! Sites, their nodes and queues. Nodes and queues are learnt from agent
//! heartbeats ([`Store::record_heartbeats`]); sites are made by an admin
//! or, with `auto_create_sites`, by a node's first heartbeat.

use super::batch;
use super::events::{self, NewEvent, kind};
use super::{Statement, Store, StoreError, db, flag, json_col, now_us};
use crate::config::defaults;
use sqlx::Row;
use sqlx::any::AnyRow;

/// A site with its settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Site {
    /// Row id.
    pub id: i64,
    /// `[a-zA-Z0-9-_]+`, the first part of its queue names.
    pub name: String,
    /// Display name.
    pub label: String,
    /// Short code.
    pub shortcode: String,
    /// Where it is deployed (the seed's `type`, e.g. `CLOUD`).
    pub kind: Option<String>,
    /// Its timezone.
    pub timezone: Option<String>,
    /// Its public URL.
    pub public_url: Option<String>,
    /// Display colours.
    pub color: serde_json::Value,
    /// Mb/s.
    pub bandwidth: Option<i64>,
    /// Paths per batch its discoveries cut.
    pub file_batch_size: i64,
    /// GB per batch.
    pub file_batch_gb: f64,
    /// Grow batches with the paths found.
    pub enable_auto_file_batch_sizing: bool,
    /// Include globs appended to every rule.
    pub include: Vec<String>,
    /// Exclude globs appended to every rule.
    pub exclude: Vec<String>,
    /// Seconds before a snapdiff lock is stale.
    pub lock_threshold: i64,
    /// GPFS policy-scan buckets.
    pub gpfs_iscan_buckets: Option<i64>,
    /// GPFS policy-scan threads.
    pub gpfs_iscan_threads: Option<i64>,
}

impl Site {
    /// A new site called `name` with the seed's default settings.
    pub fn named(name: &str) -> Site {
        Site {
            id: 0,
            name: name.into(),
            label: name.into(),
            shortcode: name.into(),
            kind: None,
            timezone: None,
            public_url: None,
            color: serde_json::json!([]),
            bandwidth: None,
            file_batch_size: defaults::FILE_BATCH_SIZE as i64,
            file_batch_gb: defaults::FILE_BATCH_GB,
            enable_auto_file_batch_sizing: defaults::AUTO_FILE_BATCH_SIZING,
            include: Vec::new(),
            exclude: Vec::new(),
            lock_threshold: defaults::LOCK_THRESHOLD.as_secs() as i64,
            gpfs_iscan_buckets: None,
            gpfs_iscan_threads: None,
        }
    }
}

/// A node as the API shows it.
#[derive(Clone, Debug)]
pub struct Node {
    /// Row id.
    pub id: i64,
    /// `ferry@<host>` or the agent's `node_name`.
    pub name: String,
    /// Its site's name.
    pub site: Option<String>,
    /// Its last heartbeat (µs), if any.
    pub last_heartbeat: Option<i64>,
    /// It said goodbye (`worker-offline`) after its last heartbeat.
    pub offline: bool,
    /// Its version.
    pub sw_ver: Option<String>,
    /// It consumes a queue of its site's `default` queue.
    pub has_default_queue: bool,
    /// Drained by an operator: it takes no new task.
    pub paused: bool,
    /// Why, as the operator said.
    pub pause_reason: Option<String>,
}

/// A queue with the nodes that consume it.
#[derive(Clone, Debug)]
pub struct Queue {
    /// Row id.
    pub id: i64,
    /// The queue's name (`default`, `highpriority`, ...).
    pub name: String,
    /// Display name.
    pub label: String,
    /// Its site: id, name, label.
    pub site: (i64, String, String),
    /// Its nodes: id, name, last heartbeat on it (µs), functions.
    pub nodes: Vec<(i64, String, i64, Vec<String>)>,
}

/// One node's heartbeat, as the monitor flushes it.
#[derive(Clone, Debug)]
pub struct Beat {
    /// The node.
    pub node: String,
    /// Its site.
    pub site: String,
    /// When the hub received it (µs).
    pub at: i64,
    /// `worker-offline` rather than a heartbeat.
    pub offline: bool,
    /// Its version.
    pub sw_ver: Option<String>,
    /// What it can do (JSON).
    pub capabilities: String,
    /// The queues it consumes: queue name and function.
    pub queues: Vec<(String, String)>,
}

/// Binds a site's fields after its first placeholder (its name or id), in
/// the order of the columns `label` to `gpfs_iscan_threads`, as both the
/// insert and the update write them.
fn bind_settings<'q>(q: Statement<'q>, s: &'q Site) -> Statement<'q> {
    q.bind(&s.label)
        .bind(&s.shortcode)
        .bind(&s.kind)
        .bind(&s.timezone)
        .bind(&s.public_url)
        .bind(s.color.to_string())
        .bind(s.bandwidth)
        .bind(s.file_batch_size)
        .bind(s.file_batch_gb)
        .bind(s.enable_auto_file_batch_sizing as i64)
        .bind(serde_json::to_string(&s.include).expect("json"))
        .bind(serde_json::to_string(&s.exclude).expect("json"))
        .bind(s.lock_threshold)
        .bind(s.gpfs_iscan_buckets)
        .bind(s.gpfs_iscan_threads)
}

/// Inserts a site and its `default` queue in `tx`; its id.
async fn insert_site(tx: &mut sqlx::Transaction<'static, sqlx::Any>, s: &Site) -> Result<i64, StoreError> {
    let q = sqlx::query(
        "INSERT INTO sites (name, label, shortcode, type, timezone, public_url, color, bandwidth, file_batch_size, file_batch_gb,
           enable_auto_file_batch_sizing, includes, excludes, lock_threshold, gpfs_iscan_buckets, gpfs_iscan_threads, created)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) RETURNING id",
    )
    .bind(&s.name);
    let id: i64 = bind_settings(q, s)
        .bind(now_us())
        .fetch_one(&mut **tx)
        .await
        .map_err(db("create a site"))?
        .get(0);
    sqlx::query("INSERT INTO queues (site_id, name, label, created) VALUES ($1, 'default', 'default', $2)")
        .bind(id)
        .bind(now_us())
        .execute(&mut **tx)
        .await
        .map_err(db("create a site's default queue"))?;
    Ok(id)
}

const SITE_COLUMNS: &str = "id, name, label, shortcode, type, timezone, public_url, color, bandwidth, file_batch_size, file_batch_gb, enable_auto_file_batch_sizing, includes, excludes, lock_threshold, gpfs_iscan_buckets, gpfs_iscan_threads";

fn site(r: &AnyRow) -> Result<Site, StoreError> {
    let list = |c: &'static str| -> Result<Vec<String>, StoreError> {
        let v = json_col(r, "sites", c)?;
        Ok(serde_json::from_value(v).unwrap_or_default())
    };
    Ok(Site {
        id: r.get("id"),
        name: r.get("name"),
        label: r.get("label"),
        shortcode: r.get("shortcode"),
        kind: r.get("type"),
        timezone: r.get("timezone"),
        public_url: r.get("public_url"),
        color: json_col(r, "sites", "color")?,
        bandwidth: r.get("bandwidth"),
        file_batch_size: r.get("file_batch_size"),
        file_batch_gb: r.get("file_batch_gb"),
        enable_auto_file_batch_sizing: flag(r, "enable_auto_file_batch_sizing"),
        include: list("includes")?,
        exclude: list("excludes")?,
        lock_threshold: r.get("lock_threshold"),
        gpfs_iscan_buckets: r.get("gpfs_iscan_buckets"),
        gpfs_iscan_threads: r.get("gpfs_iscan_threads"),
    })
}

impl Store {
    /// Every site, by id.
    pub async fn sites(&self) -> Result<Vec<Site>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {SITE_COLUMNS} FROM sites ORDER BY id"))
            .fetch_all(&self.pool)
            .await
            .map_err(db("list sites"))?;
        rows.iter().map(site).collect()
    }

    /// The site with id `id`.
    pub async fn site(&self, id: i64) -> Result<Option<Site>, StoreError> {
        let row = sqlx::query(&format!("SELECT {SITE_COLUMNS} FROM sites WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read a site"))?;
        row.as_ref().map(site).transpose()
    }

    /// The site called `name`.
    pub async fn site_by_name(&self, name: &str) -> Result<Option<Site>, StoreError> {
        let row = sqlx::query(&format!("SELECT {SITE_COLUMNS} FROM sites WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read a site"))?;
        row.as_ref().map(site).transpose()
    }

    /// Creates a site with its `default` queue (every site has one, seed
    /// 003:L9872); returns its id.
    pub async fn create_site(&self, s: &Site) -> Result<i64, StoreError> {
        let mut tx = self.write().await?;
        let id = insert_site(&mut tx, s).await?;
        tx.commit().await.map_err(db("commit"))?;
        Ok(id)
    }

    /// Writes every field of `s` (by its id) but its name.
    pub async fn update_site(&self, s: &Site) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE sites SET label = $2, shortcode = $3, type = $4, timezone = $5, public_url = $6, color = $7, bandwidth = $8,
               file_batch_size = $9, file_batch_gb = $10, enable_auto_file_batch_sizing = $11, includes = $12, excludes = $13,
               lock_threshold = $14, gpfs_iscan_buckets = $15, gpfs_iscan_threads = $16 WHERE id = $1",
        )
        .bind(s.id);
        let done = bind_settings(q, s)
            .execute(&self.pool)
            .await
            .map_err(db("update a site"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes a site with its queues; its nodes stay, siteless, until
    /// they heartbeat again.
    pub async fn delete_site(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM sites WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db("delete a site"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Every node, by id, optionally of one site.
    pub async fn nodes(&self, site_id: Option<i64>) -> Result<Vec<Node>, StoreError> {
        let rows = sqlx::query(
            "SELECT n.id, n.name, s.name AS site, n.last_heartbeat, n.offline, n.sw_ver, n.paused, n.pause_reason,
               (SELECT COUNT(*) FROM queue_nodes qn JOIN queues q ON q.id = qn.queue_id WHERE qn.node_id = n.id AND q.name = 'default') AS has_default
             FROM nodes n LEFT JOIN sites s ON s.id = n.site_id WHERE $1 < 0 OR n.site_id = $1 ORDER BY n.id",
        )
        .bind(site_id.unwrap_or(-1))
        .fetch_all(&self.pool)
        .await
        .map_err(db("list nodes"))?;
        Ok(rows
            .iter()
            .map(|r| Node {
                id: r.get("id"),
                name: r.get("name"),
                site: r.get("site"),
                last_heartbeat: r.get("last_heartbeat"),
                offline: flag(r, "offline"),
                sw_ver: r.get("sw_ver"),
                has_default_queue: r.get::<i64, _>("has_default") > 0,
                paused: flag(r, "paused"),
                pause_reason: r.get("pause_reason"),
            })
            .collect())
    }

    /// Drains node `id` (`paused`, with `reason`) or resumes it. Whether
    /// the node exists.
    pub async fn set_node_paused(&self, id: i64, paused: bool, reason: Option<&str>) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE nodes SET paused = $2, pause_reason = $3 WHERE id = $1")
            .bind(id)
            .bind(paused as i64)
            .bind(reason)
            .execute(&self.pool)
            .await
            .map_err(db("drain a node"))?;
        Ok(done.rows_affected() > 0)
    }

    /// The names of the drained nodes.
    pub async fn paused_nodes(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT name FROM nodes WHERE paused = 1 ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(db("read drained nodes"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Moves a node to site `site_id` (until its next heartbeat names its
    /// own). Whether the node exists.
    pub async fn set_node_site(&self, id: i64, site_id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE nodes SET site_id = $2 WHERE id = $1")
            .bind(id)
            .bind(site_id)
            .execute(&self.pool)
            .await
            .map_err(db("move a node"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Forgets a node (until it sends another heartbeat, as the seed says).
    pub async fn delete_node(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM nodes WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db("delete a node"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Every queue with its nodes, by id, optionally of one site.
    pub async fn queues(&self, site_id: Option<i64>) -> Result<Vec<Queue>, StoreError> {
        let rows = sqlx::query(
            "SELECT q.id, q.name, q.label, s.id AS site_id, s.name AS site_name, s.label AS site_label,
               n.id AS node_id, n.name AS node_name, qn.last_heartbeat, qn.functions
             FROM queues q JOIN sites s ON s.id = q.site_id
             LEFT JOIN queue_nodes qn ON qn.queue_id = q.id LEFT JOIN nodes n ON n.id = qn.node_id
             WHERE $1 < 0 OR q.site_id = $1 ORDER BY q.id, n.id",
        )
        .bind(site_id.unwrap_or(-1))
        .fetch_all(&self.pool)
        .await
        .map_err(db("list queues"))?;
        let mut out: Vec<Queue> = Vec::new();
        for r in &rows {
            let id: i64 = r.get("id");
            if out.last().is_none_or(|q| q.id != id) {
                out.push(Queue {
                    id,
                    name: r.get("name"),
                    label: r.get("label"),
                    site: (r.get("site_id"), r.get("site_name"), r.get("site_label")),
                    nodes: Vec::new(),
                });
            }
            if let Some(node_id) = r.get::<Option<i64>, _>("node_id") {
                let functions: Option<String> = r.get("functions");
                let functions = functions
                    .and_then(|f| serde_json::from_str(&f).ok())
                    .unwrap_or_default();
                out.last_mut().expect("pushed").nodes.push((
                    node_id,
                    r.get("node_name"),
                    r.get::<Option<i64>, _>("last_heartbeat").unwrap_or(0),
                    functions,
                ));
            }
        }
        Ok(out)
    }

    /// Records heartbeats: nodes, their sites (created when `create_sites`
    /// and unknown), the queues they consume. One transaction.
    pub async fn record_heartbeats(&self, beats: &[Beat], create_sites: bool) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        // Whether each of these nodes was taken for gone: a beat from a new
        // or gone node is an `ONLINE` event, a goodbye from one that was
        // not gone an `OFFLINE` one.
        let mut gone: std::collections::HashMap<String, bool> = Default::default();
        for chunk in beats.chunks(batch::CHUNK) {
            let sql = format!(
                "SELECT name, gone FROM nodes WHERE name IN ({})",
                batch::placeholders(self.engine, 1, chunk.len())
            );
            let mut q = batch::statement(&sql, chunk.len());
            for b in chunk {
                q = q.bind(&b.node);
            }
            for r in q.fetch_all(&mut *tx).await.map_err(db("read nodes"))? {
                gone.insert(r.get(0), r.get::<i64, _>(1) != 0);
            }
        }
        // Sites and queues by name, each read (or created) once per call:
        // 1,000 nodes of one site refresh 100 rows a second, and a lookup
        // per node was half the statements (docs/benchmarks.md, "Hub API
        // at scale").
        let mut sites: std::collections::HashMap<&str, Option<i64>> = Default::default();
        let mut queues: std::collections::HashMap<(i64, &str), i64> = Default::default();
        let mut changes = Vec::new();
        for b in beats {
            let was_gone = gone.get(&b.node).copied().unwrap_or(true);
            // Online and beating, or gone and saying goodbye again: no news.
            if was_gone != b.offline {
                changes.push(NewEvent {
                    kind: kind::NODE,
                    job: None,
                    node: Some(b.node.clone()),
                    state: if b.offline { "OFFLINE" } else { "ONLINE" }.into(),
                    detail: serde_json::json!({"site": b.site}),
                });
            }
            let site_id = match sites.get(b.site.as_str()) {
                Some(id) => *id,
                None => {
                    let mut id: Option<i64> = sqlx::query("SELECT id FROM sites WHERE name = $1")
                        .bind(&b.site)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db("read a site"))?
                        .map(|r| r.get(0));
                    if id.is_none() && create_sites && !b.site.is_empty() {
                        id = Some(insert_site(&mut tx, &Site::named(&b.site)).await?);
                        tracing::info!(site = %b.site, node = %b.node, "site created from a node's heartbeat");
                    }
                    sites.insert(&b.site, id);
                    id
                }
            };
            let node_id: i64 = sqlx::query(
                "INSERT INTO nodes (name, site_id, last_heartbeat, offline, sw_ver, capabilities, created, gone)
                 VALUES ($1, $2, $3, $4, $5, $6, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET site_id = excluded.site_id, last_heartbeat = excluded.last_heartbeat,
                   offline = excluded.offline, gone = excluded.gone, sw_ver = COALESCE(excluded.sw_ver, nodes.sw_ver),
                   capabilities = excluded.capabilities
                 RETURNING id",
            )
            .bind(&b.node)
            .bind(site_id)
            .bind(b.at)
            .bind(b.offline as i64)
            .bind(&b.sw_ver)
            .bind(&b.capabilities)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("record a node"))?
            .get(0);
            let Some(site_id) = site_id else { continue };
            // Functions per queue name.
            let mut by_queue: Vec<(&str, Vec<&str>)> = Vec::new();
            for (q, f) in &b.queues {
                match by_queue.iter_mut().find(|(n, _)| n == q) {
                    Some((_, fs)) => fs.push(f),
                    None => by_queue.push((q, vec![f])),
                }
            }
            for (q, fs) in by_queue {
                let queue_id = match queues.get(&(site_id, q)) {
                    Some(id) => *id,
                    None => {
                        let id: i64 = sqlx::query(
                            "INSERT INTO queues (site_id, name, label, created) VALUES ($1, $2, $2, $3)
                             ON CONFLICT (site_id, name) DO UPDATE SET label = queues.label RETURNING id",
                        )
                        .bind(site_id)
                        .bind(q)
                        .bind(now_us())
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db("record a queue"))?
                        .get(0);
                        queues.insert((site_id, q), id);
                        id
                    }
                };
                sqlx::query(
                    "INSERT INTO queue_nodes (queue_id, node_id, functions, last_heartbeat) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (queue_id, node_id) DO UPDATE SET functions = excluded.functions, last_heartbeat = excluded.last_heartbeat",
                )
                .bind(queue_id)
                .bind(node_id)
                .bind(serde_json::to_string(&fs).expect("json"))
                .bind(b.at)
                .execute(&mut *tx)
                .await
                .map_err(db("record a queue's node"))?;
            }
        }
        events::commit(tx, self.engine, &changes, "commit heartbeats").await
    }

    /// How many nodes that beat since `since` (µs) consume `site`'s queue
    /// `queue`, by site and queue name.
    pub async fn queue_consumers(&self, site: &str, queue: &str, since: i64) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM queue_nodes qn JOIN queues q ON q.id = qn.queue_id JOIN sites s ON s.id = q.site_id
             JOIN nodes n ON n.id = qn.node_id
             WHERE s.name = $1 AND q.name = $2 AND qn.last_heartbeat >= $3 AND n.offline = 0",
        )
        .bind(site)
        .bind(queue)
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(db("count a queue's nodes"))?;
        Ok(row.get(0))
    }

    /// Whether `site` has a queue called `queue`.
    pub async fn queue_exists(&self, site_id: i64, queue: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT id FROM queues WHERE site_id = $1 AND name = $2")
            .bind(site_id)
            .bind(queue)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read a queue"))?;
        Ok(row.is_some())
    }
}
