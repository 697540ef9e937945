"""The relay: stamps every outbox's new rows with their seq, delivers them to webhooks, prunes old ones.

One relay is active per source (a shard, or the core database): the one holding that database's
session advisory lock. Any number can run (every worker runs one unless ``INVSAGA_RELAY_ENABLED`` is
off); the others stand by, retry the lock every few polls, and take over within about a second of the
active one's connection dying, since Postgres frees a session lock with its session. Stamping, delivery
order and pruning all rely on there being one: the lock orders them.

The sources follow the registry: a shard registered while the relay runs (its Databases watched, see
``Databases.open(watch=True)``) gets a source task within ``FOLLOW_SECONDS``, and a removed one's
task stops, giving up its lock. Each source task is the same as one started with the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import Text

from invsaga.events import outbox
from invsaga.events.dispatcher import USER_AGENT, Dispatcher
from invsaga.events.metrics import RELAY_METRICS, RelayMetrics
from invsaga.events.outbox import Source, sources_of
from invsaga.settings import Settings
from invsaga.store.databases import Databases

log = logging.getLogger("invsaga.relay")

#: A relay on standby asks for the lock this often; a failed database is retried this often.
STANDBY_RETRY_SECONDS = 1.0
#: How often the relay looks for sources added to (or removed from) its Databases.
FOLLOW_SECONDS = 1.0

# What pruning must keep, read in one snapshot so that a webhook counts either by its cursor or, if the
# dispatcher has not started one yet, by its registration (it is owed every event since); and nothing
# that occurred after the snapshot, so a webhook registered after it loses nothing either.
_PRUNE_BOUNDS = text(
    "SELECT (SELECT min(c.delivered_seq) FROM webhook_cursors c JOIN webhooks w ON w.id = c.webhook_id"
    "         WHERE w.active AND c.source = :source) AS slowest,"
    " least(now(), (SELECT min(w.created_at) FROM webhooks w WHERE w.active AND w.event_types && :types"
    "         AND NOT EXISTS (SELECT 1 FROM webhook_cursors c"
    "                          WHERE c.webhook_id = w.id AND c.source = :source))) AS keep_since"
).bindparams(bindparam("types", type_=ARRAY(Text)))


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class Relay:
    def __init__(
        self,
        settings: Settings,
        databases: Databases,
        *,
        metrics: RelayMetrics = RELAY_METRICS,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.databases = databases
        self.metrics = metrics
        self._client = client

    async def run(self, stop: asyncio.Event) -> None:
        """Relay every source until ``stop`` is set, following the sources as shards come and go."""
        client = self._client or httpx.AsyncClient(
            timeout=self.settings.webhook_timeout_seconds, headers={"User-Agent": USER_AGENT}
        )
        try:
            async with asyncio.TaskGroup() as group:
                await self._follow_sources(group, client, stop)
        finally:
            if self._client is None:
                await client.aclose()

    async def _follow_sources(
        self, group: asyncio.TaskGroup, client: httpx.AsyncClient, stop: asyncio.Event
    ) -> None:
        """Start a task per source, now and for every source that appears later; stop the task of a
        source that went away (a removed shard). Each task has its own stop, set by this one."""
        running: dict[str, asyncio.Event] = {}
        started = False
        try:
            while not stop.is_set():
                current = {source.name: source for source in sources_of(self.databases)}
                for name, source in current.items():
                    if name not in running:
                        if started:
                            log.info("relay follows %s, added since it started", name)
                        running[name] = asyncio.Event()
                        group.create_task(
                            self._run_source(source, client, running[name]), name=f"relay-{name}"
                        )
                for name in running.keys() - current.keys():
                    log.info("relay stops relaying %s: its shard was removed", name)
                    running.pop(name).set()
                started = True
                await _wait(stop, FOLLOW_SECONDS)
        finally:
            for source_stop in running.values():
                source_stop.set()

    async def _run_source(self, source: Source, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        announced_standby = False
        while not stop.is_set():
            try:
                async with source.engine.connect() as conn:
                    held = bool(
                        await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": source.lock_key})
                    )
                    await conn.commit()
                    if not held:
                        if not announced_standby:
                            log.info("relay for %s on standby: another relay is active", source.name)
                            announced_standby = True
                        await _wait(stop, STANDBY_RETRY_SECONDS)
                        continue
                    announced_standby = False
                    log.info("relay active for %s", source.name)
                    self.metrics.active.labels(source.name).set(1)
                    try:
                        await self._lead(source, conn, client, stop)
                    finally:
                        self.metrics.active.labels(source.name).set(0)
                        with contextlib.suppress(Exception):
                            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": source.lock_key})
                            await conn.commit()
            except Exception as exc:  # a database or receiver failure: stand by and try again
                log.warning("relay for %s stopped leading: %s: %s", source.name, type(exc).__name__, exc)
                await _wait(stop, STANDBY_RETRY_SECONDS)

    async def _lead(
        self, source: Source, conn: AsyncConnection, client: httpx.AsyncClient, stop: asyncio.Event
    ) -> None:
        """While this relay holds the lock: stamp on the lock's connection, deliver beside it."""
        done = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._stamp_loop(source, conn, stop, done))
            group.create_task(self._deliver_loop(source, client, done))

    async def _stamp_loop(
        self, source: Source, conn: AsyncConnection, stop: asyncio.Event, done: asyncio.Event
    ) -> None:
        try:
            pruned_at = 0.0
            while not stop.is_set():
                stamped = await outbox.stamp(conn, source, batch=self.settings.relay_batch)
                if stamped:
                    self.metrics.stamped.labels(source.name).inc(stamped)
                if time.monotonic() - pruned_at >= self.settings.event_prune_every_seconds:
                    self.metrics.unstamped.labels(source.name).set(await outbox.unstamped(conn, source))
                    await conn.commit()
                    await self._prune(source, conn)
                    pruned_at = time.monotonic()
                if stamped < self.settings.relay_batch:
                    await _wait(stop, self.settings.relay_poll_seconds)
        finally:
            done.set()

    async def _deliver_loop(self, source: Source, client: httpx.AsyncClient, done: asyncio.Event) -> None:
        """Runs until the stamper ends (stop, or the lock's connection failed) and finishes its pass."""
        dispatcher = Dispatcher(source, self.databases.core, client, self.settings, self.metrics)
        while not done.is_set():
            delivered = await dispatcher.run_once()
            if not delivered:
                await _wait(done, self.settings.relay_poll_seconds)

    async def _prune(self, source: Source, conn: AsyncConnection) -> None:
        async with self.databases.core.connect() as core:
            bounds = (
                await core.execute(_PRUNE_BOUNDS, {"source": source.name, "types": list(source.types)})
            ).one()
        slowest = bounds.slowest
        through = int(slowest) if slowest is not None else await outbox.high_water(conn, source)
        await conn.commit()
        total = 0
        while pruned := await outbox.prune(
            conn,
            source,
            through_seq=through,
            older_than_seconds=self.settings.event_retention_seconds,
            before=bounds.keep_since,
        ):
            total += pruned
        if total:
            self.metrics.pruned.labels(source.name).inc(total)
            log.info("pruned %d events of %s through seq %d", total, source.name, through)


async def run_relay(settings: Settings, stop: asyncio.Event) -> None:
    """``invsaga relay``: a relay on its own, with its own connections, until ``stop``. It watches the
    registry, so it relays shards added while it runs."""
    databases = await Databases.open(settings, watch=True)
    try:
        if settings.relay_metrics_port:
            RELAY_METRICS.serve(settings.relay_metrics_port)
        await Relay(settings, databases).run(stop)
    finally:
        await databases.close()
