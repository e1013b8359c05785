"""The typed boundary between the CRI servicers and the OCI layer.

Why a module of its own: the runtime servicer (sandboxes, containers, the state database) talks to
the OCI layer only through these plain dataclasses, so it never builds an OCI ``config.json``, never
runs runc or conmon, and never reads a cgroup file itself. Everything here is plain Python: no
protobuf, so the OCI layer stays testable without gRPC and the servicer owns the CRI mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from k8sx.errors import K8sxError

Status = Literal["created", "running", "exited", "unknown"]
Propagation = Literal["private", "rslave", "rshared"]
PidMode = Literal["container", "pod", "host"]

CREATED: Status = "created"
RUNNING: Status = "running"
EXITED: Status = "exited"
UNKNOWN: Status = "unknown"


@dataclass
class Mount:
    """A bind mount from the host (CRI ``Mount``); ``propagation`` as CRI's PRIVATE/HOST_TO_CONTAINER/BIDIRECTIONAL."""

    host_path: str
    container_path: str
    readonly: bool = False
    propagation: Propagation = "private"


@dataclass
class Device:
    """A host device node made visible in the container (CRI ``Device``); permissions like ``"rwm"``."""

    host_path: str
    container_path: str
    permissions: str = "rwm"


@dataclass
class Resources:
    """Linux resources (CRI ``LinuxContainerResources``); 0 / empty means "not set"."""

    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    memory_limit_in_bytes: int = 0
    oom_score_adj: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    hugepage_limits: dict[str, int] = field(default_factory=dict)  # page size ("2MB") -> bytes
    memory_swap_limit_in_bytes: int = 0


@dataclass
class Seccomp:
    """``type`` is ``RuntimeDefault`` (our copy of the docker default profile), ``Unconfined`` or
    ``Localhost`` (``localhost_ref`` = absolute path of an OCI seccomp JSON profile on the host)."""

    type: Literal["RuntimeDefault", "Unconfined", "Localhost"] = "Unconfined"
    localhost_ref: str = ""


@dataclass
class Security:
    """CRI ``LinuxContainerSecurityContext`` reduced to what the OCI spec needs."""

    run_as_user: int | None = None          # uid; wins over run_as_username and the image USER
    run_as_username: str = ""              # resolved in the image's /etc/passwd
    run_as_group: int | None = None         # gid; only with run_as_user/run_as_username/image user
    supplemental_groups: list[int] = field(default_factory=list)
    privileged: bool = False
    no_new_privs: bool = False
    readonly_rootfs: bool = False
    add_capabilities: list[str] = field(default_factory=list)   # "NET_ADMIN", "CAP_NET_ADMIN" or "ALL"
    drop_capabilities: list[str] = field(default_factory=list)
    seccomp: Seccomp = field(default_factory=Seccomp)
    apparmor_profile: str = ""   # "localhost/<name>" or "unconfined"; ignored with a warning without AppArmor
    masked_paths: list[str] | None = None     # None = the defaults (containerd's); [] = none
    readonly_paths: list[str] | None = None   # None = the defaults (containerd's); [] = none


@dataclass
class Namespaces:
    """Which namespaces the container joins. A path joins a pinned namespace (the sandbox's);
    ``None`` for network/ipc/uts means the host's. pid: ``container`` = a new one, ``pod`` = join
    ``pid_path``, ``host`` = the host's. A mount namespace is always new."""

    network: str | None = None
    ipc: str | None = None
    uts: str | None = None
    pid: PidMode = "container"
    pid_path: str = ""


@dataclass
class ContainerSpecInput:
    """Everything :meth:`k8sx.cri.oci.runtime.OciRuntime.create` needs for one container.

    ``image_layers`` are the unpacked layer dirs, lowest first (``ImageStore.layers``);
    ``image_config`` is the image config's ``config`` object (Env, Entrypoint, Cmd, WorkingDir, User).
    ``command``/``args`` combine with the image's Entrypoint/Cmd as kubelet does. ``log_path`` is the
    CRI log file (absolute; conmon writes ``<RFC3339Nano> stdout|stderr F|P <line>``).
    ``cgroup_parent`` is a cgroupfs path ("/kubepods/pod<uid>"); the container gets
    ``<cgroup_parent>/k8sx-<id>`` (absolute). ``annotations`` land in config.json as they are.
    """

    id: str
    image_layers: list[str]
    log_path: str
    image_config: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    sandbox_id: str = ""
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    envs: list[tuple[str, str]] = field(default_factory=list)
    working_dir: str = ""
    mounts: list[Mount] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    hostname: str = ""
    namespaces: Namespaces = field(default_factory=Namespaces)
    security: Security = field(default_factory=Security)
    resources: Resources = field(default_factory=Resources)
    cgroup_parent: str = "/k8sx"
    sysctls: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False


@dataclass
class ContainerState:
    """What ContainerStatus reports. Times are nanoseconds since the epoch (0 = not yet).
    ``reason`` is ``Completed`` (exit 0), ``Error`` or ``OOMKilled`` once exited, else ""."""

    id: str
    status: Status
    pid: int = 0
    exit_code: int = 0
    created_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    reason: str = ""
    message: str = ""
    log_path: str = ""
    rootfs: str = ""
    bundle: str = ""


@dataclass
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int
    timed_out: bool = False


@dataclass
class Stats:
    """ContainerStats from cgroups v1 and the writable (upper) layer. Zero = not available."""

    timestamp: int
    cpu_usage_ns: int = 0
    memory_usage_bytes: int = 0
    memory_working_set_bytes: int = 0
    memory_rss_bytes: int = 0
    page_faults: int = 0
    major_page_faults: int = 0
    writable_bytes: int = 0
    writable_inodes: int = 0


class ContainerNotFound(K8sxError):
    """No container with this id in the OCI layer (the servicer answers NotFound)."""


class ContainerExists(K8sxError):
    """create() with an id already in use (AlreadyExists)."""


class ContainerStateError(K8sxError):
    """The container is not in a state that allows this (FailedPrecondition), e.g. exec on an exited one."""
