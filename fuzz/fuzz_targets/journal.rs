//! The event journal's parsers never panic: a journal line (the file is
//! outside input: any process running as root could have written it) and
//! a fanotify event buffer. An accepted line encodes back to the same
//! line; an accepted event buffer's handles keep their bytes.
#![no_main]

use ferry::snapdiff::journal::Line;
use ferry::sys::fanotify::parse_events;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(l) = Line::parse(data) {
        let text = l.encode();
        assert!(text.ends_with('\n'));
        assert_eq!(Line::parse(text.trim_end_matches('\n').as_bytes()).unwrap(), l);
    }
    if let Ok(events) = parse_events(data) {
        for e in events {
            if let Some(t) = &e.target {
                assert!(t.handle.len() <= data.len());
                let _ = t.ino();
            }
        }
    }
});
