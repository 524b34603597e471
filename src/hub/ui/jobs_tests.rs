//! Tests of the jobs pages' data builders.
use super::*;
use crate::hub::store::jobs::Owner;
use crate::hub::ui::actions::{CANCEL, DELETE};

pub(crate) fn job(state: &str) -> Job {
    Job {
        id: 7,
        workflow: Some("premigrate".into()),
        fields: serde_json::json!({"lock_level": "implicit", "n": 3}),
        discovery: Some("recursive".into()),
        site: "london".into(),
        queue: "default".into(),
        friendly_name: "Pre-Stage of '/d/<x>' on 'london'".into(),
        state: state.into(),
        created: 1_000_000_000,
        started: Some(1_002_000_000),
        completed: None,
        owner: Owner {
            kind: "user".into(),
            id: 1,
            name: "admin".into(),
        },
        clientkey_id: None,
        input_paths: serde_json::json!([{"path": "/d/<x>"}, {"path": "/d/new\nline"}]),
        roots: 1,
        roots_published: 1,
        dir_walk_complete: true,
        expected: 40,
        received: 10,
        orphans: 0,
        tasks_failed: 0,
        files_found: 12_345,
        files_processed: 1000,
        files_skipped: 2,
        files_aborted: 0,
        files_failures: 3,
        resubmitted_from: None,
        walk: (0, 0, 0, None),
        record_files: Default::default(),
        dry_run: false,
    }
}

#[test]
fn a_row_shows_progress_and_times() {
    let r = job_row(&job("STARTED"), 1_062_000_000);
    // 1,005 files done of 12,345 found.
    assert_eq!(r.percent, 8.1);
    assert_eq!(r.percent_text, "8.1 %");
    assert_eq!(r.state_class, "st-started");
    assert_eq!(r.created.age, "1 min ago");
    assert_eq!(r.created.iso, "1970-01-01T00:16:40Z");
    let done = Job {
        completed: Some(1_012_000_000),
        ..job("SUCCESS")
    };
    let r = job_row(&done, 2_000_000_000);
    assert_eq!((r.percent, r.runtime.as_str()), (100.0, "10 s"));
}

#[test]
fn filters_and_pages_read_from_the_query() {
    let q: JobsQuery = serde_html_form::from_str("state=failure&workflow=migrate&site=&page=3").unwrap();
    assert_eq!(q.state(), Some("FAILURE"));
    assert_eq!(q.page(), 3);
    assert!(q.filtered());
    assert_eq!(q.query(4), "?state=FAILURE&workflow=migrate&page=4");
    assert_eq!(q.query(1), "?state=FAILURE&workflow=migrate");
    let q: JobsQuery = serde_html_form::from_str("state=NOPE&page=-2&site=a%26b").unwrap();
    assert_eq!((q.state(), q.page()), (None, 1));
    assert_eq!(q.query(1), "?site=a%26b");
    assert_eq!(JobsQuery::default().query(1), "");
    assert!(!JobsQuery::default().filtered());
}

#[test]
fn pagers_count_rows_and_link_pages() {
    let p = pager(2, 50, 61_700, |n| format!("?page={n}"));
    assert_eq!(p.text, "Page 2 of 1,234");
    assert_eq!(p.rows, "51–100 of 61,700");
    assert_eq!(p.prev.as_deref(), Some("?page=1"));
    assert_eq!(p.next.as_deref(), Some("?page=3"));
    let p = pager(1, 50, 0, |n| n.to_string());
    assert_eq!((p.pages, p.rows.as_str(), p.prev, p.next), (1, "none of 0", None, None));
    let p = pager(9, 50, 60, |n| n.to_string());
    assert_eq!(
        (p.rows.as_str(), p.prev.as_deref(), p.next),
        ("none of 60", Some("2"), None)
    );
}

#[test]
fn the_stats_bar_adds_up_to_its_width() {
    let stats = vec![
        ("a".to_string(), "SUCCESS".to_string(), 1),
        ("b".to_string(), "SUCCESS".to_string(), 1),
        ("a".to_string(), "ERROR".to_string(), 1),
        ("a".to_string(), "PENDING".to_string(), 4),
    ];
    let bar = stats_bar(&stats);
    assert_eq!(bar.total, 7);
    let labels: Vec<&str> = bar.segments.iter().map(|s| s.label).collect();
    assert_eq!(
        labels,
        [
            "Success",
            "Error",
            "Skipped",
            "Aborted",
            "Cancelled",
            "Failure",
            "Started",
            "Pending"
        ]
    );
    assert_eq!(bar.segments[0].count, 2);
    assert_eq!((bar.segments[0].x, bar.segments[0].width), (0, 285));
    assert_eq!((bar.segments[1].x, bar.segments[1].width), (285, 143));
    assert_eq!(bar.segments[7].x + bar.segments[7].width, 1000);
    assert_eq!(bar.segments.iter().map(|s| s.width).sum::<i64>(), 1000);
    let odd = stats_bar(&[("a".into(), "LOST".into(), 5)]);
    assert_eq!(odd.segments.last().unwrap().label, "Other");
    let empty = stats_bar(&[]);
    assert_eq!(empty.total, 0);
    assert!(empty.segments.iter().all(|s| s.width == 0));
}

#[test]
fn only_actions_that_apply_are_offered() {
    let names = |st: &str| actions(st).iter().map(|a| a.name).collect::<Vec<_>>();
    for st in ["PENDING", "STARTED"] {
        assert_eq!(names(st), ["pause", "cancel"], "{st}");
    }
    for st in ["PAUSING", "PAUSED"] {
        assert_eq!(names(st), ["resume", "cancel"], "{st}");
    }
    assert_eq!(names("DEQUEUING"), ["cancel"]);
    assert_eq!(names("FAILURE"), ["resubmit", "resubmit-failed", "delete"]);
    for st in ["SUCCESS", "CANCELLED"] {
        assert_eq!(names(st), ["resubmit", "delete"], "{st}");
    }
    assert!(DELETE.confirm.is_some());
    assert!(CANCEL.confirm.is_none());
}

#[test]
fn a_job_view_keeps_what_paths_and_fields_say() {
    let v = job_view(&job("STARTED"), 2_000_000_000, Some(0));
    assert!(v.no_takers);
    assert_eq!(
        v.takers.as_deref(),
        Some("none: no node online consumes queue default, so its tasks wait")
    );
    assert_eq!(job_view(&job("STARTED"), 0, Some(2)).takers.as_deref(), Some("2 nodes"));
    assert_eq!(v.inputs, ["/d/<x>", "/d/new\\nline"]);
    assert_eq!(v.inputs_more, None);
    assert_eq!(
        v.fields,
        [("lock_level".into(), "implicit".into()), ("n".into(), "3".into())]
    );
    assert!(v.completed.is_none());
    let live = live_view(&job("STARTED"), &[]);
    assert!(
        live.progress_note
            .starts_with("1,005 of 12,345 files done, 10 of 40 tasks, about "),
        "{}",
        live.progress_note
    );
    let mut walking = job("STARTED");
    walking.dir_walk_complete = false;
    walking.walk = (20_000, 0, 500, None);
    assert_eq!(
        live_view(&walking, &[]).progress_note,
        "1,005 files done of 20,000 found so far; the discovery is still walking (500 batches published)"
    );
    assert!(!live.ended);
    assert_eq!(live.files[4].value, "3");
    assert!(live.files[4].bad);
    assert_eq!(live.files[0].value, "12,345");
    let t = tabs(7, "failed", 1234, 3, None);
    assert_eq!(t[0].label, "Tasks (1,234)");
    assert!(t[1].active && !t[0].active);
    assert_eq!(t[2].href, "/ui/jobs/7/?tab=completed");
}

#[test]
fn failed_items_show_their_path_code_and_message() {
    let r = FileRecord {
        id: 1,
        job_id: 7,
        path: r#""/d/bad\udcff\"<b>""#.into(),
        state: "failures".into(),
        code: Some("EACCES".into()),
        message: r#"["Permission denied (os error 13)", "again"]"#.into(),
        task_id: "t-1".into(),
    };
    let f = failed_row(&r);
    assert_eq!(f.path, "/d/bad\\udcff\"<b>");
    assert_eq!(f.state, "failed");
    assert_eq!(f.message, ["Permission denied (os error 13)", "again"]);
    let odd = failed_row(&FileRecord {
        message: "plain".into(),
        code: None,
        ..r
    });
    assert_eq!((odd.message, odd.code.as_str()), (vec!["plain".to_string()], "—"));
}
