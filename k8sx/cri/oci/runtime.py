"""The container driver: create, start, stop, kill, delete, state, exec, update, logs and stats.

Why it exists: this is the one place that runs runc (or crun) and conmon and lays out a container's
files, so the servicer deals in ids and dataclasses only. All state is files (the bundle with
``config.json`` and ``meta.json``, conmon's exit file, runc's own state dir), never our memory: a
new :class:`OciRuntime` on the same dirs after a restart (or ``kill -9``) of ours sees every
container as it is, and running ones keep running under their conmon.

Layout: ``<state_dir>/runc`` (runc --root), ``<state_dir>/bundles/<id>`` (config.json, meta.json,
pidfile, conmon.pid, ctl, runtime.log), ``<state_dir>/exits/<id>`` (the exit code),
``<state_dir>/persist/<id>``, ``<root_dir>/containers/<id>`` (rootfs mount, upper, work).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal as signals
import subprocess
import tempfile
import time
from dataclasses import asdict
from typing import Any

from k8sx.cri.oci import cgroups, conmon, rootfs, spec
from k8sx.cri.oci.types import (
    CREATED,
    EXITED,
    RUNNING,
    UNKNOWN,
    ContainerExists,
    ContainerNotFound,
    ContainerSpecInput,
    ContainerState,
    ContainerStateError,
    ExecResult,
    Resources,
    Stats,
)
from k8sx.errors import K8sxError

RUNC = "runc"
POLL = 0.01
# After SIGKILL (or once the init died) conmon writes the exit file within milliseconds.
EXIT_FILE_WAIT = 10.0


def _write_atomic(path: str, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (from /proc's parent links), so an exec that timed out takes its
    children along."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _signal_number(sig: int | str) -> int:
    if isinstance(sig, int):
        return sig
    name = sig.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(signals.Signals[name])
    except KeyError as e:
        raise K8sxError(f"unknown signal {sig!r}") from e


class OciRuntime:
    """Containers under conmon + an OCI runtime (runc by default; ``runtime_path`` for crun)."""

    def __init__(self, state_dir: str, root_dir: str | None = None, runtime_path: str = RUNC,
                 conmon_path: str = conmon.CONMON) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.root_dir = os.path.abspath(root_dir or state_dir)
        self.runtime_path = shutil.which(runtime_path) or runtime_path
        self.conmon_path = shutil.which(conmon_path) or conmon_path
        self.runtime_root = os.path.join(self.state_dir, "runc")
        self.bundles = os.path.join(self.state_dir, "bundles")
        self.exits = os.path.join(self.state_dir, "exits")
        self.persist = os.path.join(self.state_dir, "persist")
        self.sockets = os.path.join(self.state_dir, "s")
        self.containers = os.path.join(self.root_dir, "containers")
        for d in (self.runtime_root, self.bundles, self.exits, self.persist, self.sockets, self.containers):
            os.makedirs(d, mode=0o700, exist_ok=True)
        self.prune()

    def prune(self) -> list[str]:
        """Remove the rootfs dirs (upper, work, a stale mount) of containers whose bundle is gone,
        as after a reboot emptied the state dir (a tmpfs) but not the root dir; returns their ids.
        create() makes the bundle first, so a container being created is never taken for one."""
        gone = [c for c in os.listdir(self.containers) if not os.path.isdir(os.path.join(self.bundles, c))]
        for cid in gone:
            base = os.path.join(self.containers, cid)
            rootfs.unmount(base)
            shutil.rmtree(base, ignore_errors=True)
        return gone

    # -- paths and files ---------------------------------------------------------------------

    def bundle(self, cid: str) -> str:
        if not cid or "/" in cid or cid in (".", ".."):
            raise K8sxError(f"invalid container id {cid!r}")
        return os.path.join(self.bundles, cid)

    def _meta(self, cid: str) -> dict[str, Any]:
        try:
            with open(os.path.join(self.bundle(cid), "meta.json"), encoding="utf-8") as f:
                return dict(json.load(f))
        except FileNotFoundError:
            raise ContainerNotFound(f"container {cid} not found") from None
        except ValueError as e:
            raise K8sxError(f"container {cid}: unreadable metadata ({e})") from e

    def _set_meta(self, cid: str, **changes: Any) -> dict[str, Any]:
        meta = self._meta(cid)
        meta.update(changes)
        _write_atomic(os.path.join(self.bundle(cid), "meta.json"), meta)
        return meta

    def config(self, cid: str) -> dict[str, Any]:
        """The container's config.json."""
        self._meta(cid)
        with open(os.path.join(self.bundle(cid), "config.json"), encoding="utf-8") as f:
            return dict(json.load(f))

    def _pid(self, cid: str) -> int:
        try:
            with open(os.path.join(self.bundle(cid), "pidfile"), encoding="ascii") as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _conmon_pid(self, cid: str) -> int:
        try:
            with open(os.path.join(self.bundle(cid), "conmon.pid"), encoding="ascii") as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _exit(self, cid: str) -> tuple[int, int] | None:
        """(exit code, finished_at ns) from conmon's exit file, or None while it runs."""
        path = os.path.join(self.exits, cid)
        try:
            with open(path, encoding="ascii") as f:
                text = f.read().strip()
            st = os.stat(path)
        except FileNotFoundError:
            return None
        if not text:   # conmon writes in place: an empty file is one being written
            return None
        try:
            return int(text), st.st_mtime_ns
        except ValueError:
            return 255, st.st_mtime_ns

    def _runc(self, *args: str, check: bool = True, input: bytes | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        r = subprocess.run([self.runtime_path, "--root", self.runtime_root, *args], input=input,
                           capture_output=True, check=False, timeout=timeout)
        if check and r.returncode != 0:
            msg = r.stderr.decode(errors="replace").strip().splitlines()
            raise K8sxError(f"{os.path.basename(self.runtime_path)} {args[0]}: "
                            f"{msg[-1] if msg else f'exit status {r.returncode}'}")
        return r

    def _runc_status(self, cid: str) -> str:
        r = self._runc("state", cid, check=False)
        if r.returncode != 0:
            return ""
        try:
            return str(json.loads(r.stdout).get("status", ""))
        except ValueError:
            return ""

    # -- lifecycle ---------------------------------------------------------------------------

    def list(self) -> list[str]:
        """Ids of all containers this runtime has (any state)."""
        return sorted(d for d in os.listdir(self.bundles)
                      if os.path.exists(os.path.join(self.bundles, d, "meta.json")))

    def create(self, inp: ContainerSpecInput) -> ContainerState:
        """Mount the rootfs, write the bundle and have conmon run ``runc create``. On any failure
        everything made so far is undone."""
        bundle = self.bundle(inp.id)
        if not os.path.isabs(inp.log_path):
            raise K8sxError(f"log path {inp.log_path!r} must be absolute")
        try:
            os.mkdir(bundle, 0o700)
        except FileExistsError:
            raise ContainerExists(f"container {inp.id} already exists") from None
        base = os.path.join(self.containers, inp.id)
        try:
            fs = rootfs.mount(base, inp.image_layers)
            cfg = spec.build_spec(inp, fs.merged)
            spec.ensure_workdir(fs.merged, cfg)
            _write_atomic(os.path.join(bundle, "config.json"), cfg)
            meta = {"id": inp.id, "name": inp.name, "sandbox_id": inp.sandbox_id,
                    "created_at": time.time_ns(), "started_at": 0, "log_path": inp.log_path,
                    "cgroups_path": cfg["linux"]["cgroupsPath"], "pid_mode": inp.namespaces.pid,
                    "rootfs": fs.merged, "runtime": self.runtime_path,
                    "stop_signal": inp.image_config.get("StopSignal") or "SIGTERM"}
            _write_atomic(os.path.join(bundle, "meta.json"), meta)
            os.makedirs(os.path.dirname(inp.log_path), exist_ok=True)
            persist = os.path.join(self.persist, inp.id)
            os.makedirs(persist, exist_ok=True)
            conmon.launch(conmon.ConmonArgs(
                container_id=inp.id, name=inp.name, bundle=bundle, runtime_path=self.runtime_path,
                runtime_root=self.runtime_root, log_path=inp.log_path, exit_dir=self.exits,
                persist_dir=persist, socket_dir=self.sockets, stdin=inp.stdin,
                stdin_once=inp.stdin_once, tty=inp.tty, conmon_path=self.conmon_path))
        except OSError as e:
            self._cleanup(inp.id)
            raise K8sxError(f"creating container {inp.id}: {e}") from e
        except BaseException:
            self._cleanup(inp.id)
            raise
        return self.state(inp.id)

    def start(self, cid: str) -> ContainerState:
        st = self.state(cid)
        if st.status != CREATED:
            raise ContainerStateError(f"container {cid} is {st.status}, not created")
        # Noted before it runs: a quick container may be gone before runc start returns.
        self._set_meta(cid, started_at=time.time_ns())
        try:
            self._runc("start", cid)
        except BaseException:
            if self._exit(cid) is None:
                self._set_meta(cid, started_at=0)
            raise
        return self.state(cid)

    def state(self, cid: str) -> ContainerState:
        """The container's state from conmon's exit file, the init's pid and runc's exec.fifo."""
        meta = self._meta(cid)
        st = ContainerState(id=cid, status=UNKNOWN, pid=self._pid(cid), created_at=meta["created_at"],
                            started_at=meta.get("started_at", 0), log_path=meta.get("log_path", ""),
                            rootfs=meta.get("rootfs", ""), bundle=self.bundle(cid))
        ex = self._exit(cid)
        if ex is None:
            # Files only, no runtime call: runc and crun both keep exec.fifo until the start.
            if _alive(st.pid):
                created = os.path.exists(os.path.join(self.runtime_root, cid, "exec.fifo"))
                st.status = CREATED if created else RUNNING
                if not created and not st.started_at:
                    st.started_at = meta["created_at"]   # started by an instance that died before noting it
                return st
            if not st.pid:   # no pid file: ask the runtime
                status = self._runc_status(cid)
                if status in ("created", "running", "paused"):
                    st.status = CREATED if status == "created" else RUNNING
                    return st
            ex = self._wait_exit(cid, 1.0)
        if ex is None:
            st.status = EXITED if meta.get("started_at") else UNKNOWN
            st.exit_code = 255
            st.reason = "Error"
            st.message = "the container's monitor is gone; its exit code is unknown"
            return st
        st.status = EXITED
        st.exit_code, st.finished_at = ex
        # The exit file's mtime comes from the kernel's coarse clock (a few ms behind).
        st.finished_at = max(st.finished_at, st.started_at, st.created_at)
        if self._oom_killed(cid, meta):
            st.reason = "OOMKilled"
        else:
            st.reason = "Completed" if st.exit_code == 0 else "Error"
        st.pid = 0
        return st

    def _oom_killed(self, cid: str, meta: dict[str, Any]) -> bool:
        if os.path.exists(os.path.join(self.persist, cid, "oom")):
            return True
        oom = cgroups.read_stat("memory", meta.get("cgroups_path", ""), "memory.oom_control")
        return oom.get("oom_kill", 0) > 0

    def _wait_exit(self, cid: str, timeout: float) -> tuple[int, int] | None:
        deadline = time.monotonic() + timeout
        while True:
            ex = self._exit(cid)
            if ex is not None or time.monotonic() > deadline:
                return ex
            if not _alive(self._conmon_pid(cid)):
                return self._exit(cid)
            time.sleep(POLL)

    def kill(self, cid: str, sig: int | str = signals.SIGKILL, all_processes: bool = False) -> None:
        """Send ``sig`` to the container's init (every process of it with ``all_processes``)."""
        meta = self._meta(cid)
        if self._exit(cid) is not None:
            return
        num = _signal_number(sig)
        args = ["kill"] + (["--all"] if all_processes or meta.get("pid_mode") != "container" else [])
        r = self._runc(*args, cid, str(num), check=False)
        if r.returncode != 0 and self._runc_status(cid) not in ("stopped", ""):
            raise K8sxError(f"kill {cid}: {r.stderr.decode(errors='replace').strip()}")

    def stop(self, cid: str, timeout: float = 10) -> ContainerState:
        """SIGTERM (or the image's StopSignal), then SIGKILL after ``timeout``
        seconds; returns the exited state (exit code 128+n after a death by signal n)."""
        st = self.state(cid)
        if st.status == EXITED:
            return st
        if st.status == RUNNING and timeout > 0:
            self.kill(cid, self._stop_signal(cid))
            if self._wait_exit(cid, timeout) is not None:
                return self.state(cid)
        self.kill(cid, signals.SIGKILL)
        if self._wait_exit(cid, EXIT_FILE_WAIT) is None:
            raise K8sxError(f"container {cid} did not exit after SIGKILL")
        return self.state(cid)

    def _stop_signal(self, cid: str) -> int:
        sig = self._meta(cid).get("stop_signal") or "SIGTERM"
        try:
            return _signal_number(sig)
        except K8sxError:
            return int(signals.SIGTERM)

    def delete(self, cid: str) -> None:
        """Remove the container, killing it first if it still runs; no mount, cgroup, process or
        file of ours is left (the log file stays: it belongs to kubelet's log dir)."""
        self._meta(cid)
        st = self.state(cid)
        if st.status in (RUNNING, CREATED):
            self.stop(cid, 0)
        self._cleanup(cid)

    def _cleanup(self, cid: str) -> None:
        bundle = self.bundle(cid)
        meta: dict[str, Any] = {}
        with contextlib.suppress(K8sxError):
            meta = self._meta(cid)
        self._runc("delete", "--force", cid, check=False)
        cpid = self._conmon_pid(cid)
        deadline = time.monotonic() + 2.0
        while _alive(cpid) and time.monotonic() < deadline:
            time.sleep(POLL)
        if _alive(cpid):
            os.kill(cpid, signals.SIGKILL)
        cg = meta.get("cgroups_path")
        if cg:
            try:
                cgroups.remove(cg)
            except OSError as e:
                raise K8sxError(f"container {cid}: cannot remove its cgroup {cg}: {e.strerror}") from e
        base = os.path.join(self.containers, cid)
        rootfs.unmount(base)
        shutil.rmtree(base, ignore_errors=True)
        for path in (os.path.join(self.persist, cid), bundle):
            shutil.rmtree(path, ignore_errors=True)
        # conmon's attach-socket link to the bundle, and the exit file.
        for path in (os.path.join(self.sockets, cid), os.path.join(self.exits, cid)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    # -- in the running container ------------------------------------------------------------

    def exec_sync(self, cid: str, cmd: list[str], timeout: float = 0) -> ExecResult:
        """Run ``cmd`` in the container as its own process runs (user, env, caps, cwd); wait at most
        ``timeout`` seconds (0 = no limit), then kill it: ``timed_out`` is set and exit code 137."""
        st = self.state(cid)
        if st.status != RUNNING:
            raise ContainerStateError(f"container {cid} is {st.status}, not running")
        proc_spec = spec.exec_process(self.config(cid), cmd)
        bundle = self.bundle(cid)
        fd, pfile = tempfile.mkstemp(dir=bundle, prefix="exec-", suffix=".json")
        pidfile = pfile[:-5] + ".pid"
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(proc_spec, f)
        timed_out = False
        try:
            p = subprocess.Popen([self.runtime_path, "--root", self.runtime_root, "exec", "--process", pfile,
                                  "--pid-file", pidfile, cid],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                out, err = p.communicate(timeout=timeout or None)
            except subprocess.TimeoutExpired:
                timed_out = True
                try:
                    with open(pidfile, encoding="ascii") as f:
                        pid = int(f.read().strip())
                except (OSError, ValueError):
                    pid = 0
                for victim in ([pid, *_descendants(pid)] if pid else []):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(victim, signals.SIGKILL)
                try:
                    out, err = p.communicate(timeout=5)
                except subprocess.TimeoutExpired:   # a child of the exec still holds the pipes
                    p.kill()
                    out, err = p.communicate()
            code = p.returncode
            if code is not None and code < 0:
                code = 128 - code
        finally:
            for path in (pfile, pidfile):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        return ExecResult(stdout=out, stderr=err, exit_code=code if code is not None else 255,
                          timed_out=timed_out)

    def exec_interactive(self, cid: str, cmd: list[str], tty: bool, stdin: bool,
                         size: tuple[int, int] | None = None) -> Any:
        """Start ``cmd`` in the running container for a streaming exec (an :class:`interactive.ExecProcess`)."""
        from k8sx.cri.oci.interactive import ExecProcess

        st = self.state(cid)
        if st.status != RUNNING:
            raise ContainerStateError(f"container {cid} is {st.status}, not running")
        return ExecProcess(self.runtime_path, self.runtime_root, self.bundle(cid), cid, self.config(cid), cmd,
                           tty=tty, stdin=stdin, size=size)

    def attach(self, cid: str, stdin_once: bool, tty: bool) -> Any:
        """Connect to the running container's stdio through its conmon (an :class:`interactive.AttachSession`)."""
        from k8sx.cri.oci.interactive import AttachSession

        st = self.state(cid)
        if st.status != RUNNING:
            raise ContainerStateError(f"container {cid} is {st.status}, not running")
        return AttachSession(self.sockets, self.bundle(cid), cid, stdin_once=stdin_once, tty=tty)

    def update(self, cid: str, res: Resources) -> None:
        """Change the cgroup limits of a created or running container (``runc update``) and keep
        config.json in step."""
        st = self.state(cid)
        if st.status not in (CREATED, RUNNING):
            raise ContainerStateError(f"container {cid} is {st.status}; cannot update its resources")
        new = spec.resources(res)
        self._runc("update", "--resources", "-", cid, input=json.dumps(new).encode())
        cfg = self.config(cid)
        cur = cfg["linux"].setdefault("resources", {})
        for key, value in new.items():
            if isinstance(value, dict):
                cur.setdefault(key, {}).update(value)
            else:
                cur[key] = value
        _write_atomic(os.path.join(self.bundle(cid), "config.json"), cfg)

    def reopen_log(self, cid: str) -> None:
        """Have conmon reopen the log file (after kubelet rotated it)."""
        st = self.state(cid)
        if st.status != RUNNING:
            raise ContainerStateError(f"container {cid} is {st.status}, not running")
        conmon.control(self.bundle(cid), conmon.CTL_REOPEN_LOG)

    def stats(self, cid: str) -> Stats:
        """cpu and memory from the container's cgroup (v1) and the writable layer's usage."""
        st = cgroups.stats(self._meta(cid).get("cgroups_path", ""))
        st.writable_bytes, st.writable_inodes = rootfs.usage(rootfs.Rootfs(os.path.join(self.containers, cid)).upper)
        return st

    def describe(self, cid: str) -> dict[str, Any]:
        """The state and the spec, for ``inspect``'s info."""
        return {"state": asdict(self.state(cid)), "config": self.config(cid)}
