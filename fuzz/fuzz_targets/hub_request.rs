//! The hub's reading of requests from outside: a submission body
//! (`POST /api/file/workflow/`) and a workflow's runtime fields and filter
//! rules (`POST /api/workflows/`). None of it panics on any bytes; a body
//! that reads as a submission has paths that read as path objects or fail
//! with a reason; fields and rules that are accepted compile with the
//! agent's rule compiler once every field has a value.
#![no_main]

use ferry::hub::api::{Submission, parse_body};
use ferry::hub::workflows::{Known, compile, parse_fields, parse_rules, resolve_fields};
use ferry::task::PathObject;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = parse_body::<Submission>(data) {
        for p in &s.paths {
            let _ = PathObject::parse(p.get().as_bytes());
        }
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(fields) = parse_fields(v.get("fields").unwrap_or(&serde_json::json!([]))) else {
        return;
    };
    let Ok(rules) = parse_rules(v.get("filter_rules").unwrap_or(&serde_json::json!([])), &fields) else {
        return;
    };
    let given = v.get("values").and_then(|x| x.as_object()).cloned().unwrap_or_default();
    let known = Known {
        sites: &["s1".into()],
        queues: &["default".into()],
    };
    if let Ok(mut values) = resolve_fields(&fields, &given, &known) {
        // Every declared field with some value: what parse_rules checked.
        for f in &fields {
            values.entry(f.name.clone()).or_insert(serde_json::json!("v"));
        }
        compile(&rules, &values, "s1", "default", None).expect("rules accepted at write time compile at submit");
    }
});
