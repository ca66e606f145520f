#!/usr/bin/env bash
# End-to-end test with the Linux kernel's initiators: starts `basalt up` on its own ports in a
# scratch data directory, creates two volumes through the Cinder API and attaches one over iSCSI
# (the guest's initiator IQN) and one over NVMe/TCP (the guest's host NQN), then boots the Debian
# guest of build-image.sh under QEMU (software emulation, user-mode network: the guest reaches
# the host's 127.0.0.1 at 10.0.2.2), where guest-test.sh runs open-iscsi (discovery, a refused
# wrong CHAP secret, CHAP login, fio verify, discard, logout) and nvme-cli (discover, a refused
# host NQN, connect, fio verify, discard, disconnect). Then detaches and deletes the volumes.
#
#   tests/guest/run.sh
#
# Environment: BASALT_BIN (default: builds and uses build/release/basalt, or
# $CARGO_TARGET_DIR/release/basalt), BASALT_GUEST_CACHE (default build/guest),
# BASALT_GUEST_TIMEOUT (seconds for the guest, default 900), BASALT_GUEST_ACCEL (default tcg,
# software emulation; kvm where /dev/kvm works, with -cpu host), BASALT_GUEST_SMP (default 2),
# FIO_SIZE (default 64M).
# Logs of the last run: $BASALT_GUEST_CACHE/last-run/{guest,basalt}.log.
# Exits non-zero on any FAIL line, a missing check, or a guest that did not finish in time.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${BASALT_GUEST_CACHE:-$repo/build/guest}
timeout_s=${BASALT_GUEST_TIMEOUT:-900}
t_start=$(date +%s)
say() { printf '==> %s\n' "$*" >&2; }

if [ -z "${BASALT_BIN:-}" ]; then
    say "cargo build --release -p basalt"
    (cd "$repo" && cargo build --release --locked -p basalt)
    BASALT_BIN=${CARGO_TARGET_DIR:-$repo/build}/release/basalt
fi
[ -x "$BASALT_BIN" ] || { echo "no basalt binary at $BASALT_BIN" >&2; exit 1; }

say "guest image ($cache)"
t0=$(date +%s)
"$here/build-image.sh" "$cache"
t_image=$(( $(date +%s) - t0 ))
# shellcheck source=/dev/null
. "$cache/identity.env"

tmp=$(mktemp -d /tmp/basalt-guest.XXXXXX)
dir=$tmp/data
mkdir -p "$dir"
out=$cache/last-run
rm -rf "$out" && mkdir -p "$out"
basalt_pid=
qemu_pid=
cleanup() {
    [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null || true
    if [ -n "$basalt_pid" ]; then
        kill -INT "$basalt_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$basalt_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$basalt_pid" 2>/dev/null || true
    fi
    cp "$dir/basalt.log" "$out/" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

read -r api iscsi nvmf < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
cat > "$dir/datapath.toml" <<TOML
[engine]
cores = 1
pin = false

[[bdev]]
module = "uring"
name = "pool0"
path = "$dir/pool.img"

[[lvs]]
bdev = "pool0"
name = "pool"
create = true
cluster_size = "256K"

[iscsi]
listen = ["127.0.0.1:$iscsi"]

[nvmf]
listen = ["127.0.0.1:$nvmf"]

[admin]
socket = "$dir/datapath.sock"

[ring]
socket = "$dir/ring.sock"
TOML
cat > "$dir/control.toml" <<TOML
[control]
database = "$dir/basalt.db"
stats_interval_secs = 1

[[node]]
host = "node1"
ring_socket = "$dir/ring.sock"
iscsi_portal = "127.0.0.1:$iscsi"
nvmf_portal = "127.0.0.1:$nvmf"

[api]
listen = "127.0.0.1:$api"
auth_strategy = "builtin"
TOML

say "basalt up (API 127.0.0.1:$api, iSCSI :$iscsi, NVMe/TCP :$nvmf)"
NO_COLOR=1 "$BASALT_BIN" up --pool-size 4G --data-dir "$dir" > "$dir/basalt.log" 2>&1 &
basalt_pid=$!
for _ in $(seq 300); do
    grep -q 'basalt up: Ctrl-C to stop' "$dir/basalt.log" && break
    kill -0 "$basalt_pid" 2>/dev/null || { cat "$dir/basalt.log" >&2; echo "basalt up exited" >&2; exit 1; }
    sleep 0.2
done
grep -q 'basalt up: Ctrl-C to stop' "$dir/basalt.log" || { cat "$dir/basalt.log" >&2; exit 1; }

say "volumes and attachments through the API (iSCSI for $GUEST_IQN, NVMe/TCP for $GUEST_HOSTNQN)"
python3 "$here/drive.py" setup "$dir" "127.0.0.1:$api" "$GUEST_IQN" "$GUEST_HOSTNQN" > "$dir/guest-env.sh"
[ -n "${FIO_SIZE:-}" ] && echo "FIO_SIZE=$FIO_SIZE" >> "$dir/guest-env.sh"
sed 's/^\(CHAP_SECRET\)=.*/\1=<hidden>/' "$dir/guest-env.sh" >&2

log=$out/guest.log
say "booting the guest (accel ${BASALT_GUEST_ACCEL:-tcg}, limit ${timeout_s} s; serial log $log)"
t0=$(date +%s)
: > "$log"
set +e
accel=${BASALT_GUEST_ACCEL:-tcg}
cpu=max
[ "$accel" = tcg ] || cpu=host
timeout "$timeout_s" qemu-system-x86_64 -accel "$accel" -cpu "$cpu" \
    -m 1024 -smp "${BASALT_GUEST_SMP:-2}" \
    -kernel "$cache/vmlinuz" -initrd "$cache/initrd.img" \
    -append "console=ttyS0 root=/dev/vda rw init=/sbin/basalt-init panic=-1 loglevel=4" \
    -drive "file=$cache/rootfs.img,format=raw,if=virtio,snapshot=on" \
    -netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
    -fw_cfg "name=opt/basalt/test,file=$here/guest-test.sh" \
    -fw_cfg "name=opt/basalt/env,file=$dir/guest-env.sh" \
    -display none -monitor none -serial stdio -no-reboot < /dev/null > "$log" 2>&1 &
qemu_pid=$!
tail -n +1 --pid=$qemu_pid -f "$log" | grep --line-buffered -aE '^(PASS|FAIL|=== |BASALT-GUEST)' >&2 &
wait $qemu_pid
qemu_rc=$?
qemu_pid=
set -e
t_guest=$(( $(date +%s) - t0 ))
sleep 0.5

fail=0
if [ $qemu_rc -eq 124 ]; then
    echo "FAIL host: the guest did not finish within $timeout_s s" >&2; fail=1
fi
if ! grep -aq 'BASALT-GUEST-DONE rc=0' "$log"; then
    echo "FAIL host: the guest test did not finish with rc=0 (qemu rc=$qemu_rc); end of its serial log:" >&2
    tail -n 30 "$log" | sed 's/^/  | /' >&2
    fail=1
fi
if grep -aq '^FAIL' "$log"; then fail=1; fi
for want in "iscsi discovery" "iscsi login with a wrong CHAP secret refused" "iscsi CHAP login" \
    "iscsi fio randwrite" "iscsi fio read-verify" "iscsi reports discard support" "iscsi blkdiscard" \
    "iscsi logout" "nvme discover" "nvme connect from an unlisted host NQN refused" "nvme connect" \
    "nvme fio randwrite" "nvme fio read-verify" "nvme reports discard support" "nvme blkdiscard" \
    "nvme disconnect"; do
    grep -aq "^PASS $want" "$log" || { echo "FAIL host: no PASS line for '$want'" >&2; fail=1; }
done

say "detach and delete through the API"
python3 "$here/drive.py" teardown "$dir" "127.0.0.1:$api" >&2 || fail=1
if grep -aE 'panicked| ERROR ' "$dir/basalt.log" >&2; then
    echo "note: basalt logged errors (above); see $out/basalt.log" >&2
fi
summary=$(grep -a '^BASALT-GUEST: .* checks passed' "$log" || echo "BASALT-GUEST: no summary")
echo "$summary; image step ${t_image} s, guest ${t_guest} s, total $(( $(date +%s) - t_start )) s" >&2
if [ $fail -ne 0 ]; then
    echo "guest end-to-end: FAIL (serial log: $log)" >&2
    exit 1
fi
echo "guest end-to-end: PASS" >&2
