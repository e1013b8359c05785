"""What a container may do, checked from inside real runc containers: users and groups from the
image's /etc/passwd and /etc/group, capabilities, seccomp, masked/read-only paths, read-only rootfs,
mounts, devices and privileged mode."""

from __future__ import annotations

import json
import os
import re
import tempfile

import pytest
from ocitools import OciEnv

from k8sx.cri.oci import Device, Mount, Seccomp, Security
from k8sx.cri.oci.spec import CAP_NAMES, DEFAULT_CAPABILITIES, all_capabilities
from k8sx.errors import K8sxError


def _run_out(oci: OciEnv, cmd: list[str], **kw: object) -> tuple[int, str]:
    inp = oci.spec(cmd, **kw)  # type: ignore[arg-type]
    oci.rt.create(inp)
    oci.rt.start(inp.id)
    st = oci.wait_exit(inp.id)
    return st.exit_code, oci.output(inp.id)


def _caps(out: str, field: str = "CapEff") -> set[str]:
    mask = int(re.search(rf"^{field}:\s*([0-9a-f]+)$", out, re.M).group(1), 16)  # type: ignore[union-attr]
    return {f"CAP_{n}" for i, n in enumerate(CAP_NAMES) if mask >> i & 1}


def test_users_and_groups_resolved_in_the_image(oci: OciEnv) -> None:
    cases = [
        (Security(), {}, "uid=0(root) gid=0(root) groups=0(root)"),
        (Security(run_as_username="alice"), {},
         "uid=1000(alice) gid=1000(alice) groups=10(wheel),50(staff),1000(alice)"),
        (Security(run_as_user=1001), {}, "uid=1001(bob) gid=1001(bob) groups=50(staff),1001(bob)"),
        (Security(run_as_user=1001, run_as_group=10, supplemental_groups=[4242]), {},
         "uid=1001(bob) gid=10(wheel) groups=10(wheel),50(staff),4242"),
        (Security(run_as_user=4321), {}, "uid=4321 gid=0(root) groups=0(root)"),   # not in passwd: gid 0
        (Security(), {"User": "bob"}, "uid=1001(bob) gid=1001(bob) groups=50(staff),1001(bob)"),
        (Security(), {"User": "alice:staff"}, "uid=1000(alice) gid=50(staff) groups=10(wheel),50(staff)"),
        (Security(), {"User": "1000:1001"}, "uid=1000(alice) gid=1001(bob) groups=10(wheel),50(staff),1001(bob)"),
        (Security(run_as_username="bob"), {"User": "alice"}, "uid=1001(bob) gid=1001(bob) groups=50(staff),1001(bob)"),
    ]
    for sec, image_cfg, want in cases:
        code, out = _run_out(oci, ["id"], security=sec, image_config=image_cfg)
        assert (code, out) == (0, want), (sec, image_cfg)
    with pytest.raises(K8sxError, match="specified without user"):
        oci.rt.create(oci.spec(["id"], security=Security(run_as_group=5)))
    with pytest.raises(K8sxError, match="group 'nope' not found"):
        oci.rt.create(oci.spec(["id"], image_config={"User": "alice:nope"}))


def test_capabilities_default_add_drop_all(oci: OciEnv) -> None:
    status = ["cat", "/proc/self/status"]
    _, out = _run_out(oci, status)
    assert _caps(out) == set(DEFAULT_CAPABILITIES) == _caps(out, "CapBnd")
    _, out = _run_out(oci, status, security=Security(add_capabilities=["NET_ADMIN", "CAP_SYS_TIME"],
                                                     drop_capabilities=["chown"]))
    assert _caps(out) == set(DEFAULT_CAPABILITIES) - {"CAP_CHOWN"} | {"CAP_NET_ADMIN", "CAP_SYS_TIME"}
    _, out = _run_out(oci, status, security=Security(drop_capabilities=["ALL"], add_capabilities=["KILL"]))
    assert _caps(out) == {"CAP_KILL"}
    _, out = _run_out(oci, status, security=Security(add_capabilities=["ALL"], drop_capabilities=["SYS_ADMIN"]))
    assert _caps(out) == set(all_capabilities()) - {"CAP_SYS_ADMIN"}
    # A capability really works: without NET_ADMIN "ip link set lo down" is refused.
    code, out = _run_out(oci, ["ip", "link", "set", "lo", "mtu", "1300"])
    assert code != 0 and "not permitted" in out
    code, _ = _run_out(oci, ["ip", "link", "set", "lo", "mtu", "1300"],
                       security=Security(add_capabilities=["NET_ADMIN"]))
    assert code == 0
    with pytest.raises(K8sxError, match="unknown capability"):
        oci.rt.create(oci.spec(["true"], security=Security(add_capabilities=["FLY"])))


def test_seccomp_runtime_default_unconfined_and_localhost(oci: OciEnv) -> None:
    code, out = _run_out(oci, ["probe"], security=Security(seccomp=Seccomp("Unconfined")))
    assert (code, out) == (0, "keyctl: ok")
    code, out = _run_out(oci, ["probe"], security=Security(seccomp=Seccomp("RuntimeDefault")))
    assert (code, out) == (1, "keyctl: Operation not permitted")
    _, out = _run_out(oci, ["grep", "^Seccomp:", "/proc/self/status"],
                      security=Security(seccomp=Seccomp("RuntimeDefault")))
    assert out.split() == ["Seccomp:", "2"]
    # Capability-gated syscalls: with SYS_ADMIN, mount works under runtime/default; without, EPERM.
    mnt = ["sh", "-c", "mkdir -p /m && mount -t tmpfs none /m && echo mounted"]
    code, out = _run_out(oci, mnt, security=Security(seccomp=Seccomp("RuntimeDefault"),
                                                     add_capabilities=["SYS_ADMIN"]))
    assert (code, out) == (0, "mounted")
    code, out = _run_out(oci, ["unshare", "-u", "true"], security=Security(seccomp=Seccomp("RuntimeDefault")))
    assert code != 0 and "not permitted" in out
    with tempfile.NamedTemporaryFile("w", prefix="k8sxto-seccomp-", suffix=".json") as f:
        json.dump({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}, f)
        f.flush()
        code, out = _run_out(oci, ["mkdir", "/made"], security=Security(seccomp=Seccomp("Localhost", f.name)))
        assert code != 0 and "not permitted" in out
    with pytest.raises(K8sxError, match="seccomp localhost profile"):
        oci.rt.create(oci.spec(["true"], security=Security(seccomp=Seccomp("Localhost", "/no/k8sxto.json"))))


def test_masked_and_readonly_paths(oci: OciEnv) -> None:
    script = ("wc -c < /proc/timer_list; ls /sys/firmware | wc -l; "
              "grep -E ' /proc/(sys|bus) ' /proc/self/mountinfo | grep -c ' ro,'")
    _, out = _run_out(oci, ["sh", "-c", script])
    assert out.split("\n") == ["0", "0", "2"]
    _, out = _run_out(oci, ["sh", "-c", script], security=Security(masked_paths=[], readonly_paths=[]))
    lines = out.split("\n")
    assert int(lines[0]) > 0 and lines[2] == "0", out


def test_readonly_rootfs(oci: OciEnv) -> None:
    code, out = _run_out(oci, ["sh", "-c", "touch /x && echo wrote"], security=Security(readonly_rootfs=True))
    assert code != 0 and "Read-only file system" in out
    code, out = _run_out(oci, ["sh", "-c", "touch /x && echo wrote"])
    assert (code, out) == (0, "wrote")


def test_bind_mounts_and_devices(oci: OciEnv) -> None:
    host = os.path.join(oci.dir, "share")
    os.makedirs(host)
    with open(os.path.join(host, "in"), "w") as f:
        f.write("from-host\n")
    mounts = [Mount(host, "/data"), Mount(host, "/ro", readonly=True)]
    code, out = _run_out(oci, ["sh", "-c", "cat /data/in; echo x > /data/out; echo y > /ro/no || echo refused; "
                                           "head -c 3 /dev/k8sxto-zero | wc -c"],
                         mounts=mounts, devices=[Device("/dev/zero", "/dev/k8sxto-zero", "r")])
    assert code == 0 and sorted(out.split("\n")) == sorted(
        ["from-host", "sh: can't create /ro/no: Read-only file system", "refused", "3"]), out
    with open(os.path.join(host, "out")) as f:
        assert f.read() == "x\n"
    # Permissions are enforced by the devices cgroup (loop-control is not among runc's defaults).
    opener = ["sh", "-c", ": < /dev/k8sxto-lc && echo opened"]
    code, out = _run_out(oci, opener, devices=[Device("/dev/loop-control", "/dev/k8sxto-lc", "w")])
    assert code != 0 and "not permitted" in out, out
    code, out = _run_out(oci, opener, devices=[Device("/dev/loop-control", "/dev/k8sxto-lc", "rw")])
    assert (code, out) == (0, "opened")
    with pytest.raises(K8sxError, match="not shared"):
        oci.rt.create(oci.spec(["true"], mounts=[Mount(host, "/d", propagation="rshared")]))


def test_privileged(oci: OciEnv) -> None:
    script = "cat /proc/self/status; wc -c < /proc/timer_list; ls /dev | wc -l; touch /sys/k8sxto 2>&1 || true"
    code, out = _run_out(oci, ["sh", "-c", script], security=Security(privileged=True,
                                                                       seccomp=Seccomp("RuntimeDefault")))
    assert code == 0
    assert _caps(out) == set(all_capabilities())
    assert re.search(r"^Seccomp:\s+0$", out, re.M)          # privileged means unconfined
    lines = out.split("\n")
    assert int(lines[-3]) > 0 and int(lines[-2]) > 10       # timer_list visible, the host's devices
