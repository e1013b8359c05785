"""What the ``k8sx cni`` verbs share: cnitool's environment as options, and turning them into a runner call.

Why: every verb reads NETCONFPATH, CNI_PATH, CNI_IFNAME, CNI_ARGS and CAP_ARGS the way cnitool does,
with a flag for each, and resolves a NETNS argument (a name under /var/run/netns, or a path) and
cnitool's default container id; doing it once keeps the verbs thin and consistent.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from k8sx.errors import UsageError

if TYPE_CHECKING:
    from k8sx.cni.runner import RuntimeConf

NETNS_DIR = "/var/run/netns"

ConfDirOpt = Annotated[str, typer.Option("--conf-dir", envvar="NETCONFPATH",
                                         help="Directory of network configurations (NETCONFPATH).")]
CniPathOpt = Annotated[str, typer.Option("--cni-path", envvar="CNI_PATH",
                                         help="Plugin search path, ':'-separated (CNI_PATH).")]
IfnameOpt = Annotated[str, typer.Option("--ifname", envvar="CNI_IFNAME",
                                        help="Interface name inside the netns (CNI_IFNAME).")]
ArgsOpt = Annotated[str, typer.Option("--args", envvar="CNI_ARGS", help="Plugin args K=V;K2=V2 (CNI_ARGS).")]
CapArgsOpt = Annotated[str, typer.Option("--cap-args", envvar="CAP_ARGS",
                                         help='Capability args as a JSON object (CAP_ARGS), e.g. '
                                              '\'{"portMappings":[...]}\'.')]
ContainerIdOpt = Annotated[str, typer.Option("--container-id",
                                             help="Container id (default: cnitool's, from the netns path).")]
CacheDirOpt = Annotated[str, typer.Option("--cache-dir",
                                          help="libcni's result cache directory.")]

DEFAULT_CONF_DIR = "/etc/cni/net.d"
DEFAULT_CNI_PATH = "/opt/cni/bin"
DEFAULT_CACHE_DIR = "/var/lib/cni"


def netns_path(netns: str) -> str:
    """A netns argument as a path: a bare name is ``/var/run/netns/NAME``; a path is made absolute."""
    if "/" not in netns:
        return os.path.join(NETNS_DIR, netns)
    return os.path.abspath(netns)


def parse_cap_args(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise UsageError(f"CAP_ARGS / --cap-args is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise UsageError("CAP_ARGS / --cap-args must be a JSON object, e.g. '{\"portMappings\": [...]}'")
    return obj


def runtime_conf(netns: str, ifname: str, args: str, cap_args: str, container_id: str, cache_dir: str,
                 must_exist: bool = True) -> RuntimeConf:
    """cnitool's RuntimeConf for NETNS; ADD and CHECK need the netns to exist (DEL does not: the spec
    lets a runtime clean up after the namespace is gone)."""
    from k8sx.cni.runner import RuntimeConf, default_container_id, parse_cni_args

    path = netns_path(netns)
    if must_exist and not os.path.exists(path):
        raise UsageError(f"network namespace {netns!r} not found: {path} does not exist",
                         hint="create it with `ip netns add NAME`, or give the path of an existing netns")
    return RuntimeConf(container_id=container_id or default_container_id(path), netns=path, ifname=ifname,
                       args=parse_cni_args(args), capability_args=parse_cap_args(cap_args), cache_dir=cache_dir)
