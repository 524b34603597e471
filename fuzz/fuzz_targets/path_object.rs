//! `PathObject::parse` never panics; whatever it accepts, `write_json`
//! writes as one line of valid JSON that parses back to the same path,
//! source and extra keys/values.
#![no_main]

use ferry::task::PathObject;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Ok(obj) = PathObject::parse(data) else {
        return;
    };
    assert!(!obj.path.is_empty() && !obj.path.contains(&0));
    let mut out = Vec::new();
    obj.write_json(&mut out);
    assert!(
        serde_json::from_slice::<&RawValue>(&out).is_ok(),
        "write_json wrote invalid JSON: {}",
        String::from_utf8_lossy(&out)
    );
    let back = PathObject::parse(&out)
        .unwrap_or_else(|e| panic!("re-parse of {:?} failed: {e}", String::from_utf8_lossy(&out)));
    assert_eq!(back.path, obj.path);
    assert_eq!(back.source, obj.source);
    let pairs = |o: &PathObject| -> Vec<(String, String)> {
        o.extra.iter().map(|(k, v)| (k.clone(), v.get().to_string())).collect()
    };
    assert_eq!(pairs(&back), pairs(&obj));
    // A second trip is byte-for-byte stable.
    let mut again = Vec::new();
    back.write_json(&mut again);
    assert_eq!(again, out);
    // "one line of JSON (without the newline)"
    assert!(
        !out.contains(&b'\n'),
        "write_json wrote a raw newline: {:?}",
        String::from_utf8_lossy(&out)
    );
});
