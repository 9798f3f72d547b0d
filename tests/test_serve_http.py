"""`rivulet serve` as users run it: a real server process on a free loopback port, a real HTTP
client, the real openai client inside against the mock API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.mock_api import MockAPI, embed
from tests.conftest import REPO
from tests.test_serve import SEED

JOB = REPO / "tests" / "jobs" / "serving.py"
GET_FEATURES = "/api/v1/feature-service/get-features"
TOKEN = "sk-serving-secret-7d41"  # the provider's and the leaky view's secret
API_KEY = "rk-api-key-5c3e9a"
STARTUP_SECONDS = 90  # a server that is not up by then is broken, not slow


class Server:
    """`python -m engine serve JOB ARGS` on a free port, its stderr kept in a file."""

    def __init__(self, job: Path, *args: str, env: dict[str, str]) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr = Path(env["SERVE_LOG"]).with_name(f"server-{self.port}.log")
        command = [sys.executable, "-m", "engine", "serve", str(job), "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*command, *args],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=self.stderr.open("w"),
        )

    def wait_until_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the server exited: {self.log()}"
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling for the port to answer, not waiting out a race
        raise AssertionError(f"the server was not healthy within {STARTUP_SECONDS} s: {self.log()}")

    def log(self) -> str:
        return self.stderr.read_text()

    def stop(self) -> int:
        """SIGTERM, then its exit code (killed if it has not exited within a minute)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            self.proc.kill()


def _env(api: MockAPI, log: Path, **more: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": api.base_url,
        "RIVULET_SECRET_MOCK__TOKEN": TOKEN,
        "SERVE_LOG": str(log),
        **more,
    }


def ask(
    url: str, service: str = "realtime_embedding", headers: dict | None = None, **context: Any
) -> httpx.Response:
    body = {"params": {"featureServiceName": service, "requestContextMap": context}}
    return httpx.post(url + GET_FEATURES, json=body, headers=headers, timeout=60)


def events(log: Path) -> Counter[str]:
    """How many of each "event pid" line the provider logged."""
    return Counter(log.read_text().splitlines()) if log.exists() else Counter()


def pids(log: Path, event: str) -> Counter[str]:
    """How many times each process logged `event`."""
    return Counter(
        {line.split()[1]: n for line, n in events(log).items() if line.startswith(event)}
    )


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample, 0 when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    sample = f"{name}{{{want}}}" if want else name
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture
def served(tmp_path: Path, mock_api: MockAPI) -> Iterator[Server]:
    """One server process of tests/jobs/serving.py, guarded by an API key."""
    log = tmp_path / "provider.log"
    env = _env(mock_api, log, RIVULET_SECRET_SERVING__KEY=API_KEY)
    server = Server(JOB, "--api-key-secret", "serving/KEY", env=env)
    try:
        server.wait_until_healthy()
        yield server
    finally:
        server.stop()


def _authorized(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("workers", [1, 2])
def test_each_provider_is_built_once_per_server_process(
    tmp_path: Path, mock_api: MockAPI, workers: int
) -> None:
    log = tmp_path / "provider.log"
    server = Server(JOB, "--workers", str(workers), env=_env(mock_api, log))
    try:
        server.wait_until_healthy()
        texts = [f"text {i % 50}" for i in range(300)]
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda text: ask(server.url, input=text), texts))
        for text, answer in zip(texts, answers, strict=True):
            assert answer.status_code == 200, answer.text
            [value] = answer.json()["result"]["features"]
            assert value == pytest.approx(embed(text), rel=1e-6)
        deadline = time.monotonic() + STARTUP_SECONDS
        while len(pids(log, "build")) < workers:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)  # the second process may still be building
        text = httpx.get(server.url + "/metrics").text
        answered = metric(text, "rivulet_requests_total", code="200", endpoint="get-features")
    finally:
        assert server.stop() == 0
    built, torn = pids(log, "build"), pids(log, "teardown")
    assert len(built) == workers and set(built.values()) == {1}
    assert torn == built  # each process tore its one client down once
    assert answered == len(texts)  # one scrape counts every process's requests


def test_a_provider_that_fails_twice_at_start_up_then_builds(
    tmp_path: Path, mock_api: MockAPI
) -> None:
    log = tmp_path / "provider.log"
    server = Server(JOB, env=_env(mock_api, log, SERVE_FAILS="2"))
    try:
        server.wait_until_healthy()
        answer = ask(server.url, input="after two failures")
        builds = metric(
            httpx.get(server.url + "/metrics").text,
            "rivulet_resource_builds_total",
            provider="open_ai_client",
        )
    finally:
        server.stop()
    assert answer.status_code == 200
    assert answer.json()["result"]["features"][0] == pytest.approx(embed("after two failures"))
    seen = events(log)
    assert [seen[f"{e} {server.proc.pid}"] for e in ("attempt", "build")] == [3, 1]
    assert builds == 1


def test_a_provider_that_never_builds_keeps_health_and_requests_at_503(
    tmp_path: Path, mock_api: MockAPI
) -> None:
    log = tmp_path / "provider.log"
    server = Server(JOB, env=_env(mock_api, log, SERVE_FAILS="always"))
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while events(log)[f"attempt {server.proc.pid}"] < 4:  # INIT_RETRY's attempts
            assert time.monotonic() < deadline and server.proc.poll() is None, server.log()
            time.sleep(0.05)
        answer = ask(server.url, input="x")  # waits for the build to be given up
        health = httpx.get(server.url + "/health")
    finally:
        server.stop()
    for response in (answer, health):
        assert response.status_code == 503
        body = response.json()
        assert body["kind"] == "Resource error"
        assert "Resource provider 'open_ai_client' failed to build" in body["message"]
        assert "the model host refused attempt 4" in body["message"]


def test_dropped_connections_and_500s_mid_load_are_retried_and_the_client_rebuilt(
    tmp_path: Path,
) -> None:
    log = tmp_path / "provider.log"
    with MockAPI() as api:
        server = Server(JOB, env=_env(api, log))
        try:
            server.wait_until_healthy()
            texts = [f"load {i}" for i in range(200)]
            api.set_faults(drop_rate=0.15, error_rate=0.15)
            with ThreadPoolExecutor(32) as pool:
                during = list(pool.map(lambda text: ask(server.url, input=text), texts))
            api.set_faults(drop_rate=1.0, error_rate=0.0)  # every connection drops: broken
            down = [ask(server.url, input=f"down {i}") for i in range(3)]
            api.set_faults(drop_rate=0.0)
            with ThreadPoolExecutor(32) as pool:
                after = list(pool.map(lambda text: ask(server.url, input=text), texts))
            text = httpx.get(server.url + "/metrics").text
        finally:
            server.stop()
    for text_, answer in zip(texts, during, strict=True):
        if answer.status_code == 200:  # retried until it worked, with the right embedding
            assert answer.json()["result"]["features"][0] == pytest.approx(embed(text_))
        else:  # or failed for good after its retries, saying so
            assert answer.status_code == 502 and answer.json()["view"] == "realtime_embedding"
    assert sum(answer.status_code == 200 for answer in during) > len(texts) // 2
    assert {answer.status_code for answer in down} == {502}
    for text_, answer in zip(texts, after, strict=True):
        assert answer.status_code == 200
        assert answer.json()["result"]["features"][0] == pytest.approx(embed(text_))
    assert metric(text, "rivulet_resource_rebuilds_total", provider="open_ai_client") >= 1
    assert metric(text, "rivulet_retries_total", view="realtime_embedding") >= 1
    builds = pids(log, "build").total()
    assert builds == 1 + metric(text, "rivulet_resource_rebuilds_total", provider="open_ai_client")


def test_sigterm_drains_in_flight_requests_then_tears_resources_down_once(
    tmp_path: Path,
) -> None:
    log = tmp_path / "provider.log"
    with MockAPI(latency_ms=400) as api:
        server = Server(JOB, env=_env(api, log))
        try:
            server.wait_until_healthy()
            api.reset_stats()
            with ThreadPoolExecutor(16) as pool:
                pending = [pool.submit(ask, server.url, input=f"t{i}") for i in range(16)]
                deadline = time.monotonic() + STARTUP_SECONDS
                while api.stats()["requests"] < 16:  # every call is at the API now
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                server.proc.send_signal(signal.SIGTERM)
                answers = [future.result() for future in pending]
            code = server.proc.wait(60)
        finally:
            server.stop()
    assert code == 0
    assert [answer.status_code for answer in answers] == [200] * 16
    assert answers[3].json()["result"]["features"][0] == pytest.approx(embed("t3"))
    seen = events(log)
    assert (seen[f"build {server.proc.pid}"], seen[f"teardown {server.proc.pid}"]) == (1, 1)


def test_bad_requests_get_4xx_json_naming_what_is_wrong(served: Server) -> None:
    url, headers = served.url + GET_FEATURES, _authorized()

    def post(content: bytes | str, **more: Any) -> httpx.Response:
        return httpx.post(url, content=content, headers=headers | more, timeout=30)

    broken = post(b'{"params": {')
    assert broken.status_code == 400 and broken.json()["message"] == (
        "The request body is not valid JSON."
    )
    unknown = ask(served.url, "nope", headers, input="x")
    assert unknown.status_code == 404
    assert "'nope'" in unknown.json()["message"] and "both" in unknown.json()["message"]
    missing = ask(served.url, "realtime_embedding", headers)
    assert missing.status_code == 400
    assert missing.json()["message"].startswith("The request lacks field 'input' (String)")
    mistyped = ask(served.url, "both", headers, input="x", n="three")
    assert mistyped.status_code == 400 and mistyped.json()["feature"] == "n"
    assert "field 'n' is str 'three', but feature view 'leaky' needs Int64" in mistyped.text
    no_service = post(json.dumps({"params": {"requestContextMap": {}}}))
    assert no_service.status_code == 400
    assert no_service.json()["message"] == "The request lacks 'params.featureServiceName'."
    huge = post(json.dumps({"params": {"featureServiceName": "x", "pad": "a" * (2 << 20)}}))
    assert huge.status_code == 413 and "over the limit" in huge.json()["message"]
    for wrong in ({}, _authorized("guess"), {"Authorization": API_KEY}):
        refused = ask(served.url, "realtime_embedding", wrong, input="x")
        assert refused.status_code == 401 and "API key" in refused.json()["message"]
    tecton = ask(served.url, headers={"Authorization": f"Tecton-key {API_KEY}"}, input="x")
    assert tecton.status_code == 200
    assert httpx.get(served.url + "/health").status_code == 200  # probes need no key


def test_answers_carry_tecton_metadata_and_partial_results(served: Server) -> None:
    headers = _authorized()
    answer = ask(served.url, "both", headers, input="abc", n=2)
    assert answer.status_code == 200
    body = answer.json()
    assert body["result"]["features"][1] == 6
    assert body["metadata"]["features"] == [
        {
            "name": "realtime_embedding.embedding",
            "dataType": {"type": "array", "elementType": {"type": "float32"}},
            "status": "PRESENT",
        },
        {"name": "leaky.length", "dataType": {"type": "int64"}, "status": "PRESENT"},
    ]
    failed = ask(served.url, "both", headers, input="abc", n=-1)
    assert failed.status_code == 502 and failed.json()["view"] == "leaky"
    partial = httpx.post(
        served.url + GET_FEATURES,
        headers=headers,
        json={
            "params": {
                "featureServiceName": "both",
                "requestContextMap": {"input": "abc", "n": -1},
                "allowPartialResults": True,
            }
        },
    ).json()
    assert partial["result"]["features"][1] is None
    assert [f["status"] for f in partial["metadata"]["features"]] == ["PRESENT", "ERROR"]
    batch = httpx.post(
        served.url + GET_FEATURES + "-batch",
        headers=headers,
        json={
            "params": {
                "featureServiceName": "leaky",
                "requestData": [{"requestContextMap": {"input": "ab", "n": n}} for n in (1, 3)],
            }
        },
    ).json()
    assert [one["features"] for one in batch["result"]] == [[2], [6]]
    metadata = httpx.get(
        served.url + "/api/v1/feature-service/metadata",
        params={"featureServiceName": "both"},
        headers=headers,
    ).json()
    assert [key["name"] for key in metadata["inputRequestContextKeys"]] == ["input", "n"]


def test_no_secret_reaches_a_response_a_log_line_or_the_metrics(served: Server) -> None:
    headers = _authorized()
    bodies = [
        ask(served.url, "both", headers, input="x", n=-1).text,
        ask(served.url, "leaky", headers, input="x", n=-1).text,
        ask(served.url, "both", {"Authorization": "Bearer nope"}, input="x", n=1).text,
        httpx.get(served.url + "/metrics", headers=headers).text,
        httpx.get(served.url + "/health").text,
    ]
    assert "upstream refused token ***" in bodies[0]
    served.stop()
    everything = "\n".join([*bodies, served.log()])
    assert TOKEN not in everything and API_KEY not in everything


def test_the_seed_view_as_written_answers_a_500_naming_view_feature_and_types(
    tmp_path: Path, mock_api: MockAPI
) -> None:
    env = {
        "OPENAI_BASE_URL": mock_api.base_url,
        "RIVULET_SECRET_OPENAI_EMBEDDINGS__OPEN_AI": "t",
        "SERVE_LOG": str(tmp_path / "unused.log"),
    }
    server = Server(SEED, env=env)
    try:
        server.wait_until_healthy()
        answer = ask(server.url, input="hello")
    finally:
        server.stop()
    assert answer.status_code == 500
    assert answer.json() == {
        "code": 500,
        "kind": "Output error",
        "message": "Feature view 'realtime_embedding' returned feature 'embedding' as list of "
        "float, but declares String.",
        "view": "realtime_embedding",
        "feature": "embedding",
    }


def test_the_openapi_page_describes_the_request_body(served: Server) -> None:
    schema = httpx.get(served.url + "/openapi.json", headers=_authorized()).json()
    body = schema["paths"][GET_FEATURES]["post"]["requestBody"]["content"]["application/json"]
    params = body["schema"]["properties"]["params"]["properties"]
    assert {"featureServiceName", "requestContextMap", "joinKeyMap"} <= params.keys()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((REPO / "jobs" / "enrichment_postgres.py",), {}, "declares no realtime feature views"),
        ((JOB,), {"SERVE_LOG": "/dev/null"}, "Secret scope 'mock', key 'token'"),
        ((JOB, "--api-key-secret", "nokey"), {"RIVULET_SECRET_MOCK__TOKEN": "t",
                                              "SERVE_LOG": "/dev/null"}, "is not SCOPE/KEY"),
    ],
)  # fmt: skip
def test_serve_refuses_bad_settings_before_listening(
    args: tuple, env: dict[str, str], message: str
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RIVULET_SECRET_")}
    result = subprocess.run(
        [sys.executable, "-m", "engine", "serve", *map(str, args)],
        capture_output=True, text=True, env={**clean, **env}, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "Serving" not in result.stderr


def test_connections_to_several_server_processes_send_without_delay() -> None:
    """The socket `--workers N` listens on is marked TCP, so asyncio sets TCP_NODELAY on
    each connection it accepts: without it, every answer on a kept-alive connection waited
    ~40 ms for the client's delayed ACK (Kludex/uvicorn#3149)."""
    import asyncio

    from engine.serve.listen import _TcpConfig

    listening = _TcpConfig("engine.serve.listen:app_from_environment", port=0).bind_socket()
    accepted: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Probe, sock=listening)
        _, writer = await asyncio.open_connection(*listening.getsockname()[:2])
        while not accepted:
            await asyncio.sleep(0.01)
        writer.close()
        server.close()

    asyncio.run(main())
    assert listening.proto == socket.IPPROTO_TCP and accepted == [1]
