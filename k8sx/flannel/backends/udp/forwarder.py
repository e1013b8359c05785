"""The udp backend's data plane: IP packets between the TUN device and UDP, routed by subnet.

Why userspace: this is what flanneld's ``proxy_amd64.c`` does, packet by packet: read an IP packet
from the TUN, find the peer owning its destination subnet, decrement the TTL (patching the header
checksum) and send the bare packet as a UDP payload to ``peer:8285``; packets received on the
socket get the same TTL step and are written into the TUN. A destination no peer owns gets an
ICMP net-unreachable written back into the TUN.

Two implementations of that loop: :class:`NativeForwarder` runs ``proxy.c`` (compiled on first use
into a cache directory, like flanneld's C proxy thread) and is the one used when a C compiler is
present; :class:`Forwarder` is the same loop in Python, the fallback.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import ipaddress
import logging
import os
import socket
import struct
import threading
from typing import Any

from k8sx.native import compile_c

log = logging.getLogger(__name__)

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
BUF = 65536


def open_tun(pattern: str, vnet_hdr: bool = False) -> tuple[int, str]:
    """Open a TUN device (``IFF_TUN|IFF_NO_PI``); the kernel fills ``%d`` (``flannel0``).

    ``vnet_hdr``: packets carry a virtio-net header (the C proxy uses it for segmentation offload).
    """
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
    try:
        res = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", pattern.encode(), flags))
    except OSError:
        os.close(fd)
        raise
    return fd, res[:16].rstrip(b"\0").decode()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def decrement_ttl(pkt: bytearray) -> bool:
    """TTL - 1 with an incremental checksum update (RFC 1624); False when the packet must die."""
    if len(pkt) < 20 or pkt[0] >> 4 != 4 or pkt[8] <= 1:
        return False
    pkt[8] -= 1
    s = ((pkt[10] << 8) | pkt[11]) + 0x0100
    s = (s & 0xFFFF) + (s >> 16)
    pkt[10], pkt[11] = s >> 8, s & 0xFF
    return True


def net_unreachable(pkt: bytes, src: ipaddress.IPv4Address) -> bytes:
    """ICMP destination-unreachable (net) from ``src`` back to the sender of ``pkt``."""
    ihl = (pkt[0] & 0x0F) * 4
    body = pkt[: ihl + 8]
    icmp = bytearray(struct.pack("!BBHI", 3, 0, 0, 0) + body)
    struct.pack_into("!H", icmp, 2, _checksum(bytes(icmp)))
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0, src.packed, pkt[12:16]))
    struct.pack_into("!H", hdr, 10, _checksum(bytes(hdr)))
    return bytes(hdr + icmp)


class Forwarder:
    def __init__(self, tun_fd: int, listen_ip: str, port: int, own_ip: ipaddress.IPv4Address,
                 subnet_len: int) -> None:
        self.tun = tun_fd
        self.own_ip = own_ip
        self.mask = (0xFFFFFFFF << (32 - subnet_len)) & 0xFFFFFFFF
        self.routes: dict[int, tuple[str, int]] = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock.bind((listen_ip, port))
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._from_tun, name="udp-tun", daemon=True),
                         threading.Thread(target=self._from_net, name="udp-net", daemon=True)]

    def set_route(self, subnet: ipaddress.IPv4Network, ip: str, port: int) -> None:
        self.routes[int(subnet.network_address)] = (ip, port)

    def del_route(self, subnet: ipaddress.IPv4Network) -> None:
        self.routes.pop(int(subnet.network_address), None)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _from_tun(self) -> None:
        tun, routes, mask, sendto = self.tun, self.routes, self.mask, self.sock.sendto
        while not self._stop.is_set():
            try:
                pkt = bytearray(os.read(tun, BUF))
            except OSError:
                return
            if len(pkt) < 20:
                continue
            peer = routes.get(int.from_bytes(pkt[16:20], "big") & mask)
            if peer is None:
                with contextlib.suppress(OSError):
                    os.write(tun, net_unreachable(bytes(pkt), self.own_ip))
                continue
            if decrement_ttl(pkt):
                try:
                    sendto(pkt, peer)
                except OSError as exc:
                    if self._stop.is_set():
                        return
                    log.debug("send to %s: %s", peer, exc)

    def _from_net(self) -> None:
        tun, recv = self.tun, self.sock.recv
        while not self._stop.is_set():
            try:
                pkt = bytearray(recv(BUF))
            except OSError:
                return
            if not pkt:
                if self._stop.is_set():
                    return
                continue
            if decrement_ttl(pkt):
                try:
                    os.write(tun, pkt)
                except OSError as exc:
                    log.debug("write to tun: %s", exc)


# the native loop ------------------------------------------------------------------------------------

SET, DEL, STOP = 1, 2, 3
_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "proxy.c")


def cache_dir() -> str:
    return os.environ.get("K8SX_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "k8sx")


def native_library() -> Any | None:
    """``proxy.c`` compiled (once per source version) and loaded; None without a C compiler."""
    with open(_SOURCE, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()[:16]
    directory = cache_dir()
    path = os.path.join(directory, f"flannel-udp-proxy-{digest}.so")
    if not os.path.exists(path):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        built, why = compile_c(_SOURCE, path, ["-shared", "-fPIC", "-pthread"])
        if built is None:
            log.warning("cannot compile the udp proxy (%s); using the Python forwarder", why)
            return None
    lib = ctypes.CDLL(path)
    lib.k8sx_udp_proxy.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_uint32]
    lib.k8sx_udp_proxy.restype = ctypes.c_int
    return lib


class NativeForwarder:
    """``proxy.c``'s loop on a thread of its own, steered over a SOCK_SEQPACKET socket pair."""

    def __init__(self, lib: Any, tun_fd: int, listen_ip: str, port: int, own_ip: ipaddress.IPv4Address,
                 subnet_len: int) -> None:
        self.lib = lib
        self.tun = tun_fd
        self.subnet_len = subnet_len
        self.own = int.from_bytes(own_ip.packed, "little")  # the bytes in network order, as C reads them
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock.bind((listen_ip, port))
        self.ctl, self._ctl_c = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._thread = threading.Thread(target=self._run, name="udp-proxy", daemon=True)

    def _run(self) -> None:
        rc = self.lib.k8sx_udp_proxy(self.tun, self.sock.fileno(), self._ctl_c.fileno(), self.own)
        if rc:
            log.error("udp proxy stopped: %s", os.strerror(-rc))

    def _send(self, cmd: int, subnet: ipaddress.IPv4Network | None = None, ip: str = "0.0.0.0", port: int = 0) -> None:
        net = subnet.network_address.packed if subnet else b"\0" * 4
        plen = subnet.prefixlen if subnet else 0
        self.ctl.send(struct.pack("=I4sI4sI", cmd, net, plen, socket.inet_aton(ip), port))

    def start(self) -> None:
        self._thread.start()

    def set_route(self, subnet: ipaddress.IPv4Network, ip: str, port: int) -> None:
        self._send(SET, subnet, ip, port)

    def del_route(self, subnet: ipaddress.IPv4Network) -> None:
        self._send(DEL, subnet)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._send(STOP)
        self._thread.join(2)
        self.sock.close()
