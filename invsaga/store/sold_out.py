"""The sold-out fast path: a per-process hint that answers "out of stock" without a workflow and
without touching the stock row's lock.

The hint only ever says "sold out" for a SKU after the database said its available stock was zero, and
forgets it as soon as Postgres notifies that stock came back (a release, expiry, receipt, adjustment
or import fire ``stock_available``; see the shard schema). "Available" is never answered here: such
requests always go to the database, so consistency is untouched. A per-SKU generation counter stops
a slow "sold out" answer from overwriting a newer notification, a maximum age bounds staleness if a
notification is ever missed, and a lost listener connection clears everything (so does a new one:
what was learned while a shard went unheard may have missed its stock coming back).

Rows are keyed by (sku, location). The location None stands for a line without a location, which may
take units from any of the SKU's locations: it is marked only when the database said the SKU had
nothing left at any of them, and a notification for the SKU (stock back at any location) clears it with
the rest, so a "sold out" for such a line never holds while another location could sell.

The shards listened on follow the registry (``follow``): a shard added while the process runs gets a
listener, a removed one loses it, and until every shard followed is heard the hint says "not sold out"
to everything. A routing change forgets everything too: a slot that moved brings its SKUs' stock to
another shard, and rather than work out which marks came from where, the hint asks the database again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from sqlalchemy.engine import URL

from invsaga.store.listening import listen_dsn, listen_forever

log = logging.getLogger("invsaga.sold_out")

CHANNEL = "stock_available"


class SoldOutHint:
    def __init__(self, shard_urls: Iterable[URL], *, max_age_seconds: float = 5.0) -> None:
        #: The shards to listen on, as asyncpg DSNs; ``follow`` changes them.
        self._dsns = [listen_dsn(url) for url in shard_urls]
        self.max_age = max_age_seconds
        self._sold_out: dict[tuple[str, str | None], float] = {}
        #: For a (sku, None) mark: the location the database named, when the SKU had only that one.
        self._named: dict[str, str] = {}
        self._generation: dict[str, int] = {}
        self._epoch = 0  # bumped when everything must be forgotten
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: Listeners of shards no longer followed, until they have closed their connection.
        self._retiring: set[asyncio.Task[None]] = set()
        #: The shards whose listener is connected now.
        self._heard: set[str] = set()
        #: Every shard in ``_dsns`` is heard: the one condition under which "sold out" may be said.
        self._on_all = False
        self._routing_epoch: int | None = None
        self.notifications = 0

    # --- reading and writing the hint ---------------------------------------------------------

    def sold_out(self, sku: str, location: str | None) -> bool:
        """True only while the database's last word on the stock row was "nothing left", and since."""
        if not self._on_all:
            return False
        seen = self._sold_out.get((sku, location))
        if seen is None:
            return False
        if time.monotonic() - seen > self.max_age:
            self._sold_out.pop((sku, location), None)
            return False
        return True

    def any_sold_out(self) -> bool:
        """Whether ``sold_out`` may say True for anything: a check cheap enough for every request."""
        return self._on_all and bool(self._sold_out)

    def token(self, sku: str) -> tuple[int, int]:
        """Take before asking the database; pass to ``mark_sold_out`` with its answer."""
        return (self._epoch, self._generation.get(sku, 0))

    def mark_sold_out(
        self, sku: str, location: str | None, token: tuple[int, int], *, named: str | None = None
    ) -> None:
        """Record the database's "zero available", unless stock came back since ``token`` was taken.
        ``named``: for ``location`` None, the one location the database's answer named, if any."""
        if token == (self._epoch, self._generation.get(sku, 0)):
            self._sold_out[(sku, location)] = time.monotonic()
            if location is None and named is not None:
                self._named[sku] = named

    def named_location(self, sku: str) -> str | None:
        """The location to name in a refusal of a line without one (see ``mark_sold_out``)."""
        return self._named.get(sku)

    def _on_notify(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        self._available_again(payload)

    def _available_again(self, payload: str) -> None:
        self.notifications += 1
        if payload == "*":
            self._forget_all()
            return
        skus = set(payload.split(","))
        for sku in skus:
            self._generation[sku] = self._generation.get(sku, 0) + 1
        for key in [key for key in self._sold_out if key[0] in skus]:
            del self._sold_out[key]
        for sku in skus:
            self._named.pop(sku, None)

    def _forget_all(self) -> None:
        self._epoch += 1
        self._generation.clear()
        self._sold_out.clear()
        self._named.clear()

    # --- listening ---------------------------------------------------------------------------------

    @property
    def followed(self) -> int:
        """How many shards the hint listens on (or tries to)."""
        return len(self._dsns)

    async def start(self) -> None:
        self._start_listeners()

    def follow(self, shard_urls: Iterable[URL], *, routing_epoch: int | None = None) -> None:
        """Listen on exactly ``shard_urls`` from now on: start a listener for each new one, stop those
        of shards no longer given (removed ones). A new shard is not heard until its listener connects,
        and until then nothing is said to be sold out. ``routing_epoch``: the slot map's epoch; when it
        differs from the last one given, everything learned is forgotten (see the module docstring)."""
        wanted = [listen_dsn(url) for url in shard_urls]
        for dsn in self._tasks.keys() - set(wanted):
            retired = self._tasks.pop(dsn)
            retired.cancel()
            self._retiring.add(retired)
            retired.add_done_callback(self._retiring.discard)
            self._heard.discard(dsn)
        self._dsns = wanted
        self._start_listeners()
        self._recount()
        if routing_epoch is not None and routing_epoch != self._routing_epoch:
            if self._routing_epoch is not None:
                self._forget_all()
            self._routing_epoch = routing_epoch

    def _start_listeners(self) -> None:
        for dsn in self._dsns:
            if dsn not in self._tasks:
                self._tasks[dsn] = asyncio.create_task(self._listen(dsn), name="sold-out-listener")

    def _recount(self) -> None:
        self._on_all = self._heard.issuperset(self._dsns)

    async def wait_listening(self, within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while not self._on_all:
            if time.monotonic() > deadline:
                raise TimeoutError("the sold-out hint could not listen on every shard")
            await asyncio.sleep(0.02)

    async def _listen(self, dsn: str) -> None:
        """Hold a LISTEN connection to one shard, reconnecting after failures."""

        def connected() -> None:
            # A "sold out" learned while this shard was not heard may have missed its stock coming
            # back: it is forgotten, and the database is asked again.
            self._forget_all()
            self._heard.add(dsn)
            self._recount()

        def lost() -> None:
            if self._tasks.get(dsn) in (None, asyncio.current_task()):
                # (not when a new listener for the same shard replaced this one meanwhile)
                self._heard.discard(dsn)
                self._recount()
            self._forget_all()

        await listen_forever(
            dsn, CHANNEL, self._on_notify, on_connect=connected, on_lost=lost, name="the sold-out hint"
        )

    async def close(self) -> None:
        tasks = [*self._tasks.values(), *self._retiring]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = {}
