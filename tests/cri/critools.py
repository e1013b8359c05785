"""Test helpers for the CRI server and client: a real ``k8sx runtime serve``, a private containerd, the CLI.

``serving(tmp)`` starts ``k8sx runtime serve`` on ``unix://<tmp>/k8sxtc.sock`` (a k8sxtc-* temp dir) as a
subprocess, waits for the socket and on exit stops it with SIGTERM, checking that it exits 0 and removes
its socket. ``containerd(tmp, registries)`` starts Debian's containerd with only what the CRI image
service needs (no CNI, no netns), its registry hosts pointed at the test registries over plain HTTP on
loopback, so the same client verbs can be checked against the reference runtime. ``k8sx(endpoint, *args)``
runs the real CLI against an endpoint and returns the CompletedProcess.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

BIN = os.path.dirname(sys.executable)
K8SX = os.path.join(BIN, "k8sx")
PREFIX = "k8sxtc-"


def tempdir() -> str:
    return tempfile.mkdtemp(prefix=PREFIX)


def wait_for_socket(path: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(path)
                return
            except OSError:
                pass
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {path}")
        time.sleep(0.02)
    raise RuntimeError(f"no socket at {path} after {timeout}s")


@dataclass
class Served:
    endpoint: str
    socket: str
    root: str
    proc: subprocess.Popen
    log: str

    def log_text(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    return proc.returncode


@contextlib.contextmanager
def serving(tmp: str, *extra: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """``k8sx runtime serve`` in ``tmp``; asserts a clean SIGTERM shutdown that removes the socket."""
    sock = os.path.join(tmp, "k8sxtc.sock")
    log = os.path.join(tmp, "serve.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [K8SX, "runtime", "serve", "--listen", f"unix://{sock}", "--root", os.path.join(tmp, "root"),
             "--state", os.path.join(tmp, "state"), *extra],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    served = Served(f"unix://{sock}", sock, os.path.join(tmp, "root"), proc, log)
    try:
        wait_for_socket(sock, proc)
        yield served
    finally:
        rc = stop(proc)
    assert rc == 0, served.log_text()
    assert not os.path.exists(sock), "socket left behind after SIGTERM"
    assert "Traceback" not in served.log_text(), served.log_text()


def k8sx(endpoint: str | None, *args: str, env: dict[str, str] | None = None, timeout: float = 120,
         input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``k8sx runtime [-r endpoint] ARGS``; never a traceback, whatever the outcome."""
    cmd = [K8SX, "runtime"]
    if endpoint:
        cmd += ["-r", endpoint]
    r = subprocess.run(cmd + list(args), capture_output=True, text=True, env=env, timeout=timeout, input=input)
    assert "Traceback" not in r.stderr, r.stderr
    return r


CONTAINERD_CONFIG = """version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni-bin"
    conf_dir = "{d}/cni-conf"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"
"""


@contextlib.contextmanager
def containerd(tmp: str, registries: list[str]) -> Iterator[str]:
    """A private containerd (CRI plugin) whose registry hosts ``registries`` (``127.0.0.1:PORT``) are plain HTTP."""
    for host in registries:
        hdir = os.path.join(tmp, "certs.d", host)
        os.makedirs(hdir)
        with open(os.path.join(hdir, "hosts.toml"), "w") as f:
            f.write(f'server = "http://{host}"\n[host."http://{host}"]\n  capabilities = ["pull", "resolve"]\n')
    for sub in ("cni-bin", "cni-conf"):
        os.makedirs(os.path.join(tmp, sub))
    conf = os.path.join(tmp, "containerd.toml")
    with open(conf, "w") as f:
        f.write(CONTAINERD_CONFIG.format(d=tmp))
    sock = os.path.join(tmp, "containerd.sock")
    log = os.path.join(tmp, "containerd.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(["containerd", "--config", conf], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_socket(sock, proc)
        yield f"unix://{sock}"
    finally:
        stop(proc)
        subprocess.run(["umount", "-R", os.path.join(tmp, "root")], stderr=subprocess.DEVNULL, check=False)
