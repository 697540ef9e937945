"""The catalog's rules without a database: product fields, If-Match parsing and the opaque cursor."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from invsaga.api.routes_products import _after, _expected_version
from invsaga.domain.catalog import ISO_4217, ProductFields
from invsaga.domain.errors import InvalidInput
from invsaga.store.page_cursor import encode_cursor


def product(**fields: object) -> ProductFields:
    return ProductFields.model_validate({"sku": "MUG-BLUE", "name": "Mug", "price": "1.00", **fields})


@pytest.mark.parametrize("price", ["0", "0.5", "12.50", "9999999999.99"])
def test_prices_that_fit_numeric_12_2_are_accepted(price: str) -> None:
    assert product(price=price).price == Decimal(price)


@pytest.mark.parametrize("price", ["-0.01", "1.005", "10000000000", "NaN", "Infinity", "1e3x", ""])
def test_prices_outside_the_rule_are_refused(price: str) -> None:
    with pytest.raises(ValidationError):
        product(price=price)


@pytest.mark.parametrize(
    "fields",
    [
        {"currency": "usd"},
        {"currency": "ABC"},
        {"currency": "US"},
        {"name": ""},
        {"name": "  "},
        {"name": "x" * 201},
        {"name": "a\x00b"},
        {"name": "line\nbreak"},
        {"sku": "bad sku"},
        {"sku": ""},
    ],
)
def test_names_currencies_and_skus_outside_the_rule_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        product(**fields)


def test_currencies_are_iso_4217_and_names_are_trimmed() -> None:
    assert {"USD", "EUR", "JPY", "CHF"} <= ISO_4217 and "XTS" not in ISO_4217
    assert product(name="  Blue mug ", currency="EUR").name == "Blue mug"


@pytest.mark.parametrize(
    ("if_match", "if_none_match", "expected"),
    [
        ('"7"', None, 7),
        ('W/"7"', None, 7),
        ("7", None, 7),
        (' "0" ', None, 0),
        (None, "*", 0),
        (None, None, None),
    ],
)
def test_if_match_takes_the_etag_verbatim(
    if_match: str | None, if_none_match: str | None, expected: int | None
) -> None:
    assert _expected_version(if_match, if_none_match) == expected


@pytest.mark.parametrize(
    ("if_match", "if_none_match"), [("seven", None), ('"1"', "*"), (None, '"1"'), ("*", None)]
)
def test_if_match_that_is_not_a_version_is_refused(if_match: str | None, if_none_match: str | None) -> None:
    with pytest.raises(InvalidInput):
        _expected_version(if_match, if_none_match)


def test_cursors_round_trip_and_foreign_ones_are_refused() -> None:
    assert _after(encode_cursor("MUG-BLUE")) == "MUG-BLUE"
    for foreign in ["", "not base64!", encode_cursor("bad sku"), "eyJ4IjoxfQ", "W10"]:
        with pytest.raises(InvalidInput):
            _after(foreign)
