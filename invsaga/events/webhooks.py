"""Registered webhooks and their delivery cursors, in the core database."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import Text

from invsaga.domain.errors import WebhookNotFound
from invsaga.domain.events import validate_event_types
from invsaga.events.signing import new_secret
from invsaga.store.databases import unavailable_as

_CORE = "core database"


class Webhook(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    url: str
    event_types: list[str]
    secret: str
    active: bool
    created_at: datetime


class Cursor(BaseModel):
    """Where one webhook's deliveries from one source stand."""

    webhook_id: str
    source: str
    delivered_seq: int
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    #: No retry is waiting (by the core database's clock).
    due: bool


_COLUMNS = "id, url, event_types, secret, active, created_at"

_INSERT = text(
    "INSERT INTO webhooks (id, url, event_types, secret) VALUES (:id, :url, :types, :secret)"
    f" RETURNING {_COLUMNS}"
).bindparams(bindparam("types", type_=ARRAY(Text)))


async def register_webhook(
    core: AsyncEngine, *, url: str, event_types: Sequence[str], secret: str | None = None
) -> Webhook:
    """Register a receiver of ``event_types``; without a secret one is generated (return it once)."""
    types = validate_event_types(list(event_types))
    params = {
        "id": "wh_" + secrets.token_hex(8),
        "url": url,
        "types": types,
        "secret": secret or new_secret(),
    }
    async with unavailable_as(_CORE), core.begin() as conn:
        row = (await conn.execute(_INSERT, params)).one()
    return Webhook.model_validate(row._mapping)


async def list_webhooks(core: AsyncEngine, *, active_only: bool = False) -> list[Webhook]:
    where = " WHERE active" if active_only else ""
    async with unavailable_as(_CORE), core.connect() as conn:
        rows = await conn.execute(text(f"SELECT {_COLUMNS} FROM webhooks{where} ORDER BY created_at, id"))
        return [Webhook.model_validate(row._mapping) for row in rows]


async def get_webhook(core: AsyncEngine, webhook_id: str) -> Webhook:
    async with unavailable_as(_CORE), core.connect() as conn:
        row = (
            await conn.execute(text(f"SELECT {_COLUMNS} FROM webhooks WHERE id = :id"), {"id": webhook_id})
        ).first()
    if row is None:
        raise WebhookNotFound(f"no webhook {webhook_id!r}", webhook_id=webhook_id)
    return Webhook.model_validate(row._mapping)


async def delete_webhook(core: AsyncEngine, webhook_id: str) -> None:
    """Stop deliveries to it; its cursors go with it. Deleting an unknown id is refused."""
    async with unavailable_as(_CORE), core.begin() as conn:
        deleted = await conn.scalar(
            text("DELETE FROM webhooks WHERE id = :id RETURNING id"), {"id": webhook_id}
        )
    if deleted is None:
        raise WebhookNotFound(f"no webhook {webhook_id!r}", webhook_id=webhook_id)


async def cursors_of(conn: AsyncConnection, source: str) -> dict[str, Cursor]:
    rows = await conn.execute(
        text(
            "SELECT webhook_id, source, delivered_seq, attempts, next_attempt_at, last_error,"
            " coalesce(next_attempt_at <= now(), true) AS due FROM webhook_cursors WHERE source = :source"
        ),
        {"source": source},
    )
    return {row.webhook_id: Cursor.model_validate(row._mapping) for row in rows}


async def start_cursor(conn: AsyncConnection, webhook_id: str, source: str, delivered_seq: int) -> None:
    """A webhook's first cursor on a source; a concurrent first one wins, and a deleted webhook has none."""
    await conn.execute(
        text(
            "INSERT INTO webhook_cursors (webhook_id, source, delivered_seq)"
            " SELECT :id, :source, :seq WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = :id)"
            " ON CONFLICT (webhook_id, source) DO NOTHING"
        ),
        {"id": webhook_id, "source": source, "seq": delivered_seq},
    )
    await conn.commit()


async def advance_cursor(conn: AsyncConnection, webhook_id: str, source: str, delivered_seq: int) -> None:
    """Record a delivery (or a stretch of events the webhook does not want): never moves back."""
    await conn.execute(
        text(
            "UPDATE webhook_cursors SET delivered_seq = greatest(delivered_seq, :seq), attempts = 0,"
            " next_attempt_at = NULL, last_error = NULL, updated_at = now()"
            " WHERE webhook_id = :id AND source = :source"
        ),
        {"id": webhook_id, "source": source, "seq": delivered_seq},
    )
    await conn.commit()


async def record_failure(
    conn: AsyncConnection, webhook_id: str, source: str, *, attempts: int, retry_in_seconds: float, error: str
) -> None:
    await conn.execute(
        text(
            "UPDATE webhook_cursors SET attempts = :attempts,"
            " next_attempt_at = now() + make_interval(secs => :delay), last_error = :error,"
            " updated_at = now()"
            " WHERE webhook_id = :id AND source = :source"
        ),
        {
            "id": webhook_id,
            "source": source,
            "attempts": attempts,
            "delay": retry_in_seconds,
            "error": error[:500],
        },
    )
    await conn.commit()
