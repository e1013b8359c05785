"""loopback: bring ``lo`` up in the pod's namespace (and down on DEL), like the reference plugin.

Why its own module: every pod network ends with it; chained after another plugin it passes the
previous result through unchanged, alone it reports ``lo`` with its addresses.
"""

from __future__ import annotations

import os
from typing import Any

from k8sx.cni.skel import CmdArgs
from k8sx.cni.types import ERR_INTERNAL, ERR_UNKNOWN_CONTAINER, CNIError
from k8sx.net import ns
from k8sx.net.link import Netlink


def _lo(args: CmdArgs, up: bool | None) -> tuple[list[Any], bool]:
    try:
        fd = ns.open_netns(args.netns)
    except ns.NetnsNotFound as exc:
        raise CNIError(ERR_UNKNOWN_CONTAINER, str(exc)) from None
    try:
        with Netlink(fd) as nl:
            lo = nl.link("lo")
            if lo is None:
                raise CNIError(ERR_INTERNAL, "no loopback interface in the namespace")
            if up is not None and lo.up != up:
                nl.set_up(lo.index, up)
            addrs = nl.addresses(lo.index) if up else []
            return addrs, lo.up
    finally:
        os.close(fd)


def cmd_add(args: CmdArgs) -> dict[str, Any]:
    addrs, _ = _lo(args, True)
    prev = args.prev_result
    if prev is not None:
        return prev
    v4 = next((a for a in addrs if a.version == 4), None)
    v6 = next((a for a in addrs if a.version == 6), None)
    result: dict[str, Any] = {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": args.netns}],
    }
    ips = [{"interface": 0, "address": str(a)} for a in (v4, v6) if a is not None]
    if ips:
        result["ips"] = ips
    result["dns"] = {}
    return result


def cmd_del(args: CmdArgs) -> None:
    if not args.netns or not os.path.exists(args.netns):
        return  # the namespace is gone, and with it the interface
    try:
        _lo(args, False)
    except CNIError as exc:
        if exc.code != ERR_UNKNOWN_CONTAINER:
            raise


def cmd_check(args: CmdArgs) -> None:
    _, up = _lo(args, None)
    if not up:
        raise CNIError(ERR_INTERNAL, "loopback interface is down")
