"""Idempotency-Key handling for unsafe requests (draft-ietf-httpapi-idempotency-key-header).

The key is scoped to the caller's API key. The first request with a key claims it in the core database
together with a hash of the request; its answer is recorded, and any later request with the same key and
the same request gets that exact answer without running again (``Idempotent-Replayed: true``).

- Same key, different request: 422 ``idempotency-key-reused``; nothing runs.
- Same key while the first is still running: a duplicate in the same API process waits for the first's
  answer (``SharedRuns``); one in another process runs the same work too. That is safe because the work
  is idempotent by itself (a checkout's workflow id, a receipt's movement key), and whichever finishes
  first records the answer that every duplicate returns. A crashed request never strands a key.
- Answers worth replaying are recorded: successes and definite refusals (4xx). An error that a retry can
  fix (5xx, unavailable) records nothing, so the client's retry runs for real. It releases the claim,
  unless the work may have started something that goes on without us (a checkout whose decision did not
  come in time): then the claim stays, and the retry, finding it unfinished, attaches to that work
  instead of being treated, and screened, as a new request.
- Malformed requests are refused before the key is looked at, so fixing one and retrying is not "reuse".
- A checkout the sold-out hint refuses for a never-used key and a never-started order is answered
  before this runs and not recorded (``invsaga/api/fast_refusal.py``, ``invsaga/api/routes_checkouts.py``):
  nothing happened, so nothing to replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Header
from fastapi.encoders import jsonable_encoder
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from invsaga.api.auth import Principal
from invsaga.api.errors import IdempotencyKeyReused
from invsaga.api.problems import PROBLEM_MEDIA_TYPE, problem_body, status_of
from invsaga.domain.errors import InventoryError
from invsaga.store.idempotency import StoredResponse, claim_key, complete_key, release_key

REPLAYED_HEADER = "Idempotent-Replayed"

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="A unique key per logical request (a UUID is ideal); retries reuse it.",
        examples=["7f1c2d9e-5b8a-4e0b-9f3a-2d6c1b0e8a47"],
    ),
]


def fingerprint(operation: str, body: BaseModel | None) -> str:
    """A hash of what the request asks for, independent of JSON spacing and key order."""
    payload = json.dumps(
        [operation, body.model_dump(mode="json") if body is not None else None],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def json_answer(status: int, body: Any) -> StoredResponse:
    return StoredResponse(status, json.dumps(jsonable_encoder(body), separators=(",", ":")))


def _refusal(error: InventoryError, instance: str) -> StoredResponse | None:
    """The answer to record for a refusal, or None when a retry could succeed."""
    if error.retryable or status_of(error) >= 500:
        return None
    return problem_answer(error, instance)


#: What a request with an Idempotency-Key answers: its (recorded) answer, and whether it was replayed.
Answered = tuple[StoredResponse, bool]


class SharedRuns:
    """The requests of this process still running, by API key, Idempotency-Key and request hash, so a
    duplicate waits for the first one's answer (or error) instead of running the work again.

    Running it again is safe but not free: each duplicate of a checkout sends its own update-with-start
    to the one workflow, and Temporal refuses more updates in flight per workflow than its limit (10 on
    a default server) with ResourceExhausted, which would answer a burst of retries 503."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, str, str], asyncio.Future[Answered]] = {}

    async def run(self, ident: tuple[str, str, str], call: Callable[[], Awaitable[Answered]]) -> Answered:
        running = self._running.get(ident)
        if running is not None:
            answer, _ = await asyncio.shield(running)
            return answer, True
        task = asyncio.ensure_future(call())
        self._running[ident] = task

        def finished(done: asyncio.Future[Answered]) -> None:
            # Also when the first request was cancelled (its client went away): the work went on, and
            # an error of it with no one left to raise it to is taken here, not logged as unretrieved.
            self._running.pop(ident, None)
            if not done.cancelled():
                done.exception()

        task.add_done_callback(finished)
        return await asyncio.shield(task)


async def run_once(
    core: AsyncEngine,
    principal: Principal,
    key: str,
    request_hash: str,
    instance: str,
    work: Callable[[bool], Awaitable[StoredResponse]],
    *,
    shared: SharedRuns,
    keep_claim: bool = False,
) -> Answered:
    """Run ``work`` at most once in effect per key; returns its (recorded) answer and whether it was
    replayed from an earlier request.

    ``work(first)`` learns whether this request claimed the key: a duplicate of a request still running
    (or of one that failed after starting something, with ``keep_claim``) must not be answered
    differently from it. A duplicate of one still running in this process waits for its answer.
    """

    async def once() -> Answered:
        claim = await claim_key(core, principal.key_id, key, request_hash)
        if claim.request_hash != request_hash:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used with a different request; use a new key",
                idempotency_key=key,
            )
        if claim.response is not None:
            return claim.response, True
        try:
            answer = await work(claim.claimed)
        except InventoryError as error:
            refusal = _refusal(error, instance)
            if refusal is None:
                if not keep_claim:
                    # If even the release fails the claim stays; a retry of the request still runs.
                    with contextlib.suppress(InventoryError):
                        await release_key(core, principal.key_id, key, request_hash)
                raise
            answer = refusal
        return await complete_key(core, principal.key_id, key, request_hash, answer), False

    return await shared.run((principal.key_id, key, request_hash), once)


def problem_answer(error: InventoryError, instance: str) -> StoredResponse:
    # problem_body is plain JSON already; skipping jsonable_encoder matters on the sold-out fast path.
    body = json.dumps(problem_body(error, instance), separators=(",", ":"))
    return StoredResponse(status_of(error), body)


def as_response(answer: StoredResponse, *, replayed: bool, headers: dict[str, str] | None = None) -> Response:
    media_type = PROBLEM_MEDIA_TYPE if answer.status >= 400 else "application/json"
    response = Response(answer.body, status_code=answer.status, media_type=media_type, headers=headers)
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return response
