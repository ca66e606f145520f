#!/usr/bin/env python3
"""The Cinder API side of tests/guest/run.sh (Python's standard library only).

    drive.py setup DATA_DIR API_ADDR GUEST_IQN GUEST_HOSTNQN > guest-env.sh
        Gets a token from the built-in identity (DATA_DIR/admin-openrc), waits for the node,
        creates two 1 GiB volumes, attaches one with an iSCSI connector carrying GUEST_IQN and
        one with an NVMe connector carrying only GUEST_HOSTNQN, completes both attachments,
        and prints the guest's settings (shell assignments) from their connection_info. Keeps
        what teardown needs in DATA_DIR/guest-state.json.
    drive.py teardown DATA_DIR API_ADDR
        Deletes both attachments and volumes, checking each step; prints PASS/FAIL lines.
"""
import json
import shlex
import sys
import time
import urllib.error
import urllib.request

VERSION = "volume 3.54"


class Api:
    def __init__(self, data_dir, addr):
        self.base = f"http://{addr}"
        self.token = None
        self.project = None
        password = None
        with open(f"{data_dir}/admin-openrc") as f:
            for line in f:
                if line.startswith("export OS_PASSWORD="):
                    password = line.split("=", 1)[1].strip().strip("'\"")
        body = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"id": "default"}, "password": password}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
        status, headers, reply = self.call("POST", "/identity/v3/auth/tokens", body, raw=True)
        if status != 201:
            sys.exit(f"token: {status} {reply}")
        self.token = headers["x-subject-token"]
        self.project = reply["token"]["project"]["id"]

    def call(self, method, path, body=None, raw=False):
        url = self.base + (path if raw else f"/v3/{self.project}/{path}")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("OpenStack-API-Version", VERSION)
        if self.token:
            req.add_header("X-Auth-Token", self.token)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, headers, text = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, headers, text = e.code, e.headers, e.read()
        headers = {k.lower(): v for k, v in headers.items()}
        try:
            reply = json.loads(text) if text else {}
        except ValueError:
            reply = {"raw": text.decode(errors="replace")}
        return status, headers, reply

    def ok(self, method, path, body=None, want=200):
        status, _, reply = self.call(method, path, body)
        if status != want:
            sys.exit(f"{method} {path}: {status} (wanted {want}): {reply}")
        return reply

    def wait_volume(self, vid, status, limit=60):
        deadline = time.time() + limit
        while True:
            v = self.ok("GET", f"volumes/{vid}")["volume"]
            if v["status"] == status:
                return v
            if v["status"] == "error" or time.time() > deadline:
                sys.exit(f"volume {vid} is {v['status']}, never {status}: {v}")
            time.sleep(0.1)


def setup(data_dir, addr, iqn, hostnqn):
    api = Api(data_dir, addr)
    deadline = time.time() + 60
    while True:
        az = api.ok("GET", "os-availability-zone")
        if az["availabilityZoneInfo"] and az["availabilityZoneInfo"][0]["zoneState"]["available"]:
            break
        if time.time() > deadline:
            sys.exit(f"the node never came up: {az}")
        time.sleep(0.2)
    state = {}
    out = {}
    for kind, connector in (
        ("iscsi", {"initiator": iqn, "ip": "10.0.2.15", "host": "basalt-guest",
                   "platform": "x86_64", "os_type": "linux", "multipath": False}),
        ("nvme", {"nqn": hostnqn, "ip": "10.0.2.15", "host": "basalt-guest",
                  "platform": "x86_64", "os_type": "linux"}),
    ):
        v = api.ok("POST", "volumes", {"volume": {"size": 1, "name": f"guest-{kind}"}}, 202)
        vid = v["volume"]["id"]
        api.wait_volume(vid, "available")
        at = api.ok("POST", "attachments", {"attachment": {
            "volume_uuid": vid, "instance_uuid": "0c6f3a52-7d43-4d0e-9a59-3f1e2d4c5b6a",
            "connector": connector, "mode": "rw"}})["attachment"]
        ci = at["connection_info"]
        api.ok("POST", f"attachments/{at['id']}/action", {"os-complete": {}}, 204)
        api.wait_volume(vid, "in-use")
        state[kind] = {"volume": vid, "attachment": at["id"]}
        if kind == "iscsi":
            if ci.get("driver_volume_type") != "iscsi" or ci.get("auth_method") != "CHAP":
                sys.exit(f"iSCSI connection_info: {ci}")
            out["ISCSI_PORT"] = ci["target_portal"].rsplit(":", 1)[1]
            out["ISCSI_TARGET_PORTAL"] = ci["target_portal"]
            out["ISCSI_IQN"] = ci["target_iqn"]
            out["ISCSI_LUN"] = str(ci.get("target_lun", 0))
            out["CHAP_USER"] = ci["auth_username"]
            out["CHAP_SECRET"] = ci["auth_password"]
        else:
            if ci.get("driver_volume_type") != "nvmeof":
                sys.exit(f"NVMe-oF connection_info: {ci}")
            address, port, transport = ci["portals"][0]
            if transport != "tcp":
                sys.exit(f"NVMe-oF portal not tcp: {ci}")
            out["NVME_PORT"] = str(port)
            out["NVME_TARGET_ADDR"] = address
            out["NVME_NQN"] = ci["target_nqn"]
            out["NVME_NSID"] = str(ci.get("ns_id", 1))
    out["GUEST_IQN"] = iqn
    out["GUEST_HOSTNQN"] = hostnqn
    with open(f"{data_dir}/guest-state.json", "w") as f:
        json.dump(state, f)
    for k, v in out.items():
        print(f"{k}={shlex.quote(v)}")


def teardown(data_dir, addr):
    api = Api(data_dir, addr)
    with open(f"{data_dir}/guest-state.json") as f:
        state = json.load(f)
    fails = 0
    for kind, s in state.items():
        status, _, reply = api.call("DELETE", f"attachments/{s['attachment']}")
        v = api.ok("GET", f"volumes/{s['volume']}")["volume"]
        good = status == 200 and v["status"] == "available"
        print(f"{'PASS' if good else 'FAIL'} host: {kind} attachment deleted, volume {v['status']}"
              + ("" if good else f" ({status} {reply})"))
        fails += not good
        status, _, reply = api.call("DELETE", f"volumes/{s['volume']}")
        good = status == 202
        print(f"{'PASS' if good else 'FAIL'} host: {kind} volume deleted"
              + ("" if good else f" ({status} {reply})"))
        fails += not good
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "setup":
        setup(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "teardown":
        teardown(*sys.argv[2:])
    else:
        sys.exit(__doc__)
