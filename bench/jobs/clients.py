"""JSON-over-HTTP clients for the bench jobs: stdlib, httpx, and httpx's async client.

The stdlib client costs about a tenth of httpx's CPU per request, so with it the benchmark
measures the engine rather than the client; the httpx ones compare like with like against
the hand-written asyncio + httpx script.
"""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any
from urllib.parse import urlsplit

import httpx


def _checked(path: str, status: int, data: bytes) -> dict[str, Any]:
    if status != 200:
        raise RuntimeError(f"{path} answered {status}: {data[:200]!r}")
    return json.loads(data)


class JsonSession:
    """A keep-alive session with one stdlib connection per thread."""

    def __init__(self, url: str) -> None:
        self._address = urlsplit(url).netloc
        self._local = threading.local()

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = http.client.HTTPConnection(self._address)
        connection.request("POST", path, json.dumps(payload), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return _checked(path, response.status, response.read())


def limits(concurrency: int) -> httpx.Limits:
    """A pool as large as the calls in flight, so no call waits for a connection."""
    return httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)


class HttpxSession:
    """`httpx.Client`, thread-safe, shared by the worker's threads."""

    def __init__(self, url: str, concurrency: int) -> None:
        self._client = httpx.Client(base_url=url, limits=limits(concurrency), timeout=30)

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        response = self._client.post(path, json=payload)
        return _checked(path, response.status_code, response.content)

    def close(self) -> None:
        self._client.close()


class AsyncHttpxSession:
    """`httpx.AsyncClient`, for `async def` transforms on the worker's event loop."""

    def __init__(self, url: str, concurrency: int) -> None:
        self._client = httpx.AsyncClient(base_url=url, limits=limits(concurrency), timeout=30)

    async def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        response = await self._client.post(path, json=payload)
        return _checked(path, response.status_code, response.content)

    async def aclose(self) -> None:
        await self._client.aclose()


def session(kind: str, url: str, concurrency: int) -> Any:
    """The client named by `kind`: "stdlib", "httpx" or "httpx-async"."""
    if kind == "httpx":
        return HttpxSession(url, concurrency)
    if kind == "httpx-async":
        return AsyncHttpxSession(url, concurrency)
    return JsonSession(url)
