"""The pull feed of stock and order events, for consumers that poll (admin scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from invsaga.api.auth import Operator
from invsaga.api.deps import Deps
from invsaga.api.errors import Forbidden, Unauthorized
from invsaga.api.event_models import DEFAULT_FEED_PAGE, MAX_FEED_CURSOR, MAX_FEED_PAGE, EventPage
from invsaga.api.problems import problem_responses
from invsaga.domain.errors import InvalidInput, ShardUnavailable
from invsaga.domain.events import EventType, FeedCursor, validate_event_types
from invsaga.events.feed import read_feed

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.get(
    "",
    summary="Read events after a cursor",
    description="Events of every shard and of the orders, oldest first. Each source's events keep their "
    "sequence order, so a SKU's events arrive in the order of its versions. Start without `after`; then "
    "pass each page's `next_cursor`. Events are kept for the retention period (7 days by default).",
    response_model=EventPage,
    responses=problem_responses(InvalidInput, Unauthorized, Forbidden, ShardUnavailable),
)
async def get_events(
    deps: Deps,
    _: Operator,
    after: Annotated[
        str | None, Query(max_length=MAX_FEED_CURSOR, description="The `next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_FEED_PAGE, description="Most events on the page.")
    ] = DEFAULT_FEED_PAGE,
    types: Annotated[
        list[EventType] | None, Query(max_length=6, description="Only these event types; repeat for each.")
    ] = None,
) -> EventPage:
    wanted = validate_event_types(list(types)) if types else None
    page = await read_feed(deps.databases, FeedCursor.decode(after), limit=limit, types=wanted)
    return EventPage(events=page.events, next_cursor=page.next_cursor)
