"""Pod sandboxes: the namespaces a pod's containers share, its hostname and DNS files, and its network.

Why no pause container: a sandbox only has to *hold* its network, IPC and UTS namespaces, and the
kernel keeps a namespace alive as long as a bind mount of its nsfs file exists. So a short-lived
thread of the server ``unshare()``s those three namespaces (they are per-thread), bind-mounts
``/proc/self/task/<tid>/ns/{net,ipc,uts}`` under the pod's state dir, sets the hostname, the sysctls
and ``lo`` up from inside them, and ends. That costs about a millisecond, needs no image (so a node
without ``registry.k8s.io/pause`` runs pods) and leaves no process behind. Only a pod-shared PID
namespace needs a living process (a PID namespace dies with its init): then a tiny init that just
reaps children runs under ``unshare --pid=<file> --fork``, as pause does for containerd.

The network is attached in-process through the ``k8sx.cni`` runner with the first network of the
CNI configuration directory, libcni's cache keeping what DEL needs; DEL runs on stop and again on
remove, and is safe to repeat. Everything a sandbox creates is under ``<state>/pods/<id>``, apart
from the pod's cgroup (the parent of its containers' cgroups, whose figures are the pod's stats),
and :meth:`Sandboxes.remove` takes all of it away: the CNI attachment (IPs, iptables rules, veth),
the init process, the namespace mounts, the files, the cgroup when the runtime made it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from k8sx.cri.oci import cgroups
from k8sx.cri.oci.types import Stats
from k8sx.cri.state import PodRecord
from k8sx.errors import K8sxError

log = logging.getLogger("k8sx.cri.sandbox")

CLONE_NEWNET = 0x40000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
MS_BIND = 4096
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
SHM_SIZE = 64 * 1024 * 1024  # containerd's default size of a pod's /dev/shm
MNT_DETACH = 2
DEFAULT_CNI_CONF_DIR = "/etc/cni/net.d"
DEFAULT_CNI_BIN_DIRS = ("/opt/cni/bin", "/usr/lib/cni")
POD_CGROUP_PREFIX = "k8sx-pod-"

HOSTS = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::0\tip6-mcastprefix
fe00::1\tip6-allnodes
fe00::2\tip6-allrouters
"""

# The pod-shared PID namespace's init: join the pod's cgroup (the cgroup.procs files it is given, as
# pause runs in it), reap whatever is re-parented to it, exit on TERM/INT.
PID_INIT = ("import os,signal,sys\n"
            "for p in sys.argv[1:]:\n"
            " try: open(p,'w').write('0')\n"
            " except OSError: pass\n"
            "signal.signal(signal.SIGTERM,lambda *a:os._exit(0))\n"
            "signal.signal(signal.SIGINT,lambda *a:os._exit(0))\n"
            "signal.signal(signal.SIGCHLD,lambda *a:None)\n"
            "while True:\n"
            " try: os.wait()\n"
            " except ChildProcessError: signal.pause()\n")

_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


class SandboxError(K8sxError):
    """Setting up or tearing down a sandbox failed (the message says which step)."""


class InvalidSandboxConfig(SandboxError):
    """The pod config asks for something a sandbox cannot do (a node-wide sysctl, ...)."""

    grpc_code = "INVALID_ARGUMENT"


class NetworkNotReady(SandboxError):
    """No usable CNI network configuration: pods that need the pod network cannot run."""

    grpc_code = "FAILED_PRECONDITION"


@dataclass
class PortMapping:
    host_port: int
    container_port: int
    protocol: str = "tcp"  # tcp, udp, sctp
    host_ip: str = ""


@dataclass
class SandboxSpec:
    """What a sandbox needs from a ``PodSandboxConfig`` (the servicer translates the protobuf)."""

    hostname: str = ""
    dns_servers: list[str] = field(default_factory=list)
    dns_searches: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    host_network: bool = False
    host_ipc: bool = False
    pid_mode: str = "container"  # container (each its own), pod (shared), host
    port_mappings: list[PortMapping] = field(default_factory=list)
    cni_args: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class NetworkSettings:
    conf_dir: str = DEFAULT_CNI_CONF_DIR
    bin_dirs: tuple[str, ...] = DEFAULT_CNI_BIN_DIRS
    cache_dir: str = ""  # libcni's default (/var/lib/cni) when empty


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def bind_mount(source: str, target: str) -> None:
    _check(libc().mount(source.encode(), target.encode(), None, MS_BIND, None), f"bind {source} on {target}")


def unmount(path: str) -> None:
    """Detach the mount at ``path`` if there is one (EINVAL: not a mount point; ENOENT: gone)."""
    if libc().umount2(path.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (22, 2):
            raise OSError(err, f"umount {path}: {os.strerror(err)}")


def is_mountpoint_ns(path: str) -> bool:
    """True when ``path`` is (a bind mount of) a namespace file."""
    try:
        return os.stat(path).st_dev != os.stat(os.path.dirname(path)).st_dev
    except OSError:
        return False


def _write_sysctl(key: str, value: str) -> None:
    """Set a sysctl in the calling thread's namespaces (k8sx.net.sysctl), as a clear sandbox error."""
    from k8sx.net import sysctl

    try:
        sysctl.write(key, value)
    except FileNotFoundError:
        raise InvalidSandboxConfig(f"sysctl {key}: no such sysctl") from None
    except OSError as e:
        raise SandboxError(f"sysctl {key}={value}: {e.strerror}") from None


def _lo_up() -> None:
    """Bring ``lo`` up in the calling thread's network namespace (SIOCGIFFLAGS / SIOCSIFFLAGS).

    Two ioctls on a socket of the new namespace, not netlink: this runs in the pinning thread on
    every RunPodSandbox, where loading pyroute2 would cost more than the whole sandbox."""
    import fcntl
    import struct

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0))[:18])[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))
    finally:
        s.close()


def pin_namespaces(ns_dir: str, kinds: list[str], hostname: str, sysctls: dict[str, str]) -> dict[str, str]:
    """New namespaces of ``kinds`` (net, ipc, uts) pinned as files in ``ns_dir``; hostname and sysctls set in them.

    Runs in a thread of its own: unshare(2) of these namespaces affects only the calling thread,
    which ends afterwards, so the server's other threads never leave the node's namespaces.
    """
    flags = {"net": CLONE_NEWNET, "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS}
    paths = {k: os.path.join(ns_dir, k) for k in kinds}
    outcome: dict[str, BaseException] = {}

    def work() -> None:
        try:
            mask = 0
            for k in kinds:
                mask |= flags[k]
            _check(libc().unshare(mask), "unshare")
            tid = threading.get_native_id()
            for k, path in paths.items():
                with open(path, "w"):
                    pass
                bind_mount(f"/proc/self/task/{tid}/ns/{k}", path)
            if "uts" in kinds and hostname:
                socket.sethostname(hostname)
            if "net" in kinds:
                _lo_up()
            for key, value in sysctls.items():
                _write_sysctl(key, value)
        except BaseException as e:  # handed to the caller's thread
            outcome["error"] = e

    t = threading.Thread(target=work, name="k8sx-pin")
    t.start()
    t.join()
    if "error" in outcome:
        for path in paths.values():
            unmount(path)
        e = outcome["error"]
        if isinstance(e, K8sxError):
            raise e
        raise SandboxError(f"pinning the pod's namespaces: {e}")
    return paths


def sysctl_namespace(key: str) -> str | None:
    """Which pod namespace a sysctl belongs to (``net``, ``ipc``), None when it is node-wide (refused)."""
    if key.startswith("net."):
        return "net"
    if key in ("kernel.shmmax", "kernel.shmall", "kernel.shmmni", "kernel.shm_rmid_forced", "kernel.msgmax",
               "kernel.msgmnb", "kernel.msgmni", "kernel.sem") or key.startswith("fs.mqueue."):
        return "ipc"
    return None


def resolv_conf(spec: SandboxSpec) -> str | None:
    """The pod's resolv.conf from its DNSConfig; None when it has none (the node's file is used)."""
    if not (spec.dns_servers or spec.dns_searches or spec.dns_options):
        return None
    lines = []
    if spec.dns_searches:
        lines.append("search " + " ".join(spec.dns_searches))
    lines += [f"nameserver {s}" for s in spec.dns_servers]
    if spec.dns_options:
        lines.append("options " + " ".join(spec.dns_options))
    return "\n".join(lines) + "\n"


def pod_ips(result: dict[str, Any], ifname: str) -> list[str]:
    """The pod's addresses from a CNI result: those on ``ifname`` in the sandbox (else all), IPv4 first."""
    interfaces = result.get("interfaces") or []
    ips = result.get("ips") or []
    chosen = []
    for ip in ips:
        idx = ip.get("interface")
        if isinstance(idx, int) and 0 <= idx < len(interfaces):
            iface = interfaces[idx]
            if iface.get("name") != ifname or not iface.get("sandbox"):
                continue
        chosen.append(ip["address"].split("/", 1)[0])
    if not chosen:
        chosen = [ip["address"].split("/", 1)[0] for ip in ips]
    return sorted(chosen, key=lambda a: ":" in a)


def pod_cgroup(parent: str, pod_id: str) -> str:
    """The cgroup the runtime makes for a pod whose config names none: ``<parent>/k8sx-pod-<id>``."""
    return f"{parent.rstrip('/')}/{POD_CGROUP_PREFIX}{pod_id}"


class Sandboxes:
    """Creates and destroys sandboxes under ``<state>/pods``; holds no state besides the PodRecords it fills."""

    def __init__(self, state_dir: str, network: NetworkSettings | None = None) -> None:
        self.dir = os.path.join(state_dir, "pods")
        os.makedirs(self.dir, mode=0o711, exist_ok=True)
        self.network = network or NetworkSettings()
        self._runner: Any = None
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def runner(self) -> Any:
        if self._runner is None:
            from k8sx.cni.runner import Runner

            self._runner = Runner(list(self.network.bin_dirs), self.network.cache_dir)
        return self._runner

    # ---- network configuration --------------------------------------------------------------------------

    def default_network(self) -> Any:
        """The first valid network of the CNI conf dir (libcni's order), or raise NetworkNotReady."""
        from k8sx.cni.conf import list_networks
        from k8sx.cni.types import CNIError

        try:
            entries = list_networks(self.network.conf_dir)
        except CNIError as e:
            raise NetworkNotReady(f"cni config load failed: {e}") from None
        for entry in entries:
            if entry.network is not None:
                return entry.network
        raise NetworkNotReady(f"cni config load failed: no network config found in {self.network.conf_dir}: "
                              "cni plugin not initialized")

    def network_ready(self) -> tuple[bool, str]:
        try:
            self.default_network()
        except NetworkNotReady as e:
            return False, e.message
        return True, ""

    # ---- lifecycle --------------------------------------------------------------------------------------

    def create(self, pod: PodRecord, spec: SandboxSpec, save: Callable[[PodRecord], None] | None = None) -> None:
        """Pin namespaces, write hostname/resolv.conf/hosts, attach the network; fills ``pod``.

        ``save(pod)`` is called once the namespaces exist and just before the CNI ADD, so that a
        server killed half-way has recorded what :meth:`remove` must undo. On failure everything
        already done is undone before the error propagates.
        """
        netconf = None if spec.host_network else self.default_network()
        pod.dir = os.path.join(self.dir, pod.id)
        ns_dir = os.path.join(pod.dir, "ns")
        os.makedirs(ns_dir, mode=0o711, exist_ok=True)
        pod.host_network = spec.host_network
        try:
            self._make_cgroup(pod)
            kinds = [k for k, host in (("net", spec.host_network), ("ipc", spec.host_ipc),
                                       ("uts", spec.host_network)) if not host]
            sysctls: dict[str, str] = {}
            for key, value in spec.sysctls.items():
                where = sysctl_namespace(key)
                if where is None:
                    raise InvalidSandboxConfig(f"sysctl {key!r} is not namespaced (only net.*, IPC, fs.mqueue.*)")
                if where in kinds:
                    sysctls[key] = value
            hostname = spec.hostname or socket.gethostname()
            pod.namespaces = pin_namespaces(ns_dir, kinds, hostname, sysctls)
            if spec.pid_mode == "pod":
                pod.namespaces["pid"], pod.pid_init = self._start_pid_init(ns_dir, pod.cgroup_parent)
            self._write_files(pod, spec, hostname)
            self._make_shm(pod, spec)
            if netconf is not None:
                self._attach(pod, spec, netconf, save)
            elif save is not None:
                save(pod)
        except BaseException:
            with contextlib.suppress(Exception):
                self.remove(pod)
            raise

    def _make_shm(self, pod: PodRecord, spec: SandboxSpec) -> None:
        """The pod's /dev/shm, shared by its containers as they share its IPC namespace: a tmpfs in the
        pod's dir (the node's /dev/shm when the pod uses the node's IPC namespace, as containerd does)."""
        if spec.host_ipc:
            pod.shm = "/dev/shm"
            return
        path = os.path.join(pod.dir, "shm")
        os.makedirs(path, mode=0o755, exist_ok=True)
        _check(libc().mount(b"shm", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                            f"mode=1777,size={SHM_SIZE}".encode()), f"mount the pod's shm on {path}")
        pod.shm = path

    def _make_cgroup(self, pod: PodRecord) -> None:
        """The pod's cgroup (``pod.cgroup_parent``), its containers' parent: made here unless it exists
        (kubelet makes its pods' cgroups itself), and then removed with the pod."""
        if not pod.cgroup_parent:
            return
        try:
            pod.cgroup_owned = cgroups.create(pod.cgroup_parent)
        except ValueError as e:
            raise InvalidSandboxConfig(f"linux.cgroup_parent: {e}") from None
        except OSError as e:
            raise SandboxError(f"creating the pod's cgroup {pod.cgroup_parent}: {e.strerror}") from None

    def stats(self, pod: PodRecord) -> Stats:
        """cpu and memory of the whole pod, from its cgroup."""
        return cgroups.stats(pod.cgroup_parent) if pod.cgroup_parent else Stats(timestamp=time.time_ns())

    def _start_pid_init(self, ns_dir: str, cgroup: str) -> tuple[str, int]:
        path = os.path.join(ns_dir, "pid")
        procs = [os.path.join(d, "cgroup.procs") for d in cgroups.dirs(cgroup)] if cgroup else []
        with open(path, "w"):
            pass
        proc = subprocess.Popen(["unshare", f"--pid={path}", "--fork", "--kill-child", "--",
                                 sys.executable, "-S", "-c", PID_INIT, *procs],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, close_fds=True)
        self._children[proc.pid] = proc
        deadline = time.monotonic() + 5
        while not is_mountpoint_ns(path):  # unshare bind-mounts it once the init is forked
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SandboxError("could not start the pod's pid namespace init")
            time.sleep(0.001)
        return path, proc.pid

    def _write_files(self, pod: PodRecord, spec: SandboxSpec, hostname: str) -> None:
        def write(name: str, text: str) -> None:
            with open(os.path.join(pod.dir, name), "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(os.path.join(pod.dir, name), 0o644)

        write("hostname", hostname + "\n")
        resolv = resolv_conf(spec)
        if resolv is None:
            try:
                with open("/etc/resolv.conf", encoding="utf-8") as f:
                    resolv = f.read()
            except OSError:
                resolv = ""
        write("resolv.conf", resolv)
        hosts = HOSTS
        if spec.host_network:
            with contextlib.suppress(OSError), open("/etc/hosts", encoding="utf-8") as f:
                hosts = f.read()
        write("hosts", hosts)

    def _rt(self, pod: PodRecord) -> Any:
        from k8sx.cni.runner import RuntimeConf

        return RuntimeConf(container_id=pod.id, netns=pod.namespaces.get("net", ""), ifname=pod.ifname,
                           args=[(k, v) for k, v in pod.cni_args], capability_args=pod.cni_capability_args)

    def _attach(self, pod: PodRecord, spec: SandboxSpec, netconf: Any,
                save: Callable[[PodRecord], None] | None) -> None:
        from k8sx.cni.types import CNIError

        caps: dict[str, Any] = {}
        mappings = [{"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol.lower(),
                     "hostIP": p.host_ip} for p in spec.port_mappings if p.host_port > 0]
        if mappings:
            caps["portMappings"] = mappings
        pod.cni_capability_args = caps
        pod.cni_args = [["IgnoreUnknown", "1"], *([k, v] for k, v in spec.cni_args)]
        pod.network = netconf.name
        if save is not None:
            save(pod)
        try:
            result = self.runner.add_network(netconf, self._rt(pod))
        except CNIError as e:
            raise SandboxError(f"failed to set up the pod network (CNI {netconf.name}): {e}") from None
        pod.ips = pod_ips(result, pod.ifname)

    def detach(self, pod: PodRecord) -> None:
        """CNI DEL of the pod's attachment, with the configuration it was added with; safe to repeat."""
        from k8sx.cni import cache
        from k8sx.cni.conf import conf_list_from_bytes
        from k8sx.cni.types import CNIError

        cache_dir = self.runner._cache_dir()
        if not pod.network:  # a server killed during RunPodSandbox: find the attachment by the pod's id
            found = cache.attachments(cache_dir, pod.id)
            if not found:
                return
            pod.network, pod.ifname = found[0].network, found[0].ifname
            pod.namespaces.setdefault("net", os.path.join(self.dir, pod.id, "ns", "net"))
        entry = cache.read(cache_dir, pod.network, pod.id, pod.ifname)
        try:
            if entry is not None:
                netconf = conf_list_from_bytes(entry.config)
            else:
                from k8sx.cni.conf import load_network

                netconf = load_network(pod.network, self.network.conf_dir)
            rt = self._rt(pod)
            if not os.path.exists(rt.netns):
                rt.netns = ""
            self.runner.del_network(netconf, rt)
        except CNIError as e:
            if entry is None:  # nothing was cached: the attachment is already gone
                log.info("DEL of pod %s without a cache entry: %s", pod.id, e)
                return
            raise SandboxError(f"failed to tear down the pod network (CNI {pod.network}): {e}") from None

    def stop(self, pod: PodRecord) -> None:
        """Detach the network and end the pid namespace's init (the namespaces stay pinned until remove)."""
        self.detach(pod)
        self._stop_pid_init(pod)

    def _stop_pid_init(self, pod: PodRecord) -> None:
        pid = pod.pid_init
        if not pid:
            return
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                ours = pod.dir.encode() in f.read()
        except OSError:
            ours = False
        if ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # --kill-child takes the init with it
        proc = self._children.pop(pid, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        pod.pid_init = 0

    def remove(self, pod: PodRecord) -> None:
        """Stop, then unpin the namespaces and delete the pod's files. Idempotent, and complete even for
        a pod whose record missed its paths (the server was killed while creating it)."""
        self.stop(pod)
        pod_dir = os.path.join(self.dir, pod.id)
        ns_dir = os.path.join(pod_dir, "ns")
        paths = set(pod.namespaces.values())
        with contextlib.suppress(OSError):
            paths.update(os.path.join(ns_dir, name) for name in os.listdir(ns_dir))
        for path in paths:
            unmount(path)
        unmount(os.path.join(pod_dir, "shm"))
        shutil.rmtree(pod_dir, ignore_errors=True)
        pod.namespaces = {}
        # ours by record, or by name (a server killed before it recorded that it made it)
        if pod.cgroup_owned or pod.cgroup_parent.endswith("/" + POD_CGROUP_PREFIX + pod.id):
            try:
                cgroups.remove(pod.cgroup_parent)
            except OSError as e:
                raise SandboxError(f"removing the pod's cgroup {pod.cgroup_parent}: {e.strerror}") from None
