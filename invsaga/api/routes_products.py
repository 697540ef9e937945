"""The product catalog over HTTP: write one product (compare-and-set on its version), read one, list them
with an opaque keyset cursor, and import a CSV.

Preconditions on ``PUT``: ``If-Match`` with the ETag (or the bare version) a GET returned changes the
product only if it is still at that version, else **412**; ``If-None-Match: *`` (or ``If-Match: "0"``)
creates it only if it does not exist, else **412**; with neither, the product is created, and a product
that already exists answers **200** unchanged if its values are the same (a retried create) and **409**
`product-exists` if they differ. The same values sent again never bump the version.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Body, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from invsaga.api.auth import AUTH_ERRORS, Operator, Reader
from invsaga.api.catalog_models import (
    CATALOG_CSV,
    CatalogImportReport,
    ProductIn,
    ProductPageView,
    ProductView,
)
from invsaga.api.csv_body import csv_body
from invsaga.api.deps import Deps
from invsaga.api.errors import PayloadTooLarge, UnsupportedMediaType
from invsaga.api.models import PathSku
from invsaga.api.problems import problem_responses
from invsaga.domain.catalog import ProductFields
from invsaga.domain.errors import (
    InvalidInput,
    ProductExists,
    ProductNotFound,
    ShardUnavailable,
    VersionConflict,
)
from invsaga.store.catalog import StoredProduct, get_product, list_products, put_product
from invsaga.store.catalog_csv import import_catalog
from invsaga.store.page_cursor import decode_cursor, encode_cursor
from invsaga.store.stock_csv import SKU_RULE

router = APIRouter(prefix="/v1/products", tags=["products"])


#: What a GET's ETag looks like, weak or strong, quoted or not: the version inside is what counts.
_VERSION_TAG = re.compile(r'^(?:W/)?"?(\d{1,18})"?$')
MAX_PAGE = 500
DEFAULT_PAGE = 100
_ETAG_HEADER = {"ETag": {"description": "The product's version, for If-Match", "schema": {"type": "string"}}}


def etag_of(product: StoredProduct) -> str:
    return f'"{product.version}"'


def _product_response(product: StoredProduct, status: int = 200) -> JSONResponse:
    body = ProductView.of(product).model_dump(mode="json")
    return JSONResponse(body, status_code=status, headers={"ETag": etag_of(product)})


def _expected_version(if_match: str | None, if_none_match: str | None) -> int | None:
    """None: create (or confirm the same); 0: create only; N: compare-and-set on version N."""
    if if_match is not None and if_none_match is not None:
        raise InvalidInput("send If-Match or If-None-Match, not both")
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise InvalidInput('PUT understands only If-None-Match: * ("create, only if it does not exist")')
        return 0
    if if_match is None:
        return None
    match = _VERSION_TAG.match(if_match.strip())
    if match is None:
        raise InvalidInput(f'If-Match must be the ETag a GET returned, such as "3", got {if_match[:40]!r}')
    return int(match.group(1))


def _after(cursor: str) -> str:
    """The SKU a cursor continues after (``page_cursor``'s format); one that is not a SKU is 422."""
    after = str(decode_cursor(cursor, str)[0])
    if not SKU_RULE.accepts(after):
        raise InvalidInput("cursor: not a cursor this API returned")
    return after


@router.put(
    "/{sku}",
    summary="Create or change a product",
    response_model=ProductView,
    status_code=200,
    responses={
        200: {"description": "Changed, or already exactly so", "headers": _ETAG_HEADER},
        201: {"description": "Created", "model": ProductView, "headers": _ETAG_HEADER},
        **problem_responses(
            InvalidInput,
            *AUTH_ERRORS,
            ProductNotFound,
            ProductExists,
            VersionConflict,
            PayloadTooLarge,
            ShardUnavailable,
        ),
    },
)
async def put_product_route(
    sku: PathSku,
    body: Annotated[ProductIn, Body()],
    deps: Deps,
    _: Operator,
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            max_length=64,
            description='The ETag a GET returned (e.g. `"3"` or `W/"3"`): change only if still at it.',
            examples=['"1"'],
        ),
    ] = None,
    if_none_match: Annotated[
        str | None,
        Header(alias="If-None-Match", max_length=64, description="`*`: create only if it does not exist."),
    ] = None,
) -> Response:
    """Create the product, or change it with `If-Match`; see the preconditions below.

    - `If-Match: "3"`: change it only if it is still at version 3, else **412** `version-conflict`
      (the problem names the `actual` version); **404** if there is no such product.
    - `If-None-Match: *`: create it only if it does not exist, else **412**.
    - Neither: create it (**201**); if it exists with the same values, **200** unchanged (a retried create);
      with other values, **409** `product-exists`.

    Sending the values the product already has changes nothing, not even its version.
    """
    product = ProductFields(sku=sku, **body.model_dump())
    change = await put_product(
        deps.databases.core, product, expected_version=_expected_version(if_match, if_none_match)
    )
    return _product_response(change.product, 201 if change.created else 200)


@router.get(
    "/{sku}",
    summary="Read a product",
    response_model=ProductView,
    responses={
        200: {"headers": _ETAG_HEADER},
        **problem_responses(InvalidInput, *AUTH_ERRORS, ProductNotFound, ShardUnavailable),
    },
)
async def get_product_route(sku: PathSku, deps: Deps, _: Reader) -> Response:
    """The product, with its version as the ETag (send it back as If-Match to change it)."""
    return _product_response(await get_product(deps.databases.core_autocommit, sku))


@router.get(
    "",
    summary="List products",
    response_model=ProductPageView,
    responses=problem_responses(InvalidInput, *AUTH_ERRORS, ShardUnavailable),
)
async def list_products_route(
    deps: Deps,
    _: Reader,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page; omit to start.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Products per page.")] = DEFAULT_PAGE,
) -> ProductPageView:
    """Products in SKU order, a page at a time. `next_cursor` is null on the last page."""
    after = _after(cursor) if cursor else None
    page = await list_products(deps.databases.core_autocommit, after=after, limit=limit)
    return ProductPageView(
        items=[ProductView.of(p) for p in page.items],
        next_cursor=encode_cursor(page.next_after) if page.next_after else None,
    )


@router.post(
    "/import",
    summary="Import products from CSV",
    response_model=CatalogImportReport,
    responses=problem_responses(
        InvalidInput, *AUTH_ERRORS, PayloadTooLarge, UnsupportedMediaType, ShardUnavailable
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}, "example": CATALOG_CSV}},
        }
    },
)
async def post_catalog_import(request: Request, deps: Deps, _: Operator) -> CatalogImportReport:
    """Create or change products from a CSV with the header `sku,name,price,currency,active` (`text/csv`).

    All or nothing: one bad row changes nothing, and **422** lists every bad line (`problems`, each with
    its `line`). Rows already as the catalog has them are `unchanged` and keep their version.
    """
    async with csv_body(request) as spool:
        result = await import_catalog(deps.databases.core, spool)
    return CatalogImportReport.of(result)
