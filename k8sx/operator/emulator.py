"""A Kubernetes API emulator for tests, since no kube-apiserver can be had offline.

Why it lives here: the operator projects k8sx scaffolds must run their end-to-end test against an API
server out of the box, and k8sx's own tests (crd apply, flannel's kube store, the operators) need the
same one. This module is that single place: k8sx's tests import it (tests/kubeapi.py) and
``k8sx operator init`` copies this very file into a new project (as ``tests/kubeapi.py``), so a
generated project needs neither k8sx nor this checkout to run its tests. Hence it imports nothing
from k8sx, only the standard library, PyYAML and (inside functions) kmock, pinned ``kmock==0.8``
because it leans on kmock internals.

kmock's ``KubernetesEmulator`` (by kopf's author) keeps objects in memory and serves lists, gets and
watches. It runs here in a thread with its own event loop on 127.0.0.1; ``kubeconfig()`` writes a
kubeconfig pointing at it. On top of stock kmock it adds what clients that write, and kopf, need:

* a CRD, once created, puts its served versions in discovery (kind, scope, verbs, subresources);
* a create answers 201 and fills ``uid``, the namespace from the URL, ``resourceVersion``,
  ``creationTimestamp`` and a name from ``generateName``; every write sets a new ``resourceVersion``,
  and a JSON patch whose ``test`` op fails answers 422 (kopf's optimistic concurrency);
* ``/api/v1/namespaces[/NAME]`` is understood (stock kmock answers 500) and ``default`` exists;
* equality-based label selectors (``a=b``, ``a!=b``, ``a``, ``!a``) on lists and watches;
* a watch starts after the ``resourceVersion`` it is given, loses no change made while it starts, and
  ends after ``timeoutSeconds``;
* ``PUT`` on a named object replaces it (409 if its resourceVersion is not the stored one), and
  ``?dryRun=All`` answers without storing anything.

Not emulated (tests must not claim it): validation, defaulting and pruning against the CRD schema,
garbage collection of owned objects, controllers (a Deployment never gets pods or status),
``generation``, spec/status isolation, set-based and field selectors, bookmarks, RBAC.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import os
import re
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from typing import Any

import yaml


class ApiEmulator:
    """Start with ``with ApiEmulator() as api:``; ``api.url``, ``api.create(path, obj)``, ``api.get(path)``,
    ``api.requests``, ``api.kubeconfig(path)``."""

    def __init__(self) -> None:
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="kubeapi-emulator", daemon=True)
        self._error: BaseException | None = None
        self.kmock: Any = None

    def __enter__(self) -> ApiEmulator:
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("the API emulator did not start")
        if self._error:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # surfaced to the caller by __enter__
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        import kmock

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with emulator_class()() as emulator, kmock.Server(emulator) as server:
            emulator.resources.load_bundled()
            now = _timestamp()
            emulator.objects["v1/namespaces", None, "default"] = {
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "default", "uid": str(uuid.uuid4()), "resourceVersion": emulator.next_rv(),
                             "creationTimestamp": now},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
            self.kmock = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": content_type})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")

    def create(self, path: str, obj: dict[str, Any]) -> Any:
        return self.request("POST", path, obj)

    def get(self, path: str) -> Any:
        """The object at ``path``, or None if there is none (404)."""
        import urllib.error

        try:
            return self.request("GET", path)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def patch(self, path: str, patch: dict[str, Any]) -> Any:
        return self.request("PATCH", path, patch, "application/merge-patch+json")

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def wait_for(self, path: str, predicate: Any = lambda obj: obj is not None, timeout: float = 30) -> Any:
        """Poll ``path`` until ``predicate(object or None)`` holds; the last object, or AssertionError."""
        deadline = time.monotonic() + timeout
        while True:
            obj = self.get(path)
            if predicate(obj):
                return obj
            if time.monotonic() > deadline:
                raise AssertionError(f"{path}: condition not met in {timeout:g}s; last seen: {obj!r}")
            time.sleep(0.1)

    @property
    def requests(self) -> list[Any]:
        """The requests the emulator received (kmock's request log)."""
        return list(self.kmock)  # the emulator is itself the view of all requests it served

    def kubeconfig(self, path: str, context: str = "emulator", namespace: str | None = None,
                   extra_contexts: tuple[str, ...] = ()) -> str:
        """Write a kubeconfig whose current context points at this emulator; returns ``path``."""
        return write_kubeconfig(path, self.url, context, namespace, extra_contexts)


def _timestamp() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
_SELECTOR_TERM = re.compile(r"^\s*(!)?\s*([A-Za-z0-9_./-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9_.-]*))?\s*$")


def parse_selector(text: str) -> list[tuple[str, str, str | None]]:
    """``a=b,c!=d,e,!f`` as ``(op, key, value)`` terms; ValueError on set-based terms (not emulated)."""
    terms: list[tuple[str, str, str | None]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = _SELECTOR_TERM.match(part)
        if not m or (m.group(1) and m.group(3)):
            raise ValueError(f"label selector term {part!r}: only =, ==, !=, KEY and !KEY are emulated")
        neg, key, op, value = m.groups()
        terms.append(("!" if neg else "exists", key, None) if not op else ("!=" if op == "!=" else "=", key, value))
    return terms


def selector_matches(terms: list[tuple[str, str, str | None]], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    for op, key, value in terms:
        if (op == "exists" and key not in labels) or (op == "!" and key in labels) \
                or (op == "=" and labels.get(key) != value) or (op == "!=" and labels.get(key) == value):
            return False
    return True


def _patch_parse_path() -> None:
    """kmock 0.8 reads ``/api/v1/namespaces/X`` as "namespace X" and fails on ``/api/v1/namespaces``;
    both are the cluster-scoped resource ``namespaces``. Patched once, in kmock's parser module."""
    from kmock._internal import parsing

    if getattr(parsing.parse_path, "_namespaces_fixed", False):
        return
    original = parsing.parse_path

    def parse_path(path: str) -> Any:
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and (
                len(parts) <= 4 or (len(parts) == 5 and parts[4] in ("status", "finalize"))):
            return parsing.ParsedPath(group="", version="v1", plural="namespaces", namespace=None,
                                      name=parts[3] if len(parts) > 3 else None,
                                      subresource=parts[4] if len(parts) > 4 else None)
        return original(path)

    parse_path._namespaces_fixed = True  # type: ignore[attr-defined]
    parsing.parse_path = parse_path


def emulator_class() -> type:
    """kmock's ``KubernetesEmulator`` with what clients that write, and kopf, need (see the module)."""
    import aiohttp.web
    import jsonpatch
    import kmock
    from kmock import KubernetesObjectNotFoundError
    from kmock._internal.k8s import KubernetesError, KubernetesObjectConflictError
    from kmock._internal.references import ResourceInfo, resource

    _patch_parse_path()
    crds = resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")

    class Emulator(kmock.KubernetesEmulator):  # type: ignore[misc,valid-type]
        _rv = itertools.count(1)

        def next_rv(self) -> str:
            return str(next(self._rv))

        async def _handle(self, request: Any) -> Any:
            method = str(getattr(request.method, "value", request.method)).upper()
            if request.resource is None:
                return await super()._handle(request)
            if request.params.get("labelSelector"):
                try:
                    parse_selector(request.params["labelSelector"])
                except ValueError as e:
                    return await self._render_error(KubernetesError(status=400, reason="BadRequest", message=str(e)))
            if method == "POST" and request.name is None and isinstance(request.data, dict) \
                    and request.params.get("dryRun") != "All":
                self._fill_create(request)
            if method == "PUT" or (method in ("POST", "PATCH") and request.params.get("dryRun") == "All"):
                return await self._write_ourselves(request, method)
            if method == "PATCH":
                self._stamp_patch(request)
            try:
                response = await super()._handle(request)
            except jsonpatch.JsonPatchException as e:  # a failed "test" op: a conflict, as the server says
                return await self._render_error(KubernetesError(status=422, reason="Invalid", message=str(e)))
            except KubernetesError as e:
                return await self._render_error(e)
            if method == "POST" and response.status == 200:
                response.set_status(201)
            if request.resource == crds and response.status < 300:
                self._register_crd(request, method)
            return response

        def _fill_create(self, request: Any) -> None:
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            if request.namespace and not meta.get("namespace"):
                meta["namespace"] = request.namespace
            meta["uid"] = str(uuid.uuid4())
            meta["resourceVersion"] = self.next_rv()
            meta["creationTimestamp"] = _timestamp()

        def _stamp_patch(self, request: Any) -> None:
            rv = self.next_rv()
            if isinstance(request.data, dict):
                request.data.setdefault("metadata", {})["resourceVersion"] = rv
            elif isinstance(request.data, list):  # JSON patch: after the ops (incl. kopf's "test" of the old rv)
                request.data.append({"op": "add", "path": "/metadata/resourceVersion", "value": rv})

        async def _write_ourselves(self, request: Any, method: str) -> Any:
            """PUT (stock kmock: 404) and dry runs (stock kmock stores them)."""
            dry_run = request.params.get("dryRun") == "All"
            data = request.data if isinstance(request.data, dict) else {}
            meta = data.get("metadata") or {}
            name = request.name or meta.get("name")
            key = (request.resource, request.namespace or meta.get("namespace"), name)
            try:
                async with self._lock:
                    exists = key in self._objects and not self._objects[key].deleted
                    if method == "POST" and exists:
                        raise KubernetesObjectConflictError()
                    if method != "POST" and not exists:
                        raise KubernetesObjectNotFoundError()
                    if dry_run:
                        body = data if method != "PATCH" else {**self._objects[key].raw, **data}
                        return aiohttp.web.json_response(body, status=201 if method == "POST" else 200)
                    old = self._objects[key].raw.get("metadata") or {}
                    if meta.get("resourceVersion") and meta["resourceVersion"] != old.get("resourceVersion"):
                        raise KubernetesError(status=409, reason="Conflict", message=(
                            f"the object has been modified (resourceVersion {old.get('resourceVersion')}, "
                            f"not {meta['resourceVersion']}); apply your changes to the latest version"))
                    data = {**data, "metadata": {**meta, "resourceVersion": self.next_rv(),
                                                 **{k: old[k] for k in ("uid", "creationTimestamp") if k in old}}}
                    self._objects[key].create(data)  # a new version of the object: the whole body
                    raw = self._objects[key].raw
                    await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
                if request.resource == crds:
                    self._register(raw)
                return aiohttp.web.json_response(raw)
            except Exception as e:
                return await self._render_error(e)

        def _register_crd(self, request: Any, method: str) -> None:
            if method == "POST":
                self._register(request.data)
            elif method == "DELETE" and request.name:
                key = (crds, None, request.name)
                if key not in self._objects or self._objects[key].deleted:
                    obj = self._objects[key].last.raw if key in self._objects else {}
                    for version in (obj.get("spec") or {}).get("versions") or []:
                        res = resource(obj["spec"]["group"], version["name"], obj["spec"]["names"]["plural"])
                        if res in self.resources:
                            del self.resources[res]

        def _register(self, crd: dict[str, Any]) -> None:
            """A CRD's served versions into discovery, as the API server does once it is established."""
            spec = crd.get("spec") or {}
            names = spec.get("names") or {}
            for version in spec.get("versions") or []:
                if not version.get("served", True):
                    continue
                self.resources[resource(spec["group"], version["name"], names["plural"])] = ResourceInfo(
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced", kind=names.get("kind"),
                    singular=names.get("singular") or names.get("kind", "").lower(), verbs=set(_ALL_VERBS),
                    shortnames=set(names.get("shortNames") or ()), categories=set(names.get("categories") or ()),
                    subresources=set((version.get("subresources") or {}).keys()))

        async def _serve_list(self, request: Any) -> Any:
            result = await super()._serve_list(request)
            terms = parse_selector(request.params.get("labelSelector", ""))
            result["items"] = [o for o in result["items"]
                               if selector_matches(terms, (o.get("metadata") or {}).get("labels"))]
            result["metadata"] = {"resourceVersion": str(next(self._rv))}
            return result

        async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
            """The objects changed since ``resourceVersion`` (all without one) as ADDED, then every change, with
            none lost in between: the bus position is taken under the same lock as the snapshot. Stock kmock
            replays every object even after a list, and kopf, handed an object it has already patched in its
            old version, retries its finalizer patch, fails the resourceVersion test and waits forever."""
            yield b""  # the headers go out now, even if nothing happens
            terms = parse_selector(request.params.get("labelSelector", ""))
            timeout = float(request.params.get("timeoutSeconds") or 0) or None
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            bus = self._buses[request.resource]

            def wanted(obj: dict[str, Any]) -> bool:
                meta = obj.get("metadata") or {}
                return ((request.namespace is None or meta.get("namespace") == request.namespace)
                        and (request.name is None or meta.get("name") == request.name)
                        and selector_matches(terms, meta.get("labels")))

            since = request.params.get("resourceVersion") or ""
            since_rv = int(since) if since.isdigit() else 0  # "0" or none: the current state first

            def changed_since(obj: dict[str, Any]) -> bool:
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
                return not rv.isdigit() or int(rv) > since_rv

            async with self._lock:
                marker = await bus.mark()
                current = [o.raw for (res, _, _), o in self._objects.items()
                           if res == request.resource and not o.deleted and changed_since(o.raw)]
            try:
                for obj in current:
                    if wanted(obj):
                        yield {"type": "ADDED", "object": obj}
                events = bus.stream(since=marker).__aiter__()
                while True:
                    left = None if deadline is None else deadline - loop.time()
                    if left is not None and left <= 0:
                        return
                    try:
                        event = await asyncio.wait_for(events.__anext__(), left)
                    except (TimeoutError, StopAsyncIteration):
                        return
                    if isinstance(event, dict) and wanted(event.get("object") or {}):
                        yield event
            finally:
                await bus.unmark(marker)

    return Emulator


def write_kubeconfig(path: str, server: str, context: str = "emulator", namespace: str | None = None,
                     extra_contexts: tuple[str, ...] = ()) -> str:
    """A kubeconfig with ``context`` on ``server`` and ``extra_contexts`` on a closed loopback port."""
    ctx: dict[str, Any] = {"cluster": "emulator", "user": "tester"}
    if namespace:
        ctx["namespace"] = namespace
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": "emulator", "cluster": {"server": server}},
                     {"name": "nowhere", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "tester", "user": {"token": "emulator-token"}}],
        "contexts": [{"name": context, "context": ctx}]
        + [{"name": n, "context": {"cluster": "nowhere", "user": "tester"}} for n in extra_contexts],
    }
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f)
    return path
