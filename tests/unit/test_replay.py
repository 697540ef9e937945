"""Replay committed histories of every saga path against today's workflow code.

A change to workflow code that would break running checkouts fails here. Record fresh histories with
``INVSAGA_RECORD_HISTORIES=1 pytest tests/integration/test_checkout_saga.py`` and commit them next to
the old ones; keep the old ones until no workflow started by that code can still be running.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from invsaga.temporal.codec import data_converter
from tests.helpers import HISTORIES, HISTORY_KEYS, HISTORY_SHAPE
from workflows.checkout import CheckoutWorkflow, StepwiseCheckoutWorkflow
from workflows.hold_sweeper import HoldSweeperWorkflow

HISTORY_FILES = sorted(HISTORIES.glob("*.json"))


def test_every_saga_path_has_a_committed_history():
    names = {path.stem for path in HISTORY_FILES}
    expected = {
        "confirmed_two_shards",
        "rejected_out_of_stock",
        "rejected_payment_declined",
        "confirmed_flaky_payment",
        "confirmed_unknown_payment_outcome",
        "cancelled_by_update",
        "cancelled_workflow",
        "rejected_invalid",
    }
    # Payloads encrypted by the codec (invsaga/temporal/codec.py), under HISTORY_KEYS.
    lean = {*expected, "confirmed_encrypted"}
    # Recorded after holds were pinned before the charge (patch "order-ends-right-1").
    expected |= {f"{name}_pinned" for name in expected}
    expected.add("confirmed_encrypted")
    # Recorded in the lean shape (workflow type "Checkout"): the same paths, fewer tasks and events.
    expected |= {f"{name}_{HISTORY_SHAPE}" for name in lean}
    assert expected <= names, f"missing histories: {sorted(expected - names)}"


@pytest.mark.parametrize("path", HISTORY_FILES, ids=[p.stem for p in HISTORY_FILES])
async def test_history_replays(path):
    history = WorkflowHistory.from_json(f"replay-{path.stem}", path.read_text())
    replayer = Replayer(
        # With the codec: encrypted histories decode, and plain ones (written before it) pass through.
        workflows=[CheckoutWorkflow, StepwiseCheckoutWorkflow, HoldSweeperWorkflow],
        data_converter=data_converter(HISTORY_KEYS),
    )
    await replayer.replay_workflow(history)


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


#: A dotted path into one of our packages, as a pickled or type-tagged payload would carry it.
_MODULE_PATH = re.compile(r"\b(?:invsaga|workflows|activities|workers|domain|store|api|payments)\.[a-z_]+\b")


def test_histories_name_types_not_module_paths():
    """A history names the workflow and its activities by their Temporal names, and its payloads are
    plain JSON with no Python type in them: moving a module (as the one-package layout did) cannot
    break a replay, and renaming a workflow or activity must be a deliberate, visible change."""
    types: set[str] = set()
    for path in HISTORY_FILES:
        for key, value in _walk(json.loads(path.read_text())):
            if key in {"workflowType", "activityType"}:
                types.add(value["name"])
            elif key == "metadata" and "encoding" in value:
                encoding = base64.b64decode(value["encoding"]).decode()
                # Plain JSON, or the codec's ciphertext of plain JSON: never a pickled Python type.
                assert encoding in {"json/plain", "binary/encrypted"}, f"{path.name}: encoded as {encoding}"
            elif key == "data" and isinstance(value, str):
                text = base64.b64decode(value).decode(errors="replace")
                assert not _MODULE_PATH.search(text), f"{path.name}: a payload names a module: {text[:200]}"
    assert {"Checkout", "CheckoutWorkflow", "charge_payment", "commit_stock"} <= types
    assert not [name for name in types if "." in name], sorted(types)
