"""What the API process holds for its whole life, opened once in the app's lifespan and shared."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from temporalio.client import Client

from invsaga.checkout_client import CheckoutClient
from invsaga.settings import Settings
from invsaga.temporal import connect
from store.databases import Databases
from store.sold_out import SoldOutHint
from store.stock import StockStore


@dataclass
class ApiDeps:
    databases: Databases
    store: StockStore
    checkouts: CheckoutClient

    @property
    def temporal(self) -> Client:
        return self.checkouts.client

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[ApiDeps]:
        databases = await Databases.open(settings)
        # The sold-out fast path: a buyer of stock the database said is gone gets 409 at once.
        sold_out = SoldOutHint(settings.shard_urls)
        try:
            await sold_out.start()
            client = await connect(settings)
            store = StockStore(databases)
            checkouts = CheckoutClient(client, task_queue=settings.task_queue, sold_out=sold_out, stock=store)
            yield cls(databases=databases, store=store, checkouts=checkouts)
        finally:
            await sold_out.close()
            await databases.close()


async def _deps(request: Request) -> ApiDeps:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request.
    deps: ApiDeps = request.app.state.deps
    return deps


Deps = Annotated[ApiDeps, Depends(_deps)]
