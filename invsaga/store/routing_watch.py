"""Follow the shard registry and the slot map while the process runs.

A LISTEN connection to the core database hears ``invsaga_routing`` (sent in the transaction of every
registry or slot-map change, with the new epoch) and reloads the process' router and shard list. It
is the fast way, not the safe one: a process that missed a notification (its connection was down)
still never writes with a stale map, because the shard refuses the write and names the epoch to reach
(``invsaga.store.rerouting``). A slow poll of the epoch bounds how long reads may route stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from sqlalchemy import text

from invsaga.store.listening import listen_dsn, listen_forever
from invsaga.store.registry import CHANNEL

if TYPE_CHECKING:
    from invsaga.store.databases import Databases

log = logging.getLogger("invsaga.routing")

#: Seconds between epoch polls, the fallback for a notification missed while reconnecting.
POLL_SECONDS = 5.0


async def watch_routing(databases: Databases, *, poll_seconds: float = POLL_SECONDS) -> None:
    """Run until cancelled: reload ``databases``' routing on each notification and after each poll
    that finds a newer epoch."""
    changed = asyncio.Event()
    listener = asyncio.create_task(_listen(databases, changed))
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=poll_seconds)
            changed.clear()
            try:
                async with databases.core_autocommit.connect() as conn:
                    epoch = int(await conn.scalar(text("SELECT epoch FROM routing_epoch")) or 0)
                if epoch > databases.router.epoch:
                    await databases.refresh()
                    log.info("routing reloaded at epoch %s", databases.router.epoch)
            except Exception as exc:  # a lost core database surfaces as ours, asyncpg's or SQLAlchemy's
                log.warning("could not reload routing: %s; the next notification or poll retries", exc)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def _listen(databases: Databases, changed: asyncio.Event) -> None:
    await listen_forever(
        listen_dsn(databases.core.url),
        CHANNEL,
        lambda *_args: changed.set(),
        on_connect=changed.set,  # whatever changed while not listening
        name="the routing watch",
    )
