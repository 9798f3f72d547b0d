"""Which errors are worth retrying, why, and how long the server asked us to wait.

Recognizes the errors of httpx, requests, urllib and the openai SDK by their attributes
and base classes, so none of those libraries has to be imported here.
"""

from __future__ import annotations

from typing import Any

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_TIMEOUT_NAMES = ("Timeout", "TimeoutError", "TimeoutException", "APITimeoutError", "ReadTimeout")
_CONNECTION_NAMES = (
    "ConnectionError",
    "APIConnectionError",
    "ConnectError",
    "NetworkError",
    "RemoteProtocolError",
    "ProtocolError",
    "TransportError",
)


def status_code(exc: BaseException) -> int | None:
    """The HTTP status an error carries (openai, httpx, requests, urllib), if any."""
    for holder in (exc, getattr(exc, "response", None)):
        for name in ("status_code", "status", "code"):
            value = getattr(holder, name, None)
            if isinstance(value, int) and 100 <= value <= 599:
                return value
    return None


def transient_cause(exc: BaseException) -> str | None:
    """'429', '5xx', 'timeout' or 'connection' for an error worth retrying; None otherwise."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & set(_TIMEOUT_NAMES):
        return "timeout"
    code = status_code(exc)
    if code is not None:
        if code not in RETRYABLE_STATUS:
            return None
        return "429" if code == 429 else "5xx" if code >= 500 else str(code)
    if names & set(_CONNECTION_NAMES) or isinstance(exc, ConnectionError):
        return "connection"
    return None


def is_connection_error(exc: BaseException) -> bool:
    """A timeout or a connection error: what counts toward a resource being broken."""
    return transient_cause(exc) in ("connection", "timeout")


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked to wait (`retry-after-ms` or `Retry-After` in seconds)."""
    headers: Any = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        headers = getattr(exc, "headers", None)
    if headers is None:
        return None
    try:
        milliseconds = headers.get("retry-after-ms")
        if milliseconds is not None:
            return float(milliseconds) / 1000
        seconds = headers.get("retry-after")
        return float(seconds) if seconds is not None else None
    except (TypeError, ValueError):  # an HTTP date, or garbage: fall back to backoff
        return None
