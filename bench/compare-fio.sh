#!/usr/bin/env bash
# Side-by-side: fio (io_uring, O_DIRECT) and basalt-bench on one preallocated 2 GiB file, the
# same jobs, interleaved A B A B, then a table of ratios (basalt / fio).
#
# Usage: bench/compare-fio.sh [--file PATH] [--runtime SECONDS] [--rounds N] [--cpu N]
#                             [--jobs LIST] [--out DIR]
#   --file     the test file (created, and fully written once, if missing or the wrong size;
#              default ${TMPDIR:-/var/tmp}/basalt-compare-2g.img; must be on a file system
#              with O_DIRECT, not tmpfs)
#   --runtime  seconds per run (default 10)
#   --rounds   A B pairs per job (default 3)
#   --cpu      CPU both tools are pinned to (default 0)
#   --jobs     comma-separated subset of: randread4k, randwrite4k, seqread128k (default all)
#   --out      keep every run's JSON in this directory
# Needs fio and python3 (scripts/install-test-deps.sh installs both).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
file=${TMPDIR:-/var/tmp}/basalt-compare-2g.img
runtime=10
rounds=3
cpu=0
jobs=randread4k,randwrite4k,seqread128k
out=
while [ $# -gt 0 ]; do
    case $1 in
        --file) file=$2; shift 2 ;;
        --runtime) runtime=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --cpu) cpu=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare-fio: unknown argument $1" >&2; exit 64 ;;
    esac
done
for tool in fio python3; do
    command -v $tool >/dev/null || { echo "compare-fio: $tool is missing (scripts/install-test-deps.sh)" >&2; exit 69; }
done

job_args() { # name -> "rw bs qd"
    case $1 in
        randread4k) echo "randread 4096 32" ;;
        randwrite4k) echo "randwrite 4096 32" ;;
        seqread128k) echo "read 131072 16" ;;
        *) echo "compare-fio: unknown job $1 (randread4k, randwrite4k, seqread128k)" >&2 ;;
    esac
}
IFS=, read -ra job_list <<<"$jobs"
for job in "${job_list[@]}"; do
    read -r rw bs qd <<<"$(job_args "$job")"
    [ -n "${qd:-}" ] || exit 64
done

size=$((2 << 30))
bench=${BASALT_BENCH:-}
if [ -z "$bench" ]; then
    (cd "$root" && cargo build --release --quiet -p basalt-bench)
    bench=$root/build/release/basalt-bench
fi

if [ ! -f "$file" ] || [ "$(stat -c %s "$file")" != "$size" ] || [ ! -f "$file.written" ]; then
    echo "preparing $file: writing 2 GiB once so that reads hit allocated, written blocks" >&2
    rm -f "$file" "$file.written"
    fallocate -l "$size" "$file"
    fio --name=fill --filename="$file" --rw=write --bs=1M --iodepth=8 --direct=1 \
        --ioengine=io_uring --size="$size" --output=/dev/null
    sync
    touch "$file.written"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[ -n "$out" ] && mkdir -p "$out"

run_fio() { # rw bs qd json
    fio --name=job --filename="$file" --size="$size" --ioengine=io_uring --direct=1 \
        --rw="$1" --bs="$2" --iodepth="$3" --time_based --runtime="$runtime" \
        --norandommap --randrepeat=0 --fixedbufs=1 --registerfiles=1 \
        --cpus_allowed="$cpu" --output-format=json --output="$4" >/dev/null
}

run_basalt() { # rw bs qd json
    "$bench" --target "file:$file" --rw "$1" --bs "$2" --qd "$3" --time "${runtime}s" \
        --cpus "$cpu" --json >"$4"
}

for job in "${job_list[@]}"; do
    read -r rw bs qd <<<"$(job_args "$job")"
    for round in $(seq 1 "$rounds"); do
        echo "$job round $round: fio" >&2
        run_fio "$rw" "$bs" "$qd" "$tmp/$job.fio.$round.json"
        echo "$job round $round: basalt-bench" >&2
        run_basalt "$rw" "$bs" "$qd" "$tmp/$job.basalt.$round.json"
    done
done
[ -n "$out" ] && cp "$tmp"/*.json "$out"/

python3 - "$tmp" "$rounds" "${job_list[@]}" <<'PY'
import json, statistics, sys
d, rounds, jobs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

def fio(path):
    j = json.load(open(path))["jobs"][0]
    ios = j["read"]["total_ios"] + j["write"]["total_ios"]
    secs = j["job_runtime"] / 1000
    bw = (j["read"]["io_bytes"] + j["write"]["io_bytes"]) / secs / 2**20
    cpu = (j["usr_cpu"] + j["sys_cpu"]) / 100 * secs
    return ios / secs, bw, cpu * 1e6 / max(ios, 1)

def basalt(path):
    r = json.load(open(path))
    return r["total"]["iops"], r["total"]["mib_s"], r["cpu_us_per_io"]

print(f"{'job':<12} {'metric':<6} {'fio (per round)':>30} {'basalt-bench (per round)':>30} {'ratio':>6} {'median':>7}  CPU µs/IO fio/basalt")
for job in jobs:
    f = [fio(f"{d}/{job}.fio.{i}.json") for i in range(1, rounds + 1)]
    b = [basalt(f"{d}/{job}.basalt.{i}.json") for i in range(1, rounds + 1)]
    metric, k = ("MiB/s", 1) if job.startswith("seq") else ("IOPS", 0)
    fm, bm = statistics.mean(x[k] for x in f), statistics.mean(x[k] for x in b)
    pair = statistics.median(y[k] / x[k] for x, y in zip(f, b))
    fr = " ".join(f"{x[k]:.0f}" for x in f)
    br = " ".join(f"{x[k]:.0f}" for x in b)
    fc, bc = statistics.mean(x[2] for x in f), statistics.mean(x[2] for x in b)
    print(f"{job:<12} {metric:<6} {fr:>30} {br:>30} {bm / fm:>6.3f} {pair:>7.3f}  {fc:.2f} / {bc:.2f}")
print("ratio = mean(basalt) / mean(fio); median = median over rounds of basalt/fio in adjacent runs")
PY
