"""How the payment client maps every kind of answer, and every way of getting none, onto domain errors.

The provider is replaced by ``httpx.MockTransport`` here only to produce failures a real server cannot be
made to produce on cue (a reset mid-answer, a proxy's HTML page); the integration tests cover the rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from invsaga.dev.payments.tokens import UnknownToken, behaviour_of
from invsaga.domain.errors import ConfigurationError, InvalidInput, PaymentDeclined, PaymentUnavailable
from invsaga.payments.client import PaymentClient, PaymentOutcomeUnknown
from invsaga.payments.models import ChargeStatus
from invsaga.payments.problems import CHARGE_NOT_FOUND, INVALID_REQUEST, Problem

CHARGE = {
    "id": "ch_1",
    "status": "succeeded",
    "amount": 500,
    "currency": "EUR",
    "token": "tok_success",
    "reference": "order-1",
    "idempotency_key": "k",
    "created_at": "2025-01-01T00:00:00Z",
    "refunded_amount": 0,
}

Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler) -> PaymentClient:
    return PaymentClient("http://psp.test", timeout=1, transport=httpx.MockTransport(handler))


def answer(status: int, body: object, content_type: str = "application/json") -> Handler:
    return lambda request: httpx.Response(
        status, content=json.dumps(body).encode(), headers={"content-type": content_type}
    )


def problem(status: int, problem_type: str = "about:blank") -> Handler:
    body = Problem(type=problem_type, title="t", status=status, detail="d").model_dump()
    return answer(status, body, "application/problem+json")


def failing(exc_type: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("boom", request=request)

    return handler


async def charge(handler: Handler):
    async with client_for(handler) as client:
        return await client.charge("k", 500, "EUR", "tok_success", "order-1")


async def find(handler: Handler):
    async with client_for(handler) as client:
        return await client.find_charge("k")


async def test_charge_sends_the_key_and_body_and_parses_the_charge():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=CHARGE)

    result = await charge(handler)
    assert result.id == "ch_1" and result.status is ChargeStatus.SUCCEEDED
    [request] = seen
    assert (request.method, request.url.path, request.headers["Idempotency-Key"]) == (
        "POST",
        "/v1/charges",
        "k",
    )
    assert json.loads(request.content) == {
        "amount": 500,
        "currency": "EUR",
        "token": "tok_success",
        "reference": "order-1",
    }


async def test_a_decline_carries_the_charge_id():
    with pytest.raises(PaymentDeclined) as raised:
        await charge(answer(402, CHARGE | {"status": "declined", "id": "ch_declined"}))
    assert raised.value.details["charge_id"] == "ch_declined"
    assert not raised.value.retryable


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (failing(httpx.ConnectError), PaymentUnavailable),
        (failing(httpx.ConnectTimeout), PaymentUnavailable),
        (failing(httpx.PoolTimeout), PaymentUnavailable),
        (failing(httpx.ReadTimeout), PaymentOutcomeUnknown),
        (failing(httpx.WriteTimeout), PaymentOutcomeUnknown),
        (failing(httpx.ReadError), PaymentOutcomeUnknown),
        (failing(httpx.RemoteProtocolError), PaymentOutcomeUnknown),
        (problem(503), PaymentUnavailable),
        (problem(429), PaymentUnavailable),
        (problem(500), PaymentOutcomeUnknown),
        (answer(502, "<html>bad gateway</html>", "text/html"), PaymentOutcomeUnknown),
        (answer(201, {"unexpected": True}), PaymentOutcomeUnknown),
    ],
)
async def test_a_charge_without_a_clear_answer_is_retryable_and_says_whether_it_may_have_happened(
    handler, expected
):
    with pytest.raises(PaymentUnavailable) as raised:
        await charge(handler)
    assert type(raised.value) is expected
    assert raised.value.retryable


@pytest.mark.parametrize(
    "handler",
    [failing(httpx.ReadTimeout), failing(httpx.ConnectError), problem(500), answer(200, {"id": 1})],
)
async def test_a_failed_lookup_is_only_unavailable_since_reading_changes_nothing(handler):
    with pytest.raises(PaymentUnavailable) as raised:
        await find(handler)
    assert type(raised.value) is PaymentUnavailable


async def test_lookup_is_none_only_when_the_provider_says_no_such_charge():
    assert await find(problem(404, CHARGE_NOT_FOUND.uri)) is None
    with pytest.raises(InvalidInput):  # a 404 from something else is a wrong URL, not "no charge"
        await find(problem(404))


async def test_a_rejected_request_is_invalid_input_naming_the_problem_type():
    with pytest.raises(InvalidInput) as raised:
        await charge(problem(422, INVALID_REQUEST.uri))
    assert raised.value.details == {"status": 422, "problem_type": INVALID_REQUEST.uri}
    assert not raised.value.retryable


async def test_refund_posts_the_key_and_parses_the_refund():
    refund = {
        "id": "re_1",
        "charge_id": "ch_1",
        "amount": 200,
        "idempotency_key": "rk",
        "created_at": "2025-01-01T00:00:00Z",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Idempotency-Key"] == "rk" and request.url.path == "/v1/refunds"
        assert json.loads(request.content) == {"charge_id": "ch_1", "amount": 200}
        return httpx.Response(201, json=refund)

    async with client_for(handler) as client:
        assert (await client.refund("rk", "ch_1", 200)).id == "re_1"


@pytest.mark.parametrize("url", ["localhost:8081", "ftp://psp.test", "http://"])
def test_a_base_url_that_is_not_http_is_a_configuration_error(url):
    with pytest.raises(ConfigurationError):
        PaymentClient(url, timeout=1)


@pytest.mark.parametrize(
    ("token", "status", "failures", "delay"),
    [
        ("tok_success", ChargeStatus.SUCCEEDED, 0, 0.0),
        ("tok_decline", ChargeStatus.DECLINED, 0, 0.0),
        ("tok_flaky_3", ChargeStatus.SUCCEEDED, 3, 0.0),
        ("tok_slow_250", ChargeStatus.SUCCEEDED, 0, 0.25),
    ],
)
def test_tokens_select_behaviour(token, status, failures, delay):
    behaviour = behaviour_of(token)
    assert (behaviour.status, behaviour.failures, behaviour.delay_seconds) == (status, failures, delay)


@pytest.mark.parametrize(
    "token", ["tok_nope", "tok_flaky_", "tok_flaky_-1", "tok_flaky_101", "tok_slow_60001", "TOK_SUCCESS"]
)
def test_unknown_tokens_are_refused(token):
    with pytest.raises(UnknownToken):
        behaviour_of(token)
