"""The OCI runtime spec (``config.json``) of a CRI container.

Why it exists: kubelet sends a CRI ``ContainerConfig``; runc wants an OCI bundle. The mapping has
many rules that users depend on (how image Entrypoint/Cmd combine with command/args, which user and
groups a container runs as, which capabilities, seccomp, masked paths and mounts it gets by default).
They follow containerd's CRI plugin, the behaviour kubelet is tested against, and live here only.
Input is :class:`~k8sx.cri.oci.types.ContainerSpecInput`; output a JSON-ready dict.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import Any

from k8sx.cri.oci import seccomp
from k8sx.cri.oci.types import ContainerSpecInput, Mount, Resources, Security
from k8sx.cri.oci.users import resolve_in_root, resolve_user
from k8sx.errors import K8sxError

log = logging.getLogger(__name__)

OCI_VERSION = "1.0.2-dev"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CGROUP_V1_ROOT = "/sys/fs/cgroup"

# The capabilities a non-privileged container gets unless told otherwise (containerd's default set).
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]

# Linux capability numbers -> names; the host's last one is /proc/sys/kernel/cap_last_cap.
CAP_NAMES = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
]

# Paths hidden (masked) and made read-only in a non-privileged container (containerd's defaults).
DEFAULT_MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
    "/sys/devices/virtual/powercap", "/proc/scsi",
]
DEFAULT_READONLY_PATHS = [
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
]

_PROPAGATION = {"private": "rprivate", "rslave": "rslave", "rshared": "rshared"}


def all_capabilities() -> list[str]:
    """Every capability we hold ourselves (what ``ALL`` and privileged mean, as containerd's
    "current capabilities"): a runtime cannot give more, and root here lacks e.g. CAP_SYS_RESOURCE."""
    mask = -1
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(("CapBnd:", "CapEff:")):
                    mask &= int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return [f"CAP_{n}" for i, n in enumerate(CAP_NAMES) if mask >> i & 1]


def _cap_name(name: str) -> str:
    n = name.strip().upper()
    n = n if n.startswith("CAP_") else f"CAP_{n}"
    if n[4:] not in CAP_NAMES:
        raise K8sxError(f"unknown capability {name!r}")
    return n


def capabilities(sec: Security) -> list[str]:
    """The capability set: the defaults (or all when privileged), then CRI's add, then its drop;
    ``ALL`` in add means every capability, in drop none (applied before the named ones)."""
    if sec.privileged:
        return all_capabilities()
    caps = list(DEFAULT_CAPABILITIES)
    add = [c for c in sec.add_capabilities if c.upper() != "ALL"]
    drop = [c for c in sec.drop_capabilities if c.upper() != "ALL"]
    if any(c.upper() == "ALL" for c in sec.add_capabilities):
        caps = all_capabilities()
    if any(c.upper() == "ALL" for c in sec.drop_capabilities):
        caps = []
    for c in map(_cap_name, add):
        if c not in caps:
            caps.append(c)
    dropped = {_cap_name(c) for c in drop}
    return [c for c in caps if c not in dropped]


def command_line(inp: ContainerSpecInput) -> list[str]:
    """argv as kubelet/containerd build it: ``command`` replaces the image Entrypoint (and then the
    image Cmd is ignored); ``args`` replace the image Cmd."""
    cfg = inp.image_config
    if inp.command:
        argv = list(inp.command) + list(inp.args)
    else:
        argv = list(cfg.get("Entrypoint") or []) + list(inp.args or cfg.get("Cmd") or [])
    if not argv:
        raise K8sxError(f"container {inp.name or inp.id}: no command specified (neither in the "
                        "config nor in the image)")
    return argv


def environment(inp: ContainerSpecInput) -> list[str]:
    """HOSTNAME, then the image's Env, then CRI's envs; a later value of a key replaces the earlier."""
    env: dict[str, str] = {}
    if inp.hostname:
        env["HOSTNAME"] = inp.hostname
    for item in inp.image_config.get("Env") or []:
        k, _, v = item.partition("=")
        env[k] = v
    if "PATH" not in env:
        env["PATH"] = DEFAULT_PATH
    for k, v in inp.envs:
        env[k] = v
    return [f"{k}={v}" for k, v in env.items()]


def user_string(inp: ContainerSpecInput) -> str:
    sec = inp.security
    if sec.run_as_user is not None:
        user = str(sec.run_as_user)
    elif sec.run_as_username:
        user = sec.run_as_username
    else:
        user = ""
    if sec.run_as_group is not None:
        if not user:
            raise K8sxError(f"user group {sec.run_as_group} is specified without user")
        user = f"{user}:{sec.run_as_group}"
    return user or inp.image_config.get("User") or ""


def restrict_oom_score_adj(want: int) -> int:
    """A value we may set: not below our own (raising it needs no privilege, lowering it needs
    CAP_SYS_RESOURCE, which root lacks on some hosts), at most 1000."""
    try:
        with open("/proc/self/oom_score_adj", encoding="ascii") as f:
            current = int(f.read())
    except (OSError, ValueError):
        current = 0
    return min(max(want, current), 1000)


def _default_mounts(privileged: bool) -> list[dict[str, Any]]:
    sysfs = ["nosuid", "noexec", "nodev", "rw" if privileged else "ro"]
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sysfs},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "rw" if privileged else "ro"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    ]


def _mount_propagation_of(path: str) -> set[str]:
    """The propagation flags (shared/master) of the mount point holding ``path``, from mountinfo."""
    best, flags = "", set()
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            mnt = fields[4].replace("\\040", " ")
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                sep = fields.index("-")
                best, flags = mnt, {x.split(":")[0] for x in fields[6:sep]}
    return flags


def _user_mounts(mounts: list[Mount]) -> tuple[list[dict[str, Any]], str]:
    out = []
    rootfs_propagation = ""
    for m in mounts:
        if not os.path.isabs(m.container_path):
            raise K8sxError(f"mount {m.container_path!r}: container path must be absolute")
        if not os.path.exists(m.host_path):
            os.makedirs(m.host_path, exist_ok=True)
        prop = _PROPAGATION.get(m.propagation)
        if prop is None:
            raise K8sxError(f"mount {m.container_path}: unknown propagation {m.propagation!r}")
        if prop != "rprivate":
            flags = _mount_propagation_of(m.host_path)
            if prop == "rshared" and "shared" not in flags:
                raise K8sxError(f"path {m.host_path!r} is mounted on a mount that is not shared")
            if prop == "rslave" and not flags & {"shared", "master"}:
                raise K8sxError(f"path {m.host_path!r} is mounted on a mount that is neither shared nor slave")
            if prop == "rshared" or not rootfs_propagation:
                rootfs_propagation = prop
        out.append({"destination": m.container_path, "type": "bind", "source": m.host_path,
                    "options": ["rbind", prop, "ro" if m.readonly else "rw"]})
    return out, rootfs_propagation


def _device_entry(host_path: str, container_path: str) -> dict[str, Any]:
    try:
        st = os.stat(host_path)
    except OSError as e:
        raise K8sxError(f"device {host_path!r}: {e.strerror}") from e
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise K8sxError(f"device {host_path!r} is not a character or block device")
    return {"path": container_path, "type": kind, "major": os.major(st.st_rdev),
            "minor": os.minor(st.st_rdev), "fileMode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid, "gid": st.st_gid}


_HOST_DEV_SKIP = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}


def host_devices() -> list[dict[str, Any]]:
    """Every device node of the host's /dev (what a privileged container sees)."""
    out = []
    for dirpath, dirnames, filenames in os.walk("/dev"):
        dirnames[:] = [d for d in dirnames if not (dirpath == "/dev" and d in _HOST_DEV_SKIP)]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if path == "/dev/console":
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                out.append(_device_entry(path, path))
    return out


def resources(r: Resources) -> dict[str, Any]:
    """``linux.resources`` (without devices) for cgroup v1."""
    out: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    if r.cpu_shares:
        cpu["shares"] = r.cpu_shares
    if r.cpu_quota:
        cpu["quota"] = r.cpu_quota
    if r.cpu_period:
        cpu["period"] = r.cpu_period
    if r.cpuset_cpus:
        cpu["cpus"] = r.cpuset_cpus
    if r.cpuset_mems:
        cpu["mems"] = r.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    if r.memory_limit_in_bytes:
        mem: dict[str, Any] = {"limit": r.memory_limit_in_bytes}
        if r.memory_swap_limit_in_bytes:
            mem["swap"] = r.memory_swap_limit_in_bytes
        elif os.path.exists(os.path.join(CGROUP_V1_ROOT, "memory", "memory.memsw.limit_in_bytes")):
            mem["swap"] = r.memory_limit_in_bytes   # no swap beyond the limit, as kubelet expects
        out["memory"] = mem
    if r.hugepage_limits:
        if os.path.isdir(os.path.join(CGROUP_V1_ROOT, "hugetlb")):
            out["hugepageLimits"] = [{"pageSize": k, "limit": v} for k, v in sorted(r.hugepage_limits.items())]
        else:   # hybrid hosts have hugetlb in cgroup2 only, where runc's v1 manager cannot set it
            log.warning("hugepage limits ignored: no cgroup v1 hugetlb controller on this host")
    return out


def cgroups_path(inp: ContainerSpecInput) -> str:
    parent = inp.cgroup_parent or "/k8sx"
    if not parent.startswith("/"):
        raise K8sxError(f"cgroup parent {parent!r}: only cgroupfs paths (starting with /) are supported")
    return f"{parent.rstrip('/')}/k8sx-{inp.id}"


def apparmor_available() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled", encoding="ascii") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def apparmor_profile(sec: Security) -> str:
    """The AppArmor profile to run under, or "" (none). ``runtime/default`` would need a profile of
    ours loaded in the kernel, which we don't ship; without AppArmor in the kernel (this project's
    hosts) every request is ignored, with a warning so that nobody believes it is enforced."""
    want = sec.apparmor_profile
    if not want or sec.privileged or want == "unconfined":
        return ""
    if not apparmor_available():
        log.warning("AppArmor profile %r ignored: AppArmor is not enabled on this host", want)
        return ""
    if want.startswith("localhost/"):
        return want.removeprefix("localhost/")
    log.warning("AppArmor profile %r ignored: k8sx loads no default AppArmor profile", want)
    return ""


def namespaces(inp: ContainerSpecInput) -> list[dict[str, str]]:
    ns = inp.namespaces
    out: list[dict[str, str]] = [{"type": "mount"}]
    if ns.pid == "container":
        out.append({"type": "pid"})
    elif ns.pid == "pod":
        if not ns.pid_path:
            raise K8sxError("pid namespace mode 'pod' needs the pod's pid namespace path")
        out.append({"type": "pid", "path": ns.pid_path})
    elif ns.pid != "host":
        raise K8sxError(f"unknown pid namespace mode {ns.pid!r}")
    for kind, path in (("network", ns.network), ("ipc", ns.ipc), ("uts", ns.uts)):
        if path:
            if not os.path.exists(path):
                raise K8sxError(f"{kind} namespace {path} does not exist")
            out.append({"type": kind, "path": path})
    return out


def build_spec(inp: ContainerSpecInput, rootfs: str) -> dict[str, Any]:
    """The config.json of ``inp`` with its root at ``rootfs`` (the mounted image, for /etc/passwd)."""
    sec = inp.security
    user = resolve_user(rootfs, user_string(inp), sec.supplemental_groups)
    caps = capabilities(sec)
    cwd = inp.working_dir or inp.image_config.get("WorkingDir") or "/"
    if not cwd.startswith("/"):
        raise K8sxError(f"working dir {cwd!r} must be absolute")
    process: dict[str, Any] = {
        "terminal": inp.tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
        "args": command_line(inp),
        "env": environment(inp),
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": sec.no_new_privs and not sec.privileged,
        "oomScoreAdj": restrict_oom_score_adj(inp.resources.oom_score_adj),
    }
    profile = apparmor_profile(sec)
    if profile:
        process["apparmorProfile"] = profile
    user_mounts, rootfs_propagation = _user_mounts(inp.mounts)
    taken = {m["destination"].rstrip("/") for m in user_mounts}
    mounts = [m for m in _default_mounts(sec.privileged) if m["destination"] not in taken] + user_mounts

    devices = [_device_entry(d.host_path, d.container_path) for d in inp.devices]
    dev_rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    if sec.privileged:
        devices = host_devices() + devices
        dev_rules = [{"allow": True, "access": "rwm"}]
    else:
        for d, entry in zip(inp.devices, devices, strict=True):
            dev_rules.append({"allow": True, "type": entry["type"], "major": entry["major"],
                              "minor": entry["minor"], "access": d.permissions or "rwm"})
    res = resources(inp.resources)
    res["devices"] = dev_rules

    linux: dict[str, Any] = {
        "namespaces": namespaces(inp),
        "cgroupsPath": cgroups_path(inp),
        "resources": res,
        "devices": devices,
    }
    if inp.sysctls:
        linux["sysctl"] = dict(inp.sysctls)
    if rootfs_propagation:
        linux["rootfsPropagation"] = rootfs_propagation
    if not sec.privileged:
        linux["maskedPaths"] = list(DEFAULT_MASKED_PATHS if sec.masked_paths is None else sec.masked_paths)
        linux["readonlyPaths"] = list(DEFAULT_READONLY_PATHS if sec.readonly_paths is None
                                      else sec.readonly_paths)
        if sec.seccomp.type == "RuntimeDefault":
            linux["seccomp"] = seccomp.runtime_default(set(caps))
        elif sec.seccomp.type == "Localhost":
            linux["seccomp"] = seccomp.localhost(sec.seccomp.localhost_ref)
        elif sec.seccomp.type != "Unconfined":
            raise K8sxError(f"unknown seccomp profile type {sec.seccomp.type!r}")
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": rootfs, "readonly": sec.readonly_rootfs},
        "mounts": mounts,
        "annotations": dict(inp.annotations),
        "linux": linux,
    }
    if inp.hostname and inp.namespaces.uts:
        spec["hostname"] = inp.hostname
    return spec


def ensure_workdir(rootfs: str, spec: dict[str, Any]) -> None:
    """Create the working dir in the rootfs (confined to it), owned by the container's user, as
    containerd does, so a fresh WORKDIR of an image or a CRI working_dir just works."""
    path = resolve_in_root(rootfs, spec["process"]["cwd"])
    if not os.path.exists(path):
        os.makedirs(path, mode=0o755, exist_ok=True)
        user = spec["process"]["user"]
        os.chown(path, user["uid"], user["gid"])


def exec_process(spec: dict[str, Any], args: list[str]) -> dict[str, Any]:
    """The ``process`` of an exec in the container: the container's own (user, env, caps, cwd,
    no_new_privs, apparmor) with other args and no terminal."""
    if not args:
        raise K8sxError("exec: no command given")
    proc = dict(spec["process"])
    proc["args"] = list(args)
    proc["terminal"] = False
    proc.pop("oomScoreAdj", None)
    return proc
