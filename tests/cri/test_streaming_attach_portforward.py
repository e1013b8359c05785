"""Streaming attach and port-forward against a real ``k8sx runtime serve``: crictl 1.26 (Go's SPDY)
and our verbs attach to a stdin-once shell through conmon's attach socket and to a tty container
(with resize), and forward local ports to a web server inside a pod's network namespace and inside a
host-network pod, several connections at once, with a clear error for a closed port.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import streamtools as st
from runtimetools import RuntimeNode
from support import bin_path

from k8sx.cri.streaming import client as sc

WEB = ["sh", "-c", "mkdir -p /tmp/w && echo hello-pf > /tmp/w/index.html && "
                   "dd if=/dev/zero of=/tmp/w/big bs=1024 count=2048 2>/dev/null && exec httpd -f -p {port} -h /tmp/w"]


def web(port: int) -> list[str]:
    return [WEB[0], WEB[1], WEB[2].format(port=port)]


def http_get(netns: str, port: int, path: str = "/") -> bytes:
    def get() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)
    return st.in_netns(netns, get)  # type: ignore[no-any-return]


def create_started(node: RuntimeNode, pod_cfg: str, pod: str, name: str, cmd: list[str], **extra: object) -> str:
    cid = node.cli("create", pod, node.container_config(name, cmd, **extra), pod_cfg).stdout.strip()
    node.cli("start", cid)
    return cid


@pytest.fixture(scope="module")
def pod(runtime_node: RuntimeNode) -> Iterator[tuple[str, str]]:
    cfg = runtime_node.pod_config("k8sxtxatt")
    pod = runtime_node.cli("runp", cfg).stdout.strip()
    try:
        yield pod, cfg
    finally:
        runtime_node.cli("rmp", "-f", pod, check=False)


def test_crictl_attach_stdin_once_shell(runtime_node: RuntimeNode, pod: tuple[str, str]) -> None:
    cid = create_started(runtime_node, pod[1], pod[0], "sh1", ["sh"], stdin=True, stdin_once=True)
    r = st.crictl(runtime_node, "attach", "-i", cid, input=b"echo hello; echo oops >&2\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello\n" and b"oops" in r.stderr
    # stdin-once: the end of the client's stdin was the shell's; it exited
    deadline = time.monotonic() + 10
    while "EXITED" not in runtime_node.cli("inspect", cid).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_our_attach_verb(runtime_node: RuntimeNode, pod: tuple[str, str]) -> None:
    cid = create_started(runtime_node, pod[1], pod[0], "sh2", ["sh"], stdin=True, stdin_once=True)
    r = st.k8sx(runtime_node, "attach", "-i", cid, input=b"echo attached; exit 3\n")
    assert (r.returncode, r.stdout) == (0, b"attached\n"), r.stderr
    r = st.k8sx(runtime_node, "attach", cid)
    assert r.returncode != 0 and b"not running" in r.stderr and b"Traceback" not in r.stderr


def test_attach_tty_with_resize(runtime_node: RuntimeNode, pod: tuple[str, str]) -> None:
    cid = create_started(runtime_node, pod[1], pod[0], "tty", ["sh"], stdin=True, tty=True)
    url = st.url(runtime_node, "Attach", container_id=cid, stdin=True, stdout=True, tty=True)
    out = bytearray()
    feed = [b"stty size; exit\n"]

    def read() -> bytes:
        time.sleep(0.5)   # the resize goes first
        return feed.pop(0) if feed else b""

    def sizes() -> Iterator[tuple[int, int]]:
        yield (120, 40)
        time.sleep(30)

    code = st.in_netns(runtime_node.netns, lambda: sc.stream_command(url, stdin=read, stdout=out.extend,
                                                                     stderr=None, tty=True, sizes=sizes()))
    assert code == 0
    assert b"40 120" in out, out


def test_attach_refuses_a_tty_mismatch(runtime_node: RuntimeNode, pod: tuple[str, str]) -> None:
    cid = create_started(runtime_node, pod[1], pod[0], "nosin", ["sleep", "1000"])
    with pytest.raises(Exception, match="INVALID_ARGUMENT|InvalidArgument"):
        st.url(runtime_node, "Attach", container_id=cid, stdout=True, tty=True)
    with pytest.raises(Exception, match="INVALID_ARGUMENT|InvalidArgument"):
        st.url(runtime_node, "Attach", container_id=cid, stdin=True, stdout=True)


def _forward(node: RuntimeNode, argv: list[str]) -> tuple[subprocess.Popen[str], int]:
    p = subprocess.Popen(["ip", "netns", "exec", node.netns, *argv], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    m = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
    if not m:
        p.kill()
        p.wait()
        raise AssertionError(f"no forwarding line: {line!r}")
    return p, int(m.group(1))


@pytest.mark.parametrize("tool", ["crictl", "k8sx"])
def test_port_forward_to_pod(runtime_node: RuntimeNode, pod: tuple[str, str], tool: str) -> None:
    if tool == "crictl":
        cid = create_started(runtime_node, pod[1], pod[0], "web", web(8080))
        runtime_node.wait_exec(cid, "wget", "-qO-", "http://127.0.0.1:8080/", want="hello-pf")
        argv = ["crictl", "-r", runtime_node.endpoint, "port-forward", pod[0], ":8080"]
    else:
        argv = [bin_path("k8sx"), "runtime", "-r", runtime_node.endpoint, "port-forward", pod[0], "0:8080"]
    p, port = _forward(runtime_node, argv)
    try:
        assert http_get(runtime_node.netns, port).endswith(b"hello-pf\n")
        results: list[bytes] = []
        threads = [threading.Thread(target=lambda: results.append(http_get(runtime_node.netns, port, "/big")))
                   for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 3 and all(r.endswith(b"\0" * 2048 * 1024) for r in results)
    finally:
        p.terminate()
        p.wait(10)


def test_port_forward_closed_port_and_host_network(runtime_node: RuntimeNode) -> None:
    errors: list[str] = []
    cfg = runtime_node.pod_config("k8sxtxhost", linux={"security_context": {"namespace_options": {"network": 2}}})
    host_pod = runtime_node.cli("runp", cfg).stdout.strip()
    try:
        cid = create_started(runtime_node, cfg, host_pod, "hweb", web(18081))
        runtime_node.wait_exec(cid, "wget", "-qO-", "http://127.0.0.1:18081/", want="hello-pf")
        url = st.url(runtime_node, "PortForward", pod_sandbox_id=host_pod)
        fwd = st.in_netns(runtime_node.netns, lambda: sc.PortForwarder(url, [(0, 18081), (0, 18099)],
                                                                       on_error=errors.append))
        t = threading.Thread(target=fwd.serve)
        t.start()
        try:
            (_, web_port, _), (_, closed_port, _) = fwd.bound
            assert http_get(runtime_node.netns, web_port).endswith(b"hello-pf\n")
            assert http_get(runtime_node.netns, closed_port) == b""
            deadline = time.monotonic() + 5
            while not errors and time.monotonic() < deadline:
                time.sleep(0.05)
            assert errors and "18099" in errors[0] and "refused" in errors[0].lower(), errors
        finally:
            fwd.close()
            t.join(10)
    finally:
        runtime_node.cli("rmp", "-f", host_pod, check=False)
