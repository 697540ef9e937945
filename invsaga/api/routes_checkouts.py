"""Checkouts: start one (idempotent by key), follow it, cancel it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Request
from fastapi.responses import Response

from invsaga.api import examples
from invsaga.api.auth import AUTH_ERRORS, Service
from invsaga.api.checkouts import cancel_checkout, checkout_state, refusal_for, start_checkout
from invsaga.api.deps import Deps
from invsaga.api.errors import (
    IdempotencyKeyRequired,
    IdempotencyKeyReused,
    PayloadTooLarge,
)
from invsaga.api.idempotency import (
    REPLAYED_HEADER,
    IdempotencyKey,
    as_response,
    fingerprint,
    json_answer,
    problem_answer,
    run_once,
)
from invsaga.api.models import (
    CancelAccepted,
    CancelIn,
    CheckoutAccepted,
    CheckoutIn,
    CheckoutState,
    PathOrderCode,
    checkout_path,
)
from invsaga.api.problems import problem_responses
from invsaga.domain.errors import (
    CancelRefused,
    CheckoutNotFound,
    InvalidInput,
    OrderIdReused,
    OutOfStock,
    ReservationClosed,
    ShardUnavailable,
)
from invsaga.store.idempotency import StoredResponse, is_unused

router = APIRouter(prefix="/v1/checkouts", tags=["checkouts"])

PathOrderId = Annotated[
    PathOrderCode, Path(description="The order id the checkout was started with.", examples=["ord-1001"])
]


@router.post(
    "",
    status_code=202,
    summary="Start a checkout",
    response_model=CheckoutAccepted,
    responses={
        202: {
            "headers": {
                "Location": {"description": "Where to follow the checkout", "schema": {"type": "string"}},
                REPLAYED_HEADER: {
                    "description": "`true` when this answer is replayed for a repeated Idempotency-Key",
                    "schema": {"type": "string"},
                },
            }
        },
        **problem_responses(
            IdempotencyKeyRequired,
            *AUTH_ERRORS,
            OutOfStock,
            ReservationClosed,
            OrderIdReused,
            PayloadTooLarge,
            InvalidInput,
            IdempotencyKeyReused,
            ShardUnavailable,
        ),
    },
)
async def post_checkout(
    request: Request,
    body: Annotated[CheckoutIn, Body(openapi_examples=examples.CHECKOUT_BODIES)],
    key: IdempotencyKey,
    principal: Service,
    deps: Deps,
) -> Response:
    """Reserve the stock and answer with the decision; payment and confirmation go on in the background.

    - **202**: the stock is held. Follow the checkout at `Location` (`links.self`) until it is terminal.
    - **409** `out-of-stock`: nothing was held; `shortages` names the short lines. `fast_path: true`
      means it was decided before any checkout started. A sold-out answer for a never-used key may go
      unrecorded (nothing happened), so a retry with that key asks again and succeeds if stock came back.
    - **422** `invalid-input`: the request (or the catalog) rules it out; if the body itself was invalid,
      nothing was started.

    Send a unique `Idempotency-Key` with each new checkout and reuse it on retries: the same key with the
    same body answers the same, the same key with another body is refused. An order id has one checkout
    ever, whatever the key.
    """
    checkout = body.to_domain()
    instance = request.url.path
    sold_out = deps.sold_out.hinted_refusal(checkout) if deps.sold_out else None
    if sold_out is not None and await is_unused(
        deps.databases.core_autocommit, principal.key_id, key, order_id=checkout.order_id
    ):
        # The flash-sale fast path: nothing can have happened for this request, so its refusal is
        # answered from memory and not recorded (a retry just asks again). One read, no write.
        # Most such buyers are answered this same way before FastAPI parses them
        # (invsaga/api/fast_refusal.py); this is the answer for those it let through.
        return as_response(problem_answer(refusal_for(sold_out), instance), replayed=False)

    async def start(first: bool) -> StoredResponse:
        # A duplicate of a request still running, or a retry after a 503, is never screened: it
        # attaches to the checkout its first attempt may have started.
        return json_answer(
            202, await start_checkout(deps.checkouts, checkout, sold_out=deps.sold_out, screen=first)
        )

    answer, replayed = await run_once(
        deps.databases.core,
        principal,
        key,
        fingerprint("POST /v1/checkouts", body),
        instance,
        start,
        shared=deps.shared_runs,
        keep_claim=True,
    )
    location = {"Location": checkout_path(checkout.order_id)} if answer.status == 202 else None
    return as_response(answer, replayed=replayed, headers=location)


@router.get(
    "/{order_id}",
    summary="Follow a checkout",
    response_model=CheckoutState,
    responses=problem_responses(InvalidInput, *AUTH_ERRORS, CheckoutNotFound, ShardUnavailable),
)
async def get_checkout(order_id: PathOrderId, deps: Deps, _: Service) -> CheckoutState:
    """The live status while the checkout runs; once `terminal`, its final result."""
    return await checkout_state(deps.checkouts, order_id)


@router.post(
    "/{order_id}/cancel",
    status_code=202,
    summary="Cancel a checkout",
    response_model=CancelAccepted,
    responses=problem_responses(
        InvalidInput, *AUTH_ERRORS, CheckoutNotFound, CancelRefused, PayloadTooLarge, ShardUnavailable
    ),
)
async def post_cancel(
    order_id: PathOrderId,
    deps: Deps,
    _: Service,
    body: Annotated[CancelIn | None, Body(openapi_examples=examples.CANCEL_BODIES)] = None,
) -> CancelAccepted:
    """Ask the checkout to stop: it releases its stock and refunds any charge, then ends CANCELLED, with
    the `reason` as its `detail`.

    Cancelling twice is harmless: a repeated cancel of a checkout that is cancelled (or being cancelled)
    answers **202** as the first one did. **409** `too-late-to-cancel` once it is confirming, or ended
    otherwise (confirmed or rejected).
    """
    reason = (body or CancelIn()).reason
    accepted = await cancel_checkout(deps.checkouts, order_id, reason)
    return accepted.model_copy(update={"reason": reason})
