"""Bad requests to the RuntimeService get the right gRPC code and a message, and never hurt the server.

Calls go straight through the generated stubs (no client-side checks in the way); after all of them
the same server still runs a pod. Also: Status reports NetworkReady false (and RunPodSandbox fails
with FailedPrecondition) while the CNI conf dir is empty, and the CLI turns an error into one line.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from runtimetools import BUSYBOX, RuntimeNode

from k8sx.cri.api.runtime.v1 import api_pb2, api_pb2_grpc


@pytest.fixture(scope="module")
def stub(runtime_node: RuntimeNode) -> Iterator[Any]:
    with grpc.insecure_channel(runtime_node.endpoint) as ch:
        yield api_pb2_grpc.RuntimeServiceStub(ch)


def code_of(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        call(request, timeout=30)
    return e.value.code(), e.value.details()


def pod_config(name: str, **kw: Any) -> Any:
    return api_pb2.PodSandboxConfig(metadata=api_pb2.PodSandboxMetadata(name=name, namespace="k8sxts", uid=name),
                                    **kw)


def test_bad_requests_get_precise_codes(runtime_node: RuntimeNode, stub: Any) -> None:
    C = grpc.StatusCode
    missing = "f" * 64
    # sandboxes
    assert code_of(stub.RunPodSandbox, api_pb2.RunPodSandboxRequest())[0] == C.INVALID_ARGUMENT
    assert code_of(stub.RunPodSandbox, api_pb2.RunPodSandboxRequest(
        config=pod_config("")))[0] == C.INVALID_ARGUMENT
    code, msg = code_of(stub.RunPodSandbox, api_pb2.RunPodSandboxRequest(config=pod_config("k8sxts-h"),
                                                                         runtime_handler="nosuch"))
    assert code == C.NOT_FOUND and "nosuch" in msg
    bad_sysctl = pod_config("k8sxts-sysctl")
    bad_sysctl.linux.sysctls["kernel.hostname"] = "x"  # not namespaced: refused, nothing left behind
    code, msg = code_of(stub.RunPodSandbox, api_pb2.RunPodSandboxRequest(config=bad_sysctl))
    assert code == C.INVALID_ARGUMENT and "kernel.hostname" in msg
    code, msg = code_of(stub.PodSandboxStatus, api_pb2.PodSandboxStatusRequest(pod_sandbox_id=missing))
    assert code == C.NOT_FOUND and missing in msg
    assert code_of(stub.PodSandboxStatus, api_pb2.PodSandboxStatusRequest())[0] == C.INVALID_ARGUMENT
    assert code_of(stub.StopPodSandbox, api_pb2.StopPodSandboxRequest(pod_sandbox_id=missing))[0] == C.NOT_FOUND
    stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=missing), timeout=30)  # idempotent

    pod = stub.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_config("k8sxts-e")), timeout=60).pod_sandbox_id
    code, msg = code_of(stub.RunPodSandbox, api_pb2.RunPodSandboxRequest(config=pod_config("k8sxts-e")))
    assert code == C.ALREADY_EXISTS and "reserved" in msg

    # containers
    ok = api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name="c"), image=api_pb2.ImageSpec(image=BUSYBOX),
                                 command=["sleep", "3600"])
    assert code_of(stub.CreateContainer, api_pb2.CreateContainerRequest(
        pod_sandbox_id=missing, config=ok))[0] == C.NOT_FOUND
    assert code_of(stub.CreateContainer, api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod, config=api_pb2.ContainerConfig()))[0] == C.INVALID_ARGUMENT
    no_image = api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name="x"),
                                       image=api_pb2.ImageSpec(image="k8sxts/absent:1"))
    code, msg = code_of(stub.CreateContainer, api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=no_image))
    assert code == C.NOT_FOUND and "k8sxts/absent:1" in msg
    bad_seccomp = api_pb2.ContainerConfig()
    bad_seccomp.CopyFrom(ok)
    bad_seccomp.metadata.name = "seccomp"
    bad_seccomp.linux.security_context.seccomp_profile_path = "docker/k8sxts"
    assert code_of(stub.CreateContainer, api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod, config=bad_seccomp))[0] == C.INVALID_ARGUMENT
    group_only = api_pb2.ContainerConfig()
    group_only.CopyFrom(ok)
    group_only.metadata.name = "group"
    group_only.linux.security_context.run_as_group.value = 10
    assert code_of(stub.CreateContainer, api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod, config=group_only))[0] == C.INVALID_ARGUMENT

    ctr = stub.CreateContainer(api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=ok),
                               timeout=60).container_id
    assert code_of(stub.CreateContainer, api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod, config=ok))[0] == C.ALREADY_EXISTS
    assert code_of(stub.ExecSync, api_pb2.ExecSyncRequest(container_id=ctr, cmd=["true"]))[0] == \
        C.FAILED_PRECONDITION  # not started yet
    stub.StartContainer(api_pb2.StartContainerRequest(container_id=ctr), timeout=60)
    code, msg = code_of(stub.StartContainer, api_pb2.StartContainerRequest(container_id=ctr))
    assert code == C.FAILED_PRECONDITION and "CONTAINER_RUNNING" in msg
    assert code_of(stub.ExecSync, api_pb2.ExecSyncRequest(container_id=ctr))[0] == C.INVALID_ARGUMENT
    code, msg = code_of(stub.ExecSync, api_pb2.ExecSyncRequest(container_id=ctr, cmd=["sleep", "5"], timeout=1))
    assert code == C.DEADLINE_EXCEEDED
    assert code_of(stub.ContainerStatus, api_pb2.ContainerStatusRequest(container_id=missing))[0] == C.NOT_FOUND
    assert code_of(stub.StopContainer, api_pb2.StopContainerRequest(container_id=missing))[0] == C.NOT_FOUND
    assert code_of(stub.StopContainer, api_pb2.StopContainerRequest(container_id=ctr, timeout=-1))[0] == \
        C.INVALID_ARGUMENT
    assert code_of(stub.ContainerStats, api_pb2.ContainerStatsRequest(container_id=missing))[0] == C.NOT_FOUND
    assert code_of(stub.UpdateContainerResources, api_pb2.UpdateContainerResourcesRequest(
        container_id=missing))[0] == C.NOT_FOUND
    stub.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=missing), timeout=30)  # idempotent

    stub.StopContainer(api_pb2.StopContainerRequest(container_id=ctr, timeout=0), timeout=60)
    assert code_of(stub.ExecSync, api_pb2.ExecSyncRequest(container_id=ctr, cmd=["true"]))[0] == \
        C.FAILED_PRECONDITION
    assert code_of(stub.ReopenContainerLog, api_pb2.ReopenContainerLogRequest(container_id=ctr))[0] == \
        C.FAILED_PRECONDITION
    stub.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    other = api_pb2.ContainerConfig()
    other.CopyFrom(ok)
    other.metadata.name = "late"
    assert code_of(stub.CreateContainer, api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod, config=other))[0] == C.FAILED_PRECONDITION  # the pod is not ready

    stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    # the server is still fine, and the refused sandboxes left nothing
    assert stub.Version(api_pb2.VersionRequest(), timeout=10).runtime_name == "k8sx"
    assert list(stub.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10).items) == []
    assert os.listdir(os.path.join(runtime_node.state, "pods")) == []


def test_network_not_ready_without_a_cni_config(runtime_node: RuntimeNode, stub: Any) -> None:
    saved = runtime_node.conf_dir + ".saved"
    shutil.move(runtime_node.conf_dir, saved)
    os.makedirs(runtime_node.conf_dir)
    try:
        conds = {c.type: c for c in stub.Status(api_pb2.StatusRequest(), timeout=10).status.conditions}
        assert conds["RuntimeReady"].status is True
        assert conds["NetworkReady"].status is False and "no network config" in conds["NetworkReady"].message
        code, msg = code_of(stub.RunPodSandbox, api_pb2.RunPodSandboxRequest(config=pod_config("k8sxts-nonet")))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "cni" in msg
        # a host-network pod needs no CNI
        hn = pod_config("k8sxts-hostnet")
        hn.linux.security_context.namespace_options.network = api_pb2.NODE
        pod = stub.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=hn), timeout=60).pod_sandbox_id
        stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    finally:
        shutil.rmtree(runtime_node.conf_dir)
        shutil.move(saved, runtime_node.conf_dir)
    conds = {c.type: c for c in stub.Status(api_pb2.StatusRequest(), timeout=10).status.conditions}
    assert conds["NetworkReady"].status is True


def test_cli_errors_are_one_line(runtime_node: RuntimeNode) -> None:
    r = runtime_node.cli("inspectp", "f" * 64, check=False)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[0].startswith("Error: getting the pod sandbox status")
    assert "code = NotFound" in r.stderr
    r = runtime_node.cli("runp", os.path.join(runtime_node.dir, "absent.json"), check=False)
    assert r.returncode == 2 and "absent.json" in r.stderr
    r = runtime_node.cli("exec", "f" * 64, "true", check=False)   # streaming exec (no -s): the Exec RPC's error
    assert r.returncode == 1 and "code = NotFound" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = runtime_node.cli("exec", "-s", "-t", "f" * 64, "true", check=False)
    assert r.returncode == 2 and "-s" in r.stderr


def test_container_events_stream(runtime_node: RuntimeNode, stub: Any) -> None:
    import threading

    events: list[Any] = []
    stream = stub.GetContainerEvents(api_pb2.GetEventsRequest(), timeout=60)

    def read() -> None:
        try:
            events.extend(stream)
        except grpc.RpcError as e:  # our cancel() at the end
            assert e.code() == grpc.StatusCode.CANCELLED

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.5)  # the subscription is registered once the stream's first read runs
    pod = stub.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_config("k8sxts-ev")), timeout=60).pod_sandbox_id
    cfg = api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name="ev"),
                                  image=api_pb2.ImageSpec(image=BUSYBOX), command=["sh", "-c", "exit 0"])
    ctr = stub.CreateContainer(api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=cfg),
                               timeout=60).container_id
    stub.StartContainer(api_pb2.StartContainerRequest(container_id=ctr), timeout=60)
    stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    deadline = time.monotonic() + 10
    kinds: list[int] = []
    while time.monotonic() < deadline:
        kinds = [e.container_event_type for e in events if e.container_id == ctr]
        if api_pb2.CONTAINER_DELETED_EVENT in kinds:
            break
        time.sleep(0.1)
    stream.cancel()
    reader.join(10)
    assert kinds[0] == api_pb2.CONTAINER_CREATED_EVENT
    assert api_pb2.CONTAINER_STARTED_EVENT in kinds and kinds[-1] == api_pb2.CONTAINER_DELETED_EVENT
    created = next(e for e in events if e.container_id == ctr)
    assert created.pod_sandbox_status.id == pod and created.containers_statuses[0].id == ctr


def test_completion_offers_ids_from_the_state_db(runtime_node: RuntimeNode, monkeypatch: pytest.MonkeyPatch) -> None:
    from k8sx.cli import complete

    n = runtime_node
    pod, c = n.run_pod("k8sxts-tab", {"c": ["sleep", "3600"]})
    monkeypatch.setenv("K8SX_STATE", n.state)
    try:
        found, _ = complete.candidates(["runtime", "stopp"], pod[:6])
        assert [v for v, _ in found] == [pod]
        found, _ = complete.candidates(["runtime", "exec", "-s"], "")
        assert (c["c"], "c CONTAINER_RUNNING") in found
    finally:
        n.cli("rmp", "-f", pod)


def test_a_create_failing_in_the_background_is_reported(runtime_node: RuntimeNode, stub: Any) -> None:
    """runc create runs after CreateContainer answers (as containerd runs it at StartContainer): its
    failure is StartContainer's error and the container's status, and nothing is left behind."""
    pod = stub.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_config("k8sxts-bg")), timeout=60).pod_sandbox_id
    cfg = api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name="bad"),
                                  image=api_pb2.ImageSpec(image=BUSYBOX), command=["true"],
                                  devices=[api_pb2.Device(host_path="/dev/k8sxts-absent", container_path="/dev/x",
                                                          permissions="rwm")])
    try:
        ctr = stub.CreateContainer(api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=cfg),
                                   timeout=60).container_id
    except grpc.RpcError as e:  # refused up front is fine too
        assert "k8sxts-absent" in (e.details() or "")
    else:
        code, msg = code_of(stub.StartContainer, api_pb2.StartContainerRequest(container_id=ctr))
        assert code == grpc.StatusCode.UNKNOWN and "k8sxts-absent" in msg
        st = stub.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=ctr), timeout=30).status
        assert (st.state, st.reason) == (api_pb2.CONTAINER_EXITED, "CreateContainerError")
        assert "k8sxts-absent" in st.message
        stub.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=ctr), timeout=60)
    stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    assert runtime_node.leaks([pod], []) == []
