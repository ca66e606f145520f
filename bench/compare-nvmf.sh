#!/usr/bin/env bash
# Basalt's NVMe/TCP target measured with basalt-bench's NVMe/TCP host, against the loopback
# ceiling (issue 5), all in one run:
#   4 KiB randread and randwrite at QD 32 and 128, one and two I/O queues, on a null device
#   and on a preallocated file; then tcp-echo-ceiling (a minimal io_uring TCP exchange of the
#   same message sizes at the same depth and connection count). Prints IOPS, p50/p99
#   latency, CPU per I/O (basalt-bench, the datapath, both) and null-device IOPS / ceiling.
#
# Usage: bench/compare-nvmf.sh [--dir DIR] [--runtime SECONDS] [--dp-cpu N] [--bench-cpu N]
#   --dir        where the 2 GiB test file goes (default ${TMPDIR:-/var/tmp}; O_DIRECT needed)
#   --runtime    seconds per point (default 5)
#   --dp-cpu     CPU of the datapath's reactor and of the echo server (default 0)
#   --bench-cpu  CPU of basalt-bench's reactor and of the echo client (default 1)
# Environment: BASALT, BASALT_BENCH, TCP_ECHO_CEILING: binaries to use (default: built here
# with cargo build --release).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${TMPDIR:-/var/tmp}
runtime=5
dpcpu=0
bcpu=1
while [ $# -gt 0 ]; do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --runtime) runtime=$2; shift 2 ;;
        --dp-cpu) dpcpu=$2; shift 2 ;;
        --bench-cpu) bcpu=$2; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare-nvmf: unknown argument $1" >&2; exit 64 ;;
    esac
done
command -v python3 >/dev/null || { echo "compare-nvmf: python3 is missing" >&2; exit 69; }

basalt=${BASALT:-}
bench=${BASALT_BENCH:-}
echo_bin=${TCP_ECHO_CEILING:-}
if [ -z "$basalt" ] || [ -z "$bench" ] || [ -z "$echo_bin" ]; then
    (cd "$root" && cargo build --release --quiet -p basalt -p basalt-bench)
    tdir=${CARGO_TARGET_DIR:-$root/build}
    basalt=${basalt:-$tdir/release/basalt}
    bench=${bench:-$tdir/release/basalt-bench}
    echo_bin=${echo_bin:-$tdir/release/tcp-echo-ceiling}
fi
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

raw=$dir/basalt-nvmf-raw-2g.img
if [ ! -f "$raw" ] || [ "$(stat -c %s "$raw")" != $((2 << 30)) ]; then
    rm -f "$raw"; fallocate -l $((2 << 30)) "$raw"
    # Written once, so reads hit allocated blocks.
    dd if=/dev/zero of="$raw" bs=1M count=2048 oflag=direct status=none
fi

port=$(( 4430 + $$ % 50 ))
nqn=nqn.2026-11.org.basalt:cmp
cat >"$tmp/dp.toml" <<TOML
[engine]
cpus = [$dpcpu]
[[bdev]]
module = "null"
name = "null0"
size = "64G"
[[bdev]]
module = "uring"
name = "file0"
path = "$raw"
[nvmf]
listen = ["127.0.0.1:$port"]
[[nvmf.subsystem]]
nqn = "$nqn-null"
[[nvmf.subsystem.namespace]]
nsid = 1
bdev = "null0"
[[nvmf.subsystem]]
nqn = "$nqn-file"
[[nvmf.subsystem.namespace]]
nsid = 1
bdev = "file0"
TOML
"$basalt" --log warn datapath --config "$tmp/dp.toml" 2>"$tmp/basalt.log" &
dpid=$!
pids+=("$dpid")
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
results=$tmp/results
: >"$results"

for dev in null file; do
    for rw in randread randwrite; do
        for qd in 32 128; do
            for queues in 1 2; do
                before=$(cpu_ticks "$dpid")
                "$bench" --target "nvmf:127.0.0.1:$port/$nqn-$dev,queues=$queues" --rw $rw \
                    --bs 4k --qd $qd --cpus "$bcpu" --time "${runtime}s" --json >"$tmp/out.json" \
                    2>"$tmp/bench.err" || { cat "$tmp/bench.err" >&2; exit 1; }
                after=$(cpu_ticks "$dpid")
                python3 - "$tmp/out.json" "$dev" "$rw" "$qd" "$queues" "$before" "$after" "$hz" \
                    >>"$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
dev, rw, qd, queues, before, after, hz = sys.argv[2:9]
t = r["total"]
ios = max(t["ios"], 1)
target_us = (int(after) - int(before)) / int(hz) * 1e6 / ios
print(dev, rw, qd, queues, round(t["iops"]), round(t["latency_us"]["p50"], 1),
      round(t["latency_us"]["p99"], 1), round(r["cpu_us_per_io"], 2), round(target_us, 2))
PY
                tail -1 "$results" >&2
            done
        done
    done
done

for rw in read write; do
    for qd in 32 128; do
        for queues in 1 2; do
            "$echo_bin" --rw $rw --qd $qd --queues $queues --time "$runtime" \
                --server-cpu "$dpcpu" --client-cpu "$bcpu" --json >"$tmp/echo.json"
            python3 - "$tmp/echo.json" >>"$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("echo", "rand" + r["rw"], r["qd"], r["queues"], round(r["iops"]),
      round(r["mean_latency_us"], 1), "-", round(r["cpu_us_per_io"], 2), "-")
PY
            tail -1 "$results" >&2
        done
    done
done

python3 - "$results" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    dev, rw, qd, q, iops, p50, p99, bcpu, tcpu = line.split()
    rows[(dev, rw, qd, q)] = (int(iops), p50, p99, bcpu, tcpu)
print("4 KiB over NVMe/TCP on loopback; latency in us; CPU in us per I/O.")
print("ceiling: tcp-echo-ceiling at the same depth and connections (p50 column: mean latency;"
      " CPU: echo client + server).")
hdr = f"{'device':8} {'rw':10} {'qd':>4} {'queues':>6} {'IOPS':>9} {'p50':>8} {'p99':>8} " \
      f"{'CPU bench':>9} {'CPU target':>10} {'CPU sum':>8} {'/ceiling':>9}"
print(hdr)
for dev in ("null", "file", "echo"):
    for rw in ("randread", "randwrite"):
        for qd in ("32", "128"):
            for q in ("1", "2"):
                r = rows.get((dev, rw, qd, q))
                if r is None:
                    continue
                iops, p50, p99, b, t = r
                total = f"{float(b) + float(t):.2f}" if t != "-" else b
                c = rows.get(("echo", rw, qd, q))
                ratio = f"{iops / c[0]:.2f}" if c and c[0] and dev != "echo" else "-"
                name = "ceiling" if dev == "echo" else dev
                print(f"{name:8} {rw:10} {qd:>4} {q:>6} {iops:9d} {p50:>8} {p99:>8} {b:>9} "
                      f"{t:>10} {total:>8} {ratio:>9}")
PY
