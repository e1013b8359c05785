"""Launching conmon, the per-container monitor that owns a container's lifetime.

Why conmon: a container must outlive ``k8sx runtime serve`` (a restart or a crash of ours must not
kill it or lose its exit code or its log). conmon (CRI-O's monitor) double-forks away from us, runs
``runc create``, reaps the container's init as a subreaper, writes its stdout/stderr in the CRI log
format, and writes the exit code to ``<exit dir>/<id>`` when the container ends (128+n for a death
by signal n). It also listens on a ``ctl`` fifo in the bundle, which is how a log is reopened.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from dataclasses import dataclass

from k8sx.errors import K8sxError

CONMON = "conmon"
SYNC_TIMEOUT = 30.0
CTL_REOPEN_LOG = 2


@dataclass
class ConmonArgs:
    container_id: str
    name: str
    bundle: str
    runtime_path: str
    runtime_root: str
    log_path: str
    exit_dir: str
    persist_dir: str
    socket_dir: str
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    conmon_path: str = CONMON


def _runtime_error(bundle: str) -> str:
    """The last error runc/crun logged (``--log-format json``) for this bundle, if any."""
    msg = ""
    try:
        with open(os.path.join(bundle, "runtime.log"), encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("level") in ("error", "fatal"):
                    msg = entry.get("msg", "")
    except OSError:
        pass
    return msg


def launch(a: ConmonArgs) -> int:
    """Start conmon, which runs ``<runtime> create``; return the container's init pid once created."""
    cmd = [
        a.conmon_path, "--api-version", "1", "-c", a.container_id, "-u", a.container_id,
        "-n", a.name or a.container_id, "-r", a.runtime_path, "-b", a.bundle,
        "-p", os.path.join(a.bundle, "pidfile"), "-P", os.path.join(a.bundle, "conmon.pid"),
        "-l", f"k8s-file:{a.log_path}", "--exit-dir", a.exit_dir, "--persist-dir", a.persist_dir,
        "--socket-dir-path", a.socket_dir, "--log-level", "error",
        "--runtime-arg", f"--root={a.runtime_root}",
        "--runtime-arg", f"--log={os.path.join(a.bundle, 'runtime.log')}",
        "--runtime-arg", "--log-format=json",
    ]
    if a.stdin:
        cmd.append("-i")
        if not a.stdin_once:
            cmd.append("--leave-stdin-open")
    if a.tty:
        cmd.append("-t")
    r, w = os.pipe()
    try:
        env = dict(os.environ, _OCI_SYNCPIPE=str(w))
        # Its stderr goes to a file: a pipe would stay open in the daemonized monitor.
        log = os.path.join(a.bundle, "conmon.log")
        with open(log, "wb") as errf:
            try:
                # cwd: conmon drops an "oom" marker in its working directory when the
                # container is OOM-killed; it belongs in the bundle, not wherever we run.
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=errf, env=env, pass_fds=(w,), close_fds=True,
                                        start_new_session=True, cwd=a.bundle)
            except FileNotFoundError as e:
                raise K8sxError(f"conmon not found ({a.conmon_path}): install the conmon package") from e
        os.close(w)
        w = -1
        proc.wait()   # the parent exits once it has forked the monitor (no timeout: wait() would poll)
        if proc.returncode != 0:
            with open(log, encoding="utf-8", errors="replace") as f:
                raise K8sxError(f"conmon failed: {f.read().strip()[-500:]}")
        data = _read_sync(r, SYNC_TIMEOUT)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    pid = int(data.get("data", -1))
    if pid <= 0:
        msg = _runtime_error(a.bundle) or data.get("message") or "container create failed"
        raise K8sxError(f"creating container {a.container_id}: {msg}")
    return pid


def _read_sync(fd: int, timeout: float) -> dict[str, object]:
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise K8sxError("conmon did not report the container's creation in time")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
        try:
            return dict(json.loads(buf.decode().splitlines()[0]))
        except (ValueError, IndexError):
            continue
    if not buf:
        raise K8sxError("conmon exited without reporting the container's creation")
    try:
        return dict(json.loads(buf.decode().splitlines()[0]))
    except ValueError as e:
        raise K8sxError(f"conmon's sync message is not JSON: {buf[:200]!r}") from e


def control(bundle: str, kind: int, a: int = 0, b: int = 0) -> None:
    """Write a message on conmon's ctl fifo (``2 0 0`` = reopen the log)."""
    path = os.path.join(bundle, "ctl")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        raise K8sxError(f"conmon of {os.path.basename(bundle)} is not listening ({e.strerror})") from e
    try:
        os.write(fd, f"{kind} {a} {b}\n".encode())
    finally:
        os.close(fd)
