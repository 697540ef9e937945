"""Replay committed histories of every saga path against today's workflow code.

A change to workflow code that would break running checkouts fails here. Record fresh histories with
``INVSAGA_RECORD_HISTORIES=1 pytest tests/integration/test_checkout_saga.py`` and commit them next to
the old ones; keep the old ones until no workflow started by that code can still be running.
"""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.helpers import HISTORIES
from workflows.checkout import CheckoutWorkflow
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
    # Recorded after holds were pinned before the charge (patch "order-ends-right-1").
    expected |= {f"{name}_pinned" for name in expected}
    assert expected <= names, f"missing histories: {sorted(expected - names)}"


@pytest.mark.parametrize("path", HISTORY_FILES, ids=[p.stem for p in HISTORY_FILES])
async def test_history_replays(path):
    history = WorkflowHistory.from_json(f"replay-{path.stem}", path.read_text())
    replayer = Replayer(
        workflows=[CheckoutWorkflow, HoldSweeperWorkflow], data_converter=pydantic_data_converter
    )
    await replayer.replay_workflow(history)
