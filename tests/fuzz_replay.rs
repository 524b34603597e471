//! Every fuzz target's regression inputs (`fuzz/regressions/<target>/`,
//! inputs that once crashed) and seeds (`fuzz/seeds/<target>/`), replayed
//! in the ordinary test build: what `FUZZ_SECONDS=0 scripts/fuzz` checks,
//! without the separate instrumented build cargo-fuzz makes. Each file of
//! `fuzz/fuzz_targets/` is a module here, its `libfuzzer_sys` the stand-in
//! in `tests/fuzz-replay/`, which turns the target into `run(&[u8])`.
//! Fuzzing itself (finding new inputs) is `scripts/fuzz`.

use std::path::{Path, PathBuf};

#[allow(unused_attributes)] // the target's #![no_main], for libFuzzer's build
#[path = "../fuzz/fuzz_targets/batcher.rs"]
mod batcher;
#[allow(unused_attributes)] // the target's #![no_main], for libFuzzer's build
#[path = "../fuzz/fuzz_targets/celery_message.rs"]
mod celery_message;
#[allow(unused_attributes)] // the target's #![no_main], for libFuzzer's build
#[path = "../fuzz/fuzz_targets/config_file.rs"]
mod config_file;
#[allow(unused_attributes)] // the target's #![no_main], for libFuzzer's build
#[path = "../fuzz/fuzz_targets/control_message.rs"]
mod control_message;
#[allow(unused_attributes)] // the target's #![no_main], for libFuzzer's build
#[path = "../fuzz/fuzz_targets/glob_filter.rs"]
mod glob_filter;
#[allow(unused_attributes)] // the target's #![no_main], for libFuzzer's build
#[path = "../fuzz/fuzz_targets/hub_request.rs"]
mod hub_request;
#[allow(unused_attributes)] // the target's #![no_main], for libFuzzer's build
#[path = "../fuzz/fuzz_targets/hub_results.rs"]
mod hub_results;
#[allow(unused_attributes)] // the target's #![no_main], for libFuzzer's build
#[path = "../fuzz/fuzz_targets/journal.rs"]
mod journal;
#[allow(unused_attributes)] // the target's #![no_main], for libFuzzer's build
#[path = "../fuzz/fuzz_targets/manifest_decoder.rs"]
mod manifest_decoder;
#[allow(unused_attributes)] // the target's #![no_main], for libFuzzer's build
#[path = "../fuzz/fuzz_targets/ops_inputs.rs"]
mod ops_inputs;
#[allow(unused_attributes)] // the target's #![no_main], for libFuzzer's build
#[path = "../fuzz/fuzz_targets/path_object.rs"]
mod path_object;
#[allow(unused_attributes)] // the target's #![no_main], for libFuzzer's build
#[path = "../fuzz/fuzz_targets/policy_list.rs"]
mod policy_list;
#[allow(unused_attributes)] // the target's #![no_main], for libFuzzer's build
#[path = "../fuzz/fuzz_targets/s3_upload_list.rs"]
mod s3_upload_list;
#[allow(unused_attributes)] // the target's #![no_main], for libFuzzer's build
#[path = "../fuzz/fuzz_targets/site_inputs.rs"]
mod site_inputs;
#[allow(unused_attributes)] // the target's #![no_main], for libFuzzer's build
#[path = "../fuzz/fuzz_targets/surrogate_codec.rs"]
mod surrogate_codec;

/// The inputs kept for `target`, regressions first, each set in name order.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut all = Vec::new();
    for set in ["regressions", "seeds"] {
        let Ok(dir) = std::fs::read_dir(fuzz.join(set).join(target)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = dir.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
        files.sort();
        all.extend(files);
    }
    all
}

/// Runs `target` on each of its inputs; fails naming every input that
/// panics (each is run, so one failure does not hide another) or that
/// never reaches the target's body (a typed target's bytes that do not
/// decode: a regression or seed that tests nothing).
fn replay(target: &str, run: fn(&[u8]) -> bool) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "{target}: no regression input or seed under fuzz/");
    let (mut panicked, mut unused) = (Vec::new(), Vec::new());
    for p in &inputs {
        let data = std::fs::read(p).unwrap();
        match std::panic::catch_unwind(|| run(&data)) {
            Ok(true) => {}
            Ok(false) => unused.push(p.display().to_string()),
            Err(_) => panicked.push(p.display().to_string()),
        }
    }
    assert!(
        panicked.is_empty() && unused.is_empty(),
        "{target}, of {} inputs: these panic: {panicked:?}; these do not decode: {unused:?}",
        inputs.len()
    );
}

/// One test per target.
mod replay {
    #[test]
    fn batcher() {
        super::replay("batcher", super::batcher::run);
    }
    #[test]
    fn celery_message() {
        super::replay("celery_message", super::celery_message::run);
    }
    #[test]
    fn config_file() {
        super::replay("config_file", super::config_file::run);
    }
    #[test]
    fn control_message() {
        super::replay("control_message", super::control_message::run);
    }
    #[test]
    fn glob_filter() {
        super::replay("glob_filter", super::glob_filter::run);
    }
    #[test]
    fn hub_request() {
        super::replay("hub_request", super::hub_request::run);
    }
    #[test]
    fn hub_results() {
        super::replay("hub_results", super::hub_results::run);
    }
    #[test]
    fn journal() {
        super::replay("journal", super::journal::run);
    }
    #[test]
    fn manifest_decoder() {
        super::replay("manifest_decoder", super::manifest_decoder::run);
    }
    #[test]
    fn ops_inputs() {
        super::replay("ops_inputs", super::ops_inputs::run);
    }
    #[test]
    fn path_object() {
        super::replay("path_object", super::path_object::run);
    }
    #[test]
    fn policy_list() {
        super::replay("policy_list", super::policy_list::run);
    }
    #[test]
    fn s3_upload_list() {
        super::replay("s3_upload_list", super::s3_upload_list::run);
    }
    #[test]
    fn site_inputs() {
        super::replay("site_inputs", super::site_inputs::run);
    }
    #[test]
    fn surrogate_codec() {
        super::replay("surrogate_codec", super::surrogate_codec::run);
    }
}
