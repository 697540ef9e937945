"""Registering webhooks: receivers of signed event deliveries (admin scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path
from fastapi.responses import Response

from invsaga.api.auth import AUTH_ERRORS, Operator
from invsaga.api.deps import Deps
from invsaga.api.errors import PayloadTooLarge
from invsaga.api.event_models import WebhookCreate, WebhookCreated, WebhookList, WebhookView
from invsaga.api.problems import problem_responses
from invsaga.domain.errors import InvalidInput, ShardUnavailable, WebhookNotFound
from invsaga.events.webhooks import delete_webhook, list_webhooks, register_webhook

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

WebhookId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_]+$", examples=["wh_3f1c9a0b7d2e4a61"])
]


@router.post(
    "",
    status_code=201,
    summary="Register a webhook",
    description="Deliveries start with the events that occur after registration. Each is a POST of one "
    "event as JSON, signed in the `Invsaga-Signature` header (`t=<unix>,v1=<hex HMAC-SHA256 of "
    '"<t>.<body>">`), with its id in `Invsaga-Event-Id`; retried with backoff until a 2xx, in sequence '
    "order per SKU. The secret is returned only here.",
    response_model=WebhookCreated,
    responses=problem_responses(InvalidInput, *AUTH_ERRORS, PayloadTooLarge, ShardUnavailable),
)
async def post_webhook(body: Annotated[WebhookCreate, Body()], deps: Deps, _: Operator) -> WebhookCreated:
    hook = await register_webhook(
        deps.databases.core, url=str(body.url), event_types=list(body.event_types), secret=body.secret
    )
    return WebhookCreated.of(hook)


@router.get(
    "",
    summary="List webhooks",
    response_model=WebhookList,
    responses=problem_responses(*AUTH_ERRORS, ShardUnavailable),
)
async def get_webhooks(deps: Deps, _: Operator) -> WebhookList:
    return WebhookList(webhooks=[WebhookView.of(h) for h in await list_webhooks(deps.databases.core)])


@router.delete(
    "/{webhook_id}",
    status_code=204,
    summary="Delete a webhook",
    response_class=Response,
    responses=problem_responses(InvalidInput, *AUTH_ERRORS, WebhookNotFound, ShardUnavailable),
)
async def remove_webhook(webhook_id: WebhookId, deps: Deps, _: Operator) -> Response:
    await delete_webhook(deps.databases.core, webhook_id)
    return Response(status_code=204)
