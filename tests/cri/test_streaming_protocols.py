"""The streaming transports on their own, over socket pairs: SPDY/3.1 (the dictionary of the spec,
header blocks through one zlib context per direction, data, FIN, RST, PING, GOAWAY, big payloads split
into frames) and WebSocket (masking, the 16- and 64-bit length forms, v5's close signal), plus the
resize-message parser, the v4 status messages clients decode into exit codes, and the configurable
listen address of the streaming server (a bad one is a clear error of ``serve``).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import socket
import struct
import subprocess
import tempfile

import pytest
from support import bin_path

from k8sx.cri.server import load_config
from k8sx.cri.streaming import client, remotecommand, spdy, websocket
from k8sx.cri.streaming.server import StreamServer
from k8sx.errors import K8sxError


def spdy_pair() -> tuple[spdy.Connection, spdy.Connection, queue.Queue[spdy.Stream]]:
    a, b = socket.socketpair()
    arrived: queue.Queue[spdy.Stream] = queue.Queue()

    def on_stream(s: spdy.Stream) -> None:
        s.conn.reply(s)
        arrived.put(s)

    server = spdy.Connection(a, server=True, on_stream=on_stream)
    cli = spdy.Connection(b, server=False)
    server.start()
    cli.start()
    return server, cli, arrived


def test_dictionary_is_the_specs() -> None:
    # SHA-256 of the 1423-byte dictionary of the SPDY/3 draft, section 2.6.10.1
    assert len(spdy.DICTIONARY) == 1423
    assert hashlib.sha256(spdy.DICTIONARY).hexdigest() == \
        "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"


def test_header_block_round_trip() -> None:
    h = {"streamtype": ["data"], "port": ["80"], "x-multi": ["a", "b"]}
    assert spdy.decode_headers(spdy.encode_headers(h)) == h
    with pytest.raises(spdy.ProtocolError):
        spdy.decode_headers(b"\0\0\0\5\0")


def test_streams_data_fin_reset_and_goaway() -> None:
    server, cli, arrived = spdy_pair()
    try:
        streams = [cli.open_stream({"streamtype": [f"s{i}"], "port": ["80"]}) for i in range(3)]
        for s in streams:
            assert s.replied.wait(5)
        got = {}
        for _ in range(3):
            s = arrived.get(timeout=5)
            got[s.header("streamtype")] = s
        assert sorted(got) == ["s0", "s1", "s2"] and got["s0"].header("port") == "80"
        big = bytes(range(256)) * 1000   # 256 kB: several DATA frames
        streams[0].write(big)
        streams[0].close()
        assert got["s0"].read_all() == big
        got["s1"].write(b"back")
        got["s1"].close()
        assert streams[1].read_all() == b"back"
        streams[2].cancel()
        assert got["s2"].read(timeout=5) == b"" and got["s2"].reset
        with pytest.raises(BrokenPipeError):
            streams[2].write(b"x")
        cli.send(spdy.control_frame(spdy.PING, 0, struct.pack(">I", 7)))   # answered, not fatal
        cli.close()
        assert server.closed.wait(5)
    finally:
        cli.close()
        server.close()


def test_websocket_frames_and_close_signal() -> None:
    a, b = socket.socketpair()
    srv = websocket.WSConnection(a, remotecommand.V5)
    cl = websocket.WSConnection(b, remotecommand.V5, client=True)
    srv.start()
    cl.start()
    try:
        for size in (5, 300, 70000):   # 7-bit, 16-bit and 64-bit length forms
            data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            cl.channel("stdin").write(data)
            got = b""
            while len(got) < len(data):
                got += srv.channel("stdin").read(timeout=5)
            assert got == data
        cl.channel("stdin").close()   # v5: [255, 0]
        assert srv.channel("stdin").read(timeout=5) == b""
        srv.channel("stdout").write(b"out")
        assert cl.channel("stdout").read(timeout=5) == b"out"
        assert websocket.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="   # RFC 6455
    finally:
        cl.close()
        srv.close()


def test_websocket_unread_channel_never_blocks() -> None:
    a, b = socket.socketpair()
    srv = websocket.WSConnection(a, remotecommand.V4, use={"stdout"})
    cl = websocket.WSConnection(b, remotecommand.V4, client=True)
    srv.start()
    cl.start()
    try:
        for _ in range(300):   # more than a channel's queue holds: dropped, the reader goes on
            cl.channel("stdin").write(b"ignored")
        cl.channel("stdout").write(b"read")
        assert srv.channel("stdout").read(timeout=5) == b"read"
    finally:
        cl.close()
        srv.close()


def test_resize_messages_and_status() -> None:
    sizes, rest = remotecommand.parse_sizes(b'{"Width":80,"Height":24}{"Width":100, "Height":30}{"Wid')
    assert sizes == [(80, 24), (100, 30)] and rest == b'{"Wid'
    ok = remotecommand.status_json(0)
    assert json.loads(ok)["status"] == "Success"
    assert client._exit_code(remotecommand.V4, ok) == 0
    assert client._exit_code(remotecommand.V4, remotecommand.status_json(42, description="[false]")) == 42
    with pytest.raises(K8sxError, match="boom"):
        client._exit_code(remotecommand.V4, remotecommand.status_json(None, error="boom"))
    with pytest.raises(K8sxError, match="boom"):
        client._exit_code(remotecommand.V2, b"boom")
    assert remotecommand.expected_channels(
        remotecommand.CommandTarget("exec", True, True, True, True, lambda: None),  # type: ignore[arg-type,return-value]
        remotecommand.V4) == {"error", "stdin", "stdout", "resize"}


def test_stream_address_is_configurable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = StreamServer(f"127.0.0.1:{port}")
    srv.start()
    try:
        assert srv.url("exec", object()).startswith(f"http://127.0.0.1:{port}/exec/")
    finally:
        srv.stop()
    d = tempfile.mkdtemp(prefix="k8sxtx-")
    try:
        with open(os.path.join(d, "c.toml"), "w") as f:
            f.write('stream_address = "127.0.0.1:10999"\n')
        assert load_config(os.path.join(d, "c.toml")).stream_address == "127.0.0.1:10999"
        r = subprocess.run([bin_path("k8sx"), "runtime", "serve", "--listen", f"unix://{d}/k8sxtx.sock", "--root",
                            f"{d}/root", "--state", f"{d}/state", "--stream-address", "nonsense"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "stream address 'nonsense'" in r.stderr and "Traceback" not in r.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)
