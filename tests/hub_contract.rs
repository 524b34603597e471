//! The hub's API contract: the OpenAPI document checked into
//! docs/hub-openapi.json is the one generated from the handlers,
//! schemathesis finds no server error and no response off the spec, Swagger
//! UI is served from compiled-in assets, and bad requests get a 4xx with a
//! `detail` naming the field, never a 500 and never a half-written job.

mod common;

use common::hub::{HubSite, sqlite};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

#[test]
fn the_checked_in_openapi_document_is_the_generated_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["hub", "openapi"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/hub-openapi.json");
    let checked_in = std::fs::read_to_string(&path).unwrap();
    assert!(
        generated.trim() == checked_in.trim(),
        "docs/hub-openapi.json differs from the API: run `ferry hub openapi > docs/hub-openapi.json`"
    );
    let v: serde_json::Value = serde_json::from_str(&generated).unwrap();
    for p in [
        "/api/file/workflow/",
        "/api/jobs/{id}/cancel/",
        "/api/auth/clientkeys/{id}/",
        "/api/health/",
    ] {
        assert!(v["paths"][p].is_object(), "{p} is not in the document");
    }
}

fn schemathesis() -> bool {
    let have = Command::new("st")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    common::require(
        have,
        "the contract test needs schemathesis (`pip install schemathesis`; scripts/test installs it)",
    )
}

#[test]
fn schemathesis_finds_no_server_error_and_no_response_off_the_spec() {
    if !common::agent::broker_or_skip() || !schemathesis() {
        return;
    }
    let s = HubSite::running(sqlite(), 1, "");
    // Some data to read: a finished job with tasks.
    let root = s.data().join("t");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a"), b"a").unwrap();
    let w = s.workflow("dynamo.tasks.stat_paths", json!({}));
    let id = s.submit(&w, &root)["id"].as_i64().unwrap();
    s.wait_job(id, Duration::from_secs(60));
    let out = Command::new("st")
        .args(["run", &format!("{}/api/openapi.json", s.url), "-H"])
        .arg(format!("Authorization: Api-Key {}", s.key()))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,use_after_free,ensure_resource_availability",
            "--max-examples",
            "25",
            "--seed",
            "1",
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("passed"), "{text}");
    assert!(!s.log("hub.log").contains("panicked"), "{}", s.log("hub.log"));
}

/// A request (method, path, body, Authorization), the status it must get
/// and what its `detail` must say.
type Case<'a> = (
    &'a str,
    &'a str,
    Option<serde_json::Value>,
    Option<&'a str>,
    u16,
    &'a str,
);

#[test]
fn bad_requests_get_a_4xx_that_names_the_field_and_write_nothing() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let mut s = HubSite::new(sqlite(), 0, "max_body_bytes = 100000");
    s.start_hub();
    s.create_site(&s.site);
    let key = format!("Api-Key {}", s.key());
    let site = s.site.clone();
    let sub = |v: serde_json::Value| {
        let mut b = json!({"workflow": "premigrate", "site": site, "paths": ["/data/x"]});
        for (k, x) in v.as_object().unwrap() {
            b[k] = x.clone();
        }
        b
    };
    let big = json!({"workflow": "premigrate", "site": site, "paths": vec!["/x".repeat(100); 2000]});
    // A byte-range step cannot follow a walk.
    let ranged = s.workflow("dynamo.tasks.recall_bytes", json!({"remote_offset_end": 10}));
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/file/workflow/",
            Some(sub(json!({"workflow": ranged}))),
            Some(&key),
            400,
            "discovery: dynamo.tasks.recall_bytes is incompatible with the recursive discovery",
        ),
        ("POST", "/api/file/workflow/", None, Some(&key), 400, "JSON"),
        (
            "POST",
            "/api/file/workflow/",
            Some(json!([1])),
            Some(&key),
            400,
            "invalid type",
        ),
        (
            "POST",
            "/api/file/workflow/",
            Some(sub(json!({"colour": 1}))),
            Some(&key),
            400,
            "unknown field `colour`",
        ),
        (
            "POST",
            "/api/file/workflow/",
            Some(sub(json!({"paths": "/x"}))),
            Some(&key),
            400,
            "paths",
        ),
        (
            "POST",
            "/api/file/workflow/",
            Some(sub(json!({"workflow": "nope"}))),
            Some(&key),
            400,
            "workflow: no workflow",
        ),
        (
            "POST",
            "/api/file/workflow/",
            Some(sub(json!({"site": "nope"}))),
            Some(&key),
            400,
            "site: no site",
        ),
        (
            "POST",
            "/api/file/workflow/",
            Some(sub(json!({"queue": "fast"}))),
            Some(&key),
            400,
            "queue: site",
        ),
        (
            "POST",
            "/api/file/workflow/",
            Some(sub(json!({"paths": ["rel/x"]}))),
            Some(&key),
            400,
            "paths[0]: must be an absolute path",
        ),
        (
            "POST",
            "/api/file/workflow/",
            Some(sub(json!({"paths": []}))),
            Some(&key),
            400,
            "paths: at least one",
        ),
        (
            "POST",
            "/api/file/workflow/",
            Some(sub(json!({"fields": {"lock_level": 3}}))),
            Some(&key),
            400,
            "fields.lock_level",
        ),
        (
            "POST",
            "/api/file/workflow/",
            Some(sub(json!({"fields": {"nope": 1}}))),
            Some(&key),
            400,
            "fields.nope",
        ),
        (
            "POST",
            "/api/file/workflow/",
            Some(sub(json!({"discovery": "flat"}))),
            Some(&key),
            400,
            "discovery",
        ),
        (
            "POST",
            "/api/file/workflow/",
            Some(sub(json!({"job": 3}))),
            Some(&key),
            400,
            "job:",
        ),
        (
            "POST",
            "/api/file/workflow/",
            Some(big),
            Some(&key),
            413,
            "larger than 100000 bytes",
        ),
        (
            "POST",
            "/api/file/workflow/",
            Some(sub(json!({}))),
            None,
            401,
            "credentials were not provided",
        ),
        (
            "POST",
            "/api/file/workflow/",
            Some(sub(json!({}))),
            Some("Api-Key nope.nope"),
            401,
            "Invalid API key",
        ),
        (
            "POST",
            "/api/file/workflow/",
            Some(sub(json!({}))),
            Some("Bearer x.y.z"),
            401,
            "invalid or expired",
        ),
        (
            "POST",
            "/api/workflows/",
            Some(
                json!({"name": "w1", "label": "W", "filter_rules": [{"state": "all", "type": "blob", "action": [{"name": "dynamo.tasks.migrate"}]}]}),
            ),
            Some(&key),
            400,
            "filter_rules: rule 1: type must be",
        ),
        (
            "POST",
            "/api/workflows/",
            Some(
                json!({"name": "w1", "label": "W", "filter_rules": [{"state": "all", "type": "all", "action": [{"name": "dynamo.tasks.migrate", "x": "*missing"}]}]}),
            ),
            Some(&key),
            400,
            "runtime field `missing`",
        ),
        (
            "POST",
            "/api/workflows/",
            Some(json!({"name": "w1", "label": "W", "fields": [{"name": "n", "label": "N", "type": "float"}]})),
            Some(&key),
            400,
            "fields[0].type",
        ),
        (
            "POST",
            "/api/workflows/",
            Some(json!({"name": "w 1", "label": "W"})),
            Some(&key),
            400,
            "name:",
        ),
        (
            "POST",
            "/api/workflows/",
            Some(json!({"name": "premigrate", "label": "W"})),
            Some(&key),
            400,
            "exists",
        ),
        (
            "PATCH",
            "/api/sites/1/",
            Some(json!({"file_batch_size": 0})),
            Some(&key),
            400,
            "file_batch_size",
        ),
        (
            "PATCH",
            "/api/sites/1/",
            Some(json!({"exclude": ["["]})),
            Some(&key),
            400,
            "include/exclude",
        ),
        ("GET", "/api/jobs/?page=99", None, Some(&key), 404, "Invalid page"),
        (
            "GET",
            "/api/jobs/?state=sideways",
            None,
            Some(&key),
            400,
            "state: unknown job state",
        ),
        ("GET", "/api/jobs/?owner_ids=x", None, Some(&key), 400, "query:"),
        (
            "GET",
            "/api/jobs/?created_time_from=yesterday",
            None,
            Some(&key),
            400,
            "created_time_from",
        ),
        ("GET", "/api/jobs/abc/", None, Some(&key), 404, "No object"),
        ("GET", "/api/jobs/12345/", None, Some(&key), 404, "No job"),
        ("POST", "/api/jobs/12345/cancel/", None, Some(&key), 404, "No job"),
        ("GET", "/api/nowhere/", None, Some(&key), 404, "No endpoint"),
    ];
    for (method, path, body, auth, want, why) in cases {
        let (code, v) = s.call(method, path, body.as_ref(), auth);
        assert_eq!(code, want, "{method} {path} {body:?}: {v}");
        let detail = v["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no detail: {v}"));
        assert!(
            detail.contains(why),
            "{method} {path} {body:?}: {detail:?} lacks {why:?}"
        );
    }
    // Nothing was written by any of them.
    assert_eq!(s.api("GET", "/api/jobs/", None, 200)["count"], 0);
    assert_eq!(s.api("GET", "/api/tasks/", None, 200)["count"], 0);
    assert!(!s.log("hub.log").contains("panicked"));
    // A submission to a queue no node consumes is accepted and says so.
    let waiting = s.api("POST", "/api/file/workflow/", Some(sub(json!({}))), 201);
    assert_eq!(
        (&waiting["state"], &waiting["queue_nodes_online"]),
        (&json!("PENDING"), &json!(0)),
        "{waiting}"
    );
    assert!(s.log("hub.log").contains("no node online consumes its queue"));
    // Swagger UI, from compiled-in assets.
    let (code, _) = s.call("GET", "/api/docs/", None, None);
    assert_eq!(code, 200);
    let page = Command::new("curl")
        .args(["-s", &format!("{}/api/docs/", s.url)])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&page.stdout).contains("swagger"),
        "no Swagger UI"
    );
}

#[test]
fn the_hub_serves_https_with_a_configured_certificate() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("hub.crt"), certs.path().join("hub.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let tls = format!("tls_certificate = {}\ntls_key = {}", cert.display(), key.display());
    let mut s = HubSite::new(sqlite(), 0, &tls);
    s.url = s.url.replace("http://", "https://");
    s.start_hub();
    // The API answers over TLS with the configured certificate...
    let out = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(&cert)
        .args([
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            &format!("{}/api/health/", s.url),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    assert_eq!(s.api("GET", "/api/workflows/", None, 200)["count"], 11);
    // ...and not in clear.
    let plain = s.url.replace("https://", "http://");
    let out = Command::new("curl")
        .args([
            "-s",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{plain}/api/health/"),
        ])
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout), "200");
    assert!(s.log("hub.log").contains("scheme=\"https\""), "{}", s.log("hub.log"));
    // A key that is not the certificate's is refused at start, naming the file.
    let other = certs.path().join("other.key");
    Command::new("openssl")
        .args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"])
        .arg(&other)
        .status()
        .unwrap();
    let conf = s.dir.path().join("bad.conf");
    std::fs::write(
        &conf,
        format!(
            "[hub]\ndatabase = sqlite://{}/x.db\nkey_dir = {}/k\ntls_certificate = {}\ntls_key = {}\n",
            s.dir.path().display(),
            s.dir.path().display(),
            cert.display(),
            other.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["hub", "serve", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tls_certificate/tls_key") && err.contains("bad.conf"),
        "{err}"
    );
}

#[test]
fn a_workflow_is_validated_without_being_saved() {
    let mut s = common::hub::HubSite::new(common::hub::sqlite(), 0, "");
    s.start_hub();
    let before = s.api("GET", "/api/workflows/", None, 200)["count"].clone();
    let ok = serde_json::json!({"name": "v1", "label": "V", "discovery": "recursive", "enabled": false,
        "filter_rules": [{"state": "all", "type": "file", "action": [{"name": "dynamo.tasks.migrate", "max_tries": 3}]}]});
    let v = s.api("POST", "/api/workflows/validate/", Some(ok), 200);
    assert_eq!(v["is_valid"], true, "{v}");
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    assert_eq!(v["warnings"][0]["name"], "enabled", "{v}");
    for (bad, field) in [
        (serde_json::json!({"label": "V"}), "name"),
        (
            serde_json::json!({"name": "v2", "label": "V", "filter_rules": [{"state": "all", "type": "nope", "action": []}]}),
            "filter_rules",
        ),
        (serde_json::json!({"name": "v3", "label": "V", "colour": 1}), "colour"),
    ] {
        let v = s.api("POST", "/api/workflows/validate/", Some(bad.clone()), 200);
        assert_eq!(v["is_valid"], false, "{bad}: {v}");
        let name = v["errors"][0]["name"].as_str().unwrap();
        let text = format!("{name}: {}", v["errors"][0]["description"]);
        assert!(text.contains(field), "{bad}: {v}");
    }
    assert_eq!(
        s.api("GET", "/api/workflows/", None, 200)["count"],
        before,
        "validate saved something"
    );
}
