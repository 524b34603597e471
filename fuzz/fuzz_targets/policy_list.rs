//! The GPFS output parsers never panic: `mmapplypolicy` list records,
//! `-Y` tables and percent-decoding. An accepted list record has an
//! absolute path without NUL and a mode with a file type; re-encoding its
//! path with escapes for every byte decodes back to the same bytes.
#![no_main]

use ferry::gpfs::policy::{parse_list_line, parse_y, percent_decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_y(data, "mmlsfileset");
    let _ = parse_y(data, "mmlssnapshot");
    if let Ok(r) = parse_list_line(data) {
        assert!(r.path.starts_with(b"/") && !r.path.contains(&0));
        assert_ne!(r.mode & libc::S_IFMT, 0);
        assert!(r.mtime.nsec < 1_000_000_000 && r.ctime.nsec < 1_000_000_000);
        let encoded: String = r.path.iter().map(|b| format!("%{b:02x}")).collect();
        assert_eq!(percent_decode(encoded.as_bytes()).unwrap(), r.path);
    }
});
