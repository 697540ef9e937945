"""Webhook delivery for one source: POST each event a webhook wants, signed, at least once, and in
seq order per SKU (per order, for order events).

Per webhook and source there is one cursor, the last seq passed. A pass reads the events after it and
sends each SKU's in order, several SKUs at once (``INVSAGA_WEBHOOK_CONCURRENCY``). An event is passed
only after a 2xx: when one fails, the cursor stops just before it, and after a capped exponential
backoff it and everything after it is sent again, so a later event of its SKU never overtakes it (and
some of other SKUs arrive twice). Other webhooks go on meanwhile. A relay killed mid-pass sends the
pass again: consumers dedupe by the event id. Only the active relay of a source runs its dispatcher
(invsaga/events/relay.py), which orders it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import UTC, datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from invsaga.domain.events import Event
from invsaga.events import outbox, webhooks
from invsaga.events.metrics import RelayMetrics
from invsaga.events.outbox import Source
from invsaga.events.signing import EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, sign
from invsaga.events.webhooks import Cursor, Webhook
from invsaga.settings import Settings

log = logging.getLogger("invsaga.relay")

USER_AGENT = "inventory-saga-webhooks/1"


def retry_delay(attempts: int, *, base: float, cap: float) -> float:
    """Seconds before the next attempt after ``attempts`` failures in a row."""
    return float(min(cap, base * 2 ** min(attempts - 1, 32)))


async def post_event(client: httpx.AsyncClient, webhook: Webhook, event: Event) -> str | None:
    """Deliver one event; None on a 2xx, else what went wrong."""
    body = event.model_dump_json().encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign(webhook.secret, body),
        EVENT_ID_HEADER: event.id,
        EVENT_TYPE_HEADER: event.type,
    }
    try:
        response = await client.post(webhook.url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


class Dispatcher:
    def __init__(
        self,
        source: Source,
        core: AsyncEngine,
        client: httpx.AsyncClient,
        settings: Settings,
        metrics: RelayMetrics,
    ) -> None:
        self.source = source
        self.core = core
        self.client = client
        self.settings = settings
        self.metrics = metrics
        self._known: set[str] = set()

    async def run_once(self) -> int:
        """One pass over every webhook that wants this source's events; how many were delivered."""
        async with self.source.engine.connect() as conn:
            plans, water = await self._plan(conn)
        # The source's connection is back in the pool before any HTTP: a slow receiver holds no snapshot.
        delivered = await asyncio.gather(
            *(self._deliver(hook, cursor, events, water) for hook, cursor, events in plans)
        )
        return sum(delivered)

    async def _plan(self, conn: AsyncConnection) -> tuple[list[tuple[Webhook, Cursor, list[Event]]], int]:
        wanted = set(self.source.types)
        hooks = [
            w
            for w in await webhooks.list_webhooks(self.core, active_only=True)
            if wanted & set(w.event_types)
        ]
        for gone in self._known - {w.id for w in hooks}:
            self.metrics.forget_webhook(gone, self.source.name)
        self._known = {w.id for w in hooks}
        if not hooks:
            return [], 0
        async with self.core.connect() as core_conn:
            cursors = await webhooks.cursors_of(core_conn, self.source.name)
            for hook in hooks:
                if hook.id not in cursors:
                    # A new webhook gets the events that occur from its registration on.
                    start = await outbox.last_seq_before(conn, self.source, hook.created_at)
                    await webhooks.start_cursor(core_conn, hook.id, self.source.name, start)
            cursors = await webhooks.cursors_of(core_conn, self.source.name)
        water = await outbox.high_water(conn, self.source)
        plans: list[tuple[Webhook, Cursor, list[Event]]] = []
        for hook in hooks:
            cursor = cursors.get(hook.id)
            if cursor is None:  # deleted meanwhile
                continue
            events = await outbox.read_after(
                conn,
                self.source,
                cursor.delivered_seq,
                limit=self.settings.relay_batch,
                types=hook.event_types,
                since=hook.created_at,
            )
            plans.append((hook, cursor, events))
        return plans, water

    async def _deliver(self, hook: Webhook, cursor: Cursor, events: list[Event], water: int) -> int:
        """Deliver one pass. Events of different SKUs (orders) go out side by side, each SKU's in seq
        order; the cursor then moves to just before the first event that failed, so that event and
        everything after it is sent again after the backoff (a few twice: at least once)."""
        labels = (hook.id, self.source.name)
        self.metrics.backlog.labels(*labels).set(max(0, water - cursor.delivered_seq))
        if events and not cursor.due:
            self._set_lag(hook, events[0])
            return 0
        lanes: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            lanes[str(event.data.get("sku") or event.data.get("order_id"))].append(event)
        slots = asyncio.Semaphore(self.settings.webhook_concurrency)
        failures: list[tuple[Event, str]] = []
        delivered = 0

        async def lane(queue: list[Event]) -> None:
            nonlocal delivered
            for event in queue:
                async with slots:
                    error = await post_event(self.client, hook, event)
                if error is not None:
                    failures.append((event, error))
                    return
                self.metrics.delivered.labels(*labels).inc()
                delivered += 1

        await asyncio.gather(*(lane(queue) for queue in lanes.values()))
        async with self.core.connect() as core_conn:
            if failures:
                event, error = min(failures, key=lambda failure: failure[0].sequence)
                # The same event failing again counts on; a new one starts from one.
                attempts = cursor.attempts + 1 if event is events[0] else 1
                delay = retry_delay(
                    attempts,
                    base=self.settings.webhook_retry_base_seconds,
                    cap=self.settings.webhook_retry_max_seconds,
                )
                self.metrics.failed.labels(*labels).inc(len(failures))
                log.warning(
                    "webhook %s: %s failed (%s), attempt %d; retrying in %.1fs",
                    hook.id,
                    event.id,
                    error,
                    attempts,
                    delay,
                )
                if event.sequence - 1 > cursor.delivered_seq:
                    # Everything before the failed event was delivered or is not wanted: events of
                    # other types, or events stamped after the cursor started but written before
                    # the webhook was registered. Passing them lets them be pruned meanwhile.
                    await webhooks.advance_cursor(core_conn, hook.id, self.source.name, event.sequence - 1)
                await webhooks.record_failure(
                    core_conn,
                    hook.id,
                    self.source.name,
                    attempts=attempts,
                    retry_in_seconds=delay,
                    error=error,
                )
                self._set_lag(hook, event)
                return delivered
            # One durable write per pass, not per event: a relay that dies before it sends the pass's
            # events again (at least once), and a pass is at most relay_batch events.
            last = events[-1].sequence if events else cursor.delivered_seq
            if len(events) < self.settings.relay_batch:
                last = max(water, last)  # nothing else it wants up to the high water: skip past it
            if last > cursor.delivered_seq or cursor.attempts:
                await webhooks.advance_cursor(core_conn, hook.id, self.source.name, last)
        self.metrics.lag.labels(*labels).set(0)
        self.metrics.backlog.labels(*labels).set(max(0, water - last))
        return delivered

    def _set_lag(self, hook: Webhook, oldest: Event) -> None:
        lag = (datetime.now(UTC) - oldest.occurred_at).total_seconds()
        self.metrics.lag.labels(hook.id, self.source.name).set(max(0.0, lag))
