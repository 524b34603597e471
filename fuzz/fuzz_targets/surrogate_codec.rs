//! The surrogateescape codec: `decode(encode(b)) == b` for any bytes, the
//! encoding is UTF-8 and a JSON string literal, and `decode` never panics on
//! any text, agreeing with serde_json wherever serde_json accepts the text.
#![no_main]

use ferry::task::surrogate;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    // Any bytes round-trip.
    let mut enc = Vec::new();
    surrogate::encode(data, &mut enc);
    let text = std::str::from_utf8(&enc).expect("encoding is UTF-8");
    let raw: &RawValue = serde_json::from_str(text).expect("encoding is JSON");
    assert_eq!(raw.get(), text);
    assert!(text.starts_with('"'));
    assert!(
        !text.bytes().any(|b| b < 0x20 || b == 0x7f),
        "raw control byte in {text:?}"
    );
    assert_eq!(surrogate::decode(text).as_deref(), Ok(data));
    // Valid UTF-8 is plain JSON text: serde_json reads the same string.
    if let Ok(s) = std::str::from_utf8(data) {
        assert_eq!(serde_json::from_str::<String>(text).unwrap(), s);
    }

    // Any text: decode never panics, as is and quoted.
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for lit in [s.to_string(), format!("\"{s}\"")] {
        let got = surrogate::decode(&lit);
        // Whatever serde_json reads as a string (it refuses lone
        // surrogates), decode reads identically.
        if lit.starts_with('"')
            && lit.ends_with('"')
            && let Ok(want) = serde_json::from_str::<String>(&lit)
        {
            assert_eq!(got.as_deref(), Ok(want.as_bytes()), "{lit:?}");
        }
        // Whatever decode accepts is a JSON string literal.
        if let Ok(bytes) = got {
            assert!(
                serde_json::from_str::<&RawValue>(&lit).is_ok(),
                "decode accepted non-JSON {lit:?}"
            );
            // And encoding the result decodes back to it.
            let mut again = Vec::new();
            surrogate::encode(&bytes, &mut again);
            assert_eq!(surrogate::decode(std::str::from_utf8(&again).unwrap()), Ok(bytes));
        }
    }
});
