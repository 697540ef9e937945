"""Shared fixtures: real Postgres servers (two shards and a core database) for the whole session."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import text

from invsaga.dev.postgres import PgFleet, start_fleet
from invsaga.settings import Settings, load_settings
from invsaga.store.databases import Databases, migrate_all
from invsaga.store.stock import StockStore

TEST_SHARDS = int(os.environ.get("INVSAGA_TEST_SHARDS", "2"))


@pytest.fixture(scope="session")
def pg_fleet() -> Iterator[PgFleet]:
    fleet = start_fleet(TEST_SHARDS)
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture(scope="session")
def settings(pg_fleet: PgFleet) -> Settings:
    return load_settings(shard_dsns=",".join(pg_fleet.shard_dsns), core_dsn=pg_fleet.core_dsn, pool_size=40)


@pytest.fixture(scope="session")
async def databases(settings: Settings) -> AsyncIterator[Databases]:
    await migrate_all(settings)
    dbs = await Databases.open(settings)
    try:
        yield dbs
    finally:
        await dbs.close()


@pytest.fixture(scope="session")
def store(databases: Databases) -> StockStore:
    return StockStore(databases)


@pytest.fixture
async def clean_shards(databases: Databases) -> None:
    """Empty every shard's stock tables so a test starts from nothing."""
    for engine in databases.shards:
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE stock_levels, reservations, stock_movements"))


@pytest.fixture(params=["direct", "batched"])
async def reserve(request: pytest.FixtureRequest, store: StockStore):  # type: ignore[no-untyped-def]
    """The reserve path under test: one transaction per call, or group commit through the batcher."""
    if request.param == "direct":
        yield store.reserve
        return
    from invsaga.store.batching import ReservationBatcher

    batcher = ReservationBatcher(store)
    try:
        yield batcher.reserve
    finally:
        await batcher.aclose()


# --- Temporal, the payment sandbox and a worker per test ----------------------------------------


@pytest.fixture(scope="session")
def temporal_server():  # type: ignore[no-untyped-def]
    from invsaga.dev.temporal import start_dev_server

    server = start_dev_server(ui=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def payment_sandbox(pg_fleet: PgFleet):  # type: ignore[no-untyped-def]
    from invsaga.dev.payments.server import SandboxServer

    assert pg_fleet.core is not None
    dsn = pg_fleet.core.create_database("sandbox_payments")
    with SandboxServer(dsn) as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def saga_settings(settings: Settings, temporal_server, payment_sandbox) -> Settings:  # type: ignore[no-untyped-def]
    return settings.model_copy(
        update={
            "temporal_address": temporal_server.address,
            "payment_url": payment_sandbox.url,
            "payment_timeout_seconds": 1.0,
        }
    )


@pytest.fixture(scope="session")
async def temporal_client(saga_settings: Settings):  # type: ignore[no-untyped-def]
    from invsaga.temporal.configured import connect_configured

    return await connect_configured(saga_settings)


@pytest.fixture
async def saga(saga_settings: Settings, temporal_client, databases: Databases, clean_shards):  # type: ignore[no-untyped-def]
    """A worker on a fresh task queue, and a client whose checkouts go to it."""
    import uuid

    from invsaga.client import CheckoutClient
    from workers.worker import WorkerDeps, build_worker

    task_queue = f"test-{uuid.uuid4()}"
    async with (
        WorkerDeps.open(saga_settings) as deps,
        build_worker(temporal_client, saga_settings, deps, task_queue=task_queue),
    ):
        yield CheckoutClient(temporal_client, task_queue=task_queue)


# --- process exit ----------------------------------------------------------------------------------

_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Exit without interpreter teardown, as the Temporal SDK's own suite does: its native threads
    can abort a finalizing interpreter (PyGILState_Release) after every test has already passed."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)
