"""A real ``k8sx runtime serve`` for the runtime tests, inside a node network namespace of its own.

:class:`RuntimeNode` makes a ``k8sxts-*`` dir, a node netns (the "host network" of the server: the
root namespace is never touched), a CNI conflist of the reference plugins (bridge ``k8sxtsbr0`` +
host-local on ``10.197.<n>.0/24``, portmap, loopback), a private CNI cache, a ``/k8sxts-*`` cgroup
parent and an image root holding busybox (built from the host's busybox-static and imported), then
starts the server with ``nsenter --net`` and waits for its socket. ``cli()`` runs ``k8sx runtime``
verbs against it; ``leaks()`` lists whatever a removed pod could have left behind. ``close()``
removes every pod through the API, stops the server, and deletes netns, cgroups and files.

Fixture: ``runtime_node`` (module scope: one server per test module), registered in conftest.py.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import bin_path, unique

BUSYBOX = "docker.io/library/busybox:latest"
CGROUP_ROOT = "/sys/fs/cgroup"


def _build_layout(dest: str) -> None:
    from k8sx.cri.images import build

    rootfs = os.path.join(dest, "rootfs")
    build.busybox_rootfs(rootfs)
    img = build.image_from_dir(rootfs, {"Cmd": ["sh"]})
    build.write_oci_layout(os.path.join(dest, "layout"), [(img, BUSYBOX)])


class RuntimeNode:
    def __init__(self, layout: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="k8sxts-")
        self.netns = unique("s", 15)
        self.subnet_octet = random.randint(1, 250)
        self.subnet = f"10.197.{self.subnet_octet}"
        self.socket = os.path.join(self.dir, "k8sxts.sock")
        self.endpoint = "unix://" + self.socket
        self.root = os.path.join(self.dir, "root")
        self.state = os.path.join(self.dir, "state")
        self.conf_dir = os.path.join(self.dir, "net.d")
        self.ipam_dir = os.path.join(self.dir, "ipam")
        self.cache_dir = os.path.join(self.dir, "cni-cache")
        self.cni_bin = os.path.join(self.dir, "cni-bin")  # searched first: tests may add plugins here
        self.logs = os.path.join(self.dir, "logs")
        self.cgroup_parent = "/" + unique("s", 20)
        self.proc: subprocess.Popen[bytes] | None = None
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True)
        os.makedirs(self.conf_dir)
        self.write_conflist()
        with open(os.path.join(self.dir, "config.toml"), "w") as f:
            f.write(f'cni_cache_dir = "{self.cache_dir}"\ncgroup_parent = "{self.cgroup_parent}"\n')
        from k8sx.cri.images.store import ImageStore

        ImageStore(os.path.join(self.root, "images")).import_archive(layout)
        self.start()

    def write_conflist(self, extra: list[dict[str, Any]] | None = None) -> None:
        conf = {"cniVersion": "1.0.0", "name": "k8sxts", "plugins": [
            {"type": "bridge", "bridge": "k8sxtsbr0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": f"{self.subnet}.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": self.ipam_dir}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"}, *(extra or [])]}
        with open(os.path.join(self.conf_dir, "10-k8sxts.conflist"), "w") as f:
            json.dump(conf, f)

    # ---- the server process ----------------------------------------------------------------------------

    def start(self) -> None:
        log = open(os.path.join(self.dir, "server.log"), "ab")  # noqa: SIM115 (handed to the child)
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns}", "--", bin_path("k8sx"), "runtime", "serve",
             "--listen", self.endpoint, "--root", self.root, "--state", self.state,
             "--cni-conf-dir", self.conf_dir, "--cni-bin-dir", f"{self.cni_bin}:/usr/lib/cni",
             "--config", os.path.join(self.dir, "config.toml")],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 30
        while not self._answers():  # a killed server's stale socket may still be there: connect, don't stat
            assert self.proc.poll() is None, f"server died: {self.server_log()}"
            assert time.monotonic() < deadline, f"no socket after 30s: {self.server_log()}"
            time.sleep(0.05)

    def _answers(self) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def server_log(self) -> str:
        with open(os.path.join(self.dir, "server.log"), encoding="utf-8", errors="replace") as f:
            return f.read()[-4000:]

    # ---- talking to it -----------------------------------------------------------------------------------

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([bin_path("k8sx"), "runtime", "-r", self.endpoint, "-t", "30s", *args],
                           capture_output=True, text=True, timeout=timeout)
        if check:
            assert r.returncode == 0, f"k8sx runtime {' '.join(args)}: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
        assert "Traceback" not in r.stderr, r.stderr
        return r

    def node(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command in the node's network namespace."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *cmd], capture_output=True, text=True,
                              check=check, timeout=60)

    def write(self, name: str, doc: dict[str, Any]) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            json.dump(doc, f)
        return path

    def pod_config(self, name: str, **extra: Any) -> str:
        doc = {"metadata": {"name": name, "namespace": "k8sxts", "uid": unique("s", 20), "attempt": 0},
               "hostname": name, "log_directory": os.path.join(self.logs, name),
               "labels": {"app": name}, "linux": {}}
        doc.update(extra)
        return self.write(f"pod-{name}.json", doc)

    def container_config(self, name: str, command: list[str], **extra: Any) -> str:
        doc = {"metadata": {"name": name}, "image": {"image": BUSYBOX}, "command": command,
               "log_path": f"{name}.log", "labels": {"ctr": name}, "linux": {}}
        doc.update(extra)
        return self.write(f"ctr-{name}-{unique('', 8)}.json", doc)

    def run_pod(self, name: str, containers: dict[str, list[str]], **extra: Any) -> tuple[str, dict[str, str]]:
        pod_cfg = self.pod_config(name, **extra)
        pod = self.cli("runp", pod_cfg).stdout.strip()
        ids = {}
        for cname, cmd in containers.items():
            cid = self.cli("create", pod, self.container_config(cname, cmd), pod_cfg).stdout.strip()
            self.cli("start", cid)
            ids[cname] = cid
        return pod, ids

    def inspectp(self, pod: str) -> dict[str, Any]:
        return json.loads(self.cli("inspectp", pod).stdout)

    def inspect(self, ctr: str) -> dict[str, Any]:
        return json.loads(self.cli("inspect", ctr).stdout)

    def wait_exec(self, ctr: str, *cmd: str, want: str = "", timeout: float = 15) -> str:
        """``exec -s`` until it exits 0 (and prints ``want``): servers inside containers take a moment."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.cli("exec", "-s", ctr, *cmd, check=False)
            if r.returncode == 0 and want in r.stdout:
                return r.stdout
            assert time.monotonic() < deadline, f"exec {cmd} in {ctr}: rc={r.returncode} {r.stdout!r} {r.stderr!r}"
            time.sleep(0.3)

    # ---- leaks ---------------------------------------------------------------------------------------------

    def leaks(self, pod_ids: list[str], ips: list[str]) -> list[str]:
        """What the removed pods ``pod_ids`` (with ``ips``) left behind; empty when nothing."""
        found = []
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            found += [f"mount {m}" for line in f if (m := line.split()[4]).startswith(self.dir)]
        for pod in pod_ids:
            if os.path.exists(os.path.join(self.state, "pods", pod)):
                found.append(f"pod dir {pod}")
        for _root, _dirs, files in os.walk(self.ipam_dir):
            found += [f"ip {name}" for name in files if name in ips]
        for _root, _dirs, files in os.walk(self.cache_dir):
            found += [f"cni cache {name}" for name in files if any(p in name for p in pod_ids)]
        rules = self.node("iptables-save").stdout
        for needle in [*ips, *(p[:12] for p in pod_ids)]:
            found += [f"iptables {line}" for line in rules.splitlines() if needle in line]
        links = self.node("ip", "-o", "link").stdout
        found += [f"link {line.split(':')[1]}" for line in links.splitlines() if "veth" in line]
        for controller in ("memory", "cpu", "pids"):
            base = os.path.join(CGROUP_ROOT, controller, self.cgroup_parent.lstrip("/"))
            if os.path.isdir(base):
                found += [f"cgroup {controller}/{d}" for d in os.listdir(base)
                          if os.path.isdir(os.path.join(base, d))]
        ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        found += [f"process {line.strip()}" for line in ps.splitlines() if self.dir in line and "serve" not in line]
        return found

    def close(self) -> None:
        try:
            if self.proc is None and os.path.exists(os.path.join(self.state, "runtime.db")):
                self.start()
            if self.proc is not None:
                self.cli("rmp", "-f", "-a", check=False)
        finally:
            self.stop()
            subprocess.run(["ip", "netns", "del", self.netns], check=False)
            with open("/proc/self/mountinfo", encoding="utf-8") as f:
                mountinfo = f.read().splitlines()
            for line in mountinfo[::-1]:
                mnt = line.split()[4]
                if mnt.startswith(self.dir):
                    subprocess.run(["umount", "-l", mnt], check=False)
            for controller in os.listdir(CGROUP_ROOT):
                base = os.path.join(CGROUP_ROOT, controller, self.cgroup_parent.lstrip("/"))
                if os.path.isdir(base):
                    for d in sorted((os.path.join(r, x) for r, ds, _ in os.walk(base) for x in ds), reverse=True):
                        os.rmdir(d)
                    os.rmdir(base)
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def busybox_layout() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="k8sxts-img-")
    try:
        _build_layout(d)
        yield os.path.join(d, "layout")
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def runtime_node(busybox_layout: str) -> Iterator[RuntimeNode]:
    if os.geteuid() != 0:
        pytest.fail("the runtime tests need root (namespaces, mounts, runc); run the suite as root")
    node = RuntimeNode(busybox_layout)
    try:
        yield node
    finally:
        node.close()
