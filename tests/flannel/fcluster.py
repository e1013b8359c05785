"""A cluster of network namespaces for flannel tests: an underlay, nodes, pods, one etcd, agents.

Layout (every name carries ``k8sxtf``): an "underlay" namespace holds the bridge all nodes hang
off and the bridge's address 192.168.77.1, where one etcd listens (never in the root namespace);
each node is a namespace with one veth (``k8sxtfe<i>``, 192.168.77.1<i>/24) into that bridge; pods
are namespaces wired by our flannel CNI plugin through ``k8sx cni add`` run inside the node's
namespace with the node's own subnet.env, conf dir, IPAM dir and CNI cache. Agents are
``ip netns exec <node> k8sx flannel run ...`` subprocesses. :meth:`Cluster.close` removes
everything (agents, etcd, namespaces, the temp dir) and is safe to call after any failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from support import bin_path, unique

from k8sx.net import ns

UNDERLAY_IP = "192.168.77.1"
ETCD_PORT = 2379
ETCD_URL = f"http://{UNDERLAY_IP}:{ETCD_PORT}"
NETWORK = "10.244.0.0/16"
FAKE_IP = "192.168.77.99"
FAKE_MAC = "0a:58:c0:a8:4d:63"
CNI_NET = "k8sxtfnet"
BRIDGE = "k8sxtfcni0"


def sh(*args: str, check: bool = True, timeout: float = 30, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=timeout, **kw)


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Node:
    def __init__(self, cluster: Cluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.netns = f"{cluster.tag}n{index}"
        self.iface = f"k8sxtfe{index}"
        self.ip = f"192.168.77.{10 + index}"
        self.dir = os.path.join(cluster.dir, f"node{index}")
        self.subnet_file = os.path.join(self.dir, "subnet.env")
        self.log = os.path.join(self.dir, "agent.log")
        self.agent: subprocess.Popen[bytes] | None = None
        self.pods: list[Pod] = []

    def ip_(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "-n", self.netns, *args, check=check)

    def exec(self, *args: str, check: bool = True, timeout: float = 30,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.netns, *args, check=check, timeout=timeout,
                  env={**os.environ, **self.cluster.cni_env, **(env or {})})

    def k8sx(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.exec(bin_path("k8sx"), *args, check=check, timeout=timeout, env=self.cluster.cni_env)

    # the agent -------------------------------------------------------------------------------------
    def agent_args(self) -> list[str]:
        return ["flannel", "run", "--iface", self.iface, "--ip-masq", "--etcd-endpoints", ETCD_URL,
                "--etcd-prefix", self.cluster.prefix, "--subnet-file", self.subnet_file]

    def start_agent(self, extra: list[str] | None = None, wait: bool = True,
                    env: dict[str, str] | None = None) -> None:
        os.makedirs(self.dir, exist_ok=True)
        if os.path.exists(self.log):  # a restart: the previous run's log stays beside it
            os.replace(self.log, self.log + ".previous")
        with open(self.log, "ab") as log:
            self.agent = subprocess.Popen(["ip", "netns", "exec", self.netns, bin_path("k8sx"),
                                           *self.agent_args(), *(extra or [])], stdout=log, stderr=log,
                                          env={**os.environ, **self.cluster.cni_env, **(env or {})})
        if wait:
            wait_for(lambda: "running" in self.log_text() or self.agent.poll() is not None, 30,
                     f"the agent on {self.netns}")
            assert self.agent.poll() is None, self.log_text()

    def log_text(self) -> str:
        try:
            with open(self.log, errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    def stop_agent(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        proc, self.agent = self.agent, None
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise

    def subnet_env_text(self) -> str:
        with open(self.subnet_file) as fh:
            return fh.read()

    def subnet_env(self) -> dict[str, str]:
        with open(self.subnet_file) as fh:
            return dict(line.split("=", 1) for line in fh.read().splitlines() if "=" in line)

    def routes(self) -> str:
        return self.ip_("route", "show").stdout

    # pods ------------------------------------------------------------------------------------------
    def add_pod(self) -> Pod:
        pod = Pod(self, len(self.pods))
        sh("ip", "netns", "add", pod.netns)
        self.cluster.namespaces.append(pod.netns)
        conf_dir = os.path.join(self.dir, "net.d")
        os.makedirs(conf_dir, exist_ok=True)
        conf = {"cniVersion": "1.0.0", "name": CNI_NET, "type": "k8sx-flannel",
                "subnetFile": self.subnet_file, "dataDir": os.path.join(self.dir, "flannel-cni"),
                "delegate": {"bridge": BRIDGE, "hairpinMode": True, "isDefaultGateway": True},
                "ipam": {"dataDir": os.path.join(self.dir, "ipam")}}
        with open(os.path.join(conf_dir, "10-flannel.conf"), "w") as fh:
            json.dump(conf, fh)
        out = self.k8sx("cni", "add", CNI_NET, f"/var/run/netns/{pod.netns}", "--conf-dir", conf_dir,
                        "--cni-path", self.cluster.cni_bin, "--cache-dir", os.path.join(self.dir, "cache"),
                        "--container-id", pod.netns).stdout
        result = json.loads(out)
        pod.ip = result["ips"][0]["address"].split("/")[0]
        self.pods.append(pod)
        return pod


class Pod:
    def __init__(self, node: Node, index: int) -> None:
        self.node = node
        self.netns = f"{node.netns}p{index}"
        self.ip = ""

    def ping(self, ip: str, count: int = 1, timeout: float = 2) -> bool:
        r = sh("ip", "netns", "exec", self.netns, "busybox", "ping", "-c", str(count), "-W", str(int(timeout)),
               ip, check=False, timeout=timeout * count + 10)
        return r.returncode == 0

    def fd(self) -> int:
        return ns.open_netns(f"/var/run/netns/{self.netns}")



    def tcp_to(self, other: Pod, port: int = 8080, payload: bytes = b"k8sxtf-hello") -> bytes:
        """Listen in ``other``, connect from here, send ``payload`` and return what arrived."""
        fd_a, fd_b = self.fd(), other.fd()
        try:
            with ns.entered(fd_b):
                srv = socket.socket()
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind((other.ip, port))
            srv.listen(1)
            srv.settimeout(5)
            with ns.entered(fd_a):
                cli = socket.socket()
            cli.settimeout(5)
            try:
                import threading

                cli.connect((other.ip, port))
                conn, peer = srv.accept()
                conn.settimeout(20)
                got: list[bytes] = []

                def drain() -> None:
                    while chunk := conn.recv(1 << 16):
                        got.append(chunk)

                reader = threading.Thread(target=drain, daemon=True)
                reader.start()
                cli.settimeout(20)
                cli.sendall(payload)
                cli.shutdown(socket.SHUT_WR)
                reader.join(30)
                conn.close()
                assert peer[0] == self.ip, f"the peer was seen as {peer[0]}, not {self.ip} (masqueraded?)"
                return b"".join(got)
            finally:
                cli.close()
                srv.close()
        finally:
            os.close(fd_a)
            os.close(fd_b)


class Cluster:
    def __init__(self, nodes: int = 3) -> None:
        self.tag = unique("f", 11)
        self.prefix = "/coreos.com/network"
        self.dir = tempfile.mkdtemp(prefix="k8sxtf")
        self.underlay = f"{self.tag}u"
        self.namespaces: list[str] = []
        self.etcd: subprocess.Popen[bytes] | None = None
        self.backend = ""
        self.nodes = [Node(self, i) for i in range(1, nodes + 1)]
        self.cni_bin = os.path.join(self.dir, "cni-bin")
        # no plugin daemon: the plugins run in-process in the CNI executables, inside the node's netns
        # and the udp backend's compiled forwarder goes to this cluster's directory too
        self.cni_env = {"K8SX_CNI_PLUGIND_SOCKET": os.path.join(self.dir, "no-plugind.sock"),
                        "K8SX_CACHE_DIR": os.path.join(self.dir, "cache")}

    def start(self, etcd: bool = True) -> None:
        sh("ip", "netns", "add", self.underlay)
        self.namespaces.append(self.underlay)
        u = ["ip", "-n", self.underlay]
        sh(*u, "link", "set", "lo", "up")
        sh(*u, "link", "add", "k8sxtfbr", "type", "bridge")
        sh(*u, "addr", "add", f"{UNDERLAY_IP}/24", "dev", "k8sxtfbr")
        sh(*u, "link", "set", "k8sxtfbr", "up")
        for node in self.nodes:
            os.makedirs(node.dir)
            sh("ip", "netns", "add", node.netns)
            self.namespaces.append(node.netns)
            sh(*u, "link", "add", f"k8sxtfu{node.index}", "type", "veth", "peer", "name", node.iface,
               "netns", node.netns)
            sh(*u, "link", "set", f"k8sxtfu{node.index}", "master", "k8sxtfbr", "up")
            node.ip_("link", "set", "lo", "up")
            node.ip_("addr", "add", f"{node.ip}/24", "dev", node.iface)
            node.ip_("link", "set", node.iface, "up")
            node.exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh(bin_path("k8sx"), "cni", "install-plugins", "--dir", self.cni_bin)
        if etcd:
            self.start_etcd()

    # etcd ------------------------------------------------------------------------------------------
    def start_etcd(self) -> None:
        data = os.path.join(self.dir, "etcd")
        with open(os.path.join(self.dir, "etcd.log"), "ab") as log:
            self.etcd = subprocess.Popen(
                ["ip", "netns", "exec", self.underlay, "etcd", "--name", "k8sxtf", "--data-dir", data,
                 "--listen-client-urls", ETCD_URL, "--advertise-client-urls", ETCD_URL,
                 "--listen-peer-urls", f"http://{UNDERLAY_IP}:2380",
                 "--initial-advertise-peer-urls", f"http://{UNDERLAY_IP}:2380",
                 "--initial-cluster", f"k8sxtf=http://{UNDERLAY_IP}:2380"],
                stdout=log, stderr=log)
        wait_for(lambda: self.etcdctl("endpoint", "health", check=False).returncode == 0, 20, "etcd")

    def stop_etcd(self) -> None:
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.terminate()
            try:
                self.etcd.wait(10)
            except subprocess.TimeoutExpired:
                self.etcd.kill()
                self.etcd.wait(5)
        self.etcd = None

    def etcdctl(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.underlay, "etcdctl", "--endpoints", ETCD_URL,
                               "--dial-timeout", "2s", *args], input=stdin, capture_output=True, text=True,
                              check=check, timeout=20, env={**os.environ, "ETCDCTL_API": "3"})

    def put_config(self, backend: dict[str, Any]) -> None:
        doc = {"Network": NETWORK, "Backend": backend}
        self.etcdctl("put", f"{self.prefix}/config", json.dumps(doc))

    def subnets(self) -> dict[str, dict[str, Any]]:
        """The lease keys as etcd holds them: key -> {value, lease id} (raw, from etcdctl -w json)."""
        out = json.loads(self.etcdctl("get", "--prefix", f"{self.prefix}/subnets/", "-w", "json").stdout)
        import base64

        res = {}
        for kv in out.get("kvs") or []:
            res[base64.b64decode(kv["key"]).decode()] = {"value": base64.b64decode(kv["value"]).decode(),
                                                         "lease": kv.get("lease", 0)}
        return res

    # teardown --------------------------------------------------------------------------------------
    def close(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop_agent(signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.stop_etcd()
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], check=False, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def cluster(backend: dict[str, Any] | None, nodes: int = 3, pods: int = 1,
            agent_env: dict[int, dict[str, str]] | None = None) -> Iterator[Cluster]:
    """A started cluster with the etcd config for ``backend``, agents running and ``pods`` pods per node.

    ``agent_env``: extra environment for the agent of node N (1-based)."""
    c = Cluster(nodes)
    try:
        c.start()
        if backend is not None:
            c.backend = backend.get("Type", "udp")
            c.put_config(backend)
            for node in c.nodes:
                node.start_agent(env=(agent_env or {}).get(node.index))
            for node in c.nodes:
                wait_for(lambda n=node: os.path.exists(n.subnet_file), 10, "subnet.env")
                for _ in range(pods):
                    node.add_pod()
            wait_converged(c)
        yield c
    finally:
        c.close()


def subnet_of(node: Node) -> str:
    env = node.subnet_env()
    addr, plen = env["FLANNEL_SUBNET"].split("/")
    a, b, c, _ = addr.split(".")
    return f"{a}.{b}.{c}.0/{plen}"


def wait_converged(c: Cluster, timeout: float = 10) -> None:
    """Every agent says it programmed every other node's subnet."""
    for node in c.nodes:
        for other in c.nodes:
            if other is not node:
                want = f"peer {subnet_of(other)} at {other.ip}: programmed"
                wait_for(lambda n=node, w=want: w in n.log_text(), timeout, f"{node.netns}: {want}")


class Relay:
    """TCP from ``listen`` inside a namespace to ``target`` in the root namespace (the API emulator
    listens on the root namespace's loopback, which the node namespaces cannot reach)."""

    def __init__(self, netns: str, listen: tuple[str, int], target: tuple[str, int]) -> None:
        import threading

        fd = ns.open_netns(f"/var/run/netns/{netns}")
        try:
            with ns.entered(fd):
                self.sock = socket.socket()
        finally:
            os.close(fd)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(listen)
        self.sock.listen(16)
        self.target = target
        self.url = f"http://{listen[0]}:{listen[1]}"
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, name="k8sxtf-relay", daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                a, _ = self.sock.accept()
            except OSError:
                return
            b = socket.create_connection(self.target)
            self._conns += [a, b]
            for src, dst in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()


def fake_value(backend: str, ip: str = FAKE_IP) -> str:
    if backend == "vxlan":
        return json.dumps({"PublicIP": ip, "PublicIPv6": None, "BackendType": "vxlan",
                           "BackendData": {"VNI": 1, "VtepMAC": FAKE_MAC}}, separators=(",", ":"))
    if backend == "host-gw":
        return json.dumps({"PublicIP": ip, "PublicIPv6": None, "BackendType": "host-gw"}, separators=(",", ":"))
    return json.dumps({"PublicIP": ip, "PublicIPv6": None}, separators=(",", ":"))


def peer_programmed(c: Cluster, node: Node, subnet: str, ip: str) -> bool:
    """Whether ``node`` holds the kernel state (or, for udp, the forwarder entry) for a peer lease."""
    backend = c.backend
    net = subnet.split("/")[0]
    if backend == "host-gw":
        return f"{subnet} via {ip} dev {node.iface}" in node.routes()
    if backend == "vxlan":
        return (f"{subnet} via {net} dev flannel.1 onlink" in node.routes()
                and net in node.ip_("neigh", "show", "dev", "flannel.1").stdout)
    text = node.log_text()
    added = text.rfind(f"peer {subnet} at {ip}: programmed")
    return added > text.rfind(f"peer {subnet} removed")


def peer_gone(c: Cluster, node: Node, subnet: str) -> bool:
    if c.backend == "udp":
        return f"peer {subnet} removed" in node.log_text()
    return subnet not in node.routes()
