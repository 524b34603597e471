//! What the hub reads from its results queue, which any agent (or anyone
//! with the broker's password) writes: result documents, progress
//! reports and a collecting snapdiff's `EVENTS` documents. None of it
//! panics on any bytes; the changes of an events document that read as
//! changes are planned, each given exactly one decision.
#![no_main]

use ferry::hub::bisync::{Event, plan};
use ferry::hub::ingest::{parse, parse_events, parse_progress};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse(data);
    let _ = parse_progress(data);
    if let Some(doc) = parse_events(data) {
        // Alternate sides, so conflicts between the two occur.
        let events: Vec<Event> = doc
            .events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Event::parse(i % 2, e))
            .collect();
        let decided = plan(&events, &Default::default());
        assert_eq!(decided.len(), events.len());
    }
});
