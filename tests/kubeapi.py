"""A Kubernetes API emulator for tests, since no kube-apiserver can be had offline here.

kmock's ``KubernetesEmulator`` keeps objects in memory and serves lists, gets and watches; it runs
here in a thread with its own event loop on 127.0.0.1, and ``kubeconfig()`` writes a kubeconfig
pointing at it. Every part of k8sx that talks to an API server (crd, flannel's kube subnet manager,
operators) tests against this one fixture. It does not validate or default objects, nor run
controllers (see ../shared/reference/k8s-api-emulator.md): tests must not claim more than that.
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
        async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
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
