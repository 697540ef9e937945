"""What a shard's outbox still owes the webhooks, asked before the shard is retired: once it is
removed, no relay reads its events again, so an event not delivered by then never will be."""

from __future__ import annotations

from invsaga.events import outbox
from invsaga.events.webhooks import cursors_of, list_webhooks
from invsaga.store.databases import Databases, unavailable_as


async def owed_by_shard(databases: Databases, index: int) -> dict[str, int]:
    """Per active webhook that wants stock events: how many of shard ``index``'s it has yet to get
    (webhooks owed nothing are absent)."""
    source = outbox.shard_outbox(databases, index)
    hooks = [
        hook
        for hook in await list_webhooks(databases.core, active_only=True)
        if set(hook.event_types) & set(source.types)
    ]
    if not hooks:
        return {}
    async with unavailable_as("core database"), databases.core.connect() as core:
        cursors = await cursors_of(core, source.name)
    owed: dict[str, int] = {}
    async with unavailable_as(source.label), source.engine.connect() as conn:
        for hook in hooks:
            cursor = cursors.get(hook.id)
            count = await outbox.undelivered(
                conn,
                source,
                after=cursor.delivered_seq if cursor else 0,
                types=[t for t in hook.event_types if t in source.types],
                since=hook.created_at,
            )
            if count:
                owed[hook.id] = count
    return owed
