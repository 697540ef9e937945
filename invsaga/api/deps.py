"""What the API process holds for its whole life, opened once in the app's lifespan and shared."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import URL
from temporalio.client import Client

from invsaga.api.fresh_requests import FreshRequests
from invsaga.api.idempotency import SharedRuns
from invsaga.api.sold_out import SoldOutScreen
from invsaga.client import CheckoutClient
from invsaga.settings import Settings
from invsaga.store.databases import Databases
from invsaga.store.sold_out import SoldOutHint
from invsaga.store.stock import StockStore
from invsaga.temporal.configured import connect_configured

log = logging.getLogger("invsaga.api")

#: How often the sold-out hint compares its shards with the routing the process follows.
HINT_FOLLOW_SECONDS = 1.0


def serving_shard_urls(databases: Databases) -> list[URL]:
    """The URL of every shard that holds data, as this process resolved it (registry or env list)."""
    return [databases.shards[index].url for index in databases.serving()]


async def follow_serving_shards(
    hint: SoldOutHint, databases: Databases, *, every: float = HINT_FOLLOW_SECONDS
) -> None:
    """Run until cancelled: keep ``hint`` listening on exactly the serving shards, and forgetting
    what it learned whenever the slot map changes. ``databases`` follows the registry by itself (its
    routing watch); this only carries its view over to the hint, by a poll: cheap, and the hint says
    "not sold out" meanwhile wherever it matters (see ``SoldOutHint.follow``)."""
    followed: tuple[tuple[int, ...], int] | None = None
    while True:
        current = (tuple(databases.serving()), databases.router.epoch)
        if current != followed:
            try:
                hint.follow(serving_shard_urls(databases), routing_epoch=current[1])
                followed = current
            except Exception as exc:  # never let the hint stop following; the next poll retries
                log.warning("the sold-out hint could not follow the shards: %s", exc)
        await asyncio.sleep(every)


@dataclass
class ApiDeps:
    databases: Databases
    store: StockStore
    checkouts: CheckoutClient
    #: The sold-out fast path in front of ``checkouts``; without it every buyer starts a checkout.
    sold_out: SoldOutScreen | None = None
    #: The fast path's "is this request new?" reads, batched across concurrent buyers.
    fresh: FreshRequests = field(init=False)
    #: Requests with an Idempotency-Key still running here, which their duplicates wait for.
    shared_runs: SharedRuns = field(default_factory=SharedRuns)

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
        hint = SoldOutHint(serving_shard_urls(databases))
        following = asyncio.create_task(follow_serving_shards(hint, databases), name="sold-out-follow")
        try:
            await hint.start()
            client = await connect_configured(settings)
            store = StockStore(databases)
            checkouts = CheckoutClient(client, task_queue=settings.task_queue)
            screen = SoldOutScreen(checkouts, hint, store)
            yield cls(databases=databases, store=store, checkouts=checkouts, sold_out=screen)
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
            await hint.close()
            await databases.close()


async def _deps(request: Request) -> ApiDeps:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request.
    deps: ApiDeps = request.app.state.deps
    return deps


Deps = Annotated[ApiDeps, Depends(_deps)]
