//! Tests of the control channel's parser and set (`super::control`).

use super::*;

fn entry(root: &str, until: i64) -> Cancelled {
    Cancelled {
        root: root.into(),
        until,
    }
}

fn hold(root: &str, park: &str, until: i64) -> Paused {
    Paused {
        root: root.into(),
        park: park.into(),
        until,
    }
}

fn json(body: serde_json::Value) -> Result<ControlMessage, ControlError> {
    parse(Some("application/json"), body.to_string().as_bytes())
}

#[test]
fn cancel_and_snapshot_messages_parse_exactly() {
    assert_eq!(
        json(serde_json::json!({"op": "cancel", "roots": ["r1", "r2"], "until": 1700000000})),
        Ok(ControlMessage::Cancel(vec![
            entry("r1", 1_700_000_000),
            entry("r2", 1_700_000_000)
        ]))
    );
    assert_eq!(
        json(serde_json::json!({"op": "snapshot", "cancel": [
            {"root": "a", "until": 10}, {"root": "b", "until": 20}]})),
        Ok(ControlMessage::Snapshot {
            cancel: vec![entry("a", 10), entry("b", 20)],
            pause: vec![],
            drain: vec![],
            tasktypes: vec![],
        })
    );
    assert_eq!(
        json(serde_json::json!({"op": "pause", "holds": [{"root": "r", "park": "h.parked.7", "until": 9}]})),
        Ok(ControlMessage::Pause {
            holds: vec![hold("r", "h.parked.7", 9)],
            tasktypes: vec![]
        })
    );
    assert_eq!(
        json(serde_json::json!({"op": "resume", "roots": ["r", "s"]})),
        Ok(ControlMessage::Resume {
            roots: vec!["r".into(), "s".into()],
            tasktypes: vec![]
        })
    );
    // Members a hub may add (job ids) are ignored; an empty snapshot
    // is a snapshot, with pauses or without; a content type may be left
    // out; a fractional `until` is rounded up.
    assert_eq!(
        json(serde_json::json!({"op": "cancel", "jobs": [7], "roots": ["r"], "until": 5, "ttl": 1})),
        Ok(ControlMessage::Cancel(vec![entry("r", 5)]))
    );
    assert_eq!(
        json(serde_json::json!({"op": "snapshot", "cancel": [], "pause": [{"root": "p", "park": "q", "until": 3}]})),
        Ok(ControlMessage::Snapshot {
            cancel: vec![],
            pause: vec![hold("p", "q", 3)],
            drain: vec![],
            tasktypes: vec![],
        })
    );
    assert_eq!(
        parse(None, br#"{"op":"cancel","roots":["r"],"until":1700000000.25}"#),
        Ok(ControlMessage::Cancel(vec![entry("r", 1_700_000_001)]))
    );
}

#[test]
fn malformed_messages_are_refused_with_their_reason() {
    let cases: &[(Option<&str>, &[u8], &str)] = &[
        (
            Some("application/x-python-serialize"),
            b"{}",
            "content type \"application/x-python-serialize\" is not application/json",
        ),
        (
            None,
            b"not json",
            "the body is not JSON: expected ident at line 1 column 2",
        ),
        (None, b"[1]", "the body is not a JSON object"),
        (None, br#"{"roots": ["r"]}"#, "no `op` string"),
        (None, br#"{"op": 1}"#, "no `op` string"),
        (
            None,
            br#"{"op": "hold", "jobs": [7]}"#,
            "unknown op \"hold\" (ferry obeys \"cancel\", \"pause\", \"resume\", \"drain\", \"undrain\" and \"snapshot\")",
        ),
        (
            None,
            br#"{"op": "pause", "jobs": [7]}"#,
            "pause: `holds` must be a list of {root, park, until}",
        ),
        (
            None,
            br#"{"op": "pause", "holds": [{"root": "r", "until": 1}]}"#,
            "pause: `holds[0].park` is missing",
        ),
        (
            None,
            br#"{"op": "pause", "holds": [{"root": "r", "park": 7, "until": 1}]}"#,
            "pause: `holds[0].park` must be a string (a queue name)",
        ),
        (
            None,
            br#"{"op": "resume", "roots": [""]}"#,
            "resume: `roots[0]` is empty",
        ),
        (
            None,
            br#"{"op": "snapshot", "cancel": [], "pause": {}}"#,
            "snapshot: `pause` must be a list of {root, park, until}",
        ),
        (
            None,
            br#"{"op": "snapshot", "cancel": [], "pause": [{"root": "r", "park": "", "until": 1}]}"#,
            "snapshot: `pause[0].park` is empty",
        ),
        (
            None,
            br#"{"op": "cancel", "roots": ["r"]}"#,
            "cancel: `until` is missing",
        ),
        (
            None,
            br#"{"op": "cancel", "roots": ["r"], "until": "soon"}"#,
            "cancel: `until` must be a number (unix seconds)",
        ),
        (
            None,
            br#"{"op": "cancel", "roots": ["r"], "until": 1e300}"#,
            "cancel: `until` is out of range",
        ),
        (
            None,
            br#"{"op": "cancel", "roots": "r", "until": 1}"#,
            "cancel: `roots` must be a list of root task ids",
        ),
        (
            None,
            br#"{"op": "cancel", "roots": ["r", 5], "until": 1}"#,
            "cancel: `roots[1]` must be a string (a root task id)",
        ),
        (
            None,
            br#"{"op": "cancel", "roots": [""], "until": 1}"#,
            "cancel: `roots[0]` is empty",
        ),
        (
            None,
            br#"{"op": "snapshot"}"#,
            "snapshot: `cancel` must be a list of {root, until}",
        ),
        (
            None,
            br#"{"op": "snapshot", "cancel": ["r"]}"#,
            "snapshot: `cancel[0]` must be an object {root, until}",
        ),
        (
            None,
            br#"{"op": "snapshot", "cancel": [{"root": "a", "until": 1}, {"until": 1}]}"#,
            "snapshot: `cancel[1].root` is missing",
        ),
        (
            None,
            br#"{"op": "snapshot", "cancel": [{"root": "a", "until": null}]}"#,
            "snapshot: `cancel[0].until` must be a number (unix seconds)",
        ),
    ];
    for (ct, body, why) in cases {
        let e = parse(*ct, body).unwrap_err();
        assert_eq!(e.to_string(), *why, "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn the_set_adds_keeps_the_later_until_and_forgets_expired_entries() {
    let set = ControlSet::default();
    let cancel = |roots: &[&str], until| ControlMessage::Cancel(roots.iter().map(|r| entry(r, until)).collect());
    assert_eq!(set.apply(&cancel(&["a", "b"], 100), 50), 2);
    assert!(set.is_cancelled("a", 50) && set.is_cancelled("b", 100));
    assert!(!set.is_cancelled("c", 50));
    // Forgotten after `until`, not at it.
    assert!(!set.is_cancelled("a", 101));

    // A snapshot adds: `a` and `b` stay although it lists neither.
    let snap = ControlMessage::Snapshot {
        cancel: vec![entry("c", 200), entry("b", 300)],
        pause: vec![],
        drain: vec![],
        tasktypes: vec![],
    };
    assert_eq!(set.apply(&snap, 60), 1, "only c is new");
    assert!(set.is_cancelled("a", 60) && set.is_cancelled("c", 60));
    // `b` got the later until; an earlier one does not shorten it.
    assert!(set.is_cancelled("b", 300));
    assert_eq!(set.apply(&cancel(&["b"], 150), 60), 0);
    assert!(set.is_cancelled("b", 300));

    // An entry already past is not added; expired ones are forgotten,
    // and one that comes back after expiring counts as new.
    assert_eq!(set.apply(&cancel(&["d"], 10), 60), 0);
    assert!(!set.is_cancelled("d", 10));
    assert_eq!(set.apply(&cancel(&["a"], 500), 150), 1, "a had expired at 150");
    assert_eq!(set.roots.lock().unwrap().len(), 3, "a, b and c");
    let empty = ControlMessage::Snapshot {
        cancel: vec![],
        pause: vec![],
        drain: vec![],
        tasktypes: vec![],
    };
    assert_eq!(set.apply(&empty, 301), 0);
    assert_eq!(
        set.roots.lock().unwrap().keys().collect::<Vec<_>>(),
        ["a"],
        "b and c expired"
    );
}

#[test]
fn pauses_park_until_resumed_or_expired_and_a_cancel_wins() {
    let set = ControlSet::default();
    assert_eq!(
        set.apply(
            &ControlMessage::Pause {
                holds: vec![hold("a", "q.a", 100), hold("b", "q.b", 100)],
                tasktypes: vec![]
            },
            50
        ),
        2
    );
    assert_eq!(set.parking("a", "t", None, 60).as_deref(), Some("q.a"));
    assert_eq!(set.parking("c", "t", None, 60), None);
    // A snapshot renews a pause (the later until) and adds new ones.
    let snap = ControlMessage::Snapshot {
        cancel: vec![],
        pause: vec![hold("a", "q.a", 200), hold("c", "q.c", 200)],
        drain: vec![],
        tasktypes: vec![],
    };
    assert_eq!(set.apply(&snap, 60), 1, "only c is new");
    assert_eq!(set.parking("a", "t", None, 150).as_deref(), Some("q.a"));
    assert_eq!(set.parking("b", "t", None, 150), None, "b expired at 100");
    // A resume removes at once; a cancel wins over a pause.
    assert_eq!(
        set.apply(
            &ControlMessage::Resume {
                roots: vec!["a".into(), "x".into()],
                tasktypes: vec![]
            },
            60
        ),
        1
    );
    assert_eq!(set.parking("a", "t", None, 60), None);
    assert_eq!(set.apply(&ControlMessage::Cancel(vec![entry("c", 500)]), 60), 1);
    assert_eq!(set.parking("c", "t", None, 60), None);
    assert!(set.is_cancelled("c", 60));
}

#[test]
fn drains_hold_until_undrained_or_expired() {
    let set = ControlSet::default();
    let d = |node: &str, until| Drained {
        node: node.into(),
        until,
    };
    assert_eq!(
        json(serde_json::json!({"op": "drain", "nodes": [{"node": "ferry@a", "until": 100}]})),
        Ok(ControlMessage::Drain(vec![d("ferry@a", 100)]))
    );
    assert_eq!(
        json(serde_json::json!({"op": "undrain", "nodes": ["ferry@a"]})),
        Ok(ControlMessage::Undrain(vec!["ferry@a".into()]))
    );
    assert_eq!(
        json(serde_json::json!({"op": "drain", "nodes": [{"until": 1}]}))
            .unwrap_err()
            .to_string(),
        "drain: `nodes[0].node` must be a node name"
    );
    assert_eq!(set.apply(&ControlMessage::Drain(vec![d("ferry@a", 100)]), 50), 1);
    assert!(set.is_drained("ferry@a", 100) && !set.is_drained("ferry@b", 60));
    assert!(!set.is_drained("ferry@a", 101), "expired");
    let snap = ControlMessage::Snapshot {
        cancel: vec![],
        pause: vec![],
        drain: vec![d("ferry@a", 200)],
        tasktypes: vec![],
    };
    assert_eq!(set.apply(&snap, 60), 0, "renewed, not new");
    assert!(set.is_drained("ferry@a", 150));
    assert_eq!(set.apply(&ControlMessage::Undrain(vec!["ferry@a".into()]), 60), 1);
    assert!(!set.is_drained("ferry@a", 60));
}

#[test]
fn a_watch_follows_the_set() {
    let set = Arc::new(ControlSet::default());
    let watch = set.watch("root");
    let other = set.watch("other");
    assert!(!watch.is_cancelled());
    let until = unix_now() + 600;
    set.apply(&ControlMessage::Cancel(vec![entry("root", until)]), unix_now());
    assert!(watch.is_cancelled());
    assert!(!other.is_cancelled());
}

fn typed(task: &str, park: &str, until: i64) -> TypePaused {
    TypePaused {
        tasktype: kind(task),
        park: park.into(),
        until,
    }
}

/// Task type `task` of the hub whose results queue is `h.results`.
fn kind(task: &str) -> TaskType {
    TaskType {
        task: task.into(),
        reply_to: HUB.into(),
    }
}

const DELETE: &str = "dynamo.tasks.delete_paths_from_gpfs";
const HUB: &str = "h.results";

#[test]
fn task_type_pauses_parse_in_pause_resume_and_snapshot_and_old_shapes_still_do() {
    // A hub's type pause: `holds` empty (what an older agent reads as a
    // pause of no job), or left out.
    let want = ControlMessage::Pause {
        holds: vec![],
        tasktypes: vec![typed(DELETE, "h.parked.tasktype.d", 9)],
    };
    assert_eq!(
        json(serde_json::json!({"op": "pause", "holds": [],
            "tasktypes": [{"task": DELETE, "reply_to": HUB, "park": "h.parked.tasktype.d", "until": 9}]})),
        Ok(want.clone())
    );
    assert_eq!(
        json(serde_json::json!({"op": "pause",
            "tasktypes": [{"task": DELETE, "reply_to": HUB, "park": "h.parked.tasktype.d", "until": 8.5}]})),
        Ok(want)
    );
    let resumed = ControlMessage::Resume {
        roots: vec![],
        tasktypes: vec![kind(DELETE)],
    };
    assert_eq!(
        json(serde_json::json!({"op": "resume", "roots": [], "tasktypes": [{"task": DELETE, "reply_to": HUB}]})),
        Ok(resumed.clone())
    );
    assert_eq!(
        json(serde_json::json!({"op": "resume", "tasktypes": [{"task": DELETE, "reply_to": HUB}]})),
        Ok(resumed)
    );
    assert_eq!(
        json(
            serde_json::json!({"op": "snapshot", "cancel": [], "pause": [], "drain": [],
            "tasktypes": [{"task": DELETE, "reply_to": HUB, "park": "q", "until": 3}]})
        ),
        Ok(ControlMessage::Snapshot {
            cancel: vec![],
            pause: vec![],
            drain: vec![],
            tasktypes: vec![typed(DELETE, "q", 3)],
        })
    );
    let cases: &[(&str, &str)] = &[
        (
            r#"{"op": "pause", "tasktypes": {}}"#,
            "pause: `tasktypes` must be a list of {task, reply_to, park, until}",
        ),
        (
            r#"{"op": "pause", "tasktypes": [{"task": "", "reply_to": "h", "park": "q", "until": 1}]}"#,
            "pause: `tasktypes[0].task` is empty",
        ),
        (
            r#"{"op": "pause", "tasktypes": [{"task": 3, "reply_to": "h", "park": "q", "until": 1}]}"#,
            "pause: `tasktypes[0].task` must be a string (a task name)",
        ),
        (
            r#"{"op": "pause", "tasktypes": [{"task": "t", "park": "q", "until": 1}]}"#,
            "pause: `tasktypes[0].reply_to` is missing",
        ),
        (
            r#"{"op": "pause", "tasktypes": [{"task": "t", "reply_to": "h", "until": 1}]}"#,
            "pause: `tasktypes[0].park` is missing",
        ),
        (
            r#"{"op": "pause", "tasktypes": ["t"]}"#,
            "pause: `tasktypes[0]` must be an object {task, reply_to, park, until}",
        ),
        (
            r#"{"op": "pause", "holds": 1, "tasktypes": []}"#,
            "pause: `holds` must be a list of {root, park, until}",
        ),
        (r#"{"op": "resume"}"#, "resume: `roots` must be a list of root task ids"),
        (
            r#"{"op": "resume", "tasktypes": "t"}"#,
            "resume: `tasktypes` must be a list of {task, reply_to}",
        ),
        (
            r#"{"op": "resume", "tasktypes": ["t"]}"#,
            "resume: `tasktypes[0]` must be an object {task, reply_to}",
        ),
        (
            r#"{"op": "resume", "tasktypes": [{"task": "t", "reply_to": ""}]}"#,
            "resume: `tasktypes[0].reply_to` is empty",
        ),
        (
            r#"{"op": "snapshot", "cancel": [], "tasktypes": [{"task": "t", "reply_to": "h", "park": "q"}]}"#,
            "snapshot: `tasktypes[0].until` is missing",
        ),
    ];
    for (body, why) in cases {
        let e = parse(None, body.as_bytes()).unwrap_err();
        assert_eq!(e.to_string(), *why, "{body}");
    }
}

#[test]
fn a_paused_task_type_parks_its_hubs_tasks_after_the_jobs_hold_and_never_a_cancelled_jobs() {
    let set = ControlSet::default();
    let pause = ControlMessage::Pause {
        holds: vec![],
        tasktypes: vec![typed(DELETE, "q.delete", 100)],
    };
    assert_eq!(set.apply(&pause, 50), 1);
    assert_eq!(set.parking("r1", DELETE, Some(HUB), 60).as_deref(), Some("q.delete"));
    assert_eq!(
        set.parking("r1", "dynamo.tasks.stat_paths", Some(HUB), 60),
        None,
        "other types run"
    );
    // Another hub's tasks of the type, and tasks replying nowhere, run.
    assert_eq!(set.parking("r1", DELETE, Some("other.results"), 60), None);
    assert_eq!(set.parking("r1", DELETE, None, 60), None);
    assert_eq!(set.parking("r1", DELETE, Some(HUB), 101), None, "expired at 100");
    // A paused job's task goes to its job's queue first.
    let job = ControlMessage::Pause {
        holds: vec![hold("r2", "q.job2", 100)],
        tasktypes: vec![],
    };
    assert_eq!(set.apply(&job, 50), 1);
    assert_eq!(set.parking("r2", DELETE, Some(HUB), 60).as_deref(), Some("q.job2"));
    // A snapshot renews the type's pause (not new); a cancel wins.
    let snap = ControlMessage::Snapshot {
        cancel: vec![entry("r3", 500)],
        pause: vec![],
        drain: vec![],
        tasktypes: vec![typed(DELETE, "q.delete", 300)],
    };
    assert_eq!(set.apply(&snap, 60), 1, "only r3's cancel is new");
    assert_eq!(set.parking("r1", DELETE, Some(HUB), 200).as_deref(), Some("q.delete"));
    assert_eq!(
        set.parking("r3", DELETE, Some(HUB), 60),
        None,
        "cancelled: refused, not parked"
    );
    // A resume of the type removes it at once and counts it; the job's
    // hold stays.
    let resume = ControlMessage::Resume {
        roots: vec![],
        tasktypes: vec![kind(DELETE), kind("dynamo.tasks.recall")],
    };
    assert_eq!(set.apply(&resume, 60), 1);
    assert_eq!(set.parking("r1", DELETE, Some(HUB), 60), None);
    assert_eq!(set.parking("r2", DELETE, Some(HUB), 60).as_deref(), Some("q.job2"));
}
