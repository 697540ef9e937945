"""Request and response bodies of the event feed and the webhook routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, UrlConstraints

from invsaga.domain.events import Event, EventType
from invsaga.events.webhooks import Webhook

MAX_FEED_PAGE = 1000
DEFAULT_FEED_PAGE = 100
MAX_FEED_CURSOR = 2000

WebhookUrl = Annotated[AnyHttpUrl, UrlConstraints(max_length=2000, allowed_schemes=["http", "https"])]


class EventPage(BaseModel):
    events: list[Event]
    next_cursor: str = Field(
        description="Pass it as `after` for the next page (the same when nothing is new)."
    )


class WebhookCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://erp.example.com/hooks/inventory",
                    "event_types": ["stock.changed", "stock.sold_out", "order.confirmed"],
                }
            ]
        },
    )

    url: WebhookUrl = Field(examples=["https://erp.example.com/hooks/inventory"])
    event_types: list[EventType] = Field(
        min_length=1, max_length=6, examples=[["stock.changed", "order.confirmed"]]
    )
    secret: str | None = Field(
        None,
        min_length=16,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Signs each delivery. Leave it out to get a generated one, shown only in this answer.",
    )


class WebhookView(BaseModel):
    id: str
    url: str
    event_types: list[str]
    active: bool
    created_at: datetime

    @classmethod
    def of(cls, hook: Webhook) -> WebhookView:
        return cls(**hook.model_dump(exclude={"secret"}))


class WebhookCreated(WebhookView):
    secret: str = Field(description="The signing secret. It is not shown again.")

    @classmethod
    def of(cls, hook: Webhook) -> WebhookCreated:
        return cls(**hook.model_dump())


class WebhookList(BaseModel):
    webhooks: list[WebhookView]
