"""Encrypted checkouts on the real stack: a key rotated while a checkout is in flight, and an encrypted
history recorded for the replay tests."""

from __future__ import annotations

import asyncio
import base64
import uuid

import pytest
from temporalio.client import Client

from invsaga.client import CheckoutClient
from invsaga.domain.checkout import CheckoutStatus
from invsaga.temporal.codec import KEY_ID, PayloadKeys, new_key_entry
from invsaga.temporal.connection import connect
from tests.helpers import HISTORY_KEYS, assert_clean_audit, keep_history, stocked_sku
from tests.integration.test_checkout_saga import levels, order
from workers.worker import WorkerDeps, build_worker

pytestmark = pytest.mark.usefixtures("clean_shards")


async def _client(saga_settings, keys: PayloadKeys) -> Client:
    return await connect(saga_settings.temporal_address, saga_settings.temporal_namespace, keys=keys)


def _key_ids(history_json: str) -> set[str]:
    """The key ids that encrypted the payloads of a history, read from the raw JSON."""
    import json

    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            metadata = node.get("metadata")
            if isinstance(metadata, dict) and KEY_ID in metadata:
                found.add(base64.b64decode(metadata[KEY_ID]).decode())
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(history_json))
    return found


async def test_a_key_rotated_while_a_checkout_is_in_flight_and_the_checkout_completes(
    saga_settings, databases, store
):
    old_entry, new_entry = new_key_entry("2026-11"), new_key_entry("2026-12")
    before = await _client(saga_settings, PayloadKeys.parse(old_entry))
    # The rotation: the new key goes first (it encrypts from now on), the old one stays (it decrypts).
    after = await _client(saga_settings, PayloadKeys.parse(f"{new_entry},{old_entry}"))
    task_queue = f"rotate-{uuid.uuid4()}"
    sku = await stocked_sku(databases, store, 5)
    # A slow charge keeps the checkout running across the workers' restart.
    request = order((sku, 2), token="tok_slow_1500")

    async with WorkerDeps.open(saga_settings) as deps:
        async with build_worker(before, saga_settings, deps, task_queue=task_queue):
            view = await CheckoutClient(before, task_queue=task_queue).start(request)
            assert view.held
        # The old workers are gone mid-checkout; the new ones have the rotated keys.
        async with build_worker(after, saga_settings, deps, task_queue=task_queue):
            result = await asyncio.wait_for(
                CheckoutClient(after, task_queue=task_queue).result(request.order_id), 90
            )

    assert result.status is CheckoutStatus.CONFIRMED, result
    history = await after.get_workflow_handle(f"checkout-{request.order_id}").fetch_history()
    assert _key_ids(history.to_json()) == {"2026-11", "2026-12"}  # written under both keys
    assert await levels(store, sku) == {sku: (3, 0)}
    await assert_clean_audit(databases)


async def test_an_encrypted_checkout_confirms_and_keeps_its_history(saga_settings, databases, store):
    """Also records tests/histories/confirmed_encrypted.json (INVSAGA_RECORD_HISTORIES=1), encrypted
    under the replay tests' own key, so the replay tests replay an encrypted history too."""
    client = await _client(saga_settings, HISTORY_KEYS)
    task_queue = f"encrypted-{uuid.uuid4()}"
    sku = await stocked_sku(databases, store, 3)
    request = order((sku, 1))
    async with (
        WorkerDeps.open(saga_settings) as deps,
        build_worker(client, saga_settings, deps, task_queue=task_queue),
    ):
        saga = CheckoutClient(client, task_queue=task_queue)
        result = await saga.checkout(request)
        assert result.status is CheckoutStatus.CONFIRMED
        await keep_history(saga, request.order_id, "confirmed_encrypted")
    history = await client.get_workflow_handle(f"checkout-{request.order_id}").fetch_history()
    assert _key_ids(history.to_json()) == set(HISTORY_KEYS.ids)
    assert request.payment_token.encode() not in history.to_json().encode()
