"""Build and run the checkout worker: workflows, activities and their injected dependencies."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from activities.inventory import InventoryActivities
from activities.orders import OrderActivities
from activities.payments import PaymentActivities
from invsaga.settings import Settings
from invsaga.temporal import connect, ensure_sweeper_schedule
from payments.client import PaymentClient
from store.batching import ReservationBatcher
from store.databases import Databases
from store.stock import StockStore
from workflows.checkout import CheckoutWorkflow
from workflows.hold_sweeper import HoldSweeperWorkflow

log = logging.getLogger("invsaga.worker")


@dataclass
class WorkerDeps:
    """Everything the activities need, built once per process."""

    databases: Databases
    store: StockStore
    batcher: ReservationBatcher
    payments: PaymentClient

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[WorkerDeps]:
        databases = await Databases.open(settings)
        store = StockStore(databases)
        batcher = ReservationBatcher(store)
        payments = PaymentClient(settings.payment_url, timeout=settings.payment_timeout_seconds)
        try:
            yield cls(databases, store, batcher, payments)
        finally:
            await batcher.aclose()
            await payments.aclose()
            await databases.close()


def build_worker(
    client: Client,
    settings: Settings,
    deps: WorkerDeps,
    *,
    task_queue: str | None = None,
    inventory: InventoryActivities | None = None,
) -> Worker:
    """The worker for ``settings``; tests pass their own task queue, and may wrap the activities."""
    inventory = inventory or InventoryActivities(deps.store, deps.batcher)
    orders = OrderActivities(deps.databases, settings)
    payments = PaymentActivities(deps.payments)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[CheckoutWorkflow, HoldSweeperWorkflow],
        activities=[
            inventory.reserve_stock,
            inventory.release_stock,
            inventory.commit_stock,
            inventory.expire_holds,
            orders.prepare_order,
            orders.finish_order,
            payments.charge_payment,
            payments.refund_payment,
        ],
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        max_concurrent_local_activities=settings.worker_max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_grace_seconds),
    )


def metrics_runtime(settings: Settings) -> Runtime | None:
    """A Temporal runtime that serves Prometheus metrics, when a metrics port is configured."""
    if not settings.metrics_port:
        return None
    bind = f"0.0.0.0:{settings.metrics_port}"
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind)))


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM or SIGINT, then stop polling and let in-flight activities finish."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    client = await connect(settings, runtime=metrics_runtime(settings))
    async with WorkerDeps.open(settings) as deps:
        if await ensure_sweeper_schedule(client, settings.task_queue):
            log.info("created the hold-sweeper schedule")
        worker = build_worker(client, settings, deps)
        async with worker:
            log.info("worker polling task queue %s on %s", settings.task_queue, settings.temporal_address)
            await stop.wait()
            log.info(
                "shutting down: draining in-flight activities (grace %.0fs)",
                settings.worker_shutdown_grace_seconds,
            )
    log.info("worker stopped")
