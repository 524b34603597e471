//! The agent's decoder of task messages never panics on what a broker may
//! deliver: any headers, content type, compression and body. What it
//! accepts yields keyword arguments that re-read as JSON, and a child task
//! built from it decodes again with the same lineage. Workflow filter rules
//! in a body compile or fail with a reason, never a panic, and so does
//! reading a message into the agent's typed request.
#![no_main]

use ferry::agent::celery::{HeaderValue, Incoming, child_task, decode};
use ferry::agent::tasks::Request;
use ferry::agent::tasks::rules::{Context, Routing, RuleSpec, compile};
use libfuzzer_sys::fuzz_target;

fn header(v: &serde_json::Value) -> HeaderValue {
    match v {
        serde_json::Value::Null => HeaderValue::Null,
        serde_json::Value::Bool(b) => HeaderValue::Bool(*b),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map_or(HeaderValue::Float(n.as_f64().unwrap_or(0.0)), HeaderValue::Int),
        serde_json::Value::String(s) => HeaderValue::Str(s.clone()),
        serde_json::Value::Array(a) => HeaderValue::List(a.iter().map(header).collect()),
        serde_json::Value::Object(o) => HeaderValue::Table(o.iter().map(|(k, v)| (k.clone(), header(v))).collect()),
    }
}

fuzz_target!(|data: &[u8]| {
    // Layout: <flags byte> <headers JSON> 0xFF <body>.
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (head, body) = match rest.iter().position(|&b| b == 0xFF) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let mut headers: Vec<(String, HeaderValue)> =
        match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(head) {
            Ok(m) => m.iter().map(|(k, v)| (k.clone(), header(v))).collect(),
            Err(_) => vec![
                ("task".into(), HeaderValue::Str("dynamo.tasks.migrate".into())),
                ("id".into(), HeaderValue::Str("f".into())),
            ],
        };
    if flags & 1 != 0 {
        headers.push(("compression".into(), HeaderValue::Str("application/x-gzip".into())));
    }
    let content_type = match flags >> 1 & 3 {
        0 => None,
        1 => Some("application/json"),
        2 => Some("application/x-python-serialize"),
        _ => Some(""),
    };
    let m = Incoming {
        correlation_id: None,
        reply_to: (flags & 8 != 0).then_some("r"),
        content_type,
        content_encoding: None,
        headers: &headers,
        body,
    };
    if let Ok(msg) = decode(&m, 1 << 20) {
        // Reading the message into a typed request fails with a reason or
        // succeeds; it never panics.
        let _ = Request::decode(&msg);
        let kw = msg.kwargs_object(&[]);
        assert!(
            serde_json::from_str::<Box<serde_json::value::RawValue>>(&kw).is_ok(),
            "{kw}"
        );
        let out = child_task("c".into(), "dynamo.tasks.stat_paths", &kw, &msg, &msg.chain, "fuzz@h");
        let again = decode(
            &Incoming {
                headers: &out.headers,
                body: &out.body,
                ..Default::default()
            },
            usize::MAX,
        )
        .expect("ferry's own child messages decode");
        assert_eq!(again.parent_id.as_deref(), Some(msg.id.as_str()));
        assert_eq!(again.root_id, msg.root_id);
        assert_eq!(again.chain.len(), msg.chain.len());
        if let Some(rules) = msg.kwarg("filter_rules")
            && let Ok(specs) = serde_json::from_str::<Vec<RuleSpec>>(rules.get())
        {
            let routing = Routing {
                site: "s".into(),
                queue: "default".into(),
            };
            let _ = compile(&specs, &Context::default(), &routing);
        }
    }
});
