"""``invsaga shards`` and ``invsaga slots`` on three real Postgres servers, the way an operator grows
and shrinks a deployment: list the two listed shards, add a third, rebalance (a dry run, a capped run,
the rest), move slots by hand, stop a move (SIGTERM, Ctrl-C) and resume it, drain a shard and remove it.

The fleet is this module's own (two shards from INVSAGA_SHARD_DSNS, the third added by the command), so
the session's slot map is never touched. The tests run in file order on that one fleet, each going on
from where the one before left the shards. The commands run in-process (typer's runner, in a thread so
each has its own event loop), except the stopped moves, which need a real process to signal. After
every move the SKUs seeded at the start are still all there, each on exactly one shard, and the audit
is clean.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from temporalio.client import Client
from typer.testing import CliRunner

from invsaga.cli import app
from invsaga.dev.ports import free_port
from invsaga.dev.postgres import SUPERUSER, PgFleet
from invsaga.domain.checkout import STEPWISE_WORKFLOW_TYPE
from invsaga.events.webhooks import register_webhook
from invsaga.settings import load_settings
from invsaga.store.audit import audit
from invsaga.store.databases import Databases, migrate_all
from invsaga.store.routing import read_router, slot_of
from invsaga.store.slot_move import SlotMover
from invsaga.store.slot_ownership import OWNED_STOCK
from invsaga.store.stock import StockStore

INVSAGA = Path(sys.executable).with_name("invsaga")
SEEDED = 400
UNITS = 10


@dataclass
class Deployment:
    fleet: PgFleet
    env: dict[str, str]
    databases: Databases
    store: StockStore
    skus: list[str]


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str

    @property
    def error_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, f"expected one error line, got: {self.stderr!r}"
        assert lines[0].startswith("error: "), lines[0]
        return lines[0]


@pytest.fixture(scope="module")
async def deployment(three_servers: PgFleet, temporal_server: Any) -> AsyncIterator[Deployment]:
    listed = three_servers.shard_dsns[:2]
    settings = load_settings(shard_dsns=",".join(listed), core_dsn=three_servers.core_dsn, pool_size=5)
    await migrate_all(settings)
    databases = await Databases.open(settings)
    store = StockStore(databases)
    skus = [f"GROW-{n}" for n in range(SEEDED)]
    for sku in skus:
        await store.receive(sku, "main", UNITS, idempotency_key=f"seed-{sku}")
    env = {key: value for key, value in os.environ.items() if not key.startswith("INVSAGA_")}
    env |= {
        "INVSAGA_SHARD_DSNS": ",".join(listed),
        "INVSAGA_CORE_DSN": three_servers.core_dsn,
        "INVSAGA_TEMPORAL_ADDRESS": temporal_server.address,
    }
    try:
        yield Deployment(three_servers, env, databases, store, skus)
    finally:
        await databases.close()


async def invsaga(d: Deployment, *args: str) -> Ran:
    """``invsaga ARGS`` in-process, against this module's fleet only, never accepting a traceback."""
    unset: dict[str, str | None] = {key: None for key in os.environ if key.startswith("INVSAGA_")}
    env = unset | {key: value for key, value in d.env.items() if key.startswith("INVSAGA_")}
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "Traceback" not in result.stderr, result.stderr
    return Ran(result.exit_code, result.stdout, result.stderr)


async def _listed(d: Deployment) -> dict[str, Any]:
    shown = await invsaga(d, "shards", "list", "--json")
    assert shown.code == 0, shown.stderr
    return dict(json.loads(shown.stdout))


async def _slot_map(d: Deployment) -> list[int]:
    return (await read_router(d.databases.core)).slots


async def _check_every_sku(d: Deployment, *, settled: bool = True) -> None:
    """Every seeded SKU is served by exactly one shard, the one the map names, with all its units, and
    the audit is clean. ``settled`` (no move open): no shard keeps any other copy of a seeded SKU."""
    await d.databases.refresh()
    per_shard: dict[int, set[str]] = {}
    copies = 0
    for index in d.databases.serving():
        async with d.databases.shards[index].connect() as conn:
            rows = await conn.execute(
                text(f"SELECT sku FROM {OWNED_STOCK} s WHERE sku = ANY (:s)"), {"s": d.skus}
            )
            per_shard[index] = set(rows.scalars())
            copies += await conn.scalar(
                text("SELECT count(*) FROM stock_levels WHERE sku = ANY (:s)"), {"s": d.skus}
            )
    seen = Counter(sku for skus in per_shard.values() for sku in skus)
    assert set(seen) == set(d.skus) and set(seen.values()) == {1}
    for index, skus in per_shard.items():
        assert all(d.databases.router.shard_of(sku) == index for sku in skus)
    if settled:
        assert copies == len(d.skus)
    levels = await d.store.get_many(d.skus)
    assert sum(lv.on_hand for found in levels.values() for lv in found) == UNITS * len(d.skus)
    report = await audit(d.databases)
    assert report.clean, report.violations[:5]


async def test_list_shows_the_listed_shards_and_no_moves(deployment: Deployment) -> None:
    listed = await _listed(deployment)
    assert [(s["index"], s["state"], s["slots"]) for s in listed["shards"]] == [
        (0, "active", 2048),
        (1, "active", 2048),
    ]
    assert [s["dsn"] for s in listed["shards"]] == ["env:INVSAGA_SHARD_DSNS[0]", "env:INVSAGA_SHARD_DSNS[1]"]
    assert listed["moves"] == []
    table = await invsaga(deployment, "shards", "list")
    assert table.code == 0 and "no open slot moves" in table.stdout
    assert len(table.stdout.splitlines()) == 4  # header, two shards, moves


async def test_add_registers_and_migrates_a_shard_that_owns_nothing(deployment: Deployment) -> None:
    d = deployment
    unreachable = await invsaga(
        d, "shards", "add", f"postgresql://{SUPERUSER}@127.0.0.1:{free_port()}/inventory"
    )
    assert unreachable.code != 0 and "unreachable" in unreachable.error_line
    port = d.fleet.shards[2].port
    no_database = await invsaga(d, "shards", "add", f"postgresql://{SUPERUSER}@127.0.0.1:{port}/absent")
    assert no_database.code == 2 and "absent" in no_database.error_line
    not_a_dsn = await invsaga(d, "shards", "add", "mysql://somewhere/db")
    assert not_a_dsn.code == 2 and "mysql" in not_a_dsn.error_line
    assert len((await _listed(d))["shards"]) == 2  # nothing was registered

    with_password = f"postgresql://{SUPERUSER}:s3cret-pw@127.0.0.1:{port}/inventory"  # trust auth
    added = await invsaga(d, "shards", "add", with_password)
    assert added.code == 0, added.stderr
    assert added.stdout.strip() == (
        "shard 2 registered and migrated; it owns no slots yet: run `invsaga shards rebalance`"
    )
    listed = await _listed(d)
    assert [(s["index"], s["state"], s["slots"]) for s in listed["shards"]] == [
        (0, "active", 2048),
        (1, "active", 2048),
        (2, "active", 0),
    ]
    assert (
        "s3cret-pw" not in listed["shards"][2]["dsn"] and f":{port}/inventory" in listed["shards"][2]["dsn"]
    )
    table = await invsaga(d, "shards", "list")
    assert "s3cret-pw" not in table.stdout
    await d.databases.refresh()
    async with d.databases.shards[2].connect() as conn:
        assert await conn.scalar(text("SELECT shard_index FROM shard_identity")) == 2

    again = await invsaga(d, "shards", "add", with_password)
    assert again.code != 0 and "registered as shard 2 already" in again.error_line
    assert len((await _listed(d))["shards"]) == 3


async def test_rebalance_dry_run_prints_the_plan_and_changes_nothing(deployment: Deployment) -> None:
    d = deployment
    before = await _slot_map(d)
    dry = await invsaga(d, "shards", "rebalance", "--dry-run")
    assert dry.code == 0, dry.stderr
    planned = [line for line in dry.stdout.splitlines() if line.startswith("would move shard")]
    assert planned and all("-> shard 2" in line for line in planned)
    assert "dry run: would move 1365 slot(s)" in dry.stdout and "nothing was changed" in dry.stdout
    assert await _slot_map(d) == before
    assert await SlotMover(d.databases).moves() == []


async def test_rebalance_with_max_slots_moves_exactly_that_many(deployment: Deployment) -> None:
    d = deployment
    before = await _slot_map(d)
    ran = await invsaga(d, "shards", "rebalance", "--max-slots", "64", "--batch-rows", "50")
    assert ran.code == 0, ran.stderr
    after = await _slot_map(d)
    changed = [slot for slot in range(len(before)) if before[slot] != after[slot]]
    assert len(changed) == 64 and {after[slot] for slot in changed} == {2}
    assert "still to move: run `invsaga shards rebalance` again" in ran.stdout
    assert any(" done: shard " in line and "fence " in line for line in ran.stdout.splitlines())
    moved_skus = [sku for sku in d.skus if slot_of(sku) in set(changed)]
    assert moved_skus  # the seeded SKUs reach these slots, so the move copied real rows
    await _check_every_sku(d)
    for sku in moved_skus:
        assert d.databases.router.shard_of(sku) == 2
        assert sum(lv.on_hand for lv in await d.store.get(sku)) == UNITS


async def test_a_full_rebalance_ends_balanced_and_a_second_one_moves_nothing(deployment: Deployment) -> None:
    d = deployment
    ran = await invsaga(d, "shards", "rebalance")
    assert ran.code == 0, ran.stderr
    assert sorted(Counter(await _slot_map(d)).values()) == [1365, 1365, 1366]
    assert ran.stdout.splitlines()[-1].startswith(f"moved {1365 - 64} slot(s); balanced")
    await _check_every_sku(d)
    again = await invsaga(d, "shards", "rebalance")
    assert again.code == 0 and again.stdout.strip().startswith("moved 0 slot(s); balanced")
    assert await SlotMover(d.databases).moves(open_only=True) == []


async def test_slots_move_takes_slots_there_and_back_and_refuses_bad_text(deployment: Deployment) -> None:
    d = deployment
    for bad in ("10-x", "5-3", "1,,2", "4096", "1,1", ""):
        refused = await invsaga(d, "slots", "move", bad, "--to", "1")
        assert refused.code == 2, (bad, refused)
        assert "SLOTS" in refused.error_line
    before = await _slot_map(d)
    sku = next(s for s in d.skus if before[slot_of(s)] == 0)
    slot = slot_of(sku)
    there = await invsaga(d, "slots", "move", f"{slot}", "--to", "2")
    assert there.code == 0, there.stderr
    assert (await _slot_map(d))[slot] == 2
    await _check_every_sku(d)
    assert d.databases.router.shard_of(sku) == 2
    back = await invsaga(d, "slots", "move", str(slot), "--to", "0")
    assert back.code == 0, back.stderr
    assert await _slot_map(d) == before
    nothing = await invsaga(d, "slots", "move", str(slot), "--to", "0")
    assert nothing.code == 0 and "nothing to move" in nothing.stdout
    await _check_every_sku(d)


async def test_moves_wait_while_checkouts_of_the_old_workflow_type_run(
    deployment: Deployment, temporal_server: Any
) -> None:
    """A checkout of the old type names a shard in each step: no move starts while one runs (one on a
    task queue nobody polls stays running), unless the operator says so; nor when Temporal cannot say."""
    d = deployment
    temporal = await Client.connect(temporal_server.address)
    old = await temporal.start_workflow(
        STEPWISE_WORKFLOW_TYPE,
        {"order_id": "old-type"},
        id=f"old-type-{uuid.uuid4()}",
        task_queue=f"nobody-{uuid.uuid4()}",
    )
    try:
        query = f'WorkflowId = "{old.id}" AND ExecutionStatus = "Running"'
        for _ in range(100):  # visibility follows the start within moments
            if (await temporal.count_workflows(query)).count:
                break
            await asyncio.sleep(0.1)
        before = await _slot_map(d)
        for command in (
            ("slots", "move", "7", "--to", "2"),
            ("shards", "rebalance"),
            ("shards", "drain", "1"),
        ):
            refused = await invsaga(d, *command)
            assert refused.code != 0, command
            assert "of the old workflow type CheckoutWorkflow still run" in refused.error_line, command
            assert "--allow-stepwise-checkouts" in refused.error_line
        assert await _slot_map(d) == before
        assert (await invsaga(d, "shards", "rebalance", "--dry-run")).code == 0  # a plan moves nothing

        allowed = await invsaga(d, "slots", "move", "7", "--to", "2", "--allow-stepwise-checkouts")
        assert allowed.code == 0, allowed.stderr
        assert (await _slot_map(d))[7] == 2
    finally:
        await old.terminate("test over")
    back = await invsaga(d, "slots", "move", "7", "--to", str(before[7]))
    assert back.code == 0, back.stderr
    assert await _slot_map(d) == before

    unreachable = replace(d, env=d.env | {"INVSAGA_TEMPORAL_ADDRESS": "127.0.0.1:1"})
    blind = await invsaga(unreachable, "slots", "move", "7", "--to", "2")
    assert blind.code != 0 and "cannot ask Temporal whether CheckoutWorkflow checkouts still run" in (
        blind.error_line
    )
    assert await _slot_map(d) == before
    await _check_every_sku(d)


async def test_a_planned_move_is_listed_resumable_and_can_be_aborted(deployment: Deployment) -> None:
    d = deployment
    before = await _slot_map(d)
    slots = [s for s, owner in enumerate(before) if owner == 1][:3]
    (move,) = await SlotMover(d.databases).plan(slots, 0)
    listed = await invsaga(d, "slots", "moves")
    assert f"move {move.move_id}" in listed.stdout and "planned" in listed.stdout
    dry = await invsaga(d, "shards", "rebalance", "--dry-run")
    assert f"would resume move {move.move_id} (planned)" in dry.stdout
    aborted = await invsaga(d, "slots", "abort", str(move.move_id))
    assert aborted.code == 0, aborted.stderr
    assert f"move {move.move_id} aborted: shard 1 serves its 3 slot(s) as before" in aborted.stdout
    assert (await SlotMover(d.databases).get(move.move_id)).phase == "aborted"
    assert await _slot_map(d) == before
    unknown = await invsaga(d, "slots", "abort", "987654")
    assert unknown.code == 2 and "there is no slot move 987654" in unknown.error_line
    none_open = await invsaga(d, "slots", "resume")
    assert none_open.code == 0 and none_open.stdout.strip() == "no open slot moves"
    await _check_every_sku(d)


def _move_then_stop(env: dict[str, str], slots: str, stop: signal.Signals) -> tuple[int, str, str]:
    """Run ``slots move`` as a real process and signal it as soon as it says it is copying."""
    with subprocess.Popen(
        [str(INVSAGA), "slots", "move", slots, "--to", "2", "--batch-rows", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        assert process.stdout is not None
        printed = []
        for line in process.stdout:
            printed.append(line)
            if ": copying " in line:
                process.send_signal(stop)
                break
        out, err = process.communicate(timeout=60)
        return process.returncode, "".join(printed) + out, err


@pytest.mark.parametrize(
    ("stop", "source", "code"), [(signal.SIGTERM, 1, 143), (signal.SIGINT, 0, 130)], ids=["sigterm", "ctrl-c"]
)
async def test_a_stopped_move_says_it_is_resumable_and_resumes(
    deployment: Deployment, stop: signal.Signals, source: int, code: int
) -> None:
    d = deployment
    before = await _slot_map(d)
    slots = sorted({slot_of(sku) for sku in d.skus if before[slot_of(sku)] == source})
    ran = await asyncio.to_thread(_move_then_stop, d.env, ",".join(map(str, slots)), stop)
    assert ran[0] == code, ran
    assert "Traceback" not in ran[2]
    (line,) = ran[2].strip().splitlines()
    assert line.startswith("error: stopped: move ") and "is resumable: run `invsaga slots resume" in line
    (move,) = await SlotMover(d.databases).moves(open_only=True)
    assert move.phase in ("copying", "catching_up") and move.slots == slots
    assert await _slot_map(d) == before  # not flipped: the source still serves the slots
    await _check_every_sku(d, settled=False)  # mid-move: the target's partial copy is not its own
    resumed = await invsaga(d, "slots", "resume", str(move.move_id))
    assert resumed.code == 0, resumed.stderr
    assert f"move {move.move_id}: resuming from phase {move.phase}" in resumed.stdout
    assert f"move {move.move_id} done" in resumed.stdout
    after = await _slot_map(d)
    assert all(after[slot] == 2 for slot in slots)
    await _check_every_sku(d)


async def test_a_shard_that_owns_slots_cannot_be_removed(deployment: Deployment) -> None:
    d = deployment
    refused = await invsaga(d, "shards", "remove", "1")
    assert refused.code != 0 and "owns" in refused.error_line and "drain 1" in refused.error_line
    assert [s["state"] for s in (await _listed(d))["shards"]] == ["active"] * 3
    unknown = await invsaga(d, "shards", "remove", "7")
    assert unknown.code == 2 and "there is no shard 7" in unknown.error_line


async def test_drain_moves_every_slot_away_then_remove_retires_the_shard(deployment: Deployment) -> None:
    d = deployment
    hook = await register_webhook(d.databases.core, url="http://127.0.0.1:9/", event_types=["stock.changed"])
    late = next(sku for sku in (f"LATE-{n}" for n in range(100)) if d.databases.router.shard_of(sku) == 0)
    await d.store.receive(late, "main", 1, idempotency_key="late-receipt")
    drained = await invsaga(d, "shards", "drain", "0")
    assert drained.code == 0, drained.stderr
    after = await _slot_map(d)
    assert 0 not in after
    assert drained.stdout.splitlines()[-1].startswith("shard 0 drained") and "it owns 0" in drained.stdout
    assert [s["state"] for s in (await _listed(d))["shards"]] == ["draining", "active", "active"]
    async with d.databases.shards[0].connect() as conn:
        assert not await conn.scalar(
            text("SELECT count(*) FROM stock_levels WHERE sku = ANY (:s)"), {"s": d.skus}
        )
    await _check_every_sku(d)

    # The webhook has not got the shard's last stock event (no relay runs here): once the shard is
    # removed no relay would read it, so remove refuses until it is delivered, or is forced.
    refused = await invsaga(d, "shards", "remove", "0")
    assert refused.code != 0 and "not all delivered yet (1 to webhook" in refused.error_line
    assert hook.id in refused.error_line and "--force" in refused.error_line
    assert (await _listed(d))["shards"][0]["state"] == "draining"
    removed = await invsaga(d, "shards", "remove", "0", "--force")
    assert removed.code == 0, removed.stderr
    assert "data was not deleted" in removed.stdout and "can be retired" in removed.stdout
    listed = await _listed(d)
    assert [(s["state"], s["slots"]) for s in listed["shards"]] == [
        ("removed", 0),
        ("active", after.count(1)),
        ("active", after.count(2)),
    ]
    await _check_every_sku(d)
    assert d.databases.serving() == [1, 2]
    balanced = await invsaga(d, "shards", "rebalance", "--dry-run")
    assert "would move 0 slot(s)" in balanced.stdout  # the drain left the other two even
    async with d.databases.core.begin() as conn:
        await conn.execute(text("DELETE FROM webhooks WHERE id = :id"), {"id": hook.id})
