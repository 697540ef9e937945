"""Reading stock: one SKU with an ETag, or many at once (one query per shard, shards concurrently)."""

from __future__ import annotations

from hashlib import blake2b
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query
from fastapi.responses import JSONResponse, Response

from invsaga.api.auth import Principal, Scope, requires
from invsaga.api.deps import Deps
from invsaga.api.errors import Forbidden, Unauthorized
from invsaga.api.models import MAX_BATCH_SKUS, PathCode, StockBatch, StockView
from invsaga.api.problems import problem_responses
from invsaga.domain.errors import InvalidInput, ShardUnavailable, UnknownSku
from invsaga.domain.stock import Sku, StockLevel

router = APIRouter(prefix="/v1/stock", tags=["stock"])

Reader = Annotated[Principal, Depends(requires(Scope.CHECKOUT, Scope.ADMIN))]
PathSku = Annotated[PathCode, Path(description="The SKU code.", examples=["MUG-BLUE"])]

_AUTH_ERRORS = (Unauthorized, Forbidden)


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


@router.get(
    "",
    summary="Read several SKUs",
    response_model=StockBatch,
    responses=problem_responses(InvalidInput, *_AUTH_ERRORS, ShardUnavailable),
)
async def get_stock_batch(
    deps: Deps,
    _: Reader,
    sku: Annotated[
        list[Sku],
        Query(
            min_length=1,
            max_length=MAX_BATCH_SKUS,
            description=f"Repeat for each SKU, up to {MAX_BATCH_SKUS}.",
            examples=[["MUG-BLUE", "TSHIRT-L"]],
        ),
    ],
) -> StockBatch:
    """Stock of each SKU per location and in total. SKUs with no stock row are listed as `unknown`."""
    wanted = list(dict.fromkeys(sku))
    found = await deps.store.get_many(wanted)
    return StockBatch(
        items=[StockView.of(s, found[s]) for s in wanted if s in found],
        unknown=[s for s in wanted if s not in found],
    )


@router.get(
    "/{sku}",
    summary="Read one SKU",
    response_model=StockView,
    responses={
        200: {"headers": {"ETag": {"description": "The SKU's state", "schema": {"type": "string"}}}},
        304: {"description": "Not modified since the ETag sent in If-None-Match"},
        **problem_responses(InvalidInput, UnknownSku, *_AUTH_ERRORS, ShardUnavailable),
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
