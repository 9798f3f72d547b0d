"""A load generator in a process of its own: `python -m bench.load URL --clients 32 ...`.

Each client keeps one HTTP/1.1 connection and sends get-features requests one after another
(raw asyncio streams: a few µs of CPU a request, so the generator costs the server little);
it prints one JSON line: requests, errors, seconds, and every latency in ms.

`--hot N --repeat P` makes a share P of the requests ask for one of N texts (a cache's
favourite mix); the rest are unique.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from urllib.parse import urlsplit

PATH = "/api/v1/feature-service/get-features"


async def client(
    host: str, port: int, service: str, texts: list[str], latencies: list[float]
) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    errors = 0
    for text in texts:
        body = json.dumps(
            {"params": {"featureServiceName": service, "requestContextMap": {"input": text}}}
        ).encode()
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        began = time.perf_counter()
        writer.write(head + body)
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        latencies.append((time.perf_counter() - began) * 1000)
        errors += not status_line.startswith(b"HTTP/1.1 200")
    writer.close()
    return errors


async def main(args: argparse.Namespace) -> dict:
    where = urlsplit(args.url)
    rng = random.Random(args.seed)
    hot = [f"hot text {i}" for i in range(args.hot)]
    texts = [
        rng.choice(hot) if hot and rng.random() < args.repeat else f"text {i} {rng.random()}"
        for i in range(args.requests)
    ]
    shares = [texts[i :: args.clients] for i in range(args.clients)]
    latencies: list[float] = []
    began = time.perf_counter()
    errors = await asyncio.gather(
        *(client(where.hostname, where.port, args.service, s, latencies) for s in shares)
    )
    seconds = time.perf_counter() - began
    return {
        "requests": args.requests,
        "errors": sum(errors),
        "seconds": seconds,
        "latencies_ms": latencies,
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--service", default="realtime_embedding")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--hot", type=int, default=0)
    parser.add_argument("--repeat", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse()))))
