"""Running one CNI plugin as the spec says: find it in CNI_PATH, hand it CNI_* and the netconf on
stdin, read its result or error object from stdout (libcni's ``pkg/invoke``).

Both sides use it: the runner for every link of a chain, and meta-plugins (flannel, bridge's IPAM)
through ``delegate``. k8sx's own plugins carry a marker line (``# k8sx-cni-plugin: <module>``) in
their executable; for those the plugin is run in this process through ``k8sx.cni.skel`` instead
of paying for an interpreter start-up, with exactly the same inputs and outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from k8sx.cni.types import ERR_DECODING_FAILURE, ERR_INTERNAL, ERR_INVALID_ENVIRONMENT_VARIABLES, CNIError

MARKER = b"# k8sx-cni-plugin:"
_MARKER_WINDOW = 256
_TEXT_BUSY_RETRIES = 5

# path -> (mtime_ns, size, module or None): the marker is read once per executable version.
_marker_cache: dict[str, tuple[int, int, str | None]] = {}


def find_plugin(name: str, cni_path: Sequence[str]) -> str:
    """The first regular file ``<dir>/<name>`` along ``cni_path`` (libcni's ``FindInPath``)."""
    if not name:
        raise CNIError(ERR_INTERNAL, "no plugin name provided")
    if os.sep in name:
        raise CNIError(ERR_INTERNAL, f"invalid plugin name: {name}", "a plugin name must not contain '/'")
    dirs = [d for d in cni_path if d]
    if not dirs:
        raise CNIError(ERR_INVALID_ENVIRONMENT_VARIABLES, f'cannot find plugin "{name}": no CNI_PATH given')
    for d in dirs:
        full = os.path.join(d, name)
        try:
            st = os.stat(full)
        except OSError:
            continue
        if (st.st_mode & 0o170000) == 0o100000:
            return full
    raise CNIError(ERR_INTERNAL, f'failed to find plugin "{name}" in path [{" ".join(dirs)}]',
                   hint="install the plugin there, or point CNI_PATH / --cni-path at its directory")


def inprocess_module(path: str) -> str | None:
    """The module named by the ``# k8sx-cni-plugin: <module>`` marker in ``path``'s first 256 bytes."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    cached = _marker_cache.get(path)
    if cached and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
        return cached[2]
    module = None
    try:
        with open(path, "rb") as f:
            head = f.read(_MARKER_WINDOW)
    except OSError:
        head = b""
    at = head.find(MARKER)
    if at >= 0:
        line = head[at + len(MARKER):].split(b"\n", 1)[0].strip()
        module = line.decode("ascii", "replace") or None
    _marker_cache[path] = (st.st_mtime_ns, st.st_size, module)
    return module


def plugin_env(command: str, env: Mapping[str, str], cni_path: Sequence[str] | str) -> dict[str, str]:
    """The environment a plugin runs with: ours, then the caller's CNI_*, then COMMAND and PATH."""
    full = dict(os.environ)
    full.update(env)
    full["CNI_COMMAND"] = command
    full["CNI_PATH"] = cni_path if isinstance(cni_path, str) else os.pathsep.join(cni_path)
    return full


def _run_inprocess(module: str, plugin: str, env: Mapping[str, str], stdin: bytes) -> bytes:
    try:
        from k8sx.cni import skel
        invoke = skel.invoke_inprocess
    except (ImportError, AttributeError) as e:
        raise CNIError(ERR_INTERNAL, f"plugin {plugin} asks to run in-process ({module}) but "
                       "k8sx.cni.skel.invoke_inprocess is not available", str(e), plugin=plugin) from None
    try:
        return invoke(module, env, stdin)
    except CNIError as e:
        raise e.with_plugin(plugin) from None
    except Exception as e:  # a plugin bug must still end as an error object, never a traceback
        raise CNIError(ERR_INTERNAL, f"in-process plugin failed: {type(e).__name__}: {e}", plugin=plugin) from e


def _run_exec(path: str, plugin: str, env: Mapping[str, str], stdin: bytes) -> bytes:
    for attempt in range(_TEXT_BUSY_RETRIES + 1):
        try:
            proc = subprocess.run([path], input=stdin, env=dict(env), capture_output=True, check=False)
        except OSError as e:
            if e.errno == 26 and attempt < _TEXT_BUSY_RETRIES:  # ETXTBSY: being written right now
                time.sleep(1)
                continue
            raise CNIError(ERR_INTERNAL, f"cannot execute {path}", e.strerror or str(e), plugin=plugin) from None
        break
    if proc.returncode == 0:
        if proc.stderr:  # informational only; libcni passes it on to the runtime's stderr too
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.buffer.write(proc.stderr)
                sys.stderr.flush()
        return proc.stdout
    out = proc.stdout.strip()
    err_text = proc.stderr.decode("utf-8", "replace").strip()
    if out:
        try:
            obj = json.loads(out)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and ("msg" in obj or "code" in obj):
            raise CNIError.from_dict(obj, plugin=plugin)
        raise CNIError(ERR_DECODING_FAILURE, f"plugin failed (exit {proc.returncode}) and its output is "
                       "not a CNI error object", _excerpt(out), plugin=plugin)
    status = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
    raise CNIError(ERR_INTERNAL, f"plugin failed ({status}) with no error object",
                   _excerpt(err_text.encode()) if err_text else "", plugin=plugin)


def _excerpt(data: bytes, limit: int = 200) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."


def exec_plugin(name: str, command: str, netconf: bytes, env: Mapping[str, str],
                cni_path: Sequence[str] | str) -> dict[str, Any] | None:
    """Run plugin ``name`` for ``command`` and return its parsed stdout (None when it printed nothing).

    ``env`` holds the caller's CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME and CNI_ARGS (anything else in
    it is passed through too); CNI_COMMAND and CNI_PATH are set here. An ADD result without a
    ``cniVersion`` gets the netconf's, as libcni does (the loopback plugin omits it).
    """
    dirs = cni_path.split(os.pathsep) if isinstance(cni_path, str) else list(cni_path)
    path = find_plugin(name, dirs)
    full_env = plugin_env(command, env, dirs)
    module = inprocess_module(path)
    run = _run_inprocess if module else _run_exec
    stdout = run(module or path, name, full_env, netconf)
    return parse_output(name, command, netconf, stdout)


def parse_output(name: str, command: str, netconf: bytes, stdout: bytes) -> dict[str, Any] | None:
    """A successful plugin's stdout as a dict (None if empty); garbage is a decoding error naming it."""
    if not stdout.strip():
        if command in ("ADD", "VERSION"):
            raise CNIError(ERR_DECODING_FAILURE, f"plugin returned no output for {command}", plugin=name)
        return None
    try:
        obj = json.loads(stdout)
    except ValueError as e:
        raise CNIError(ERR_DECODING_FAILURE, f"cannot decode the plugin's {command} output: {e}",
                       _excerpt(stdout), plugin=name) from None
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise CNIError(ERR_DECODING_FAILURE, f"the plugin's {command} output is not a JSON object",
                       _excerpt(stdout), plugin=name)
    if command == "ADD" and not obj.get("cniVersion"):
        try:
            conf_version = json.loads(netconf).get("cniVersion") or "0.1.0"
        except (ValueError, AttributeError):
            conf_version = "0.1.0"
        obj = {"cniVersion": conf_version, **{k: v for k, v in obj.items() if k != "cniVersion"}}
    return obj


def delegate(name: str, command: str, netconf: bytes, env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """Run plugin ``name`` on behalf of a meta-plugin (libcni's ``DelegateAdd``/``DelegateDel``...).

    The CNI_* of ``env`` (default: this process's environment) are inherited, CNI_COMMAND is set to
    ``command`` and the plugin is looked up along the inherited CNI_PATH.
    """
    base = dict(os.environ if env is None else env)
    cni_path = base.get("CNI_PATH", "")
    return exec_plugin(name, command, netconf, base, cni_path)


def version_info(name: str, cni_path: Sequence[str] | str, conf_version: str = "1.1.0") -> dict[str, Any]:
    """The plugin's answer to VERSION: ``{"cniVersion": ..., "supportedVersions": [...]}``."""
    stdin = json.dumps({"cniVersion": conf_version}).encode()
    env = {"CNI_CONTAINERID": "", "CNI_NETNS": "", "CNI_IFNAME": "", "CNI_ARGS": ""}
    info = exec_plugin(name, "VERSION", stdin, env, cni_path) or {}
    if not isinstance(info.get("supportedVersions"), list):
        # Plugins of spec 0.1.0 did not know VERSION; libcni assumes 0.1.0 and 0.2.0 then.
        info = {"cniVersion": info.get("cniVersion", "0.1.0"), "supportedVersions": ["0.1.0", "0.2.0"]}
    return info
