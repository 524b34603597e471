//! The control channel's parser (a hub's cancel, pause, resume, drain,
//! undrain and snapshot messages, with task type pauses) never panics on any content type and body. What it
//! accepts has only non-empty root ids and parking queues and, written
//! back as JSON, parses to the same message; applied to an empty control
//! set it cancels or parks exactly the roots whose `until` has not
//! passed, and counts each of them once.
#![no_main]

use ferry::agent::control::{Cancelled, ControlMessage, ControlSet, Drained, Paused, TaskType, TypePaused, parse};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;

/// The unix time the set is asked at.
const NOW: i64 = 1_700_000_000;

fn holds(p: &[Paused]) -> Vec<serde_json::Value> {
    p.iter()
        .map(|h| serde_json::json!({"root": h.root, "park": h.park, "until": h.until}))
        .collect()
}

fn types(t: &[TypePaused]) -> Vec<serde_json::Value> {
    t.iter()
        .map(|t| serde_json::json!({"task": t.tasktype.task, "reply_to": t.tasktype.reply_to, "park": t.park, "until": t.until}))
        .collect()
}

fn kinds(t: &[TaskType]) -> Vec<serde_json::Value> {
    t.iter()
        .map(|t| serde_json::json!({"task": t.task, "reply_to": t.reply_to}))
        .collect()
}

fn drains(d: &[Drained]) -> Vec<serde_json::Value> {
    d.iter()
        .map(|n| serde_json::json!({"node": n.node, "until": n.until}))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    // Layout: <flags byte> <body>; the flags choose the content type.
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let content_type = match flags & 3 {
        0 => None,
        1 => Some("application/json"),
        2 => Some("application/x-python-serialize"),
        _ => Some(""),
    };
    let Ok(msg) = parse(content_type, body) else { return };
    assert!(matches!(content_type, None | Some("application/json")));
    type Lists<'a> = (&'a [Cancelled], &'a [Paused], &'a [Drained], &'a [TypePaused]);
    let (cancel, pause, drain, tasktypes): Lists = match &msg {
        ControlMessage::Cancel(c) => (c, &[], &[], &[]),
        ControlMessage::Pause { holds, tasktypes } => (&[], holds, &[], tasktypes),
        ControlMessage::Drain(d) => (&[], &[], d, &[]),
        ControlMessage::Snapshot {
            cancel,
            pause,
            drain,
            tasktypes,
        } => (cancel, pause, drain, tasktypes),
        ControlMessage::Resume { roots, tasktypes } => {
            assert!(roots.iter().all(|x| !x.is_empty()), "{msg:?}");
            assert!(
                tasktypes.iter().all(|t| !t.task.is_empty() && !t.reply_to.is_empty()),
                "{msg:?}"
            );
            (&[], &[], &[], &[])
        }
        ControlMessage::Undrain(r) => {
            assert!(r.iter().all(|x| !x.is_empty()), "{msg:?}");
            (&[], &[], &[], &[])
        }
    };
    assert!(
        tasktypes
            .iter()
            .all(|t| !t.tasktype.task.is_empty() && !t.tasktype.reply_to.is_empty() && !t.park.is_empty()),
        "{msg:?}"
    );
    assert!(drain.iter().all(|d| !d.node.is_empty()), "{msg:?}");
    assert!(cancel.iter().all(|c| !c.root.is_empty()), "{msg:?}");
    assert!(
        pause.iter().all(|p| !p.root.is_empty() && !p.park.is_empty()),
        "{msg:?}"
    );

    let written = match &msg {
        ControlMessage::Cancel(e) => {
            let until = e.first().map_or(0, |c| c.until);
            assert!(e.iter().all(|c| c.until == until), "one until for a cancel: {msg:?}");
            let roots: Vec<&str> = e.iter().map(|c| c.root.as_str()).collect();
            serde_json::json!({"op": "cancel", "roots": roots, "until": until})
        }
        ControlMessage::Pause { holds: h, tasktypes: t } => {
            serde_json::json!({"op": "pause", "holds": holds(h), "tasktypes": types(t)})
        }
        ControlMessage::Resume { roots, tasktypes } => {
            serde_json::json!({"op": "resume", "roots": roots, "tasktypes": kinds(tasktypes)})
        }
        ControlMessage::Drain(d) => serde_json::json!({"op": "drain", "nodes": drains(d)}),
        ControlMessage::Undrain(n) => serde_json::json!({"op": "undrain", "nodes": n}),
        ControlMessage::Snapshot {
            cancel,
            pause,
            drain,
            tasktypes,
        } => {
            let list: Vec<_> = cancel
                .iter()
                .map(|c| serde_json::json!({"root": c.root, "until": c.until}))
                .collect();
            serde_json::json!({"op": "snapshot", "cancel": list, "pause": holds(pause), "drain": drains(drain),
                "tasktypes": types(tasktypes)})
        }
    };
    let again = parse(Some("application/json"), written.to_string().as_bytes());
    assert_eq!(again.as_ref(), Ok(&msg), "{written}");

    let set = ControlSet::default();
    let added = set.apply(&msg, NOW);
    let live: HashSet<&str> = cancel
        .iter()
        .filter(|c| c.until >= NOW)
        .map(|c| c.root.as_str())
        .collect();
    let parked: HashSet<&str> = pause
        .iter()
        .filter(|p| p.until >= NOW)
        .map(|p| p.root.as_str())
        .collect();
    let drained: HashSet<&str> = drain
        .iter()
        .filter(|d| d.until >= NOW)
        .map(|d| d.node.as_str())
        .collect();
    let typed: HashSet<&TaskType> = tasktypes
        .iter()
        .filter(|t| t.until >= NOW)
        .map(|t| &t.tasktype)
        .collect();
    if matches!(msg, ControlMessage::Resume { .. } | ControlMessage::Undrain(_)) {
        assert_eq!(added, 0, "nothing to resume in an empty set");
    } else {
        assert_eq!(
            added,
            live.len() + parked.len() + drained.len() + typed.len(),
            "{msg:?}"
        );
    }
    for d in drain {
        assert_eq!(set.is_drained(&d.node, NOW), drained.contains(d.node.as_str()), "{d:?}");
    }
    for c in cancel {
        assert_eq!(set.is_cancelled(&c.root, NOW), live.contains(c.root.as_str()), "{c:?}");
    }
    for p in pause {
        let expect = parked.contains(p.root.as_str()) && !live.contains(p.root.as_str());
        assert_eq!(set.parking(&p.root, "", None, NOW).is_some(), expect, "{p:?}");
    }
    for t in tasktypes {
        // A root no message names: only the type's pause parks it.
        let k = &t.tasktype;
        assert_eq!(
            set.parking("", &k.task, Some(&k.reply_to), NOW).is_some(),
            typed.contains(k),
            "{t:?}"
        );
    }
});
