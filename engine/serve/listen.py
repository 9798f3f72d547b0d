"""`rivulet serve`: the HTTP app on uvicorn, in one process or several.

Everything that can be wrong (the job, its secrets, the API key's secret) is checked here
first, so a bad setting is one clear error before any process starts. Several processes
(`workers > 1`) are uvicorn's: each imports the job anew, builds its own resources and
keeps to its share of every rate limit (or, with `--limiter`, takes from the buckets in Redis
that every process shares); their settings travel in one environment variable.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass

import uvicorn
from uvicorn.supervisors import Multiprocess

from engine.define.secrets import Secret
from engine.errors import SettingsError
from engine.plan.limiter import check_limiter
from engine.plan.secrets import secret_value
from engine.serve.server import FeatureServer

log = logging.getLogger("rivulet")
SETTINGS_VARIABLE = "RIVULET_SERVE_SETTINGS"
GRACE_SECONDS = 30  # how long SIGTERM waits for in-flight requests before closing them


@dataclass(frozen=True)
class ServeSettings:
    """What `rivulet serve` was asked: the job, where to listen, how many processes, the
    secrets file, the API key's secret as "SCOPE/KEY", the shared rate limiter's URL, and
    the online store (its URL, or the SQLite file beside the offline store `output`)."""

    job: str
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    secrets_file: str | None = None
    api_key_secret: str | None = None
    limiter: str | None = None
    online_store: str | None = None
    output: str = "offline_store"

    def feature_server(self) -> FeatureServer:
        """The FeatureServer of one server process."""
        return FeatureServer(
            self.job,
            secrets_file=self.secrets_file,
            processes=self.workers,
            limiter=self.limiter,
            online_store=self.online_store,
            output=self.output,
        )

    def api_key(self) -> str | None:
        """The API key requests must send, or None for none."""
        if self.api_key_secret is None:
            return None
        scope, slash, key = self.api_key_secret.partition("/")
        if not (scope and slash and key):
            raise SettingsError(
                f"--api-key-secret '{self.api_key_secret}' is not SCOPE/KEY, such as "
                f"serving/api_key."
            )
        return secret_value(Secret(scope, key), "--api-key-secret", secrets_file=self.secrets_file)


def listen(settings: ServeSettings, announce: Callable[[str], None] = print) -> None:
    """Serve until SIGINT or SIGTERM; in-flight requests finish first (up to a grace).
    `announce` gets one line saying where, once every setting checked out."""
    if settings.workers < 1:
        raise SettingsError(f"--workers must be at least 1, not {settings.workers}.")
    if settings.limiter:
        check_limiter(settings.limiter)
    server = settings.feature_server()
    api_key = settings.api_key()
    if api_key is None and not _loopback(settings.host):
        log.warning(
            "Serving on %s without an API key: anyone who can reach it can call the "
            "feature views (and spend their APIs' quota); pass --api-key-secret SCOPE/KEY.",
            settings.host,
        )
    announce(
        f"Serving job '{server.job.name}' ({', '.join(sorted(server.servable))}) on "
        f"http://{settings.host}:{settings.port} with {settings.workers} process(es): "
        f"POST /api/v1/feature-service/get-features; GET /health, /metrics, /docs."
    )
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": GRACE_SECONDS,
    }
    for stop in (signal.SIGINT, signal.SIGTERM):
        # uvicorn drains on these, then passes each on to the handler it found: a stop after
        # a clean drain is a clean exit (0), not a death by signal.
        signal.signal(stop, _drained)
    if settings.workers == 1:
        from engine.serve.app import create_app

        uvicorn.run(create_app(server, api_key), **options)
        return
    metrics_dir = tempfile.mkdtemp(prefix="rivulet-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ[SETTINGS_VARIABLE] = json.dumps(asdict(settings))
    config = _TcpConfig(
        "engine.serve.listen:app_from_environment",
        factory=True,
        workers=settings.workers,
        **options,
    )
    try:
        Multiprocess(config, sockets=[config.bind_socket()]).run()  # what uvicorn.run does
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def app_from_environment() -> object:
    """The app of one of several server processes, from the parent's settings."""
    from engine.serve.app import create_app

    settings = ServeSettings(**json.loads(os.environ[SETTINGS_VARIABLE]))
    return create_app(settings.feature_server(), settings.api_key())


class _TcpConfig(uvicorn.Config):
    """uvicorn's Config, its listening socket marked TCP. uvicorn binds the socket of
    several processes with `proto` 0 (Kludex/uvicorn#3149); accepted connections inherit it,
    asyncio then leaves Nagle's algorithm on, and each response on a kept-alive connection
    waited ~40 ms for the client's delayed ACK."""

    def bind_socket(self) -> socket.socket:
        bound = super().bind_socket()
        return socket.socket(bound.family, bound.type, socket.IPPROTO_TCP, bound.detach())


def _drained(signum: int, frame: object) -> None:
    """Nothing left to do: uvicorn has drained the requests and closed the app."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
