"""Done means: a checkout run by an encrypting client and worker leaves neither the payment token nor
the customer anywhere in Temporal's history but the search attributes (which carry the customer, never
the token), and the codec server, over real HTTP, decodes that history for an operator's key only."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload, SearchAttributes
from temporalio.api.history.v1 import HistoryEvent
from temporalio.contrib.pydantic import pydantic_data_converter

from invsaga.api.auth import ApiKeys, Scope, key_entry, new_key
from invsaga.api.codec_server import create_codec_app
from invsaga.client import CheckoutClient
from invsaga.dev.asgi_thread import ThreadedAsgiServer
from invsaga.dev.temporal import find_temporal_cli
from invsaga.domain.checkout import CheckoutRequest, CheckoutStatus, workflow_id_for
from invsaga.temporal.codec import ENCODING, PayloadKeys, new_key_entry
from invsaga.temporal.connection import connect
from tests.helpers import stocked_sku
from tests.integration.test_checkout_saga import order
from workers.worker import WorkerDeps, build_worker

pytestmark = pytest.mark.usefixtures("clean_shards")

KEYS = PayloadKeys.parse(new_key_entry("codec-server-test"))
ADMIN_KEY, CHECKOUT_KEY, UNKNOWN_KEY = new_key(), new_key(), new_key()
UI_ORIGIN = "http://localhost:8233"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
async def codec_url() -> AsyncIterator[str]:
    api_keys = ApiKeys.parse(f"{key_entry(Scope.ADMIN, ADMIN_KEY)},{key_entry(Scope.CHECKOUT, CHECKOUT_KEY)}")
    app = create_codec_app(KEYS, api_keys=api_keys, ui_origins=[UI_ORIGIN])
    async with ThreadedAsgiServer(app, name="codec server") as server:
        yield server.url


def _messages(message: Message) -> Iterator[Message]:
    """``message`` and every message inside it (map values too), depth first."""
    yield message
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is None:
                continue
            items = list(value.values())
        else:
            items = list(value) if field.is_repeated else [value]
        for item in items:
            yield from _messages(item)


def _split_search_attributes(event: HistoryEvent) -> tuple[HistoryEvent, list[SearchAttributes]]:
    """A copy of ``event`` without its search attributes, and those search attributes."""
    rest = HistoryEvent()
    rest.CopyFrom(event)
    holders = [
        (message, field.name)
        for message in _messages(rest)
        for field, _ in message.ListFields()
        if field.message_type is not None
        and field.message_type.full_name == SearchAttributes.DESCRIPTOR.full_name
    ]
    found = []
    for message, name in holders:
        found.append(SearchAttributes())
        found[-1].CopyFrom(getattr(message, name))
        message.ClearField(name)
    return rest, found


def _payloads(events: list[HistoryEvent]) -> list[Payload]:
    return [m for e in events for m in _messages(e) if isinstance(m, Payload)]


def _as_json(payloads: list[Payload]) -> dict[str, list[dict[str, object]]]:
    return {"payloads": [json_format.MessageToDict(p) for p in payloads]}


def _from_json(answer: httpx.Response) -> list[Payload]:
    return [json_format.ParseDict(p, Payload()) for p in answer.json()["payloads"]]


async def test_a_checkout_keeps_the_token_and_customer_out_of_temporal_and_the_codec_server_reads_it(
    saga_settings, databases, store, codec_url
):
    encrypting = await connect(saga_settings.temporal_address, saga_settings.temporal_namespace, keys=KEYS)
    without_codec = await connect(saga_settings.temporal_address, saga_settings.temporal_namespace)
    task_queue = f"codec-{uuid.uuid4()}"
    sku = await stocked_sku(databases, store, 3)
    customer = f"cust-{uuid.uuid4().hex[:12]}"
    request = order((sku, 1), token="tok_success").model_copy(update={"customer_id": customer})
    async with (
        WorkerDeps.open(saga_settings) as deps,
        build_worker(encrypting, saga_settings, deps, task_queue=task_queue),
    ):
        result = await CheckoutClient(encrypting, task_queue=task_queue).checkout(request)
    assert result.status is CheckoutStatus.CONFIRMED

    workflow_id = workflow_id_for(request.order_id)
    history = await without_codec.get_workflow_handle(workflow_id).fetch_history()
    token, customer_bytes = request.payment_token.encode(), customer.encode()
    split = [_split_search_attributes(event) for event in history.events]
    rest = [event for event, _ in split]
    search_attributes = [sa for _, found in split for sa in found]
    for event in rest:
        serialized = event.SerializeToString()
        assert token not in serialized, event
        assert customer_bytes not in serialized, event
    assert any(customer_bytes in sa.SerializeToString() for sa in search_attributes)
    assert not any(token in sa.SerializeToString() for sa in search_attributes)

    started_input = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    assert started_input.metadata["encoding"] == ENCODING
    payloads = _payloads(rest)
    async with httpx.AsyncClient(base_url=codec_url, timeout=10) as http:
        answer = await http.post("/decode", json=_as_json(payloads), headers={**ADMIN, "Origin": UI_ORIGIN})
        assert answer.status_code == 200, answer.text
        assert answer.headers["access-control-allow-origin"] == UI_ORIGIN
        decoded = _from_json(answer)
        assert len(decoded) == len(payloads)
        assert ENCODING not in {p.metadata.get("encoding") for p in decoded}
        [first] = _from_json(await http.post("/decode", json=_as_json([started_input]), headers=ADMIN))
        assert pydantic_data_converter.payload_converter.from_payloads([first], [CheckoutRequest]) == [
            request
        ]

        await _the_codec_server_refuses_what_it_must(http, started_input)

    # The temporal CLI sends an operator's key with --codec-auth and shows the history decoded.
    shown = await asyncio.to_thread(
        subprocess.run,
        [str(find_temporal_cli()), "workflow", "show", "--address", saga_settings.temporal_address,
         "--workflow-id", workflow_id, "-o", "json",
         "--codec-endpoint", codec_url, "--codec-auth", f"Bearer {ADMIN_KEY}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    first_event = json.loads(shown.stdout)["events"][0]
    [shown_input] = first_event["workflowExecutionStartedEventAttributes"]["input"]["payloads"]
    assert json.loads(base64.b64decode(shown_input["data"]))["payment_token"] == request.payment_token


async def _the_codec_server_refuses_what_it_must(http: httpx.AsyncClient, encrypted: Payload) -> None:
    body = _as_json([encrypted])
    for headers in ({}, {"Authorization": f"Bearer {UNKNOWN_KEY}"}):
        refused = await http.post("/decode", json=body, headers=headers)
        assert refused.status_code == 401, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "unauthorized"
    for path in ("/decode", "/encode"):
        refused = await http.post(path, json=body, headers={"Authorization": f"Bearer {CHECKOUT_KEY}"})
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden"), path

    tampered = Payload()
    tampered.CopyFrom(encrypted)
    tampered.data = tampered.data[:-1] + bytes([tampered.data[-1] ^ 1])
    undecodable = await http.post("/decode", json=_as_json([tampered]), headers=ADMIN)
    assert undecodable.status_code == 422
    assert undecodable.headers["content-type"] == "application/problem+json"
    assert undecodable.json()["code"] == "payload_undecodable"

    # Another origin gets no CORS grant: its browser neither sends the request nor reads the answer.
    for origin, granted in (("https://evil.example", None), (UI_ORIGIN, UI_ORIGIN)):
        preflight = await http.options(
            "/decode",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
            },
        )
        assert preflight.headers.get("access-control-allow-origin") == granted, origin
        answered = await http.post("/decode", json=body, headers={**ADMIN, "Origin": origin})
        assert answered.headers.get("access-control-allow-origin") == granted, origin

    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"token": "tok_x"}')
    [sealed] = _from_json(await http.post("/encode", json=_as_json([plain]), headers=ADMIN))
    assert sealed.metadata["encoding"] == ENCODING and b"tok_x" not in sealed.data
    assert _from_json(await http.post("/decode", json=_as_json([sealed]), headers=ADMIN)) == [plain]
