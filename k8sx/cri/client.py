"""The CRI client: which endpoint to talk to (resolved exactly as crictl does), and the calls themselves.

Every ``k8sx runtime <verb>`` goes through here, against our server, containerd or CRI-O alike, so
endpoint resolution, connecting over a unix socket, deadlines and turning a gRPC failure into one
readable line exist once. Module level is standard library only: grpc and the generated stubs are
imported when a connection is actually made, which keeps ``k8sx --help`` and completion fast.

Resolution order, per setting (crictl's): command-line flag, then environment variable
(``CONTAINER_RUNTIME_ENDPOINT``, ``IMAGE_SERVICE_ENDPOINT``, ``CRI_CONFIG_FILE``), then the config
file (``/etc/crictl.yaml`` or ``--config``), then the defaults: k8sx's own socket first, then
crictl's list, the first that accepts a connection. The image endpoint defaults to the runtime one.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from k8sx.errors import K8sxError, UsageError

K8SX_ENDPOINT = "unix:///run/k8sx/k8sx.sock"
CRICTL_DEFAULT_ENDPOINTS = (
    "unix:///var/run/dockershim.sock",
    "unix:///run/containerd/containerd.sock",
    "unix:///run/crio/crio.sock",
    "unix:///var/run/cri-dockerd.sock",
)
DEFAULT_ENDPOINTS = (K8SX_ENDPOINT, *CRICTL_DEFAULT_ENDPOINTS)
DEFAULT_CONFIG = "/etc/crictl.yaml"
DEFAULT_TIMEOUT = 2.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # kubelet's limit for CRI messages

CONFIG_KEYS = ("runtime-endpoint", "image-endpoint", "timeout", "debug", "pull-image-on-create",
               "disable-pull-on-run")


class ConnectError(K8sxError):
    """The endpoint could not be reached (no socket, refused, permission, timeout)."""


class RPCError(K8sxError):
    """The server answered a call with a non-OK status; ``code`` is its name in Go's spelling (``NotFound``)."""

    def __init__(self, message: str, code: str, details: str) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


@dataclass
class Settings:
    """Where and how to connect. An endpoint of ``None`` means "not configured: try the defaults"."""

    runtime_endpoint: str | None = None
    image_endpoint: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    debug: bool = False
    config_file: str | None = None
    file_options: dict[str, Any] = field(default_factory=dict)

    @property
    def image(self) -> str | None:
        return self.image_endpoint or self.runtime_endpoint


def parse_duration(text: str | float | int) -> float:
    """Go's ``time.ParseDuration`` as crictl users write it (``2s``, ``500ms``, ``1m30s``); a bare number: seconds."""
    if isinstance(text, int | float):
        return float(text)
    s = text.strip()
    try:
        return float(s)
    except ValueError:
        pass
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise UsageError(f"invalid duration {text!r} (use e.g. 2s, 500ms, 1m)")
    return sum(float(n) * units[u] for n, u in parts)


def load_config(path: str) -> dict[str, Any]:
    """Read a crictl config file (``key: value`` YAML); unknown keys are an error, as in crictl."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise K8sxError(f"load config file: {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise K8sxError(f"load config file: {path}: {e}") from e
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise K8sxError(f"load config file: {path}: expected a mapping of options")
    for key in doc:
        if key not in CONFIG_KEYS:
            raise K8sxError(f"load config file: {path}: config option {key!r} is not valid")
    return dict(doc)


def resolve(
    runtime_endpoint: str | None = None,
    image_endpoint: str | None = None,
    config: str | None = None,
    timeout: str | float | None = None,
    debug: bool | None = None,
    env: Mapping[str, str] | None = None,
    program_dir: str | None = None,
) -> Settings:
    """Combine flags (``None`` = not given), environment and config file into :class:`Settings`.

    A missing config file is fine unless it was named explicitly (flag or ``CRI_CONFIG_FILE``); like
    crictl, a config file missing at its default path is also looked for next to the program.
    """
    env = os.environ if env is None else env
    runtime_endpoint = runtime_endpoint or env.get("CONTAINER_RUNTIME_ENDPOINT") or None
    image_endpoint = image_endpoint or env.get("IMAGE_SERVICE_ENDPOINT") or None
    explicit = config or env.get("CRI_CONFIG_FILE") or None
    options: dict[str, Any] = {}
    config_file = explicit or DEFAULT_CONFIG
    if explicit:
        options = load_config(explicit)
    else:
        beside = os.path.join(program_dir or os.path.dirname(os.path.abspath(sys.argv[0])), "crictl.yaml")
        for candidate in (DEFAULT_CONFIG, beside):
            if os.path.exists(candidate):
                config_file = candidate
                options = load_config(candidate)
                break
        else:
            config_file = None
    runtime_endpoint = runtime_endpoint or _str_option(options, "runtime-endpoint")
    image_endpoint = image_endpoint or _str_option(options, "image-endpoint")
    if timeout is not None:
        seconds = parse_duration(timeout)
    else:
        raw = options.get("timeout")
        seconds = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else 0.0
    if seconds <= 0:  # crictl: "0 or less is set to default"
        seconds = DEFAULT_TIMEOUT
    if debug is None:
        debug = bool(options.get("debug", False))
    for ep in (runtime_endpoint, image_endpoint):
        if ep is not None:
            unix_path(ep)  # reject a bad endpoint before any connection attempt
    return Settings(runtime_endpoint, image_endpoint, seconds, debug, config_file, options)


def _str_option(options: dict[str, Any], key: str) -> str | None:
    value = options.get(key)
    return str(value) if value else None


def unix_path(endpoint: str) -> str:
    """The socket path of ``unix:///path`` (a bare ``/path`` is accepted as crictl does); other schemes fail."""
    if "://" not in endpoint:
        if endpoint.startswith("/"):
            return endpoint
        raise UsageError(f"invalid endpoint {endpoint!r}: use unix:///path/to/socket")
    scheme, _, rest = endpoint.partition("://")
    if scheme != "unix":
        raise UsageError(f"invalid endpoint {endpoint!r}: protocol {scheme!r} not supported, only unix sockets")
    if not rest.startswith("/"):
        raise UsageError(f"invalid endpoint {endpoint!r}: the socket path must be absolute (unix:///path)")
    return rest


def canonical(endpoint: str) -> str:
    return "unix://" + unix_path(endpoint)


def probe(endpoint: str, timeout: float) -> None:
    """Open and close a plain connection to the socket: precise errors (ENOENT, ECONNREFUSED, EACCES) at once."""
    import socket

    path = unix_path(endpoint)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except TimeoutError as e:
        raise ConnectError(f"connect to {canonical(endpoint)}: timed out after {timeout:g}s") from e
    except OSError as e:
        reason = e.strerror or str(e)
        raise ConnectError(f"connect to {canonical(endpoint)}: {reason}",
                           hint=_connect_hint(e)) from e
    finally:
        s.close()


def _connect_hint(e: OSError) -> str | None:
    import errno

    if e.errno in (errno.ENOENT, errno.ECONNREFUSED):
        return "is the runtime running? start ours with: k8sx runtime serve"
    if e.errno == errno.EACCES:
        return "the socket is mode 0660: run as root or as a member of its group"
    return None


def status_name(code: Any) -> str:
    """``grpc.StatusCode.NOT_FOUND`` -> ``NotFound`` (how crictl and Go spell status codes)."""
    name = getattr(code, "name", str(code))
    return "".join(part.capitalize() for part in name.split("_"))


class Client:
    """Stubs of RuntimeService and ImageService over (at most) two unix-socket channels.

    Channels are opened on first use, so a verb that only lists images never dials the runtime
    endpoint. Calls other than PullImage carry ``settings.timeout`` as their deadline (as crictl);
    a pull may take as long as it takes.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._channels: dict[str, Any] = {}
        self._runtime: Any = None
        self._image: Any = None
        self.runtime_endpoint: str | None = None
        self.image_endpoint: str | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()

    def _dial(self, endpoint: str | None) -> tuple[str, Any]:
        if endpoint is not None:
            return canonical(endpoint), self._channel(canonical(endpoint))
        errors = []
        for candidate in DEFAULT_ENDPOINTS:
            try:
                return candidate, self._channel(candidate)
            except ConnectError as e:
                errors.append(e.message)
        raise ConnectError(f"no runtime endpoint is set and none of the defaults answered: {'; '.join(errors)}",
                           hint="set --runtime-endpoint/-r, CONTAINER_RUNTIME_ENDPOINT or runtime-endpoint "
                                "in /etc/crictl.yaml")

    def _channel(self, endpoint: str) -> Any:
        if endpoint in self._channels:
            return self._channels[endpoint]
        probe(endpoint, self.settings.timeout)
        import grpc

        # No channel_ready_future: it starts a connectivity-polling thread that makes close() wait
        # ~200 ms. The socket probe above proves the endpoint; the first call's deadline covers the rest.
        channel = grpc.insecure_channel(endpoint, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ])
        self._channels[endpoint] = channel
        return channel

    @property
    def runtime(self) -> Any:
        if self._runtime is None:
            from k8sx.cri.api.runtime.v1 import api_pb2_grpc

            self.runtime_endpoint, channel = self._dial(self.settings.runtime_endpoint)
            self._runtime = api_pb2_grpc.RuntimeServiceStub(channel)
        return self._runtime

    @property
    def image(self) -> Any:
        if self._image is None:
            from k8sx.cri.api.runtime.v1 import api_pb2_grpc

            self.image_endpoint, channel = self._dial(self.settings.image)
            self._image = api_pb2_grpc.ImageServiceStub(channel)
        return self._image

    def call(self, method: Any, request: Any, what: str, deadline: bool = True) -> Any:
        """Invoke ``method(request)``; a gRPC failure becomes :class:`RPCError` ``"<what>: rpc error: ..."``."""
        import grpc

        try:
            return method(request, timeout=self.settings.timeout if deadline else None)
        except grpc.RpcError as e:
            code = status_name(e.code())
            details = e.details() or ""
            raise RPCError(f"{what}: rpc error: code = {code} desc = {details}", code, details) from None

    # --- the calls, one per RPC the verbs use -------------------------------------------------------

    def version(self) -> Any:
        from k8sx.cri.api.runtime.v1 import api_pb2

        return self.call(self.runtime.Version, api_pb2.VersionRequest(version="v1"), "getting the runtime version")

    def pull_image(self, image: str, auth: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
                   sandbox_config: Any = None) -> str:
        from k8sx.cri.api.runtime.v1 import api_pb2

        req = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image, annotations=annotations or {}))
        if auth:
            req.auth.CopyFrom(api_pb2.AuthConfig(**auth))
        if sandbox_config is not None:
            req.sandbox_config.CopyFrom(sandbox_config)
        return self.call(self.image.PullImage, req, "pulling image", deadline=False).image_ref

    def list_images(self, image: str = "") -> list[Any]:
        from k8sx.cri.api.runtime.v1 import api_pb2

        req = api_pb2.ListImagesRequest()
        if image:
            req.filter.image.image = image
        return list(self.call(self.image.ListImages, req, "listing images").images)

    def image_status(self, image: str, verbose: bool = False) -> Any:
        from k8sx.cri.api.runtime.v1 import api_pb2

        req = api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=image), verbose=verbose)
        return self.call(self.image.ImageStatus, req, f"image status for {image!r} request")

    def remove_image(self, image: str) -> None:
        from k8sx.cri.api.runtime.v1 import api_pb2

        self.call(self.image.RemoveImage, api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=image)),
                  f"error of removing image {image!r}")

    def image_fs_info(self) -> Any:
        from k8sx.cri.api.runtime.v1 import api_pb2

        return self.call(self.image.ImageFsInfo, api_pb2.ImageFsInfoRequest(), "image filesystem info request")

    def list_containers(self) -> list[Any]:
        from k8sx.cri.api.runtime.v1 import api_pb2

        return list(self.call(self.runtime.ListContainers, api_pb2.ListContainersRequest(),
                              "listing containers").containers)


# Fields of cri-api newer than v0.26, the API crictl 1.26 is built on: it cannot print them, so the
# documents shaped as crictl's leave them out (by message, protobuf JSON names).
NEWER_THAN_CRICTL: dict[str, tuple[str, ...]] = {
    "runtime.v1.ImageSpec": ("userSpecifiedImage", "runtimeHandler", "imageRef"),
    "runtime.v1.Container": ("imageId",),
    "runtime.v1.ContainerStatus": ("imageId", "user", "stopSignal"),
    "runtime.v1.CpuUsage": ("psi",),
    "runtime.v1.MemoryUsage": ("psi",),
    "runtime.v1.ContainerStats": ("swap", "io"),
    "runtime.v1.LinuxPodSandboxStats": ("io",),
}


def to_dict(message: Any) -> dict[str, Any]:
    """A message as crictl prints it with ``-o json``: Go ``jsonpb`` with defaults emitted.

    That is protobuf's JSON mapping (lowerCamelCase names, 64-bit integers as strings, enums by
    name, bytes in base64) except that an unset message field is ``null`` and wrapper types are
    plain messages (``"usedBytes": {"value": "12"}``), because crictl's structs are gogo-generated,
    and fields crictl 1.26 does not know are left out (``NEWER_THAN_CRICTL``).
    Scripts written against crictl's output keep working on ours.
    """
    return _message(message)


def _message(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    newer = NEWER_THAN_CRICTL.get(message.DESCRIPTOR.full_name, ())
    for fd in message.DESCRIPTOR.fields:
        if fd.json_name in newer:
            continue
        value = getattr(message, fd.name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            out[fd.json_name] = {str(k): _value(value_fd, v) for k, v in sorted(value.items())}
        elif fd.is_repeated:
            out[fd.json_name] = [_value(fd, v) for v in value]
        elif fd.message_type is not None and not message.HasField(fd.name):
            out[fd.json_name] = None
        else:
            out[fd.json_name] = _value(fd, value)
    return out


def _value(fd: Any, value: Any) -> Any:
    from google.protobuf.descriptor import FieldDescriptor as F

    if fd.type == F.TYPE_MESSAGE:
        return _message(value)
    if fd.type == F.TYPE_ENUM:
        ev = fd.enum_type.values_by_number.get(value)
        return ev.name if ev is not None else value
    if fd.type in (F.TYPE_INT64, F.TYPE_UINT64, F.TYPE_SINT64, F.TYPE_FIXED64, F.TYPE_SFIXED64):
        return str(value)
    if fd.type == F.TYPE_BYTES:
        import base64

        return base64.b64encode(value).decode()
    return value


def message_from_file(path: str, message_type: str) -> Any:
    """Load a JSON or YAML file (crictl's pod/container config files) into ``api_pb2.<message_type>``.

    Field names may be snake_case (as crictl's examples write them) or lowerCamelCase; unknown
    fields are ignored, as Go's decoder does.
    """
    import yaml
    from google.protobuf import json_format

    from k8sx.cri.api.runtime.v1 import api_pb2

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise UsageError(f"load {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise UsageError(f"load {path}: not JSON or YAML: {e}") from e
    if not isinstance(doc, dict):
        raise UsageError(f"load {path}: expected an object")
    message = getattr(api_pb2, message_type)()
    try:
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except json_format.ParseError as e:
        raise UsageError(f"load {path}: {e}") from e
    return message
