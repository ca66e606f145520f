//! Fuzz target `api_request`: see [`basalt_fuzz::api_request`].
//!
//! Under `cargo fuzz` (which sets `--cfg fuzzing`) this is a libFuzzer target. Built without
//! it (`cargo run --release --bin api_request -- FILE_OR_DIR...`), it replays the given inputs on
//! stable Rust: handy for reproducing a crash from `artifacts/` without nightly.

#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| basalt_fuzz::api_request(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    basalt_fuzz::replay_main("api_request", basalt_fuzz::api_request)
}
