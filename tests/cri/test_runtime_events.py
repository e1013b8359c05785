"""GetContainerEvents reports a container's end when it happens, and the pod's own lifecycle, as containerd does.

A subscriber gets CONTAINER_STOPPED within 2 s of a container exiting by itself, with no other call
made meanwhile (the server's exit watcher sees conmon's exit file), carrying the pod's status and the
container's exit code; the pod's CREATED/STARTED/STOPPED/DELETED come with the pod's id as
container id. A server stopped in-process leaves none of its threads behind. The exit watcher itself
reports files written in place and renamed into place, once each, retries what its callback refuses,
and finds them by polling where inotify is unavailable.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from runtimetools import BUSYBOX, RuntimeNode
from support import unique

from k8sx.cri.api.runtime.v1 import api_pb2, api_pb2_grpc

E = api_pb2


@pytest.fixture(scope="module")
def stub(runtime_node: RuntimeNode) -> Iterator[Any]:
    with grpc.insecure_channel(runtime_node.endpoint) as ch:
        yield api_pb2_grpc.RuntimeServiceStub(ch)


class Subscription:
    """A GetContainerEvents stream read by a thread into a queue; ``close()`` cancels it."""

    def __init__(self, stub: Any) -> None:
        self.events: queue.Queue[Any] = queue.Queue()
        self.stream = stub.GetContainerEvents(E.GetEventsRequest(), timeout=120)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        time.sleep(0.5)  # the server registers the subscriber when the stream's first read runs

    def _read(self) -> None:
        try:
            for ev in self.stream:
                self.events.put((time.monotonic(), ev))
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.CANCELLED

    def wait_for(self, container_id: str, kind: int, timeout: float) -> tuple[float, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no event {E.ContainerEventType.Name(kind)} for {container_id} in {timeout}s"
            try:
                at, ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if ev.container_id == container_id and ev.container_event_type == kind:
                return at, ev

    def close(self) -> None:
        self.stream.cancel()
        self.thread.join(10)


def pod_config(name: str) -> Any:
    return E.PodSandboxConfig(metadata=E.PodSandboxMetadata(name=name, namespace="k8sxte", uid=unique("e", 20)))


def test_stopped_comes_when_the_container_exits(runtime_node: RuntimeNode, stub: Any) -> None:
    sub = Subscription(stub)
    try:
        pod = stub.RunPodSandbox(E.RunPodSandboxRequest(config=pod_config("k8sxte-ev")), timeout=60).pod_sandbox_id
        sub.wait_for(pod, E.CONTAINER_CREATED_EVENT, 5)
        _, started = sub.wait_for(pod, E.CONTAINER_STARTED_EVENT, 5)
        assert started.pod_sandbox_status.id == pod and started.pod_sandbox_status.state == E.SANDBOX_READY
        cfg = E.ContainerConfig(metadata=E.ContainerMetadata(name="quits"), image=E.ImageSpec(image=BUSYBOX),
                                command=["sh", "-c", "sleep 0.3; exit 3"])
        ctr = stub.CreateContainer(E.CreateContainerRequest(pod_sandbox_id=pod, config=cfg), timeout=60).container_id
        sub.wait_for(ctr, E.CONTAINER_CREATED_EVENT, 5)
        stub.StartContainer(E.StartContainerRequest(container_id=ctr), timeout=60)
        t_started = time.monotonic()
        sub.wait_for(ctr, E.CONTAINER_STARTED_EVENT, 5)
        # no call in between: only the server's own watcher can notice the exit
        at, stopped = sub.wait_for(ctr, E.CONTAINER_STOPPED_EVENT, 2.3)
        assert at - t_started < 2.3
        assert stopped.pod_sandbox_status.id == pod
        assert stopped.pod_sandbox_status.metadata.name == "k8sxte-ev"
        mine = [s for s in stopped.containers_statuses if s.id == ctr]
        assert len(mine) == 1
        assert (mine[0].state, mine[0].exit_code, mine[0].reason) == (E.CONTAINER_EXITED, 3, "Error")
        # the state was recorded with the event: a status call agrees and sends no second STOPPED
        st = stub.ContainerStatus(E.ContainerStatusRequest(container_id=ctr), timeout=30).status
        assert (st.state, st.exit_code, st.finished_at) == (E.CONTAINER_EXITED, 3, mine[0].finished_at)

        stub.StopPodSandbox(E.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
        _, pod_stopped = sub.wait_for(pod, E.CONTAINER_STOPPED_EVENT, 5)
        assert pod_stopped.pod_sandbox_status.state == E.SANDBOX_NOTREADY
        stub.RemovePodSandbox(E.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
        sub.wait_for(ctr, E.CONTAINER_DELETED_EVENT, 5)
        _, deleted = sub.wait_for(pod, E.CONTAINER_DELETED_EVENT, 5)
        assert not deleted.HasField("pod_sandbox_status")  # gone, as containerd reports it
        time.sleep(0.3)
        rest = []
        while not sub.events.empty():
            rest.append(sub.events.get()[1])
        assert [e for e in rest if e.container_id == ctr and e.container_event_type == E.CONTAINER_STOPPED_EVENT] == []
    finally:
        sub.close()
    assert runtime_node.leaks([pod], []) == []


def test_a_killed_container_is_reported_once(runtime_node: RuntimeNode, stub: Any) -> None:
    """StopContainer and the watcher both see the exit: exactly one STOPPED, with 128+9."""
    sub = Subscription(stub)
    try:
        pod = stub.RunPodSandbox(E.RunPodSandboxRequest(config=pod_config("k8sxte-kill")), timeout=60).pod_sandbox_id
        cfg = E.ContainerConfig(metadata=E.ContainerMetadata(name="deaf"), image=E.ImageSpec(image=BUSYBOX),
                                command=["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"])
        ctr = stub.CreateContainer(E.CreateContainerRequest(pod_sandbox_id=pod, config=cfg), timeout=60).container_id
        stub.StartContainer(E.StartContainerRequest(container_id=ctr), timeout=60)
        time.sleep(0.3)
        stub.StopContainer(E.StopContainerRequest(container_id=ctr, timeout=1), timeout=60)
        _, ev = sub.wait_for(ctr, E.CONTAINER_STOPPED_EVENT, 3)
        assert [(s.exit_code, s.state) for s in ev.containers_statuses if s.id == ctr] == [(137, E.CONTAINER_EXITED)]
        stub.ContainerStatus(E.ContainerStatusRequest(container_id=ctr), timeout=30)
        stub.RemovePodSandbox(E.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
        sub.wait_for(pod, E.CONTAINER_DELETED_EVENT, 5)
        stops = []
        while not sub.events.empty():
            ev = sub.events.get()[1]
            if ev.container_id == ctr and ev.container_event_type == E.CONTAINER_STOPPED_EVENT:
                stops.append(ev)
        assert stops == []
    finally:
        sub.close()


def test_server_stop_ends_its_threads() -> None:
    from k8sx.cri.server import CRIServer, ServerConfig

    d = tempfile.mkdtemp(prefix=unique("e", 12) + "-")
    before = {t.ident for t in threading.enumerate()}
    try:
        cfg = ServerConfig(listen=f"unix://{d}/s.sock", root=os.path.join(d, "root"), state=os.path.join(d, "state"),
                           cni_conf_dir=os.path.join(d, "net.d"))
        server = CRIServer(cfg)
        server.start()
        names = {t.name for t in threading.enumerate() if t.ident not in before}
        assert "k8sx-exits" in names
        server.stop(grace=0)
        deadline = time.monotonic() + 5
        while True:
            left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()
                    and (t.name == "k8sx-exits" or t.name.startswith("create"))]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert left == []
        assert not os.path.exists(os.path.join(d, "s.sock"))
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "polling"])
def test_exit_watcher_reports_written_and_renamed_files_and_retries(inotify: bool,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """conmon writes ``<id>`` in place or renames a temporary file onto it: both are reported, once;
    an id the callback cannot take yet is offered again; without inotify, polling finds them too."""
    from k8sx.cri.oci import exits

    if not inotify:
        monkeypatch.setattr(exits, "_inotify", lambda path: -1)
    d = tempfile.mkdtemp(prefix=unique("e", 12) + "-")
    seen: queue.Queue[str] = queue.Queue()
    busy = {"b" * 64: 2}  # refused twice, then taken

    def on_exit(cid: str) -> bool:
        if busy.get(cid):
            busy[cid] -= 1
            return False
        seen.put(cid)
        return True

    w = exits.ExitWatcher(d, on_exit).start()
    try:
        with open(os.path.join(d, "a" * 64), "w") as f:
            f.write("0")
        tmp = os.path.join(d, "b" * 64 + ".XYZ123")
        with open(tmp, "w") as f:
            f.write("137")
        os.rename(tmp, os.path.join(d, "b" * 64))
        got = {seen.get(timeout=3), seen.get(timeout=3)}
        assert got == {"a" * 64, "b" * 64} and busy["b" * 64] == 0
        time.sleep(0.6)
        assert seen.empty()
    finally:
        w.close()
        shutil.rmtree(d, ignore_errors=True)
    assert "k8sx-exits" not in {t.name for t in threading.enumerate()}
