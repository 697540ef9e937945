"""Route a write again when a shard refuses it because a slot moved (``SlotMoving``).

The refusal is the epoch check of every routed write: a shard writes nothing for a slot it no longer
serves, or one under a move's fence, and names the map epoch of the move. ``rerouted`` reloads the map
up to that epoch and runs the attempt again, which routes afresh, so a stale map costs a retry, never
a write to the wrong shard. A fence lasts for a move's final catch-up only (tens of milliseconds), so
short waits cover it; past ``patience`` the refusal is raised, and it is a ``ShardUnavailable`` like
any outage, so Temporal and HTTP clients retry it later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from invsaga.domain.errors import SlotMoving

if TYPE_CHECKING:
    from invsaga.store.databases import Databases

T = TypeVar("T")

#: How long one call waits out a move's fence before it gives up.
PATIENCE_SECONDS = 20.0
_FIRST_WAIT, _LONGEST_WAIT = 0.005, 0.2


async def rerouted(
    databases: Databases, attempt: Callable[[], Awaitable[T]], *, patience: float = PATIENCE_SECONDS
) -> T:
    """``attempt()``, again after each ``SlotMoving``, with the map reloaded first, for up to ``patience``
    seconds. ``attempt`` must route with ``databases.router`` each time it runs, and be idempotent."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    wait = _FIRST_WAIT
    while True:
        try:
            return await attempt()
        except SlotMoving as refusal:
            if loop.time() + wait > deadline:
                raise
            await databases.catch_up(int(refusal.details.get("epoch", 0)))
            await asyncio.sleep(wait)
            wait = min(wait * 2, _LONGEST_WAIT)
