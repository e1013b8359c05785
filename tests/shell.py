"""Drive a real interactive shell through a pseudo-terminal, as a user types: for completion tests.

``Shell(["bash", "--norc", "-i"]).type("k8sx comp\\t")`` returns what the terminal showed after the
keys; TAB goes through the shell's own line editor and completion machinery, nothing is simulated.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import subprocess
import time

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r|\x07")


class Shell:
    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True, close_fds=True)
        os.close(slave)

    def read(self, settle: float = 0.8, limit: float = 10.0) -> str:
        """Read until the terminal has been quiet for ``settle`` seconds (or ``limit`` passed)."""
        chunks: list[bytes] = []
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], settle)
            if not ready:
                break
            try:
                data = os.read(self.master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        return _ANSI.sub("", b"".join(chunks).decode(errors="replace"))

    def run(self, line: str) -> str:
        os.write(self.master, line.encode() + b"\n")
        return self.read()

    def type(self, keys: str, expect: str, limit: float = 10.0) -> str:
        """Type ``keys`` (TAB included); return the screen output once ``expect`` shows (or at ``limit``)."""
        self.read(0.3)
        os.write(self.master, keys.encode())
        out = ""
        deadline = time.monotonic() + limit
        while expect not in out and time.monotonic() < deadline:
            out += self.read(0.3, limit=deadline - time.monotonic())
        os.write(self.master, b"\x05\x15")  # End, then Ctrl-U: abandon the line
        self.read(0.3)
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.master, b"exit\n")
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
