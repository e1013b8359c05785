"""The RuntimeService servicer: pods and containers of the CRI, over sandboxes, the OCI layer and the state DB.

Why this shape: the three domain parts know nothing of protobuf — :mod:`k8sx.cri.sandbox` pins a
pod's namespaces and attaches its network, :mod:`k8sx.cri.oci` runs containers under conmon/runc,
:mod:`k8sx.cri.state` remembers both. This module is where the CRI's messages are translated into
their plain inputs and back, where the CRI's rules are enforced (a name is unique per attempt, a
container starts only once, removal is idempotent, ...) and where each failure gets its gRPC code:
a bad request is InvalidArgument, an unknown id NotFound, a call in the wrong state
FailedPrecondition, so the server answers every request and never dies of one.

Every change is committed to the state DB before the RPC answers, so a ``kill -9``'d server that
restarts lists the same pods and containers; live container states are re-read from conmon/runc.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import k8sx
from k8sx.cri import oci
from k8sx.cri.api.runtime.v1 import api_pb2, api_pb2_grpc
from k8sx.cri.sandbox import PortMapping, SandboxError, Sandboxes, SandboxSpec, pod_cgroup
from k8sx.cri.servicers.status import Abort, invalid, not_found, register, rpc, unimplemented_as_status
from k8sx.cri.state import (
    CONTAINER_CREATED,
    CONTAINER_EXITED,
    CONTAINER_RUNNING,
    CONTAINER_UNKNOWN,
    POD_NOTREADY,
    POD_READY,
    ContainerRecord,
    PodRecord,
    StateDB,
    resolve_prefix,
)
from k8sx.errors import K8sxError

log = logging.getLogger("k8sx.cri.runtime")

RUNTIME_NAME = "k8sx"
API_VERSION = "v1"
KUBELET_API_VERSION = "0.1.0"  # what containerd and CRI-O report as ``version``
DEFAULT_CGROUP_PARENT = "/k8sx"
HANDLERS = ("", "runc")

register(oci.ContainerNotFound, "NOT_FOUND")
register(oci.ContainerExists, "ALREADY_EXISTS")
register(oci.ContainerStateError, "FAILED_PRECONDITION")

_OCI_TO_CRI = {oci.CREATED: CONTAINER_CREATED, oci.RUNNING: CONTAINER_RUNNING, oci.EXITED: CONTAINER_EXITED,
               oci.UNKNOWN: CONTAINER_UNKNOWN}
_PROPAGATION = {0: "private", 1: "rslave", 2: "rshared"}


def failed_precondition(message: str) -> Abort:
    return Abort("FAILED_PRECONDITION", message)


def new_id() -> str:
    return secrets.token_hex(32)


def labels_match(selector: Any, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _ns_mode(value: int) -> str:
    return {0: "pod", 1: "container", 2: "host", 3: "target"}.get(value, "container")


class EventBus:
    """Fan-out of container events to every open GetContainerEvents stream."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[queue.Queue[Any]] = []

    def subscribe(self) -> queue.Queue[Any]:
        q: queue.Queue[Any] = queue.Queue(maxsize=1000)
        with self._lock:
            self._subscribers.append(q)
        return q

    def unsubscribe(self, q: queue.Queue[Any]) -> None:
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)

    def active(self) -> bool:
        return bool(self._subscribers)

    def publish(self, event: Any) -> None:
        with self._lock:
            subs = list(self._subscribers)
        for q in subs:
            with contextlib.suppress(queue.Full):  # a stalled consumer loses events, never blocks the runtime
                q.put_nowait(event)


@unimplemented_as_status
class RuntimeServicer(api_pb2_grpc.RuntimeServiceServicer):
    SERVICE = api_pb2.DESCRIPTOR.services_by_name["RuntimeService"]

    def __init__(self, db: StateDB | None = None, sandboxes: Sandboxes | None = None, runtime: Any = None,
                 images: Any = None, cgroup_parent: str = DEFAULT_CGROUP_PARENT,
                 runtime_handlers: tuple[str, ...] = HANDLERS, streams: Any = None) -> None:
        self.db = db
        self.sandboxes = sandboxes
        self.runtime = runtime  # k8sx.cri.oci.runtime.OciRuntime
        self.images = images  # k8sx.cri.images.store.ImageStore
        self.cgroup_parent = cgroup_parent
        self.handlers = runtime_handlers
        self.streams = streams  # k8sx.cri.streaming.server.StreamServer: Exec/Attach/PortForward URLs
        self.events = EventBus()
        self._lock = threading.Lock()  # name reservation
        self._locks: dict[str, threading.Lock] = {}
        self.pod_cidr = ""
        self._pending: dict[str, Future[Any]] = {}
        self._creator = ThreadPoolExecutor(max_workers=8, thread_name_prefix="create")
        self._exits: Any = None  # k8sx.cri.oci.exits.ExitWatcher: CONTAINER_STOPPED as soon as conmon sees an exit
        if self.db is not None:
            if getattr(self.runtime, "exits", None):  # watching first: an exit during recover() is not missed
                from k8sx.cri.oci.exits import ExitWatcher

                self._exits = ExitWatcher(self.runtime.exits, self._on_exit).start()
            self.recover()

    # ---- plumbing ------------------------------------------------------------------------------------------

    def _require(self) -> tuple[StateDB, Sandboxes]:
        if self.db is None or self.sandboxes is None:
            raise Abort("UNIMPLEMENTED", "this server was started without a runtime (images only)")
        return self.db, self.sandboxes

    def _lock_for(self, key: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(key, threading.Lock())

    def _pod(self, pod_id: str, what: str) -> PodRecord:
        db, _ = self._require()
        if not pod_id:
            raise invalid(f"{what}: a pod sandbox id is required")
        full = resolve_prefix(db.pod_ids(), pod_id)
        pod = db.pod(full) if full else None
        if pod is None:
            raise not_found(f"{what}: pod sandbox {pod_id!r} not found")
        return pod

    def _container(self, ctr_id: str, what: str) -> ContainerRecord:
        db, _ = self._require()
        if not ctr_id:
            raise invalid(f"{what}: a container id is required")
        full = resolve_prefix(db.container_ids(), ctr_id)
        ctr = db.container(full) if full else None
        if ctr is None:
            raise not_found(f"{what}: container {ctr_id!r} not found")
        return ctr

    def _containers_matching(self, db: Any, f: Any) -> list[ContainerRecord]:
        """The containers a list filter's id, pod and label parts let through, refreshed from the runtime
        (ListContainers and ListContainerStats share these rules; the state part is ListContainers' own)."""
        out = []
        for ctr in db.containers():
            if f is not None and ((f.id and not ctr.id.startswith(f.id))
                                  or (f.pod_sandbox_id and not ctr.pod_id.startswith(f.pod_sandbox_id))
                                  or not labels_match(f.label_selector, ctr.labels)):
                continue
            out.append(self._refresh(ctr))
        return out

    def _refresh(self, ctr: ContainerRecord) -> ContainerRecord:
        """Bring ``ctr`` up to date with conmon/runc (only while it may still change), saving what changed."""
        ctr = self._settle(ctr)
        if ctr.state not in (CONTAINER_CREATED, CONTAINER_RUNNING, CONTAINER_UNKNOWN) or self.runtime is None:
            return ctr
        try:
            st = self.runtime.state(ctr.id)
        except Exception as e:  # a vanished bundle: the container is gone for good
            log.warning("state of %s: %s", ctr.id, e)
            st = oci.ContainerState(id=ctr.id, status=oci.UNKNOWN)
        new_state = _OCI_TO_CRI.get(st.status, CONTAINER_UNKNOWN)
        changed = (new_state != ctr.state or st.exit_code != ctr.exit_code or st.finished_at != ctr.finished_ns
                   or (st.started_at and st.started_at != ctr.started_ns))
        if not changed:
            return ctr
        was_running = ctr.state == CONTAINER_RUNNING
        ctr.state = new_state
        ctr.pid = st.pid
        if st.started_at:
            ctr.started_ns = st.started_at
        if new_state == CONTAINER_EXITED:
            ctr.exit_code = st.exit_code
            ctr.finished_ns = st.finished_at or ctr.finished_ns or time.time_ns()
            ctr.reason = st.reason or ("Completed" if st.exit_code == 0 else "Error")
            ctr.message = st.message
        assert self.db is not None
        if was_running and new_state == CONTAINER_EXITED:
            # the exit watcher and a status call may see the same exit: only the first records and reports it
            if self.db.update_container_if(ctr, CONTAINER_RUNNING):
                self._event(ctr, api_pb2.CONTAINER_STOPPED_EVENT)
        elif self.db.container(ctr.id) is not None:
            self.db.put_container(ctr)
        return ctr

    def _on_exit(self, ctr_id: str) -> bool:
        """conmon wrote ``ctr_id``'s exit file (the exit watcher's callback): record the exit and publish
        CONTAINER_STOPPED now. False while a call holds the container (a start or stop in progress): the
        watcher offers it again shortly, so the event never races the call's own state change."""
        assert self.db is not None
        ctr = self.db.container(ctr_id)
        if ctr is None or ctr.state == CONTAINER_EXITED:
            return True
        lock = self._lock_for(ctr_id)
        if not lock.acquire(blocking=False):
            return False
        try:
            ctr = self.db.container(ctr_id)
            if ctr is not None:
                self._refresh(ctr)
        finally:
            lock.release()
            if ctr is None:
                with self._lock:
                    self._locks.pop(ctr_id, None)
        return True

    def close(self) -> None:
        """Stop the exit watcher and the background creates (the server calls this when it stops)."""
        if self._exits is not None:
            self._exits.close()
            self._exits = None
        self._creator.shutdown(wait=True)

    def recover(self) -> None:
        """After a restart: re-read every container's state; a pod whose namespaces are gone is not ready."""
        assert self.db is not None
        for pod in self.db.pods():
            if pod.state == POD_READY and any(not os.path.exists(p) for p in pod.namespaces.values()):
                self.db.set_pod_state(pod.id, POD_NOTREADY)
        for ctr in self.db.containers():
            try:
                self._refresh(ctr)
            except Exception:
                log.exception("recovering container %s", ctr.id)

    def _event(self, ctr: ContainerRecord, kind: int) -> None:
        self._publish(ctr.id, ctr.pod_id, kind)

    def _publish(self, container_id: str, pod_id: str, kind: int) -> None:
        """One GetContainerEvents event, as containerd sends it: the pod's status (none once the pod is
        removed) and the statuses of all its containers, from which kubelet's evented PLEG rebuilds the
        pod. A pod's own lifecycle is reported with ``container_id`` = the pod's id."""
        if not self.events.active() or self.db is None:
            return
        try:
            ev = api_pb2.ContainerEventResponse(container_id=container_id, container_event_type=kind,
                                                created_at=time.time_ns())
            pod = self.db.pod(pod_id)
            if pod is not None:
                ev.pod_sandbox_status.CopyFrom(self._pod_status(pod))
            ev.containers_statuses.extend(self._ctr_status(c) for c in self.db.containers(pod_id))
            self.events.publish(ev)
        except Exception:
            log.exception("container event")

    # ---- runtime info --------------------------------------------------------------------------------------

    @rpc
    def Version(self, request: Any, context: Any) -> Any:
        return api_pb2.VersionResponse(version=KUBELET_API_VERSION, runtime_name=RUNTIME_NAME,
                                       runtime_version=k8sx.__version__, runtime_api_version=API_VERSION)

    @rpc
    def Status(self, request: Any, context: Any) -> Any:
        runtime_ready = self.runtime is not None and self.db is not None
        conds = [api_pb2.RuntimeCondition(type="RuntimeReady", status=runtime_ready,
                                          reason="" if runtime_ready else "NoRuntime",
                                          message="" if runtime_ready else "no OCI runtime configured")]
        if self.sandboxes is not None:
            ok, msg = self.sandboxes.network_ready()
        else:
            ok, msg = False, "no pod network configured"
        conds.append(api_pb2.RuntimeCondition(type="NetworkReady", status=ok,
                                              reason="" if ok else "NetworkPluginNotReady", message=msg))
        resp = api_pb2.StatusResponse(status=api_pb2.RuntimeStatus(conditions=conds))
        for name in self.handlers:
            resp.runtime_handlers.add(name=name)
        if request.verbose:
            cfg: dict[str, Any] = {"cgroupParent": self.cgroup_parent, "podCIDR": self.pod_cidr}
            if self.sandboxes is not None:
                cfg["cni"] = {"confDir": self.sandboxes.network.conf_dir,
                              "binDirs": list(self.sandboxes.network.bin_dirs)}
            resp.info["config"] = json.dumps(cfg)
        return resp

    @rpc
    def UpdateRuntimeConfig(self, request: Any, context: Any) -> Any:
        self.pod_cidr = request.runtime_config.network_config.pod_cidr
        return api_pb2.UpdateRuntimeConfigResponse()

    @rpc
    def RuntimeConfig(self, request: Any, context: Any) -> Any:
        return api_pb2.RuntimeConfigResponse(
            linux=api_pb2.LinuxRuntimeConfiguration(cgroup_driver=api_pb2.CGROUPFS))

    # ---- sandboxes -----------------------------------------------------------------------------------------

    def _sandbox_spec(self, config: Any) -> SandboxSpec:
        md = config.metadata
        linux = config.linux
        nso = linux.security_context.namespace_options
        spec = SandboxSpec(
            hostname=config.hostname,
            dns_servers=list(config.dns_config.servers), dns_searches=list(config.dns_config.searches),
            dns_options=list(config.dns_config.options),
            sysctls=dict(linux.sysctls),
            host_network=nso.network == api_pb2.NODE, host_ipc=nso.ipc == api_pb2.NODE,
            pid_mode=_ns_mode(nso.pid),
            cni_args=[("K8S_POD_NAMESPACE", md.namespace), ("K8S_POD_NAME", md.name),
                      ("K8S_POD_UID", md.uid)],
        )
        if spec.pid_mode == "target":
            raise invalid("RunPodSandbox: pid namespace mode TARGET is for containers only")
        for pm in config.port_mappings:
            if not 0 <= pm.container_port <= 65535 or not 0 <= pm.host_port <= 65535:
                raise invalid(f"RunPodSandbox: port mapping {pm.host_port}:{pm.container_port} is out of range")
            spec.port_mappings.append(PortMapping(pm.host_port, pm.container_port,
                                                  api_pb2.Protocol.Name(pm.protocol).lower(), pm.host_ip))
        return spec

    @rpc
    def RunPodSandbox(self, request: Any, context: Any) -> Any:
        db, sandboxes = self._require()
        config = request.config
        if not request.HasField("config") or not config.HasField("metadata"):
            raise invalid("RunPodSandbox: config.metadata is required")
        md = config.metadata
        if not md.name:
            raise invalid("RunPodSandbox: config.metadata.name is required")
        if request.runtime_handler not in self.handlers:
            raise not_found(f"RunPodSandbox: no runtime for {request.runtime_handler!r} is configured "
                            f"(known: {', '.join(repr(h) for h in self.handlers)})")
        spec = self._sandbox_spec(config)
        with self._lock:
            if db.ready_pod_by_name(md.name, md.namespace, md.uid, md.attempt) is not None:
                raise Abort("ALREADY_EXISTS", f"RunPodSandbox: the name {md.name}_{md.namespace}_{md.uid}_"
                                              f"{md.attempt} is reserved by another pod sandbox")
            pod_id = new_id()
            pod = PodRecord(id=pod_id, name=md.name, namespace=md.namespace, uid=md.uid, attempt=md.attempt,
                            state=POD_NOTREADY, created_ns=time.time_ns(), config=config.SerializeToString(),
                            runtime_handler=request.runtime_handler, labels=dict(config.labels),
                            annotations=dict(config.annotations),  # kubelet's pod cgroup, else one of ours:
                            cgroup_parent=config.linux.cgroup_parent or pod_cgroup(self.cgroup_parent, pod_id))
            db.put_pod(pod)  # reserves the name while the sandbox is being built
        if config.log_directory:
            os.makedirs(config.log_directory, exist_ok=True)
        spec.cni_args.append(("K8S_POD_INFRA_CONTAINER_ID", pod.id))
        try:
            sandboxes.create(pod, spec, save=db.put_pod)
        except BaseException:
            db.delete_pod(pod.id)
            raise
        pod.state = POD_READY
        db.put_pod(pod)
        self._publish(pod.id, pod.id, api_pb2.CONTAINER_CREATED_EVENT)
        self._publish(pod.id, pod.id, api_pb2.CONTAINER_STARTED_EVENT)
        return api_pb2.RunPodSandboxResponse(pod_sandbox_id=pod.id)

    def _stop_containers(self, pod: PodRecord, timeout: float) -> None:
        assert self.db is not None
        for ctr in self.db.containers(pod.id):
            ctr = self._refresh(ctr)
            if ctr.state in (CONTAINER_RUNNING, CONTAINER_UNKNOWN, CONTAINER_CREATED):
                self._stop_container(ctr, timeout)

    @rpc
    def StopPodSandbox(self, request: Any, context: Any) -> Any:
        db, sandboxes = self._require()
        pod = self._pod(request.pod_sandbox_id, "StopPodSandbox")
        with self._lock_for(pod.id):
            self._stop_containers(pod, 0)
            pod = db.pod(pod.id) or pod
            sandboxes.stop(pod)
            was_ready = pod.state == POD_READY
            pod.state = POD_NOTREADY
            db.put_pod(pod)
        if was_ready:
            self._publish(pod.id, pod.id, api_pb2.CONTAINER_STOPPED_EVENT)
        return api_pb2.StopPodSandboxResponse()

    @rpc
    def RemovePodSandbox(self, request: Any, context: Any) -> Any:
        db, sandboxes = self._require()
        try:
            pod = self._pod(request.pod_sandbox_id, "RemovePodSandbox")
        except Abort as e:
            if e.code == "NOT_FOUND":  # removing what is gone succeeds (CRI)
                return api_pb2.RemovePodSandboxResponse()
            raise
        with self._lock_for(pod.id):
            self._stop_containers(pod, 0)
            for ctr in db.containers(pod.id):
                self._remove_container(ctr)
            pod = db.pod(pod.id) or pod
            sandboxes.remove(pod)
            db.delete_pod(pod.id)
        with self._lock:
            self._locks.pop(pod.id, None)
        if pod.state == POD_READY:  # removed without a StopPodSandbox first: it stopped too
            self._publish(pod.id, pod.id, api_pb2.CONTAINER_STOPPED_EVENT)
        self._publish(pod.id, pod.id, api_pb2.CONTAINER_DELETED_EVENT)
        return api_pb2.RemovePodSandboxResponse()

    def _pod_status(self, pod: PodRecord) -> Any:
        st = api_pb2.PodSandboxStatus(
            id=pod.id, metadata=api_pb2.PodSandboxMetadata(name=pod.name, namespace=pod.namespace, uid=pod.uid,
                                                           attempt=pod.attempt),
            state=api_pb2.PodSandboxState.Value(pod.state), created_at=pod.created_ns,
            labels=pod.labels, annotations=pod.annotations, runtime_handler=pod.runtime_handler)
        if pod.ips and pod.state == POD_READY:
            st.network.ip = pod.ips[0]
            for ip in pod.ips[1:]:
                st.network.additional_ips.add(ip=ip)
        elif pod.host_network:
            st.network.ip = ""
        config = api_pb2.PodSandboxConfig.FromString(pod.config)
        nso = config.linux.security_context.namespace_options
        st.linux.namespaces.options.CopyFrom(api_pb2.NamespaceOption(network=nso.network, pid=nso.pid,
                                                                      ipc=nso.ipc))
        return st

    @rpc
    def PodSandboxStatus(self, request: Any, context: Any) -> Any:
        pod = self._pod(request.pod_sandbox_id, "PodSandboxStatus")
        resp = api_pb2.PodSandboxStatusResponse(status=self._pod_status(pod), timestamp=time.time_ns())
        if request.verbose:
            config = api_pb2.PodSandboxConfig.FromString(pod.config)
            from google.protobuf import json_format

            info = {"pid": pod.pid_init, "processStatus": "running" if pod.state == POD_READY else "deleted",
                    "netNamespaceClosed": "net" not in pod.namespaces, "image": "", "snapshotKey": "",
                    "runtimeHandler": pod.runtime_handler, "namespaces": pod.namespaces,
                    "cniResult": {"ips": pod.ips, "network": pod.network},
                    "config": json_format.MessageToDict(config)}
            resp.info["info"] = json.dumps(info)
        return resp

    @rpc
    def ListPodSandbox(self, request: Any, context: Any) -> Any:
        db, _ = self._require()
        f = request.filter if request.HasField("filter") else None
        out = []
        for pod in db.pods():
            if f is not None:
                if f.id and not pod.id.startswith(f.id):
                    continue
                if f.HasField("state") and api_pb2.PodSandboxState.Value(pod.state) != f.state.state:
                    continue
                if not labels_match(f.label_selector, pod.labels):
                    continue
            out.append(api_pb2.PodSandbox(
                id=pod.id, metadata=api_pb2.PodSandboxMetadata(name=pod.name, namespace=pod.namespace,
                                                               uid=pod.uid, attempt=pod.attempt),
                state=api_pb2.PodSandboxState.Value(pod.state), created_at=pod.created_ns,
                labels=pod.labels, annotations=pod.annotations, runtime_handler=pod.runtime_handler))
        return api_pb2.ListPodSandboxResponse(items=out)

    # ---- containers ----------------------------------------------------------------------------------------

    def _spec_input(self, ctr_id: str, pod: PodRecord, pod_config: Any, config: Any, layers: list[str],
                    image: Any, log_path: str) -> Any:
        linux = config.linux
        sc = linux.security_context
        mounts = []
        targets = set()
        for m in config.mounts:
            if not m.container_path:
                raise invalid("CreateContainer: a mount needs a container_path")
            if not m.host_path:
                raise invalid(f"CreateContainer: mount {m.container_path}: host_path is required")
            mounts.append(oci.Mount(host_path=m.host_path, container_path=m.container_path, readonly=m.readonly,
                                    propagation=_PROPAGATION.get(m.propagation, "private")))  # type: ignore[arg-type]
            targets.add(os.path.normpath(m.container_path))
        for name in ("hostname", "resolv.conf", "hosts"):
            target = "/etc/" + name
            if target not in targets and pod.dir:
                mounts.append(oci.Mount(host_path=os.path.join(pod.dir, name), container_path=target,
                                        readonly=sc.readonly_rootfs))
        if pod.shm and "/dev/shm" not in targets:  # the pod's shm, shared by all its containers
            mounts.append(oci.Mount(host_path=pod.shm, container_path="/dev/shm"))
        devices = [oci.Device(host_path=d.host_path, container_path=d.container_path or d.host_path,
                              permissions=d.permissions or "rwm") for d in config.devices]
        nso = sc.namespace_options
        pid_mode = _ns_mode(nso.pid)
        pod_nso = pod_config.linux.security_context.namespace_options
        if pid_mode == "pod" and "pid" not in pod.namespaces:
            pid_mode = "container" if _ns_mode(pod_nso.pid) != "host" else "host"
        if pid_mode == "target":
            raise invalid("CreateContainer: pid namespace mode TARGET is not supported")
        namespaces = oci.Namespaces(network=pod.namespaces.get("net"), ipc=pod.namespaces.get("ipc"),
                                    uts=pod.namespaces.get("uts"), pid=pid_mode,  # type: ignore[arg-type]
                                    pid_path=pod.namespaces.get("pid", "") if pid_mode == "pod" else "")
        profile = sc.seccomp if sc.HasField("seccomp") else None
        if profile is not None:
            kind = {0: "RuntimeDefault", 1: "Unconfined", 2: "Localhost"}[profile.profile_type]
            seccomp = oci.Seccomp(type=kind, localhost_ref=profile.localhost_ref)  # type: ignore[arg-type]
        else:
            seccomp = _seccomp_from_path(sc.seccomp_profile_path)
        if sc.HasField("run_as_group") and not (sc.HasField("run_as_user") or sc.run_as_username):
            raise invalid("CreateContainer: run_as_group is set without run_as_user or run_as_username")
        security = oci.Security(
            run_as_user=sc.run_as_user.value if sc.HasField("run_as_user") else None,
            run_as_username=sc.run_as_username,
            run_as_group=sc.run_as_group.value if sc.HasField("run_as_group") else None,
            supplemental_groups=list(sc.supplemental_groups), privileged=sc.privileged,
            no_new_privs=sc.no_new_privs, readonly_rootfs=sc.readonly_rootfs,
            add_capabilities=list(sc.capabilities.add_capabilities),
            drop_capabilities=list(sc.capabilities.drop_capabilities), seccomp=seccomp,
            apparmor_profile=sc.apparmor_profile,
            masked_paths=list(sc.masked_paths) if sc.masked_paths or sc.privileged else None,
            readonly_paths=list(sc.readonly_paths) if sc.readonly_paths or sc.privileged else None)
        if sc.privileged and not pod_config.linux.security_context.privileged:
            raise invalid("CreateContainer: a privileged container needs a privileged pod sandbox")
        envs = []
        for kv in config.envs:
            value = kv.value.decode("utf-8", "surrogateescape") if isinstance(kv.value, bytes) else kv.value
            envs.append((kv.key, value))
        return oci.ContainerSpecInput(
            id=ctr_id, image_layers=layers, log_path=log_path,
            image_config=(image.config or {}).get("config") or {}, name=config.metadata.name, sandbox_id=pod.id,
            command=list(config.command), args=list(config.args), envs=envs, working_dir=config.working_dir,
            mounts=mounts, devices=devices, hostname=pod_config.hostname if not pod.host_network else "",
            namespaces=namespaces, security=security, resources=resources_of(linux.resources),
            cgroup_parent=pod.cgroup_parent or self.cgroup_parent,
            annotations=dict(config.annotations), stdin=config.stdin, stdin_once=config.stdin_once,
            tty=config.tty)

    @rpc
    def CreateContainer(self, request: Any, context: Any) -> Any:
        db, _ = self._require()
        pod = self._pod(request.pod_sandbox_id, "CreateContainer")
        config = request.config
        if not request.HasField("config") or not config.HasField("metadata") or not config.metadata.name:
            raise invalid("CreateContainer: config.metadata.name is required")
        if not config.image.image:
            raise invalid("CreateContainer: config.image.image is required")
        if pod.state != POD_READY:
            raise failed_precondition(f"CreateContainer: pod sandbox {pod.id} is not ready")
        image = self.images.get(config.image.image) if self.images is not None else None
        if image is None:
            raise not_found(f"CreateContainer: image {config.image.image!r} not found (pull it first)")
        pod_config = request.sandbox_config if request.HasField("sandbox_config") else \
            api_pb2.PodSandboxConfig.FromString(pod.config)
        stored_pod_config = api_pb2.PodSandboxConfig.FromString(pod.config)
        log_dir = stored_pod_config.log_directory or pod_config.log_directory
        ctr_id = new_id()
        log_path = os.path.join(log_dir, config.log_path) if log_dir and config.log_path else \
            os.path.join(pod.dir, "logs", ctr_id + ".log")  # conmon needs a path; this one goes with the pod
        ctr = ContainerRecord(id=ctr_id, pod_id=pod.id, name=config.metadata.name,
                              attempt=config.metadata.attempt, state=CONTAINER_CREATED, created_ns=time.time_ns(),
                              config=config.SerializeToString(), image=config.image.image, image_ref=image.id,
                              log_path=log_path, labels=dict(config.labels), annotations=dict(config.annotations))
        spec = self._spec_input(ctr.id, pod, stored_pod_config, config, [], image, log_path)
        with self._lock_for(pod.id):  # not while the pod is being stopped or removed
            current = db.pod(pod.id)
            if current is None or current.state != POD_READY:
                raise failed_precondition(f"CreateContainer: pod sandbox {pod.id} is not ready")
            if not db.add_container(ctr):
                raise Abort("ALREADY_EXISTS", f"CreateContainer: the name {config.metadata.name} (attempt "
                                              f"{config.metadata.attempt}) is reserved in pod {pod.id}")
            try:
                spec.image_layers = self.images.lease(ctr.id, image.id)
                if log_path:
                    os.makedirs(os.path.dirname(log_path), exist_ok=True)
            except BaseException:
                db.delete_container(ctr.id)
                self._cleanup_container(ctr.id)
                raise
            # conmon + runc create (~50 ms) run in the background, as containerd defers its runc create to
            # StartContainer: the client's next call (a new crictl process, kubelet's next step) overlaps
            # with it, and every later use of the container waits for it first (_settle).
            self._pending[ctr.id] = self._creator.submit(self.runtime.create, spec)
        self._event(ctr, api_pb2.CONTAINER_CREATED_EVENT)
        return api_pb2.CreateContainerResponse(container_id=ctr.id)

    def _settle(self, ctr: ContainerRecord) -> ContainerRecord:
        """Wait for the background create of ``ctr``; a failed one leaves it exited with the error as message."""
        fut = self._pending.get(ctr.id)
        if fut is None:
            return ctr
        try:
            fut.result()
        except Exception as e:
            log.warning("creating container %s failed: %s", ctr.id, e)
            assert self.db is not None
            ctr = self.db.container(ctr.id) or ctr
            ctr.state, ctr.exit_code, ctr.reason = CONTAINER_EXITED, 128, "CreateContainerError"
            ctr.message = getattr(e, "message", None) or str(e)
            ctr.finished_ns = time.time_ns()
            if self.db.container(ctr.id) is not None:
                self.db.put_container(ctr)
        finally:
            self._pending.pop(ctr.id, None)
        return ctr

    def _cleanup_container(self, ctr_id: str) -> None:
        for step in (lambda: self.runtime.delete(ctr_id), lambda: self.images.release(ctr_id)):
            try:
                step()
            except Exception as e:
                log.warning("cleaning up container %s: %s", ctr_id, e)

    @rpc
    def StartContainer(self, request: Any, context: Any) -> Any:
        db, _ = self._require()
        ctr = self._container(request.container_id, "StartContainer")
        with self._lock_for(ctr.id):
            ctr = self._refresh(db.container(ctr.id) or ctr)
            if ctr.reason == "CreateContainerError":
                raise K8sxError(f"StartContainer: creating container {ctr.id} failed: {ctr.message}")
            if ctr.state != CONTAINER_CREATED:
                raise failed_precondition(f"StartContainer: container {ctr.id} is in state "
                                          f"{ctr.state}, not CONTAINER_CREATED")
            pod = db.pod(ctr.pod_id)
            if pod is None or pod.state != POD_READY:
                raise failed_precondition(f"StartContainer: pod sandbox {ctr.pod_id} is not ready")
            try:
                st = self.runtime.start(ctr.id)
            except Exception as e:
                ctr = self._refresh(ctr)
                if ctr.state == CONTAINER_CREATED:  # runc could not start it: report it as exited
                    ctr.state = CONTAINER_EXITED
                    ctr.exit_code = 128
                    ctr.reason = "StartError"
                    ctr.message = str(e)
                    ctr.finished_ns = time.time_ns()
                    db.put_container(ctr)
                raise
            ctr.started_ns = st.started_at or time.time_ns()
            ctr.pid = st.pid
            ctr.state = CONTAINER_RUNNING
            db.put_container(ctr)
            if st.status != oci.RUNNING:  # it exited already: record how
                ctr = self._refresh(ctr)
        self._event(ctr, api_pb2.CONTAINER_STARTED_EVENT)
        return api_pb2.StartContainerResponse()

    def _stop_container(self, ctr: ContainerRecord, timeout: float) -> ContainerRecord:
        assert self.db is not None
        if ctr.state == CONTAINER_CREATED:
            # never started: there is nothing to signal; it is exited for the CRI
            try:
                self.runtime.stop(ctr.id, timeout)
            except Exception as e:
                log.info("stopping created container %s: %s", ctr.id, e)
            ctr = self._refresh(ctr)
            if ctr.state == CONTAINER_CREATED:
                ctr.state = CONTAINER_EXITED
                ctr.finished_ns = time.time_ns()
                ctr.exit_code = 0
                ctr.reason = "Completed"
                self.db.put_container(ctr)
            return ctr
        self.runtime.stop(ctr.id, timeout)
        return self._refresh(ctr)

    @rpc
    def StopContainer(self, request: Any, context: Any) -> Any:
        db, _ = self._require()
        ctr = self._container(request.container_id, "StopContainer")
        if request.timeout < 0:
            raise invalid("StopContainer: timeout must not be negative")
        with self._lock_for(ctr.id):
            ctr = self._refresh(db.container(ctr.id) or ctr)
            if ctr.state != CONTAINER_EXITED:
                self._stop_container(ctr, float(request.timeout))
        return api_pb2.StopContainerResponse()

    def _remove_container(self, ctr: ContainerRecord) -> None:
        assert self.db is not None
        ctr = self._refresh(ctr)
        if ctr.state in (CONTAINER_RUNNING, CONTAINER_UNKNOWN):
            try:
                self.runtime.stop(ctr.id, 0)
            except Exception as e:
                log.warning("killing %s before removal: %s", ctr.id, e)
        with contextlib.suppress(oci.ContainerNotFound):  # already gone (a create that failed half-way)
            self.runtime.delete(ctr.id)
        try:
            self.images.release(ctr.id)
        except Exception as e:
            log.warning("releasing the image lease of %s: %s", ctr.id, e)
        self.db.delete_container(ctr.id)
        self._event(ctr, api_pb2.CONTAINER_DELETED_EVENT)

    @rpc
    def RemoveContainer(self, request: Any, context: Any) -> Any:
        self._require()
        try:
            ctr = self._container(request.container_id, "RemoveContainer")
        except Abort as e:
            if e.code == "NOT_FOUND":
                return api_pb2.RemoveContainerResponse()
            raise
        with self._lock_for(ctr.id):
            self._remove_container(ctr)
        with self._lock:
            self._locks.pop(ctr.id, None)
        return api_pb2.RemoveContainerResponse()

    def _ctr_status(self, ctr: ContainerRecord) -> Any:
        config = api_pb2.ContainerConfig.FromString(ctr.config)
        st = api_pb2.ContainerStatus(
            id=ctr.id, metadata=api_pb2.ContainerMetadata(name=ctr.name, attempt=ctr.attempt),
            state=api_pb2.ContainerState.Value(ctr.state), created_at=ctr.created_ns,
            started_at=ctr.started_ns, finished_at=ctr.finished_ns, exit_code=ctr.exit_code,
            image=api_pb2.ImageSpec(image=ctr.image), image_ref=ctr.image_ref, reason=ctr.reason,
            message=ctr.message, labels=ctr.labels, annotations=ctr.annotations, log_path=ctr.log_path)
        st.mounts.extend(config.mounts)
        if config.linux.HasField("resources"):
            st.resources.linux.CopyFrom(config.linux.resources)
        return st

    @rpc
    def ContainerStatus(self, request: Any, context: Any) -> Any:
        ctr = self._refresh(self._container(request.container_id, "ContainerStatus"))
        resp = api_pb2.ContainerStatusResponse(status=self._ctr_status(ctr))
        if request.verbose:
            from google.protobuf import json_format

            info = {"sandboxID": ctr.pod_id, "pid": ctr.pid, "removing": False, "snapshotKey": ctr.id,
                    "snapshotter": "overlayfs", "runtimeType": "io.k8sx.runc",
                    "config": json_format.MessageToDict(api_pb2.ContainerConfig.FromString(ctr.config))}
            resp.info["info"] = json.dumps(info)
        return resp

    @rpc
    def ListContainers(self, request: Any, context: Any) -> Any:
        db, _ = self._require()
        f = request.filter if request.HasField("filter") else None
        out = []
        for ctr in self._containers_matching(db, f):
            if f is not None and f.HasField("state") and api_pb2.ContainerState.Value(ctr.state) != f.state.state:
                continue
            out.append(api_pb2.Container(
                id=ctr.id, pod_sandbox_id=ctr.pod_id,
                metadata=api_pb2.ContainerMetadata(name=ctr.name, attempt=ctr.attempt),
                image=api_pb2.ImageSpec(image=ctr.image), image_ref=ctr.image_ref,
                state=api_pb2.ContainerState.Value(ctr.state), created_at=ctr.created_ns, labels=ctr.labels,
                annotations=ctr.annotations))
        return api_pb2.ListContainersResponse(containers=out)

    @rpc
    def UpdateContainerResources(self, request: Any, context: Any) -> Any:
        db, _ = self._require()
        ctr = self._refresh(self._container(request.container_id, "UpdateContainerResources"))
        if ctr.state not in (CONTAINER_CREATED, CONTAINER_RUNNING):
            raise failed_precondition(f"UpdateContainerResources: container {ctr.id} is {ctr.state}")
        if request.HasField("linux"):
            self.runtime.update(ctr.id, resources_of(request.linux))
            config = api_pb2.ContainerConfig.FromString(ctr.config)
            config.linux.resources.CopyFrom(request.linux)
            ctr.config = config.SerializeToString()
            db.put_container(ctr)
        return api_pb2.UpdateContainerResourcesResponse()

    @rpc
    def ReopenContainerLog(self, request: Any, context: Any) -> Any:
        ctr = self._refresh(self._container(request.container_id, "ReopenContainerLog"))
        if ctr.state != CONTAINER_RUNNING:
            raise failed_precondition(f"ReopenContainerLog: container {ctr.id} is not running")
        self.runtime.reopen_log(ctr.id)
        # conmon reopens asynchronously; the CRI (and kubelet's rotation) expects the new file on return
        deadline = time.monotonic() + 5
        while ctr.log_path and not os.path.exists(ctr.log_path) and time.monotonic() < deadline:
            time.sleep(0.005)
        return api_pb2.ReopenContainerLogResponse()

    @rpc
    def ExecSync(self, request: Any, context: Any) -> Any:
        ctr = self._refresh(self._container(request.container_id, "ExecSync"))
        if not request.cmd:
            raise invalid("ExecSync: cmd is required")
        if ctr.state != CONTAINER_RUNNING:
            raise failed_precondition(f"ExecSync: container {ctr.id} is not running ({ctr.state})")
        if request.timeout < 0:
            raise invalid("ExecSync: timeout must not be negative")
        result = self.runtime.exec_sync(ctr.id, list(request.cmd), float(request.timeout))
        if result.timed_out:
            raise Abort("DEADLINE_EXCEEDED", f"ExecSync: command {list(request.cmd)} timed out after "
                                             f"{request.timeout}s")
        return api_pb2.ExecSyncResponse(stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code)

    # ---- streaming -----------------------------------------------------------------------------------------

    def _stream_server(self, what: str) -> Any:
        if self.streams is None:
            raise Abort("UNIMPLEMENTED", f"{what}: this server has no streaming server")
        return self.streams

    def _running(self, container_id: str, what: str) -> ContainerRecord:
        ctr = self._refresh(self._container(container_id, what))
        if ctr.state != CONTAINER_RUNNING:
            raise failed_precondition(f"{what}: container {ctr.id} is not running ({ctr.state})")
        return ctr

    @rpc
    def Exec(self, request: Any, context: Any) -> Any:
        from k8sx.cri.streaming.remotecommand import CommandTarget

        streams = self._stream_server("Exec")
        ctr = self._running(request.container_id, "Exec")
        if not request.cmd:
            raise invalid("Exec: cmd is required")
        if request.tty and request.stderr:
            raise invalid("Exec: tty and stderr cannot both be true")
        if not (request.stdin or request.stdout or request.stderr):
            raise invalid("Exec: one of stdin, stdout and stderr must be true")
        cid, cmd, tty, stdin = ctr.id, list(request.cmd), request.tty, request.stdin
        target = CommandTarget(kind="exec", stdin=stdin, stdout=request.stdout, stderr=request.stderr, tty=tty,
                               start=lambda: self.runtime.exec_interactive(cid, cmd, tty=tty, stdin=stdin),
                               description=str(cmd))
        return api_pb2.ExecResponse(url=streams.url("exec", target))

    @rpc
    def Attach(self, request: Any, context: Any) -> Any:
        from k8sx.cri.streaming.remotecommand import CommandTarget

        streams = self._stream_server("Attach")
        ctr = self._running(request.container_id, "Attach")
        config = api_pb2.ContainerConfig.FromString(ctr.config)
        if request.tty and request.stderr:
            raise invalid("Attach: tty and stderr cannot both be true")
        if request.tty != config.tty:
            raise invalid(f"Attach: tty={request.tty} does not match the container's tty={config.tty}")
        if request.stdin and not config.stdin:
            raise invalid("Attach: the container was not created with stdin")
        if not (request.stdin or request.stdout or request.stderr):
            raise invalid("Attach: one of stdin, stdout and stderr must be true")
        cid, once, tty = ctr.id, config.stdin_once, config.tty
        target = CommandTarget(kind="attach", stdin=request.stdin, stdout=request.stdout, stderr=request.stderr,
                               tty=request.tty, start=lambda: self.runtime.attach(cid, stdin_once=once, tty=tty),
                               description=cid)
        return api_pb2.AttachResponse(url=streams.url("attach", target))

    @rpc
    def PortForward(self, request: Any, context: Any) -> Any:
        from k8sx.cri.streaming.portforward import PortForwardTarget, dial_in_netns

        streams = self._stream_server("PortForward")
        pod = self._pod(request.pod_sandbox_id, "PortForward")
        if pod.state != POD_READY:
            raise failed_precondition(f"PortForward: pod sandbox {pod.id} is not ready")
        for port in request.port:
            if not 0 < port < 65536:
                raise invalid(f"PortForward: port {port} is out of range")
        netns = pod.namespaces.get("net", "")
        target = PortForwardTarget(dial=lambda port: dial_in_netns(netns, port), description=pod.id)
        return api_pb2.PortForwardResponse(url=streams.url("portforward", target))

    # ---- stats ---------------------------------------------------------------------------------------------

    def _ctr_stats(self, ctr: ContainerRecord) -> Any:
        s = self.runtime.stats(ctr.id)
        out = api_pb2.ContainerStats(attributes=api_pb2.ContainerAttributes(
            id=ctr.id, metadata=api_pb2.ContainerMetadata(name=ctr.name, attempt=ctr.attempt),
            labels=ctr.labels, annotations=ctr.annotations))
        if ctr.state == CONTAINER_RUNNING:  # as containerd: no CPU/memory figures for a container not running
            out.cpu.timestamp = s.timestamp
            out.cpu.usage_core_nano_seconds.value = s.cpu_usage_ns
            out.memory.timestamp = s.timestamp
            out.memory.working_set_bytes.value = s.memory_working_set_bytes
            out.memory.usage_bytes.value = s.memory_usage_bytes
            out.memory.rss_bytes.value = s.memory_rss_bytes
            out.memory.page_faults.value = s.page_faults
            out.memory.major_page_faults.value = s.major_page_faults
        out.writable_layer.timestamp = s.timestamp
        out.writable_layer.fs_id.mountpoint = self.images.root if self.images is not None else ""
        out.writable_layer.used_bytes.value = s.writable_bytes
        out.writable_layer.inodes_used.value = s.writable_inodes
        return out

    @rpc
    def ContainerStats(self, request: Any, context: Any) -> Any:
        ctr = self._refresh(self._container(request.container_id, "ContainerStats"))
        return api_pb2.ContainerStatsResponse(stats=self._ctr_stats(ctr))

    def _stats_of(self, ctrs: list[ContainerRecord]) -> list[Any]:
        out = []
        for ctr in ctrs:
            try:
                out.append(self._ctr_stats(ctr))
            except Exception as e:  # a container removed meanwhile is skipped, as containerd does
                log.info("stats of %s: %s", ctr.id, e)
        return out

    @rpc
    def ListContainerStats(self, request: Any, context: Any) -> Any:
        db, _ = self._require()
        f = request.filter if request.HasField("filter") else None
        return api_pb2.ListContainerStatsResponse(stats=self._stats_of(self._containers_matching(db, f)))

    def _pod_stats(self, pod: PodRecord) -> Any:
        assert self.db is not None
        ctrs = [self._refresh(c) for c in self.db.containers(pod.id)]
        stats = self._stats_of([c for c in ctrs if c.state == CONTAINER_RUNNING])
        out = api_pb2.PodSandboxStats(attributes=api_pb2.PodSandboxAttributes(
            id=pod.id, metadata=api_pb2.PodSandboxMetadata(name=pod.name, namespace=pod.namespace, uid=pod.uid,
                                                           attempt=pod.attempt),
            labels=pod.labels, annotations=pod.annotations))
        s = self.sandboxes.stats(pod) if self.sandboxes is not None else oci.Stats(timestamp=time.time_ns())
        now = s.timestamp  # the pod's cgroup: its containers, and whatever else runs in the pod
        out.linux.cpu.timestamp = now
        out.linux.cpu.usage_core_nano_seconds.value = s.cpu_usage_ns
        out.linux.memory.timestamp = now
        out.linux.memory.working_set_bytes.value = s.memory_working_set_bytes
        out.linux.memory.usage_bytes.value = s.memory_usage_bytes
        out.linux.memory.rss_bytes.value = s.memory_rss_bytes
        out.linux.memory.page_faults.value = s.page_faults
        out.linux.memory.major_page_faults.value = s.major_page_faults
        out.linux.process.timestamp = now
        out.linux.containers.extend(stats)
        return out

    @rpc
    def PodSandboxStats(self, request: Any, context: Any) -> Any:
        pod = self._pod(request.pod_sandbox_id, "PodSandboxStats")
        return api_pb2.PodSandboxStatsResponse(stats=self._pod_stats(pod))

    @rpc
    def ListPodSandboxStats(self, request: Any, context: Any) -> Any:
        db, _ = self._require()
        f = request.filter if request.HasField("filter") else None
        out = []
        for pod in db.pods():
            if f is not None and (f.id and not pod.id.startswith(f.id) or
                                  not labels_match(f.label_selector, pod.labels)):
                continue
            out.append(self._pod_stats(pod))
        return api_pb2.ListPodSandboxStatsResponse(stats=out)

    # ---- events --------------------------------------------------------------------------------------------

    def GetContainerEvents(self, request: Any, context: Any) -> Iterator[Any]:
        q = self.events.subscribe()
        try:
            while context.is_active():
                try:
                    yield q.get(timeout=0.5)
                except queue.Empty:
                    continue
        finally:
            self.events.unsubscribe(q)


def _seccomp_from_path(path: str) -> Any:
    """The deprecated ``seccomp_profile_path`` field: ``runtime/default``, ``docker/default``,
    ``unconfined``, ``localhost/<path>``; anything else is refused."""
    if not path or path == "unconfined":
        return oci.Seccomp(type="Unconfined")
    if path in ("runtime/default", "docker/default"):
        return oci.Seccomp(type="RuntimeDefault")
    if path.startswith("localhost/"):
        return oci.Seccomp(type="Localhost", localhost_ref=path.removeprefix("localhost/"))
    raise invalid(f"CreateContainer: unknown seccomp profile {path!r} (use runtime/default, unconfined or "
                  "localhost/<path>)")


def _min_oom_score_adj() -> int:
    """This process's oom_score_adj: a container may not get a lower one (containerd's restrict_oom_score_adj),
    which without CAP_SYS_RESOURCE the kernel refuses anyway."""
    try:
        with open("/proc/self/oom_score_adj") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


def resources_of(r: Any) -> Any:
    """CRI ``LinuxContainerResources`` as the OCI layer's ``Resources`` (oom_score_adj clamped, see above)."""
    return oci.Resources(
        cpu_period=r.cpu_period, cpu_quota=r.cpu_quota, cpu_shares=r.cpu_shares,
        memory_limit_in_bytes=r.memory_limit_in_bytes,
        oom_score_adj=min(1000, max(r.oom_score_adj, _min_oom_score_adj())),
        cpuset_cpus=r.cpuset_cpus, cpuset_mems=r.cpuset_mems,
        hugepage_limits={h.page_size: h.limit for h in r.hugepage_limits},
        memory_swap_limit_in_bytes=r.memory_swap_limit_in_bytes)


__all__ = ["RuntimeServicer", "SandboxError"]
