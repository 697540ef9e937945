"""What the API process holds for its whole life, opened once in the app's lifespan and shared."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from temporalio.client import Client

from invsaga.api.fresh_requests import FreshRequests
from invsaga.api.sold_out import SoldOutScreen
from invsaga.client import CheckoutClient
from invsaga.settings import Settings
from invsaga.store.databases import Databases
from invsaga.store.sold_out import SoldOutHint
from invsaga.store.stock import StockStore
from invsaga.temporal.configured import connect_configured


@dataclass
class ApiDeps:
    databases: Databases
    store: StockStore
    checkouts: CheckoutClient
    #: The sold-out fast path in front of ``checkouts``; without it every buyer starts a checkout.
    sold_out: SoldOutScreen | None = None
    #: The fast path's "is this request new?" reads, batched across concurrent buyers.
    fresh: FreshRequests = field(init=False)

    def __post_init__(self) -> None:
        self.fresh = FreshRequests(self.databases.core_autocommit)

    @property
    def temporal(self) -> Client:
        return self.checkouts.client

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[ApiDeps]:
        databases = await Databases.open(settings, watch=True)
        # The sold-out fast path: a buyer of stock the database said is gone gets 409 at once.
        hint = SoldOutHint(settings.shard_urls)
        try:
            await hint.start()
            client = await connect_configured(settings)
            store = StockStore(databases)
            checkouts = CheckoutClient(client, task_queue=settings.task_queue)
            screen = SoldOutScreen(checkouts, hint, store)
            yield cls(databases=databases, store=store, checkouts=checkouts, sold_out=screen)
        finally:
            await hint.close()
            await databases.close()


async def _deps(request: Request) -> ApiDeps:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request.
    deps: ApiDeps = request.app.state.deps
    return deps


Deps = Annotated[ApiDeps, Depends(_deps)]
