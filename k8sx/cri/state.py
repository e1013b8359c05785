"""The runtime's memory of pods and containers: SQLite (WAL) in the state dir, one transaction per change.

Why: ``k8sx runtime serve`` may be killed at any instant (``kill -9``, OOM, a node reboot of the
service only) while conmon keeps the containers running. Everything the CRI reports that cannot be
re-read from the kernel or from runc (names, labels, the configs, the pod's IPs and namespace files,
log paths, timestamps, exit codes once reaped) is therefore committed before an RPC answers, each
change as one atomic SQL statement, so a restarted server lists every pod and container exactly as
it was; a container's *live* state is then refreshed from conmon/runc by the container layer.

Records are plain dataclasses; the CRI configs are kept as their protobuf bytes (opaque here), the
rest as JSON. Readers (the CLI's completer) may open the file read-only with ``sqlite3`` alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

DB_NAME = "runtime.db"

# CRI states, by their protobuf names (PodSandboxState / ContainerState).
POD_READY = "SANDBOX_READY"
POD_NOTREADY = "SANDBOX_NOTREADY"
CONTAINER_CREATED = "CONTAINER_CREATED"
CONTAINER_RUNNING = "CONTAINER_RUNNING"
CONTAINER_EXITED = "CONTAINER_EXITED"
CONTAINER_UNKNOWN = "CONTAINER_UNKNOWN"

SCHEMA = """
CREATE TABLE IF NOT EXISTS pods (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, namespace TEXT NOT NULL, uid TEXT NOT NULL,
    attempt INTEGER NOT NULL, state TEXT NOT NULL, created_ns INTEGER NOT NULL, doc TEXT NOT NULL,
    config BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY, pod_id TEXT NOT NULL, name TEXT NOT NULL, attempt INTEGER NOT NULL,
    state TEXT NOT NULL, created_ns INTEGER NOT NULL, doc TEXT NOT NULL, config BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS containers_pod ON containers (pod_id);
"""


@dataclass
class PodRecord:
    """One pod sandbox. ``namespaces`` maps ``net``/``ipc``/``uts``/``pid`` to their pinned files."""

    id: str
    name: str
    namespace: str
    uid: str
    attempt: int
    state: str
    created_ns: int
    config: bytes = b""  # PodSandboxConfig, serialized
    runtime_handler: str = ""
    namespaces: dict[str, str] = field(default_factory=dict)
    host_network: bool = False
    ips: list[str] = field(default_factory=list)
    network: str = ""  # the CNI network (name) the pod was attached to, "" when none
    ifname: str = "eth0"
    cni_capability_args: dict[str, Any] = field(default_factory=dict)
    cni_args: list[list[str]] = field(default_factory=list)
    cgroup_parent: str = ""  # the pod's cgroup: its containers' cgroups are made beneath it
    shm: str = ""  # what the containers get as /dev/shm: the pod's tmpfs, or the node's with host IPC
    cgroup_owned: bool = False  # the runtime made that cgroup (removes it with the pod); kubelet's are not ours
    pid_init: int = 0  # pid of the process holding a pod-shared pid namespace
    dir: str = ""  # per-pod files: hostname, resolv.conf, hosts, namespace pins
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class ContainerRecord:
    """One container; ``state`` is the last known one, refreshed from the container layer."""

    id: str
    pod_id: str
    name: str
    attempt: int
    state: str
    created_ns: int
    config: bytes = b""  # ContainerConfig, serialized
    image: str = ""  # the image as asked for (ImageSpec.image)
    image_ref: str = ""  # the image id it resolved to
    log_path: str = ""
    started_ns: int = 0
    finished_ns: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    pid: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # what the container layer wants back


_POD_COLUMNS = ("id", "name", "namespace", "uid", "attempt", "state", "created_ns")
_CTR_COLUMNS = ("id", "pod_id", "name", "attempt", "state", "created_ns")


def _doc(record: Any, columns: tuple[str, ...]) -> str:
    d = dataclasses.asdict(record)
    for k in (*columns, "config"):
        d.pop(k)
    return json.dumps(d, sort_keys=True)


def _load(cls: type, columns: tuple[str, ...], row: tuple[Any, ...]) -> Any:
    values = dict(zip((*columns, "doc", "config"), row, strict=True))
    doc = json.loads(values.pop("doc"))
    known = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in doc.items() if k in known})
    values["config"] = bytes(values["config"] or b"")
    return cls(**values)


class StateDB:
    """Pods and containers in ``<state>/runtime.db``; every method is one transaction, safe across threads."""

    def __init__(self, state_dir: str) -> None:
        os.makedirs(state_dir, mode=0o711, exist_ok=True)
        self.path = os.path.join(state_dir, DB_NAME)
        self._local = threading.local()
        self._conn().executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process kill
            self._local.db = db
        return db

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # ---- pods -------------------------------------------------------------------------------------------

    def put_pod(self, pod: PodRecord) -> None:
        with self._tx() as db:
            db.execute(f"INSERT OR REPLACE INTO pods ({', '.join(_POD_COLUMNS)}, doc, config) "
                       f"VALUES ({', '.join('?' * (len(_POD_COLUMNS) + 2))})",
                       (*(getattr(pod, c) for c in _POD_COLUMNS), _doc(pod, _POD_COLUMNS), pod.config))

    def pod(self, pod_id: str) -> PodRecord | None:
        row = self._conn().execute(f"SELECT {', '.join(_POD_COLUMNS)}, doc, config FROM pods WHERE id=?",
                                   (pod_id,)).fetchone()
        return _load(PodRecord, _POD_COLUMNS, row) if row else None

    def pods(self) -> list[PodRecord]:
        rows = self._conn().execute(f"SELECT {', '.join(_POD_COLUMNS)}, doc, config FROM pods ORDER BY created_ns")
        return [_load(PodRecord, _POD_COLUMNS, r) for r in rows]

    def pod_ids(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT id FROM pods")]

    def ready_pod_by_name(self, name: str, namespace: str, uid: str, attempt: int) -> PodRecord | None:
        """The pod with this metadata (the CRI forbids two sandboxes with the same name/attempt)."""
        row = self._conn().execute(
            f"SELECT {', '.join(_POD_COLUMNS)}, doc, config FROM pods "
            "WHERE name=? AND namespace=? AND uid=? AND attempt=?", (name, namespace, uid, attempt)).fetchone()
        return _load(PodRecord, _POD_COLUMNS, row) if row else None

    def set_pod_state(self, pod_id: str, state: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE pods SET state=? WHERE id=?", (state, pod_id))

    def delete_pod(self, pod_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM containers WHERE pod_id=?", (pod_id,))
            db.execute("DELETE FROM pods WHERE id=?", (pod_id,))

    # ---- containers -------------------------------------------------------------------------------------

    def put_container(self, ctr: ContainerRecord) -> None:
        with self._tx() as db:
            db.execute(f"INSERT OR REPLACE INTO containers ({', '.join(_CTR_COLUMNS)}, doc, config) "
                       f"VALUES ({', '.join('?' * (len(_CTR_COLUMNS) + 2))})",
                       (*(getattr(ctr, c) for c in _CTR_COLUMNS), _doc(ctr, _CTR_COLUMNS), ctr.config))

    def update_container_if(self, ctr: ContainerRecord, state: str) -> bool:
        """Save ``ctr`` only if its stored state is still ``state`` (and it was not removed meanwhile).

        One statement, so of several threads noticing the same change (an exit seen by the exit
        watcher and by a status call at once) exactly one gets True and reports it."""
        with self._tx() as db:
            cur = db.execute(f"UPDATE containers SET {', '.join(f'{c}=?' for c in _CTR_COLUMNS)}, doc=?, config=? "
                             "WHERE id=? AND state=?",
                             (*(getattr(ctr, c) for c in _CTR_COLUMNS), _doc(ctr, _CTR_COLUMNS), ctr.config,
                              ctr.id, state))
            return cur.rowcount == 1

    def add_container(self, ctr: ContainerRecord) -> bool:
        """Insert a new container unless the pod already has one of that name and attempt (False then)."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM containers WHERE pod_id=? AND name=? AND attempt=?",
                          (ctr.pod_id, ctr.name, ctr.attempt)).fetchone():
                return False
            db.execute(f"INSERT INTO containers ({', '.join(_CTR_COLUMNS)}, doc, config) "
                       f"VALUES ({', '.join('?' * (len(_CTR_COLUMNS) + 2))})",
                       (*(getattr(ctr, c) for c in _CTR_COLUMNS), _doc(ctr, _CTR_COLUMNS), ctr.config))
            return True

    def container(self, ctr_id: str) -> ContainerRecord | None:
        row = self._conn().execute(f"SELECT {', '.join(_CTR_COLUMNS)}, doc, config FROM containers WHERE id=?",
                                   (ctr_id,)).fetchone()
        return _load(ContainerRecord, _CTR_COLUMNS, row) if row else None

    def containers(self, pod_id: str | None = None) -> list[ContainerRecord]:
        q = f"SELECT {', '.join(_CTR_COLUMNS)}, doc, config FROM containers"
        rows = (self._conn().execute(q + " WHERE pod_id=? ORDER BY created_ns", (pod_id,)) if pod_id is not None
                else self._conn().execute(q + " ORDER BY created_ns"))
        return [_load(ContainerRecord, _CTR_COLUMNS, r) for r in rows]

    def container_ids(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT id FROM containers")]

    def delete_container(self, ctr_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM containers WHERE id=?", (ctr_id,))


def resolve_prefix(ids: list[str], prefix: str) -> str | None:
    """The one id starting with ``prefix`` (crictl accepts unique prefixes); None when none or ambiguous."""
    if prefix in ids:
        return prefix
    found = [i for i in ids if i.startswith(prefix)] if prefix else []
    return found[0] if len(found) == 1 else None
