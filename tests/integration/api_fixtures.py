"""The HTTP API against the real stack: a uvicorn server on a background thread, a worker on the test loop,
API keys of each scope, and small helpers the API tests share.

Import the fixtures into a test module (``from tests.integration.api_fixtures import api_fixture,
http_fixture``); each module gets its own server and worker on a fresh task queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from invsaga.api.app import create_app
from invsaga.api.auth import Scope, key_entry, new_key
from invsaga.dev.asgi_thread import ThreadedAsgiServer
from invsaga.domain.checkout import CheckoutStatus
from invsaga.settings import Settings

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


def ApiServer(app: FastAPI) -> ThreadedAsgiServer:
    """Serve ``app`` with uvicorn on a thread (its own event loop), on a port bound before it starts."""
    return ThreadedAsgiServer(app, name="API")


@dataclass
class ApiStack:
    url: str
    settings: Settings
    temporal: Any  # temporalio.client.Client on the test loop


def api_settings(saga_settings: Settings, task_queue: str) -> Settings:
    return saga_settings.model_copy(
        update={"task_queue": task_queue, "api_keys": API_KEYS_SETTING, "pool_size": 20}
    )


@contextlib.asynccontextmanager
async def worker_serving(temporal_client: Any, settings: Settings) -> AsyncIterator[None]:
    """A real worker on ``settings.task_queue`` for as long as the block runs."""
    from workers.worker import WorkerDeps, build_worker

    async with (
        WorkerDeps.open(settings) as deps,
        build_worker(temporal_client, settings, deps, task_queue=settings.task_queue),
    ):
        yield


@pytest.fixture(scope="module", name="api")
async def api_fixture(saga_settings, temporal_client, databases) -> AsyncIterator[ApiStack]:
    """The API on a real port, with a worker serving its task queue."""
    settings = api_settings(saga_settings, f"api-test-{uuid.uuid4()}")
    async with (
        worker_serving(temporal_client, settings),
        ThreadedAsgiServer(create_app(settings), name="API") as server,
    ):
        yield ApiStack(url=server.url, settings=settings, temporal=temporal_client)


@pytest.fixture(name="http")
async def http_fixture(api: ApiStack) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx.AsyncClient(base_url=api.url, timeout=90, limits=limits) as client:
        yield client


# --- helpers ---------------------------------------------------------------------------------------------


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
