"""The OCI layer of the CRI runtime: config.json from a CRI container config, the overlay rootfs,
and containers supervised by conmon over runc (or crun).

Why a package: the runtime servicer must not know runc's, conmon's or the kernel's details; it calls
:class:`~k8sx.cri.oci.runtime.OciRuntime` with the plain dataclasses of :mod:`k8sx.cri.oci.types`.
Importing this package is cheap (no grpc, no subprocess start).

The driver (``k8sx.cri.oci.runtime``)::

    rt = OciRuntime(state_dir="/run/k8sx/oci", root_dir="/var/lib/k8sx/oci", runtime_path="runc")
    rt.create(ContainerSpecInput(...)) -> ContainerState     # overlay rootfs, config.json, conmon + runc create
    rt.start(id); rt.stop(id, timeout_s); rt.kill(id, signal); rt.delete(id)   # delete: no mount/cgroup/process left
    rt.state(id) -> ContainerState      # from runc state + conmon's exit file: valid after a restart of ours
    rt.list() -> list[str]              # container ids with a bundle in the state dir
    rt.exec_sync(id, cmd, timeout_s) -> ExecResult
    rt.update(id, Resources); rt.reopen_log(id); rt.stats(id) -> Stats
"""

from __future__ import annotations

from k8sx.cri.oci.types import (
    CREATED,
    EXITED,
    RUNNING,
    UNKNOWN,
    ContainerExists,
    ContainerNotFound,
    ContainerSpecInput,
    ContainerState,
    ContainerStateError,
    Device,
    ExecResult,
    Mount,
    Namespaces,
    Resources,
    Seccomp,
    Security,
    Stats,
)

__all__ = [
    "CREATED", "EXITED", "RUNNING", "UNKNOWN", "ContainerExists", "ContainerNotFound",
    "ContainerSpecInput", "ContainerState", "ContainerStateError", "Device", "ExecResult", "Mount",
    "Namespaces", "Resources", "Seccomp", "Security", "Stats",
]
