"""Build and run the checkout worker: workflows, activities and their injected dependencies.

A running worker reports its state on ``INVSAGA_WORKER_HEALTH_PORT`` (``workers.health``), serves
Prometheus metrics on ``INVSAGA_METRICS_PORT``, joins a Worker Deployment Version when one is
configured (``workers.versioning``) and traces when ``INVSAGA_OTEL_ENDPOINT`` is set
(``workers.tracing``). SIGTERM stops polling and gives in-flight activities
``INVSAGA_WORKER_SHUTDOWN_GRACE_SECONDS`` to finish before they are cancelled.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Interceptor, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.checkout import CheckoutActivities
from activities.inventory import InventoryActivities
from activities.orders import OrderActivities
from activities.payments import PaymentActivities
from activities.reconcile import ReconcileActivities
from invsaga.domain.errors import ConfigurationError
from invsaga.payments.client import PaymentClient
from invsaga.settings import Settings
from invsaga.store.batching import ReservationBatcher
from invsaga.store.databases import Databases
from invsaga.store.order_evidence import committed_lines
from invsaga.store.rerouting import rerouted
from invsaga.store.stock import StockStore
from invsaga.temporal.configured import connect_configured
from workers.health import ActivityTracker, WorkerHealth, WorkerState, serve_health
from workers.relay import running_relay
from workers.schedules import ensure_reconciler_schedule, ensure_sweeper_schedule
from workers.tracing import tracing
from workers.versioning import deployment_config
from workflows.checkout import CheckoutWorkflow, StepwiseCheckoutWorkflow
from workflows.hold_sweeper import HoldSweeperWorkflow
from workflows.order_reconciler import OrderReconcilerWorkflow

log = logging.getLogger("invsaga.worker")

#: How often a draining worker says what it is still waiting for.
DRAIN_REPORT_EVERY = timedelta(seconds=5)

#: The sandbox re-imports a workflow's module for every workflow run, so that no run sees another's
#: module state. Ours keep none (constants and classes), so ``workflows`` is passed through: B3 measures
#: what that saves (``floor_sandboxed`` against ``floor``, bench/saga.py). The sandbox still refuses
#: non-deterministic calls (the clock, random, I/O) while a workflow runs.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("workflows")
)


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
        databases = await Databases.open(settings, watch=True)
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
    orders: OrderActivities | None = None,
    payments: PaymentActivities | None = None,
    interceptors: Sequence[Interceptor] = (),
) -> Worker:
    """The worker for ``settings``; tests pass their own task queue, and may wrap the activities."""
    inventory = inventory or InventoryActivities(deps.store, deps.batcher)
    orders = orders or OrderActivities(deps.databases, settings)
    payments = payments or PaymentActivities(deps.payments)
    reconciler = ReconcileActivities(deps.databases, deps.store, client, deps.payments, settings)
    # Composed from the single steps (and any test wrapping of them): see activities/checkout.py.
    checkout = CheckoutActivities(
        orders,
        inventory,
        # The router of the moment: it is replaced when slots move.
        route=lambda lines: deps.databases.router.group_lines(lines),
        sold=lambda order_id: committed_lines(deps.databases, order_id),
        reroute=functools.partial(rerouted, deps.databases),
    )
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[CheckoutWorkflow, StepwiseCheckoutWorkflow, HoldSweeperWorkflow, OrderReconcilerWorkflow],
        activities=[
            checkout.place_order,
            checkout.confirm_order,
            checkout.release_order,
            checkout.sold_lines,
            # The single steps: checkouts started before the composite ones replay and run with them.
            inventory.reserve_stock,
            inventory.release_stock,
            inventory.pin_stock,
            inventory.commit_stock,
            inventory.expire_holds,
            orders.prepare_order,
            orders.finish_order,
            payments.charge_payment,
            payments.refund_payment,
            reconciler.reconcile_orders,
        ],
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        max_concurrent_local_activities=settings.worker_max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        workflow_runner=WORKFLOW_RUNNER,
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_grace_seconds),
        deployment_config=deployment_config(settings),
        interceptors=list(interceptors),
    )


def metrics_runtime(settings: Settings) -> Runtime | None:
    """A Temporal runtime that serves Prometheus metrics, when a metrics port is configured.

    A port that is taken (a second worker on one machine) is replaced by a free one, logged, rather
    than ending the worker; in a container the port is the worker's own, so the configured one holds."""
    if not settings.metrics_port:
        return None
    try:
        return _prometheus_runtime(settings.metrics_port)
    except ValueError as exc:
        if "in use" not in str(exc).lower():
            raise
    for _attempt in range(3):  # another process may take the free port before the exporter binds it
        port = _free_port()
        try:
            runtime = _prometheus_runtime(port)
        except ValueError as exc:
            if "in use" not in str(exc).lower():
                raise
            continue
        log.warning(
            "metrics port %d is taken (another worker on this machine?); serving metrics on %d "
            "instead; set INVSAGA_METRICS_PORT to a free port to pin it",
            settings.metrics_port,
            port,
        )
        return runtime
    raise ConfigurationError(
        f"INVSAGA_METRICS_PORT {settings.metrics_port} is taken and no free port could be bound; "
        "set INVSAGA_METRICS_PORT to a free port, or 0 to serve no metrics"
    )


def _prometheus_runtime(port: int) -> Runtime:
    bind = f"0.0.0.0:{port}"
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind)))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def worker_health(settings: Settings) -> WorkerHealth:
    return WorkerHealth(
        task_queue=settings.task_queue,
        namespace=settings.temporal_namespace,
        deployment_name=settings.worker_deployment_name,
        build_id=settings.worker_build_id,
    )


async def run_worker(
    settings: Settings, *, stop: asyncio.Event | None = None, health: WorkerHealth | None = None
) -> None:
    """Run until SIGTERM or SIGINT, then stop polling and let in-flight activities finish."""
    log.info("configuration from %s", settings.loaded_from)
    stop = stop or asyncio.Event()
    health = health or worker_health(settings)
    deployment_config(settings)  # a half-configured deployment fails here, before anything starts
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with AsyncExitStack() as stack:
            if settings.worker_health_port:
                await stack.enter_async_context(
                    serve_health(health, settings.worker_health_port, fall_back=True)
                )
            interceptors = [ActivityTracker(health), *stack.enter_context(tracing(settings))]
            client = await connect_configured(settings, runtime=metrics_runtime(settings))
            deps = await stack.enter_async_context(WorkerDeps.open(settings))
            if settings.relay_enabled:
                await stack.enter_async_context(running_relay(settings, deps.databases))
            sweep_every = timedelta(seconds=settings.sweep_every_seconds)
            if await ensure_sweeper_schedule(client, settings.task_queue, sweep_every):
                log.info("hold-sweeper schedule set to every %s", sweep_every)
            every = timedelta(seconds=settings.reconcile_every_seconds)
            if await ensure_reconciler_schedule(client, settings.task_queue, every):
                log.info("order-reconciler schedule set to every %s", every)
            await _serve(
                build_worker(client, settings, deps, interceptors=interceptors), settings, stop, health
            )
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    log.info("worker stopped")


async def _serve(worker: Worker, settings: Settings, stop: asyncio.Event, health: WorkerHealth) -> None:
    reporter: asyncio.Task[None] | None = None
    try:
        async with worker:
            # The worker validates its namespace before it polls; the SDK offers no event for that.
            while not worker.is_running:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            health.state = WorkerState.RUNNING
            version = (
                f", deployment {settings.worker_deployment_name} build {settings.worker_build_id}"
                if settings.worker_deployment_name
                else ""
            )
            log.info(
                "worker polling task queue %s on %s%s",
                settings.task_queue,
                settings.temporal_address,
                version,
            )
            await stop.wait()
            health.state = WorkerState.DRAINING
            log.info(
                "shutting down: no new tasks, draining %d in-flight activities (grace %.0fs)",
                health.in_flight_activities,
                settings.worker_shutdown_grace_seconds,
            )
            reporter = asyncio.create_task(_report_drain(health))
        # Leaving the block waited for the drain: every activity finished, or was cancelled at the grace.
    finally:
        if reporter is not None:
            reporter.cancel()
            with suppress(asyncio.CancelledError):
                await reporter
    health.state = WorkerState.STOPPED
    log.info("drained: %d activities finished in this process", health.activities_finished)


async def _report_drain(health: WorkerHealth) -> None:
    while True:
        await asyncio.sleep(DRAIN_REPORT_EVERY.total_seconds())
        log.info("still draining: %s", dict(health.in_flight) or "no activities in flight")
