#!/usr/bin/env bash
# Basalt's NBD target against qemu-nbd, side by side in one run, on the same preallocated file,
# plus Basalt on a thick volume-store volume holding the same bytes:
#   fio's nbd engine (libnbd), 4 KiB randread and randwrite at QD 32 and 128, one connection,
#   each target in turn, interleaved round by round. Reported per run: IOPS, p99 completion
#   latency, and the CPU time the server process used per I/O; then the mean over the rounds
#   and the ratios to qemu-nbd. qemu-nbd runs with --cache=none --aio=io_uring (O_DIRECT, as
#   Basalt's uring bdev). The load average is printed before and after: on a shared machine,
#   compare ratios from one run, not absolute numbers.
#
# Usage: bench/compare-nbd.sh [--dir DIR] [--runtime SECONDS] [--rounds N] [--cores N]
#                             [--size SIZE]
#   --dir      where the test files go (default ${TMPDIR:-/var/tmp}; O_DIRECT needed)
#   --runtime  seconds per run (default 10)
#   --rounds   rounds of the whole matrix (default 2)
#   --cores    Basalt reactors (default 1: one connection lives on one reactor)
#   --size     file and volume size in GiB (default 2)
# BASALT names a prebuilt binary (default: cargo build --release here, into $CARGO_TARGET_DIR
# or build/). Needs fio with its nbd engine and qemu-nbd/qemu-img (qemu-utils):
# scripts/install-test-deps.sh installs them.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${TMPDIR:-/var/tmp}
runtime=10
rounds=2
cores=1
size_g=2
while [ $# -gt 0 ]; do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --runtime) runtime=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --cores) cores=$2; shift 2 ;;
        --size) size_g=$2; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare-nbd: unknown argument $1" >&2; exit 64 ;;
    esac
done
for tool in fio qemu-nbd qemu-img python3; do
    command -v $tool >/dev/null || { echo "compare-nbd: $tool is missing (scripts/install-test-deps.sh)" >&2; exit 69; }
done
fio --enghelp=nbd 2>/dev/null | grep -q uri || { echo "compare-nbd: fio has no nbd engine (libnbd)" >&2; exit 69; }

basalt=${BASALT:-}
if [ -z "$basalt" ]; then
    (cd "$root" && cargo build --release --quiet --bin basalt)
    basalt=${CARGO_TARGET_DIR:-$root/build}/release/basalt
fi
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

bytes=$((size_g << 30))
raw=$dir/basalt-nbd-raw-${size_g}g.img
pool=$dir/basalt-nbd-pool.img
if [ ! -f "$raw" ] || [ "$(stat -c %s "$raw")" != $bytes ]; then
    rm -f "$raw"; fallocate -l $bytes "$raw"
    # Written once, so reads hit allocated blocks on both servers.
    dd if=/dev/urandom of="$raw" bs=1M count=$((size_g << 10)) oflag=direct status=none
fi
rm -f "$pool"; truncate -s $((bytes + (1 << 30))) "$pool"

bport=10819
qport=10820
cat >"$tmp/dp.toml" <<TOML
[engine]
cores = $cores
pin = false
[[bdev]]
module = "uring"
name = "raw"
path = "$raw"
[[bdev]]
module = "uring"
name = "pool0"
path = "$pool"
[[lvs]]
bdev = "pool0"
name = "pool"
create = true
[[volume]]
lvs = "pool"
name = "vol"
size = "${size_g}G"
thick = true
[nbd]
listen = ["127.0.0.1:$bport"]
[[nbd.export]]
name = "raw"
bdev = "raw"
[[nbd.export]]
name = "vol"
volume = "pool/vol"
TOML
"$basalt" --log warn datapath --config "$tmp/dp.toml" 2>"$tmp/basalt.log" &
bpid=$!
pids+=("$bpid")

# -t: keep serving after a client leaves; one client at a time (the default --shared=1).
qemu-nbd -f raw -t -b 127.0.0.1 -p "$qport" -x raw --cache=none --aio=io_uring "$raw" \
    >"$tmp/qemu-nbd.log" 2>&1 &
qpid=$!
pids+=("$qpid")
sleep 2
kill -0 "$bpid" || { cat "$tmp/basalt.log" >&2; exit 1; }
kill -0 "$qpid" || { cat "$tmp/qemu-nbd.log" >&2; exit 1; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
# The volume gets the raw file's bytes, so all three read written data from the same disk (a
# thick volume's unwritten clusters are holes in the pool file, which read without the disk;
# -U: qemu-nbd holds the image lock of the raw file).
echo "filling the volume (${size_g} GiB over NBD with qemu-img)" >&2
qemu-img convert -U -n -f raw -O raw "$raw" "nbd://127.0.0.1:$bport/vol"

printf '%-8s %-10s %-4s %-6s %9s %9s %12s %12s\n' \
    target rw qd round iops p99_us cpu_us_per_io fio_us_per_io
results=$tmp/results
: >"$results"
for round in $(seq 1 "$rounds"); do
    for rw in randread randwrite; do
        for qd in 32 128; do
            for t in basalt qemu-nbd volume; do
                case $t in
                    basalt) uri="nbd://127.0.0.1:$bport/raw"; pid=$bpid ;;
                    volume) uri="nbd://127.0.0.1:$bport/vol"; pid=$bpid ;;
                    qemu-nbd) uri="nbd://127.0.0.1:$qport/raw"; pid=$qpid ;;
                esac
                before=$(cpu_ticks "$pid")
                fio --name=nbd --ioengine=nbd --uri="$uri" --rw=$rw --bs=4k --iodepth="$qd" \
                    --size="${size_g}G" --runtime="$runtime" --time_based --norandommap \
                    --randrepeat=0 --output-format=json >"$tmp/fio.json" 2>"$tmp/fio.err" \
                    || { cat "$tmp/fio.err" >&2; continue; }
                after=$(cpu_ticks "$pid")
                python3 - "$tmp/fio.json" "$t" "$rw" "$qd" "$round" "$before" "$after" "$hz" \
                    >>"$results" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
# The nbd engine prints "fio: connected to NBD server" before the JSON.
j = json.loads(text[text.index("{"):])["jobs"][0]
t, rw, qd, rnd, before, after, hz = sys.argv[2:9]
side = j["read"] if rw == "randread" else j["write"]
ios = max(side["total_ios"], 1)
p99 = side["clat_ns"]["percentile"].get("99.000000", 0) / 1000
server = (int(after) - int(before)) / int(hz) * 1e6 / ios
client = (j["usr_cpu"] + j["sys_cpu"]) / 100 * j["elapsed"] * 1e6 / ios if j.get("elapsed") else 0
print(t, rw, qd, rnd, round(side["iops"]), round(p99, 1), round(server, 2), round(client, 2))
PY
                tail -1 "$results" | awk '{printf "%-8s %-10s %-4s %-6s %9s %9s %12s %12s\n", $1, $2, $3, $4, $5, $6, $7, $8}'
            done
        done
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "Mean over rounds; ratios to qemu-nbd on the same file (IOPS: higher is better; CPU: lower)"
python3 - "$results" <<'PY'
import sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    t, rw, qd, rnd, iops, p99, cpu, fio = line.split()
    rows[(t, rw, qd)].append((float(iops), float(p99), float(cpu)))
def mean(t, rw, qd, i):
    v = [r[i] for r in rows[(t, rw, qd)]]
    return sum(v) / len(v) if v else 0.0
print(f"{'rw':10} {'qd':>4} {'target':9} {'IOPS':>9} {'p99 us':>9} {'CPU us/io':>10} "
      f"{'IOPS vs q':>10} {'CPU vs q':>9}")
for rw in ("randread", "randwrite"):
    for qd in ("32", "128"):
        q = [mean("qemu-nbd", rw, qd, i) for i in range(3)]
        for t in ("basalt", "volume", "qemu-nbd"):
            if not rows[(t, rw, qd)]:
                continue
            m = [mean(t, rw, qd, i) for i in range(3)]
            ri = f"{m[0] / q[0]:.2f}x" if q[0] else "-"
            rc = f"{m[2] / q[2]:.2f}x" if q[2] else "-"
            print(f"{rw:10} {qd:>4} {t:9} {m[0]:9.0f} {m[1]:9.0f} {m[2]:10.2f} {ri:>10} {rc:>9}")
PY
