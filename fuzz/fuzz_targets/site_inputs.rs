//! What one site reads that another site or an admin wrote: a `path_map`
//! setting, and the arguments of a browse. Neither panics on any bytes;
//! an accepted map turns a path into another site's name and back to the
//! same path, whichever way it maps (each path maps one way only), and
//! accepted browse arguments pass their own check or name the one at
//! fault.
#![no_main]

use ferry::config::PathMap;
use ferry::ops::browse::BrowseArgs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `<path_map text>\0<a path>`.
    let (text, path) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"/"[..]),
    };
    if let Ok(text) = std::str::from_utf8(text)
        && let Ok(map) = PathMap::parse(text)
    {
        if let Some(wire) = map.to_wire(path) {
            assert_eq!(map.to_local(&wire).as_deref(), Some(path), "to_wire then to_local");
        }
        if let Some(local) = map.to_local(path) {
            assert_eq!(map.to_wire(&local).as_deref(), Some(path), "to_local then to_wire");
        }
    }
    if let Ok(args) = serde_json::from_slice::<BrowseArgs>(data) {
        let _ = args.check();
    }
});
