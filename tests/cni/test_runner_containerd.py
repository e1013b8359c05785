"""k8sx and containerd on one node: each reads and honours the other's libcni result cache.

containerd (Debian's 1.6, libcni inside its CRI plugin) runs in a node namespace this test creates
(``nsenter --net``, so the pod namespaces it bind-mounts under /var/run/netns stay visible), with
the reference plugins and a k8sxtr bridge conflist. Its CRI plugin attaches a pod sandbox; then
``k8sx cni check|del`` work from containerd's cache entry, and after ``k8sx cni add`` rewrote the
entry, containerd's own StopPodSandbox tears the attachment down from ours. libcni keeps the cache
in /var/lib/cni (containerd 1.6 cannot move it), so the test removes exactly the entries of its
sandboxes there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import pytest
from conftest import bin_path, unique

from k8sx.cni import cache

pytestmark = pytest.mark.root
LIBCNI_CACHE = "/var/lib/cni"
NETWORK = "k8sxtr-net"
SUBNET = "10.199.21"

CONFIG = """version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "k8sxtr.test/pause:1"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/net.d"
"""


class Containerd:
    """A private containerd in a node netns, its CRI RuntimeService, and what it must leave clean."""

    def __init__(self, node: str, d: str) -> None:
        import grpc

        from k8sx.cri.api.runtime.v1 import api_pb2, api_pb2_grpc

        self.node, self.dir, self.pb = node, d, api_pb2
        self.conf_dir = os.path.join(d, "net.d")
        self.data_dir = os.path.join(d, "host-local")
        self.sock = os.path.join(d, "containerd.sock")
        self.log = open(os.path.join(d, "containerd.log"), "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(["nsenter", f"--net=/var/run/netns/{node}", "containerd", "--config",
                                      os.path.join(d, "containerd.toml")], stdout=self.log, stderr=subprocess.STDOUT)
        self.sandboxes: list[str] = []
        self.netns_paths: list[str] = []
        deadline = time.monotonic() + 30
        while not os.path.exists(self.sock):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log_text()
            time.sleep(0.05)
        self.channel = grpc.insecure_channel(f"unix://{self.sock}")
        self.rt = api_pb2_grpc.RuntimeServiceStub(self.channel)

    def log_text(self) -> str:
        with open(os.path.join(self.dir, "containerd.log"), errors="replace") as f:
            return f.read()[-4000:]

    def run_pod(self, name: str) -> tuple[str, str, str]:
        """RunPodSandbox: (sandbox id, netns path, pod IP)."""
        pb = self.pb
        cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name=name, uid=f"{name}-uid", namespace="default"),
                                  hostname=name, log_directory=os.path.join(self.dir, "logs"),
                                  linux=pb.LinuxPodSandboxConfig())
        sid = self.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=120).pod_sandbox_id
        self.sandboxes.append(sid)
        st = self.rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid, verbose=True), timeout=30)
        spec = json.loads(st.info["info"])["runtimeSpec"]
        path = next(n["path"] for n in spec["linux"]["namespaces"] if n["type"] == "network")
        self.netns_paths.append(path)
        return sid, path, st.status.network.ip

    def stop_pod(self, sid: str) -> None:
        self.rt.StopPodSandbox(self.pb.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=120)

    def remove_pod(self, sid: str) -> None:
        self.rt.RemovePodSandbox(self.pb.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=120)

    def stop(self) -> None:
        for sid in self.sandboxes:
            for call in (self.stop_pod, self.remove_pod):
                with contextlib.suppress(Exception):  # best effort: the test has already reported
                    call(sid)
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        _kill_shims(self.dir)
        _unmount_under(self.dir)
        for path in self.netns_paths:  # containerd removes them; a failed test may leave one
            if os.path.exists(path):
                subprocess.run(["umount", path], stderr=subprocess.DEVNULL, check=False)
                subprocess.run(["rm", "-f", path], check=False)
        for sid in self.sandboxes:
            for net, ifname in ((NETWORK, "eth0"), ("cni-loopback", "lo")):
                cache.remove(LIBCNI_CACHE, net, sid, ifname)


def _kill_shims(d: str) -> None:
    """containerd-shim processes of this containerd (their command line names its socket), by pid."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"containerd-shim" in cmd and d.encode() in cmd:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def _unmount_under(d: str) -> None:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for p in sorted((p for p in points if p.startswith(d + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", p], stderr=subprocess.DEVNULL, check=False)


@pytest.fixture
def ctrd(netns):
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.fail("containerd missing: apt-get install containerd")
    from k8sx.cri.images import build

    node = netns("rnode")
    d = tempfile.mkdtemp(prefix="k8sxtr-")
    had_cache = {p: os.path.exists(p) for p in (LIBCNI_CACHE, os.path.join(LIBCNI_CACHE, "results"))}
    os.makedirs(os.path.join(d, "net.d"))
    conf = {"cniVersion": "1.0.0", "name": NETWORK, "plugins": [
        {"type": "bridge", "bridge": unique("rbr"), "isGateway": True, "ipMasq": True, "hairpinMode": True,
         "ipam": {"type": "host-local", "dataDir": os.path.join(d, "host-local"),
                  "ranges": [[{"subnet": f"{SUBNET}.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "loopback"}]}
    with open(os.path.join(d, "net.d", "10-k8sxtr.conflist"), "w") as f:
        json.dump(conf, f)
    with open(os.path.join(d, "containerd.toml"), "w") as f:
        f.write(CONFIG.format(d=d))
    # The sandbox ("pause") image: the static busybox sleeping, imported, so nothing is pulled.
    rootfs = os.path.join(d, "pause-rootfs", "bin")
    os.makedirs(rootfs)
    shutil.copy2("/bin/busybox", os.path.join(rootfs, "busybox"))
    img = build.image_from_dir(os.path.dirname(rootfs), {"Entrypoint": ["/bin/busybox", "sleep", "3600"]})
    build.write_oci_layout(os.path.join(d, "pause.tar"), [(img, "k8sxtr.test/pause:1")])
    c = None
    try:
        c = Containerd(node, d)
        r = subprocess.run(["ctr", "-a", c.sock, "-n", "k8s.io", "images", "import", os.path.join(d, "pause.tar")],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        yield c
    finally:
        if c is not None:
            c.stop()
        _unmount_under(d)
        shutil.rmtree(d, ignore_errors=True)
        for path in sorted(had_cache, key=len, reverse=True):  # only what this test brought into being
            if not had_cache[path]:
                with contextlib.suppress(OSError):
                    os.rmdir(path)


def k8sx_cni(c: Containerd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", c.node, bin_path("k8sx"), "cni", *args, "--conf-dir", c.conf_dir,
                           "--cni-path", "/usr/lib/cni", "--cache-dir", LIBCNI_CACHE],
                          capture_output=True, text=True, timeout=120)


def pod_ips(netns_path: str) -> list[str]:
    p = subprocess.run(["nsenter", f"--net={netns_path}", "ip", "-j", "-4", "addr", "show", "dev", "eth0"],
                       capture_output=True, text=True)
    return [] if p.returncode else [a["local"] for link in json.loads(p.stdout) for a in link["addr_info"]]


def test_k8sx_and_containerd_share_the_cache(ctrd):
    sid, netns_path, ip = ctrd.run_pod("k8sxtr-pod")
    assert ip == f"{SUBNET}.2" and pod_ips(netns_path) == [ip]
    entry_path = cache.cache_path(LIBCNI_CACHE, NETWORK, sid, "eth0")
    assert stat.S_IMODE(os.stat(entry_path).st_mode) == 0o600
    with open(entry_path, "rb") as f:
        written_by_containerd = f.read()
    entry = cache.decode(written_by_containerd)
    assert not entry.legacy and (entry.container_id, entry.network, entry.ifname) == (sid, NETWORK, "eth0")
    assert entry.result["ips"][0]["address"] == f"{ip}/24"
    # Byte for byte the file k8sx writes for the same attachment.
    assert entry.encode() == written_by_containerd

    ident = ["--container-id", sid]
    # CHECK needs the cached result as prevResult (bridge refuses without): containerd's entry serves.
    r = k8sx_cni(ctrd, "check", NETWORK, netns_path, *ident)
    assert r.returncode == 0 and r.stdout == "", r.stderr
    os.rename(entry_path, entry_path + ".k8sxtr-aside")  # the control: without the entry, CHECK fails
    try:
        r = k8sx_cni(ctrd, "check", NETWORK, netns_path, *ident)
    finally:
        os.rename(entry_path + ".k8sxtr-aside", entry_path)
    assert r.returncode == 1 and "Required prevResult missing" in r.stderr, r.stderr
    r = k8sx_cni(ctrd, "del", NETWORK, netns_path, *ident)
    assert r.returncode == 0, r.stderr
    assert pod_ips(netns_path) == [] and not os.path.exists(entry_path)
    assert f"{SUBNET}.2" not in os.listdir(os.path.join(ctrd.data_dir, NETWORK))

    # Now k8sx attaches the sandbox and writes the entry; containerd's StopPodSandbox (libcni DEL)
    # must read it (an unreadable entry fails libcni's DEL) and tear everything down.
    r = k8sx_cni(ctrd, "add", NETWORK, netns_path, *ident)
    assert r.returncode == 0, r.stderr
    new_ip = json.loads(r.stdout)["ips"][0]["address"].split("/")[0]
    assert pod_ips(netns_path) == [new_ip] and os.path.exists(entry_path)
    ctrd.stop_pod(sid)
    assert not os.path.exists(entry_path)  # libcni removes the entry after a successful DEL
    assert new_ip not in os.listdir(os.path.join(ctrd.data_dir, NETWORK))
    ctrd.remove_pod(sid)
    assert not os.path.exists(netns_path)
