"""``k8sx runtime pull|images|inspecti|rmi|imagefsinfo`` against a real ``k8sx runtime serve`` and a real registry.

Images are built by the tests (``k8sx.cri.images.build``) and pushed to Debian's docker-registry on
loopback (the ``registry``/``auth_registry`` fixtures of tests/cri/conftest.py); every verb runs as
the real CLI in a subprocess and is checked for crictl's output and exit status.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil

import pytest
import yaml
from critools import k8sx, serving, tempdir
from imagetools import AUTH_PASSWORD, AUTH_USER, layer_tar

from k8sx.cri.images import build
from k8sx.cri.images.snapshots import chain_ids


@pytest.fixture(scope="module")
def server():
    d = tempdir()
    try:
        with serving(d) as s:
            yield s
    finally:
        shutil.rmtree(d, ignore_errors=True)


def two_layer_image(tag: str) -> build.BuiltImage:
    return build.make_image([layer_tar({"etc/": None, "etc/k8sxtc": tag}), layer_tar({"data.txt": tag * 100})],
                            {"Cmd": ["sh"], "User": "1002", "Env": ["K8SXTC=" + tag]})


def ok(r):
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_pull_list_inspect_remove(server, registry):
    img = two_layer_image("a")
    ref = registry.push(registry.repo("verbs") + ":v1", img)
    name, tag = ref.rsplit(":", 1)
    ep = server.endpoint

    assert ok(k8sx(ep, "pull", ref)) == f"Image is up to date for {img.id}\n"

    # table: IMAGE TAG IMAGE ID SIZE, the id cut to 13 characters, go-units size
    out = ok(k8sx(ep, "images"))
    header, *rows = out.splitlines()
    assert header.split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
    row = next(r.split() for r in rows if r.startswith(name + " "))
    assert row[:3] == [name, tag, img.id[7:20]]
    assert re.fullmatch(r"\d+(\.\d+)?(B|kB|MB)", row[3])

    assert img.id in ok(k8sx(ep, "images", "-q")).splitlines()
    assert img.id in ok(k8sx(ep, "images", "--no-trunc"))
    digest_row = next(r.split() for r in ok(k8sx(ep, "images", "--digests")).splitlines() if r.startswith(name))
    assert digest_row[2] == img.manifest.digest[7:20]

    listed = json.loads(ok(k8sx(ep, "images", "-o", "json")))["images"]
    mine = next(i for i in listed if i["id"] == img.id)
    assert mine["repoTags"] == [ref]
    assert mine["repoDigests"] == [f"{name}@{img.manifest.digest}"]
    assert int(mine["size"]) > 0 and mine["uid"] == {"value": "1002"} and mine["username"] == ""
    assert yaml.safe_load(ok(k8sx(ep, "images", "-o", "yaml")))["images"] == listed

    verbose = ok(k8sx(ep, "images", "-v", ref))
    assert f"ID: {img.id}\nRepoTags: {ref}\nRepoDigests: {name}@{img.manifest.digest}\n" in verbose
    assert "Uid: 1002\n" in verbose

    # the REPOSITORY[:TAG] filter: by repository, by exact tag, by id prefix; others excluded
    for selector in (name, ref, img.id[7:19], f"{name}@{img.manifest.digest}"):
        assert ok(k8sx(ep, "images", "-q", selector)).split() == [img.id], selector
    assert ok(k8sx(ep, "images", "-q", f"{name}:other")) == ""

    doc = json.loads(ok(k8sx(ep, "inspecti", ref)))
    assert doc["status"]["id"] == img.id and doc["status"]["repoTags"] == [ref]
    assert doc["info"]["imageSpec"]["config"]["User"] == "1002"
    assert doc["info"]["imageSpec"] == json.loads(img.config.data)
    diff_ids = json.loads(img.config.data)["rootfs"]["diff_ids"]
    assert doc["info"]["chainID"] == chain_ids(diff_ids)[-1] != diff_ids[-1]
    quiet = json.loads(ok(k8sx(ep, "inspecti", "-q", img.id[7:19])))
    assert quiet["status"]["id"] == img.id and "info" not in quiet
    table = ok(k8sx(ep, "inspecti", "-q", "-o", "table", ref))
    assert table.startswith(f"ID: {img.id}\nTag: {ref}\nDigest: {name}@{img.manifest.digest}\nSize: ")

    fs = json.loads(ok(k8sx(ep, "imagefsinfo")))["status"]
    assert fs["fsId"]["mountpoint"] == os.path.join(server.root, "images")
    assert int(fs["usedBytes"]["value"]) > 0 and int(fs["inodesUsed"]["value"]) > 0
    assert "UsedBytes: " in ok(k8sx(ep, "imagefsinfo", "-o", "table"))

    assert ok(k8sx(ep, "rmi", ref)) == f"Deleted: {ref}\n"
    assert img.id not in ok(k8sx(ep, "images", "-q"))
    r = k8sx(ep, "rmi", ref)
    assert r.returncode == 1 and f"no such image {ref}" in r.stderr
    assert "unable to remove the image(s)" in r.stderr
    r = k8sx(ep, "inspecti", ref)
    assert r.returncode == 1 and "no such image" in r.stderr


def test_pull_by_digest_shows_none_tag(server, registry):
    img = two_layer_image("d")
    ref = registry.push(registry.repo("bydigest") + ":v1", img)
    name = ref.rsplit(":", 1)[0]
    by_digest = f"{name}@{img.manifest.digest}"
    ok(k8sx(server.endpoint, "pull", by_digest))
    row = next(r.split() for r in ok(k8sx(server.endpoint, "images")).splitlines() if r.startswith(name))
    assert row[:3] == [name, "<none>", img.id[7:20]]
    assert ok(k8sx(server.endpoint, "rmi", img.id)) == f"Deleted: {by_digest}\n"


def test_rmi_all(server, registry):
    refs = []
    for t in ("x", "y"):
        img = two_layer_image(t)
        refs.append(registry.push(registry.repo("rmiall") + ":v1", img))
        ok(k8sx(server.endpoint, "pull", refs[-1]))
    out = ok(k8sx(server.endpoint, "rmi", "-a"))
    for ref in refs:
        assert f"Deleted: {ref}\n" in out
    assert ok(k8sx(server.endpoint, "images", "-q")) == ""


def test_pull_with_credentials(server, auth_registry):
    img = two_layer_image("auth")
    ref = auth_registry.push(auth_registry.repo("private") + ":v1", img)
    ep = server.endpoint

    r = k8sx(ep, "pull", ref)
    assert r.returncode == 1 and r.stderr.startswith("Error: pulling image: rpc error: code = ")
    r = k8sx(ep, "pull", "--creds", f"{AUTH_USER}:wrong-password", ref)
    assert r.returncode == 1 and "rpc error" in r.stderr
    assert ok(k8sx(ep, "pull", "--creds", f"{AUTH_USER}:{AUTH_PASSWORD}", ref)) == f"Image is up to date for {img.id}\n"
    ok(k8sx(ep, "rmi", ref))
    token = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
    ok(k8sx(ep, "pull", "--auth", token, ref))
    ok(k8sx(ep, "rmi", ref))
    env = dict(os.environ, CRICTL_CREDS=f"{AUTH_USER}:{AUTH_PASSWORD}")
    ok(k8sx(ep, "pull", ref, env=env))
    ok(k8sx(ep, "rmi", ref))

    r = k8sx(ep, "pull", "--creds", "u:p", "--auth", token, ref)
    assert r.returncode == 2 and "both `--creds` and `--auth` are specified" in r.stderr
    r = k8sx(ep, "pull", "--creds", ":p", ref)
    assert r.returncode == 2 and "username can't be empty" in r.stderr


def test_pull_errors_map_to_statuses(server, registry):
    ep = server.endpoint
    r = k8sx(ep, "pull", "127.0.0.1:1/k8sxtc/UPPER:case")
    assert r.returncode == 1
    assert r.stderr.startswith("Error: pulling image: rpc error: code = InvalidArgument desc = ")
    r = k8sx(ep, "pull", registry.repo("missing") + ":nope")
    assert r.returncode == 1 and "code = NotFound" in r.stderr
    r = k8sx(ep, "pull", "-a", "novalue", registry.repo("missing") + ":nope")
    assert r.returncode == 2 and "must be key=value" in r.stderr


def test_pull_with_pod_config_and_annotations(server, registry, tmp_path):
    img = two_layer_image("pod")
    ref = registry.push(registry.repo("podcfg") + ":v1", img)
    pod = tmp_path / "pod.yaml"
    pod.write_text("metadata:\n  name: k8sxtc\n  namespace: k8sxtc\n  uid: k8sxtc-1\nlog_directory: /tmp\n")
    assert ok(k8sx(server.endpoint, "pull", "--pod-config", str(pod), "-a", "k8sxtc=1", ref)).endswith(img.id + "\n")
    ok(k8sx(server.endpoint, "rmi", ref))
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    r = k8sx(server.endpoint, "pull", "--pod-config", str(bad), ref)
    assert r.returncode == 2 and "expected an object" in r.stderr


def test_pull_shows_a_spinner_on_a_terminal_only(server, registry):
    import pty
    import subprocess

    from critools import K8SX

    img = two_layer_image("tty")
    ref = registry.push(registry.repo("tty") + ":v1", img)
    master, slave = pty.openpty()
    proc = subprocess.Popen([K8SX, "runtime", "-r", server.endpoint, "pull", ref], stdout=subprocess.PIPE,
                            stderr=slave, env=dict(os.environ, TERM="xterm", COLUMNS="100"))
    os.close(slave)
    tty = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        tty += chunk
    os.close(master)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert out.decode() == f"Image is up to date for {img.id}\n"  # stdout stays machine-readable
    text = tty.decode(errors="replace")
    assert f"pulled {ref} in " in text and "\x1b[" in text, text
    ok(k8sx(server.endpoint, "rmi", ref))


def test_concurrent_pulls_through_the_server_download_once(server, registry):
    """The server's thread pool runs pulls in parallel; the store still fetches each blob once."""
    import concurrent.futures

    from k8sx.cri.client import Client, Settings

    img = two_layer_image("conc")
    ref = registry.push(registry.repo("conc") + ":v1", img)
    other = registry.push(registry.repo("conc-other") + ":v1", two_layer_image("other"))
    with Client(Settings(runtime_endpoint=server.endpoint, timeout=30)) as c:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            ids = list(pool.map(lambda _: c.pull_image(ref), range(6)))
        assert ids == [img.id] * 6
        for layer in img.layers:
            assert registry.blob_gets(layer.digest) == 1
        # ListImages' own filter, server side (the CLI filters again on its side)
        c.pull_image(other)
        assert [i.id for i in c.list_images(ref)] == [img.id]
        assert [i.id for i in c.list_images(ref.rsplit(":", 1)[0])] == [img.id]
        assert len(c.list_images()) == 2
        for r in (ref, other):
            c.remove_image(r)
        assert c.list_images() == []


def test_serve_config_mirrors_and_docker_credentials(registry, auth_registry):
    """``serve --config``: registries_config (containerd's certs.d) and docker_config reach the image store."""
    d = tempdir()
    try:
        certs = os.path.join(d, "certs.d", "k8sxtc.invalid")
        os.makedirs(certs)
        with open(os.path.join(certs, "hosts.toml"), "w") as f:
            f.write(f'server = "http://{registry.host}"\n')
        token = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"auths": {auth_registry.host: {"auth": token}}}, f)
        conf = os.path.join(d, "serve.toml")
        with open(conf, "w") as f:
            f.write(f'registries_config = "{d}/certs.d"\ndocker_config = "{d}/config.json"\n')

        img = two_layer_image("mirror")
        path = registry.repo("mirrored").split("/", 1)[1] + ":v1"
        registry.push(path, img)
        private = two_layer_image("private")
        private_ref = auth_registry.push(auth_registry.repo("dockercfg") + ":v1", private)
        with serving(d, "--config", conf) as s:
            # k8sxtc.invalid does not resolve: only the mirror can serve it
            assert ok(k8sx(s.endpoint, "pull", f"k8sxtc.invalid/{path}")).endswith(img.id + "\n")
            assert ok(k8sx(s.endpoint, "images", "-q", f"k8sxtc.invalid/{path}")) == img.id + "\n"
            assert ok(k8sx(s.endpoint, "pull", private_ref)).endswith(private.id + "\n")  # no --creds
        with open(conf, "w") as f:
            f.write(f'registries_config = "{d}/config.json"\n')
        r = k8sx(None, "serve", "--config", conf, "--listen", f"unix://{d}/k8sxtc-bad.sock", "--root", f"{d}/root",
                 "--state", f"{d}/state")
        assert r.returncode == 1 and "not a directory" in r.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)
