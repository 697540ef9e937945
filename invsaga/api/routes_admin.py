"""Operator routes: set stock (compare-and-set on version), receive stock, import a CSV."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from invsaga.api import examples
from invsaga.api.auth import AUTH_ERRORS, Operator
from invsaga.api.csv_body import csv_body
from invsaga.api.deps import Deps
from invsaga.api.errors import (
    IdempotencyKeyRequired,
    IdempotencyKeyReused,
    PayloadTooLarge,
    PreconditionRequired,
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
from invsaga.api.models import ImportReport, PathCode, PathSku, Receipt, SetStock
from invsaga.api.problems import problem_responses
from invsaga.api.routes_stock import etag_of
from invsaga.domain.errors import (
    BelowReserved,
    IdempotencyKeyConflict,
    InvalidInput,
    ShardUnavailable,
    UnknownProduct,
    UnknownSku,
    VersionConflict,
)
from invsaga.domain.keys import adhoc_key, api_client_key
from invsaga.domain.stock import StockLevel
from invsaga.store.bulk_import import import_stock
from invsaga.store.catalog import require_products
from invsaga.store.idempotency import StoredResponse
from invsaga.store.stock import StockStore

router = APIRouter(prefix="/v1/stock", tags=["admin"])

PathLocation = Annotated[PathCode, Path(description="The stock location.", examples=["main"])]
AllowUnknownProduct = Annotated[
    bool,
    Query(description="Accept stock for SKUs that are not in the catalog (refused with 409 otherwise)."),
]

_VERSION_TAG = re.compile(r'^(?:W/)?"?(\d{1,18})"?$')
#: The ETag of GET /v1/stock/{sku}: a digest of every location's version (routes_stock.etag_of).
_SKU_TAG = re.compile(r'^(?:W/)?"?([0-9a-f]{24})"?$')


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


def _entity_tags(if_match: str | None) -> tuple[list[int], list[str]]:
    """The versions and the SKU ETags an If-Match lists (comma-separated, each quoted or not, weak or
    not: a client sends back what it was given, and the version is what we compare either way)."""
    if if_match is None:
        raise PreconditionRequired("send If-Match with the version you read (0: the row must not exist yet)")
    versions: list[int] = []
    sku_tags: list[str] = []
    for entry in filter(None, (part.strip() for part in if_match.split(","))):
        if match := _VERSION_TAG.match(entry):
            versions.append(int(match.group(1)))
        elif match := _SKU_TAG.match(entry):
            sku_tags.append(f'"{match.group(1)}"')
        else:
            raise InvalidInput(
                f'If-Match must be a version such as "7" or the ETag of GET /v1/stock/{{sku}}, '
                f"got {if_match[:40]!r}"
            )
    if not versions and not sku_tags:
        raise InvalidInput('If-Match must be a version such as "7" or the ETag of GET /v1/stock/{sku}')
    return versions, sku_tags


async def _expected_version(if_match: str | None, store: StockStore, sku: str, location: str) -> int:
    """The version to compare-and-set against. One version is used as sent (the store's CAS refuses a
    stale one); a SKU ETag (or a list) is checked against what the SKU is now, and then the location's
    current version is the one expected, so a change in between still loses the CAS."""
    versions, sku_tags = _entity_tags(if_match)
    if len(versions) == 1 and not sku_tags:
        return versions[0]
    try:
        levels = await store.get(sku)
    except UnknownSku:
        levels = []
    current = next((level.version for level in levels if level.location == location), 0)
    if current in versions or etag_of(levels) in sku_tags:
        return current
    raise VersionConflict(
        f"{sku}@{location} changed since the If-Match you sent (it is at version {current}); "
        "re-read it and try again",
        sku=sku,
        location=location,
        expected=versions[0] if versions else None,
        actual=current,
    )


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
            *AUTH_ERRORS,
            UnknownSku,
            UnknownProduct,
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
            max_length=1024,
            description='Required. The version you read, e.g. `"7"` (`"0"` creates a location that has '
            "none), or the ETag of `GET /v1/stock/{sku}`; quoted or not, `W/` or not, or a list of them.",
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
        expected_version=await _expected_version(if_match, deps.store, sku, location),
        idempotency_key=adhoc_key("http", uuid.uuid4()),
        reference=f"api set by key {principal.key_id}",
        check_catalog=True,
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
            *AUTH_ERRORS,
            PayloadTooLarge,
            InvalidInput,
            IdempotencyKeyReused,
            IdempotencyKeyConflict,
            UnknownProduct,
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
    allow_unknown_product: AllowUnknownProduct = False,
) -> Response:
    """Add received units to a location, creating it if needed. The same Idempotency-Key adds them once.

    A SKU that is not in the catalog is refused (**409** `unknown-product`) unless
    `allow_unknown_product=true`.
    """

    async def receive(_first: bool) -> StoredResponse:
        level = await deps.store.receive(
            sku,
            location,
            body.quantity,
            idempotency_key=api_client_key(principal.key_id, key),
            reference=body.reference,
        )
        return json_answer(200, LevelView.of(level))

    if not allow_unknown_product:
        # Before the key is claimed, so this refusal is not recorded: once the product is added, the same
        # key receives (products are never deleted, so the check cannot go stale).
        await require_products(deps.databases.core_autocommit, [sku])

    # The flag is part of the request: the same key sent again with it flipped is another request.
    operation = f"POST {request.url.path}" + ("?allow_unknown_product" if allow_unknown_product else "")
    answer, replayed = await run_once(
        deps.databases.core,
        principal,
        key,
        fingerprint(operation, body),
        request.url.path,
        receive,
        shared=deps.shared_runs,
    )
    return as_response(answer, replayed=replayed)


@router.post(
    "/import",
    summary="Import stock from CSV",
    response_model=ImportReport,
    responses=problem_responses(
        InvalidInput, *AUTH_ERRORS, PayloadTooLarge, UnsupportedMediaType, UnknownProduct, ShardUnavailable
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}, "example": examples.IMPORT_CSV}},
        }
    },
)
async def post_import(
    request: Request, deps: Deps, _: Operator, allow_unknown_product: AllowUnknownProduct = False
) -> ImportReport:
    """Set stock levels from a streamed CSV with the header `sku,location,quantity` (`text/csv`).

    A malformed file changes nothing: **422** lists every bad line (`problems`, each with its `line`).
    Otherwise rows apply, except those below what is reserved, which come back in `rejected` with their
    line numbers. Up to 1 GiB per request. Rows for SKUs that are not in the catalog refuse the whole
    file (**409** `unknown-product`, every such line in `problems`) unless `allow_unknown_product=true`.
    """
    async with csv_body(request) as spool:
        result = await import_stock(deps.databases, spool, check_catalog=not allow_unknown_product)
    return ImportReport.of(result)
