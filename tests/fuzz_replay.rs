//! Every fuzz target's regression inputs (`fuzz/regressions/<target>/`,
//! inputs that once crashed) and seeds (`fuzz/seeds/<target>/`), replayed
//! in the ordinary test build: what `FUZZ_SECONDS=0 scripts/fuzz` checks,
//! without the separate instrumented build cargo-fuzz makes. Each file of
//! `fuzz/fuzz_targets/` is a module here, its `libfuzzer_sys` the stand-in
//! in `tests/fuzz-replay/`, which turns the target into `run(&[u8])`.
//! Fuzzing itself (finding new inputs) is `scripts/fuzz`.

use std::path::{Path, PathBuf};

/// Declares each target's module (its file in `fuzz/fuzz_targets/`), a
/// replay test for it in `replay::`, and [`TARGETS`], their names.
macro_rules! targets {
    ($($t:ident: $file:literal,)*) => {
        $(
            #[allow(unused_attributes)] // the target's #![no_main], for libFuzzer's build
            #[path = $file]
            mod $t;
        )*

        /// Every target listed.
        const TARGETS: &[&str] = &[$(stringify!($t)),*];

        /// One test per target.
        mod replay {
            $(
                #[test]
                fn $t() {
                    super::replay(stringify!($t), super::$t::run);
                }
            )*
        }
    };
}

targets! {
    batcher: "../fuzz/fuzz_targets/batcher.rs",
    celery_message: "../fuzz/fuzz_targets/celery_message.rs",
    config_file: "../fuzz/fuzz_targets/config_file.rs",
    control_message: "../fuzz/fuzz_targets/control_message.rs",
    glob_filter: "../fuzz/fuzz_targets/glob_filter.rs",
    hub_request: "../fuzz/fuzz_targets/hub_request.rs",
    hub_results: "../fuzz/fuzz_targets/hub_results.rs",
    journal: "../fuzz/fuzz_targets/journal.rs",
    manifest_decoder: "../fuzz/fuzz_targets/manifest_decoder.rs",
    ops_inputs: "../fuzz/fuzz_targets/ops_inputs.rs",
    path_object: "../fuzz/fuzz_targets/path_object.rs",
    policy_list: "../fuzz/fuzz_targets/policy_list.rs",
    s3_upload_list: "../fuzz/fuzz_targets/s3_upload_list.rs",
    site_inputs: "../fuzz/fuzz_targets/site_inputs.rs",
    surrogate_codec: "../fuzz/fuzz_targets/surrogate_codec.rs",
}

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

/// A target added to `fuzz/fuzz_targets/` and not listed above would go
/// unreplayed (`scripts/fuzz` replays whatever `cargo fuzz list` shows).
#[test]
fn every_fuzz_target_is_replayed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".rs").map(str::to_string))
        .collect();
    files.sort();
    let mut listed: Vec<&str> = TARGETS.to_vec();
    listed.sort();
    assert_eq!(files, listed);
}
