//! What `libfuzzer-sys` gives a fuzz target, for ferry's ordinary test
//! build: `tests/fuzz_replay.rs` compiles each file of `fuzz/fuzz_targets/`
//! as a module, with this crate under the name `libfuzzer_sys`, and calls
//! the `run` function [`fuzz_target!`] makes of it on every regression
//! input and seed. So `cargo test` replays what `scripts/fuzz` with
//! `FUZZ_SECONDS=0` replays, without the separate instrumented build of
//! ferry that cargo-fuzz needs (ten minutes of the suite's time on two
//! cores, docs/decisions.md).

pub use arbitrary;

/// Makes a fuzz target's body the function `pub fn run(bytes: &[u8]) ->
/// bool` of the module that holds it, true when the body ran. A typed
/// input is decoded as libfuzzer-sys 0.4 decodes it (`size_hint` checked
/// first, then `arbitrary_take_rest`), and bytes that do not decode are
/// passed over (false), as libFuzzer passes over them, so a regression
/// input reaches the body as the same value.
#[macro_export]
macro_rules! fuzz_target {
    (|$bytes:ident: &[u8]| $body:expr) => {
        /// Runs the target on one input.
        pub fn run(bytes: &[u8]) -> bool {
            // A function of its own, as in libfuzzer-sys: the body may
            // `return`.
            fn body($bytes: &[u8]) {
                $body
            }
            body(bytes);
            true
        }
    };
    (|$data:ident: $dty:ty| $body:expr) => {
        /// Runs the target on one input (decoded as libFuzzer would).
        pub fn run(bytes: &[u8]) -> bool {
            use $crate::arbitrary::{Arbitrary, Unstructured};
            fn body($data: $dty) {
                $body
            }
            if bytes.len() < <$dty as Arbitrary>::size_hint(0).0 {
                return false;
            }
            match <$dty as Arbitrary>::arbitrary_take_rest(Unstructured::new(bytes)) {
                Ok(data) => {
                    body(data);
                    true
                }
                Err(_) => false,
            }
        }
    };
}
