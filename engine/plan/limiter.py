"""Checking, before any work, that the shared rate limiter (`--limiter`) answers."""

from __future__ import annotations

from urllib.parse import urlsplit

from engine.errors import SettingsError, one_line


def check_limiter(url: str) -> None:
    """Raise SettingsError naming the limiter unless `url` is a Redis that answers PING."""
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise SettingsError(
            f"--limiter '{url}' is not a Redis URL such as redis://127.0.0.1:6379/0."
        )
    try:
        import redis
    except ImportError:
        raise SettingsError(
            "--limiter needs the Redis client: pip install 'rivulet[redis]'."
        ) from None
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
    except (redis.RedisError, OSError, ValueError) as exc:
        raise SettingsError(
            f"The shared rate limiter at {url} does not answer ({type(exc).__name__}: "
            f"{one_line(exc)}); start Redis there, or leave out --limiter (and "
            f"RIVULET_LIMITER) to split each rate limit among the workers."
        ) from None
