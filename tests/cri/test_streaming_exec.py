"""Streaming exec against a real ``k8sx runtime serve`` and real containers: crictl 1.26 (Go's SPDY
client) and our own client (SPDY and WebSocket) get the output, the stdin, the terminal, the exit
code; a client that goes away takes its process along; tokens work once; and 100 sessions leave no
fd or thread behind in the server.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
import streamtools as st
from runtimetools import RuntimeNode

from k8sx.cri.streaming import client as sc
from k8sx.cri.streaming.server import TokenCache
from k8sx.errors import K8sxError


@pytest.fixture(scope="module")
def ctr(runtime_node: RuntimeNode) -> Iterator[str]:
    web = "mkdir -p /tmp/w && echo pf > /tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w"
    pod, ids = runtime_node.run_pod("k8sxtxexec", {"main": ["sh", "-c", web]})
    try:
        yield ids["main"]
    finally:
        runtime_node.cli("rmp", "-f", pod, check=False)


def pod_of(node: RuntimeNode, cid: str) -> str:
    return str(node.inspect(cid)["info"]["sandboxID"])


def forward_once(node: RuntimeNode, pod: str) -> bytes:
    """One port-forward session: a forwarder, one HTTP GET through it, closed."""
    import socket

    url = st.url(node, "PortForward", pod_sandbox_id=pod)

    def go() -> bytes:
        fwd = sc.PortForwarder(url, [(0, 8080)])
        t = threading.Thread(target=fwd.serve)
        t.start()
        try:
            with socket.create_connection(("127.0.0.1", fwd.bound[0][1]), timeout=10) as c:
                c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                body = b""
                while chunk := c.recv(65536):
                    body += chunk
            return body
        finally:
            fwd.close()
            t.join(10)
    return st.in_netns(node.netns, go)  # type: ignore[no-any-return]


def run(node: RuntimeNode, cid: str, cmd: list[str], stdin: bytes | None = None, tty: bool = False,
        sizes: list[tuple[int, int]] | None = None, transport: str = "spdy") -> tuple[int, bytes, bytes]:
    out, err = bytearray(), bytearray()
    feed = [stdin] if stdin else []

    def read() -> bytes:
        return feed.pop(0) if feed else b""

    def size_iter() -> Iterator[tuple[int, int]]:
        yield from sizes or []
        time.sleep(30)   # a terminal that is not resized again; the session ends first

    url = st.url(node, "Exec", container_id=cid, cmd=cmd, tty=tty, stdin=stdin is not None, stdout=True,
                 stderr=not tty)
    code = st.in_netns(node.netns, lambda: sc.stream_command(
        url, stdin=read if stdin is not None else None, stdout=out.extend, stderr=err.extend, tty=tty,
        sizes=size_iter() if sizes is not None else None, transport=transport))
    return code, bytes(out), bytes(err)


def test_crictl_exec_output_and_exit_code(runtime_node: RuntimeNode, ctr: str) -> None:
    r = st.crictl(runtime_node, "exec", ctr, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert r.stdout == b"out\n"
    assert b"err\n" in r.stderr and b"exit code 3" in r.stderr
    assert r.returncode == 1
    r = st.crictl(runtime_node, "exec", ctr, "echo", "hello")
    assert (r.returncode, r.stdout) == (0, b"hello\n")


def test_crictl_exec_stdin(runtime_node: RuntimeNode, ctr: str) -> None:
    data = os.urandom(200_000).hex().encode()   # more than one SPDY frame and more than a pipe buffer
    r = st.crictl(runtime_node, "exec", "-i", ctr, "sh", "-c", "cat; echo done", input=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data + b"done\n"


def test_crictl_exec_tty(runtime_node: RuntimeNode, ctr: str) -> None:
    # crictl wants a terminal on its stdin for -it: script(1) gives it one
    cmd = f"crictl -r {runtime_node.endpoint} exec -it {ctr} sh -c 'tty; echo x; exit 6'"
    r = subprocess.run(["ip", "netns", "exec", runtime_node.netns, "script", "-qec", cmd, "/dev/null"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert b"/dev/pts/" in r.stdout and b"x\r" in r.stdout, r.stdout + r.stderr
    assert b"exit code 6" in r.stdout + r.stderr


def test_our_client_spdy_and_websocket(runtime_node: RuntimeNode, ctr: str) -> None:
    for transport in ("spdy", "websocket"):
        code, out, err = run(runtime_node, ctr, ["sh", "-c", "cat; echo e >&2; exit 7"], stdin=b"abc\n",
                             transport=transport)
        assert (code, out, err) == (7, b"abc\n", b"e\n"), transport


@pytest.mark.parametrize("version", ["v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"])
def test_older_protocol_versions(runtime_node: RuntimeNode, ctr: str, version: str) -> None:
    def go(cmd: list[str], tty: bool = False) -> tuple[int, bytes]:
        out = bytearray()
        url = st.url(runtime_node, "Exec", container_id=ctr, cmd=cmd, tty=tty, stdout=True, stderr=not tty)
        code = st.in_netns(runtime_node.netns, lambda: sc.stream_command(
            url, stdin=None, stdout=out.extend, stderr=out.extend, tty=tty, protocols=(version,),
            sizes=iter([(70, 20)]) if tty else None))
        return code, bytes(out)

    assert go(["echo", "old"]) == (0, b"old\n")
    # before v4 the error channel carries text only: a non-zero exit is an error message
    with pytest.raises(K8sxError, match="non-zero exit code"):
        go(["sh", "-c", "exit 3"])
    if version == "v3.channel.k8s.io":   # the resize stream came with v3
        assert go(["sh", "-c", "sleep 1; stty size"], tty=True) == (0, b"20 70\r\n")


def test_tty_resize(runtime_node: RuntimeNode, ctr: str) -> None:
    for transport in ("spdy", "websocket"):
        code, out, _ = run(runtime_node, ctr, ["sh", "-c", "sleep 1; stty size"], tty=True,
                           sizes=[(100, 30)], transport=transport)
        assert (code, out.strip()) == (0, b"30 100"), transport


def test_cli_exec_verbs(runtime_node: RuntimeNode, ctr: str) -> None:
    r = st.k8sx(runtime_node, "exec", ctr, "sh", "-c", "echo out; echo err >&2; exit 4")
    assert (r.returncode, r.stdout, r.stderr) == (4, b"out\n", b"err\n")
    r = st.k8sx(runtime_node, "exec", "-i", ctr, "sh", "-c", "tr a-z A-Z", input=b"shout\n")
    assert (r.returncode, r.stdout) == (0, b"SHOUT\n")
    r = st.k8sx(runtime_node, "exec", "-it", ctr, "sh", "-c", "tty")
    assert r.returncode == 0 and r.stdout.startswith(b"/dev/pts/") and r.stdout.endswith(b"\r\n"), r.stdout
    r = st.k8sx(runtime_node, "exec", "-s", "-t", ctr, "true")
    assert r.returncode == 2 and b"Traceback" not in r.stderr


def test_session_ends_when_the_process_exits(runtime_node: RuntimeNode, ctr: str) -> None:
    # a child left running (not holding the output: one that does keeps the session open until it
    # closes it, with containerd too) does not hold the session
    t0 = time.monotonic()
    code, out, _ = run(runtime_node, ctr, ["sh", "-c", "sleep 30 </dev/null >/dev/null 2>&1 & echo bye"])
    assert (code, out) == (0, b"bye\n") and time.monotonic() - t0 < 5
    runtime_node.cli("exec", "-s", ctr, "pkill", "-f", "sleep 30", check=False)


def test_client_gone_kills_the_process(runtime_node: RuntimeNode, ctr: str) -> None:
    marker = f"{time.time_ns() % 100000 + 200000}"
    url = st.url(runtime_node, "Exec", container_id=ctr, cmd=["sleep", marker], stdout=True, stderr=True)

    def start() -> object:
        conn, _ = sc.open_spdy(url, ("v4.channel.k8s.io",))
        for name in ("error", "stdout", "stderr"):
            conn.open_stream({"streamtype": [name]}).replied.wait(10)
        return conn

    conn = st.in_netns(runtime_node.netns, start)

    def sleeping() -> bool:
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        return f"sleep {marker}" in ps.splitlines()

    deadline = time.monotonic() + 10
    while not sleeping():
        assert time.monotonic() < deadline, "the exec'd process never started"
        time.sleep(0.05)
    conn.close()   # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while sleeping():
        assert time.monotonic() < deadline, "the exec'd process outlived its client"
        time.sleep(0.05)


def test_token_is_one_time_and_expires(runtime_node: RuntimeNode, ctr: str) -> None:
    url = st.url(runtime_node, "Exec", container_id=ctr, cmd=["true"], stdout=True)
    assert st.in_netns(runtime_node.netns, lambda: sc.stream_command(url, stdin=None, stdout=lambda b: None,
                                                                     stderr=None)) == 0
    with pytest.raises(K8sxError, match="404"):
        st.in_netns(runtime_node.netns, lambda: sc.stream_command(url, stdin=None, stdout=lambda b: None,
                                                                  stderr=None))
    cache = TokenCache(ttl=0.05)
    token = cache.put("x")
    time.sleep(0.1)
    assert cache.take(token) is None
    token = cache.put("y")
    assert cache.take(token) == "y" and cache.take(token) is None


def test_bad_requests_get_grpc_codes(runtime_node: RuntimeNode, ctr: str) -> None:
    with pytest.raises(Exception) as e:
        st.url(runtime_node, "Exec", container_id=ctr, cmd=["sh"], tty=True, stderr=True, stdout=True)
    assert "InvalidArgument" in str(e.value) or "INVALID_ARGUMENT" in str(e.value)
    with pytest.raises(Exception) as e:
        st.url(runtime_node, "Exec", container_id="k8sxtxnothere", cmd=["sh"], stdout=True)
    assert "NotFound" in str(e.value) or "NOT_FOUND" in str(e.value)
    with pytest.raises(Exception) as e:
        st.url(runtime_node, "PortForward", pod_sandbox_id="k8sxtxnothere")
    assert "NotFound" in str(e.value) or "NOT_FOUND" in str(e.value)
    assert grpc  # the client's errors are RPCError texts with the gRPC code name


def test_no_fd_or_thread_leak_after_100_sessions(runtime_node: RuntimeNode, ctr: str) -> None:
    pid = st.server_pid(runtime_node)
    pod = pod_of(runtime_node, ctr)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            kind = i % 5
            if kind == 4:
                assert forward_once(runtime_node, pod).endswith(b"pf\n")
            elif kind == 0:
                assert run(runtime_node, ctr, ["echo", str(i)])[1] == f"{i}\n".encode()
            elif kind == 1:
                assert run(runtime_node, ctr, ["cat"], stdin=b"x")[1] == b"x"
            elif kind == 2:
                assert run(runtime_node, ctr, ["sh", "-c", "exit 3"], tty=True, sizes=[(80, 24)])[0] == 3
            else:
                assert run(runtime_node, ctr, ["echo", "ws"], transport="websocket")[1] == b"ws\n"
        except BaseException as e:   # collected, asserted below
            errors.append(e)

    def batch(n: int) -> None:
        threads = [threading.Thread(target=one, args=(n * 5 + k,)) for k in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    batch(0)   # warm up: imports, and the gRPC pool's threads for 5 concurrent calls
    base = st.settle(pid, (0, 0), timeout=1)
    fds = set(os.listdir(f"/proc/{pid}/fd"))
    for n in range(1, 21):   # 100 sessions: exec (pipes, stdin, tty), WebSocket exec, port-forward
        batch(n)
    assert not errors, errors[:3]
    after = st.settle(pid, base)
    new = {f: os.readlink(f"/proc/{pid}/fd/{f}") for f in set(os.listdir(f"/proc/{pid}/fd")) - fds
           if os.path.exists(f"/proc/{pid}/fd/{f}")}
    # Slack: the gRPC pool may still add a worker or two for 5 concurrent calls (each with its state-DB
    # connection, 2 fds); a leak of the sessions themselves would be 100 or more.
    assert after[0] <= base[0] + 8 and after[1] <= base[1] + 4, \
        f"fds/threads before {base}, after 100 sessions {after}; new fds {new}"
    with contextlib.suppress(FileNotFoundError):
        leftovers = [f for f in os.listdir(os.path.join(runtime_node.state, "oci", "bundles", ctr))
                     if f.startswith("exec-")]
        assert not leftovers
