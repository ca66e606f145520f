#!/usr/bin/env bash
# The volume store measured against its base, side by side in one run (issue 3):
#   volume  4 KiB randread/randwrite QD32 on a fully written thin volume vs the raw file,
#           interleaved A B A B; ratio volume / raw
#   cow     first write after a snapshot: randwrite right after a fresh snapshot (every write
#           lands on a shared cluster) vs the same job once the snapshot is deleted and the
#           volume inflated (pure overwrites), for cluster sizes 256K, 1M and 4M
#   depth   4 KiB randread QD32 on volumes 0, 64 and 256 snapshots deep; ratio vs 0
#   snapload  snapshot latency (p50/p99/max) every 100 ms under randwrite QD32
#
# Usage: bench/compare-lvol.sh [--dir DIR] [--runtime SECONDS] [--rounds N] [--cpu N]
#                              [--parts LIST] [--out DIR]
#   --dir      where the 2-3 GiB test files go (default ${TMPDIR:-/var/tmp}; O_DIRECT needed)
#   --runtime  seconds per run (default 10)
#   --rounds   A B pairs per comparison (default 3)
#   --cpu      CPU the benchmark is pinned to (default 0)
#   --parts    comma-separated subset of: volume, cow, depth, snapload (default all)
#   --out      keep every run's JSON in this directory
# Files are created once and reused (remove them to start over). Needs python3.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${TMPDIR:-/var/tmp}
runtime=10
rounds=3
cpu=0
parts=volume,cow,depth,snapload
out=
while [ $# -gt 0 ]; do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --runtime) runtime=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --cpu) cpu=$2; shift 2 ;;
        --parts) parts=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare-lvol: unknown argument $1" >&2; exit 64 ;;
    esac
done
command -v python3 >/dev/null || { echo "compare-lvol: python3 is missing" >&2; exit 69; }

bench=${BASALT_BENCH:-}
if [ -z "$bench" ]; then
    (cd "$root" && cargo build --release --quiet -p basalt-bench)
    bench=$root/build/release/basalt-bench
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[ -n "$out" ] && mkdir -p "$out"

# A file of SIZE bytes (allocated, so that the file system does no allocation during runs).
file_of() { # path size
    if [ ! -f "$1" ] || [ "$(stat -c %s "$1")" != "$2" ]; then
        rm -f "$1"
        fallocate -l "$2" "$1"
    fi
}

b() { # json target args...
    local json=$1 target=$2
    shift 2
    "$bench" --target "$target" --cpus "$cpu" --time "${runtime}s" --json "$@" >"$json"
}

IFS=, read -ra part_list <<<"$parts"
for part in "${part_list[@]}"; do
    case $part in
    volume)
        raw=$dir/basalt-lvol-raw-2g.img
        lvs=$dir/basalt-lvol-vol-2g.img
        if [ ! -f "$raw.written" ]; then
            file_of "$raw" $((2 << 30))
            echo "volume: writing $raw once" >&2
            "$bench" --target "file:$raw" --rw write --bs 1M --qd 8 --cpus "$cpu" >/dev/null
            touch "$raw.written"
        fi
        file_of "$lvs" $((2304 << 20))
        for job in randread randwrite; do
            for r in $(seq 1 "$rounds"); do
                echo "volume $job round $r" >&2
                b "$tmp/volume.$job.raw.$r.json" "file:$raw" --rw $job --qd 32
                b "$tmp/volume.$job.lvol.$r.json" "lvol:$lvs,cluster=1M,size=2G" --rw $job --qd 32
            done
        done
        ;;
    cow)
        for c in 256K 1M 4M; do
            f=$dir/basalt-lvol-cow-$c.img
            file_of "$f" $((3 << 30))
            for r in $(seq 1 "$rounds"); do
                echo "cow cluster $c round $r" >&2
                b "$tmp/cow.$c.first.$r.json" "lvol:$f,cluster=$c,size=1G,fresh-snapshot" \
                    --rw randwrite --qd 32
                b "$tmp/cow.$c.over.$r.json" "lvol:$f,cluster=$c,size=1G,drop-fresh,inflate" \
                    --rw randwrite --qd 32
            done
        done
        ;;
    depth)
        for d in 0 64 256; do
            file_of "$dir/basalt-lvol-depth-$d.img" $((3 << 30))
        done
        for r in $(seq 1 "$rounds"); do
            for d in 0 64 256; do
                echo "depth $d round $r" >&2
                b "$tmp/depth.$d.$r.json" \
                    "lvol:$dir/basalt-lvol-depth-$d.img,cluster=1M,size=1G,snapshots=$d" \
                    --rw randread --qd 32
            done
        done
        ;;
    snapload)
        f=$dir/basalt-lvol-cow-1M.img
        file_of "$f" $((3 << 30))
        for r in $(seq 1 "$rounds"); do
            echo "snapload round $r" >&2
            b "$tmp/snapload.$r.json" "lvol:$f,cluster=1M,size=1G,snapshot-every=100ms" \
                --rw randwrite --qd 32 --span 256M
        done
        ;;
    *) echo "compare-lvol: unknown part $part" >&2; exit 64 ;;
    esac
done
[ -n "$out" ] && cp "$tmp"/*.json "$out"/

python3 - "$tmp" "$rounds" "${part_list[@]}" <<'PY'
import json, os, statistics, sys
d, rounds, parts = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
R = range(1, rounds + 1)
def load(name):
    return json.load(open(os.path.join(d, name)))
def iops(r):
    return r["total"]["iops"]
def fmt(xs):
    return " ".join(f"{x:>8.0f}" for x in xs)

if "volume" in parts:
    print("volume: fully written thin volume (1M clusters) vs the raw file, 4 KiB QD32")
    print(f"  {'job':<10} {'raw IOPS per round':>28} {'volume IOPS per round':>28} {'ratio':>6} {'median pair':>11}")
    for job in ("randread", "randwrite"):
        a = [iops(load(f"volume.{job}.raw.{i}.json")) for i in R]
        b = [iops(load(f"volume.{job}.lvol.{i}.json")) for i in R]
        pairs = statistics.median(y / x for x, y in zip(a, b))
        print(f"  {job:<10} {fmt(a):>28} {fmt(b):>28} {statistics.mean(b)/statistics.mean(a):>6.2f} {pairs:>11.2f}")
if "cow" in parts:
    print("cow: randwrite 4 KiB QD32 just after a snapshot (first writes) vs overwrites")
    print(f"  {'cluster':<8} {'first IOPS':>10} {'over IOPS':>10} {'ratio':>6} {'first p50/p99 µs':>18} {'over p50/p99 µs':>17} {'copied+filled KiB per first write':>34}")
    for c in ("256K", "1M", "4M"):
        f = [load(f"cow.{c}.first.{i}.json") for i in R]
        o = [load(f"cow.{c}.over.{i}.json") for i in R]
        fi, oi = statistics.mean(map(iops, f)), statistics.mean(map(iops, o))
        lat = lambda rs, k: statistics.median(r["write"]["latency_us"][k] for r in rs)
        sub = {"256K": 4, "1M": 16, "4M": 64}[c]
        kib = statistics.mean((r["lvol"]["cow_subclusters"] + r["lvol"]["fills"]) * sub / max(r["write"]["ios"], 1) for r in f)
        print(f"  {c:<8} {fi:>10.0f} {oi:>10.0f} {fi/oi:>6.2f} {lat(f,'p50'):>8.0f}/{lat(f,'p99'):<9.0f} {lat(o,'p50'):>7.0f}/{lat(o,'p99'):<9.0f} {kib:>34.1f}")
if "depth" in parts:
    print("depth: randread 4 KiB QD32 on a volume N snapshots deep, ratio vs no snapshot")
    base = [iops(load(f"depth.0.{i}.json")) for i in R]
    for n in (0, 64, 256):
        x = [iops(load(f"depth.{n}.{i}.json")) for i in R]
        pairs = statistics.median(y / b for b, y in zip(base, x))
        print(f"  {n:>4} snapshots {fmt(x)}  ratio {statistics.mean(x)/statistics.mean(base):.2f} (median pair {pairs:.2f})")
if "snapload" in parts:
    print("snapload: snapshot every 100 ms under randwrite 4 KiB QD32 (256 MiB span)")
    for i in R:
        r = load(f"snapload.{i}.json")
        s = r["snapshots"]
        print(f"  round {i}: {s['count']} snapshots, p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms, max {s['max_ms']:.2f} ms; writes {iops(r):.0f} IOPS, p99 {r['write']['latency_us']['p99']:.0f} µs")
PY
