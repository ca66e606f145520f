#!/usr/bin/env bash
# Runs OpenStack tempest's volume API tests against a scratch `basalt up`.
#
#   tests/tempest/run.sh                         # all of tempest.api.volume, admin and not
#   tests/tempest/run.sh '^tempest\.api\.volume\.test_volumes_get'   # a subset (a regex)
#
# Environment:
#   BASALT           the binary (default build/release/basalt: cargo build --release -p basalt)
#   TEMPEST_VERSION  default 46.3.0 (README.md says why not 47.0.0)
#   TEMPEST_VENV     default ~/.cache/basalt-tempest/venv-VERSION, made from PyPI when missing
#   KEEP=1           keep the scratch directory (basalt.log, tempest.out, ws/logs/tempest.log)
#   DYNAMIC_CREDS=1  tempest makes its own projects and users instead of using accounts.yaml
# Exits with tempest's status. Takes about 2 minutes (README.md).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
basalt=${BASALT:-$repo/build/release/basalt}
version=${TEMPEST_VERSION:-46.3.0}
venv=${TEMPEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/basalt-tempest/venv-$version}
regex=${1:-'^tempest\.api\.volume'}

[ -x "$basalt" ] || { echo "run.sh: $basalt missing: cargo build --release -p basalt" >&2; exit 2; }
if [ ! -x "$venv/bin/tempest" ]; then
    echo "run.sh: installing tempest $version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "tempest==$version"
fi

tmp=$(mktemp -d /tmp/basalt-tempest.XXXXXX)
dir=$tmp/data
ws=$tmp/ws
mkdir -p "$dir"
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    if [ "${KEEP:-0}" = 1 ]; then echo "run.sh: kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api_port=$(free_port); iscsi_port=$(free_port); nvmf_port=$(free_port)
api=127.0.0.1:$api_port

cat >"$dir/datapath.toml" <<TOML
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
listen = ["127.0.0.1:$iscsi_port"]

[nvmf]
listen = ["127.0.0.1:$nvmf_port"]

[admin]
socket = "$dir/datapath.sock"

[ring]
socket = "$dir/ring.sock"
TOML
cat >"$dir/control.toml" <<TOML
[control]
database = "$dir/basalt.db"
stats_interval_secs = 1

[[node]]
host = "node1"
ring_socket = "$dir/ring.sock"
iscsi_portal = "127.0.0.1:$iscsi_port"
nvmf_portal = "127.0.0.1:$nvmf_port"

[api]
listen = "$api"
auth_strategy = "builtin"
token_ttl_secs = 86400
TOML

echo "run.sh: basalt up in $dir, API on $api"
"$basalt" up --pool-size 16G --data-dir "$dir" >"$tmp/basalt.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
    grep -q 'basalt up: Ctrl-C to stop' "$tmp/basalt.log" && break
    kill -0 "$pid" 2>/dev/null || { cat "$tmp/basalt.log" >&2; exit 1; }
    sleep 0.1
done
grep -q 'basalt up: Ctrl-C to stop' "$tmp/basalt.log" || { echo "run.sh: basalt up did not start" >&2; exit 1; }

admin_pw=$(sed -n "s/^export OS_PASSWORD=//p" "$dir/admin-openrc" | tr -d "'\"")
ident() { "$basalt" identity "$@" --database "$dir/identity.db" >/dev/null; }
for who in primary alt; do
    ident project create "tempest-$who"
    ident user create "tempest-$who" --password "tempest-$who-pw" --project "tempest-$who"
    ident role add "tempest-$who" "tempest-$who" member
done
ident user create tempest-reader --password tempest-reader-pw --project tempest-primary
ident role add tempest-reader tempest-primary reader

# Wait until the node has reported (the availability zone is available).
python3 - "$api" "$admin_pw" <<'PY'
import json, sys, time, urllib.request
api, pw = sys.argv[1], sys.argv[2]
body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
    "name": "admin", "domain": {"id": "default"}, "password": pw}}},
    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
req = urllib.request.Request(f"http://{api}/identity/v3/auth/tokens", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
token = urllib.request.urlopen(req).headers["X-Subject-Token"]
deadline = time.time() + 60
while True:
    r = urllib.request.urlopen(urllib.request.Request(
        f"http://{api}/v3/os-availability-zone", headers={"X-Auth-Token": token}))
    if json.load(r)["availabilityZoneInfo"][0]["zoneState"]["available"]:
        break
    if time.time() > deadline:
        sys.exit("run.sh: the node never came up")
    time.sleep(0.2)
PY

"$venv/bin/tempest" init --workspace-path "$tmp/workspace.yaml" --name "$(basename "$tmp")" "$ws" >"$tmp/init.log" 2>&1 || { cat "$tmp/init.log" >&2; exit 1; }
sed -e "s|@ADMIN_PASSWORD@|$admin_pw|" "$here/accounts.yaml.in" >"$ws/etc/accounts.yaml"
sed -e "s|@API@|$api|g" -e "s|@ACCOUNTS@|$ws/etc/accounts.yaml|" -e "s|@LOGDIR@|$ws/logs|" \
    "$here/tempest.conf.in" >"$ws/etc/tempest.conf"
if [ "${DYNAMIC_CREDS:-0}" = 1 ]; then
    # Tempest makes its own projects and users through the built-in identity's admin API.
    sed -i -e 's/^use_dynamic_credentials = False/use_dynamic_credentials = True/' \
        -e "s|^test_accounts_file = .*|admin_username = admin\nadmin_password = $admin_pw\nadmin_project_name = admin\nadmin_domain_name = Default|" \
        "$ws/etc/tempest.conf"
fi

start=$(date +%s)
cd "$ws"
"$venv/bin/tempest" run --list-tests --regex "$regex" 2>/dev/null | grep '^tempest\.' >"$tmp/tests.list" || true
rc=0
"$venv/bin/tempest" run --regex "$regex" --concurrency 1 >"$tmp/tempest.out" 2>&1 || rc=$?
end=$(date +%s)
# Failures with the exception that ended them, skips grouped by reason, totals.
python3 "$here/summarize.py" "$tmp/tempest.out" "$tmp/tests.list" | tee "$tmp/summary.txt"
echo "run.sh: tempest took $((end - start)) s (exit $rc); logs: $tmp (KEEP=1 keeps them)"
exit "$rc"
