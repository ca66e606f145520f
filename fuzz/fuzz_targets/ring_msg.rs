//! Fuzz target `ring_msg`: see [`basalt_fuzz::ring_msg`].
//!
//! Under `cargo fuzz` (which sets `--cfg fuzzing`) this is a libFuzzer target. Built without
//! it (`cargo run --release --bin ring_msg -- FILE_OR_DIR...`), it replays the given inputs on
//! stable Rust: handy for reproducing a crash from `artifacts/` without nightly.

#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| basalt_fuzz::ring_msg(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    basalt_fuzz::replay_main("ring_msg", basalt_fuzz::ring_msg)
}
