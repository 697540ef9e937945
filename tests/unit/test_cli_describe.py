"""``invsaga checkout``'s one-line summary: an order that did not go through never reads as paid."""

from __future__ import annotations

from invsaga.cli.saga import _describe, parse_line
from invsaga.domain.checkout import CheckoutResult, CheckoutStatus, RejectReason
from invsaga.domain.stock import Allocation, Shortage


def _result(status: CheckoutStatus, **fields: object) -> CheckoutResult:
    return CheckoutResult(order_id="o-1", status=status, amount_minor=1799100, currency="USD", **fields)


def test_a_confirmed_order_names_what_it_cost():
    line = _describe(_result(CheckoutStatus.CONFIRMED, charge_id="ch_1"))
    assert line == "order o-1: CONFIRMED; amount 17991.00 USD"


def test_a_rejected_order_says_it_was_not_charged():
    line = _describe(_result(CheckoutStatus.REJECTED, reason=RejectReason.OUT_OF_STOCK))
    assert "amount 17991.00 USD, not charged" in line and "reason out_of_stock" in line


def test_an_order_cancelled_after_its_charge_says_it_was_refunded():
    line = _describe(_result(CheckoutStatus.CANCELLED, charge_id="ch_1", detail="changed my mind"))
    assert "amount 17991.00 USD, refunded" in line and line.endswith("changed my mind")


def test_a_confirmed_split_order_names_where_its_units_came_from():
    pieces = [
        Allocation(sku="MUG", location="main", quantity=3),
        Allocation(sku="MUG", location="east", quantity=2),
    ]
    line = _describe(_result(CheckoutStatus.CONFIRMED, charge_id="ch_1", allocations=pieces))
    assert line.endswith("; MUG: 3 at main + 2 at east")


def test_a_shortage_over_every_location_does_not_name_a_location():
    short = Shortage(sku="MUG", location=None, requested=6, available=5)
    line = _describe(_result(CheckoutStatus.REJECTED, reason=RejectReason.OUT_OF_STOCK, shortages=[short]))
    assert "short MUG (all locations): wanted 6, 5 left" in line and "None" not in line


def test_a_line_without_a_location_is_allocated_and_one_with_a_location_keeps_it():
    assert parse_line("MUG:5").location is None
    assert parse_line("MUG@east:5").location == "east"
