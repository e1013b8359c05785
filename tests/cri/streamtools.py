"""Helpers of the streaming tests: run client code inside the node's network namespace (where the
streaming server listens on loopback), start the runtime calls that return URLs, and count what the
server process holds (fds, threads) for the leak checks.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from runtimetools import RuntimeNode

from k8sx.net import ns


def in_netns(netns: str, fn: Callable[[], Any]) -> Any:
    """``fn()`` in a thread that lives in ``/run/netns/<netns>`` (sockets it makes stay there)."""
    out: list[Any] = []
    err: list[BaseException] = []

    def run() -> None:
        fd = ns.open_netns(f"/run/netns/{netns}")
        try:
            ns._setns(fd)   # this thread only, and it ends here
        finally:
            os.close(fd)
        try:
            out.append(fn())
        except BaseException as e:   # re-raised in the test's thread
            err.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


def client(node: RuntimeNode) -> Any:
    from k8sx.cri.client import Client, resolve

    return Client(resolve(runtime_endpoint=node.endpoint, image_endpoint=node.endpoint, config="/dev/null",
                          timeout="30s", debug=False))


def url(node: RuntimeNode, rpc: str, **fields: Any) -> str:
    from k8sx.cri.api.runtime.v1 import api_pb2

    with client(node) as c:
        req = getattr(api_pb2, f"{rpc}Request")(**fields)
        return str(c.call(getattr(c.runtime, rpc), req, rpc).url)


def server_pid(node: RuntimeNode) -> int:
    assert node.proc is not None
    return node.proc.pid


def usage(pid: int) -> tuple[int, int]:
    """(open fds, threads) of the process ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


def settle(pid: int, base: tuple[int, int], timeout: float = 10) -> tuple[int, int]:
    """The usage once it came back to ``base`` (or what it is after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        now = usage(pid)
        if (now[0] <= base[0] and now[1] <= base[1]) or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def crictl(node: RuntimeNode, *args: str, input: bytes | None = None, timeout: float = 60,
           ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ip", "netns", "exec", node.netns, "crictl", "-r", node.endpoint, "-t", "30s", *args],
                          input=input, capture_output=True, timeout=timeout)


def k8sx(node: RuntimeNode, *args: str, input: bytes | None = None, timeout: float = 60,
         ) -> subprocess.CompletedProcess[bytes]:
    from support import bin_path

    return subprocess.run(["ip", "netns", "exec", node.netns, bin_path("k8sx"), "runtime", "-r", node.endpoint,
                           "-t", "30s", *args], input=input, capture_output=True, timeout=timeout)
