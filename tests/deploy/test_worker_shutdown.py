"""`invsaga worker` as a real process: SIGTERM during a slow charge drains it, then the process exits 0
within its grace period. Its health endpoint and Prometheus metrics are checked along the way."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType

from invsaga.client import CheckoutClient
from invsaga.dev.ports import free_port
from invsaga.domain.checkout import CheckoutStatus
from tests.helpers import assert_clean_audit, skus_on_shard
from tests.integration.test_checkout_saga import catalog, charges_for, levels, order
from workers.worker import WorkerDeps, build_worker

GRACE_SECONDS = 20
SLOW_CHARGE_MS = 3000


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


async def until(predicate: Any, *, within: float = 60.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {within}s")
        await asyncio.sleep(every)


class WorkerProcess:
    def __init__(self, process: asyncio.subprocess.Process, health_port: int, metrics_port: int) -> None:
        self.process = process
        self.health_port = health_port
        self.metrics_port = metrics_port
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    async def health(self) -> tuple[int, dict[str, Any]]:
        status, body = await asyncio.to_thread(get, f"http://127.0.0.1:{self.health_port}/healthz")
        return status, json.loads(body) if body else {}

    async def metrics(self) -> str:
        return (await asyncio.to_thread(get, f"http://127.0.0.1:{self.metrics_port}/metrics"))[1]

    async def wait(self, within: float) -> int:
        code = await asyncio.wait_for(self.process.wait(), within)
        await self._reader
        return code

    @property
    def log(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
async def worker_process(saga_settings, tmp_path: Path):
    """Start `invsaga worker` on a fresh task queue; yields a factory, kills leftovers at the end."""
    started: list[WorkerProcess] = []

    async def start(
        task_queue: str, health_port: int | None = None, metrics_port: int | None = None
    ) -> WorkerProcess:
        health_port, metrics_port = health_port or free_port(), metrics_port or free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("INVSAGA_")},
            "INVSAGA_DATA_DIR": str(tmp_path),
            "INVSAGA_SHARD_DSNS": ",".join(saga_settings.shard_dsns),
            "INVSAGA_CORE_DSN": saga_settings.core_dsn,
            "INVSAGA_TEMPORAL_ADDRESS": saga_settings.temporal_address,
            "INVSAGA_TASK_QUEUE": task_queue,
            "INVSAGA_PAYMENT_URL": saga_settings.payment_url,
            "INVSAGA_PAYMENT_TIMEOUT_SECONDS": "10",
            "INVSAGA_WORKER_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
            "INVSAGA_WORKER_HEALTH_PORT": str(health_port),
            "INVSAGA_METRICS_PORT": str(metrics_port),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "invsaga",
            "worker",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        worker = WorkerProcess(process, health_port, metrics_port)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process.returncode is None:
            worker.process.kill()
            await worker.process.wait()


async def test_sigterm_drains_a_slow_charge_and_exits_zero_within_the_grace_period(
    worker_process, saga_settings, temporal_client, store, databases, payment_sandbox, clean_shards
):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await catalog(databases, store, (sku, 5))
    task_queue = f"test-sigterm-{uuid.uuid4()}"
    saga = CheckoutClient(temporal_client, task_queue=task_queue)
    worker = await worker_process(task_queue)

    async def running() -> bool:
        status, body = await worker.health()
        return status == 200 and body.get("state") == "running"

    await until(running, within=60)

    request = order((sku, 2), token=f"tok_slow_{SLOW_CHARGE_MS}")
    await saga.start_without_waiting(request)

    async def paying() -> bool:
        return (await saga.status(request.order_id)).status is CheckoutStatus.PAYING

    async def charging() -> bool:
        return (await worker.health())[1].get("in_flight_by_type") == {"charge_payment": 1}

    await until(paying)
    await until(charging, every=0.02)
    assert "temporal_" in await worker.metrics(), "no Prometheus metrics from the worker"

    signalled = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    # While the charge is still in flight, the worker is out of rotation.
    status, body = await until(lambda: _draining(worker), within=5, every=0.02)
    assert status == 503 and body["in_flight_by_type"] == {"charge_payment": 1}, body

    code = await worker.wait(within=GRACE_SECONDS + 15)
    elapsed = time.monotonic() - signalled
    assert code == 0, worker.log
    assert elapsed < GRACE_SECONDS, f"took {elapsed:.1f}s to drain, grace is {GRACE_SECONDS}s"
    assert "draining 1 in-flight activities" in worker.log, worker.log

    # The charge ran once, on the drained worker, and completed there: no retry, no second charge.
    charges = await _charge_attempts(saga, request.order_id)
    assert len(charges) == 1, charges
    [(attempt, identity, outcome)] = charges
    assert (attempt, outcome) == (1, EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
    assert identity.startswith(f"{worker.process.pid}@"), identity

    # A fresh worker picks the checkout up from there and confirms it.
    async with (
        WorkerDeps.open(saga_settings) as deps,
        build_worker(temporal_client, saga_settings, deps, task_queue=task_queue),
    ):
        result = await asyncio.wait_for(saga.result(request.order_id), timeout=60)
    assert result.status is CheckoutStatus.CONFIRMED
    [charge] = await charges_for(payment_sandbox, request.order_id)
    assert charge["status"] == "succeeded" and charge["id"] == result.charge_id
    assert await levels(store, sku) == {sku: (3, 0)}
    await assert_clean_audit(databases)


async def _draining(worker: WorkerProcess) -> tuple[int, dict[str, Any]] | None:
    status, body = await worker.health()
    return (status, body) if body.get("state") == "draining" else None


async def _charge_attempts(saga: CheckoutClient, order_id: str) -> list[tuple[int, str, int]]:
    """(attempt, worker identity, closing event type) for every charge_payment the history records."""
    events = [event async for event in saga.handle(order_id).fetch_history_events()]
    scheduled = {
        e.event_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "charge_payment"
    }
    started = {
        e.activity_task_started_event_attributes.scheduled_event_id: e.activity_task_started_event_attributes
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    }
    closing = {
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "activity_task_completed_event_attributes",
        EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "activity_task_failed_event_attributes",
        EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "activity_task_timed_out_event_attributes",
        EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "activity_task_canceled_event_attributes",
    }
    outcomes = {
        getattr(e, closing[e.event_type]).scheduled_event_id: e.event_type
        for e in events
        if e.event_type in closing
    }
    # A still-running activity has no started event yet: the server writes it when the attempt closes.
    return [
        (started[event_id].attempt, started[event_id].identity, outcomes.get(event_id, 0))
        if event_id in started
        else (0, "not finished", 0)
        for event_id in sorted(scheduled)
    ]


_FELL_BACK = re.compile(r"(health|metrics) port (\d+) is taken .*?(?:on|serving metrics on) (\d+) instead")


async def test_a_second_worker_on_the_same_ports_runs_beside_the_first(
    worker_process, temporal_client, store, databases, payment_sandbox, clean_shards
):
    """Two `invsaga worker`s on one machine with one configuration: the second says which ports it
    took instead of dying on the metrics port, and both serve checkouts."""
    task_queue = f"test-two-workers-{uuid.uuid4()}"
    health_port, metrics_port = free_port(), free_port()
    first = await worker_process(task_queue, health_port, metrics_port)
    await until(lambda: _running(first), within=60)
    second = await worker_process(task_queue, health_port, metrics_port)

    async def fell_back() -> dict[str, int] | None:
        if second.process.returncode is not None:
            raise AssertionError(f"the second worker exited {second.process.returncode}:\n{second.log}")
        found = {m[1]: (int(m[2]), int(m[3])) for m in _FELL_BACK.finditer(second.log)}
        return found if len(found) == 2 else None

    found = await until(fell_back, within=60)
    assert found["health"][0] == health_port and found["metrics"][0] == metrics_port, found
    second.health_port, second.metrics_port = found["health"][1], found["metrics"][1]
    await until(lambda: _running(second), within=60)
    assert await until(lambda: _running(first), within=5)
    assert "temporal_" in await second.metrics() and "temporal_" in await first.metrics()

    # Both poll the queue: checkouts confirm while either may take them.
    skus = skus_on_shard(store.router, 0, 2)
    await catalog(databases, store, *((sku, 5) for sku in skus))
    saga = CheckoutClient(temporal_client, task_queue=task_queue)
    results = await asyncio.gather(*(saga.checkout(order((sku, 1))) for sku in skus))
    assert [r.status for r in results] == [CheckoutStatus.CONFIRMED] * 2
    for worker in (first, second):
        worker.process.send_signal(signal.SIGTERM)
    assert [await worker.wait(within=GRACE_SECONDS + 15) for worker in (first, second)] == [0, 0]
    await assert_clean_audit(databases)


async def _running(worker: WorkerProcess) -> bool:
    status, body = await worker.health()
    return status == 200 and body.get("state") == "running"
