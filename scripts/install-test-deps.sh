#!/usr/bin/env bash
# Installs, idempotently, the Debian packages Basalt's tests and benchmarks need:
#   fio         the peer in bench/compare-fio.sh
#   python3     the comparison script's report
#   util-linux  losetup, for the loop-device bdev test
# Safe to run again: packages already present are left alone, and apt-get runs only when
# something is missing.
set -euo pipefail

need=()
command -v fio >/dev/null || need+=(fio)
command -v python3 >/dev/null || need+=(python3)
command -v losetup >/dev/null || need+=(util-linux)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
sudo=
if [ "$(id -u)" != 0 ]; then
    sudo=sudo
fi
echo "installing: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${need[@]}"
