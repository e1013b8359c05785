"""A Kubernetes API emulator for tests, since no kube-apiserver can be had offline here.

kmock's ``KubernetesEmulator`` keeps objects in memory and serves lists, gets and watches; it runs
here in a thread with its own event loop on 127.0.0.1, and ``kubeconfig()`` writes a kubeconfig
pointing at it. Every part of k8sx that talks to an API server (crd, flannel's kube subnet manager,
operators) tests against this one fixture. It does not validate or default objects, nor run
controllers (see ../shared/reference/k8s-api-emulator.md): tests must not claim more than that.
On top of stock kmock it replaces objects on PUT and honours ``?dryRun=All`` (nothing stored).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import urllib.request
from typing import Any

import yaml


class ApiEmulator:
    """Start with ``with ApiEmulator() as api:``; ``api.url``, ``api.create(path, obj)``, ``api.requests``."""

    def __init__(self) -> None:
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="k8sxt-kubeapi", daemon=True)
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
        except BaseException as e:  # surfaced to the test by __enter__
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        import kmock

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with _emulator_class()() as emulator, kmock.Server(emulator) as server:
            emulator.resources.load_bundled()
            self.kmock = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")

    def create(self, path: str, obj: dict[str, Any]) -> Any:
        return self.request("POST", path, obj)

    @property
    def requests(self) -> list[Any]:
        """The requests the emulator received (kmock's request log)."""
        return list(self.kmock)  # the emulator is itself the view of all requests it served

    def kubeconfig(self, path: str, context: str = "emulator", namespace: str | None = None,
                   extra_contexts: tuple[str, ...] = ()) -> str:
        """Write a kubeconfig whose current context points at this emulator; returns ``path``."""
        return write_kubeconfig(path, self.url, context, namespace, extra_contexts)


def _emulator_class() -> type:
    """kmock's emulator plus two things a client that writes needs (``crd apply|diff``):

    * ``PUT`` on a named object replaces it (stock kmock answers 404);
    * ``?dryRun=All`` on POST/PUT/PATCH answers as the server would (409 if a created object exists,
      404 if a replaced one does not) and echoes the body *without storing it* (stock kmock stores).

    A real server would also validate and default the object on a dry run; this one does not.
    """
    import kmock
    from kmock import KubernetesObjectNotFoundError
    from kmock._internal.k8s import KubernetesObjectConflictError

    class Emulator(kmock.KubernetesEmulator):  # type: ignore[misc,valid-type]
        async def _handle(self, request: Any) -> Any:
            import aiohttp.web

            method = str(getattr(request.method, "value", request.method)).upper()
            if request.resource is None or method not in ("POST", "PUT", "PATCH"):
                return await super()._handle(request)
            dry_run = request.params.get("dryRun") == "All"
            if not dry_run and method != "PUT":
                return await super()._handle(request)
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
                    self._objects[key].create(data)  # a new version of the object: the whole body
                    raw = self._objects[key].raw
                await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
                return aiohttp.web.json_response(raw)
            except Exception as e:
                return await self._render_error(e)

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
        "users": [{"name": "tester", "user": {"token": "k8sxt-token"}}],
        "contexts": [{"name": context, "context": ctx}]
        + [{"name": n, "context": {"cluster": "nowhere", "user": "tester"}} for n in extra_contexts],
    }
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f)
    return path
