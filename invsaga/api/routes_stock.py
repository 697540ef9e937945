"""Reading stock: one SKU with an ETag, or many at once (one query per shard, shards concurrently); a
SKU's ledger, and the stock rows running low across shards."""

from __future__ import annotations

from hashlib import blake2b
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, Response

from invsaga.api.auth import AUTH_ERRORS, Reader
from invsaga.api.deps import Deps
from invsaga.api.models import MAX_BATCH_SKUS, PathSku, StockBatch, StockView
from invsaga.api.order_models import LowStockList, MovementList
from invsaga.api.problems import problem_responses
from invsaga.domain.errors import InvalidInput, ShardUnavailable, UnknownSku
from invsaga.domain.stock import Location, Sku, StockLevel
from invsaga.store.order_list import DEFAULT_PAGE, MAX_PAGE
from invsaga.store.page_cursor import MAX_CURSOR_LENGTH
from invsaga.store.stock_csv import MAX_QUANTITY
from invsaga.store.stock_history import low_stock, stock_movements

router = APIRouter(prefix="/v1/stock", tags=["stock"])


def etag_of(levels: list[StockLevel]) -> str:
    """Changes whenever any location of the SKU changes: every change bumps that location's version."""
    state = "|".join(
        f"{level.location}:{level.version}" for level in sorted(levels, key=lambda lv: lv.location)
    )
    return '"' + blake2b(state.encode("utf-8"), digest_size=12).hexdigest() + '"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in candidates or etag in candidates


Cursor = Annotated[
    str | None,
    Query(max_length=MAX_CURSOR_LENGTH, description="The `next_cursor` of the previous page."),
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Most items on the page.")]


@router.get(
    "",
    summary="Read several SKUs, or list low stock",
    response_model=StockBatch | LowStockList,
    responses=problem_responses(InvalidInput, *AUTH_ERRORS, ShardUnavailable),
)
async def get_stock_batch(
    deps: Deps,
    _: Reader,
    sku: Annotated[
        list[Sku] | None,
        Query(
            max_length=MAX_BATCH_SKUS,
            description=f"Repeat for each SKU, up to {MAX_BATCH_SKUS}. Not with `below`.",
            examples=[["MUG-BLUE", "TSHIRT-L"]],
        ),
    ] = None,
    below: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_QUANTITY,
            description="List the stock rows (per SKU and location) with fewer units available than this, "
            "on every shard, by sku and location. Not with `sku`.",
        ),
    ] = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
) -> StockBatch | LowStockList:
    """With `sku`: stock of each SKU per location and in total (a `StockBatch`); SKUs with no stock row are
    listed as `unknown`, and SKUs whose shard is down as `unavailable` (the others are still answered).
    With `below`: a page of low stock (a `LowStockList`) of `limit` rows at most; follow `next_cursor`
    with `cursor`. Give exactly one of `sku` and `below`."""
    if (sku is None) == (below is None):
        raise InvalidInput("give either sku (repeated, to read SKUs) or below (to list low stock), not both")
    if below is not None:
        return LowStockList.of(await low_stock(deps.databases, below, cursor=cursor, limit=limit))
    if cursor is not None:
        raise InvalidInput("cursor pages a low-stock list: it goes with below, not with sku")
    assert sku is not None
    wanted = list(dict.fromkeys(sku))
    # A shard that is down costs only its own SKUs: they are listed as `unavailable`, not a 503.
    found, down = await deps.store.get_many_reachable(wanted)
    unreachable = {sku for error in down for sku in error.details["skus"]}
    return StockBatch(
        items=[StockView.of(s, found[s]) for s in wanted if s in found],
        unknown=[s for s in wanted if s not in found and s not in unreachable],
        unavailable=[s for s in wanted if s in unreachable],
    )


@router.get(
    "/{sku}",
    summary="Read one SKU",
    response_model=StockView,
    responses={
        200: {"headers": {"ETag": {"description": "The SKU's state", "schema": {"type": "string"}}}},
        304: {"description": "Not modified since the ETag sent in If-None-Match"},
        **problem_responses(InvalidInput, UnknownSku, *AUTH_ERRORS, ShardUnavailable),
    },
)
async def get_stock(
    sku: PathSku,
    deps: Deps,
    _: Reader,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match", max_length=1024)] = None,
) -> Response:
    """Stock per location (each with its `version`, the If-Match value for setting it) and in total."""
    levels = await deps.store.get(sku)
    etag = etag_of(levels)
    if _matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return JSONResponse(StockView.of(sku, levels).model_dump(mode="json"), headers={"ETag": etag})


@router.get(
    "/{sku}/movements",
    summary="Read a SKU's stock history",
    response_model=MovementList,
    responses=problem_responses(InvalidInput, UnknownSku, *AUTH_ERRORS, ShardUnavailable),
)
async def get_stock_movements(
    sku: PathSku,
    deps: Deps,
    _: Reader,
    location: Annotated[Location | None, Query(description="Only this location's movements.")] = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
) -> MovementList:
    """The SKU's ledger, newest first: every change to on_hand or reserved with its reason (receive,
    adjust, import, reserve, release, commit, expire), reference and deltas. Follow `next_cursor`."""
    page = await stock_movements(deps.databases, sku, location=location, cursor=cursor, limit=limit)
    return MovementList.of(page)
