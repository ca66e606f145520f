#!/usr/bin/env bash
# Runs every test Basalt has, as CI does: installs what the tests need, checks formatting and
# lints, runs the workspace's unit, property and end-to-end tests, and the fuzz targets' stable
# smoke run. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "installing test dependencies"
scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (workspace)"
cargo test --workspace --locked

if [ -f fuzz/Cargo.toml ]; then
    step "fuzz targets: stable smoke run over seeds and mutations"
    (cd fuzz && cargo test --release --locked)
fi

step "all tests passed"
