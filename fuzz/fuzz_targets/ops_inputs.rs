//! The parsers of what operations read from outside never panic: ferry's
//! state xattr (anyone may set a user xattr), object metadata from a store
//! (JSON documents and sidecar pointers, in a directory target's xattr or
//! base64 in S3), and path lists from stdin in both formats. What they accept re-encodes to an equal value, and every
//! path a list yields is absolute with no `.` or `..` component, so it maps
//! to a valid object key or a clear key error.
#![no_main]

use ferry::endpoint::key::{KEY_MAX, PLAIN_MAX, key_for};
use ferry::endpoint::{MetaDoc, ObjectMeta};
use ferry::ops::xattrs::HsmState;
use ferry::task::input::{InputFormat, PathReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = HsmState::decode(data) {
        assert_eq!(HsmState::decode(s.encode().as_bytes()).unwrap(), s);
    }
    if let Ok(m) = ObjectMeta::from_json(data) {
        assert_eq!(ObjectMeta::from_json(m.to_json().as_bytes()).unwrap(), m);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(m) = MetaDoc::from_header(text)
    {
        assert_eq!(MetaDoc::from_header(&m.to_header()).unwrap(), m);
    }
    if let Ok(m) = MetaDoc::from_json(data) {
        assert_eq!(MetaDoc::from_json(m.to_json().as_bytes()).unwrap(), m);
    }
    for format in [InputFormat::JsonLines, InputFormat::Nul] {
        let mut r = PathReader::new(data, format, "fuzz").unwrap();
        while let Some(entry) = r.next_entry().unwrap() {
            let Ok(obj) = entry else { continue };
            assert!(obj.path.starts_with(b"/") && !obj.path.contains(&0));
            assert!(!obj.path.split(|&b| b == b'/').any(|c| c == b"." || c == b".."));
            if let Ok(k) = key_for(b"/", "p", &obj.path) {
                assert!(object_store::path::Path::parse(&k.key).is_ok());
                assert!(k.key.len() <= KEY_MAX);
                assert!(k.key.split('/').all(|c| c.len() <= PLAIN_MAX));
            }
        }
    }
});
