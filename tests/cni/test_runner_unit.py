"""Pure parts of the runner: result conversion, conf loading order, the cache file format, ids."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from k8sx.cni import cache, conf, invoke
from k8sx.cni.runner import default_container_id, parse_cni_args
from k8sx.cni.types import CNIError, convert_result, go_json

# The reference bridge+host-local+loopback result of cni.md section 2 (cniVersion 1.0.0).
REF_V1 = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cnia-br0", "mac": "1e:ab:01:e1:4f:be"},
        {"name": "veth06acc7e6", "mac": "2e:6e:8f:3a:f5:bd"},
        {"name": "cnia-eth0", "mac": "1e:e7:c2:5b:45:9d", "sandbox": "/var/run/netns/cnia-rt-pod"},
    ],
    "ips": [{"interface": 2, "address": "10.88.7.2/24", "gateway": "10.88.7.1"}],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {},
}


def test_v1_to_031_adds_version_and_back_is_identity():
    r031 = convert_result(REF_V1, "0.3.1")
    assert r031["cniVersion"] == "0.3.1"
    assert r031["ips"] == [{"version": "4", "interface": 2, "address": "10.88.7.2/24", "gateway": "10.88.7.1"}]
    assert r031["interfaces"] == REF_V1["interfaces"]
    assert convert_result(r031, "1.0.0") == REF_V1
    assert convert_result(r031, "0.4.0")["ips"][0]["version"] == "4"
    assert REF_V1["ips"][0] == {"interface": 2, "address": "10.88.7.2/24", "gateway": "10.88.7.1"}  # input untouched


def test_v6_family_and_1_1_relabel():
    r = {"cniVersion": "1.1.0", "ips": [{"address": "fd00::5/64"}], "dns": {"nameservers": ["10.0.0.10"]}}
    assert convert_result(r, "0.4.0")["ips"] == [{"version": "6", "address": "fd00::5/64"}]
    assert convert_result(r, "1.0.0") == {**r, "cniVersion": "1.0.0"}


def test_020_both_ways():
    r020 = {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1",
                                          "routes": [{"dst": "0.0.0.0/0"}]},
            "ip6": {"ip": "fd00::5/64"}, "dns": {"domain": "x"}}
    r1 = convert_result(r020, "1.0.0")
    assert r1 == {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1"},
                                                 {"address": "fd00::5/64"}],
                  "routes": [{"dst": "0.0.0.0/0"}], "dns": {"domain": "x"}}
    back = convert_result(r1, "0.2.0")
    assert back == r020
    # 0.2.0 keeps one address per family: the first.
    two = {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}, {"address": "10.0.1.2/24"}]}
    assert convert_result(two, "0.2.0")["ip4"] == {"ip": "10.0.0.2/24"}
    with pytest.raises(CNIError) as e:
        convert_result({"cniVersion": "1.0.0", "ips": []}, "0.2.0")
    assert e.value.code == 1


def test_unknown_version_is_incompatible():
    with pytest.raises(CNIError) as e:
        convert_result(REF_V1, "9.9.9")
    assert e.value.code == 1 and "9.9.9" in e.value.msg
    with pytest.raises(CNIError):
        convert_result({**REF_V1, "cniVersion": "2.0"}, "1.0.0")


def test_error_object_round_trip():
    err = CNIError(7, "bad conf", "field x", plugin="bridge")
    assert str(err) == "bridge: bad conf (field x), code 7"
    assert err.to_dict("1.0.0") == {"cniVersion": "1.0.0", "code": 7, "msg": "bad conf", "details": "field x"}
    again = CNIError.from_dict(err.to_dict())
    assert (again.code, again.msg, again.details) == (7, "bad conf", "field x")
    assert CNIError(11, "later").to_dict() == {"cniVersion": "1.1.0", "code": 11, "msg": "later"}


def test_go_json_is_gos_map_encoding():
    want = '{"a":{"y":"é","z":"\\u003c\\u0026\\u003e"},"b":1}'.encode()
    assert go_json({"b": 1, "a": {"z": "<&>", "y": "é"}}) == want


def _write(d, name: str, obj) -> str:
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def _list(name: str, version: str = "1.0.0", **extra):
    return {"cniVersion": version, "name": name, "plugins": [{"type": "loopback"}], **extra}


def test_load_order_conflist_first_then_lexical(tmp_path):
    d = str(tmp_path)
    _write(d, "05-single.conf", {"cniVersion": "0.4.0", "name": "net", "type": "bridge"})
    _write(d, "20-b.conflist", _list("net", "1.0.0", plugins=[{"type": "second"}]))
    _write(d, "10-a.conflist", _list("net", "1.0.0", plugins=[{"type": "first"}]))
    _write(d, "30-other.json", {"cniVersion": "0.3.1", "name": "solo", "type": "ptp"})
    _write(d, "40-ignored.txt", {"cniVersion": "0.3.1", "name": "txt", "type": "ptp"})
    net = conf.load_network("net", d)
    assert net.types == ["first"] and net.source.endswith("10-a.conflist")
    solo = conf.load_network("solo", d)
    assert (solo.name, solo.cni_version, solo.types) == ("solo", "0.3.1", ["ptp"])
    # A single conf is promoted with Go's map encoding: sorted keys, compact.
    assert solo.bytes == (b'{"cniVersion":"0.3.1","name":"solo",'
                          b'"plugins":[{"cniVersion":"0.3.1","name":"solo","type":"ptp"}]}')
    with pytest.raises(CNIError, match='no net configuration with name "txt"'):
        conf.load_network("txt", d)
    entries = conf.list_networks(d)
    assert [os.path.basename(e.path) for e in entries] == ["10-a.conflist", "20-b.conflist", "05-single.conf",
                                                            "30-other.json"]


def test_conf_errors_name_the_file(tmp_path):
    d = str(tmp_path)
    with pytest.raises(CNIError, match="no net configurations found"):
        conf.load_network("x", d)
    bad = _write(d, "01-bad.conflist", '{"name": "x", "plugins": [')
    _write(d, "02-good.conflist", _list("good"))
    with pytest.raises(CNIError) as e:
        conf.load_network("good", d)
    assert bad in e.value.msg and e.value.code == 6
    entries = conf.list_networks(d)
    assert entries[0].network is None and bad in entries[0].error and entries[1].network.name == "good"
    os.unlink(bad)
    _write(d, "03-future.conflist", _list("future", "9.9.9"))
    with pytest.raises(CNIError) as e:
        conf.load_network("future", d)
    assert e.value.code == 1 and '"9.9.9"' in e.value.msg and "03-future.conflist" in e.value.msg
    _write(d, "03-future.conflist", {"name": "np", "cniVersion": "1.0.0", "plugins": []})
    with pytest.raises(CNIError, match="no plugins in list"):
        conf.load_network("np", d)
    _write(d, "03-future.conflist", {"name": "nt", "cniVersion": "1.0.0", "plugins": [{"bridge": "x"}]})
    with pytest.raises(CNIError, match="missing 'type'"):
        conf.load_network("nt", d)


def test_cni_versions_picks_highest_supported(tmp_path):
    d = str(tmp_path)
    _write(d, "a.conflist", {"name": "v", "cniVersion": "0.4.0", "cniVersions": ["1.0.0", "0.3.1", "2.5.0"],
                             "plugins": [{"type": "loopback"}], "disableCheck": True})
    net = conf.load_network("v", d)
    assert net.cni_version == "1.0.0" and net.disable_check is True


@pytest.mark.parametrize(("func", "value", "code"), [
    (conf.validate_container_id, "", 3),
    (conf.validate_container_id, "bad/id", 4),
    (conf.validate_container_id, "-lead", 4),
    (conf.validate_network_name, "bad name", 7),
    (conf.validate_ifname, "", 4),
    (conf.validate_ifname, "x" * 16, 4),
    (conf.validate_ifname, "..", 4),
    (conf.validate_ifname, "a:b", 4),
])
def test_validation_like_libcni(func, value, code):
    with pytest.raises(CNIError) as e:
        func(value)
    assert e.value.code == code


def test_valid_names_pass():
    conf.validate_container_id("cnitool-20de5b30f53e57fc4e9a")
    conf.validate_network_name("cni_a.b-c")
    conf.validate_ifname("x" * 15)


def test_cnitool_container_id():
    # sha512("/var/run/netns/cnia-rt-pod")[:10], computed independently of the runner.
    import hashlib

    path = "/var/run/netns/cnia-rt-pod"
    assert default_container_id(path) == "cnitool-" + hashlib.sha512(path.encode()).hexdigest()[:20]
    assert default_container_id(path) == "cnitool-20de5b30f53e57fc4e9a"


def test_parse_cni_args():
    assert parse_cni_args("") == []
    assert parse_cni_args("K8S_POD_NAME=a;IgnoreUnknown=1") == [("K8S_POD_NAME", "a"), ("IgnoreUnknown", "1")]
    for bad in ("novalue", "A=", "=b", "a=b=c"):
        with pytest.raises(CNIError) as e:
            parse_cni_args(bad)
        assert e.value.code == 4


def test_cache_file_format_modes_and_legacy(tmp_path):
    d = str(tmp_path / "cachedir")
    config = b'{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"loopback"}]}\n'
    entry = cache.CacheEntry(container_id="cid", ifname="eth0", network="n", config=config, result=REF_V1,
                             netns="/var/run/netns/p")
    path = cache.write(d, entry)
    assert path == os.path.join(d, "results", "n-cid-eth0")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    with open(path, "rb") as f:
        data = f.read()
    expected = ('{"kind":"cniCacheV1","containerId":"cid","config":"' + base64.b64encode(config).decode()
                + '","ifName":"eth0","networkName":"n","netns":"/var/run/netns/p","result":'
                + json.dumps(REF_V1, sort_keys=True, separators=(",", ":")) + "}").encode()
    assert data == expected  # cniArgs/capabilityArgs omitted when empty, no trailing newline
    entry.cni_args = [("K", "V")]
    entry.capability_args = {"portMappings": [{"hostPort": 1, "containerPort": 2}]}
    cache.write(d, entry)
    with open(path, "rb") as f:
        obj = json.loads(f.read())
    assert list(obj) == ["kind", "containerId", "config", "ifName", "networkName", "netns", "cniArgs",
                         "capabilityArgs", "result"]
    assert obj["cniArgs"] == [["K", "V"]]
    assert cache.cached_result(d, "n", "cid", "eth0", "0.3.1")["ips"][0]["version"] == "4"
    assert [e.container_id for e in cache.attachments(d)] == ["cid"]
    # A bare (pre-cniCacheV1) result file is still read, and converted.
    with open(path, "w") as f:
        json.dump(convert_result(REF_V1, "0.3.1"), f)
    assert cache.cached_result(d, "n", "cid", "eth0", "1.0.0") == REF_V1
    assert cache.attachments(d) == []  # GC only trusts cniCacheV1 entries, as libcni
    cache.remove(d, "n", "cid", "eth0")
    cache.remove(d, "n", "cid", "eth0")  # twice is fine
    assert cache.cached_result(d, "n", "cid", "eth0", "1.0.0") is None


def test_find_plugin_and_marker(tmp_path):
    with pytest.raises(CNIError) as e:
        invoke.find_plugin("k8sxtr-none", [str(tmp_path), "/usr/lib/cni"])
    assert "k8sxtr-none" in e.value.msg and str(tmp_path) in e.value.msg and "/usr/lib/cni" in e.value.msg
    with pytest.raises(CNIError, match="invalid plugin name"):
        invoke.find_plugin("../bridge", ["/usr/lib/cni"])
    assert invoke.find_plugin("bridge", [str(tmp_path), "/usr/lib/cni"]) == "/usr/lib/cni/bridge"
    assert invoke.inprocess_module("/usr/lib/cni/bridge") is None
    p = tmp_path / "k8sxtr-mark"
    p.write_text("#!/bin/sh\n# k8sx-cni-plugin: k8sx.cni.plugins.loopback\nexec true\n")
    assert invoke.inprocess_module(str(p)) == "k8sx.cni.plugins.loopback"


def test_network_completer_reads_names_cheaply(tmp_path, monkeypatch):
    from k8sx.cli.completers import BY_ARGUMENT

    d = str(tmp_path)
    _write(d, "20-b.conflist", _list("k8sxtr-b"))
    _write(d, "10-a.conflist", _list("k8sxtr-a"))
    _write(d, "05-c.conf", {"name": "k8sxtr-c", "type": "loopback"})
    _write(d, "06-dup.json", {"name": "k8sxtr-a", "type": "loopback"})
    _write(d, "07-broken.conflist", "{")
    complete = BY_ARGUMENT["NETWORK"]
    assert complete("k8sxtr", ["cni", "add", "--conf-dir", d]) == [
        ("k8sxtr-a", "10-a.conflist"), ("k8sxtr-b", "20-b.conflist"), ("k8sxtr-c", "05-c.conf")]
    monkeypatch.setenv("NETCONFPATH", d)
    assert complete("k8sxtr-c", ["cni", "del"]) == [("k8sxtr-c", "05-c.conf")]
