"""``invsaga order list|show|cancel``, the real console script as a subprocess: the same orders as the
API shows, cancel through the checkout workflow, and every refusal one line on stderr."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from invsaga.domain.checkout import CheckoutLine, CheckoutRequest, CheckoutStatus
from invsaga.store.order_list import get_order
from tests.helpers import assert_clean_audit, stocked_sku
from tests.integration.order_rows import insert_orders, order, tag_fixture  # noqa: F401 (a fixture)
from tests.integration.test_cli import INVSAGA, CliResult, cli_env


@pytest.fixture
def invsaga(saga_settings):
    """Run ``invsaga ARGS`` against the test fleet and Temporal, never accepting a traceback."""

    async def run(*args: str, task_queue: str = "none") -> CliResult:
        env = cli_env(saga_settings.shard_dsns, saga_settings.core_dsn) | {
            "INVSAGA_TEMPORAL_ADDRESS": saga_settings.temporal_address,
            "INVSAGA_TASK_QUEUE": task_queue,
        }
        done = await asyncio.to_thread(
            subprocess.run, [str(INVSAGA), *args], capture_output=True, text=True, timeout=120, env=env
        )
        assert "Traceback" not in done.stderr, done.stderr
        return CliResult(done.returncode, done.stdout, done.stderr)

    return run


async def test_list_and_show_print_the_orders_and_refuse_bad_filters_in_one_line(invsaga, databases, tag):
    base = datetime(2026, 2, 1, tzinfo=UTC)
    customer = f"{tag}-cli"
    await insert_orders(
        databases, [order(f"{tag}-{n}", customer, base + timedelta(hours=n), "paid") for n in range(5)]
    )

    listed, shown, missing, *bad = await asyncio.gather(
        invsaga("order", "list", "--customer", customer, "--limit", "3", "--json"),
        invsaga("order", "show", f"{tag}-4", "--json"),
        invsaga("order", "show", f"{tag}-none"),
        invsaga("order", "list", "--status", "shipped"),
        invsaga("order", "list", "--since", "last tuesday"),
    )

    assert listed.code == 0, listed.stderr
    assert [o["order_id"] for o in listed.json()["items"]] == [f"{tag}-4", f"{tag}-3", f"{tag}-2"]
    after = await invsaga(
        "order", "list", "--customer", customer, "--cursor", listed.json()["next_cursor"], "--json"
    )
    assert [o["order_id"] for o in after.json()["items"]] == [f"{tag}-1", f"{tag}-0"]
    assert after.json()["next_cursor"] is None
    assert shown.code == 0 and shown.json()["status"] == "paid" and shown.json()["holds"] == []
    assert shown.json()["checkout"] == f"/v1/checkouts/{tag}-4"
    assert missing.code == 3 and missing.error_line == f"error: no order '{tag}-none'"
    for refused, words in zip(bad, ["--status must be one of", "--since"], strict=True):
        assert refused.code == 2 and words in refused.error_line, refused


async def test_cancel_goes_through_the_checkout_which_releases_the_stock(invsaga, saga, store, databases):
    sku = await stocked_sku(databases, store, 5)
    order_id = f"cli-cancel-{uuid.uuid4().hex[:8]}"
    request = CheckoutRequest(
        order_id=order_id,
        customer_id="cli",
        lines=[CheckoutLine(sku=sku, quantity=2)],
        # The charge lands only after 6 s: the checkout stays PAYING, cancellable, past the CLI start-up.
        payment_token="tok_late_6000",
    )
    assert (await saga.start(request)).held

    # All at once, so the checkout is still paying when the real cancel arrives, one start-up later.
    cancelled, empty_reason, never = await asyncio.gather(
        invsaga("order", "cancel", order_id, "--reason", "changed my mind", task_queue=saga.task_queue),
        invsaga("order", "cancel", order_id, "--reason", " ", task_queue=saga.task_queue),
        invsaga("order", "cancel", "cli-never-was", task_queue=saga.task_queue),
    )
    result = await saga.result(order_id)
    shown = await get_order(databases, order_id)

    assert cancelled.code == 0, cancelled.stderr
    assert cancelled.stdout.startswith(f"order {order_id}: cancel accepted")
    assert result.status is CheckoutStatus.CANCELLED
    assert [(lv.on_hand, lv.reserved) for lv in await store.get(sku)] == [(5, 0)]
    assert shown.status == "cancelled"
    assert [(h.quantity, h.state) for h in shown.holds] == [(2, "released")]
    assert never.code == 1 and "cli-never-was" in never.error_line
    assert empty_reason.code == 2 and "--reason" in empty_reason.error_line
    await assert_clean_audit(databases)
