"""The CRI server skeleton on a real unix socket: socket hygiene, shutdown, gRPC statuses, endpoint resolution.

Every server here is a real ``k8sx runtime serve`` subprocess in a k8sxtc-* temp dir; clients are our CLI
verbs (subprocesses) or ``k8sx.cri.client.Client`` over the socket.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import socket
import stat
import subprocess
import sys

import pytest
from critools import K8SX, k8sx, serving, tempdir

from k8sx.cri import client as cri_client
from k8sx.cri.client import Client, ConnectError, RPCError, Settings, resolve
from k8sx.errors import UsageError


@pytest.fixture
def tmp():
    d = tempdir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    d = tempdir()
    try:
        with serving(d) as s:
            yield s
    finally:
        shutil.rmtree(d, ignore_errors=True)


def connect(endpoint: str) -> Client:
    return Client(Settings(runtime_endpoint=endpoint, timeout=5))


def test_socket_is_0660(server):
    st = os.stat(server.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660


def test_version_verb_prints_crictl_format(server):
    r = k8sx(server.endpoint, "version")
    assert r.returncode == 0, r.stderr
    import k8sx as pkg

    assert r.stdout == ("Version:  0.1.0\nRuntimeName:  k8sx\n"
                        f"RuntimeVersion:  {pkg.__version__}\nRuntimeApiVersion:  v1\n")


def test_status_codes(server):
    from k8sx.cri.api.runtime.v1 import api_pb2

    with connect(server.endpoint) as c:
        for call in (lambda: c.image_status(""), lambda: c.pull_image(""), lambda: c.remove_image("")):
            with pytest.raises(RPCError) as e:
                call()
            assert e.value.code == "InvalidArgument", e.value.message
        # a raw request without the image field at all
        with pytest.raises(RPCError) as e:
            c.call(c.image.ImageStatus, api_pb2.ImageStatusRequest(), "status")
        assert e.value.code == "InvalidArgument"
        with pytest.raises(RPCError) as e:
            c.pull_image("Not/A/Valid:Ref!")
        assert e.value.code == "InvalidArgument" and "Not/A/Valid" in e.value.details
        # absent image: empty status (not an error) and removing it succeeds, as the CRI asks
        assert not c.image_status("127.0.0.1:1/k8sxtc/absent:1").HasField("image")
        c.remove_image("127.0.0.1:1/k8sxtc/absent:1")
        assert c.list_images() == []
        # the RuntimeService shares the socket: a fresh server has no containers
        assert list(c.list_containers()) == []
        fs = c.image_fs_info().image_filesystems
        assert len(fs) == 1 and fs[0].fs_id.mountpoint == os.path.join(server.root, "images")
        assert fs[0].timestamp > 0
    # the server survived all of that
    assert k8sx(server.endpoint, "version").returncode == 0


def test_concurrent_calls(server):
    with connect(server.endpoint) as c, concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: c.version().runtime_name, range(200)))
    assert answers == ["k8sx"] * 200


def test_sigterm_stops_gracefully_and_removes_socket(tmp):
    with serving(tmp) as s:
        assert k8sx(s.endpoint, "version").returncode == 0
    # serving() asserted: exit status 0, socket gone, no traceback in the log
    assert "got SIGTERM" in s.log_text()


def test_refuses_to_steal_a_live_socket(server):
    r = subprocess.run([K8SX, "runtime", "serve", "--listen", server.endpoint, "--root", server.root,
                        "--state", server.root], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "another server is already listening" in r.stderr
    assert "Traceback" not in r.stderr
    assert k8sx(server.endpoint, "version").returncode == 0


def test_regular_file_at_socket_path(tmp):
    path = os.path.join(tmp, "k8sxtc.sock")
    with open(path, "w") as f:
        f.write("not a socket")
    r = subprocess.run([K8SX, "runtime", "serve", "--listen", f"unix://{path}", "--root", f"{tmp}/root",
                        "--state", f"{tmp}/state"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "is not a socket" in r.stderr and "Traceback" not in r.stderr
    with open(path) as f:
        assert f.read() == "not a socket"


def test_stale_socket_of_a_killed_server_is_replaced(tmp):
    path = os.path.join(tmp, "k8sxtc.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)  # bound, never listening, closed without unlink: what kill -9 leaves
    s.close()
    with serving(tmp) as served:
        assert k8sx(served.endpoint, "version").returncode == 0


def test_config_file_and_bad_settings(tmp):
    sock = os.path.join(tmp, "k8sxtc-conf.sock")
    conf = os.path.join(tmp, "serve.toml")
    with open(conf, "w") as f:
        f.write(f'listen = "unix://{sock}"\nroot = "{tmp}/r"\nstate = "{tmp}/s"\ngrace_period = 1.0\n')
    proc = subprocess.Popen([K8SX, "runtime", "serve", "--config", conf], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        from critools import stop, wait_for_socket

        wait_for_socket(sock, proc)
        assert k8sx(f"unix://{sock}", "version").returncode == 0
        assert os.path.isdir(f"{tmp}/r/images")
    finally:
        assert stop(proc) == 0
    with open(conf, "a") as f:
        f.write("k8sxtc_bogus = 1\n")
    r = subprocess.run([K8SX, "runtime", "serve", "--config", conf], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "unknown setting 'k8sxtc_bogus'" in r.stderr
    r = subprocess.run([K8SX, "runtime", "serve", "--listen", "tcp://127.0.0.1:1", "--root", f"{tmp}/r"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "only unix sockets" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([K8SX, "runtime", "serve", "--listen", f"unix://{tmp}/k8sxtc-x.sock", "--root",
                        f"{conf}/root"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stderr.startswith(f"Error: cannot create {conf}/root: Not a directory")
    r = subprocess.run([K8SX, "runtime", "serve", "--listen", f"unix://{tmp}/k8sxtc-x.sock", "--root", "rel"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--root must be an absolute path" in r.stderr


def test_unreachable_endpoint_is_one_line(tmp):
    ep = f"unix://{tmp}/k8sxtc-nobody.sock"
    for verb in (["version"], ["images"], ["pull", "busybox"], ["imagefsinfo"], ["rmi", "x"]):
        r = k8sx(ep, *verb)
        assert r.returncode == 1
        assert r.stderr.startswith(f"Error: connect to {ep}: No such file or directory\n"), r.stderr
    # a socket nobody accepts on
    path = f"{tmp}/k8sxtc-refused.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()
    r = k8sx(f"unix://{path}", "version")
    assert r.returncode == 1 and r.stderr.startswith(f"Error: connect to unix://{path}: Connection refused")


def test_endpoint_from_env_config_file_and_flags(server, tmp):
    env = dict(os.environ, CONTAINER_RUNTIME_ENDPOINT=server.endpoint)
    assert k8sx(None, "version", env=env).returncode == 0
    conf = os.path.join(tmp, "crictl.yaml")
    with open(conf, "w") as f:
        f.write(f"runtime-endpoint: {server.endpoint}\ntimeout: 5\n")
    assert k8sx(None, "-c", conf, "version").returncode == 0
    env = dict(os.environ, CRI_CONFIG_FILE=conf)
    assert k8sx(None, "version", env=env).returncode == 0
    # the flag beats the environment, which beats the file
    bad = f"unix://{tmp}/k8sxtc-nobody.sock"
    env = dict(os.environ, CONTAINER_RUNTIME_ENDPOINT=bad, CRI_CONFIG_FILE=conf)
    assert k8sx(None, "version", env=env).returncode == 1
    assert k8sx(server.endpoint, "version", env=env).returncode == 0
    # image verbs use the image endpoint, which defaults to the runtime endpoint
    env = dict(os.environ, IMAGE_SERVICE_ENDPOINT=server.endpoint)
    assert k8sx(bad, "images", env=env).returncode == 0
    assert k8sx(bad, "version", env=env).returncode == 1
    r = k8sx(None, "-i", bad, "-r", server.endpoint, "imagefsinfo")
    assert r.returncode == 1 and bad in r.stderr
    # an explicitly named config file must exist and be valid
    r = k8sx(None, "-c", f"{tmp}/k8sxtc-missing.yaml", "version")
    assert r.returncode == 1 and "load config file" in r.stderr
    with open(conf, "a") as f:
        f.write("k8sxtc-bogus: 1\n")
    r = k8sx(None, "-c", conf, "version")
    assert r.returncode == 1 and "'k8sxtc-bogus' is not valid" in r.stderr


def test_resolve_rules(tmp):
    conf = os.path.join(tmp, "crictl.yaml")
    with open(conf, "w") as f:
        f.write("runtime-endpoint: unix:///k8sxtc/file.sock\nimage-endpoint: unix:///k8sxtc/img.sock\n"
                "timeout: 7\ndebug: true\n")
    s = resolve(config=conf, env={})
    assert (s.runtime_endpoint, s.image, s.timeout, s.debug) == (
        "unix:///k8sxtc/file.sock", "unix:///k8sxtc/img.sock", 7.0, True)
    s = resolve(config=conf, env={"CONTAINER_RUNTIME_ENDPOINT": "unix:///k8sxtc/env.sock"}, timeout="1m30s")
    assert s.runtime_endpoint == "unix:///k8sxtc/env.sock" and s.timeout == 90.0
    s = resolve(runtime_endpoint="/k8sxtc/flag.sock", config=conf, env={}, timeout="0")
    assert s.runtime_endpoint == "/k8sxtc/flag.sock" and s.timeout == cri_client.DEFAULT_TIMEOUT
    assert cri_client.canonical("/k8sxtc/flag.sock") == "unix:///k8sxtc/flag.sock"
    # no config anywhere: nothing set, so the defaults are tried (k8sx's socket first, then crictl's)
    if not os.path.exists(cri_client.DEFAULT_CONFIG):
        s = resolve(env={}, program_dir=os.path.join(tmp, "k8sxtc-empty"))
        assert s.runtime_endpoint is None and s.image is None and s.config_file is None
        # crictl's fallback: a crictl.yaml next to the program
        assert resolve(env={}, program_dir=tmp).runtime_endpoint == "unix:///k8sxtc/file.sock"
    assert cri_client.DEFAULT_ENDPOINTS[0] == "unix:///run/k8sx/k8sx.sock"
    assert "unix:///run/containerd/containerd.sock" in cri_client.DEFAULT_ENDPOINTS
    assert cri_client.parse_duration("500ms") == 0.5
    for bad in ("2x", "fast", ""):
        with pytest.raises(UsageError):
            cri_client.parse_duration(bad)
    for bad in ("tcp://127.0.0.1:1", "unix://relative.sock", "relative.sock"):
        with pytest.raises(UsageError):
            resolve(runtime_endpoint=bad, env={})


def test_defaults_are_tried_in_order(server, tmp, monkeypatch):
    nobody = f"unix://{tmp}/k8sxtc-nobody.sock"
    monkeypatch.setattr(cri_client, "DEFAULT_ENDPOINTS", (nobody, server.endpoint))
    with Client(Settings()) as c:
        assert c.version().runtime_name == "k8sx"
        assert c.runtime_endpoint == server.endpoint
    monkeypatch.setattr(cri_client, "DEFAULT_ENDPOINTS", (nobody,))
    with Client(Settings()) as c, pytest.raises(ConnectError) as e:
        c.version()
    assert "none of the defaults answered" in e.value.message and nobody in e.value.message


def test_cli_group_does_not_import_grpc():
    code = ("import sys, k8sx.cli.main; "
            "bad = [m for m in ('grpc', 'google.protobuf', 'k8sx.cri.api') if m in sys.modules]; print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


@pytest.mark.skipif(shutil.which("crictl") is None, reason="crictl (cri-tools v1.26.1) is not packaged in Debian")
def test_crictl_talks_to_our_server(server):
    base = ["crictl", "--runtime-endpoint", server.endpoint, "--image-endpoint", server.endpoint, "--timeout", "5s"]
    r = subprocess.run(base + ["version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "RuntimeName:  k8sx" in r.stdout, r.stderr
    for verb in (["images"], ["images", "-o", "json"], ["imagefsinfo"]):
        r = subprocess.run(base + verb, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    r = subprocess.run(base + ["inspecti", "127.0.0.1:1/k8sxtc/absent:1"], capture_output=True, text=True)
    assert r.returncode == 1 and "no such image" in r.stderr


def test_endpoint_completion_offers_present_sockets(server, tmp, monkeypatch):
    from k8sx.cli import complete

    monkeypatch.setattr(cri_client, "DEFAULT_ENDPOINTS", (server.endpoint, f"unix://{tmp}/k8sxtc-absent.sock"))
    for words in (["runtime", "-r"], ["runtime", "--image-endpoint"]):
        found, _ = complete.candidates(words, "")
        assert [v for v, _ in found if "k8sxtc" in v] == [server.endpoint]
    found, _ = complete.candidates(["runtime", "-r"], "unix:///nowhere")
    assert found == []


def test_timeout_flag_bounds_a_silent_endpoint(tmp):
    import time

    path = f"{tmp}/k8sxtc-silent.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
        s.listen(8)  # accepts connections (in the backlog) but never speaks gRPC
        start = time.monotonic()
        r = subprocess.run([K8SX, "runtime", "-r", f"unix://{path}", "-t", "1s", "version"], capture_output=True,
                           text=True, timeout=30)
        elapsed = time.monotonic() - start
    assert r.returncode == 1 and "code = DeadlineExceeded" in r.stderr and "Traceback" not in r.stderr
    assert elapsed < 5
