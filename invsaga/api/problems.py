"""The one mapping from the domain error hierarchy to RFC 9457 ``application/problem+json`` answers.

Each error class maps to an HTTP status and a title; its stable ``code`` becomes the problem ``type``
(``urn:inventory-saga:problem:out-of-stock``), and its details become extension members. A subclass
without its own row inherits its nearest ancestor's status but keeps its own type. Route handlers never
build error responses: they raise, and the handlers installed here answer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException

from invsaga.api import errors as api_errors
from invsaga.domain import errors

log = logging.getLogger("invsaga.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"
#: Absolute, so a type means the same whichever host answered.
PROBLEM_BASE = "urn:inventory-saga:problem:"


@dataclass(frozen=True)
class ProblemType:
    status: int
    title: str
    #: A typical ``detail``, shown as the example in the OpenAPI document.
    example: str
    headers: Mapping[str, str] = field(default_factory=dict)


PROBLEM_TYPES: dict[type[errors.InventoryError], ProblemType] = {
    errors.InventoryError: ProblemType(500, "Internal error", "the server failed; the outcome is unknown"),
    errors.InvalidInput: ProblemType(422, "The request is not valid", "lines.0.quantity: must be > 0"),
    errors.UnknownSku: ProblemType(404, "Unknown SKU", "unknown sku 'MUG-RED': no stock row on any location"),
    errors.OutOfStock: ProblemType(409, "Out of stock", "not enough stock for MUG-BLUE@main"),
    errors.UnknownProduct: ProblemType(
        409, "Not in the catalog", "sku 'MUG-RED' is not in the catalog; add the product first"
    ),
    errors.ProductNotFound: ProblemType(404, "Product not found", "no product 'MUG-RED' in the catalog"),
    errors.ProductExists: ProblemType(
        409, "Product exists", "product 'MUG-BLUE' already exists at version 3 with other values"
    ),
    errors.VersionConflict: ProblemType(
        412, "Version conflict", "MUG-BLUE@main is at version 7, not 6; re-read it and try again"
    ),
    errors.BelowReserved: ProblemType(
        409, "Below reserved", "cannot set MUG-BLUE@main to 2: 3 units are reserved"
    ),
    errors.ReservationClosed: ProblemType(
        409, "Checkout already ended", "the checkout of order ord-1001 ended without holding stock"
    ),
    errors.IdempotencyKeyConflict: ProblemType(
        409,
        "Idempotency key conflict",
        "idempotency key 'PO-7731' already received 24 units of MUG-BLUE@main, not 30; use a new key",
    ),
    errors.ShardUnavailable: ProblemType(
        503, "Unavailable", "shard 1 is unreachable", headers={"Retry-After": "1"}
    ),
    errors.SchemaMismatch: ProblemType(503, "Schema mismatch", "shard 0 is at schema version 1, needs 2"),
    errors.ConfigurationError: ProblemType(500, "Misconfigured", "the server is misconfigured"),
    errors.PaymentDeclined: ProblemType(402, "Payment declined", "the payment was declined"),
    errors.PaymentUnavailable: ProblemType(
        503, "Payment provider unavailable", "the payment provider is unreachable", {"Retry-After": "1"}
    ),
    errors.CheckoutNotFound: ProblemType(404, "Checkout not found", "no checkout for order 'ord-1001'"),
    errors.WebhookNotFound: ProblemType(404, "Webhook not found", "no webhook 'wh_3k9q'"),
    errors.OrderNotFound: ProblemType(404, "Order not found", "no order 'ord-1001'"),
    errors.OrderIdReused: ProblemType(
        409,
        "Order id already used",
        "order id 'ord-1001' is already used by another order; use a new order id",
    ),
    errors.CancelRefused: ProblemType(
        409, "Too late to cancel", "checkout is CONFIRMING; it can no longer be cancelled"
    ),
    api_errors.Unauthorized: ProblemType(
        401,
        "Unauthorized",
        "send an API key as 'Authorization: Bearer <key>'",
        headers={"WWW-Authenticate": 'Bearer realm="inventory-saga"'},
    ),
    api_errors.Forbidden: ProblemType(403, "Forbidden", "this route needs an API key with the admin scope"),
    api_errors.IdempotencyKeyRequired: ProblemType(
        400, "Idempotency-Key required", "send an Idempotency-Key header of 1 to 255 printable characters"
    ),
    api_errors.IdempotencyKeyReused: ProblemType(
        422, "Idempotency-Key reused", "this Idempotency-Key was first used with a different request"
    ),
    api_errors.PreconditionRequired: ProblemType(
        428, "Precondition required", "send If-Match with the version you read (0: the row must not exist)"
    ),
    api_errors.PayloadUndecodable: ProblemType(
        422,
        "Payload cannot be decoded",
        "payload encrypted with key '2026-01-05', which this process does not have",
    ),
    api_errors.PayloadTooLarge: ProblemType(413, "Content too large", "the body exceeds 1048576 bytes"),
    api_errors.UnsupportedMediaType: ProblemType(415, "Unsupported media type", "send the body as text/csv"),
    api_errors.RouteNotFound: ProblemType(404, "Not found", "no route for this path"),
    api_errors.MethodNotAllowed: ProblemType(405, "Method not allowed", "this route does not accept POST"),
}


def problem_type_of(error_class: type[errors.InventoryError]) -> ProblemType:
    for cls in error_class.__mro__:
        if cls in PROBLEM_TYPES:
            return PROBLEM_TYPES[cls]
    return PROBLEM_TYPES[errors.InventoryError]


def type_uri(error_class: type[errors.InventoryError]) -> str:
    return PROBLEM_BASE + error_class.code.replace("_", "-")


def status_of(error: errors.InventoryError) -> int:
    return problem_type_of(type(error)).status


_RESERVED_MEMBERS = {"type", "title", "status", "detail", "instance", "code"}


def problem_body(error: errors.InventoryError, instance: str | None = None) -> dict[str, Any]:
    kind = problem_type_of(type(error))
    extensions = {k: v for k, v in error.details.items() if k not in _RESERVED_MEMBERS}
    body: dict[str, Any] = {
        "type": type_uri(type(error)),
        "title": kind.title,
        "status": kind.status,
        "detail": error.message,
        "code": error.code,
        **jsonable_encoder(extensions),
    }
    if instance is not None:
        body["instance"] = instance
    return body


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


def problem_response(error: errors.InventoryError, instance: str | None = None) -> ProblemResponse:
    kind = problem_type_of(type(error))
    return ProblemResponse(problem_body(error, instance), status_code=kind.status, headers=dict(kind.headers))


# --- errors the framework raises, translated into the hierarchy ---------------------------------------


def from_validation(exc: RequestValidationError) -> errors.InventoryError:
    found = [
        {"loc": [str(part) for part in err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors()
    ]
    if any(err["loc"][:2] == ["header", "Idempotency-Key"] for err in found):
        return api_errors.IdempotencyKeyRequired(
            "send an Idempotency-Key header of 1 to 255 printable ASCII characters", errors=found
        )
    detail = "; ".join(f"{'.'.join(err['loc'])}: {err['msg']}" for err in found)
    return errors.InvalidInput(detail or "the request is not valid", errors=found)


_HTTP_ERRORS: dict[int, type[errors.InventoryError]] = {
    # FastAPI's answer to a body it could not decode (not UTF-8, say): malformed input, so a 422.
    400: errors.InvalidInput,
    404: api_errors.RouteNotFound,
    405: api_errors.MethodNotAllowed,
    413: api_errors.PayloadTooLarge,
    415: api_errors.UnsupportedMediaType,
}


# --- handlers ------------------------------------------------------------------------------------------


async def _domain_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, errors.InventoryError)
    if status_of(exc) >= 500:
        log.warning("%s %s answered %s: %s", request.method, request.url.path, exc.code, exc.message)
    return problem_response(exc, request.url.path)


async def _validation_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    return problem_response(from_validation(exc), request.url.path)


async def _http_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, HTTPException)
    error_class = _HTTP_ERRORS.get(exc.status_code)
    if error_class is None:
        phrase = HTTPStatus(exc.status_code).phrase
        response = ProblemResponse(
            {"type": "about:blank", "title": phrase, "status": exc.status_code, "detail": str(exc.detail)},
            status_code=exc.status_code,
        )
    else:
        response = problem_response(error_class(str(exc.detail)), request.url.path)
    response.headers.update(exc.headers or {})
    return response


async def _unexpected_error(request: Request, exc: Exception) -> ProblemResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return problem_response(
        errors.InventoryError("the server failed; the outcome of the request is unknown"), request.url.path
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.InventoryError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


# --- the OpenAPI side -----------------------------------------------------------------------------------


class Problem(BaseModel):
    """An RFC 9457 problem. ``type`` is stable per error; extension members carry its details."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:inventory-saga:problem:out-of-stock",
                    "title": "Out of stock",
                    "status": 409,
                    "detail": "not enough stock",
                    "instance": "/v1/checkouts",
                    "code": "out_of_stock",
                    "shortages": [{"sku": "MUG-BLUE", "location": "main", "requested": 3, "available": 1}],
                }
            ]
        },
    )

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    code: str | None = None


PROBLEM_SCHEMA_REF = {"$ref": "#/components/schemas/Problem"}


def problem_responses(*error_classes: type[errors.InventoryError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the errors a route can answer with, grouped by status, with examples."""
    by_status: dict[int, list[type[errors.InventoryError]]] = {}
    for cls in error_classes:
        by_status.setdefault(problem_type_of(cls).status, []).append(cls)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, classes in sorted(by_status.items()):
        examples = {
            cls.code: {
                "summary": problem_type_of(cls).title,
                "value": {
                    "type": type_uri(cls),
                    "title": problem_type_of(cls).title,
                    "status": status,
                    "detail": problem_type_of(cls).example,
                    "code": cls.code,
                },
            }
            for cls in classes
        }
        responses[status] = {
            "description": "; ".join(f"`{type_uri(cls)}`" for cls in classes),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_SCHEMA_REF, "examples": examples}},
        }
    return responses


def add_problem_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Register ``Problem`` in an OpenAPI document whose responses refer to it."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    return schema
