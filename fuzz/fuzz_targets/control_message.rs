//! The control channel's parser (a hub's cancel and snapshot messages)
//! never panics on any content type and body. What it accepts has only
//! non-empty root ids and, written back as JSON, parses to the same
//! message; applied to an empty cancel set it cancels exactly the roots
//! whose `until` has not passed, and counts each of them once.
#![no_main]

use ferry::agent::control::{CancelSet, ControlMessage, parse};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;

/// The unix time the set is asked at.
const NOW: i64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    // Layout: <flags byte> <body>; the flags choose the content type.
    let Some((&flags, body)) = data.split_first() else { return };
    let content_type = match flags & 3 {
        0 => None,
        1 => Some("application/json"),
        2 => Some("application/x-python-serialize"),
        _ => Some(""),
    };
    let Ok(msg) = parse(content_type, body) else { return };
    assert!(matches!(content_type, None | Some("application/json")));
    let entries = msg.entries();
    assert!(entries.iter().all(|c| !c.root.is_empty()), "{msg:?}");

    let written = match &msg {
        ControlMessage::Cancel(e) => {
            let until = e.first().map_or(0, |c| c.until);
            assert!(e.iter().all(|c| c.until == until), "one until for a cancel: {msg:?}");
            let roots: Vec<&str> = e.iter().map(|c| c.root.as_str()).collect();
            serde_json::json!({"op": "cancel", "roots": roots, "until": until})
        }
        ControlMessage::Snapshot(e) => {
            let list: Vec<_> = e.iter().map(|c| serde_json::json!({"root": c.root, "until": c.until})).collect();
            serde_json::json!({"op": "snapshot", "cancel": list})
        }
    };
    let again = parse(Some("application/json"), written.to_string().as_bytes());
    assert_eq!(again.as_ref(), Ok(&msg), "{written}");

    let set = CancelSet::default();
    let added = set.apply(&msg, NOW);
    let live: HashSet<&str> = entries.iter().filter(|c| c.until >= NOW).map(|c| c.root.as_str()).collect();
    assert_eq!(added, live.len(), "{msg:?}");
    for c in entries {
        assert_eq!(set.is_cancelled(&c.root, NOW), live.contains(c.root.as_str()), "{c:?}");
    }
});
