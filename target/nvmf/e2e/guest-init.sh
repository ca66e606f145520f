#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
for m in $(cat /mod/order); do insmod /mod/$m || echo "insmod $m failed"; done
SUB=nqn.2026-11.org.basalt:volume-e2e
HOST=nqn.2014-08.org.nvmexpress:uuid:guest-0001
ip link set lo up; ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2
connect() {
  exec 3<>/dev/nvme-fabrics
  echo "transport=tcp,traddr=10.0.2.2,trsvcid=4420,nqn=$1,hostnqn=$HOST$2" >&3 || { echo "E2E CONNECT FAILED $1 $2"; exec 3>&-; return 1; }
  read -r line <&3; echo "E2E connected: $line"; exec 3>&-
}
if [ -x /usr/sbin/nvme ]; then
  echo "E2E nvme-cli $(nvme version)"
  nvme discover -t tcp -a 10.0.2.2 -s 4420 -q $HOST 2>&1 | sed 's/^/E2E-CLI discover: /'
  nvme connect -t tcp -a 10.0.2.2 -s 4420 -n $SUB -q $HOST 2>&1 | sed 's/^/E2E-CLI connect: /'
  sleep 1
  nvme list 2>&1 | sed 's/^/E2E-CLI list: /'
  nvme id-ctrl /dev/nvme0 2>&1 | grep -E '^(vid|sn|mn|fr|mdts|cntlid|ver|oacs|aerl|lpa|elpe|kas|sqes|cqes|maxcmd|nn|oncs|vwc|sgls|subnqn|ioccsz|iorcsz|icdoff|cntrltype|oaes) ' | sed 's/^/E2E-CLI id-ctrl: /'
  nvme id-ns /dev/nvme0n1 2>&1 | grep -E '^(nsze|ncap|nuse|nsfeat|nlbaf|flbas|nmic|dlfeat|nguid|eui64|lbaf  0) ' | sed 's/^/E2E-CLI id-ns: /'
  nvme ns-descs /dev/nvme0n1 2>&1 | sed 's/^/E2E-CLI ns-descs: /'
  nvme smart-log /dev/nvme0 2>&1 | grep -E 'temperature|available_spare|data_units|host_(read|write)_commands' | sed 's/^/E2E-CLI smart: /'
  nvme fw-log /dev/nvme0 2>&1 | sed 's/^/E2E-CLI fw-log: /'
  nvme get-feature /dev/nvme0 -f 7 2>&1 | sed 's/^/E2E-CLI get-feature nq: /'
  nvme get-feature /dev/nvme0 -f 0xf 2>&1 | sed 's/^/E2E-CLI get-feature kato: /'
  nvme effects-log /dev/nvme0 2>&1 | head -12 | sed 's/^/E2E-CLI effects: /'
  nvme error-log /dev/nvme0 -e 1 2>&1 | head -4 | sed 's/^/E2E-CLI error-log: /'
  nvme disconnect -n $SUB 2>&1 | sed 's/^/E2E-CLI disconnect: /'
  sleep 1
fi
echo "E2E discovery"
connect nqn.2014-08.org.nvmexpress.discovery "" && for c in /sys/class/nvme/nvme*; do echo "E2E disc ctrl $(cat $c/subsysnqn) cntlid=$(cat $c/cntlid)"; echo 1 > $c/delete_controller; done
for opts in "" ",hdr_digest,data_digest"; do
  echo "E2E pass opts='$opts'"
  connect $SUB "$opts,nr_io_queues=2" || continue
  sleep 2
  C=$(ls -d /sys/class/nvme/nvme* | head -1)
  echo "E2E ctrl model='$(cat $C/model)' serial='$(cat $C/serial)' fw='$(cat $C/firmware_rev)' subsys='$(cat $C/subsysnqn)' state=$(cat $C/state) queues=$(cat $C/queue_count 2>/dev/null)"
  B=$(ls /sys/block | grep -E "^nvme[0-9]+n[0-9]+$" | head -1)
  echo "E2E block $B size=$(cat /sys/block/$B/size) lbs=$(cat /sys/block/$B/queue/logical_block_size) maxhw=$(cat /sys/block/$B/queue/max_hw_sectors_kb) discard_max=$(cat /sys/block/$B/queue/discard_max_bytes) wwid=$(cat /sys/block/$B/wwid 2>/dev/null)"
  dd if=/dev/urandom of=/tmp/pat bs=1M count=8 2>/dev/null
  dd if=/tmp/pat of=/dev/$B bs=1M oflag=direct 2>/dev/null && echo "E2E write ok"
  dd if=/dev/$B of=/tmp/rd bs=1M count=8 iflag=direct 2>/dev/null
  cmp /tmp/pat /tmp/rd && echo "E2E VERIFY 8MiB OK" || echo "E2E VERIFY 8MiB MISMATCH"
  dd if=/dev/urandom of=/tmp/small bs=4k count=3 2>/dev/null
  dd if=/tmp/small of=/dev/$B bs=4k seek=1001 oflag=direct 2>/dev/null
  dd if=/dev/$B of=/tmp/rs bs=4k skip=1001 count=3 iflag=direct 2>/dev/null
  cmp /tmp/small /tmp/rs && echo "E2E VERIFY 4K OK" || echo "E2E VERIFY 4K MISMATCH"
  blkdiscard -o 1048576 -l 2097152 /dev/$B && echo "E2E discard ok" || echo "E2E discard FAILED"
  dd if=/dev/$B of=/tmp/rz bs=1M skip=1 count=2 iflag=direct 2>/dev/null
  dd if=/dev/zero of=/tmp/z bs=1M count=2 2>/dev/null
  cmp /tmp/rz /tmp/z && echo "E2E DISCARD READS ZERO OK" || echo "E2E DISCARD NOT ZERO"
  dd if=/dev/$B of=/tmp/rd3 bs=1M count=1 iflag=direct 2>/dev/null
  dd if=/tmp/pat of=/tmp/p1 bs=1M count=1 2>/dev/null
  cmp /tmp/rd3 /tmp/p1 && echo "E2E OUTSIDE DISCARD INTACT OK" || echo "E2E OUTSIDE DISCARD MISMATCH"
  for i in 0 1 2 3; do dd if=/dev/urandom of=/tmp/par$i bs=64k count=32 2>/dev/null; done
  for i in 0 1 2 3; do dd if=/tmp/par$i of=/dev/$B bs=64k seek=$((256 + i * 64)) oflag=direct 2>/dev/null & done; wait
  ok=1; for i in 0 1 2 3; do dd if=/dev/$B of=/tmp/pr$i bs=64k skip=$((256 + i * 64)) count=32 iflag=direct 2>/dev/null & done; wait
  for i in 0 1 2 3; do cmp /tmp/par$i /tmp/pr$i || ok=0; done; echo "E2E PARALLEL VERIFY ok=$ok"
  if [ -z "$opts" ]; then sleep 12; echo "E2E after 12 s idle (kato 5 s): state=$(cat $C/state)"; dd if=/dev/$B of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null && echo "E2E io after idle ok"
    n=0; while [ "$(cat /sys/block/$B/size)" = 131072 ] && [ $n -lt 40 ]; do sleep 1; n=$((n+1)); done
    echo "E2E size after resize event: $(cat /sys/block/$B/size) (waited $n s)"
    dd if=/tmp/small of=/dev/$B bs=4k seek=20000 oflag=direct 2>/dev/null && dd if=/dev/$B of=/tmp/rs2 bs=4k skip=20000 count=3 iflag=direct 2>/dev/null && cmp /tmp/small /tmp/rs2 && echo "E2E IO BEYOND OLD END OK"
  fi
  sync
  echo 1 > $C/delete_controller && echo "E2E disconnected"
  sleep 1
done
dmesg | grep -i nvme | tail -30
echo "E2E DONE"
poweroff -f
