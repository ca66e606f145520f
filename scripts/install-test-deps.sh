#!/usr/bin/env bash
# Installs, idempotently, the Debian packages Basalt's tests and benchmarks need:
#   fio               the peer in bench/compare-fio.sh
#   python3           the comparison scripts' reports
#   util-linux        losetup, for the loop-device bdev test
#   libiscsi-bin      iscsi-test-cu (the iSCSI conformance suite), iscsi-perf, iscsi-inq
#   tgt               tgtd, the reference iSCSI target in bench/compare-iscsi.sh
#   qemu-block-extra  QEMU's iscsi:// block driver ...
#   qemu-utils        ... and qemu-img, installed after it so both come from the same release
# Safe to run again: packages already present are left alone, and apt-get runs only when
# something is missing.
set -euo pipefail

need=()
command -v fio >/dev/null || need+=(fio)
command -v python3 >/dev/null || need+=(python3)
command -v losetup >/dev/null || need+=(util-linux)
command -v iscsi-test-cu >/dev/null || need+=(libiscsi-bin)
command -v tgtd >/dev/null || need+=(tgt)
qemu_iscsi=yes
if ! command -v qemu-img >/dev/null || ! qemu-img --help 2>/dev/null | grep -qw iscsi; then
    qemu_iscsi=no
fi
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
    qemu-img --help | grep -qw iscsi || { echo "qemu-img has no iscsi driver" >&2; exit 1; }
fi
