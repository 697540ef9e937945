"""The HTTP API against the real stack: a uvicorn server on a background thread, a worker on the test loop,
API keys of each scope, and small helpers the API tests share.

Import the fixtures into a test module (``from tests.integration.api_fixtures import api_fixture,
http_fixture``); each module gets its own server and worker on a fresh task queue.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.auth import Scope, key_entry, new_key
from domain.checkout import CheckoutStatus
from invsaga.settings import Settings
from store.databases import Databases
from store.orders import Product, upsert_products
from store.stock import StockStore
from tests.helpers import skus_on_shard, stock_up

CHECKOUT_KEY = new_key()
ADMIN_KEY = new_key()
#: Listed under both scopes: a client that needs both.
BOTH_KEY = new_key()
UNKNOWN_KEY = new_key()

API_KEYS_SETTING = ",".join(
    [
        key_entry(Scope.CHECKOUT, CHECKOUT_KEY),
        key_entry(Scope.ADMIN, ADMIN_KEY),
        key_entry(Scope.CHECKOUT, BOTH_KEY),
        key_entry(Scope.ADMIN, BOTH_KEY),
    ]
)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


CHECKOUT = bearer(CHECKOUT_KEY)
ADMIN = bearer(ADMIN_KEY)


class ApiServer:
    """Serve ``app`` with uvicorn on a thread (its own event loop), on a port bound before it starts."""

    def __init__(self, app: FastAPI, *, host: str = "127.0.0.1") -> None:
        self.app = app
        self.host = host
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, lifespan="on", log_config=None, access_log=False, timeout_graceful_shutdown=5
        )
        server = self._server = uvicorn.Server(config)

        def serve() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # a failed start-up surfaces as SystemExit
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=serve, name=f"api-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the API at {self.url} did not start") from self._error
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(15)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(5)
        self._server = self._thread = None


@dataclass
class ApiStack:
    url: str
    settings: Settings
    temporal: Any  # temporalio.client.Client on the test loop


def api_settings(saga_settings: Settings, task_queue: str) -> Settings:
    return saga_settings.model_copy(
        update={"task_queue": task_queue, "api_keys": API_KEYS_SETTING, "pool_size": 20}
    )


@pytest.fixture(scope="module", name="api")
async def api_fixture(saga_settings, temporal_client, databases) -> AsyncIterator[ApiStack]:
    """The API on a real port, with a worker serving its task queue."""
    from workers.worker import WorkerDeps, build_worker

    settings = api_settings(saga_settings, f"api-test-{uuid.uuid4()}")
    async with (
        WorkerDeps.open(settings) as deps,
        build_worker(temporal_client, settings, deps, task_queue=settings.task_queue),
    ):
        server = ApiServer(create_app(settings))
        await asyncio.to_thread(server.start)
        try:
            yield ApiStack(url=server.url, settings=settings, temporal=temporal_client)
        finally:
            await asyncio.to_thread(server.stop)


@pytest.fixture(name="http")
async def http_fixture(api: ApiStack) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx.AsyncClient(base_url=api.url, timeout=90, limits=limits) as client:
        yield client


# --- helpers ---------------------------------------------------------------------------------------------


async def catalog(
    databases: Databases, store: StockStore, *skus_and_stock: tuple[str, int], price: str = "12.50"
) -> None:
    await upsert_products(
        databases.core, [Product(sku=s, name=f"item {s}", price=Decimal(price)) for s, _ in skus_and_stock]
    )
    for sku, quantity in skus_and_stock:
        await stock_up(store, sku, quantity)


async def stocked_sku(databases: Databases, store: StockStore, quantity: int, *, shard: int = 0) -> str:
    (sku,) = skus_on_shard(store.router, shard, 1, prefix="API")
    await catalog(databases, store, (sku, quantity))
    return sku


def checkout_body(*lines: tuple[str, int], token: str = "tok_success", order_id: str | None = None) -> dict:
    return {
        "order_id": order_id or f"ord-{uuid.uuid4().hex[:12]}",
        "customer_id": "cust-api",
        "lines": [{"sku": sku, "quantity": quantity} for sku, quantity in lines],
        "payment_token": token,
    }


def idempotency(key: str | None = None) -> dict[str, str]:
    return {"Idempotency-Key": key or str(uuid.uuid4())}


async def wait_until_terminal(
    http: httpx.AsyncClient, order_id: str, *, within: float = 60.0, headers: dict[str, str] = CHECKOUT
) -> dict:
    deadline = time.monotonic() + within
    while True:
        response = await http.get(f"/v1/checkouts/{order_id}", headers=headers)
        assert response.status_code == 200, response.text
        state = response.json()
        if state["terminal"]:
            assert CheckoutStatus(state["status"]).terminal
            return state
        assert time.monotonic() < deadline, f"checkout {order_id} still {state['status']}"
        await asyncio.sleep(0.2)


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    problem = response.json()
    assert problem["type"] == f"urn:inventory-saga:problem:{slug}", problem
    assert problem["status"] == status and problem["title"] and problem["detail"]
    return problem
