//! The manifest reader never panics or loops on damaged input: it either
//! reads every section (checksums, order, the index and counts all right)
//! or returns an error. Whatever it accepts, written again, reads back as
//! the same header, records and tombstones; a jump to any inode it holds
//! lands on that inode; and `ferry manifest --records` (path rebuilding,
//! which must survive parent cycles and orphans) returns without panicking.
#![no_main]

use ferry::snapdiff::inspect::{DumpMode, dump};
use ferry::snapdiff::manifest::{Header, ManifestReader, ManifestWriter, Section};
use ferry::snapdiff::record::Record;
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;

type Read = (Header, Vec<Record>, Vec<Record>, Vec<(u64, u64)>);

fn read_all(data: &[u8]) -> Option<Read> {
    let mut rd = ManifestReader::new(Cursor::new(data)).ok()?;
    let mut dirs = Vec::new();
    while let Some(r) = rd.next_dir().ok()? {
        dirs.push(r);
    }
    let mut all = Vec::new();
    while let Some(r) = rd.next_entry().ok()? {
        all.push(r);
    }
    let mut tombs = Vec::new();
    while let Some(t) = rd.next_tombstone().ok()? {
        tombs.push(t);
    }
    Some((rd.header().clone(), dirs, all, tombs))
}

fuzz_target!(|data: &[u8]| {
    let _ = dump(Cursor::new(data), std::io::sink(), DumpMode::Records);
    let Some((header, dirs, all, tombs)) = read_all(data) else {
        return;
    };
    let mut w = ManifestWriter::new(Vec::new(), &header).expect("header that was read can be written");
    for r in &dirs {
        w.push(Section::Dirs, r).expect("accepted dir record is writable");
    }
    for r in &all {
        w.push(Section::Entries, r).expect("accepted record is writable");
    }
    for &t in &tombs {
        w.tombstone(t).expect("accepted tombstone is writable");
    }
    let (bytes, counts) = w.finish().unwrap();
    assert_eq!(
        (counts.dirs, counts.entries, counts.tombstones),
        (dirs.len() as u64, all.len() as u64, tombs.len() as u64)
    );
    let (h2, d2, a2, t2) = read_all(&bytes).expect("re-written manifest reads back");
    assert_eq!(h2, header);
    assert_eq!(d2, dirs);
    assert_eq!(a2, all);
    assert_eq!(t2, tombs);
    // A jump lands on the block holding the key; reading on finds it.
    if let Some(target) = all.get(all.len() / 2) {
        let mut rd = ManifestReader::new(Cursor::new(&bytes[..])).unwrap();
        rd.skip_to(target.key()).unwrap();
        let mut r = Record::default();
        while rd.read_entry(&mut r).unwrap() && r.key() < target.key() {}
        assert_eq!(r.key(), target.key());
    }
});
