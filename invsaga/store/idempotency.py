"""Idempotency keys of the HTTP API, kept in the core database so every API process shares them.

A key is claimed with the hash of the request that first used it; the response is recorded when the
request completes. Claims and completions are single race-safe statements (``ON CONFLICT``), so any
number of processes can receive the same key at once: one row exists, and the first response recorded
for it is the one all of them return. The work behind a key must itself be idempotent (a checkout's
workflow id, a receipt's movement key), because a duplicate that finds an unfinished claim redoes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import Text

from invsaga.store.databases import unavailable_as

_LABEL = "core database"

_CLAIM = text(
    "INSERT INTO api_idempotency_keys (principal, idempotency_key, request_hash)"
    " VALUES (:principal, :key, :hash)"
    " ON CONFLICT (principal, idempotency_key) DO NOTHING"
    " RETURNING request_hash"
)

_READ = text(
    "SELECT request_hash, response_status, response_body FROM api_idempotency_keys"
    " WHERE principal = :principal AND idempotency_key = :key"
)

# Of many requests, the positions (1-based) of those nothing can have happened for: key never claimed by
# its principal, and no order row (the checkout's own record, invsaga/store/orders.py, so that a retry
# under a new key finds it). One statement for a batch of buyers (invsaga.api.fresh_requests).
_UNUSED_AMONG = text(
    "SELECT r.n FROM unnest(:principals, :keys, :order_ids) WITH ORDINALITY AS r(principal, key, order_id, n)"
    " WHERE NOT EXISTS (SELECT 1 FROM api_idempotency_keys k"
    "                    WHERE k.principal = r.principal AND k.idempotency_key = r.key)"
    "   AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.order_id = r.order_id)"
).bindparams(
    bindparam("principals", type_=ARRAY(Text)),
    bindparam("keys", type_=ARRAY(Text)),
    bindparam("order_ids", type_=ARRAY(Text)),
)

# Completes this request's claim, or records the response outright when the claim is gone (its owner
# failed and released it meanwhile). A response already recorded is never overwritten.
_COMPLETE = text(
    """
    INSERT INTO api_idempotency_keys AS k
           (principal, idempotency_key, request_hash, response_status, response_body, completed_at)
    VALUES (:principal, :key, :hash, :status, :body, now())
    ON CONFLICT (principal, idempotency_key) DO UPDATE
       SET response_status = excluded.response_status,
           response_body = excluded.response_body,
           completed_at = excluded.completed_at
     WHERE k.response_status IS NULL AND k.request_hash = excluded.request_hash
    """
)

_RELEASE = text(
    "DELETE FROM api_idempotency_keys"
    " WHERE principal = :principal AND idempotency_key = :key AND request_hash = :hash"
    " AND response_status IS NULL"
)

_PURGE = text(
    "DELETE FROM api_idempotency_keys WHERE (principal, idempotency_key) IN ("
    "  SELECT principal, idempotency_key FROM api_idempotency_keys"
    "   WHERE created_at < now() - make_interval(secs => :age) ORDER BY created_at LIMIT :limit"
    "   FOR UPDATE SKIP LOCKED)"
)

#: A claim can vanish between our INSERT and our read (its owner released it); then we try again.
_CLAIM_ATTEMPTS = 5


@dataclass(frozen=True)
class StoredResponse:
    status: int
    #: The JSON body exactly as first sent.
    body: str


@dataclass(frozen=True)
class KeyClaim:
    """What the key holds now. ``claimed``: this call created the row and should do the work."""

    claimed: bool
    request_hash: str
    response: StoredResponse | None


def _response(status: int | None, body: str | None) -> StoredResponse | None:
    return None if status is None or body is None else StoredResponse(status, body)


async def is_unused(core: AsyncEngine, principal: str, key: str, *, order_id: str) -> bool:
    """``unused_among`` for one request: the route's own fast path, for a buyer the fast path in front
    of it let through."""
    (unused,) = await unused_among(core, [(principal, key, order_id)])
    return unused


async def unused_among(core: AsyncEngine, requests: Sequence[tuple[str, str, str]]) -> list[bool]:
    """For each (principal, key, order id) of ``requests``: True when the key was never used and no
    checkout has prepared the order, so nothing can have happened for it yet and a refusal needs no
    record. One read for all of them (pass ``Databases.core_autocommit``)."""
    params = {
        "principals": [principal for principal, _, _ in requests],
        "keys": [key for _, key, _ in requests],
        "order_ids": [order_id for _, _, order_id in requests],
    }
    async with unavailable_as(_LABEL), core.connect() as conn:
        unused = set((await conn.scalars(_UNUSED_AMONG, params)).all())
    return [position in unused for position in range(1, len(requests) + 1)]


async def claim_key(core: AsyncEngine, principal: str, key: str, request_hash: str) -> KeyClaim:
    """Claim ``key`` for a request hashing to ``request_hash``, or report what it already holds."""
    params = {"principal": principal, "key": key, "hash": request_hash}
    async with unavailable_as(_LABEL):
        for _ in range(_CLAIM_ATTEMPTS):
            async with core.begin() as conn:
                if await conn.scalar(_CLAIM, params) is not None:
                    return KeyClaim(claimed=True, request_hash=request_hash, response=None)
            # A fresh statement (and snapshot) sees the row the conflicting insert committed.
            async with core.connect() as conn:
                row = (await conn.execute(_READ, params)).first()
            if row is not None:
                return KeyClaim(
                    claimed=False,
                    request_hash=row.request_hash,
                    response=_response(row.response_status, row.response_body),
                )
    # Only a key claimed and released over and over in the same instant gets here; treat it as ours.
    return KeyClaim(claimed=False, request_hash=request_hash, response=None)


async def complete_key(
    core: AsyncEngine, principal: str, key: str, request_hash: str, response: StoredResponse
) -> StoredResponse:
    """Record ``response`` for the key unless one is recorded already; returns the recorded response."""
    params = {
        "principal": principal,
        "key": key,
        "hash": request_hash,
        "status": response.status,
        "body": response.body,
    }
    async with unavailable_as(_LABEL), core.begin() as conn:
        await conn.execute(_COMPLETE, params)
        # Read committed: this statement sees a response a concurrent duplicate recorded first.
        row = (await conn.execute(_READ, params)).first()
    if row is None or row.request_hash != request_hash:
        return response
    return _response(row.response_status, row.response_body) or response


async def release_key(core: AsyncEngine, principal: str, key: str, request_hash: str) -> None:
    """Give up an unfinished claim (the request failed in a way worth retrying), so a retry may run."""
    async with unavailable_as(_LABEL), core.begin() as conn:
        await conn.execute(_RELEASE, {"principal": principal, "key": key, "hash": request_hash})


async def purge_keys(core: AsyncEngine, *, older_than_seconds: float, limit: int = 1000) -> int:
    """Forget up to ``limit`` keys first used more than ``older_than_seconds`` ago; returns how many."""
    async with unavailable_as(_LABEL), core.begin() as conn:
        result = await conn.execute(_PURGE, {"age": older_than_seconds, "limit": limit})
    return int(result.rowcount or 0)
