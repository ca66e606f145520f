#!/usr/bin/env bash
# The Cinder v3 API measured as a client sees it (issue goals: create-until-available p99 <
# 50 ms, list of 1,000 volumes < 50 ms): `basalt up` in a scratch data directory on free
# ports, driven by api-bench (bench/src/bin/api-bench.rs) over plain HTTP, twice: noauth
# tokens (`admin:admin`), then the built-in identity (a password token from admin-openrc,
# validated on every request), to show what token validation costs. Reports p50/p90/p99/max
# and rates per measurement, the basalt process's CPU time (/proc/PID/stat) per operation
# and per created volume, and writes the report to bench/results/2026-12-04-compare-api.txt.
#
# Usage: bench/compare-api.sh [--volumes N] [--concurrency C,...] [--attach N] [--dir DIR]
#                             [--pool-size SIZE] [--out FILE]
#   --volumes      volumes per concurrency level (default 1000)
#   --concurrency  create/delete concurrency levels (default 1,8)
#   --attach       volumes attached (initialize_connection and attachments; default 200)
#   --dir          where the scratch data directories go (default ${TMPDIR:-/var/tmp})
#   --pool-size    the sparse pool file (default 64G: 1,000 thin 1 GB volumes fit under the
#                  default over-subscription ratio of 20)
#   --out          the results file (default bench/results/2026-12-04-compare-api.txt)
# Environment: BASALT, API_BENCH: binaries to use (default: built here with
# cargo build --release -p basalt -p basalt-bench).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
volumes=1000
conc=1,8
attach=200
dir=${TMPDIR:-/var/tmp}
pool_size=64G
out=$root/bench/results/2026-12-04-compare-api.txt
while [ $# -gt 0 ]; do
    case $1 in
        --volumes) volumes=$2; shift 2 ;;
        --concurrency) conc=$2; shift 2 ;;
        --attach) attach=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --pool-size) pool_size=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare-api: unknown argument $1" >&2; exit 64 ;;
    esac
done
command -v python3 >/dev/null || { echo "compare-api: python3 is missing" >&2; exit 69; }

basalt=${BASALT:-}
apib=${API_BENCH:-}
build_cmd="(prebuilt: BASALT=$basalt API_BENCH=$apib)"
if [ -z "$basalt" ] || [ -z "$apib" ]; then
    build_cmd="cargo build --release -p basalt -p basalt-bench"
    echo "== $build_cmd" >&2
    (cd "$root" && cargo build --release --quiet -p basalt -p basalt-bench)
    tdir=${CARGO_TARGET_DIR:-$root/build}
    basalt=${basalt:-$tdir/release/basalt}
    apib=${apib:-$tdir/release/api-bench}
fi

tmp=$(mktemp -d "$dir/basalt-compare-api.XXXXXX")
bpid=
cleanup() {
    if [ -n "$bpid" ]; then
        kill -INT "$bpid" 2>/dev/null || true
        wait "$bpid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

free_ports() { # N free TCP ports on loopback
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

cpu_ticks() { # utime + stime of a process, in clock ticks
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
hz=$(getconf CLK_TCK)

report=$tmp/report.txt
{
    echo "# bench/compare-api.sh --volumes $volumes --concurrency $conc --attach $attach, $(date -u +%Y-%m-%d)"
    echo "# machine: $(nproc) vCPU ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
    echo "# NOTE: figures are from a 2-vCPU shared (noisy) VM; basalt (API + control + one datapath"
    echo "# reactor, unpinned) and api-bench share the same two vCPUs. Compare within a run only."
    echo "# load average when the measurement started: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine shows here)"
    echo "# build: $build_cmd"
    echo "# basalt: basalt --log info up --pool-size $pool_size --data-dir DIR (DIR/datapath.toml: 1 core, pin = false;"
    echo "#   DIR/control.toml: stats_interval_secs = 1, [api] auth_strategy = noauth | builtin), logs to a file"
    echo "# goals (issue): create-until-available p99 < 50 ms; list of 1,000 volumes p99 < 50 ms. Reported, never enforced."
} >"$report"

summaries=()
for mode in noauth builtin; do
    d=$tmp/$mode
    mkdir -p "$d"
    read -r api iscsi nvmf < <(free_ports 3)
    cat >"$d/datapath.toml" <<TOML
[engine]
cores = 1
pin = false

[[bdev]]
module = "uring"
name = "pool0"
path = "$d/pool.img"

[[lvs]]
bdev = "pool0"
name = "pool"
create = true

[iscsi]
listen = ["127.0.0.1:$iscsi"]

[nvmf]
listen = ["127.0.0.1:$nvmf"]

[admin]
socket = "$d/datapath.sock"

[ring]
socket = "$d/ring.sock"
TOML
    cat >"$d/control.toml" <<TOML
[control]
database = "$d/basalt.db"
stats_interval_secs = 1

[[node]]
host = "node1"
lvs = "pool"
ring_socket = "$d/ring.sock"
iscsi_portal = "127.0.0.1:$iscsi"
nvmf_portal = "127.0.0.1:$nvmf"

[api]
listen = "127.0.0.1:$api"
auth_strategy = "$mode"
TOML
    echo "== $mode: basalt up on 127.0.0.1:$api" >&2
    "$basalt" --log info up --pool-size "$pool_size" --data-dir "$d" 2>"$d/basalt.log" &
    bpid=$!
    if [ "$mode" = builtin ]; then
        for _ in $(seq 600); do [ -s "$d/admin-openrc" ] && break; kill -0 "$bpid" || break; sleep 0.1; done
        auth=(--openrc "$d/admin-openrc")
    else
        auth=(--token admin:admin)
    fi
    cmd=("$apib" --url "http://127.0.0.1:$api" "${auth[@]}" --volumes "$volumes"
        --concurrency "$conc" --attach "$attach" --server-pid "$bpid" --label "$mode")
    rc=0
    "${cmd[@]}" >"$d/bench.out" || rc=$?
    ticks=$(cpu_ticks "$bpid" 2>/dev/null || echo 0)
    t0=$(date +%s.%N)
    kill -INT "$bpid"
    brc=0
    wait "$bpid" || brc=$?
    bpid=
    stop_s=$(python3 -c "import time; print(round(time.time() - $t0, 2))")
    {
        echo
        echo "== $mode"
        echo "\$ api-bench --url http://127.0.0.1:$api ${auth[*]/#$d/DIR} --volumes $volumes --concurrency $conc --attach $attach --server-pid PID --label $mode"
        grep -v '^{' "$d/bench.out" || true
        echo "api-bench exit status $rc; basalt total CPU from start to SIGINT $(python3 -c "print(round($ticks / $hz, 2))") s;" \
            "SIGINT to exit ${stop_s} s, exit status $brc; $(grep -c . "$d/basalt.log") log lines" \
            "($(grep -c ' WARN \| ERROR ' "$d/basalt.log" || true) WARN/ERROR)"
        # The kinds of WARN/ERROR lines: timestamps and ids stripped, counted.
        grep ' WARN \| ERROR ' "$d/basalt.log" | sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^[0-9T:.Z-]* *//' \
            -e 's/[0-9a-f]\{8\}-[0-9a-f]\{4\}-[0-9a-f]\{4\}-[0-9a-f]\{4\}-[0-9a-f]\{12\}/<uuid>/g' |
            cut -c1-240 | sort | uniq -c | sort -rn | head -5 | sed 's/^/  log: /' || true
        echo "json: $(grep '^{' "$d/bench.out" || echo '{}')"
    } >>"$report"
    cat "$d/bench.out" >&2
    summaries+=("$d/bench.out")
done

# Side by side: p50 / p99 of every measurement, noauth against builtin.
python3 - "${summaries[@]}" >>"$report" <<'PY'
import json, sys
runs = []
for path in sys.argv[1:]:
    line = next((l for l in open(path) if l.startswith("{")), "{}")
    runs.append(json.loads(line))
def f(us):
    if us is None: return "-"
    return f"{us}µs" if us < 1000 else f"{us/1000:.2f}ms"
print()
print("== summary (p50 / p99; server CPU per operation)")
labels = [r.get("label", "?") for r in runs]
print(f"{'measurement':<34}" + "".join(f"{l:>32}" for l in labels))
names = []
for r in runs:
    for n in r.get("measurements", {}):
        if n not in names: names.append(n)
for n in names:
    cells = []
    for r in runs:
        m = r.get("measurements", {}).get(n)
        if not m: cells.append("-"); continue
        cpu = m.get("server_cpu_us_per_op")
        cells.append(f"{f(m['p50_us'])} / {f(m['p99_us'])}; {f(cpu)}")
    print(f"{n:<34}" + "".join(f"{c:>32}" for c in cells))
for r in runs:
    created = r.get("volumes_created") or 0
    cpu = r.get("server_cpu_s")
    per = f"{cpu / created * 1e3:.2f} ms" if cpu and created else "-"
    print(f"{r.get('label')}: {created} volumes created, server CPU {cpu} s over the run = {per} per created volume"
          + (f"; token issue {f(r.get('token_issue_us'))}" if r.get("token_issue_us") else ""))
    for g in r.get("goals", []):
        print(f"  goal {g['measurement']}: {g['goal']}")
if len(runs) == 2:
    a, b = (r.get("measurements", {}).get("show (GET volume)") for r in runs)
    if a and b:
        print(f"token validation (builtin − noauth, show p50): {f(b['p50_us'] - a['p50_us'])}"
              f"; server CPU per show {f(b.get('server_cpu_us_per_op'))} vs {f(a.get('server_cpu_us_per_op'))}")
PY

echo "# load average when the measurement ended: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$report"
mkdir -p "$(dirname "$out")"
cp "$report" "$out"
cat "$report"
echo "compare-api: wrote $out" >&2
