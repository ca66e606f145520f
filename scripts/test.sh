#!/usr/bin/env bash
# Runs every test Basalt has, as CI does: installs what the tests need, checks formatting and
# lints, runs the workspace's unit, property and end-to-end tests, the loom models of the
# control rings, the fuzz targets' stable smoke run, and the Linux kernel's iSCSI and NVMe/TCP
# initiators in a QEMU guest (tests/guest). Exits non-zero on the first failure.
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

step "loom model checks of the control rings (indices and wake-ups)"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=build/loom \
    cargo test -p basalt-ring --release --lib --locked loom

if [ -f fuzz/Cargo.toml ]; then
    step "fuzz targets: stable smoke run over seeds and mutations"
    (cd fuzz && cargo test --release --locked)
fi

step "the Linux kernel's initiators in a QEMU guest: open-iscsi and nvme-cli against basalt up"
# tests/guest/run.sh builds the guest (debootstrap, cached in build/guest) and boots it under
# software emulation. It gets the debug binary that cargo test already built: the emulated guest
# bounds this test's time, not the target (tests/guest/README.md).
cargo build --locked -p basalt
BASALT_BIN="${CARGO_TARGET_DIR:-build}/debug/basalt" tests/guest/run.sh

step "all tests passed"
