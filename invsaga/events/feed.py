"""The pull feed (``GET /v1/events``): one page of events from every source, after a cursor.

Each source is read in seq order past the cursor's position in it, and the sources are merged by when
their events occurred. ``heapq.merge`` keeps each source's own order, so the page holds a prefix of
every source and the next cursor can say, per source, exactly how far the reader got.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Sequence

from pydantic import BaseModel

from invsaga.domain.events import Event, FeedCursor
from invsaga.events.outbox import Source, high_water, read_after, sources_of
from invsaga.store.databases import Databases, unavailable_as


class FeedPage(BaseModel):
    events: list[Event]
    #: Pass it as ``after`` for the next page; it is the same cursor when nothing new has happened.
    next_cursor: str


async def _read_source(
    source: Source, after: int, limit: int, types: Sequence[str] | None
) -> tuple[list[Event], int]:
    async with unavailable_as(source.label), source.engine.connect() as conn:
        # The high water first: with a type filter, a short page means "nothing wanted up to here".
        water = await high_water(conn, source)
        return await read_after(conn, source, after, limit=limit, types=types), water


async def read_feed(
    databases: Databases, cursor: FeedCursor, *, limit: int, types: Sequence[str] | None = None
) -> FeedPage:
    sources = sources_of(databases)
    if types is not None:
        sources = [s for s in sources if set(types) & set(s.types)]
    reads = await asyncio.gather(
        *(_read_source(s, cursor.after.get(s.name, 0), limit, types) for s in sources)
    )
    merged = list(
        heapq.merge(*(events for events, _ in reads), key=lambda e: (e.occurred_at, e.source, e.sequence))
    )
    page = merged[:limit]
    after = dict(cursor.after)
    for source, (events, water) in zip(sources, reads, strict=True):
        taken = [e for e in page if e.source == source.name]
        if len(events) < limit and len(taken) == len(events):
            # Everything this source had up to its high water is on the page (or not wanted).
            last = taken[-1].sequence if taken else 0
            after[source.name] = max(after.get(source.name, 0), water, last)
        elif taken:
            after[source.name] = taken[-1].sequence
    return FeedPage(events=page, next_cursor=FeedCursor(after=after).encode())
