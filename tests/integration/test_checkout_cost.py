"""What a checkout costs Temporal, and what it shows in the Web UI's list, on a real dev server.

Every history event is a billed action on Temporal Cloud and a write to a self-hosted cluster's
persistence, and every workflow task is a round trip through the worker: the lean shape (workflow type
``Checkout``) confirms an order in two workflow tasks and at most 18 events, on any number of shards.
The search attributes must still say, at every wait and at the end, where the checkout is.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata

from invsaga.domain.checkout import CheckoutStatus, RejectReason
from invsaga.temporal import search_attributes as sa
from tests.helpers import assert_clean_audit, skus_on_shard, stocked_sku
from tests.integration.test_checkout_saga import catalog, order

WORKFLOW_TASK = EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
ACTIVITY = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
UPSERT = EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
MARKER = EventType.EVENT_TYPE_MARKER_RECORDED


async def _history(saga, order_id: str) -> list:
    return [event async for event in saga.handle(order_id).fetch_history_events()]


def _kinds(events: list) -> Counter[int]:
    return Counter(event.event_type for event in events)


async def _attributes(saga, order_id: str) -> dict[str, object]:
    described = await saga.describe(order_id)
    pairs = described.typed_search_attributes.search_attributes
    return {pair.key.name: pair.value for pair in pairs if pair.key.name in sa.REGISTRATION}


async def test_a_confirmed_one_shard_checkout_takes_two_workflow_tasks_and_at_most_18_events(
    saga, store, databases
):
    sku = await stocked_sku(databases, store, 10)
    request = order((sku, 2))
    result = await saga.checkout(request)
    assert result.status is CheckoutStatus.CONFIRMED
    events = await _history(saga, request.order_id)
    kinds = _kinds(events)
    assert len(events) <= 18, "\n".join(EventType.Name(e.event_type) for e in events)
    assert kinds[WORKFLOW_TASK] == 2
    assert kinds[ACTIVITY] == 1, "only the charge is a real activity"
    # place_order and confirm_order; PAYING (with the amount) before the charge, CONFIRMED at the end.
    assert (kinds[MARKER], kinds[UPSERT]) == (2, 2)
    assert await _attributes(saga, request.order_id) == {
        sa.ORDER_ID.name: request.order_id,
        sa.CUSTOMER_ID.name: request.customer_id,
        sa.CHECKOUT_SKUS.name: [sku],
        sa.CHECKOUT_STATUS.name: CheckoutStatus.CONFIRMED.value,
        sa.CHECKOUT_AMOUNT.name: result.amount_minor / 100,
    }
    await assert_clean_audit(databases)


async def test_a_two_shard_checkout_costs_no_more_tasks_or_events_than_one(saga, store, databases):
    (a,) = skus_on_shard(store.router, 0, 1)
    (b,) = skus_on_shard(store.router, 1, 1)
    await catalog(databases, store, (a, 5), (b, 5))
    request = order((a, 1), (b, 2))
    assert (await saga.checkout(request)).status is CheckoutStatus.CONFIRMED
    events = await _history(saga, request.order_id)
    assert len(events) <= 18 and _kinds(events)[WORKFLOW_TASK] == 2
    assert await store.get_many([a, b]) and (await _attributes(saga, request.order_id))[
        sa.CHECKOUT_SKUS.name
    ] == sorted([a, b])
    await assert_clean_audit(databases)


async def test_an_out_of_stock_refusal_ends_in_its_first_workflow_task_and_says_why(saga, store, databases):
    (a,) = skus_on_shard(store.router, 0, 1)
    (b,) = skus_on_shard(store.router, 1, 1)
    await catalog(databases, store, (a, 5), (b, 1))
    request = order((a, 2), (b, 3))  # a is held, b is short: a's hold must be released
    result = await saga.checkout(request)
    assert (result.status, result.reason) == (CheckoutStatus.REJECTED, RejectReason.OUT_OF_STOCK)
    events = await _history(saga, request.order_id)
    assert _kinds(events)[WORKFLOW_TASK] == 1 and _kinds(events)[ACTIVITY] == 0
    found = await store.get_many([a, b])
    assert (found[a][0].on_hand, found[a][0].reserved) == (5, 0)
    attributes = await _attributes(saga, request.order_id)
    assert attributes[sa.CHECKOUT_STATUS.name] == CheckoutStatus.REJECTED.value
    assert attributes[sa.REJECT_REASON.name] == RejectReason.OUT_OF_STOCK.value
    await assert_clean_audit(databases)


async def test_a_checkout_waiting_for_its_charge_is_listed_as_paying(saga, store, databases):
    sku = await stocked_sku(databases, store, 10)
    request = order((sku, 1), token="tok_slow_3000")
    assert (await saga.start(request)).held
    query = (
        f'{sa.ORDER_ID.name} = "{request.order_id}" AND {sa.CUSTOMER_ID.name} = "{request.customer_id}"'
        f' AND {sa.CHECKOUT_SKUS.name} = "{sku}" AND {sa.CHECKOUT_STATUS.name} = "PAYING"'
    )
    for _ in range(50):  # visibility is eventually consistent
        if [w async for w in saga.client.list_workflows(query)]:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"not listed as PAYING: {await _attributes(saga, request.order_id)}")
    assert (await _attributes(saga, request.order_id))[sa.CHECKOUT_AMOUNT.name] > 0
    metadata = await saga.handle(request.order_id).query(
        "__temporal_workflow_metadata", result_type=WorkflowMetadata
    )
    assert metadata.current_details == CheckoutStatus.PAYING.value
    assert (await saga.result(request.order_id)).status is CheckoutStatus.CONFIRMED
