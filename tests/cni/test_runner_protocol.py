"""What the runner hands each plugin, checked by real plugin executables that record their inputs.

The recording plugin below is a small executable speaking the CNI protocol (VERSION/ADD/CHECK/DEL/
STATUS/GC, error objects, garbage on demand); it exists so the runner's side of the protocol (stdin,
environment, order, prevResult, runtimeConfig, cache) is observable exactly. It touches no network
namespace, so these tests need none.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import pytest

from k8sx.cni import cache, conf
from k8sx.cni.runner import Runner, RuntimeConf
from k8sx.cni.types import CNIError

PLUGIN = """#!{python} -S
import json, os, sys
raw = sys.stdin.buffer.read()
conf = json.loads(raw or b"{{}}")
cmd = os.environ.get("CNI_COMMAND", "")
name = os.path.basename(sys.argv[0])
rec = os.environ.get("K8SXTR_REC")
if rec:
    n = len(os.listdir(rec))
    with open(os.path.join(rec, "%03d" % n), "w") as f:
        json.dump({{"plugin": name, "cmd": cmd, "raw": raw.decode(), "stdin": conf,
                   "env": {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}}}, f)
mode = (conf.get("mode") or {{}}).get(cmd, "ok")
if mode == "error":
    print(json.dumps({{"cniVersion": conf.get("cniVersion"), "code": 7, "msg": "bad thing", "details": "more"}}))
    sys.exit(1)
if mode == "notready":
    print(json.dumps({{"cniVersion": conf.get("cniVersion"), "code": 50, "msg": "no leases yet"}}))
    sys.exit(1)
if mode == "garbage":
    print("this is not json")
    sys.exit(0)
if mode == "crash":
    sys.stderr.write("boom\\n")
    sys.exit(2)
if cmd == "VERSION":
    print(json.dumps({{"cniVersion": "1.1.0", "supportedVersions": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]}}))
elif cmd == "ADD":
    prev = conf.get("prevResult")
    if prev is None:
        v = conf.get("cniVersion")
        ip = {{"interface": 0, "address": conf.get("address", "10.199.250.2/24"), "gateway": "10.199.250.1"}}
        if v in ("0.3.0", "0.3.1", "0.4.0"):
            ip = {{"version": "4", **ip}}
        prev = {{"cniVersion": v, "interfaces": [{{"name": os.environ["CNI_IFNAME"],
                 "sandbox": os.environ["CNI_NETNS"]}}], "ips": [ip], "dns": {{}}}}
    print(json.dumps(prev))
"""

NETNS = "/var/run/netns/k8sxtr-unused"


@pytest.fixture
def env(monkeypatch):
    """A plugin directory with the recording plugins k8sxtr-a and k8sxtr-b, a record dir, a cache dir."""
    root = tempfile.mkdtemp(prefix="k8sxtr-")
    bindir, rec, cache_dir = (os.path.join(root, d) for d in ("bin", "rec", "cache"))
    os.makedirs(bindir)
    os.makedirs(rec)
    for name in ("k8sxtr-a", "k8sxtr-b"):
        path = os.path.join(bindir, name)
        with open(path, "w") as f:
            f.write(PLUGIN.format(python=sys.executable))
        os.chmod(path, 0o755)
    monkeypatch.setenv("K8SXTR_REC", rec)

    class Env:
        pass

    e = Env()
    e.root, e.bindir, e.rec, e.cache_dir = root, bindir, rec, cache_dir
    e.runner = Runner([os.path.join(root, "nothing-here"), bindir], cache_dir=cache_dir)

    def records():
        out = []
        for n in sorted(os.listdir(rec)):
            with open(os.path.join(rec, n)) as f:
                out.append(json.load(f))
            os.unlink(os.path.join(rec, n))
        return out

    e.records = records
    yield e
    shutil.rmtree(root, ignore_errors=True)


def netlist(version: str = "1.0.0", a: dict | None = None, b: dict | None = None, **extra) -> conf.NetworkConfigList:
    obj = {"cniVersion": version, "name": "k8sxtr-net", **extra,
           "plugins": [{"type": "k8sxtr-a", **(a or {})}, {"type": "k8sxtr-b", **(b or {})}]}
    return conf.conf_list_from_bytes(json.dumps(obj).encode(), "test.conflist")


def rt(cid: str = "k8sxtr-c1", **kw) -> RuntimeConf:
    return RuntimeConf(container_id=cid, netns=NETNS, ifname=kw.pop("ifname", "eth0"), **kw)


def test_add_injects_chains_and_caches(env):
    net = netlist(a={"capabilities": {"portMappings": True, "mac": False}, "address": "10.199.250.9/24"},
                  b={"name": "ignored", "cniVersion": "0.3.1"})
    caps = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}], "mac": "aa:bb:cc:dd:ee:ff",
            "bandwidth": {"ingressRate": 1}}
    result = env.runner.add_network(net, rt(args=[("K8S_POD_NAME", "p"), ("IgnoreUnknown", "1")],
                                            capability_args=caps))
    a, b = env.records()
    assert (a["plugin"], a["cmd"], b["plugin"], b["cmd"]) == ("k8sxtr-a", "ADD", "k8sxtr-b", "ADD")
    # name and cniVersion of the list are injected; only declared, enabled capabilities become runtimeConfig.
    assert a["stdin"]["name"] == b["stdin"]["name"] == "k8sxtr-net"
    assert a["stdin"]["cniVersion"] == b["stdin"]["cniVersion"] == "1.0.0"
    assert a["stdin"]["runtimeConfig"] == {"portMappings": caps["portMappings"]}
    assert "runtimeConfig" not in b["stdin"] and "prevResult" not in a["stdin"]
    assert b["stdin"]["prevResult"] == result  # chaining
    assert result["ips"] == [{"interface": 0, "address": "10.199.250.9/24", "gateway": "10.199.250.1"}]
    # stdin is Go's map encoding, as libcni sends it.
    assert a["raw"] == json.dumps(a["stdin"], sort_keys=True, separators=(",", ":"))
    assert a["env"] == {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "k8sxtr-c1", "CNI_NETNS": NETNS,
                        "CNI_IFNAME": "eth0", "CNI_ARGS": "K8S_POD_NAME=p;IgnoreUnknown=1",
                        "CNI_PATH": f"{env.root}/nothing-here:{env.bindir}"}
    entry = cache.read(env.cache_dir, "k8sxtr-net", "k8sxtr-c1", "eth0")
    assert entry.result == result and entry.config == net.bytes and entry.netns == NETNS
    assert entry.cni_args == [("K8S_POD_NAME", "p"), ("IgnoreUnknown", "1")] and entry.capability_args == caps
    assert env.runner.get_cached_result(net, rt()) == result


def test_check_and_del_get_cached_result_in_list_version(env):
    net = netlist("1.0.0")
    # A result cached by an older config (0.3.1, bare legacy file) is converted to the list's 1.0.0.
    old = {"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.199.250.7/24"}], "dns": {}}
    path = cache.cache_path(env.cache_dir, "k8sxtr-net", "k8sxtr-c1", "eth0")
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        json.dump(old, f)
    env.runner.check_network(net, rt())
    recs = env.records()
    assert [(r["plugin"], r["cmd"]) for r in recs] == [("k8sxtr-a", "CHECK"), ("k8sxtr-b", "CHECK")]
    want = {"cniVersion": "1.0.0", "ips": [{"address": "10.199.250.7/24"}], "dns": {}}
    assert all(r["stdin"]["prevResult"] == want for r in recs)
    env.runner.del_network(net, rt())
    recs = env.records()
    assert [(r["plugin"], r["cmd"]) for r in recs] == [("k8sxtr-b", "DEL"), ("k8sxtr-a", "DEL")]  # reverse
    assert all(r["stdin"]["prevResult"] == want for r in recs)
    assert not os.path.exists(path)
    env.runner.del_network(net, rt())  # no cache: no prevResult, still fine
    assert all("prevResult" not in r["stdin"] for r in env.records())


def test_del_below_040_sends_no_prev_result(env):
    net = netlist("0.3.1")
    env.runner.add_network(net, rt())
    env.records()
    env.runner.del_network(net, rt())
    assert all("prevResult" not in r["stdin"] for r in env.records())
    assert cache.read(env.cache_dir, "k8sxtr-net", "k8sxtr-c1", "eth0") is None


def test_check_refused_below_040_and_disable_check(env):
    with pytest.raises(CNIError) as e:
        env.runner.check_network(netlist("0.3.1"), rt())
    assert e.value.msg == 'configuration version "0.3.1" does not support the CHECK command'
    assert e.value.code == 1
    env.runner.check_network(netlist("1.0.0", disableCheck=True), rt())
    assert env.records() == []


def test_plugin_error_object_garbage_and_crash(env):
    with pytest.raises(CNIError) as e:
        env.runner.add_network(netlist(b={"mode": {"ADD": "error"}}), rt())
    assert (e.value.code, e.value.msg, e.value.details, e.value.plugin) == (7, "bad thing", "more", "k8sxtr-b")
    assert str(e.value) == "k8sxtr-b: bad thing (more), code 7"
    with pytest.raises(CNIError) as e:
        env.runner.add_network(netlist(a={"mode": {"ADD": "garbage"}}), rt())
    assert e.value.code == 6 and e.value.plugin == "k8sxtr-a" and "this is not json" in e.value.details
    with pytest.raises(CNIError) as e:
        env.runner.del_network(netlist(a={"mode": {"DEL": "crash"}}), rt())
    assert e.value.plugin == "k8sxtr-a" and "exit 2" in e.value.msg and e.value.details == "boom"
    assert cache.read(env.cache_dir, "k8sxtr-net", "k8sxtr-c1", "eth0") is None  # failed ADDs cached nothing


def test_missing_plugin_fails_before_any_plugin_runs(env):
    net = conf.conf_list_from_bytes(json.dumps({"cniVersion": "1.0.0", "name": "n", "plugins": [
        {"type": "k8sxtr-a"}, {"type": "k8sxtr-missing"}]}).encode())
    with pytest.raises(CNIError) as e:
        env.runner.add_network(net, rt())
    assert 'failed to find plugin "k8sxtr-missing"' in e.value.msg and env.bindir in e.value.msg
    assert env.records() == []


def test_invalid_runtime_conf_rejected(env):
    for bad in (rt("bad/id"), rt(ifname="way-too-long-ifname")):
        with pytest.raises(CNIError) as e:
            env.runner.add_network(netlist(), bad)
        assert e.value.code == 4
    assert env.records() == []


def test_status_only_for_1_1_and_not_ready(env):
    assert env.runner.get_status(netlist("1.0.0")) is False
    assert env.records() == []
    assert env.runner.get_status(netlist("1.1.0")) is True
    recs = env.records()
    assert [(r["plugin"], r["cmd"]) for r in recs] == [("k8sxtr-a", "STATUS"), ("k8sxtr-b", "STATUS")]
    assert recs[0]["stdin"] == {"cniVersion": "1.1.0", "name": "k8sxtr-net", "type": "k8sxtr-a"}
    with pytest.raises(CNIError) as e:
        env.runner.get_status(netlist("1.1.0", b={"mode": {"STATUS": "notready"}}))
    assert e.value.code == 50 and e.value.plugin == "k8sxtr-b"


def test_gc_deletes_stale_attachments_and_gcs_plugins(env):
    net = netlist("1.1.0")
    env.runner.add_network(net, rt("k8sxtr-keep"))
    env.runner.add_network(net, rt("k8sxtr-stale", ifname="net1", args=[("A", "B")]))
    other = conf.conf_list_from_bytes(json.dumps({"cniVersion": "1.1.0", "name": "k8sxtr-other",
                                                  "plugins": [{"type": "k8sxtr-a"}]}).encode())
    env.runner.add_network(other, rt("k8sxtr-elsewhere"))
    env.records()
    assert env.runner.gc(netlist("1.1.0", disableGC=True), []) == []  # opted out: nothing deleted, no GC
    assert env.records() == []
    removed = env.runner.gc(net, [("k8sxtr-keep", "eth0")])
    assert [(e.container_id, e.ifname) for e in removed] == [("k8sxtr-stale", "net1")]
    recs = env.records()
    assert [(r["plugin"], r["cmd"]) for r in recs] == [("k8sxtr-b", "DEL"), ("k8sxtr-a", "DEL"),
                                                       ("k8sxtr-a", "GC"), ("k8sxtr-b", "GC")]
    # The stale attachment is deleted with what its cache entry remembers.
    assert recs[0]["env"]["CNI_CONTAINERID"] == "k8sxtr-stale" and recs[0]["env"]["CNI_ARGS"] == "A=B"
    assert recs[0]["env"]["CNI_NETNS"] == NETNS and recs[0]["stdin"]["prevResult"]["ips"]
    assert recs[2]["stdin"]["cni.dev/valid-attachments"] == [{"containerID": "k8sxtr-keep", "ifname": "eth0"}]
    left = sorted((e.network, e.container_id) for e in cache.attachments(env.cache_dir))
    assert left == [("k8sxtr-net", "k8sxtr-keep"), ("k8sxtr-other", "k8sxtr-elsewhere")]
    # Older lists: stale entries are still deleted, but plugins get no GC.
    old = netlist("1.0.0")
    assert [e.container_id for e in env.runner.gc(old, [])] == ["k8sxtr-keep"]
    assert [r["cmd"] for r in env.records()] == ["DEL", "DEL"]


def test_version_negotiation(env):
    assert env.runner.version_info("k8sxtr-a")["supportedVersions"][-1] == "1.1.0"
    net = netlist("1.0.0", a={"capabilities": {"portMappings": True}})
    assert env.runner.validate_network(net) == ["portMappings"]
    with pytest.raises(CNIError) as e:
        env.runner.validate_network(netlist("0.2.0"))
    assert e.value.code == 1 and 'does not support config version "0.2.0"' in e.value.msg
