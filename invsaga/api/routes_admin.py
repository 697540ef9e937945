"""Operator routes: set stock (compare-and-set on version), receive stock, import a CSV."""

from __future__ import annotations

import re
import tempfile
import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from invsaga.api import examples
from invsaga.api.auth import Principal, Scope, requires
from invsaga.api.deps import Deps
from invsaga.api.errors import (
    Forbidden,
    IdempotencyKeyRequired,
    IdempotencyKeyReused,
    PayloadTooLarge,
    PreconditionRequired,
    Unauthorized,
    UnsupportedMediaType,
)
from invsaga.api.idempotency import (
    REPLAYED_HEADER,
    IdempotencyKey,
    as_response,
    fingerprint,
    json_answer,
    run_once,
)
from invsaga.api.models import ImportReport, PathCode, Receipt, SetStock
from invsaga.api.problems import problem_responses
from invsaga.domain.errors import (
    BelowReserved,
    IdempotencyKeyConflict,
    InvalidInput,
    ShardUnavailable,
    UnknownSku,
    VersionConflict,
)
from invsaga.domain.keys import adhoc_key, api_client_key
from invsaga.domain.stock import StockLevel
from invsaga.store.bulk_import import import_stock
from invsaga.store.idempotency import StoredResponse

router = APIRouter(prefix="/v1/stock", tags=["admin"])

Operator = Annotated[Principal, Depends(requires(Scope.ADMIN))]
PathSku = Annotated[PathCode, Path(description="The SKU code.", examples=["MUG-BLUE"])]
PathLocation = Annotated[PathCode, Path(description="The stock location.", examples=["main"])]
_AUTH_ERRORS = (Unauthorized, Forbidden)

_VERSION_TAG = re.compile(r'^(?:W/)?"?(\d{1,18})"?$')
#: Uploads are spooled to memory up to this size, then to a temporary file.
_SPOOL_IN_MEMORY = 8 * 1024 * 1024


class LevelView(BaseModel):
    sku: str
    location: str
    on_hand: int
    reserved: int
    available: int
    version: int

    @classmethod
    def of(cls, level: StockLevel) -> LevelView:
        return cls(**level.model_dump(), available=level.available)


def _expected_version(if_match: str | None) -> int:
    if if_match is None:
        raise PreconditionRequired("send If-Match with the version you read (0: the row must not exist yet)")
    match = _VERSION_TAG.match(if_match.strip())
    if match is None:
        raise InvalidInput(f'If-Match must be a version number such as "7", got {if_match[:40]!r}')
    return int(match.group(1))


def _level_response(level: StockLevel) -> JSONResponse:
    return JSONResponse(LevelView.of(level).model_dump(mode="json"), headers={"ETag": f'"{level.version}"'})


_LEVEL_HEADERS = {"ETag": {"description": "The location's new version", "schema": {"type": "string"}}}


@router.put(
    "/{sku}/{location}",
    summary="Set stock",
    response_model=LevelView,
    responses={
        200: {"headers": _LEVEL_HEADERS},
        **problem_responses(
            InvalidInput,
            *_AUTH_ERRORS,
            UnknownSku,
            BelowReserved,
            VersionConflict,
            PayloadTooLarge,
            PreconditionRequired,
            ShardUnavailable,
        ),
    },
)
async def put_stock(
    sku: PathSku,
    location: PathLocation,
    body: Annotated[SetStock, Body()],
    deps: Deps,
    principal: Operator,
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            max_length=64,
            description='Required. The version you read, e.g. `"7"`; `"0"` creates a location that has none.',
            examples=['"1"'],
        ),
    ] = None,
) -> Response:
    """Set on_hand if the location is still at the version in `If-Match`.

    **412** `version-conflict` when someone changed it since (the problem names the `actual` version),
    **409** `below-reserved` when the new figure is below what buyers already hold, **428** without If-Match.
    """
    level = await deps.store.adjust(
        sku,
        location,
        body.on_hand,
        expected_version=_expected_version(if_match),
        idempotency_key=adhoc_key("http", uuid.uuid4()),
        reference=f"api set by key {principal.key_id}",
    )
    return _level_response(level)


@router.post(
    "/{sku}/{location}/receipts",
    summary="Receive stock",
    response_model=LevelView,
    responses={
        200: {
            "headers": {
                **_LEVEL_HEADERS,
                REPLAYED_HEADER: {"description": "`true` on a replayed answer", "schema": {"type": "string"}},
            }
        },
        **problem_responses(
            IdempotencyKeyRequired,
            *_AUTH_ERRORS,
            PayloadTooLarge,
            InvalidInput,
            IdempotencyKeyReused,
            IdempotencyKeyConflict,
            ShardUnavailable,
        ),
    },
)
async def post_receipt(
    request: Request,
    sku: PathSku,
    location: PathLocation,
    body: Annotated[Receipt, Body()],
    key: IdempotencyKey,
    deps: Deps,
    principal: Operator,
) -> Response:
    """Add received units to a location, creating it if needed. The same Idempotency-Key adds them once."""

    async def receive(_first: bool) -> StoredResponse:
        level = await deps.store.receive(
            sku,
            location,
            body.quantity,
            idempotency_key=api_client_key(principal.key_id, key),
            reference=body.reference,
        )
        return json_answer(200, LevelView.of(level))

    operation = f"POST {request.url.path}"
    answer, replayed = await run_once(
        deps.databases.core, principal, key, fingerprint(operation, body), request.url.path, receive
    )
    return as_response(answer, replayed=replayed)


@router.post(
    "/import",
    summary="Import stock from CSV",
    response_model=ImportReport,
    responses=problem_responses(
        InvalidInput, *_AUTH_ERRORS, PayloadTooLarge, UnsupportedMediaType, ShardUnavailable
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}, "example": examples.IMPORT_CSV}},
        }
    },
)
async def post_import(request: Request, deps: Deps, _: Operator) -> ImportReport:
    """Set stock levels from a streamed CSV with the header `sku,location,quantity` (`text/csv`).

    A malformed file changes nothing: **422** lists every bad line (`problems`, each with its `line`).
    Otherwise rows apply, except those below what is reserved, which come back in `rejected` with their
    line numbers. Up to 1 GiB per request.
    """
    content_type = request.headers.get("content-type", "")
    media_type, _sep, parameters = content_type.partition(";")
    if media_type.strip().lower() != "text/csv":
        raise UnsupportedMediaType(f"send the CSV as text/csv, not {media_type.strip() or 'no content type'}")
    if "charset" in parameters.lower() and "utf-8" not in parameters.lower().replace('"', ""):
        raise UnsupportedMediaType("the CSV must be UTF-8")
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY, mode="w+b") as spool:
        async for chunk in request.stream():
            spool.write(chunk)
        spool.seek(0)
        result = await import_stock(deps.databases, spool)
    return ImportReport.of(result)
