"""k8sx's CNI plugins without a pod network: error codes, host-local's shared on-disk state with the
reference host-local, flannel's rendered delegate, the installed executables and the plugin daemon.

IPAM needs no namespace (host-local only writes files), so the allocation tests drive our
host-local in-process and the Debian one as an executable on one dataDir under /run/k8sxtp-*.
The executable tests run in a node namespace they create.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from support import REPO, bin_path

from k8sx.cni import invoke, skel
from k8sx.cni.install import PLUGINS, render
from k8sx.cni.plugins import flannel
from k8sx.cni.types import CNIError

REF = "/usr/lib/cni"
HL = "k8sx.cni.plugins.host_local"


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="k8sxtp-", dir="/run")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def env(command: str, cid: str = "k8sxtp-c1", netns: str = "/var/run/netns/k8sxtp-none", **extra: str) -> dict:
    return {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": "eth0",
            "CNI_PATH": REF, **extra}


def error_of(module: str, e: dict, stdin: bytes) -> dict:
    out, rc = skel.run(module, e, stdin)
    assert rc == 1, out
    return json.loads(out)


BRIDGE = {"cniVersion": "1.0.0", "name": "k8sxtp-net", "type": "k8sx-bridge", "bridge": "k8sxtpbr9",
          "ipam": {"type": "k8sx-host-local", "ranges": [[{"subnet": "10.198.20.0/24"}]]}}


@pytest.mark.parametrize(("module", "environ", "stdin", "code", "text"), [
    ("bridge", env("ADD"), b"{not json", 6, "decoding"),
    ("bridge", env("ADD"), b"[1, 2]", 6, "not a JSON object"),
    ("bridge", {k: v for k, v in env("ADD").items() if k != "CNI_NETNS"}, json.dumps(BRIDGE).encode(), 4,
     "CNI_NETNS"),
    ("bridge", {k: v for k, v in env("ADD").items() if k != "CNI_COMMAND"}, json.dumps(BRIDGE).encode(), 4,
     "CNI_COMMAND"),
    ("bridge", env("FROB"), json.dumps(BRIDGE).encode(), 4, "unknown CNI_COMMAND"),
    ("bridge", env("ADD"), json.dumps({**BRIDGE, "cniVersion": "9.9.9"}).encode(), 1, "incompatible"),
    ("bridge", env("ADD"), json.dumps(BRIDGE).encode(), 3, "failed to open netns"),
    ("bridge", env("ADD"), json.dumps({**BRIDGE, "hairpinMode": True, "promiscMode": True}).encode(), 7,
     "hairpin"),
    ("bridge", env("ADD"), json.dumps({**BRIDGE, "mtu": "big"}).encode(), 7, "mtu"),
    ("bridge", env("GC"), json.dumps(BRIDGE).encode(), 1, "does not allow GC"),
    ("bridge", env("CHECK"), json.dumps({**BRIDGE, "cniVersion": "0.3.1"}).encode(), 1, "CHECK"),
    ("host_local", env("ADD"), json.dumps({"cniVersion": "1.0.0", "name": "n", "ipam": {}}).encode(), 7,
     "no IP ranges"),
    ("host_local", env("ADD"), json.dumps({"cniVersion": "1.0.0", "name": "n"}).encode(), 7, "ipam"),
    ("host_local", env("ADD"), json.dumps({"cniVersion": "1.0.0", "name": "n", "ipam": {
        "ranges": [[{"subnet": "10.198.21.0/24", "rangeStart": "10.198.99.1"}]]}}).encode(), 7, "not in network"),
    ("host_local", env("ADD"), json.dumps({"cniVersion": "1.0.0", "name": "n", "ipam": {
        "ranges": [[{"subnet": "nonsense"}]]}}).encode(), 7, "invalid CIDR"),
    ("portmap", env("ADD"), json.dumps({"cniVersion": "1.0.0", "name": "n", "runtimeConfig": {
        "portMappings": [{"hostPort": 1, "containerPort": 2}]}}).encode(), 7, "chained"),
    ("portmap", env("ADD"), json.dumps({"cniVersion": "1.0.0", "name": "n", "prevResult": {"cniVersion": "1.0.0"},
                                        "runtimeConfig": {"portMappings": [{"hostPort": 0, "containerPort": 2}]}}
                                       ).encode(), 7, "host port"),
    ("flannel", env("ADD"), json.dumps({"cniVersion": "1.0.0", "name": "n", "subnetFile": "/run/k8sxtp-none.env"}
                                       ).encode(), 11, "no such file"),
    ("loopback", env("ADD"), json.dumps({"cniVersion": "1.0.0", "name": "n"}).encode(), 3, "netns"),
])
def test_bad_input_gets_its_cni_error_code(module, environ, stdin, code, text):
    err = error_of(PLUGINS[module.replace("_", "-")], environ, stdin)
    assert err["code"] == code, err
    assert text in err["msg"] + err.get("details", ""), err


def test_flannel_config_errors(workdir):
    path = os.path.join(workdir, "subnet.env")
    with open(path, "w") as fh:
        fh.write("FLANNEL_NETWORK=10.198.0.0/16\nFLANNEL_SUBNET=10.198.30.1/24\n")
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "k8sx-flannel", "subnetFile": path}
    err = error_of(PLUGINS["flannel"], env("ADD"), json.dumps(conf).encode())
    assert err["code"] == 7 and err["msg"] == f"{path} is missing FLANNEL_MTU, FLANNEL_IPMASQ"
    with open(path, "a") as fh:
        fh.write("FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    for bad in ({"name": "x"}, {"ipam": {}}, {"type": 5}):
        err = error_of(PLUGINS["flannel"], env("ADD"), json.dumps({**conf, "delegate": bad}).encode())
        assert err["code"] == 7, err


def test_version_answer():
    out, rc = skel.run(PLUGINS["bridge"], {"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.0.0"}')
    assert rc == 0
    assert json.loads(out) == {"cniVersion": "1.1.0",
                               "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}


def test_flannel_renders_the_reference_delegate_byte_for_byte():
    """cni.md section 5: the delegate written for cnia-flannel (installed under the reference name)."""
    conf = {"name": "cnia-flannel", "cniVersion": "0.3.1", "type": "flannel",
            "subnetFile": "/run/cnia/flannel/subnet.env", "dataDir": "/run/cnia/flannel-cni",
            "ipam": {"type": "host-local", "dataDir": "/run/cnia/host-local"},
            "delegate": {"bridge": "cnia-cni0", "hairpinMode": True, "isDefaultGateway": True}}
    args = skel.parse(env("ADD"), json.dumps(conf).encode())
    fenv = flannel.SubnetEnv(networks=["10.244.0.0/16"], subnet="10.244.1.0/24", mtu=1450, ipmasq=True)
    from k8sx.cni.types import go_json

    assert go_json(flannel.render_delegate(args, fenv)) == (
        b'{"bridge":"cnia-cni0","cniVersion":"0.3.1","hairpinMode":true,"ipMasq":false,"ipam":{"dataDir":'
        b'"/run/cnia/host-local","ranges":[[{"subnet":"10.244.1.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],'
        b'"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cnia-flannel",'
        b'"type":"bridge"}')
    # Installed as k8sx-flannel, the defaults are k8sx's plugins; explicit types always win.
    args = skel.parse(env("ADD"), json.dumps({**conf, "type": "k8sx-flannel", "ipam": {}}).encode())
    d = flannel.render_delegate(args, fenv)
    assert (d["type"], d["ipam"]["type"], d["isGateway"]) == ("k8sx-bridge", "k8sx-host-local", True)
    args = skel.parse(env("ADD"), json.dumps({**conf, "delegate": {"type": "ptp"}}).encode())
    d = flannel.render_delegate(args, fenv)
    assert d["type"] == "ptp" and "isGateway" not in d


# host-local ------------------------------------------------------------------------------------
def ipam_conf(data_dir: str, ranges: list, name: str = "k8sxtp-ipam", version: str = "1.0.0", **extra) -> bytes:
    return json.dumps({"cniVersion": version, "name": name, "type": "host-local",
                       "ipam": {"type": "host-local", "dataDir": data_dir, "ranges": ranges, **extra}}).encode()


def ours(command: str, cid: str, conf: bytes, ifname: str = "eth0") -> dict | None:
    out = skel.invoke_inprocess(HL, {**env(command, cid), "CNI_IFNAME": ifname}, conf)
    return json.loads(out) if out.strip() else None


def reference(command: str, cid: str, conf: bytes, ifname: str = "eth0") -> dict | None:
    p = subprocess.run([f"{REF}/host-local"], input=conf, env={**env(command, cid), "CNI_IFNAME": ifname},
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout) if p.stdout.strip() else None


def test_host_local_result_equals_the_reference(workdir):
    conf = ipam_conf(workdir, [[{"subnet": "10.198.22.0/24"}]], routes=[{"dst": "0.0.0.0/0"}])
    a = ours("ADD", "k8sxtp-a", conf)
    b = reference("ADD", "k8sxtp-b", conf)
    assert list(a) == list(b) == ["cniVersion", "ips", "routes", "dns"]
    assert a["ips"] == [{"address": "10.198.22.2/24", "gateway": "10.198.22.1"}]
    assert b["ips"] == [{"address": "10.198.22.3/24", "gateway": "10.198.22.1"}]  # round-robin shared
    assert a["routes"] == b["routes"] and a["dns"] == b["dns"] == {}
    d = os.path.join(workdir, "k8sxtp-ipam")
    for ip, cid in (("10.198.22.2", "k8sxtp-a"), ("10.198.22.3", "k8sxtp-b")):
        with open(os.path.join(d, ip), "rb") as fh:
            assert fh.read() == f"{cid}\r\neth0".encode()
        assert oct(os.stat(os.path.join(d, ip)).st_mode & 0o777) == "0o644"
    with open(os.path.join(d, "last_reserved_ip.0")) as fh:
        assert fh.read() == "10.198.22.3"
    # Each side checks and releases what the other allocated.
    ours("CHECK", "k8sxtp-b", conf)
    reference("CHECK", "k8sxtp-a", conf)
    ours("DEL", "k8sxtp-b", conf)
    reference("DEL", "k8sxtp-a", conf)
    assert sorted(os.listdir(d)) == ["last_reserved_ip.0", "lock"]
    with pytest.raises(CNIError, match="Failed to find address"):
        ours("CHECK", "k8sxtp-a", conf)


def test_host_local_shares_a_datadir_with_the_reference_under_concurrency(workdir):
    conf = ipam_conf(workdir, [[{"subnet": "10.198.23.0/27"}]])

    def one(i: int) -> str:
        fn = ours if i % 2 else reference
        return fn("ADD", f"k8sxtp-c{i}", conf)["ips"][0]["address"]

    with ThreadPoolExecutor(20) as pool:
        addrs = list(pool.map(one, range(20)))
    assert len(set(addrs)) == 20
    d = os.path.join(workdir, "k8sxtp-ipam")
    assert len([f for f in os.listdir(d) if f.startswith("10.")]) == 20
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(lambda i: (ours if i % 2 == 0 else reference)("DEL", f"k8sxtp-c{i}", conf), range(20)))
    assert sorted(os.listdir(d)) == ["last_reserved_ip.0", "lock"]


def test_host_local_ranges_round_robin_exhaustion_and_duplicates(workdir):
    conf = ipam_conf(workdir, [
        [{"subnet": "10.198.24.0/24", "rangeStart": "10.198.24.10", "rangeEnd": "10.198.24.11"},
         {"subnet": "10.198.25.0/24", "rangeStart": "10.198.25.1", "rangeEnd": "10.198.25.2",
          "gateway": "10.198.25.2"}],
        [{"subnet": "fd00:198::/120"}]])
    got = [ours("ADD", f"k8sxtp-{i}", conf)["ips"] for i in range(3)]
    assert [g[0]["address"] for g in got] == ["10.198.24.10/24", "10.198.24.11/24", "10.198.25.1/24"]
    assert got[2][0]["gateway"] == "10.198.25.2"  # the gateway is skipped, not handed out
    assert [g[1]["address"] for g in got] == ["fd00:198::2/120", "fd00:198::3/120", "fd00:198::4/120"]
    with pytest.raises(CNIError, match="no IP addresses available"):
        ours("ADD", "k8sxtp-3", conf)
    with pytest.raises(CNIError, match="duplicate allocation"):
        ours("ADD", "k8sxtp-0", conf)
    # The failed ADD left nothing behind in the second range set.
    assert not os.path.exists(os.path.join(workdir, "k8sxtp-ipam", "fd00:198::5"))
    ours("DEL", "k8sxtp-1", conf)
    assert ours("ADD", "k8sxtp-4", conf)["ips"][0]["address"] == "10.198.24.11/24"  # wrapped around
    # A requested address (CNI_ARGS IP=) and spec 1.1's GC.
    conf2 = ipam_conf(workdir, [[{"subnet": "10.198.26.0/24"}]], name="k8sxtp-ipam2", version="1.1.0")
    out = skel.invoke_inprocess(HL, {**env("ADD", "k8sxtp-r"), "CNI_ARGS": "IP=10.198.26.77"}, conf2)
    assert json.loads(out)["ips"][0]["address"] == "10.198.26.77/24"
    ours("ADD", "k8sxtp-s", conf2)
    gc = json.loads(conf2)
    gc["cni.dev/valid-attachments"] = [{"containerID": "k8sxtp-s", "ifname": "eth0"}]
    skel.invoke_inprocess(HL, {"CNI_COMMAND": "GC", "CNI_PATH": REF}, json.dumps(gc).encode())
    left = [f for f in os.listdir(os.path.join(workdir, "k8sxtp-ipam2")) if f.startswith("10.")]
    assert left == ["10.198.26.78"]  # round-robin resumes after the requested address, as the reference


# executables and the daemon ------------------------------------------------------------------------
def test_install_plugins_names_and_markers(workdir):
    p = subprocess.run([bin_path("k8sx"), "cni", "install-plugins", "--dir", workdir], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    names = sorted(os.listdir(workdir))
    assert names == [".k8sx-plugin-client", "k8sx-bridge", "k8sx-flannel", "k8sx-host-local", "k8sx-loopback",
                     "k8sx-portmap"]
    for role, module in PLUGINS.items():
        path = os.path.join(workdir, "k8sx-" + role)
        assert os.access(path, os.X_OK)
        with open(path, "rb") as fh:
            assert f"# k8sx-cni-plugin: {module}\n".encode() in fh.read(256)
        assert invoke.inprocess_module(path) == module
    ref_dir = os.path.join(workdir, "ref")
    p = subprocess.run([bin_path("k8sx"), "cni", "install-plugins", "--dir", ref_dir, "--reference-names"],
                       capture_output=True, text=True)
    assert p.returncode == 0 and sorted(os.listdir(ref_dir)) == sorted([*PLUGINS, ".k8sx-plugin-client"])
    p = subprocess.run([bin_path("k8sx"), "cni", "install-plugins", "--dir", "/proc/k8sxtp"], capture_output=True,
                       text=True)
    assert p.returncode != 0 and "Traceback" not in p.stderr and "/proc/k8sxtp" in p.stderr


def test_checkout_copies_in_plugins_dir_are_current():
    for role in PLUGINS:
        with open(os.path.join(REPO, "plugins", role)) as fh:
            assert fh.read() == render(role), f"plugins/{role} is stale: regenerate with k8sx.cni.install.render"


@pytest.fixture
def daemon(workdir):
    sock = os.path.join(workdir, "plugind.sock")
    proc = subprocess.Popen([bin_path("k8sx"), "cni", "plugind", "--socket", sock], stderr=subprocess.PIPE)
    for _ in range(200):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    assert os.path.exists(sock), proc.stderr.read() if proc.poll() is not None else "plugind did not start"
    assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
    yield sock
    proc.terminate()
    proc.wait(10)
    assert not os.path.exists(sock)


@pytest.mark.root
@pytest.mark.parametrize("native", [True, False], ids=["native-client", "python-client"])
def test_executables_through_the_daemon_and_without_it(workdir, daemon, netns, native):
    bin_dir = os.path.join(workdir, "bin")
    p = subprocess.run([bin_path("k8sx"), "cni", "install-plugins", "--dir", bin_dir,
                        "--native" if native else "--no-native"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    with open(os.path.join(bin_dir, "k8sx-loopback")) as fh:
        shebang = fh.readline()
    if native:
        assert shebang == f"#!{bin_dir}/.k8sx-plugin-client\n"
    else:  # the interpreter k8sx runs under (python or python3 of this venv), without site
        interpreter, flags = shebang[2:].split()
        assert os.path.dirname(interpreter) == os.path.dirname(sys.executable) and flags == "-IS"
    node, pod = netns("pnode"), netns("ppod")
    subprocess.run(["ip", "-n", pod, "link", "set", "lo", "down"], check=True)
    conf = json.dumps({"cniVersion": "1.0.0", "name": "k8sxtp-lo", "type": "k8sx-loopback"}).encode()

    def run(command: str, sock: str, stdin: bytes = conf) -> subprocess.CompletedProcess:
        e = {**env(command, netns=f"/var/run/netns/{pod}"), "CNI_PATH": bin_dir, "K8SX_CNI_PLUGIND_SOCKET": sock,
             "PATH": os.environ["PATH"]}
        return subprocess.run(["ip", "netns", "exec", node, os.path.join(bin_dir, "k8sx-loopback")], input=stdin,
                              env=e, capture_output=True, timeout=60)

    absent = os.path.join(workdir, "absent.sock")
    for sock in (daemon, absent):
        p = run("ADD", sock)
        assert p.returncode == 0, p.stdout + p.stderr
        assert json.loads(p.stdout)["interfaces"] == [{"name": "lo", "mac": "00:00:00:00:00:00",
                                                       "sandbox": f"/var/run/netns/{pod}"}]
        assert "UP" in subprocess.run(["ip", "-n", pod, "link", "show", "lo"], capture_output=True, text=True).stdout
        assert run("DEL", sock).returncode == 0
        assert "UP" not in subprocess.run(["ip", "-n", pod, "link", "show", "lo"], capture_output=True,
                                          text=True).stdout.split(">")[0]
    # The same error object and exit status, daemon or not.
    answers = [run("ADD", sock, b"{broken") for sock in (daemon, absent)]
    assert answers[0].returncode == answers[1].returncode == 1
    assert answers[0].stdout == answers[1].stdout
    assert json.loads(answers[0].stdout)["code"] == 6


@pytest.mark.root
def test_concurrent_executables_through_the_daemon(workdir, daemon, netns):
    """Twenty bridge ADDs at once, each its own process, served by one plugind in parallel threads."""
    bin_dir = os.path.join(workdir, "bin")
    subprocess.run([bin_path("k8sx"), "cni", "install-plugins", "--dir", bin_dir], check=True, capture_output=True)
    node = netns("pnode")
    pods = [netns("ppod") for _ in range(20)]
    conf = {"cniVersion": "1.0.0", "name": "k8sxtp-conc", "type": "k8sx-bridge", "bridge": "k8sxtpbrc",
            "isGateway": True, "ipMasq": True,
            "ipam": {"type": "k8sx-host-local", "dataDir": os.path.join(workdir, "ipam"),
                     "ranges": [[{"subnet": "10.198.40.0/24"}]]}}

    def call(command: str, i: int, stdin: dict) -> dict | None:
        e = {**env(command, cid=f"k8sxtp-c{i}", netns=f"/var/run/netns/{pods[i]}"), "CNI_PATH": bin_dir,
             "K8SX_CNI_PLUGIND_SOCKET": daemon, "PATH": os.environ["PATH"]}
        p = subprocess.run(["ip", "netns", "exec", node, os.path.join(bin_dir, "k8sx-bridge")],
                           input=json.dumps(stdin).encode(), env=e, capture_output=True, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        return json.loads(p.stdout) if p.stdout.strip() else None

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda i: call("ADD", i, conf), range(20)))
    addrs = [r["ips"][0]["address"] for r in results]
    assert len(set(addrs)) == 20
    nat = subprocess.run(["ip", "netns", "exec", node, "iptables-save", "-t", "nat"], capture_output=True,
                         text=True).stdout
    assert nat.count("-j MASQUERADE") == 20
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(lambda i: call("DEL", i, {**conf, "prevResult": results[i]}), range(20)))
    assert sorted(os.listdir(os.path.join(workdir, "ipam", "k8sxtp-conc"))) == ["last_reserved_ip.0", "lock"]
    nat = subprocess.run(["ip", "netns", "exec", node, "iptables-save", "-t", "nat"], capture_output=True,
                         text=True).stdout
    assert "CNI-" not in nat


def test_host_local_resolv_conf_equals_the_reference(workdir):
    resolv = os.path.join(workdir, "resolv.conf")
    with open(resolv, "w") as fh:
        fh.write("nameserver 10.198.0.10\nsearch svc.k8sxtp.local k8sxtp.local\noptions ndots:5\n"
                 "domain k8sxtp.local\n# a comment\n")
    a = ours("ADD", "k8sxtp-d", ipam_conf(os.path.join(workdir, "a"), [[{"subnet": "10.198.27.0/24"}]],
                                          resolvConf=resolv))
    b = reference("ADD", "k8sxtp-d", ipam_conf(os.path.join(workdir, "b"), [[{"subnet": "10.198.27.0/24"}]],
                                                resolvConf=resolv))
    assert a == b and json.dumps(a) == json.dumps(b)
    assert a["dns"]["nameservers"] == ["10.198.0.10"]
