"""The ``portforward.k8s.io`` protocol, server side: each forwarded connection is a pair of SPDY streams
(``streamtype`` data and error, same ``port`` and ``requestid`` headers) bridged to a TCP connection
to that port inside the pod's network namespace.

Why dial from a thread inside the namespace: a socket belongs to the namespace it was created in, so
a short ``setns`` of the calling thread (k8sx.net.ns) gives a socket into the pod; no process is
spawned (containerd and CRI-O do the same, kubelet's old way ran socat through nsenter). A host-network
pod has no namespace of its own: its ports are the node's, dialled as they are.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from k8sx.cri.streaming.spdy import Connection, Stream

log = logging.getLogger("k8sx.cri.streaming.portforward")

PROTOCOL = "portforward.k8s.io"
PAIR_TIMEOUT = 30.0


@dataclass
class PortForwardTarget:
    """What a port-forward URL stands for: a way to connect to a port of the pod."""

    dial: Callable[[int], socket.socket]
    description: str = ""


def dial_in_netns(netns_path: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to ``localhost:port`` as seen from the network namespace at ``netns_path``
    (the caller's own namespace when it is empty)."""
    from k8sx.net import ns

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            s.close()
            raise
        s.settimeout(None)
        return s

    if not netns_path:
        return connect()
    fd = ns.open_netns(netns_path)
    result: list[socket.socket | BaseException] = []

    def in_ns() -> None:   # a thread of its own: a switched thread never serves anything else
        try:
            with ns.entered(fd):
                result.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except BaseException as e:   # handed to the caller
            result.append(e)

    try:
        t = threading.Thread(target=in_ns, name="netns-dial")
        t.start()
        t.join()
    finally:
        os.close(fd)
    sock = result[0]
    if isinstance(sock, BaseException):
        raise sock
    sock.settimeout(timeout)
    try:
        sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


def _bridge(data: Stream, error: Stream, port: int, target: PortForwardTarget) -> None:
    try:
        sock = target.dial(port)
    except (OSError, ValueError) as e:
        msg = f"error forwarding port {port} to pod {target.description}: {e}"
        log.info("%s", msg)
        with contextlib.suppress(OSError):
            error.write(msg.encode())
        error.close()
        data.close()
        data.conn.forget(data, error)
        return

    def downstream() -> None:   # client -> pod, until its FIN, a reset or the end of the session
        try:
            while chunk := data.read():
                sock.sendall(chunk)
            how = socket.SHUT_RDWR if data.reset or data.conn.closed.is_set() else socket.SHUT_WR
        except OSError:
            how = socket.SHUT_RDWR
        with contextlib.suppress(OSError):
            sock.shutdown(how)

    t = threading.Thread(target=downstream, name="pf-down", daemon=True)
    t.start()
    try:   # pod -> client; when the pod's side ends the request is over, as with kubelet
        while chunk := sock.recv(65536):
            data.write(chunk)
    except OSError:
        pass
    data.close()
    error.close()
    data._eof(drop=True)   # the downstream reader stops too
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    t.join()
    sock.close()
    data.conn.forget(data, error)


def serve(conn: Connection, arrivals: queue.Queue[Stream], target: PortForwardTarget) -> None:
    """Pair the streams as they arrive and bridge each pair until the connection ends."""
    pending: dict[str, dict[str, Stream]] = {}
    workers: list[threading.Thread] = []
    while not conn.closed.is_set():
        try:
            stream = arrivals.get(timeout=0.5)
        except queue.Empty:
            workers = [w for w in workers if w.is_alive()]
            continue
        kind = stream.header("streamtype")
        port_text = stream.header("port")
        if kind not in ("data", "error") or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            stream.cancel()
            continue
        key = stream.header("requestid") or port_text
        pair = pending.setdefault(key, {})
        pair[kind] = stream
        if len(pair) == 2:
            del pending[key]
            w = threading.Thread(target=_bridge, args=(pair["data"], pair["error"], int(port_text), target),
                                 name="pf-conn", daemon=True)
            w.start()
            workers.append(w)
    for pair in pending.values():
        for s in pair.values():
            s.cancel()
    for w in workers:
        w.join(10)
