"""cgroup v1 files of a container (or a pod): where they are, what they count, how to remove them.

Why it exists: stats (cpu, memory) come from cgroup files, and "delete leaks nothing" needs the
cgroup dirs removed from every hierarchy, including the parents runc creates but never removes.
One place knows the v1 (and hybrid) layout, read from /proc/self/mountinfo once.
"""

from __future__ import annotations

import errno
import functools
import os
import time

from k8sx.cri.oci.types import Stats


@functools.lru_cache(maxsize=1)
def hierarchies() -> dict[str, str]:
    """Controller (or ``name=...``) -> mount point of each cgroup v1 hierarchy; ``unified`` for v2."""
    out: dict[str, str] = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, super_opts = fields[sep + 1], fields[sep + 3]
            if fstype == "cgroup":
                for opt in super_opts.split(","):
                    if opt not in ("rw", "ro") and not opt.startswith("release_agent") and opt not in out:
                        out[opt] = fields[4]
            elif fstype == "cgroup2" and "unified" not in out:
                out["unified"] = fields[4]
    return out


def dirs(path: str) -> list[str]:
    """The existing dirs of cgroup ``path`` (absolute, e.g. /k8sx/k8sx-<id>) in every hierarchy."""
    seen: set[str] = set()
    out = []
    for mnt in hierarchies().values():
        d = os.path.join(mnt, path.lstrip("/"))
        if mnt not in seen and os.path.isdir(d):
            out.append(d)
        seen.add(mnt)
    return out


def check_path(path: str) -> str:
    """``path`` as a cgroupfs path below the root (absolute, no ``..``); ValueError otherwise (a systemd
    slice name, a relative path)."""
    if not path.startswith("/") or ".." in path.split("/"):
        raise ValueError(f"cgroup path {path!r}: only cgroupfs paths (absolute, without '..') are supported")
    return os.path.normpath(path)


def create(path: str) -> bool:
    """Make cgroup ``path`` (and its parents) in every hierarchy, as a pod's cgroup; True when it did not
    exist anywhere before (the caller then owns it and removes it). A new cpuset dir gets its parent's
    cpus and mems, without which no task could join it or a child."""
    path = check_path(path)
    existed = bool(dirs(path))
    seen: set[str] = set()
    for controller, mnt in hierarchies().items():
        if mnt in seen:
            continue
        seen.add(mnt)
        parts = [p for p in path.split("/") if p]
        for i in range(1, len(parts) + 1):
            d = os.path.join(mnt, *parts[:i])
            try:
                os.mkdir(d, 0o755)
            except FileExistsError:
                continue
            if controller == "cpuset":
                for name in ("cpuset.cpus", "cpuset.mems"):
                    with open(os.path.join(os.path.dirname(d), name), encoding="ascii") as src:
                        value = src.read().strip()
                    with open(os.path.join(d, name), "w", encoding="ascii") as dst:
                        dst.write(value)
    return not existed


def read_int(controller: str, path: str, name: str) -> int:
    mnt = hierarchies().get(controller)
    if not mnt:
        return 0
    try:
        with open(os.path.join(mnt, path.lstrip("/"), name), encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def read_stat(controller: str, path: str, name: str) -> dict[str, int]:
    mnt = hierarchies().get(controller)
    out: dict[str, int] = {}
    if not mnt:
        return out
    try:
        with open(os.path.join(mnt, path.lstrip("/"), name), encoding="ascii") as f:
            for line in f:
                k, _, v = line.partition(" ")
                if v.strip().lstrip("-").isdigit():
                    out[k] = int(v)
    except OSError:
        pass
    return out


def procs(path: str) -> set[int]:
    """The pids in cgroup ``path`` and below, over all hierarchies."""
    pids: set[int] = set()
    for d in dirs(path):
        for dirpath, _dirnames, _files in os.walk(d):
            try:
                with open(os.path.join(dirpath, "cgroup.procs"), encoding="ascii") as f:
                    pids.update(int(x) for x in f.read().split())
            except OSError:
                continue
    return pids


def remove(path: str, parents_up_to: str = "", timeout: float = 2.0) -> None:
    """rmdir cgroup ``path`` (its sub-dirs first) in every hierarchy, then, if ``parents_up_to`` is given, its
    now-empty parents below that one. A dir still holding
    processes is retried until ``timeout`` (exiting tasks leave the cgroup asynchronously)."""
    deadline = time.monotonic() + timeout
    for d in dirs(path):
        for dirpath, _dirnames, _files in sorted(os.walk(d), key=lambda w: -len(w[0])):
            while True:
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
    if not parents_up_to:
        return
    stop = parents_up_to.rstrip("/")
    parent = os.path.dirname(path.rstrip("/"))
    while parent.startswith(stop + "/"):
        for d in dirs(parent):
            try:
                os.rmdir(d)
            except OSError:
                return
        parent = os.path.dirname(parent)


def stats(path: str) -> Stats:
    """cpu and memory of cgroup ``path`` (a container's or a pod's): usage, working set (usage less
    inactive file pages, as kubelet computes it), rss and page faults."""
    mem = read_stat("memory", path, "memory.stat")
    usage = read_int("memory", path, "memory.usage_in_bytes")
    return Stats(
        timestamp=time.time_ns(),
        cpu_usage_ns=read_int("cpuacct", path, "cpuacct.usage"),
        memory_usage_bytes=usage,
        memory_working_set_bytes=max(usage - mem.get("total_inactive_file", 0), 0),
        memory_rss_bytes=mem.get("total_rss", 0),
        page_faults=mem.get("total_pgfault", 0),
        major_page_faults=mem.get("total_pgmajfault", 0),
    )
