#!/usr/bin/env bash
# End-to-end test against the Linux kernel's nvme-tcp host: boots Debian 12's kernel (6.1) under
# QEMU (software emulation) with a busybox initramfs, which connects to `examples/nvmf_tgt` via
# /dev/nvme-fabrics (discovery controller, then the NVM subsystem without and with header and
# data digests), writes and verifies data (in-capsule and R2T sizes, parallel writers on two
# I/O queues), discards and checks zeros, idles past the keep-alive timeout, sees a resize
# event, and disconnects. Needs apt-get (Debian bookworm sources), qemu-system-x86_64, python3.
#
#   target/nvmf/e2e/linux_host.sh [WORKDIR]
#
# Exits non-zero if any check fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
work=${1:-/tmp/basalt-nvmf-e2e}
# The kernel Debian's linux-image-amd64 points at now (old point releases leave the mirror).
kver=${BASALT_E2E_KERNEL:-$(apt-cache depends linux-image-amd64 2>/dev/null \
    | awk '/Depends: linux-image-[0-9]/{sub("linux-image-", "", $2); print $2; exit}')}
[ -n "$kver" ] || { echo "cannot tell which kernel linux-image-amd64 depends on (apt-get update?)" >&2; exit 1; }
mkdir -p "$work" && cd "$work"
[ -e linux.deb ] || { apt-get download "linux-image-$kver" && mv linux-image-*.deb linux.deb; }
[ -e busybox.deb ] || { apt-get download busybox-static && mv busybox-static*.deb busybox.deb; }
rm -rf k bb root && mkdir -p k bb root/bin root/mod root/proc root/sys root/dev root/tmp
dpkg-deb -x linux.deb k
dpkg-deb -x busybox.deb bb
cp bb/bin/busybox root/bin/
cd k && mods=$(python3 "$here/module_deps.py" e1000 crc32c_generic crct10dif_generic crc64_rocksoft_generic nvme_tcp) && cd ..
for m in $mods; do cp "k/$m" root/mod/; basename "$m" >> root/mod/order; done
# nvme-cli (with its libraries and this machine's C library) for discover/id-ctrl/log checks.
for p in nvme-cli libnvme1 libjson-c5; do ls ${p}_*.deb > /dev/null 2>&1 || apt-get download $p; done
mkdir -p nc root/usr/sbin root/lib/x86_64-linux-gnu root/lib64
for d in nvme-cli_*.deb libnvme1_*.deb libjson-c5_*.deb; do dpkg-deb -x "$d" nc; done
cp nc/usr/sbin/nvme root/usr/sbin/
cp -L nc/usr/lib/x86_64-linux-gnu/lib*.so.* root/lib/x86_64-linux-gnu/ 2>/dev/null || true
for lib in $(LD_LIBRARY_PATH=nc/usr/lib/x86_64-linux-gnu ldd nc/usr/sbin/nvme nc/usr/lib/x86_64-linux-gnu/libnvme.so.1 \
        | awk '/=> \//{print $3}' | sort -u); do
    cp -L "$lib" root/lib/x86_64-linux-gnu/
done
cp -L /lib64/ld-linux-x86-64.so.2 root/lib64/
cp "$here/guest-init.sh" root/init && chmod +x root/init
python3 "$here/mkinitrd.py" root initrd.cpio

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/build}
(cd "$repo" && cargo build --release -p basalt-nvmf --example nvmf_tgt)
RUST_LOG=basalt_nvmf=debug "$CARGO_TARGET_DIR/release/examples/nvmf_tgt" 127.0.0.1:4420 200 30 > tgt.log 2>&1 &
tgt=$!
trap 'kill $tgt 2>/dev/null || true' EXIT
sleep 1
timeout 190 qemu-system-x86_64 -accel tcg -m 768 -smp 2 -cpu max \
    -kernel "k/boot/vmlinuz-$kver" -initrd initrd.cpio \
    -append "console=ttyS0 panic=-1 loglevel=4" -nographic -no-reboot \
    -nic user,model=e1000 > guest.log 2>&1 || true
grep -a 'E2E\|nvme' guest.log
fail=0
for want in "E2E VERIFY 8MiB OK" "E2E VERIFY 4K OK" "E2E DISCARD READS ZERO OK" \
    "E2E OUTSIDE DISCARD INTACT OK" "E2E PARALLEL VERIFY ok=1" "state=live" \
    "E2E size after resize event: 262144" "E2E IO BEYOND OLD END OK" "E2E disc ctrl" \
    "subnqn:  nqn.2026-11.org.basalt:volume-e2e" "E2E-CLI id-ctrl: mdts      : 5"; do
    grep -aq "$want" guest.log || { echo "MISSING: $want"; fail=1; }
done
[ "$(grep -ac 'E2E VERIFY 8MiB OK' guest.log)" = 2 ] || { echo "MISSING: digest pass"; fail=1; }
if grep -aq 'MISMATCH\|FAILED\|NOT ZERO' guest.log; then fail=1; fi
[ $fail = 0 ] && echo "Linux host end-to-end: PASS" || echo "Linux host end-to-end: FAIL"
exit $fail
