"""What the catalog routes read and answer. The fields reuse the domain's product rules, so the OpenAPI
document states the rules the store enforces."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from invsaga.domain.catalog import DEFAULT_CURRENCY, CurrencyCode, Price, ProductName
from invsaga.store.catalog import StoredProduct
from invsaga.store.catalog_csv import CatalogImportResult

#: The body of ``POST /v1/products/import``.
CATALOG_CSV = "sku,name,price,currency,active\nMUG-BLUE,Blue enamel mug,12.50,USD,true\n"

_PRODUCT_EXAMPLE: JsonDict = {
    "sku": "MUG-BLUE",
    "name": "Blue enamel mug",
    "price": "12.50",
    "currency": "USD",
    "active": True,
    "version": 3,
    "updated_at": "2026-12-01T09:30:00Z",
}


_CURSOR_EXAMPLE = "eyJhIjoiTVVHLUJMVUUifQ"


class ProductIn(BaseModel):
    """A product's values; its SKU is the path's. Unknown fields are refused."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"examples": [{"name": "Blue enamel mug", "price": "12.50", "currency": "USD"}]},
    )

    name: ProductName
    #: A string such as "12.50" keeps the cents exact; a JSON number is accepted too.
    price: Annotated[Price, Field(description='Non-negative, at most 2 decimal places, e.g. "12.50".')]
    currency: Annotated[CurrencyCode, Field(description="ISO 4217, uppercase.")] = DEFAULT_CURRENCY
    active: Annotated[bool, Field(strict=True, description="On sale: checkouts refuse inactive ones.")] = True


class ProductView(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_PRODUCT_EXAMPLE]})

    sku: str
    name: str
    price: Decimal
    currency: str
    active: bool
    #: Send it back as If-Match to change the product.
    version: int
    updated_at: datetime

    @classmethod
    def of(cls, product: StoredProduct) -> ProductView:
        return cls(**product.model_dump())


class ProductPageView(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"items": [_PRODUCT_EXAMPLE], "next_cursor": "eyJhIjoiTVVHLUJMVUUifQ"}]
        }
    )

    items: list[ProductView]
    #: Pass it as ``cursor`` for the next page; null on the last page.
    next_cursor: str | None


class CatalogImportReport(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"rows_read": 2, "applied": 1, "created": 1, "unchanged": 1, "seconds": 0.012}]
        }
    )

    rows_read: int
    #: Rows that created or changed a product.
    applied: int
    #: Of those applied, the products that are new.
    created: int
    #: Rows already exactly as the catalog has them: nothing moved, not even the version.
    unchanged: int
    seconds: float

    @classmethod
    def of(cls, result: CatalogImportResult) -> CatalogImportReport:
        return cls(**result.model_dump())
