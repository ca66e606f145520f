#!/usr/bin/env bash
# Installs, idempotently, the Debian packages Basalt's tests and benchmarks need:
#   fio               the peer in bench/compare-fio.sh
#   python3           the comparison scripts' reports
#   util-linux        losetup, for the loop-device bdev test
#   libiscsi-bin      iscsi-test-cu (the iSCSI conformance suite), iscsi-perf, iscsi-inq (clients.rs)
#   tgt               tgtd, the reference iSCSI target in bench/compare-iscsi.sh
#   qemu-block-extra  QEMU's iscsi:// block driver ...
#   qemu-utils        ... and qemu-img, installed after it so both come from the same release
#                     (also qemu-io, and qemu-nbd, the peer in bench/compare-nbd.sh)
#   libnbd-bin        nbdinfo and nbdcopy, NBD clients in tests/tests/nbd.rs (fio's nbd engine
#                     uses the same libnbd)
#   python3-cinderclient    the `cinder` command, a real Cinder client, in tests/tests/clients.rs
#   python3-openstackclient the `openstack` command, the other real client, in the same test
#   debootstrap       builds tests/guest's Debian guest (the kernel's iSCSI and NVMe/TCP initiators)
#   qemu-system-x86   boots that guest under software emulation
#   e2fsprogs         mkfs.ext4 -d, the guest's root file system without a loop mount
# Safe to run again: packages already present are left alone, and apt-get runs only when
# something is missing.
set -euo pipefail

need=()
command -v fio >/dev/null || need+=(fio)
command -v python3 >/dev/null || need+=(python3)
command -v losetup >/dev/null || need+=(util-linux)
command -v iscsi-test-cu >/dev/null || need+=(libiscsi-bin)
command -v tgtd >/dev/null || need+=(tgt)
command -v cinder >/dev/null || need+=(python3-cinderclient)
command -v openstack >/dev/null || need+=(python3-openstackclient)
command -v nbdinfo >/dev/null || need+=(libnbd-bin)
PATH=$PATH:/usr/sbin:/sbin command -v debootstrap >/dev/null || need+=(debootstrap)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
PATH=$PATH:/usr/sbin:/sbin command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
# qemu-img lists iscsi among its formats even when the module that implements it
# (qemu-block-extra) is missing, so ask it to open an iscsi:// URL on a closed port: a missing
# module says so at once.
qemu_has_iscsi() {
    command -v qemu-img >/dev/null || return 1
    local out
    out=$(qemu-img info 'iscsi://127.0.0.1:9/iqn.2000-01.invalid:probe/0' 2>&1 || true)
    ! grep -qiE 'load module|unknown protocol|unknown driver' <<<"$out"
}
qemu_iscsi=yes
qemu_has_iscsi || qemu_iscsi=no
if [ ${#need[@]} -eq 0 ] && [ $qemu_iscsi = yes ]; then
    exit 0
fi
sudo=
if [ "$(id -u)" != 0 ]; then
    sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}" >&2
    $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi
if [ $qemu_iscsi = no ]; then
    # qemu-block-extra replaces a newer qemu-utils with its own release's; install qemu-utils
    # after it so qemu-img and the iscsi driver match.
    echo "installing: qemu-block-extra qemu-utils" >&2
    $sudo apt-get install -y -q --no-install-recommends qemu-block-extra
    $sudo apt-get install -y -q --no-install-recommends qemu-utils
    qemu_has_iscsi || { echo "qemu-img has no iscsi driver" >&2; exit 1; }
fi
