#!/usr/bin/env bash
# Basalt's iSCSI target against tgtd (the default Cinder target helper), side by side in one
# run, on the same preallocated file (issue 4), plus Basalt on a volume-store volume:
#   iscsi-perf 4 KiB reads, QD 32 and 128, sequential and random, for each target in turn,
#   interleaved round by round; CPU seconds used by each target process during its run, so
#   CPU per I/O is reported too. Then writes and mixed I/O through basalt-bench's iSCSI
#   initiator: 4 KiB randwrite and randrw (50% reads) at QD 32 and 128 against each target,
#   with IOPS, p50/p99/p99.9 latency and CPU per I/O of basalt-bench and of the target.
#
# Usage: bench/compare-iscsi.sh [--dir DIR] [--runtime SECONDS] [--rounds N] [--cores N]
#                               [--no-bench] [--cached]
#   --dir      where the 2 GiB test files go (default ${TMPDIR:-/var/tmp}; O_DIRECT needed)
#   --runtime  seconds per run (default 10)
#   --rounds   rounds of the whole matrix (default 2)
#   --cores    Basalt reactors (default 2; tgtd uses its own threads)
#   --no-bench skip the basalt-bench write/randrw section
#   --cached   both targets read through the page cache (Basalt's files with direct = false,
#              tgtd without --bsoflags direct; the raw file is read once first): takes the
#              disk, the noisiest part of this machine, out of the comparison of the targets
# BASALT and BASALT_BENCH name prebuilt binaries (default: cargo build --release here).
# Needs iscsi-perf (libiscsi-bin) and tgtd (tgt): scripts/install-test-deps.sh installs them.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${TMPDIR:-/var/tmp}
runtime=10
rounds=2
cached=0
cores=2
with_bench=1
while [ $# -gt 0 ]; do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --runtime) runtime=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --cores) cores=$2; shift 2 ;;
        --no-bench) with_bench=0; shift ;;
        --cached) cached=1; shift ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare-iscsi: unknown argument $1" >&2; exit 64 ;;
    esac
done
for tool in iscsi-perf tgtd tgtadm qemu-img; do
    command -v $tool >/dev/null || { echo "compare-iscsi: $tool is missing (scripts/install-test-deps.sh)" >&2; exit 69; }
done

basalt=${BASALT:-}
if [ -z "$basalt" ]; then
    (cd "$root" && cargo build --release --quiet --bin basalt)
    basalt=$root/build/release/basalt
fi
bench=${BASALT_BENCH:-}
if [ -z "$bench" ] && [ "$with_bench" = 1 ]; then
    (cd "$root" && cargo build --release --quiet -p basalt-bench)
    bench=$root/build/release/basalt-bench
fi
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 1
    # tgtd in the foreground does not always stop on SIGTERM.
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

raw=$dir/basalt-iscsi-raw-2g.img
pool=$dir/basalt-iscsi-pool-3g.img
if [ ! -f "$raw" ] || [ "$(stat -c %s "$raw")" != $((2 << 30)) ]; then
    rm -f "$raw"; fallocate -l $((2 << 30)) "$raw"
    # Written once, so reads hit allocated blocks on both targets.
    dd if=/dev/urandom of="$raw" bs=1M count=2048 oflag=direct status=none
fi
rm -f "$pool"; truncate -s $((3 << 30)) "$pool"

bport=3270
tport=3271
# A control port of our own, so another tgtd on this machine is left alone.
ctl=$(( $$ % 90 + 10 ))
iqn=iqn.2026-11.org.basalt
cat >"$tmp/dp.toml" <<TOML
[engine]
cores = $cores
pin = false
[[bdev]]
module = "uring"
name = "raw"
path = "$raw"
direct = $([ $cached = 1 ] && echo false || echo true)
[[bdev]]
module = "uring"
name = "pool0"
path = "$pool"
direct = $([ $cached = 1 ] && echo false || echo true)
[[lvs]]
bdev = "pool0"
name = "pool"
create = true
[[volume]]
lvs = "pool"
name = "vol"
size = "2G"
thick = true
[iscsi]
listen = ["127.0.0.1:$bport"]
[[iscsi.target]]
name = "$iqn:raw"
[[iscsi.target.lun]]
lun = 0
bdev = "raw"
[[iscsi.target]]
name = "$iqn:vol"
[[iscsi.target.lun]]
lun = 0
volume = "pool/vol"
TOML
"$basalt" --log warn datapath --config "$tmp/dp.toml" 2>"$tmp/basalt.log" &
bpid=$!
pids+=("$bpid")

tgtd -f --iscsi "portal=127.0.0.1:$tport" -C "$ctl" >"$tmp/tgtd.log" 2>&1 &
tpid=$!
pids+=("$tpid")
sleep 2
tgtadm -C "$ctl" --lld iscsi --op new --mode target --tid 1 -T "$iqn:tgtd"
if [ $cached = 1 ]; then
    cat "$raw" >/dev/null  # into the page cache
    tgtadm -C "$ctl" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$raw"
else
    tgtadm -C "$ctl" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$raw" --bsoflags direct
fi
tgtadm -C "$ctl" --lld iscsi --op bind --mode target --tid 1 -I ALL

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# Fill the volume with the raw file's bytes, so that both read written data from the same
# disk (a thick volume's unwritten clusters are holes in the pool file, which read as zeros
# without touching the disk).
echo "filling the volume (2 GiB over iSCSI with qemu-img)" >&2
qemu-img convert -n -f raw -O raw "$raw" "iscsi://127.0.0.1:$bport/$iqn:vol/0"

printf '%-8s %-6s %-4s %-10s %10s %12s\n' target mode qd round iops cpu_us_per_io
results=$tmp/results
: >"$results"
for round in $(seq 1 "$rounds"); do
    for mode in seq rand; do
        for qd in 32 128; do
            for t in basalt tgtd volume; do
                case $t in
                    basalt) url="iscsi://127.0.0.1:$bport/$iqn:raw/0"; pid=$bpid ;;
                    volume) url="iscsi://127.0.0.1:$bport/$iqn:vol/0"; pid=$bpid ;;
                    tgtd) url="iscsi://127.0.0.1:$tport/$iqn:tgtd/1"; pid=$tpid ;;
                esac
                flag=
                [ $mode = rand ] && flag=-r
                before=$(cpu_ticks "$pid")
                out=$(iscsi-perf -t "$runtime" -m "$qd" $flag "$url" 2>&1 | tr '\r' '\n')
                after=$(cpu_ticks "$pid")
                iops=$(printf '%s\n' "$out" | grep -o 'iops average [0-9]*' | tail -1 | awk '{print $3}')
                iops=${iops:-0}
                cpu=$(awk -v a="$after" -v b="$before" -v hz="$hz" -v n="$iops" -v t="$runtime" \
                    'BEGIN { if (n > 0) printf "%.1f", (a - b) / hz * 1e6 / (n * t); else print "-" }')
                printf '%-8s %-6s %-4s %-10s %10s %12s\n' $t $mode $qd "$round" "$iops" "$cpu"
                echo "$t $mode $qd $iops $cpu" >>"$results"
            done
        done
    done
done

echo
echo "Ratios (mean over rounds): basalt / tgtd on the same file; volume / tgtd"
python3 - "$results" <<'PY'
import sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    t, mode, qd, iops, cpu = line.split()
    rows[(t, mode, qd)].append((int(iops), cpu))
def mean(t, mode, qd):
    v = [i for i, _ in rows[(t, mode, qd)]]
    return sum(v) / len(v) if v else 0
print(f"{'mode':6} {'qd':>4} {'basalt':>9} {'volume':>9} {'tgtd':>9} {'basalt/tgtd':>12} {'volume/tgtd':>12}")
for mode in ("seq", "rand"):
    for qd in ("32", "128"):
        b, v, t = mean("basalt", mode, qd), mean("volume", mode, qd), mean("tgtd", mode, qd)
        r = lambda x: f"{x / t:.2f}x" if t else "-"
        print(f"{mode:6} {qd:>4} {b:9.0f} {v:9.0f} {t:9.0f} {r(b):>12} {r(v):>12}")
PY

[ "$with_bench" = 1 ] || exit 0

echo
echo "Writes and mixed I/O with basalt-bench's iSCSI initiator (4 KiB, one session, ${runtime}s)"
bres=$tmp/bench-results
: >"$bres"
for rw in randwrite randrw; do
    for qd in 32 128; do
        for t in basalt tgtd volume; do
            case $t in
                basalt) url="iscsi://127.0.0.1:$bport/$iqn:raw/0"; pid=$bpid ;;
                volume) url="iscsi://127.0.0.1:$bport/$iqn:vol/0"; pid=$bpid ;;
                tgtd) url="iscsi://127.0.0.1:$tport/$iqn:tgtd/1"; pid=$tpid ;;
            esac
            before=$(cpu_ticks "$pid")
            "$bench" --target "$url" --rw $rw --bs 4k --qd "$qd" --time "${runtime}s" --no-pin \
                --json >"$tmp/bench.json" 2>"$tmp/bench.err" || { cat "$tmp/bench.err" >&2; continue; }
            after=$(cpu_ticks "$pid")
            python3 - "$tmp/bench.json" $t $rw "$qd" "$before" "$after" "$hz" >>"$bres" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t, rw, qd, before, after, hz = sys.argv[2:8]
tot = r["total"]
ios = max(tot["ios"], 1)
l = tot["latency_us"]
print(t, rw, qd, round(tot["iops"]), round(l["p50"], 1), round(l["p99"], 1), round(l["p99_9"], 1),
      round(r["cpu_us_per_io"], 2), round((int(after) - int(before)) / int(hz) * 1e6 / ios, 2))
PY
        done
    done
done
python3 - "$bres" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    t, rw, qd, *v = line.split()
    rows[(t, rw, qd)] = v
print(f"{'target':8} {'rw':10} {'qd':>4} {'IOPS':>8} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} "
      f"{'CPU bench':>9} {'CPU target':>10} {'vs tgtd':>8}")
for rw in ("randwrite", "randrw"):
    for qd in ("32", "128"):
        for t in ("basalt", "volume", "tgtd"):
            v = rows.get((t, rw, qd))
            if not v:
                continue
            base = rows.get(("tgtd", rw, qd))
            ratio = f"{int(v[0]) / int(base[0]):.2f}x" if base and int(base[0]) else "-"
            print(f"{t:8} {rw:10} {qd:>4} {v[0]:>8} {v[1]:>8} {v[2]:>8} {v[3]:>9} {v[4]:>9} "
                  f"{v[5]:>10} {ratio:>8}")
PY
