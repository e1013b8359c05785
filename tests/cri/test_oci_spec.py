"""The OCI spec built from a CRI config, checked as data (no runc): the rules that the container
tests cannot see directly (profile contents, path confinement, namespace entries, errors)."""

from __future__ import annotations

import os

import pytest

from k8sx.cri.oci import ContainerSpecInput, Device, Mount, Namespaces, Resources, Seccomp, Security
from k8sx.cri.oci import seccomp as sc
from k8sx.cri.oci.spec import DEFAULT_MASKED_PATHS, build_spec, command_line, environment, exec_process
from k8sx.cri.oci.users import resolve_in_root, resolve_user
from k8sx.errors import K8sxError


@pytest.fixture
def root(tmp_path: object) -> str:
    r = str(tmp_path)
    os.makedirs(os.path.join(r, "etc"))
    with open(os.path.join(r, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0::/root:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n")
    with open(os.path.join(r, "etc", "group"), "w") as f:
        f.write("root:x:0:\nweb:x:33:\nlog:x:4:web\n")
    return r


def _inp(**kw: object) -> ContainerSpecInput:
    kw.setdefault("command", ["sh"])
    return ContainerSpecInput(id="k8sxto-spec", image_layers=[], log_path="/tmp/k8sxto.log", **kw)  # type: ignore[arg-type]


def _allowed(profile: dict, name: str) -> bool:
    return any(name in r["names"] and r["action"] == "SCMP_ACT_ALLOW" and not r.get("args")
               for r in profile["syscalls"])


def test_runtime_default_profile() -> None:
    p = sc.runtime_default({"CAP_CHOWN"}, machine="x86_64")
    assert p["defaultAction"] == "SCMP_ACT_ERRNO" and p["defaultErrnoRet"] == 1
    assert p["architectures"][0] == "SCMP_ARCH_X86_64"
    for name in ("read", "execve", "arch_prctl", "clock_gettime"):
        assert _allowed(p, name), name
    for name in ("keyctl", "add_key", "pivot_root", "kexec_load", "mount", "unshare", "setns", "ptrace_x"):
        assert not _allowed(p, name), name
    clone = [r for r in p["syscalls"] if r["names"] == ["clone"]]
    assert clone and clone[0]["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"     # no new namespaces
    assert {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38} in p["syscalls"]
    admin = sc.runtime_default({"CAP_SYS_ADMIN"}, machine="x86_64")
    assert _allowed(admin, "mount") and _allowed(admin, "clone") and not _allowed(admin, "keyctl")
    assert not any(r["names"] == ["clone3"] and r["action"] != "SCMP_ACT_ALLOW" for r in admin["syscalls"])


def test_localhost_profile_errors(tmp_path: object) -> None:
    with pytest.raises(K8sxError, match="must be absolute"):
        sc.localhost("profile.json")
    bad = os.path.join(str(tmp_path), "bad.json")
    with open(bad, "w") as f:
        f.write("{not json")
    with pytest.raises(K8sxError, match="not JSON"):
        sc.localhost(bad)


def test_resolve_in_root_stays_inside(root: str) -> None:
    os.symlink("/../../../../etc/shadow", os.path.join(root, "etc", "evil"))
    os.symlink("../../..", os.path.join(root, "up"))
    assert resolve_in_root(root, "/etc/evil") == os.path.join(root, "etc", "shadow")
    assert resolve_in_root(root, "/up/etc/passwd") == os.path.join(root, "etc", "passwd")
    # A passwd that is a symlink to the host's file is read from the rootfs, not the host.
    os.rename(os.path.join(root, "etc", "passwd"), os.path.join(root, "etc", "passwd.real"))
    os.symlink("/etc/passwd.real", os.path.join(root, "etc", "passwd"))
    assert resolve_user(root, "web").uid == 33
    os.unlink(os.path.join(root, "etc", "passwd"))
    os.symlink("/../../../../../etc/os-release", os.path.join(root, "etc", "passwd"))
    with pytest.raises(K8sxError, match="not found"):
        resolve_user(root, "web")          # the link leads to <root>/etc/os-release (absent), not the host's
    os.unlink(os.path.join(root, "etc", "passwd"))
    os.symlink("/etc/passwd", os.path.join(root, "etc", "passwd"))
    with pytest.raises(K8sxError, match="too many levels"):
        resolve_user(root, "web")


def test_user_resolution(root: str) -> None:
    u = resolve_user(root, "web", [1000])
    assert (u.uid, u.gid, u.additional_gids, u.home) == (33, 33, [33, 4, 1000], "/var/www")
    assert resolve_user(root, "").uid == 0
    assert (resolve_user(root, "77:5").uid, resolve_user(root, "77:5").gid) == (77, 5)


def test_argv_and_env_rules() -> None:
    cfg = {"Entrypoint": ["/ep"], "Cmd": ["c1"], "Env": ["PATH=/x", "A=image", "B=image"]}
    assert command_line(_inp(command=[], image_config=cfg)) == ["/ep", "c1"]
    assert command_line(_inp(command=[], args=["a"], image_config=cfg)) == ["/ep", "a"]
    assert command_line(_inp(command=["/cmd"], image_config=cfg)) == ["/cmd"]
    with pytest.raises(K8sxError, match="no command"):
        command_line(_inp(command=[]))
    env = environment(_inp(image_config=cfg, envs=[("B", "cri"), ("C", "cri")], hostname="h1"))
    assert env == ["HOSTNAME=h1", "PATH=/x", "A=image", "B=cri", "C=cri"]
    assert environment(_inp())[0].startswith("PATH=/usr/local/sbin:")


def test_spec_shape(root: str) -> None:
    s = build_spec(_inp(namespaces=Namespaces(network="/proc/self/ns/net", uts="/proc/self/ns/uts",
                                              pid="host"), hostname="pod1", cgroup_parent="/kubepods/pod1",
                        sysctls={"net.ipv4.ip_forward": "1"},
                        resources=Resources(memory_limit_in_bytes=1 << 26, hugepage_limits={"2MB": 0}),
                        security=Security(seccomp=Seccomp("RuntimeDefault"), no_new_privs=True),
                        annotations={"io.kubernetes.cri.container-type": "container"}), root)
    assert s["root"] == {"path": root, "readonly": False} and s["hostname"] == "pod1"
    types = {n["type"]: n.get("path") for n in s["linux"]["namespaces"]}
    assert types == {"mount": None, "network": "/proc/self/ns/net", "uts": "/proc/self/ns/uts"}
    assert s["linux"]["cgroupsPath"] == "/kubepods/pod1/k8sx-k8sxto-spec"
    assert s["linux"]["maskedPaths"] == DEFAULT_MASKED_PATHS and "seccomp" in s["linux"]
    assert s["linux"]["sysctl"] == {"net.ipv4.ip_forward": "1"}
    assert s["linux"]["resources"]["memory"]["limit"] == 1 << 26
    assert s["process"]["noNewPrivileges"] is True
    assert s["annotations"]["io.kubernetes.cri.container-type"] == "container"
    assert {m["destination"] for m in s["mounts"]} >= {"/proc", "/dev", "/dev/shm", "/sys", "/dev/pts"}
    pod = build_spec(_inp(namespaces=Namespaces(pid="pod", pid_path="/proc/1/ns/pid")), root)
    assert {"type": "pid", "path": "/proc/1/ns/pid"} in pod["linux"]["namespaces"]
    # A CRI mount replaces the default at the same place (kubelet's /dev/shm of the pod).
    shm = build_spec(_inp(mounts=[Mount(root, "/dev/shm")]), root)
    assert [m["type"] for m in shm["mounts"] if m["destination"] == "/dev/shm"] == ["bind"]
    proc = exec_process(s, ["ls"])
    assert proc["args"] == ["ls"] and proc["user"] == s["process"]["user"] and "oomScoreAdj" not in proc


def test_bad_input_is_a_clear_error(root: str) -> None:
    for kw, msg in [
        ({"cgroup_parent": "kubepods.slice"}, "cgroupfs"),
        ({"namespaces": Namespaces(pid="pod")}, "pid namespace path"),
        ({"working_dir": "rel"}, "absolute"),
        ({"mounts": [Mount(root, "relative")]}, "absolute"),
        ({"security": Security(seccomp=Seccomp("Bogus"))}, "unknown seccomp"),  # type: ignore[arg-type]
        ({"devices": [Device("/dev/k8sxto-none", "/dev/x")]}, "No such file"),
        ({"devices": [Device("/etc/hostname", "/dev/x")]}, "not a character or block device"),
    ]:
        with pytest.raises(K8sxError, match=msg):
            build_spec(_inp(**kw), root)
