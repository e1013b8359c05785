"""Fixtures and helpers for the OCI layer tests (real runc + conmon on a busybox-static rootfs).

The fixtures are registered in tests/cri/conftest.py (imported from here).
``oci_layers`` (session) are two unpacked layer dirs: busybox with its applets, then /etc/passwd and
/etc/group with users alice (1000) and bob (1001), groups staff (50: alice, bob) and wheel (10:
alice), and /bin/probe (a static C program that calls keyctl(2), to see seccomp at work).
``oci`` is an :class:`OciEnv`: an OciRuntime in a ``k8sxto-*`` dir, a ``/k8sxto-*`` cgroup parent and a
fresh network namespace; teardown deletes every container and then checks that nothing leaked
(mounts, cgroups, processes, files).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import unique

from k8sx.cri.images import build
from k8sx.cri.oci import ContainerSpecInput, ContainerState, Namespaces
from k8sx.cri.oci import cgroups as cg
from k8sx.cri.oci.runtime import OciRuntime

PROBE_C = r"""
#include <stdio.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
    long r = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session keyring */, 0);
    if (r < 0) { printf("keyctl: %s\n", strerror(errno)); return 1; }
    printf("keyctl: ok\n");
    return 0;
}
"""

PASSWD = ("root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n"
          "bob:x:1001:1001::/:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n")
GROUP = "root:x:0:\nwheel:x:10:alice\nstaff:x:50:alice,bob\nalice:x:1000:\nbob:x:1001:\nnogroup:x:65534:\n"


@pytest.fixture(scope="session")
def oci_layers() -> Iterator[list[str]]:
    top = tempfile.mkdtemp(prefix="k8sxto-layers-")
    try:
        l1, l2 = os.path.join(top, "l1"), os.path.join(top, "l2")
        build.busybox_rootfs(l1)
        os.makedirs(os.path.join(l2, "etc"))
        os.makedirs(os.path.join(l2, "bin"))
        with open(os.path.join(l2, "etc", "passwd"), "w") as f:
            f.write(PASSWD)
        with open(os.path.join(l2, "etc", "group"), "w") as f:
            f.write(GROUP)
        src = os.path.join(top, "probe.c")
        with open(src, "w") as f:
            f.write(PROBE_C)
        subprocess.run(["gcc", "-static", "-O1", "-o", os.path.join(l2, "bin", "probe"), src], check=True)
        yield [l1, l2]
    finally:
        shutil.rmtree(top, ignore_errors=True)


def mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path)]


class OciEnv:
    """One test's runtime, dirs, cgroup parent and network namespace."""

    def __init__(self, layers: list[str], netns_path: str, runtime_path: str = "runc") -> None:
        self.dir = tempfile.mkdtemp(prefix="k8sxto-")
        self.state = os.path.join(self.dir, "state")
        self.logs = os.path.join(self.dir, "logs")
        self.layers = layers
        self.netns = netns_path
        self.cgroup_parent = "/" + unique("o", 24)
        self.rt = OciRuntime(self.state, os.path.join(self.dir, "root"), runtime_path=runtime_path)

    def spec(self, command: list[str], **kw: Any) -> ContainerSpecInput:
        cid = kw.pop("id", None) or unique("o", 32)
        kw.setdefault("namespaces", Namespaces(network=self.netns))
        return ContainerSpecInput(id=cid, image_layers=kw.pop("image_layers", self.layers),
                                  log_path=os.path.join(self.logs, f"{cid}.log"), command=command,
                                  cgroup_parent=self.cgroup_parent, **kw)

    def run(self, command: list[str], timeout: float = 20, **kw: Any) -> tuple[ContainerState, str]:
        """Create and start a container, wait for its exit; (state, log text)."""
        inp = self.spec(command, **kw)
        self.rt.create(inp)
        self.rt.start(inp.id)
        st = self.wait_exit(inp.id, timeout)
        return st, self.log(inp.id)

    def start(self, command: list[str], **kw: Any) -> str:
        inp = self.spec(command, **kw)
        self.rt.create(inp)
        self.rt.start(inp.id)
        return inp.id

    def wait_exit(self, cid: str, timeout: float = 20) -> ContainerState:
        deadline = time.monotonic() + timeout
        while True:
            st = self.rt.state(cid)
            if st.status == "exited":
                return st
            assert time.monotonic() < deadline, f"container {cid} still {st.status} after {timeout}s"
            time.sleep(0.02)

    def wait_log(self, cid: str, text: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while True:
            log = self.log(cid)
            if text in log:
                return log
            assert time.monotonic() < deadline, f"{text!r} not in the log of {cid}: {log!r}"
            time.sleep(0.02)

    def log(self, cid: str) -> str:
        try:
            with open(os.path.join(self.logs, f"{cid}.log"), encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def output(self, cid: str) -> str:
        """The log's lines (partial ``P`` entries joined to the rest of their line, per stream)."""
        lines: list[str] = []
        pending: dict[str, str] = {}
        for line in self.log(cid).splitlines():
            _ts, stream, tag, text = (line.split(" ", 3) + [""])[:4]
            pending[stream] = pending.get(stream, "") + text
            if tag == "F":
                lines.append(pending.pop(stream))
        lines += pending.values()
        return "\n".join(lines)

    def cgroup_dirs(self) -> list[str]:
        return cg.dirs(self.cgroup_parent)

    def teardown(self) -> None:
        """Delete every container, then prove that nothing is left behind."""
        pids = {cid: (self.rt._pid(cid), self.rt._conmon_pid(cid)) for cid in self.rt.list()}
        errors = []
        for cid in self.rt.list():
            try:
                self.rt.delete(cid)
            except Exception as e:   # keep deleting the others; report below
                errors.append(f"{cid}: {e}")
        try:
            leftovers = cg.procs(self.cgroup_parent)
            assert not errors, errors
            assert not mounts_under(self.dir), mounts_under(self.dir)
            alive = [p for pair in pids.values() for p in pair if p and os.path.exists(f"/proc/{p}")
                     and not _zombie(p)]
            assert not alive, f"processes left: {alive}"
            assert not leftovers, f"processes left in the cgroup: {leftovers}"
            assert self.rt.list() == []
            assert os.listdir(os.path.join(self.state, "bundles")) == []
            assert os.listdir(os.path.join(self.state, "exits")) == []
            assert os.listdir(os.path.join(self.state, "s")) == []
            assert os.listdir(os.path.join(self.dir, "root", "containers")) == []
            # Container cgroups are gone; only the parent (the "pod" cgroup) is ours to remove.
            for d in self.cgroup_dirs():
                assert [e for e in os.listdir(d) if os.path.isdir(os.path.join(d, e))] == [], d
        finally:
            for m in reversed(mounts_under(self.dir)):
                subprocess.run(["umount", "-l", m], check=False)
            try:
                cg.remove(self.cgroup_parent)
            finally:
                shutil.rmtree(self.dir, ignore_errors=True)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture
def oci(oci_layers: list[str], netns: Any) -> Iterator[OciEnv]:
    env = OciEnv(oci_layers, netns.path(netns("o")))
    try:
        yield env
    finally:
        env.teardown()
