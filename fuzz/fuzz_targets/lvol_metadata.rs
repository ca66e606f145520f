//! Fuzz target `lvol_metadata`: see [`basalt_fuzz::lvol_metadata`].
//!
//! Under `cargo fuzz` (which sets `--cfg fuzzing`) this is a libFuzzer target. Built without
//! it (`cargo run --release --bin lvol_metadata -- FILE_OR_DIR...`), it replays the given inputs on
//! stable Rust: handy for reproducing a crash from `artifacts/` without nightly.

#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| basalt_fuzz::lvol_metadata(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    basalt_fuzz::replay_main("lvol_metadata", basalt_fuzz::lvol_metadata)
}
