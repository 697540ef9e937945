"""Idempotent retries of POST /v1/checkouts (and of receipts): same key and body, same answer, one effect."""

from __future__ import annotations

import asyncio
import json
import uuid

from sqlalchemy import text
from temporalio.service import RPCError, RPCStatusCode

from invsaga.domain.checkout import workflow_id_for
from tests.helpers import assert_clean_audit, in_catalog, skus_on_shard, stocked_sku
from tests.integration.api_fixtures import (
    ADMIN,
    BOTH_KEY,
    CHECKOUT,
    assert_problem,
    bearer,
    checkout_body,
    idempotency,
    wait_until_terminal,
    worker_serving,
)


async def post(http, body, key, headers=CHECKOUT):
    return await http.post("/v1/checkouts", json=body, headers={**headers, **idempotency(key)})


async def runs_of(temporal, order_id: str) -> int:
    """Workflow executions ever started for the order. Visibility lags a little behind describe(), which
    is authoritative about whether one exists, so wait until the listing has caught up with it."""
    try:
        await temporal.get_workflow_handle(workflow_id_for(order_id)).describe()
        exists = True
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        exists = False
    for _ in range(100):
        count = 0
        async for _ in temporal.list_workflows(f"WorkflowId = '{workflow_id_for(order_id)}'"):
            count += 1
        if count >= exists:
            return count
        await asyncio.sleep(0.1)
    return count


async def reservations_made(databases, store, sku: str) -> int:
    """Reserve entries in the shard's ledger for the SKU: one per hold ever taken."""
    engine = databases.shards[store.router.shard_of(sku)]
    async with engine.connect() as conn:
        return await conn.scalar(
            text("SELECT count(*) FROM stock_movements WHERE sku = :sku AND reason = 'reserve'"), {"sku": sku}
        )


async def test_a_retry_with_the_same_key_and_body_replays_the_first_answer(http, api, store, databases):
    sku = await stocked_sku(databases, store, 10)
    body = checkout_body((sku, 2), token="tok_slow_1500")
    key = "retry-" + body["order_id"]

    first = await post(http, body, key)
    again = await post(http, body, key)

    assert first.status_code == again.status_code == 202
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert again.headers["location"] == first.headers["location"]
    assert (await wait_until_terminal(http, body["order_id"]))["status"] == "CONFIRMED"
    # Even after the checkout ended, the key answers what it answered first.
    late = await post(http, body, key)
    assert (late.status_code, late.content) == (202, first.content)
    assert await runs_of(api.temporal, body["order_id"]) == 1
    [level] = await store.get(sku)
    assert (level.on_hand, level.reserved) == (8, 0)


async def test_json_spacing_and_key_order_do_not_make_a_different_request(http, store, databases):
    sku = await stocked_sku(databases, store, 10)
    body = checkout_body((sku, 1))
    key = "spacing-" + body["order_id"]
    first = await post(http, body, key)
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=4).encode()
    again = await http.post(
        "/v1/checkouts",
        content=reordered,
        headers={**CHECKOUT, **idempotency(key), "Content-Type": "application/json"},
    )
    assert (again.status_code, again.content) == (first.status_code, first.content)


async def test_the_same_key_with_a_different_body_is_refused_and_starts_nothing(http, api, store, databases):
    sku = await stocked_sku(databases, store, 10)
    body = checkout_body((sku, 1))
    key = "reuse-" + body["order_id"]
    assert (await post(http, body, key)).status_code == 202

    other = checkout_body((sku, 5))
    response = await post(http, other, key)

    assert_problem(response, 422, "idempotency-key-reused")
    assert await runs_of(api.temporal, other["order_id"]) == 0
    # The first request's answer is still what the key replays.
    assert (await post(http, body, key)).status_code == 202
    await wait_until_terminal(http, body["order_id"])


async def test_keys_belong_to_the_api_key_that_used_them(http, store, databases):
    sku = await stocked_sku(databases, store, 10)
    key = "shared-key"
    mine = checkout_body((sku, 1))
    theirs = checkout_body((sku, 2))
    assert (await post(http, mine, key)).status_code == 202
    # Another client's identical Idempotency-Key is its own: no clash, no replay of someone else's answer.
    other = await post(http, theirs, key, headers=bearer(BOTH_KEY))
    assert other.status_code == 202 and other.json()["order_id"] == theirs["order_id"]
    await wait_until_terminal(http, mine["order_id"])
    await wait_until_terminal(http, theirs["order_id"])


async def test_an_out_of_stock_answer_is_replayed_too(http, store, databases):
    sku = await stocked_sku(databases, store, 1)
    body = checkout_body((sku, 2))
    key = "oos-" + body["order_id"]
    first = await post(http, body, key)
    assert_problem(first, 409, "out-of-stock")
    await stock_more(store, sku, 5)  # now it would fit, but the key already has its answer
    again = await post(http, body, key)
    assert (again.status_code, again.content) == (409, first.content)
    assert again.headers["content-type"].startswith("application/problem+json")


async def stock_more(store, sku, quantity):
    from tests.helpers import stock_up

    await stock_up(store, sku, quantity)


async def test_a_refused_malformed_request_does_not_use_up_the_key(http, store, databases):
    sku = await stocked_sku(databases, store, 3)
    key = "fix-and-retry"
    body = checkout_body((sku, 1))
    broken = {**body, "lines": [{"sku": sku, "quantity": -1}]}
    assert_problem(await post(http, broken, key), 422, "invalid-input")
    fixed = await post(http, body, key)
    assert fixed.status_code == 202, fixed.text
    await wait_until_terminal(http, body["order_id"])


async def test_a_new_key_for_an_order_that_already_ran_answers_from_that_checkout(
    http, api, store, databases
):
    sku = await stocked_sku(databases, store, 3)
    body = checkout_body((sku, 1))
    assert (await post(http, body, "first-" + body["order_id"])).status_code == 202
    assert (await wait_until_terminal(http, body["order_id"]))["status"] == "CONFIRMED"

    again = await post(http, body, "second-" + body["order_id"])

    assert again.status_code == 202 and again.json()["status"] == "CONFIRMED"
    assert await runs_of(api.temporal, body["order_id"]) == 1
    [level] = await store.get(sku)
    assert level.on_hand == 2


async def test_fifty_concurrent_posts_with_one_key_start_one_workflow_with_identical_answers(
    http, api, store, databases
):
    sku = await stocked_sku(databases, store, 10, shard=1)
    body = checkout_body((sku, 3))
    key = "burst-" + body["order_id"]

    responses = await asyncio.gather(*(post(http, body, key) for _ in range(50)))

    assert {r.status_code for r in responses} == {202}, {r.status_code: r.text for r in responses}
    assert len({r.content for r in responses}) == 1
    assert await runs_of(api.temporal, body["order_id"]) == 1
    assert await reservations_made(databases, store, sku) == 1
    async with databases.core.connect() as conn:
        rows = await conn.scalar(
            text("SELECT count(*) FROM api_idempotency_keys WHERE idempotency_key = :k"), {"k": key}
        )
    assert rows == 1
    assert (await wait_until_terminal(http, body["order_id"]))["status"] == "CONFIRMED"
    [level] = await store.get(sku)
    assert (level.on_hand, level.reserved) == (7, 0)
    await assert_clean_audit(databases)


async def test_a_burst_of_duplicates_while_the_first_waits_for_its_decision_gets_its_one_answer(
    api, store, databases, temporal_client
):
    """Nobody polls the task queue for the first 2 s, so every duplicate is in flight at once. Had each
    sent its own update to the one checkout, Temporal would refuse those past its limit of updates in
    flight per workflow (10 on the dev server): ResourceExhausted, answered 503."""
    import httpx

    from invsaga.api.app import create_app
    from invsaga.api.deps import ApiDeps
    from invsaga.client import CheckoutClient

    settings = api.settings.model_copy(update={"task_queue": f"late-worker-{uuid.uuid4()}"})
    client = CheckoutClient(temporal_client, task_queue=settings.task_queue)
    app = create_app(settings, deps=ApiDeps(databases=databases, store=store, checkouts=client))
    sku = await stocked_sku(databases, store, 10)
    body = checkout_body((sku, 3))
    key = "burst-late-" + body["order_id"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=90) as http:
        posts = asyncio.gather(*(post(http, body, key) for _ in range(30)))
        await asyncio.sleep(2)
        async with worker_serving(temporal_client, settings):
            responses = await posts
            await temporal_client.get_workflow_handle(workflow_id_for(body["order_id"])).result()

    assert {r.status_code for r in responses} == {202}, {r.status_code: r.text for r in responses}
    assert len({r.content for r in responses}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in responses) == 1
    assert await runs_of(temporal_client, body["order_id"]) == 1
    assert await reservations_made(databases, store, sku) == 1
    [level] = await store.get(sku)
    assert (level.on_hand, level.reserved) == (7, 0)
    await assert_clean_audit(databases)


async def test_concurrent_posts_with_one_key_and_different_bodies_run_only_one(http, api, store, databases):
    sku = await stocked_sku(databases, store, 50)
    key = "race-different-bodies"
    bodies = [checkout_body((sku, 1)) for _ in range(10)]
    responses = await asyncio.gather(*(post(http, body, key) for body in bodies))
    accepted = [b for b, r in zip(bodies, responses, strict=True) if r.status_code == 202]
    refused = [r for r in responses if r.status_code == 422]
    assert len(accepted) == 1 and len(refused) == 9
    for response in refused:
        assert_problem(response, 422, "idempotency-key-reused")
    started = [b for b in bodies if await runs_of(api.temporal, b["order_id"])]
    assert started == accepted
    await wait_until_terminal(http, accepted[0]["order_id"])


async def test_a_receipt_retried_with_its_key_adds_the_units_once(http, store, databases):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await in_catalog(databases, sku)
    path = f"/v1/stock/{sku}/main/receipts"
    headers = {**ADMIN, **idempotency("receipt-" + sku)}

    responses = await asyncio.gather(
        *(http.post(path, json={"quantity": 7}, headers=headers) for _ in range(10))
    )

    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    [level] = await store.get(sku)
    assert level.on_hand == 7
    reused = await http.post(path, json={"quantity": 8}, headers=headers)
    assert_problem(reused, 422, "idempotency-key-reused")
    assert (await store.get(sku))[0].on_hand == 7


async def test_old_keys_are_purged_and_recent_ones_kept(databases):
    from invsaga.store.idempotency import StoredResponse, claim_key, complete_key, purge_keys

    principal = f"purge-{uuid.uuid4().hex[:8]}"
    for key in ("old", "recent"):
        assert (await claim_key(databases.core, principal, key, "h")).claimed
        await complete_key(databases.core, principal, key, "h", StoredResponse(202, "{}"))
    async with databases.core.begin() as conn:
        await conn.execute(
            text(
                "UPDATE api_idempotency_keys SET created_at = now() - interval '2 days'"
                " WHERE principal = :p AND idempotency_key = 'old'"
            ),
            {"p": principal},
        )
    while await purge_keys(databases.core, older_than_seconds=24 * 3600):
        pass
    assert (await claim_key(databases.core, principal, "old", "other")).claimed
    recent = await claim_key(databases.core, principal, "recent", "h")
    assert not recent.claimed and recent.response == StoredResponse(202, "{}")


async def test_no_stock_decision_in_time_is_503_and_the_retry_with_the_key_runs_for_real(
    api, store, databases, temporal_client, monkeypatch
):
    """Nobody polls the task queue at first, so the decision cannot come: 503, and the key stays free."""
    import httpx

    from invsaga.api import checkouts
    from invsaga.api.app import create_app
    from invsaga.api.deps import ApiDeps
    from invsaga.client import CheckoutClient

    monkeypatch.setattr(checkouts, "RESERVATION_TIMEOUT_SECONDS", 1.0)
    settings = api.settings.model_copy(update={"task_queue": f"idle-{uuid.uuid4()}"})
    client = CheckoutClient(temporal_client, task_queue=settings.task_queue)
    app = create_app(settings, deps=ApiDeps(databases=databases, store=store, checkouts=client))
    sku = await stocked_sku(databases, store, 5)
    body = checkout_body((sku, 2))
    headers = {**CHECKOUT, **idempotency("late-" + body["order_id"])}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        first = await http.post("/v1/checkouts", json=body, headers=headers)
        problem = assert_problem(first, 503, "unavailable")
        assert "retry with the same Idempotency-Key" in problem["detail"] and first.headers["retry-after"]

        async with worker_serving(temporal_client, settings):
            monkeypatch.setattr(checkouts, "RESERVATION_TIMEOUT_SECONDS", 30.0)
            retry = await http.post("/v1/checkouts", json=body, headers=headers)
            assert retry.status_code == 202, retry.text
            assert "idempotent-replayed" not in retry.headers
            await temporal_client.get_workflow_handle(workflow_id_for(body["order_id"])).result()
    assert await runs_of(temporal_client, body["order_id"]) == 1
    [level] = await store.get(sku)
    assert (level.on_hand, level.reserved) == (3, 0)


async def idempotency_rows(databases, key: str) -> int:
    async with databases.core.connect() as conn:
        return await conn.scalar(
            text("SELECT count(*) FROM api_idempotency_keys WHERE idempotency_key = :k"), {"k": key}
        )


async def sell_out(http, store, databases) -> tuple[str, dict, str]:
    """A SKU whose only unit one buyer holds, and an API that has learned it is sold out."""
    sku = await stocked_sku(databases, store, 1)
    winner = checkout_body((sku, 1), token="tok_slow_1500")
    winner_key = "winner-" + winner["order_id"]
    assert (await post(http, winner, winner_key)).status_code == 202
    # The database tells this buyer "0 available"; from then on the hint knows.
    assert_problem(await post(http, checkout_body((sku, 1)), str(uuid.uuid4())), 409, "out-of-stock")
    return sku, winner, winner_key


async def test_a_sold_out_refusal_writes_nothing_and_starts_nothing(http, api, store, databases):
    sku, winner, _ = await sell_out(http, store, databases)
    body = checkout_body((sku, 1))
    key = "late-" + body["order_id"]

    refused = await post(http, body, key)

    problem = assert_problem(refused, 409, "out-of-stock")
    assert problem["fast_path"] is True
    assert problem["shortages"] == [{"sku": sku, "location": "main", "requested": 1, "available": 0}]
    assert await idempotency_rows(databases, key) == 0
    assert await runs_of(api.temporal, body["order_id"]) == 0
    assert (await wait_until_terminal(http, winner["order_id"]))["status"] == "CONFIRMED"


async def test_the_buyer_who_took_the_last_unit_is_not_told_sold_out_on_a_retry(http, api, store, databases):
    sku, winner, winner_key = await sell_out(http, store, databases)

    same_key = await post(http, winner, winner_key)
    new_key = await post(http, winner, "retry-" + winner["order_id"])

    assert same_key.status_code == 202 and same_key.headers.get("Idempotent-Replayed") == "true"
    assert new_key.status_code == 202, new_key.text
    assert new_key.json()["order_id"] == winner["order_id"]
    assert await runs_of(api.temporal, winner["order_id"]) == 1
    assert (await wait_until_terminal(http, winner["order_id"]))["status"] == "CONFIRMED"
    [level] = await store.get(sku)
    assert (level.on_hand, level.reserved) == (0, 0)
    await assert_clean_audit(databases)
