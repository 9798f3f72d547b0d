"""JSON-over-HTTP clients for the bench jobs: stdlib, httpx, and httpx's async client.

The stdlib client costs about a tenth of httpx's CPU per request, so with it the benchmark
measures the engine rather than the client; the httpx ones compare like with like against
the hand-written asyncio + httpx script.
"""

from __future__ import annotations

import asyncio
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


class AsyncStreamsSession:
    """HTTP/1.1 keep-alive POSTs over asyncio streams: a pool of connections, one request
    at a time on each, no threads. As lean as an asyncio client gets, so what is measured
    is the engine's own cost per call."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        reader, writer = self._idle.pop() if self._idle else await self._connect()
        body = json.dumps(payload).encode()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self._host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        data = await reader.readexactly(length)
        self._idle.append((reader, writer))
        return _checked(path, status, data)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self._host, self._port)

    async def aclose(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


def session(kind: str, url: str, concurrency: int) -> Any:
    """The client named by `kind`: "stdlib", "httpx", "httpx-async" or "streams" (async)."""
    if kind == "streams":
        return AsyncStreamsSession(url)
    if kind == "httpx":
        return HttpxSession(url, concurrency)
    if kind == "httpx-async":
        return AsyncHttpxSession(url, concurrency)
    return JsonSession(url)
