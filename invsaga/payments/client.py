"""The payment provider's HTTP client, as the checkout activities use it.

Build one per worker and share it (it holds a connection pool). Every outcome maps onto the domain
errors, and the mapping keeps apart what a saga must never confuse:

- ``PaymentDeclined``: the provider said no; retrying cannot help. It carries ``charge_id``.
- ``PaymentUnavailable``: nothing was done (connection refused, 503, 429); retry with the same key.
- ``PaymentOutcomeUnknown``: the request may have been acted on but no answer came (read timeout, dropped
  connection, other 5xx). Retrying with the same key is safe; asking ``find_charge`` is cheaper.
- ``InvalidInput``: the provider rejected the request itself (4xx problem); ``problem_type`` says why.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from invsaga.domain.errors import (
    ConfigurationError,
    InvalidInput,
    InventoryError,
    PaymentDeclined,
    PaymentOutcomeUnknown,
    PaymentUnavailable,
)
from invsaga.payments.models import Charge, ChargeStatus, Refund, Void
from invsaga.payments.problems import CHARGE_NOT_FOUND, Problem

__all__ = ["Charge", "ChargeStatus", "PaymentClient", "PaymentOutcomeUnknown", "Refund"]

M = TypeVar("M", bound=BaseModel)

# Raised before the request left this process, so the provider cannot have acted on it.
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.LocalProtocolError,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
)
# Answers that promise nothing was done.
_TRY_LATER = {HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE}


class PaymentClient:
    def __init__(self, base_url: str, *, timeout: float, transport: httpx.AsyncBaseTransport | None = None):
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigurationError(f"payment provider URL must be http(s)://host[:port], got {base_url!r}")
        self._http = httpx.AsyncClient(
            base_url=url, timeout=timeout, transport=transport, headers={"Accept": "application/json"}
        )

    async def charge(
        self, idempotency_key: str, amount: int, currency: str, token: str, reference: str
    ) -> Charge:
        """Charge once per key; a replay of the key answers the first result, decline included."""
        body = {"amount": amount, "currency": currency, "token": token, "reference": reference}
        response = await self._send("POST", "/v1/charges", idempotency_key, json=body)
        if response.status_code == HTTPStatus.PAYMENT_REQUIRED:
            declined = _body(Charge, response)
            raise PaymentDeclined(
                f"payment declined: charge {declined.id} for {reference}",
                charge_id=declined.id,
                idempotency_key=idempotency_key,
                reference=reference,
            )
        return _parse(Charge, response)

    async def find_charge(self, idempotency_key: str) -> Charge | None:
        """The charge made with ``idempotency_key``, or None when the provider has none."""
        response = await self._send("GET", "/v1/charges", params={"idempotency_key": idempotency_key})
        if response.status_code == HTTPStatus.NOT_FOUND and _problem(response).is_a(CHARGE_NOT_FOUND):
            return None
        return _parse(Charge, response)

    async def void_charges(self, idempotency_key: str) -> Charge | None:
        """Make sure no charge with ``idempotency_key`` can land from now on; returns the one that
        already did, if any. Safe to repeat."""
        body = {"charge_idempotency_key": idempotency_key}
        return _parse(Void, await self._send("POST", "/v1/voids", json=body)).charge

    async def refund(self, idempotency_key: str, charge_id: str, amount: int) -> Refund:
        """Refund ``amount`` of a succeeded charge once per key; a replay answers the first refund."""
        body = {"charge_id": charge_id, "amount": amount}
        return _parse(Refund, await self._send("POST", "/v1/refunds", idempotency_key, json=body))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> PaymentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(
        self, method: str, path: str, idempotency_key: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
        try:
            return await self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise _transport_error(exc) from exc


def _acts(request: httpx.Request) -> bool:
    """Whether the request can change state at the provider, so a lost answer leaves its outcome open."""
    return request.method == "POST"


def _transport_error(exc: httpx.TransportError) -> PaymentUnavailable:
    request = exc.request
    where = f"{request.method} {request.url}"
    if _acts(request) and not isinstance(exc, _NOT_SENT):
        return PaymentOutcomeUnknown(
            f"no answer from the payment provider to {where} ({type(exc).__name__}); the outcome is unknown"
        )
    return PaymentUnavailable(f"payment provider unreachable for {where}: {type(exc).__name__} {exc}".strip())


def _status_error(response: httpx.Response) -> InventoryError:
    problem = _problem(response)
    status = response.status_code
    request = response.request
    message = f"payment provider answered {status} to {request.method} {request.url.path}: {problem.title}"
    if problem.detail:
        message += f" ({problem.detail})"
    details = {"status": status, "problem_type": problem.type}
    if status in _TRY_LATER:
        return PaymentUnavailable(message, **details)
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR and _acts(request):
        return PaymentOutcomeUnknown(message, **details)
    if HTTPStatus.BAD_REQUEST <= status < HTTPStatus.INTERNAL_SERVER_ERROR:
        return InvalidInput(message, **details)
    return PaymentUnavailable(message, **details)


def _problem(response: httpx.Response) -> Problem:
    try:
        return Problem.model_validate_json(response.content)
    except ValidationError:
        return Problem(title=response.reason_phrase, status=response.status_code)


def _parse(model: type[M], response: httpx.Response) -> M:
    if not response.is_success:
        raise _status_error(response)
    return _body(model, response)


def _body(model: type[M], response: httpx.Response) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        message = f"unreadable {response.status_code} answer from the payment provider: {reason}"
        if _acts(response.request):
            raise PaymentOutcomeUnknown(message) from None
        raise PaymentUnavailable(message) from None
