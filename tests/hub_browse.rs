//! `GET /api/file/`: the hub asks the site's agent to list a directory on
//! its `default#interactive` queue and serves the page, as the seed's file
//! browser does.

mod common;

use common::hub::{HubSite, sqlite};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

#[test]
fn a_site_lists_a_directory_page_by_page_through_the_hub() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let s = HubSite::running(sqlite(), 1, "");
    let d = s.data().join("browse");
    std::fs::create_dir(&d).unwrap();
    for i in 0..25 {
        std::fs::write(d.join(format!("f{i:02}")), vec![b'x'; i]).unwrap();
    }
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(d.join(".hidden"), "").unwrap();
    std::fs::write(d.join(std::ffi::OsStr::from_bytes(b"z\xff")), "").unwrap();
    let base = format!("/api/file/?site={}&path={}", s.site, d.display());

    let v = s.api("GET", &base, None, 200);
    assert_eq!(v["type"], "directory", "{v}");
    assert_eq!(v["path"], d.to_str().unwrap());
    assert_eq!(v["site"], s.site.as_str());
    assert_eq!(v["children"]["count"], 27, "the hidden entry is left out: {v}");
    let r = v["children"]["results"].as_array().unwrap();
    assert_eq!(r.len(), 20);
    assert_eq!((r[0]["name"].as_str(), r[5]["size"].as_u64()), (Some("f00"), Some(5)));
    assert_eq!(r[0]["status"], "online");
    assert!(v["children"]["previous"].is_null());
    let next = v["children"]["next"].as_str().unwrap();
    assert!(next.contains("page=2"), "{next}");

    // The last page, with details and the restricted entries: the
    // non-UTF-8 name comes back escaped, as every path in the API does.
    let url = format!("{base}&page=2&details=true&restricted=true");
    let raw = s.raw(&url);
    assert!(raw.contains("\"name\":\"z\\udcff\""), "{raw}");
    let v: serde_json::Value = serde_json::from_str(&raw.replace("\\udcff", "?")).unwrap();
    assert_eq!(v["children"]["count"], 28);
    let names: Vec<&str> = v["children"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["name"].as_str())
        .collect();
    assert_eq!(names[0], "f19");
    assert!(names.contains(&"sub"));
    assert!(v["children"]["results"][0]["mtime"].as_str().unwrap().ends_with('Z'));
    assert!(v["children"]["next"].is_null());

    // What cannot be listed says why.
    let missing = format!("/api/file/?site={}&path={}", s.site, d.join("nope").display());
    let e = s.api("GET", &missing, None, 404);
    assert!(e["detail"].as_str().unwrap().contains("No such file"), "{e}");
    let e = s.api("GET", &format!("{base}&page_size=7"), None, 400);
    assert!(e["detail"].as_str().unwrap().starts_with("page_size:"), "{e}");
    s.api("GET", "/api/file/?site=nosuchsite&path=/x", None, 404);
    let e = s.api("GET", &format!("/api/file/?site={}", s.site), None, 400);
    assert!(e["detail"].as_str().unwrap().starts_with("path:"), "{e}");
    // A site the hub knows with no agent to answer: at once, not after
    // the timeout.
    s.create_site("ghost");
    let t0 = std::time::Instant::now();
    let e = s.api("GET", "/api/file/?site=ghost&path=/x", None, 503);
    assert!(e["detail"].as_str().unwrap().contains("no agent of site ghost"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5));
}
