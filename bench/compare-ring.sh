#!/usr/bin/env bash
# The control rings, measured (issue 6): round-trip latency and messages/s between two threads
# (datapath/ring/examples/ring-bench.rs), and data-slot streaming: a 1 GiB volume read through
# the rings' data slots from a running datapath (control/manager/examples/ring-read.rs) against
# the same volume read directly by basalt-bench, same run, same file.
#
# Usage: bench/compare-ring.sh [--dir DIR] [--rounds N]
#   --dir     where the 2 GiB pool file goes (default ${TMPDIR:-/var/tmp}; O_DIRECT needed)
#   --rounds  rounds of the read comparison (default 3)
# Binaries are built with cargo build --release (BASALT, BASALT_BENCH, RING_READ, RING_BENCH
# name prebuilt ones).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${TMPDIR:-/var/tmp}
rounds=3
while [ $# -gt 0 ]; do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare-ring: unknown argument $1" >&2; exit 64 ;;
    esac
done
tdir=${CARGO_TARGET_DIR:-$root/build}
if [ -z "${BASALT:-}" ] || [ -z "${BASALT_BENCH:-}" ] || [ -z "${RING_READ:-}" ] || [ -z "${RING_BENCH:-}" ]; then
    (cd "$root" && cargo build --release -q --bin basalt --bin basalt-bench &&
        cargo build --release -q -p basalt-manager --example ring-read &&
        cargo build --release -q -p basalt-ring --example ring-bench)
fi
basalt=${BASALT:-$tdir/release/basalt}
bench=${BASALT_BENCH:-$tdir/release/basalt-bench}
ring_read=${RING_READ:-$tdir/release/examples/ring-read}
ring_bench=${RING_BENCH:-$tdir/release/examples/ring-bench}

tmp=$(mktemp -d)
dpid=
cleanup() {
    [ -n "$dpid" ] && kill "$dpid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

echo "== ring round trips and messages/s (two threads, eventfd wake-ups)"
"$ring_bench"

pool=$dir/basalt-ring-pool-2g.img
rm -f "$pool"; fallocate -l $((2 << 30)) "$pool"
echo "== filling a 1 GiB volume (store bench, volume bench) with basalt-bench" >&2
"$bench" --target "lvol:$pool,size=1G" --rw read --bs 1M --qd 4 --time 1s >/dev/null

cat >"$tmp/dp.toml" <<TOML
[engine]
cores = 1
pin = false
[[bdev]]
module = "uring"
name = "pool0"
path = "$pool"
[[lvs]]
bdev = "pool0"
name = "bench"
[ring]
socket = "$tmp/ring.sock"
TOML

direct() { # bs qd
    "$bench" --target "lvol:$pool" --rw read --bs "$1" --qd "$2" --size 1G --json 2>/dev/null |
        python3 -c 'import json,sys; r=json.load(sys.stdin)["total"]; print(round(r["mib_s"]*1048576/1e9, 3))'
}

printf '%-6s %-28s %8s\n' round path "GB/s"
for r in $(seq "$rounds"); do
    for spec in "1M 1" "128K 8"; do
        set -- $spec
        printf '%-6s %-28s %8s\n' "$r" "direct bs=$1 qd=$2" "$(direct "$1" "$2")"
    done
    "$basalt" --log warn datapath --config "$tmp/dp.toml" 2>"$tmp/dp.log" &
    dpid=$!
    for _ in $(seq 100); do [ -S "$tmp/ring.sock" ] && break; sleep 0.1; done
    line=$("$ring_read" "$tmp/ring.sock" bench bench)
    gbs=$(sed -n 's/.*gb_per_s=\([0-9.]*\).*/\1/p' <<<"$line")
    printf '%-6s %-28s %8s   %s\n' "$r" "rings, 1 MiB slot requests" "$gbs" "$line"
    kill "$dpid"; wait "$dpid" 2>/dev/null || true; dpid=
done
rm -f "$pool"
