"""Rate limits shared by every worker of every run, on any machine: token buckets in Redis.

Each rate-limited provider is one bucket, `rivulet:rate:<provider>`, kept by a short GCRA
script that Redis runs atomically: it grants `n` tokens when the bucket's theoretical
arrival time allows them, or says how long to wait. A worker takes tokens in small leases
(about 1/20 s of the rate, at most half the burst) to save round trips. A lease is used
within the time the full rate would take to use it, and the bucket's burst is lowered by
the lease size, so that in any one-second window the API sees at most rate + burst calls,
leases included. When Redis cannot be reached the call waits and retries, for up to
`UNREACHABLE_SECONDS`, then fails naming the limiter: never a call past the limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from engine.errors import ResourceError, one_line
from engine.runtime.stopping import Stopper

UNREACHABLE_SECONDS = 30.0  # how long calls wait for a lost Redis before they fail
KEY = "rivulet:rate:{}"
GCRA = """
local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local after = tat + n / rate
local wait = after - burst / rate - now
if wait > 0 then return tostring(wait) end
redis.call('SET', KEYS[1], tostring(after), 'PX', math.ceil((after - now) * 1000) + 1000)
return '0'
"""


def lease_size(rate: float, burst: float) -> int:
    """Tokens one round trip takes: ~50 ms of the rate, at most half the burst, at least 1."""
    return max(1, min(int(burst // 2), round(rate / 20)))


class SharedBuckets:
    """The token buckets at `url` (redis://HOST:PORT/DB), for the providers in `rates`
    (the run's whole limit: requests per second, burst), taken from with `take`.

    Example:
        buckets = SharedBuckets("redis://127.0.0.1:6379/0", {"openai": (100.0, 10.0)})
        await buckets.take("openai", 1)
    """

    def __init__(
        self,
        url: str,
        rates: Mapping[str, tuple[float, float]],
        stopper: Stopper,
        clock: Any = time.monotonic,
    ) -> None:
        import redis.asyncio as redis

        self.url = url
        self._client = redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._script = self._client.register_script(GCRA)
        self._rates = rates
        self._stopper = stopper
        self._clock = clock
        self._leases: dict[str, tuple[int, float]] = {}  # tokens left, usable until
        self._leasing: dict[str, asyncio.Lock] = {}

    async def take(self, name: str, tokens: float) -> None:
        """Wait until `tokens` of the provider's bucket are granted."""
        rate, burst = self._rates[name]
        size = lease_size(rate, burst)
        # Leased tokens are used up to size / rate after their grant: the bucket keeps that
        # much of its burst back, so the calls any second sees stay within rate + burst.
        kept = burst - size if size > 1 else burst  # >= size, as size <= burst / 2
        needed = max(1, round(tokens))
        while needed:
            left, until = self._leases.get(name, (0, 0.0))
            if left and self._clock() <= until:
                used = min(left, needed)
                self._leases[name] = (left - used, until)
                needed -= used
            else:
                await self._lease(name, rate, kept, min(max(needed, size), kept))

    async def _lease(self, name: str, rate: float, burst: float, want: int) -> None:
        """Lease `want` tokens, or wait as long as Redis says they need. One lease is asked
        for at a time per provider: concurrent calls wait for it rather than each leasing
        its own, which would replace the lease another call had just been granted."""
        lock = self._leasing.setdefault(name, asyncio.Lock())
        async with self._stopper.waiting():
            await lock.acquire()
        try:
            left, until = self._leases.get(name, (0, 0.0))
            if left and self._clock() <= until:
                return  # leased while this call waited for the lock
            wait = await self._grant(name, rate, burst, want)
            if wait > 0:
                await self._stopper.sleep(wait)
                return
            self._leases[name] = (want, self._clock() + want / rate)
        finally:
            lock.release()

    async def close(self) -> None:
        await self._client.aclose()

    async def _grant(self, name: str, rate: float, burst: float, n: int) -> float:
        """Seconds to wait before `n` tokens fit (0: granted now), retrying a lost Redis."""
        began = self._clock()
        while True:
            try:
                return float(await self._script(keys=[KEY.format(name)], args=[rate, burst, n]))
            except Exception as exc:  # redis-py's ConnectionError, TimeoutError, ...
                if self._clock() - began > UNREACHABLE_SECONDS:
                    raise ResourceError(
                        f"The shared rate limiter at {self.url} could not be reached for "
                        f"{UNREACHABLE_SECONDS:g} s ({type(exc).__name__}: {one_line(exc)}); "
                        f"calls of '{name}' stopped rather than go past its rate limit.",
                        provider=name,
                    ) from None
                await self._stopper.sleep(0.5)
