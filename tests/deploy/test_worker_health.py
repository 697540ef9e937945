"""The worker's health endpoint and the probe the container healthcheck runs."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from workers import health as health_module
from workers.health import WorkerHealth, WorkerState, probe, serve_health


def fetch(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def state() -> WorkerHealth:
    return WorkerHealth(task_queue="tq", namespace="ns", deployment_name="inventory-saga", build_id="b7")


async def test_ready_only_while_running_and_alive_throughout(state: WorkerHealth):
    async with serve_health(state, 0, host="127.0.0.1") as port:
        seen = []
        for phase in WorkerState:
            state.state = phase
            ready, body = await asyncio.to_thread(fetch, port, "/healthz")
            alive, _ = await asyncio.to_thread(fetch, port, "/livez")
            seen.append((body["state"], ready, alive))
    assert seen == [
        ("starting", 503, 200),
        ("running", 200, 200),
        ("draining", 503, 200),
        ("stopped", 503, 200),
    ]


async def test_the_body_says_what_the_worker_serves_and_what_it_is_running(state: WorkerHealth):
    state.state = WorkerState.DRAINING
    state.activity_started("charge_payment")
    state.activity_started("charge_payment")
    state.activity_started("commit_stock")
    state.activity_finished("commit_stock")
    async with serve_health(state, 0, host="127.0.0.1") as port:
        status, body = await asyncio.to_thread(fetch, port, "/healthz")
    assert status == 503
    assert body | {"uptime_seconds": 0} == {
        "state": "draining",
        "task_queue": "tq",
        "namespace": "ns",
        "deployment_name": "inventory-saga",
        "build_id": "b7",
        "in_flight_activities": 2,
        "in_flight_by_type": {"charge_payment": 2},
        "activities_finished": 1,
        "uptime_seconds": 0,
    }


async def test_unknown_paths_methods_and_garbage_get_clear_errors(state: WorkerHealth):
    async with serve_health(state, 0, host="127.0.0.1") as port:
        missing, _ = await asyncio.to_thread(fetch, port, "/nope")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        post = await reader.read()
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello\r\n\r\n")
        garbage = await reader.read()
        writer.close()
    assert missing == 404
    assert post.startswith(b"HTTP/1.1 405 ")
    assert garbage.startswith(b"HTTP/1.1 400 ")


async def test_a_client_that_never_finishes_its_request_does_not_block_others(
    state: WorkerHealth, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(health_module, "_READ_TIMEOUT_SECONDS", 0.2)
    state.state = WorkerState.RUNNING
    async with serve_health(state, 0, host="127.0.0.1") as port:
        _, slow = await asyncio.open_connection("127.0.0.1", port)
        slow.write(b"GET /healthz HTTP/1.1\r\n")  # and nothing more
        assert await asyncio.to_thread(probe, port) == 200
        slow.close()


async def test_the_container_probe_exits_by_readiness(state: WorkerHealth, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("INVSAGA_SHARD_DSNS", "postgresql://u@db:5432/x")
    monkeypatch.setenv("INVSAGA_WORKER_HEALTH_PORT", "0")
    assert await asyncio.to_thread(health_module.main) == 2  # no endpoint configured
    async with serve_health(state, 0, host="127.0.0.1") as port:
        monkeypatch.setenv("INVSAGA_WORKER_HEALTH_PORT", str(port))
        state.state = WorkerState.STARTING
        assert await asyncio.to_thread(health_module.main) == 1
        state.state = WorkerState.RUNNING
        assert await asyncio.to_thread(health_module.main) == 0
    assert await asyncio.to_thread(health_module.main) == 1  # nothing listens any more
