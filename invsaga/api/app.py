"""The HTTP API application: ``create_app(settings)`` builds it, uvicorn serves it (``invsaga api``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from invsaga.api import (
    docs,
    health,
    metrics,
    problems,
    routes_admin,
    routes_checkouts,
    routes_events,
    routes_orders,
    routes_products,
    routes_stock,
    routes_webhooks,
)
from invsaga.api.auth import ApiKeys
from invsaga.api.deps import ApiDeps
from invsaga.api.fast_refusal import FastRefusalMiddleware
from invsaga.api.limits import BodyLimitMiddleware
from invsaga.domain.errors import ConfigurationError, InventoryError
from invsaga.settings import Settings, load_settings
from invsaga.store.idempotency import purge_keys

log = logging.getLogger("invsaga.api")

#: Idempotency keys are kept this long: far longer than any client keeps retrying one request.
IDEMPOTENCY_KEY_TTL_SECONDS = 24 * 3600
_PURGE_EVERY_SECONDS = 600

DESCRIPTION = """
Stock reads, checkouts and stock administration for **inventory-saga**.

**Auth.** Send `Authorization: Bearer <key>`. A key has the `checkout` scope (services: read stock, run
checkouts) or the `admin` scope (operators: read stock, change stock); `invsaga dev` prints one of each.
No key or an unknown one answers 401, a key without the route's scope 403.

**Errors** are `application/problem+json` (RFC 9457). The `type` is stable per error, e.g.
`urn:inventory-saga:problem:out-of-stock`, and extension members carry its details.

**Retries.** `POST /v1/checkouts` and receipts take an `Idempotency-Key`: retry with the same key and the
same body to get the same answer.
"""

TAGS = [
    {"name": "stock", "description": "Read stock levels (checkout or admin scope)."},
    {"name": "checkouts", "description": "Start, follow and cancel checkouts (checkout scope)."},
    {"name": "orders", "description": "List and read orders with their holds (checkout or admin scope)."},
    {"name": "admin", "description": "Change stock (admin scope)."},
    {"name": "products", "description": "The catalog: read (checkout or admin scope), change (admin scope)."},
    {"name": "events", "description": "Read stock and order events after a cursor (admin scope)."},
    {"name": "webhooks", "description": "Register receivers of signed event deliveries (admin scope)."},
    {"name": "operations", "description": "Health, readiness and metrics (no key needed)."},
]


async def _purge_idempotency_keys(deps: ApiDeps) -> None:
    """Forget old idempotency keys now and then; several API processes doing it at once is harmless."""
    while True:
        try:
            while await purge_keys(deps.databases.core, older_than_seconds=IDEMPOTENCY_KEY_TTL_SECONDS):
                pass
        except InventoryError as exc:
            log.warning("could not purge old idempotency keys: %s", exc.message)
        await asyncio.sleep(_PURGE_EVERY_SECONDS)


def create_app(settings: Settings, *, deps: ApiDeps | None = None) -> FastAPI:
    """The API for ``settings``. With ``deps`` the caller owns the connections; otherwise the app opens
    them at start-up and closes them at shutdown."""
    api_keys = ApiKeys.parse(settings.api_keys)
    if not len(api_keys):
        raise ConfigurationError(
            "INVSAGA_API_KEYS is empty, so every request would be refused: "
            "create a key with `invsaga api-key new --scope checkout` and list its entry"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if deps is not None:
            app.state.deps = deps
            yield
            return
        async with ApiDeps.open(settings) as opened:
            app.state.deps = opened
            purger = asyncio.create_task(_purge_idempotency_keys(opened), name="purge-idempotency-keys")
            try:
                yield
            finally:
                purger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await purger

    app = FastAPI(
        title="inventory-saga",
        version="1.0.0",
        summary="Sharded inventory with a checkout saga on Temporal.",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        # Served by invsaga.api.docs from packaged assets: FastAPI's own pages load them from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.api_keys = api_keys
    app.state.deps = deps
    problems.install(app)
    for module in (
        routes_stock,
        routes_checkouts,
        routes_orders,
        routes_products,
        routes_admin,
        routes_events,
        routes_webhooks,
        health,
    ):
        app.include_router(module.router)
    # Middleware added last runs first: metrics see every answer, including a 413 from the body limit,
    # and the sold-out answers given in front of the routes.
    app.add_middleware(FastRefusalMiddleware, routes=routes_checkouts.router.routes)
    app.add_middleware(BodyLimitMiddleware)
    metrics.install(app)
    _document_problems(app)
    docs.install(app)
    return app


def _document_problems(app: FastAPI) -> None:
    """Routes refer to the ``Problem`` schema by reference; add it to the generated document once."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            app.openapi_schema = problems.add_problem_schema(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app_from_env() -> FastAPI:
    """The factory uvicorn imports in each worker process (``invsaga api`` with several workers)."""
    return create_app(load_settings())
