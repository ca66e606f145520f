#!/bin/bash
# Runs inside the guest (init.sh starts it; run.sh hands it over by fw_cfg, with its settings as
# environment variables: ISCSI_PORT ISCSI_IQN CHAP_USER CHAP_SECRET NVME_PORT NVME_NQN
# GUEST_IQN GUEST_HOSTNQN). Drives the kernel's iSCSI initiator (open-iscsi) and NVMe/TCP host
# (nvme-cli) against Basalt at 10.0.2.2 (QEMU's user-mode network: the host's 127.0.0.1).
# Prints one "PASS name" or "FAIL name" line per check; exits non-zero if any failed.
host=10.0.2.2
fio_size=${FIO_SIZE:-64M}
passed=0
failed=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
check() { # check NAME COMMAND...: PASS when the command exits 0
    local name=$1; shift
    if "$@"; then pass "$name"; else fail "$name (rc=$?)"; fi
}
step() { echo; echo "=== $*"; }
t() { timeout "${T:-300}" "$@"; }

wait_for() { # wait_for SECONDS COMMAND...: until the command succeeds
    local n=$(($1 * 5)); shift
    while [ $n -gt 0 ]; do "$@" 2>/dev/null && return 0; sleep 0.2; n=$((n - 1)); done
    return 1
}

# fio write pass (verified as it goes), then a separate read-only verify pass of the same blocks.
fio_verify() { # fio_verify LABEL DEVICE
    local label=$1 dev=$2
    local common=(--name=v --filename="$dev" --rw=randwrite --bs=4k --size="$fio_size"
        --verify=crc32c --verify_fatal=1 --direct=1 --ioengine=libaio --iodepth=8)
    local s=$SECONDS
    if t fio "${common[@]}" > /tmp/fio-w.log 2>&1; then
        pass "$label fio randwrite $fio_size with crc32c verify ($((SECONDS - s)) s)"
    else
        fail "$label fio randwrite with verify"; cat /tmp/fio-w.log
    fi
    grep -E '^ +(WRITE|READ):' /tmp/fio-w.log
    s=$SECONDS
    if t fio "${common[@]}" --verify_only > /tmp/fio-r.log 2>&1; then
        pass "$label fio read-verify pass ($((SECONDS - s)) s)"
    else
        fail "$label fio read-verify pass"; cat /tmp/fio-r.log
    fi
    grep -E '^ +(WRITE|READ):' /tmp/fio-r.log
}

discard_checks() { # discard_checks LABEL DEVICE
    local label=$1 dev=$2 b
    b=$(basename "$dev")
    lsblk -D "$dev"
    local max gran
    max=$(cat "/sys/block/$b/queue/discard_max_bytes")
    gran=$(cat "/sys/block/$b/queue/discard_granularity")
    if [ "${max:-0}" -gt 0 ]; then
        pass "$label reports discard support (discard_max_bytes=$max granularity=$gran)"
    else
        fail "$label reports no discard support (discard_max_bytes=$max)"
    fi
    check "$label blkdiscard $dev" t blkdiscard "$dev"
    # The fio pass wrote the first $fio_size; after the discard it reads back as zeros.
    local bytes
    bytes=$(numfmt --from=iec "$fio_size")
    if t dd if="$dev" bs=1M count=$((bytes >> 20)) iflag=direct status=none | cmp -s -n "$bytes" - /dev/zero; then
        pass "$label discarded range reads back zeros"
    else
        fail "$label discarded range does not read back zeros"
    fi
}

echo "BASALT-GUEST: test starts; iSCSI $host:$ISCSI_PORT $ISCSI_IQN, NVMe/TCP $host:$NVME_PORT $NVME_NQN"

# ---------------------------------------------------------------- iSCSI (open-iscsi)
step "iSCSI: iscsid"
cat /etc/iscsi/initiatorname.iscsi
mkdir -p /run/lock/iscsi /var/lib/iscsi
iscsid -f > /tmp/iscsid.log 2>&1 &
# iscsiadm answers 20 (ISCSI_ERR_ISCSID_NOTCONN) until iscsid listens, 21 (no sessions) after.
iscsid_up() { iscsiadm -m session > /dev/null 2>&1; [ $? -ne 20 ]; }
wait_for 30 iscsid_up || fail "iscsid never came up: $(cat /tmp/iscsid.log)"
portal=$host:$ISCSI_PORT

step "iSCSI: discovery (SendTargets) at $portal"
if t iscsiadm -m discovery -t sendtargets -p "$portal" > /tmp/disc.log 2>&1 && grep -q "$ISCSI_IQN" /tmp/disc.log; then
    pass "iscsi discovery lists $ISCSI_IQN"
else
    fail "iscsi discovery"
fi
cat /tmp/disc.log
# SendTargets gives the target's configured address (127.0.0.1 on the host): make the node
# record for the address the guest reaches it at.
t iscsiadm -m node -o new -T "$ISCSI_IQN" -p "$portal" > /dev/null
node() { t iscsiadm -m node -T "$ISCSI_IQN" -p "$portal" "$@"; }
set_auth() {
    node -o update -n node.session.auth.authmethod -v CHAP &&
    node -o update -n node.session.auth.username -v "$CHAP_USER" &&
    node -o update -n node.session.auth.password -v "$1"
}

step "iSCSI: login with a wrong CHAP secret"
set_auth "not-the-secret-$RANDOM$RANDOM"
node --login > /tmp/bad.log 2>&1
rc=$?
cat /tmp/bad.log
if [ $rc -ne 0 ] && ! iscsiadm -m session > /dev/null 2>&1; then
    pass "iscsi login with a wrong CHAP secret refused (iscsiadm rc=$rc)"
else
    fail "iscsi login with a wrong CHAP secret was not refused (rc=$rc)"
    node --logout
fi

step "iSCSI: CHAP login"
set_auth "$CHAP_SECRET"
if node --login; then pass "iscsi CHAP login"; else fail "iscsi CHAP login (rc=$?)"; fi
sd=
disk() { sd=$(iscsiadm -m session -P 3 2>/dev/null | sed -n 's/.*Attached scsi disk \([a-z]*\).*/\1/p' | head -1); [ -n "$sd" ] && [ -b "/dev/$sd" ]; }
if wait_for 60 disk; then
    pass "iscsi LU appears as /dev/$sd ($(($(cat /sys/block/$sd/size) / 2048)) MiB)"
    iscsiadm -m session -P 2 | grep -E 'Target:|Current Portal|Persistent Portal|HeaderDigest|MaxRecvDataSegmentLength|FirstBurstLength|ImmediateData|InitialR2T' | sed 's/^[ \t]*/  /'
    echo "  provisioning_mode: $(cat /sys/block/$sd/device/scsi_disk/*/provisioning_mode 2>/dev/null)"
    fio_verify iscsi "/dev/$sd"
    discard_checks iscsi "/dev/$sd"
else
    fail "iscsi LU never appeared"
    iscsiadm -m session -P 3
fi

step "iSCSI: logout"
if node --logout && ! iscsiadm -m session > /dev/null 2>&1 && wait_for 30 test ! -e "/dev/${sd:-none}"; then
    pass "iscsi logout (no session left, device gone)"
else
    fail "iscsi logout"
    iscsiadm -m session
fi
grep -v '^$' /tmp/iscsid.log | tail -20

# ---------------------------------------------------------------- NVMe/TCP (nvme-cli)
step "NVMe/TCP: discovery at $host:$NVME_PORT"
if t nvme discover -t tcp -a "$host" -s "$NVME_PORT" -q "$GUEST_HOSTNQN" > /tmp/nd.log 2>&1 && grep -q "subnqn: *$NVME_NQN" /tmp/nd.log; then
    pass "nvme discover lists $NVME_NQN"
else
    fail "nvme discover"
fi
cat /tmp/nd.log

step "NVMe/TCP: connect from a host NQN not on the allow-list"
other=nqn.2014-08.org.nvmexpress:uuid:00000000-dead-4bee-8f00-000000000000
t nvme connect -t tcp -a "$host" -s "$NVME_PORT" -n "$NVME_NQN" -q "$other" \
    -I 00000000-dead-4bee-8f00-000000000000 > /tmp/bad.log 2>&1
rc=$?
cat /tmp/bad.log
nsdev() { ls /sys/block 2>/dev/null | grep -E '^nvme[0-9]+n[0-9]+$' | head -1; }
if [ $rc -ne 0 ] && [ -z "$(nsdev)" ] && [ -z "$(ls /sys/class/nvme 2>/dev/null)" ]; then
    pass "nvme connect from an unlisted host NQN refused (rc=$rc)"
else
    fail "nvme connect from an unlisted host NQN was not refused (rc=$rc)"
    nvme disconnect -n "$NVME_NQN"
fi

step "NVMe/TCP: connect"
if t nvme connect -t tcp -a "$host" -s "$NVME_PORT" -n "$NVME_NQN" -q "$GUEST_HOSTNQN"; then
    pass "nvme connect"
else
    fail "nvme connect (rc=$?)"
fi
ns=
if wait_for 60 test -n "$(nsdev)" && ns=$(nsdev) && wait_for 10 test -b "/dev/$ns"; then
    pass "nvme namespace appears as /dev/$ns ($(($(cat /sys/block/$ns/size) / 2048)) MiB)"
    nvme list-subsys 2>/dev/null
    nvme id-ns "/dev/$ns" 2>/dev/null | grep -E '^(nsze|dlfeat|nlbaf|lbaf  0)' | sed 's/^/  /'
    fio_verify nvme "/dev/$ns"
    discard_checks nvme "/dev/$ns"
else
    fail "nvme namespace never appeared"
    nvme list-subsys
fi

step "NVMe/TCP: disconnect"
t nvme disconnect -n "$NVME_NQN" > /tmp/dis.log 2>&1
rc=$?
cat /tmp/dis.log
if [ $rc -eq 0 ] && grep -q 'disconnected 1 controller' /tmp/dis.log && wait_for 30 test -z "$(nsdev)"; then
    pass "nvme disconnect (1 controller, namespace gone)"
else
    fail "nvme disconnect (rc=$rc)"
fi

echo
dmesg | grep -E 'iscsi|scsi|\[sd[a-z]+\]|nvme|connection[0-9]' | tail -40 | sed 's/^/dmesg: /'
echo "BASALT-GUEST: $passed checks passed, $failed failed"
[ $failed -eq 0 ]
