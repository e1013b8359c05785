"""The CRI server of ``k8sx runtime serve``: runtime.v1 services on one unix socket, as containerd serves them.

A synchronous ``grpc.server`` with a thread pool: unary latency equals grpc.aio here (~0.5 ms) and
handlers may block on runc, conmon or netlink without an event loop in the way. The server is
assembled from (add_to_server, servicer) pairs, so the runtime service plugs in next to the image
service without this module changing.

Socket hygiene: the socket is created mode 0660 (kubelet and crictl run as root or as its group),
a live server on the same path is refused rather than silently replaced, a stale socket from a
killed server is replaced, and SIGTERM/SIGINT stop the server with a grace period and remove the
socket.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import stat
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from k8sx.errors import K8sxError, UsageError

log = logging.getLogger("k8sx.cri.server")

DEFAULT_LISTEN = "unix:///run/k8sx/k8sx.sock"
DEFAULT_ROOT = "/var/lib/k8sx"
DEFAULT_STATE = "/run/k8sx"
SOCKET_MODE = 0o660

Service = tuple[Callable[[Any, Any], None], Any]  # (add_XServicer_to_server, servicer)


@dataclass
class ServerConfig:
    """Settings of ``k8sx runtime serve``; a TOML ``--config`` file may set any field by its name."""

    listen: str = DEFAULT_LISTEN
    root: str = DEFAULT_ROOT  # persistent: images, content, snapshots
    state: str = DEFAULT_STATE  # volatile: sockets, per-boot state
    registries_config: str | None = None  # registry hosts and mirrors: a containerd-style certs.d directory
    docker_config: str | None = None  # registry credentials: a docker config.json (default $DOCKER_CONFIG, ~/.docker)
    runtime: str = "runc"  # the OCI runtime conmon drives (a name on PATH or a path; crun works too)
    cni_conf_dir: str = "/etc/cni/net.d"  # pods join the first network defined here
    cni_bin_dir: str = "/opt/cni/bin:/usr/lib/cni"  # where CNI plugins are looked up, in order
    cni_cache_dir: str = ""  # libcni's result cache (default /var/lib/cni, shared with containerd/cnitool)
    cgroup_parent: str = "/k8sx"  # cgroupfs parent of pods that do not name one
    max_workers: int = 32  # streaming RPCs hold a worker each
    grace_period: float = 5.0  # seconds in-flight calls get on SIGTERM
    stream_address: str = "127.0.0.1:0"  # the streaming server (exec/attach/port-forward URLs): HOST:PORT

    @property
    def socket_path(self) -> str:
        from k8sx.cri.client import unix_path

        return unix_path(self.listen)


def load_config(path: str, **overrides: Any) -> ServerConfig:
    """Read the TOML config file at ``path`` (if any), then apply the non-None ``overrides`` (flags)."""
    values: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as f:
                values = tomllib.load(f)
        except OSError as e:
            raise UsageError(f"config {path}: {e.strerror}") from e
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"config {path}: {e}") from e
    known = {f.name: f for f in dataclasses.fields(ServerConfig)}
    for key in values:
        if key not in known:
            raise UsageError(f"config {path}: unknown setting {key!r} (known: {', '.join(known)})")
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        config = ServerConfig(**values)
    except TypeError as e:
        raise UsageError(f"config {path}: {e}") from e
    for name in ("root", "state"):
        if not os.path.isabs(getattr(config, name)):
            raise UsageError(f"--{name} must be an absolute path, got {getattr(config, name)!r}")
    config.socket_path  # noqa: B018 (validates the endpoint)
    return config


def default_services(config: ServerConfig) -> list[Service]:
    """The services of a full server: RuntimeService and ImageService over the image store in ``root``.

    This is where the runtime plugs in: build its state here (the same ``store`` gives
    CreateContainer the image layers) and hand it to ``RuntimeServicer``; the server itself does not
    change. Tests and embedders pass their own list to :class:`CRIServer` instead.
    """
    from k8sx.cri.api.runtime.v1 import api_pb2_grpc
    from k8sx.cri.images.store import ImageStore
    from k8sx.cri.oci.runtime import OciRuntime
    from k8sx.cri.sandbox import NetworkSettings, Sandboxes
    from k8sx.cri.servicers.image import ImageServicer
    from k8sx.cri.servicers.runtime import RuntimeServicer
    from k8sx.cri.state import StateDB

    store = ImageStore(os.path.join(config.root, "images"), registries_config=config.registries_config,
                       docker_config=config.docker_config)
    network = NetworkSettings(conf_dir=config.cni_conf_dir,
                              bin_dirs=tuple(d for d in config.cni_bin_dir.split(":") if d),
                              cache_dir=config.cni_cache_dir)
    runtime = OciRuntime(state_dir=os.path.join(config.state, "oci"), root_dir=os.path.join(config.root, "oci"),
                         runtime_path=config.runtime)
    from k8sx.cri.streaming.server import StreamServer

    streams = StreamServer(config.stream_address)
    streams.start()
    servicer = RuntimeServicer(StateDB(config.state), Sandboxes(config.state, network), runtime, store,
                               cgroup_parent=config.cgroup_parent, streams=streams)
    return [
        (api_pb2_grpc.add_RuntimeServiceServicer_to_server, servicer),
        (api_pb2_grpc.add_ImageServiceServicer_to_server, ImageServicer(store)),
    ]


class CRIServer:
    """One grpc server on one unix socket. ``start()``, then ``wait()`` or ``stop()``."""

    def __init__(self, config: ServerConfig, services: list[Service] | None = None) -> None:
        self.config = config
        self.services = services
        self._server: Any = None
        self._servicers: list[Any] = []
        self._stopped = threading.Event()

    def _check_socket_path(self) -> None:
        path = self.config.socket_path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise K8sxError(f"cannot listen on {self.config.listen}: {path} exists and is not a socket")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(path)
        except OSError:
            log.info("removing stale socket %s", path)
            os.unlink(path)
            return
        finally:
            s.close()
        raise K8sxError(f"cannot listen on {self.config.listen}: another server is already listening there")

    def start(self) -> None:
        # grpc must not run its fork handlers: the runtime forks (pyroute2, runc) from handler threads.
        os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
        from concurrent.futures import ThreadPoolExecutor

        import grpc

        path = self.config.socket_path
        for d in (self.config.root, self.config.state, os.path.dirname(path)):
            try:
                os.makedirs(d, mode=0o711, exist_ok=True)
            except OSError as e:
                raise K8sxError(f"cannot create {d}: {e.strerror}") from e
        self._check_socket_path()
        try:
            services = self.services if self.services is not None else default_services(self.config)
        except OSError as e:
            raise K8sxError(f"cannot open the stores under {self.config.root}: {e}") from e
        self.services = services
        server = grpc.server(ThreadPoolExecutor(max_workers=self.config.max_workers, thread_name_prefix="cri"),
                             options=[("grpc.max_receive_message_length", 16 * 1024 * 1024),
                                      ("grpc.max_send_message_length", 16 * 1024 * 1024)])
        for add, servicer in services:
            add(servicer, server)
        self._servicers = [servicer for _add, servicer in services]
        old_umask = os.umask(0o117)  # the socket is born 0660, no window with wider permissions
        try:
            port = server.add_insecure_port(f"unix://{path}")
        except RuntimeError as e:
            raise K8sxError(f"cannot listen on {self.config.listen}: {e}") from e
        finally:
            os.umask(old_umask)
        if port == 0:
            raise K8sxError(f"cannot listen on {self.config.listen}")
        server.start()
        os.chmod(path, SOCKET_MODE)
        self._server = server
        log.info("serving runtime.v1 on %s (root %s, state %s)", self.config.listen, self.config.root,
                 self.config.state)

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, give in-flight ones ``grace`` seconds, remove the socket."""
        if self._server is None:
            return
        grace = self.config.grace_period if grace is None else grace
        self._server.stop(grace).wait()
        self._server = None
        for _, servicer in self.services or []:
            streams = getattr(servicer, "streams", None)
            if streams is not None:
                streams.stop()
        for servicer in self._servicers:  # their own threads (the runtime's exit watcher) end with the server
            close = getattr(servicer, "close", None)
            if close is not None:
                close()
        self._servicers = []
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.config.socket_path)
        self._stopped.set()
        log.info("stopped")

    def wait(self) -> None:
        self._stopped.wait()

    def serve_forever(self) -> None:
        """Start, then block until SIGTERM or SIGINT; then stop gracefully."""
        got: list[int] = []
        wake = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            got.append(signum)
            wake.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            wake.wait()
            log.info("got %s, stopping (grace %.1fs)", signal.Signals(got[0]).name, self.config.grace_period)
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
