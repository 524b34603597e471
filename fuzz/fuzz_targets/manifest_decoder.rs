//! The manifest reader never panics or loops on damaged input: it either
//! reads every record (checksums, order and counts all right) or returns an
//! error. Whatever it accepts, written again, reads back as the same
//! records, and `ferry manifest --records` (path rebuilding, which must
//! survive parent cycles and orphans) returns without panicking.
#![no_main]

use ferry::snapdiff::inspect::{DumpMode, dump};
use ferry::snapdiff::manifest::{ManifestReader, ManifestWriter, Section};
use ferry::snapdiff::record::Record;
use libfuzzer_sys::fuzz_target;

fn read_all(data: &[u8]) -> Option<(ferry::snapdiff::manifest::Header, Vec<Record>, Vec<Record>)> {
    let mut rd = ManifestReader::new(data).ok()?;
    let mut dirs = Vec::new();
    while let Some(r) = rd.next_dir().ok()? {
        dirs.push(r.clone());
    }
    let mut all = Vec::new();
    while let Some(r) = rd.next_entry().ok()? {
        all.push(r.clone());
    }
    Some((rd.header().clone(), dirs, all))
}

fuzz_target!(|data: &[u8]| {
    let _ = dump(data, std::io::sink(), DumpMode::Records);
    let Some((header, dirs, all)) = read_all(data) else {
        return;
    };
    let mut w = ManifestWriter::new(Vec::new(), &header).expect("header that was read can be written");
    for r in &dirs {
        w.push(Section::Dirs, r).expect("accepted dir record is writable");
    }
    for r in &all {
        w.push(Section::Entries, r).expect("accepted record is writable");
    }
    let (bytes, counts) = w.finish().unwrap();
    assert_eq!(counts, [dirs.len() as u64, all.len() as u64]);
    let (h2, d2, a2) = read_all(&bytes).expect("re-written manifest reads back");
    assert_eq!(h2, header);
    assert_eq!(d2, dirs);
    assert_eq!(a2, all);
});
