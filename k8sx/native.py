"""Compiling k8sx's two small C helpers (the CNI plugin client, flannel's udp proxy), in one place.

Both are optional speed-ups with a Python fallback, so a missing or failing compiler is not an
error: ``compile_c`` says so by returning None (with the compiler's message) and the caller falls
back. The output appears atomically: a half-written binary is never run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence


def compile_c(source: str, dest: str, args: Sequence[str] = ()) -> tuple[str | None, str]:
    """Compile ``source`` to ``dest`` with ``cc -O2 ARGS``; returns (dest or None, the compiler's stderr)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler (cc) on PATH"
    directory = os.path.dirname(dest) or "."
    fd, tmp = tempfile.mkstemp(prefix=".k8sx-cc-", dir=directory)
    os.close(fd)
    try:
        proc = subprocess.run([cc, "-O2", *args, "-o", tmp, source], capture_output=True, text=True,
                              check=False, timeout=120)
        if proc.returncode != 0:
            return None, proc.stderr.strip()
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)
        return dest, ""
    except (OSError, subprocess.SubprocessError) as e:
        return None, str(e)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
