"""Commands that run or use the checkout saga: ``invsaga worker`` and ``invsaga checkout``."""

from __future__ import annotations

import logging
import re
import uuid

import typer

from domain.checkout import CheckoutLine, CheckoutRequest, CheckoutResult, CheckoutStatus
from domain.errors import InvalidInput
from invsaga.cli.errors import run
from invsaga.settings import load_settings

_LINE = re.compile(r"^(?P<sku>[^:@\s]+)(?:@(?P<location>[^:\s]+))?:(?P<quantity>-?\d+)$")


def parse_line(text: str) -> CheckoutLine:
    """``SKU:QTY`` or ``SKU@LOCATION:QTY``."""
    match = _LINE.match(text)
    if not match:
        raise InvalidInput(f"cannot read line {text!r}: write SKU:QTY or SKU@LOCATION:QTY")
    return CheckoutLine(
        sku=match["sku"], quantity=int(match["quantity"]), location=match["location"] or "main"
    )


def worker() -> None:
    """Run a checkout worker until SIGTERM or Ctrl-C, then drain in-flight activities and exit 0."""
    from workers.worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(run_worker(load_settings()))


def checkout(
    lines: list[str] = typer.Argument(..., metavar="SKU:QTY...", help="Lines to buy, e.g. MUG-1:2."),
    order_id: str = typer.Option(None, "--order-id", help="Defaults to a new random id."),
    customer: str = typer.Option("cli-customer", "--customer"),
    payment_token: str = typer.Option("tok_success", "--payment-token"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check out an order and wait for its result; exits 0 only when it is CONFIRMED."""
    from invsaga.checkout_client import CheckoutClient

    async def go() -> CheckoutResult:
        request = CheckoutRequest(
            order_id=order_id or f"cli-{uuid.uuid4().hex[:12]}",
            customer_id=customer,
            lines=[parse_line(text) for text in lines],
            payment_token=payment_token,
        )
        client = await CheckoutClient.connect(load_settings())
        return await client.checkout(request)

    result = run(go())
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        print(_describe(result))
    if result.status is not CheckoutStatus.CONFIRMED:
        raise typer.Exit(4 if result.reason and result.reason.value == "out_of_stock" else 1)


def _describe(result: CheckoutResult) -> str:
    parts = [f"order {result.order_id}: {result.status.value}"]
    if result.amount_minor is not None:
        parts.append(f"amount {result.amount_minor / 100:.2f} {result.currency}")
    if result.reason:
        parts.append(f"reason {result.reason.value}")
    if result.detail:
        parts.append(result.detail)
    for short in result.shortages:
        parts.append(f"short {short.sku}@{short.location}: wanted {short.requested}, {short.available} left")
    return "; ".join(parts)


def mount(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.command("checkout")(checkout)


__all__ = ["mount", "parse_line"]
