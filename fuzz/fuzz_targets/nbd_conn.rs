//! Fuzz target `nbd_conn`: see [`basalt_fuzz::nbd_conn`].
//!
//! Under `cargo fuzz` (which sets `--cfg fuzzing`) this is a libFuzzer target. Built without
//! it (`cargo run --release --bin nbd_conn -- FILE_OR_DIR...`), it replays the given inputs on
//! stable Rust: handy for reproducing a crash from `artifacts/` without nightly.

#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| basalt_fuzz::nbd_conn(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    basalt_fuzz::replay_main("nbd_conn", basalt_fuzz::nbd_conn)
}
