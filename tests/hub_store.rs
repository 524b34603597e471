//! The hub's store on both engines: the same statements on an SQLite file
//! and on PostgreSQL, and the counting that decides when a job is done.

mod common;

use common::hub::both;
use ferry::agent::celery::{ChildId, run_hex};
use ferry::hub::store::Store;
use ferry::hub::store::files::FileFailure;
use ferry::hub::store::jobs::{NewJob, Owner, RootTask};
use ferry::hub::store::results::{FileCounts, Finished};
use ferry::hub::store::sites::Site;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn job_with_root(store: &Store, root: &str) -> i64 {
    job_of(store, root, None).await
}

/// A job with one root task `root`: a premigrate's walk, or with `sync` a
/// bidirectional sync's first snapdiff.
async fn job_of(store: &Store, root: &str, sync: Option<ferry::hub::store::bisync::NewSyncRun>) -> i64 {
    let (workflow, discovery, task) = match sync {
        None => ("premigrate", "recursive", "dynamo.tasks.recursive_navigate"),
        Some(_) => ("bidirectional_sync", "bidirectional_snapdiff", "dynamo.tasks.snapdiff"),
    };
    let new = NewJob {
        workflow: workflow.into(),
        fields: serde_json::json!({}),
        discovery: Some(discovery.into()),
        site: "s1".into(),
        queue: "default".into(),
        friendly_name: "Premigrate of '/data' on 's1'".into(),
        owner: Owner {
            kind: "user".into(),
            id: 1,
            name: "admin".into(),
        },
        clientkey_id: None,
        input_paths: serde_json::json!(["/data"]),
        request: None,
        resubmitted_from: None,
        record_files: Default::default(),
        dry_run: false,
        sync,
    };
    let root = root.to_string();
    store
        .create_job(&new, move |_| {
            vec![RootTask {
                task_id: root,
                tasktype: task.into(),
                site: "s1".into(),
                queue: "s1.default#discovery".into(),
                headers: "[]".into(),
                body: "{}".into(),
            }]
        })
        .await
        .unwrap()
}

/// A bidirectional sync's job between sites s1 and s2 of `/data`, with
/// the root task `root`.
async fn sync_job(store: &Store, root: &str) -> i64 {
    let sync = ferry::hub::store::bisync::NewSyncRun {
        site2: "s2".into(),
        queue2: "default".into(),
        fileset: "/data".into(),
    };
    job_of(store, root, Some(sync)).await
}

fn result(task_id: &str, parent: Option<&str>, jobid: i64, children: i64, run: u64, files: FileCounts) -> Finished {
    let discovery = parent.is_none();
    Finished {
        task_id: task_id.into(),
        parent_id: parent.map(str::to_string),
        jobid: Some(jobid),
        tasktype: if discovery {
            "dynamo.tasks.recursive_navigate"
        } else {
            "dynamo.tasks.migrate"
        }
        .into(),
        node: Some("ferry@n1".into()),
        queue: Some("s1.default#worker".into()),
        state: if files.failures > 0 { "ERROR" } else { "SUCCESS" },
        children_count: children,
        run: Some(run_hex(run)),
        summary: if discovery {
            format!(r#"{{"files":{},"children":{children},"failures":0}}"#, files.found)
        } else {
            serde_json::to_string(&files).unwrap()
        },
        result: "{}".into(),
        failed: (0..files.failures)
            .map(|i| FileFailure {
                path: format!("\"/data/bad{i}\""),
                state: "failures",
                code: Some("EACCES".into()),
                message: "[\"Permission denied\"]".into(),
            })
            .collect(),
        completed_lists: Vec::new(),
        completed: 1,
        discovery,
    }
}

fn done(n: i64) -> FileCounts {
    FileCounts {
        processed: n,
        ..Default::default()
    }
}

#[test]
fn a_job_ends_when_every_announced_result_is_counted() {
    for db in both() {
        rt().block_on(async {
            let store = Store::open(&db.url).await.unwrap();
            let root = uuid::Uuid::new_v4().to_string();
            let job = job_with_root(&store, &root).await;
            let run = ChildId::new_run();
            let child = |seq| ChildId { run, seq }.to_uuid();
            // A child's result before its parent's: held, not counted.
            let r = store
                .ingest(&[result(&child(0), Some(&root), job, 0, 0, done(40))])
                .await
                .unwrap();
            assert_eq!((r.counted, r.held), (0, 1), "{}", db.engine);
            let j = store.job(job).await.unwrap().unwrap();
            assert_eq!(
                (j.state.as_str(), j.received, j.expected),
                ("PENDING", 0, 1),
                "{}",
                db.engine
            );
            // The discovery: 3 children announced; the held one counts now.
            let walk = FileCounts {
                found: 100,
                ..Default::default()
            };
            let r = store.ingest(&[result(&root, None, job, 3, run, walk)]).await.unwrap();
            assert_eq!((r.counted, r.finished_jobs.len()), (2, 0), "{}", db.engine);
            // A child of another execution of the discovery: an orphan.
            let stray = ChildId {
                run: ChildId::new_run(),
                seq: 1,
            }
            .to_uuid();
            // The rest, one twice (a redelivery).
            let r = store
                .ingest(&[
                    result(&stray, Some(&root), job, 0, 0, done(40)),
                    result(&child(1), Some(&root), job, 0, 0, done(40)),
                    result(&child(1), Some(&root), job, 0, 0, done(40)),
                ])
                .await
                .unwrap();
            assert_eq!((r.counted, r.orphans, r.duplicates), (1, 1, 1), "{}", db.engine);
            assert!(r.finished_jobs.is_empty());
            let r = store
                .ingest(&[result(&child(2), Some(&root), job, 0, 0, done(20))])
                .await
                .unwrap();
            assert_eq!(r.finished_jobs, [(job, "SUCCESS")], "{}", db.engine);
            let j = store.job(job).await.unwrap().unwrap();
            assert_eq!(
                (
                    j.received,
                    j.expected,
                    j.orphans,
                    j.files_found,
                    j.files_processed,
                    j.dir_walk_complete
                ),
                (4, 4, 1, 100, 100, true),
                "{}",
                db.engine
            );
            assert!(j.completed.is_some());
            // Task counts by state and type come from counters.
            let stats = store.task_stats(Some(job)).await.unwrap();
            let n = |t: &str, s: &str| stats.iter().find(|x| x.0 == t && x.1 == s).map_or(0, |x| x.2);
            assert_eq!(n("dynamo.tasks.migrate", "SUCCESS"), 4, "{}: {stats:?}", db.engine);
            assert_eq!(n("dynamo.tasks.recursive_navigate", "SUCCESS"), 1);
            assert_eq!(n("dynamo.tasks.recursive_navigate", "PENDING"), 0);
        });
    }
}

/// A walk's result as the agent sends it: `summary` for a success, none
/// (`{}`) for a failure.
fn walk(task_id: &str, parent: Option<&str>, jobid: i64, children: i64, run: u64, summary: Option<&str>) -> Finished {
    Finished {
        tasktype: "dynamo.tasks.recursive_navigate".into(),
        queue: Some("s1.default#discovery".into()),
        state: if summary.is_some() { "SUCCESS" } else { "FAILURE" },
        summary: summary.unwrap_or("{}").into(),
        discovery: true,
        ..result(task_id, parent, jobid, children, run, FileCounts::default())
    }
}

#[test]
fn a_failed_piece_closes_its_walk_so_the_walk_completes_before_the_job() {
    for db in both() {
        rt().block_on(async {
            let store = Store::open(&db.url).await.unwrap();
            let root = uuid::Uuid::new_v4().to_string();
            let job = job_with_root(&store, &root).await;
            let (run, run1) = (ChildId::new_run(), ChildId::new_run());
            let child = |run, seq| ChildId { run, seq }.to_uuid();
            // The root sent three pieces and a batch; piece 1 a batch of
            // its own. Piece 3 fails before its parent's result comes (held
            // in the database), piece 2 after it (counted at once), and
            // piece 1 succeeds last.
            let p3 = child(run, 2);
            store.ingest(&[walk(&p3, Some(&root), job, 0, 0, None)]).await.unwrap();
            let summary = r#"{"files":4,"children":4,"pieces":3,"piece":false}"#;
            store
                .ingest(&[walk(&root, None, job, 4, run, Some(summary))])
                .await
                .unwrap();
            let p2 = child(run, 1);
            store.ingest(&[walk(&p2, Some(&root), job, 0, 0, None)]).await.unwrap();
            let j = store.job(job).await.unwrap().unwrap();
            assert!(!j.dir_walk_complete, "{}: piece 1 is still walking", db.engine);
            let summary = r#"{"files":5,"children":1,"pieces":0,"piece":true}"#;
            let p1 = child(run, 0);
            let r = store
                .ingest(&[walk(&p1, Some(&root), job, 1, run1, Some(summary))])
                .await
                .unwrap();
            assert!(r.finished_jobs.is_empty(), "{}", db.engine);
            // Every walk closed, the batches still to come: the walk is
            // complete, the job is not.
            let j = store.job(job).await.unwrap().unwrap();
            assert_eq!(
                (j.dir_walk_complete, j.received, j.expected, j.files_found),
                (true, 4, 6, 9),
                "{}",
                db.engine
            );
            assert!(j.completed.is_none(), "{}", db.engine);
        })
    }
}

#[test]
fn failed_files_fail_the_job_and_are_recorded() {
    for db in both() {
        rt().block_on(async {
            let store = Store::open(&db.url).await.unwrap();
            let root = uuid::Uuid::new_v4().to_string();
            let job = job_with_root(&store, &root).await;
            let run = ChildId::new_run();
            let bad = FileCounts {
                processed: 35,
                failures: 5,
                ..Default::default()
            };
            let r = store
                .ingest(&[
                    result(&root, None, job, 1, run, FileCounts::default()),
                    result(&ChildId { run, seq: 0 }.to_uuid(), Some(&root), job, 0, 0, bad),
                ])
                .await
                .unwrap();
            assert_eq!(r.finished_jobs, [(job, "FAILURE")], "{}", db.engine);
            let mut only_this = ferry::hub::store::jobs::Filter::default();
            only_this.cmp("job_id", "=", ferry::hub::store::jobs::Bind::Int(job));
            let (count, files) = store
                .file_records(&only_this, ferry::hub::store::jobs::Page { offset: 0, limit: None })
                .await
                .unwrap();
            assert_eq!(count, 5, "{}", db.engine);
            assert_eq!(files[0].code.as_deref(), Some("EACCES"));
            assert_eq!(files[0].message, "[\"Permission denied\"]");
            let j = store.job(job).await.unwrap().unwrap();
            assert_eq!((j.tasks_failed, j.files_failures), (1, 5));
        });
    }
}

#[test]
fn sites_and_a_reopened_store_keep_their_rows() {
    for db in both() {
        rt().block_on(async {
            let store = Store::open(&db.url).await.unwrap();
            let mut site = Site::named("london");
            site.exclude = vec!["*.tmp".into()];
            let id = store.create_site(&site).await.unwrap();
            assert!(
                store.create_site(&site).await.unwrap_err().is_conflict(),
                "{}",
                db.engine
            );
            drop(store);
            let store = Store::open(&db.url).await.unwrap();
            let back = store.site(id).await.unwrap().unwrap();
            assert_eq!(back, Site { id, ..site }, "{}", db.engine);
            assert!(store.queue_exists(id, "default").await.unwrap());
            assert!(!store.queue_exists(id, "fast").await.unwrap());
        });
    }
}

#[test]
fn held_results_are_released_in_memory_and_in_chunks_below_nested_parents() {
    use ferry::hub::store::results::Started;
    use sqlx::Row;
    // More held children than one release reads at a time (5,000).
    const N: u64 = 12_000;
    for db in both() {
        rt().block_on(async {
            let store = Store::open(&db.url).await.unwrap();
            let root = uuid::Uuid::new_v4().to_string();
            let job = job_with_root(&store, &root).await;
            let run = ChildId::new_run();
            let child = |seq| ChildId { run, seq }.to_uuid();
            // Batch 1, all held (the walk's result has not come): N
            // children; child N, itself a parent of two; its two
            // children; and three children of another execution.
            let sub_run = ChildId::new_run();
            let mut first: Vec<Finished> = (0..N)
                .map(|seq| result(&child(seq), Some(&root), job, 0, 0, done(1)))
                .collect();
            first.push(result(&child(N), Some(&root), job, 2, sub_run, done(0)));
            for seq in 0..2 {
                let grandchild = ChildId { run: sub_run, seq }.to_uuid();
                first.push(result(&grandchild, Some(&child(N)), job, 0, 0, done(5)));
            }
            let other = ChildId::new_run();
            for seq in 0..3 {
                let stray = ChildId { run: other, seq }.to_uuid();
                first.push(result(&stray, Some(&root), job, 0, 0, done(7)));
            }
            let r = store.ingest(&first).await.unwrap();
            assert_eq!((r.counted, r.held), (0, N + 6), "{}", db.engine);
            // Child N+1 starts (its row is made by the event), then its
            // result comes in the same batch as the walk's, before it.
            store
                .mark_started(&[Started {
                    task_id: child(N + 1),
                    root_id: root.clone(),
                    parent_id: Some(root.clone()),
                    tasktype: "dynamo.tasks.migrate".into(),
                    node: "ferry@n1".into(),
                    at: 1,
                }])
                .await
                .unwrap();
            let r = store
                .ingest(&[
                    result(&child(N + 1), Some(&root), job, 0, 0, done(1)),
                    result(&root, None, job, N as i64 + 2, run, FileCounts::default()),
                ])
                .await
                .unwrap();
            // Every held result counted but the strays; the walk, child
            // N+1 (held in memory, then released) and the nested ones too.
            assert_eq!((r.counted, r.orphans, r.held), (N + 5, 3, 1), "{}", db.engine);
            assert_eq!(r.finished_jobs, [(job, "SUCCESS")], "{}", db.engine);
            let j = store.job(job).await.unwrap().unwrap();
            assert_eq!(
                (j.received, j.expected, j.orphans, j.files_processed),
                (N as i64 + 5, N as i64 + 5, 3, N as i64 + 1 + 10),
                "{}",
                db.engine
            );
            let pending: i64 =
                sqlx::query("SELECT COUNT(*) FROM tasks WHERE job_id = $1 AND (counted = 0 OR final = 0)")
                    .bind(job)
                    .fetch_one(&store.pool)
                    .await
                    .unwrap()
                    .get(0);
            assert_eq!(pending, 0, "{}", db.engine);
            let stats = store.task_stats(Some(job)).await.unwrap();
            let n = |s: &str| {
                stats
                    .iter()
                    .find(|x| x.0 == "dynamo.tasks.migrate" && x.1 == s)
                    .map_or(0, |x| x.2)
            };
            assert_eq!(
                (n("SUCCESS"), n("STARTED")),
                (N as i64 + 7, 0),
                "{}: {stats:?}",
                db.engine
            );
        });
    }
}

#[test]
fn postgres_runs_over_tls_when_the_url_asks_and_checks_the_certificate_when_told() {
    use sqlx::Row;
    let Some(db) = common::hub::postgres() else {
        return;
    };
    rt().block_on(async {
        let store = Store::open(&format!("{}?sslmode=require", db.url)).await.unwrap();
        let ssl: bool = sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .get(0);
        assert!(ssl, "the connection is not encrypted");
        // The test server's certificate is self-signed: not trusted.
        let e = Store::open(&format!("{}?sslmode=verify-full", db.url))
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("database: connect: "), "{e}");
    });
}

#[test]
fn housekeeping_deletes_jobs_past_their_ttl_and_only_those() {
    use ferry::hub::configs::{Configurations, Live};
    for db in both() {
        rt().block_on(async {
            let store = Store::open(&db.url).await.unwrap();
            let day = 86_400_000_000i64;
            let now = ferry::hub::store::now_us();
            let mut ids = Vec::new();
            for _ in 0..250 {
                let root = uuid::Uuid::new_v4().to_string();
                let job = job_with_root(&store, &root).await;
                store.ingest(&[result(&root, None, job, 0, 0, done(0))]).await.unwrap();
                ids.push(job);
            }
            // 230 ended 11 days ago, 20 ended now; one more still runs.
            sqlx::query("UPDATE jobs SET completed = $1 WHERE id <= $2")
                .bind(now - 11 * day)
                .bind(ids[229])
                .execute(&store.pool)
                .await
                .unwrap();
            let running = job_with_root(&store, &uuid::Uuid::new_v4().to_string()).await;
            let configs = Live::fixed(Configurations {
                jobs_ttl: 10,
                ..Configurations::from_settings(&Default::default())
            });
            let swept = ferry::hub::housekeeping::sweep(&store, &configs, now).await.unwrap();
            assert_eq!(swept.jobs, 230, "{}", db.engine);
            assert!(store.job(ids[229]).await.unwrap().is_none());
            assert!(store.job(ids[230]).await.unwrap().is_some());
            assert!(store.job(running).await.unwrap().is_some());
            let tasks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks")
                .fetch_one(&store.pool)
                .await
                .unwrap();
            assert_eq!(tasks, 21, "{}: the expired jobs' tasks went with them", db.engine);
            // Nothing more to do.
            let again = ferry::hub::housekeeping::sweep(&store, &configs, now).await.unwrap();
            assert_eq!(again.jobs, 0);
        });
    }
}

#[test]
fn a_table_of_jobs_and_a_jobs_tasks_read_a_page_without_paths_or_counts() {
    use ferry::hub::store::jobs::{Bind, Filter, Page};
    for db in both() {
        rt().block_on(async {
            let store = Store::open(&db.url).await.unwrap();
            let mut ids = Vec::new();
            for _ in 0..3 {
                ids.push(job_with_root(&store, &uuid::Uuid::new_v4().to_string()).await);
            }
            let page = Page {
                offset: 1,
                limit: Some(1),
            };
            let (count, brief) = store.jobs_brief(&Filter::default(), page).await.unwrap();
            let (_, full) = store.jobs(&Filter::default(), page).await.unwrap();
            assert_eq!(count, 3, "{}", db.engine);
            assert_eq!((brief.len(), brief[0].id), (1, ids[1]), "{}", db.engine);
            assert_eq!(brief[0].input_paths, serde_json::json!([]), "{}", db.engine);
            assert_eq!(full[0].input_paths, serde_json::json!(["/data"]), "{}", db.engine);
            assert_eq!(brief[0].friendly_name, full[0].friendly_name);
            let mut failed = Filter::default();
            failed.cmp("state", "=", Bind::Text("FAILURE".into()));
            assert_eq!(store.jobs_brief(&failed, page).await.unwrap().0, 0, "{}", db.engine);
            let tasks = store
                .job_tasks(
                    ids[2],
                    Page {
                        offset: 0,
                        limit: Some(10),
                    },
                )
                .await
                .unwrap();
            assert_eq!(tasks.len(), 1, "{}", db.engine);
            assert_eq!(tasks[0].tasktype, "dynamo.tasks.recursive_navigate");
            let none = store
                .job_tasks(
                    ids[2],
                    Page {
                        offset: 1,
                        limit: Some(10),
                    },
                )
                .await
                .unwrap();
            assert!(none.is_empty(), "{}", db.engine);
        });
    }
}

#[test]
fn a_task_type_pauses_once_resumes_once_and_its_row_goes_once_resumed_and_forgotten() {
    const DELETE: &str = "dynamo.tasks.delete_paths_from_gpfs";
    for db in both() {
        rt().block_on(async {
            let store = Store::open(&db.url).await.unwrap();
            let p = store
                .pause_tasktype(DELETE, "disk swap", "admin")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (
                    p.task.as_str(),
                    p.paused,
                    p.reason.as_str(),
                    p.paused_by.as_str(),
                    p.resumed
                ),
                (DELETE, true, "disk swap", "admin", None),
                "{}",
                db.engine
            );
            // Paused already: refused, the first pause kept.
            assert_eq!(store.pause_tasktype(DELETE, "again", "bob").await.unwrap(), None);
            assert_eq!(store.tasktype_pauses().await.unwrap(), vec![p.clone()], "{}", db.engine);
            assert!(store.resume_tasktype(DELETE).await.unwrap());
            assert!(!store.resume_tasktype(DELETE).await.unwrap(), "resumed twice");
            assert!(!store.resume_tasktype("dynamo.tasks.recall").await.unwrap());
            let resumed = store.tasktype_pauses().await.unwrap();
            assert_eq!(resumed.len(), 1);
            assert!(!resumed[0].paused && resumed[0].resumed.is_some(), "{resumed:?}");
            // Paused again before its queue was forgotten: a new pause.
            let again = store.pause_tasktype(DELETE, "audit", "bob").await.unwrap().unwrap();
            assert_eq!((again.reason.as_str(), again.resumed), ("audit", None));
            store.forget_tasktype(DELETE).await.unwrap();
            assert_eq!(store.tasktype_pauses().await.unwrap().len(), 1, "a paused type is kept");
            assert!(store.resume_tasktype(DELETE).await.unwrap());
            store.forget_tasktype(DELETE).await.unwrap();
            assert_eq!(store.tasktype_pauses().await.unwrap(), vec![], "{}", db.engine);
        });
    }
}

/// A pausing job becomes `PAUSED` only when no task of it runs and it was
/// asked to pause at or before the time the hub gives: a job caught
/// between two tasks is not settled before the starts of tasks taken
/// just before the pause can come in.
#[test]
fn a_pausing_job_settles_only_once_asked_long_enough_ago_and_idle() {
    use ferry::hub::store::holds::Hold;
    use ferry::hub::store::results::Started;
    for db in both() {
        rt().block_on(async {
            let store = Store::open(&db.url).await.unwrap();
            let id = job_with_root(&store, "root-p").await;
            let before = ferry::hub::store::now_us();
            assert!(matches!(store.pause_job(id).await.unwrap(), Hold::Done(_)));
            let state = |store: Store| async move { store.job(id).await.unwrap().unwrap().state };
            // Idle, but asked after the time given: still pausing.
            assert_eq!(store.settle_pauses(before - 1).await.unwrap(), 0, "{}", db.engine);
            assert_eq!(state(store.clone()).await, "PAUSING");
            // A task that started in the meantime keeps it pausing too.
            store
                .mark_started(&[Started {
                    task_id: "root-p".into(),
                    root_id: "root-p".into(),
                    parent_id: None,
                    tasktype: "dynamo.tasks.recursive_navigate".into(),
                    node: "n0".into(),
                    at: before,
                }])
                .await
                .unwrap();
            let later = ferry::hub::store::now_us() + 1;
            assert_eq!(store.settle_pauses(later).await.unwrap(), 0, "{}", db.engine);
            assert_eq!(state(store.clone()).await, "PAUSING");
            // The walk ends with a child still to come: nothing runs.
            let walk = FileCounts {
                found: 1,
                ..Default::default()
            };
            store.ingest(&[result("root-p", None, id, 1, 1, walk)]).await.unwrap();
            assert_eq!(store.settle_pauses(later).await.unwrap(), 1, "{}", db.engine);
            assert_eq!(state(store.clone()).await, "PAUSED");
        });
    }
}

/// A bidirectional sync's job on both engines: its counted results leave
/// it open at each stage (the hub advances it), its events are recorded
/// once however often they are delivered, a stage advances once, the
/// job ends at the last stage with what the run listed, and the events a
/// later run no longer needs are cleaned up (all but the latest two, back
/// to the last run that committed both sites' snapshots).
#[test]
fn a_sync_run_stays_open_through_its_stages_and_keeps_its_latest_two_runs_events() {
    use ferry::hub::store::bisync::{Advance, DONE, EventsDoc, Listed};
    for db in both() {
        rt().block_on(async {
            let store = Store::open(&db.url).await.unwrap();
            let mut jobs = Vec::new();
            for _ in 0..4 {
                let root = uuid::Uuid::new_v4().to_string();
                let job = sync_job(&store, &root).await;
                let doc = EventsDoc {
                    job,
                    site: "s1".into(),
                    run: "00000000000000aa".into(),
                    seq: 0,
                    events: vec![
                        r#"{"path":"/data/a","state":"created"}"#.into(),
                        r#"{"path":"/data/b\udcff","state":"deleted"}"#.into(),
                    ],
                };
                // Delivered twice: recorded once.
                store.record_sync_events(std::slice::from_ref(&doc)).await.unwrap();
                store.record_sync_events(&[doc]).await.unwrap();
                let mut fin = result(&root, None, job, 0, 1, FileCounts::default());
                fin.tasktype = "dynamo.tasks.snapdiff".into();
                store.ingest(&[fin]).await.unwrap();
                jobs.push(job);
            }
            let job = jobs[0];
            let events = store.sync_events(job, "s1", Some("00000000000000aa")).await.unwrap();
            assert_eq!(events.len(), 2, "{}", db.url);
            // Every result counted, yet open: its next stage is due.
            assert_eq!(store.job(job).await.unwrap().unwrap().state, "PENDING");
            assert_eq!(store.sync_runs_due().await.unwrap(), jobs);
            let listed = [Listed {
                path: "\"/data/c\"".into(),
                state: "failures",
                message: "refused".into(),
            }];
            let step = Advance {
                listed: &listed,
                ..Advance::default()
            };
            assert!(store.advance_sync(job, 0, DONE, &step).await.unwrap());
            assert!(
                !store.advance_sync(job, 0, DONE, &step).await.unwrap(),
                "a stage advances once"
            );
            let j = store.job(job).await.unwrap().unwrap();
            assert_eq!((j.state.as_str(), j.files_failures), ("FAILURE", 1), "{}", db.url);
            // The next two rotate both sites, through rotation tasks that
            // succeed (the first run failed, so it rolled back: no commit).
            for &j in &jobs[1..3] {
                let roots: Vec<RootTask> = ["s1", "s2"]
                    .iter()
                    .map(|site| RootTask {
                        task_id: uuid::Uuid::new_v4().to_string(),
                        tasktype: "dynamo.tasks.rotate_snapshot".into(),
                        site: site.to_string(),
                        queue: format!("{site}.default#discovery"),
                        headers: "[]".into(),
                        body: "{}".into(),
                    })
                    .collect();
                let step = Advance {
                    roots: &roots,
                    rotating: Some([true, true]),
                    ..Advance::default()
                };
                assert!(store.advance_sync(j, 0, DONE - 1, &step).await.unwrap());
                for r in &roots {
                    let mut fin = result(&r.task_id, None, j, 0, 1, FileCounts::default());
                    fin.tasktype = r.tasktype.clone();
                    store.ingest(&[fin]).await.unwrap();
                }
                assert!(store.sync_runs_due().await.unwrap().contains(&j));
                assert!(
                    store
                        .advance_sync(j, DONE - 1, DONE, &Advance::default())
                        .await
                        .unwrap()
                );
            }
            // The last is cancelled while running.
            store.cancel_job(jobs[3]).await.unwrap();
            assert!(
                !store.advance_sync(jobs[3], 0, 1, &Advance::default()).await.unwrap(),
                "a cancelled run gets no next stage"
            );
            assert!(store.advance_sync(jobs[3], 0, DONE, &Advance::default()).await.unwrap());
            assert_eq!(store.job(jobs[3]).await.unwrap().unwrap().state, "CANCELLED");
            // Kept: the latest two runs, and every run back to the last that
            // committed each site (the third); the first two are not needed.
            assert_eq!(store.cleanup_sync_events().await.unwrap(), 4, "{}", db.url);
            let left: Vec<usize> = futures::future::join_all(
                jobs.iter()
                    .map(|&j| store.sync_events(j, "s1", Some("00000000000000aa"))),
            )
            .await
            .into_iter()
            .map(|e| e.unwrap().len())
            .collect();
            assert_eq!(left, [0, 0, 2, 2], "{}", db.url);
            // A deleted job's run goes, with its events.
            store.delete_job(jobs[2]).await.unwrap();
            assert_eq!(store.cleanup_sync_events().await.unwrap(), 2, "{}", db.url);
            assert_eq!(store.sync_run(jobs[2]).await.unwrap(), None);
            assert!(store.sync_run(jobs[3]).await.unwrap().is_some());
        });
    }
}

/// A bidirectional run's listed files (conflicts it refused or skipped)
/// are each one row of the job's files, across several multi-row
/// statements; a path listed twice keeps its last listing, as one upsert
/// at a time left it; the job counts every listing.
#[test]
fn a_sync_runs_listed_files_are_each_one_row_and_a_path_listed_twice_keeps_its_last() {
    use ferry::hub::store::bisync::{Advance, Listed};
    use ferry::hub::store::jobs::{Bind, Filter, Page};
    for db in both() {
        rt().block_on(async {
            let store = Store::open(&db.url).await.unwrap();
            let job = sync_job(&store, &uuid::Uuid::new_v4().to_string()).await;
            let n = 1_201;
            let mut listed: Vec<Listed> = (0..n)
                .map(|i| Listed {
                    path: format!("\"/data/f{i}\""),
                    state: if i % 2 == 0 { "failures" } else { "skipped" },
                    message: format!("why {i}: it's \"quoted\""),
                })
                .collect();
            // Again in the same statement (PostgreSQL refuses an upsert
            // that meets a key twice).
            listed.insert(
                10,
                Listed {
                    path: "\"/data/f7\"".into(),
                    state: "failures",
                    message: "listed again".into(),
                },
            );
            let step = Advance {
                listed: &listed,
                ..Advance::default()
            };
            assert!(store.advance_sync(job, 0, 1, &step).await.unwrap());
            let mut only_this = Filter::default();
            only_this.cmp("job_id", "=", Bind::Int(job));
            let (count, files) = store
                .file_records(&only_this, Page { offset: 0, limit: None })
                .await
                .unwrap();
            assert_eq!(count, n as i64, "{}: one row a path", db.engine);
            let by_path: std::collections::HashMap<&str, _> = files.iter().map(|f| (f.path.as_str(), f)).collect();
            for (i, l) in listed.iter().filter(|l| l.message != "listed again").enumerate() {
                let f = by_path[l.path.as_str()];
                let (state, message) = if i == 7 {
                    ("failures", "listed again")
                } else {
                    (l.state, l.message.as_str())
                };
                assert_eq!(
                    (
                        f.state.as_str(),
                        f.message.as_str(),
                        f.code.as_deref(),
                        f.task_id.as_str()
                    ),
                    (state, serde_json::to_string(&[message]).unwrap().as_str(), None, ""),
                    "{}: {}",
                    db.engine,
                    l.path
                );
            }
            let j = store.job(job).await.unwrap().unwrap();
            assert_eq!((j.files_failures, j.files_skipped), (602, 600), "{}", db.engine);
        });
    }
}

/// A bidirectional run's decisions reach their own events, every field,
/// across several multi-row statements (more than one chunk of them).
#[test]
fn a_sync_runs_decisions_are_each_written_to_their_own_event() {
    use ferry::hub::store::bisync::{Advance, Decided, EventsDoc};
    for db in both() {
        rt().block_on(async {
            let store = Store::open(&db.url).await.unwrap();
            let job = sync_job(&store, &uuid::Uuid::new_v4().to_string()).await;
            let n = 1_201;
            let doc = EventsDoc {
                job,
                site: "s1".into(),
                run: "00000000000000aa".into(),
                seq: 0,
                events: (0..n)
                    .map(|i| format!(r#"{{"path":"/data/f{i}","state":"created"}}"#))
                    .collect(),
            };
            store.record_sync_events(&[doc]).await.unwrap();
            let events = store.sync_events(job, "s1", Some("00000000000000aa")).await.unwrap();
            assert_eq!(events.len(), n, "{}", db.engine);
            let names = ["send", "drop", "delete", "refuse"];
            let decided: Vec<Decided> = events
                .iter()
                .enumerate()
                .map(|(i, e)| Decided {
                    id: e.id,
                    decision: names[i % names.len()],
                    target: (i % 3 == 0).then(|| format!("\"/data/moved/f{i}\"")),
                    note: (i % 5 == 0).then(|| format!("why {i}: it's \"quoted\"")),
                })
                .collect();
            let step = Advance {
                decided: &decided,
                ..Advance::default()
            };
            assert!(store.advance_sync(job, 0, 1, &step).await.unwrap());
            let stored = store.sync_events(job, "s1", None).await.unwrap();
            assert_eq!(stored.len(), n, "{}: every event decided", db.engine);
            for (s, d) in stored.iter().zip(&decided) {
                assert_eq!(
                    (s.id, s.decision.as_deref(), &s.target, &s.note),
                    (d.id, Some(d.decision), &d.target, &d.note),
                    "{}",
                    db.engine
                );
            }
        });
    }
}
