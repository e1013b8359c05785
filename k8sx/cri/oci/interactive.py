"""Interactive processes of a container: a streaming exec (``runc exec`` on pipes or a pty) and an
attach to the container's own stdio (conmon's attach socket).

Why both look alike: the streaming server (k8sx.cri.streaming) moves bytes between a client and
"something with a stdin, an output and a terminal size", whatever protocol the client speaks. Each
class here offers ``write_stdin``/``close_stdin``/``resize``/``run(out, err)``/``stop``.

Exec with a tty: ``runc exec -t`` in the foreground is given the slave of a pty of ours as its stdio;
runc makes the container's own pty, copies between the two and, on SIGWINCH, gives the container's
pty the size of ours. So a resize is TIOCSWINSZ on our pty plus a SIGWINCH to runc, and runc's exit
status is the process's: no subreaper needed, nothing outlives the session.

Attach: conmon (started with ``-i`` for a stdin container) listens on ``<socket dir>/<id>/attach``, a
SOCK_SEQPACKET socket. Each packet it sends starts with a byte naming the pipe (2 stdout, 3 stderr);
what we send is the container's stdin. Closing our side of a stdin-once container closes its stdin
(conmon runs without ``--leave-stdin-open`` then). A resize is a line on conmon's ``ctl`` fifo.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import select
import signal
import socket
import struct
import subprocess
import tempfile
import termios
import time
import tty as tty_mod
from collections.abc import Callable

from k8sx.cri.oci import conmon, spec
from k8sx.errors import K8sxError

Sink = Callable[[bytes], None]
DRAIN_AFTER_EXIT = 0.5   # output still buffered when the process ends (a child may hold the pipe longer)
CTL_RESIZE = 1
ATTACH_STDOUT, ATTACH_STDERR = 2, 3
ATTACH_CHUNK = 4096   # conmon reads the attach socket in 8 KiB packets; larger ones would be cut


def _set_winsize(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def _kill_tree(pid: int) -> None:
    from k8sx.cri.oci.runtime import _descendants

    for victim in [pid, *_descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


class ExecProcess:
    """``runc exec`` of one command in a running container, its stdio on pipes or on a pty."""

    def __init__(self, runtime_path: str, runtime_root: str, bundle: str, cid: str, config: dict[str, object],
                 cmd: list[str], tty: bool, stdin: bool, size: tuple[int, int] | None = None) -> None:
        proc_spec = spec.exec_process(config, cmd)
        proc_spec["terminal"] = tty
        fd, self._pfile = tempfile.mkstemp(dir=bundle, prefix="exec-", suffix=".json")
        self._pidfile = self._pfile[:-5] + ".pid"
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(proc_spec, f)
        self.tty = tty
        self._master = -1
        self._stdin_fd = -1
        argv = [runtime_path, "--root", runtime_root, "exec", "--process", self._pfile, "--pid-file",
                self._pidfile]
        try:
            if tty:
                master, slave = os.openpty()
                self._master = master
                os.set_inheritable(master, False)
                # raw: the container's own pty does the line discipline (echo, \n -> \r\n); ours must not again
                tty_mod.setraw(slave)
                if size:
                    _set_winsize(slave, *size)
                try:
                    self.proc = subprocess.Popen([*argv, "--tty", cid], stdin=slave, stdout=slave, stderr=slave,
                                                 start_new_session=True)
                finally:
                    os.close(slave)
                self._stdin_fd = master
            else:
                self.proc = subprocess.Popen([*argv, cid], stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                if self.proc.stdin is not None:
                    self._stdin_fd = self.proc.stdin.fileno()
        except OSError as e:
            self._cleanup()
            raise K8sxError(f"exec in {cid}: {e}") from e

    def write_stdin(self, data: bytes) -> None:
        if self._stdin_fd < 0:
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._stdin_fd, view)
            except OSError:
                return   # the process is gone or closed its stdin
            view = view[n:]

    def close_stdin(self) -> None:
        if self.tty:
            self.write_stdin(b"\x04")   # end of input for the terminal's line discipline
        elif self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            self._stdin_fd = -1

    def resize(self, width: int, height: int) -> None:
        if self.tty and self._master >= 0 and width > 0 and height > 0:
            with contextlib.suppress(OSError):
                _set_winsize(self._master, width, height)
                os.kill(self.proc.pid, signal.SIGWINCH)

    def run(self, out: Sink, err: Sink) -> int:
        """Copy the output to ``out``/``err`` until the process ended and its output is drained; the exit code."""
        fds: dict[int, Sink] = {}
        if self.tty:
            fds[self._master] = out
        else:
            assert self.proc.stdout is not None and self.proc.stderr is not None
            fds[self.proc.stdout.fileno()] = out
            fds[self.proc.stderr.fileno()] = err
        deadline = 0.0
        try:
            while fds:
                if deadline and time.monotonic() > deadline:
                    break
                ready, _, _ = select.select(list(fds), [], [], 0.2)
                for fd in ready:
                    try:
                        data = os.read(fd, 65536)
                    except OSError as e:   # EIO: the pty's last slave is closed
                        if e.errno != errno.EIO:
                            raise
                        data = b""
                    if data:
                        fds[fd](data)
                    else:
                        del fds[fd]
                if not deadline and self.proc.poll() is not None:
                    deadline = time.monotonic() + DRAIN_AFTER_EXIT
            code = self.proc.wait()
            return 128 - code if code < 0 else code
        finally:
            self._cleanup()

    def stop(self) -> None:
        """The client went away: end the process (and its children)."""
        if self.proc.poll() is not None:
            return
        try:
            with open(self._pidfile, encoding="ascii") as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            pid = 0
        if pid:
            _kill_tree(pid)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def _cleanup(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None:
            if proc.poll() is None:
                self.stop()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
            for f in (proc.stdin, proc.stdout, proc.stderr):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()
        if self._master >= 0:
            with contextlib.suppress(OSError):
                os.close(self._master)
            self._master = -1
        self._stdin_fd = -1
        for path in (self._pfile, self._pidfile):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


class AttachSession:
    """A connection to conmon's attach socket of a running container."""

    def __init__(self, socket_dir: str, bundle: str, cid: str, stdin_once: bool, tty: bool) -> None:
        self.bundle = bundle
        self.stdin_once = stdin_once
        self.tty = tty
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        dfd = -1
        try:
            # The path may exceed sun_path's 108 bytes: connect through the directory's fd.
            dfd = os.open(os.path.join(socket_dir, cid), os.O_PATH | os.O_CLOEXEC)
            self.sock.connect(f"/proc/self/fd/{dfd}/attach")
        except OSError as e:
            self.sock.close()
            raise K8sxError(f"attach to {cid}: conmon's attach socket: {e.strerror}") from e
        finally:
            if dfd >= 0:
                os.close(dfd)
        self._done = False

    def write_stdin(self, data: bytes) -> None:
        for i in range(0, len(data), ATTACH_CHUNK):
            try:
                self.sock.sendall(data[i:i + ATTACH_CHUNK])
            except OSError:
                return

    def close_stdin(self) -> None:
        """A stdin-once container gets EOF on its stdin; otherwise the client detaches, the container runs on."""
        how = socket.SHUT_WR if self.stdin_once and not self.tty else socket.SHUT_RDWR
        with contextlib.suppress(OSError):
            self.sock.shutdown(how)

    def resize(self, width: int, height: int) -> None:
        if self.tty and width > 0 and height > 0:
            with contextlib.suppress(K8sxError):
                conmon.control(self.bundle, CTL_RESIZE, height, width)

    def run(self, out: Sink, err: Sink) -> int | None:
        """Copy the container's output until it ends or the client detaches; no exit code (attach has none)."""
        try:
            while True:
                try:
                    packet = self.sock.recv(65536)
                except OSError:
                    break
                if not packet:
                    break
                if packet[0] == ATTACH_STDOUT:
                    out(packet[1:])
                elif packet[0] == ATTACH_STDERR:
                    err(packet[1:])
        finally:
            self.sock.close()
        return None

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
