#!/usr/bin/env bash
# Builds the Debian guest that tests/guest/run.sh boots under QEMU: a kernel, its initrd and a raw
# ext4 root file system holding open-iscsi, nvme-cli, fio and util-linux, with a fixed initiator
# IQN and host NQN and a small init script (tests/guest/init.sh) as PID 1: no systemd, and udev
# runs only inside the initrd.
#
#   tests/guest/build-image.sh [CACHE_DIR]     (default: build/guest, or $BASALT_GUEST_CACHE)
#
# Idempotent: it rebuilds only when an output is missing or an input changed (this script,
# init.sh, the package list, the suite; debootstrap runs again only for the last two); the
# inputs' hashes are kept in CACHE_DIR/stamp and CACHE_DIR/root.stamp. Installs
# the host packages it needs (debootstrap, qemu-system-x86, e2fsprogs) when they are missing.
# Outputs: CACHE_DIR/vmlinuz, CACHE_DIR/initrd.img, CACHE_DIR/rootfs.img, CACHE_DIR/identity.env
# (GUEST_IQN and GUEST_HOSTNQN, what the image's /etc/iscsi and /etc/nvme say).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${1:-${BASALT_GUEST_CACHE:-$repo/build/guest}}
suite=bookworm
# The smallest set that works: the kernel (it brings kmod and initramfs-tools), the two
# initiators, fio with libaio, blkdiscard/lsblk, ip. Nothing else: init.sh is PID 1.
packages=linux-image-amd64,open-iscsi,nvme-cli,fio,util-linux,kmod,iproute2
guest_iqn=iqn.2004-10.org.basalt:guest-e2e
guest_hostnqn=nqn.2014-08.org.nvmexpress:uuid:6c1f2b3e-0a4d-4c5e-9f10-2b3c4d5e6f70
guest_hostid=6c1f2b3e-0a4d-4c5e-9f10-2b3c4d5e6f70

# Bump when the debootstrap/initramfs steps below change; the later steps redo themselves
# whenever this script or init.sh changes, on the kept chroot (they are idempotent).
chroot_rev=1
want=$({ cat "$here/build-image.sh" "$here/init.sh"; echo "$suite $packages $guest_iqn $guest_hostnqn"; } \
    | sha256sum | cut -d' ' -f1)
want_root=$(echo "$chroot_rev $suite $packages" | sha256sum | cut -d' ' -f1)
if [ -f "$cache/stamp" ] && [ "$(cat "$cache/stamp")" = "$want" ] \
    && [ -s "$cache/vmlinuz" ] && [ -s "$cache/initrd.img" ] && [ -s "$cache/rootfs.img" ] \
    && [ -s "$cache/identity.env" ]; then
    echo "guest image up to date in $cache" >&2
    exit 0
fi

# Host tools, installed only when missing.
need=()
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /sbin/mkfs.ext4 ] || command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
    sudo=
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "installing: ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi
[ "$(id -u)" = 0 ] || { echo "build-image.sh: debootstrap and chroot need root" >&2; exit 1; }
export PATH=$PATH:/usr/sbin:/sbin

# The mirror this machine's apt already uses (so no host name is written here).
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)

mkdir -p "$cache"
root=$cache/root
rm -f "$cache/stamp"
t0=$(date +%s)
if [ ! -f "$cache/root.stamp" ] || [ "$(cat "$cache/root.stamp")" != "$want_root" ] || [ ! -d "$root" ]; then
    rm -rf "$root" "$cache/root.stamp"
    echo "debootstrap $suite into $root from ${mirror:-the default mirror}" >&2
    debootstrap --variant=minbase --include="$packages" "$suite" "$root" ${mirror:+"$mirror"} \
        > "$cache/debootstrap.log" 2>&1 || { tail -30 "$cache/debootstrap.log" >&2; exit 1; }
    # The initrd only has to find an ext4 root on virtio-blk: list those modules instead of
    # "most" (a smaller initrd boots faster under software emulation).
    sed -i 's/^MODULES=.*/MODULES=list/; s/^COMPRESS=.*/COMPRESS=gzip/' "$root/etc/initramfs-tools/initramfs.conf"
    printf '%s\n' virtio_pci virtio_blk ext4 crc32c_generic >> "$root/etc/initramfs-tools/modules"
    chroot "$root" update-initramfs -u -k all > "$cache/initramfs.log" 2>&1 \
        || { cat "$cache/initramfs.log" >&2; exit 1; }
    echo "$want_root" > "$cache/root.stamp"
else
    echo "reusing the chroot in $root" >&2
fi

# Fixed identities, so run.sh can put them on the targets' allow-lists.
echo "InitiatorName=$guest_iqn" > "$root/etc/iscsi/initiatorname.iscsi"
mkdir -p "$root/etc/nvme"
echo "$guest_hostnqn" > "$root/etc/nvme/hostnqn"
echo "$guest_hostid" > "$root/etc/nvme/hostid"
echo basalt-guest > "$root/etc/hostname"
install -m 0755 "$here/init.sh" "$root/sbin/basalt-init"
# Trim what a test never reads.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* \
    "$root"/usr/share/info/*

kver=$(basename "$(ls -d "$root"/lib/modules/*/ | head -1)")
# Drivers a QEMU guest with virtio disks and network never loads (about half the modules).
(cd "$root/lib/modules/$kver/kernel" && rm -rf sound drivers/gpu drivers/media drivers/net/wireless \
    drivers/net/ethernet drivers/infiniband drivers/staging drivers/bluetooth drivers/iio \
    drivers/hid drivers/input/touchscreen drivers/usb drivers/mmc drivers/isdn net/wireless \
    net/mac80211 net/bluetooth fs/btrfs fs/xfs fs/ocfs2 fs/gfs2 fs/nfs fs/nfsd fs/ceph \
    fs/smb fs/f2fs)
chroot "$root" depmod "$kver"
cp "$root/boot/vmlinuz-$kver" "$cache/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$cache/initrd.img"
# A raw ext4 image made from the directory: no loop mount. Room to spare for the guest's
# writes (run.sh boots it with snapshot=on, so the file itself never changes).
size_mb=$(( $(du -sm "$root" | cut -f1) * 5 / 4 + 128 ))
rm -f "$cache/rootfs.img"
truncate -s "${size_mb}M" "$cache/rootfs.img"
mkfs.ext4 -q -F -L basalt-guest -d "$root" "$cache/rootfs.img" "${size_mb}M"
printf 'GUEST_IQN=%s\nGUEST_HOSTNQN=%s\nGUEST_KERNEL=%s\n' "$guest_iqn" "$guest_hostnqn" "$kver" \
    > "$cache/identity.env"
echo "$want" > "$cache/stamp"
echo "guest image built in $(( $(date +%s) - t0 )) s: kernel $kver, rootfs ${size_mb} MiB, in $cache" >&2
