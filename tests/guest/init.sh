#!/bin/bash
# PID 1 of the test guest (installed as /sbin/basalt-init by build-image.sh, started with
# init=/sbin/basalt-init after Debian's initrd has mounted the root). Mounts what a test needs,
# brings up eth0 on QEMU's user-mode network (10.0.2.15/24, gateway 10.0.2.2 = the host's
# loopback), loads the initiators' modules, then runs the test script QEMU hands over by fw_cfg
# (opt/basalt/test, with its settings in opt/basalt/env), and powers off. Everything it and the
# test print goes to the serial console.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts 2>/dev/null
mountpoint -q /run || mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/lock
mount -o remount,rw / 2>/dev/null
echo "BASALT-GUEST: init up after $(cut -d" " -f1 /proc/uptime) s, kernel $(uname -r)"

fw=/sys/firmware/qemu_fw_cfg/by_name/opt/basalt
modprobe qemu_fw_cfg 2>/dev/null
for m in virtio_net iscsi_tcp sd_mod nvme_tcp; do
    modprobe "$m" || echo "BASALT-GUEST: modprobe $m failed"
done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
rc=99
if [ -r "$fw/test/raw" ] && [ -r "$fw/env/raw" ]; then
    cat "$fw/env/raw" > /tmp/env.sh
    cat "$fw/test/raw" > /tmp/test.sh
    ( set -a; . /tmp/env.sh; set +a; exec bash /tmp/test.sh ) < /dev/null 2>&1
    rc=$?
else
    echo "BASALT-GUEST: FAIL no test script in fw_cfg ($fw)"
fi
echo "BASALT-GUEST-DONE rc=$rc"
sync
echo o > /proc/sysrq-trigger
sleep 30
