//! Declares the `loom` cfg, so `#[cfg(loom)]` model tests do not warn as unknown.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
}
