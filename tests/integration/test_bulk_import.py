"""Bulk import against real shards: set semantics, ledger rows, refusal of bad files, and races."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import text

from invsaga.domain.errors import InvalidInput
from invsaga.domain.stock import DEFAULT_LOCATION, HoldState, Location, Sku
from invsaga.store.bulk_import import ImportResult, import_stock
from invsaga.store.databases import Databases
from invsaga.store.stock import StockStore
from invsaga.store.stock_csv import LOCATION_RULE, SKU_RULE, CodeRule
from tests.helpers import assert_clean_audit, request, rows_on_every_shard, skus_on_shard, stock_up


def write_csv(directory: Path, rows: list[str], name: str = "stock.csv") -> Path:
    path = directory / name
    path.write_text("\n".join(["sku,location,quantity", *rows]) + "\n", encoding="utf-8")
    return path


async def levels_by_key(store: StockStore, skus: list[str]) -> dict[tuple[str, str], tuple[int, int, int]]:
    found = await store.get_many(skus)
    return {
        (lv.sku, lv.location): (lv.on_hand, lv.reserved, lv.version) for lvs in found.values() for lv in lvs
    }


async def import_movements(
    databases: Databases, batch_id: str
) -> dict[tuple[str, str], tuple[int, int, str]]:
    """Ledger rows of one import batch, by stock row: (delta_on_hand, delta_reserved, idempotency_key)."""
    rows = await rows_on_every_shard(
        databases,
        "SELECT sku, location, delta_on_hand, delta_reserved, idempotency_key"
        " FROM stock_movements WHERE reason = 'import' AND reference = :batch",
        batch=batch_id,
    )
    return {(r.sku, r.location): (r.delta_on_hand, r.delta_reserved, r.idempotency_key) for r in rows}


async def table_snapshot(databases: Databases) -> list[list[tuple[object, ...]]]:
    snapshot = []
    for engine in databases.shards:
        async with engine.connect() as conn:
            levels = (await conn.execute(text("SELECT * FROM stock_levels ORDER BY sku, location"))).all()
            ledger = (await conn.execute(text("SELECT * FROM stock_movements ORDER BY id"))).all()
        snapshot.append([tuple(r) for r in [*levels, *ledger]])
    return snapshot


async def test_import_sets_levels_and_writes_one_ledger_row_per_change(
    store, databases, clean_shards, tmp_path
):
    a0, b0 = skus_on_shard(store.router, 0, 2)
    (a1,) = skus_on_shard(store.router, 1, 1)
    await stock_up(store, b0, 10)  # exists: set down to 4
    wanted = {(a0, "main"): 7, (a0, "east"): 3, (b0, "main"): 4, (a1, DEFAULT_LOCATION): 12}
    path = write_csv(tmp_path, [f"{a0},main,7", f"{a0},east,3", f"{b0},main,4", f"{a1},,12"])

    result = await import_stock(databases, path)

    assert (result.rows_read, result.applied, result.unchanged, result.rejected) == (len(wanted), 4, 0, [])
    levels = await levels_by_key(store, [a0, b0, a1])
    assert {key: on_hand for key, (on_hand, _, _) in levels.items()} == wanted
    assert levels[(b0, "main")][2] == 2  # the receive made version 1; the import bumped it once
    movements = await import_movements(databases, result.batch_id)
    old = {(b0, "main"): 10}
    assert movements == {
        key: (qty - old.get(key, 0), 0, f"import:{result.batch_id}:{key[0]}:{key[1]}")
        for key, qty in wanted.items()
    }
    await assert_clean_audit(databases)


async def test_reimport_changes_only_rows_whose_quantity_differs(store, databases, clean_shards, tmp_path):
    skus = skus_on_shard(store.router, 0, 2) + skus_on_shard(store.router, 1, 2)
    first = await import_stock(
        databases, write_csv(tmp_path, [f"{s},main,{i + 5}" for i, s in enumerate(skus)])
    )
    before = await levels_by_key(store, skus)
    changed = {skus[0]: 1, skus[2]: 40}
    rows = [f"{s},main,{changed.get(s, i + 5)}" for i, s in enumerate(skus)]

    second = await import_stock(databases, write_csv(tmp_path, rows, "again.csv"))

    assert (first.applied, second.applied, second.unchanged) == (
        len(skus),
        len(changed),
        len(skus) - len(changed),
    )
    after = await levels_by_key(store, skus)
    for sku in skus:
        old_version = before[(sku, "main")][2]
        expected = (changed[sku], 0, old_version + 1) if sku in changed else before[(sku, "main")]
        assert after[(sku, "main")] == expected
    movements = await import_movements(databases, second.batch_id)
    assert {key[0]: delta for key, (delta, _, _) in movements.items()} == {
        sku: qty - before[(sku, "main")][0] for sku, qty in changed.items()
    }
    await assert_clean_audit(databases)


async def test_rows_below_reserved_are_rejected_by_line_and_the_rest_apply(
    store, databases, clean_shards, tmp_path
):
    held0, free0 = skus_on_shard(store.router, 0, 2)
    (held1,) = skus_on_shard(store.router, 1, 1)
    for sku in (held0, free0, held1):
        await stock_up(store, sku, 10)
    await store.reserve(0, request("o-imp-0", (held0, 6)))
    await store.reserve(1, request("o-imp-1", (held1, 3)))
    path = write_csv(tmp_path, [f"{free0},main,2", f"{held0},main,5", f"{held1},main,3", f"{held1},east,9"])

    result = await import_stock(databases, path)

    assert [(r.line, r.sku, r.quantity, r.reserved) for r in result.rejected] == [(3, held0, 5, 6)]
    assert "below" in result.rejected[0].reason
    assert (result.applied, result.unchanged) == (3, 0)
    levels = await levels_by_key(store, [held0, free0, held1])
    assert levels[(held0, "main")][:2] == (10, 6)
    assert levels[(held1, "main")][:2] == (3, 3)  # equal to reserved is allowed
    assert levels[(free0, "main")][0] == 2 and levels[(held1, "east")][0] == 9
    await assert_clean_audit(databases)


async def test_a_file_with_any_malformed_row_is_refused_whole(store, databases, clean_shards, tmp_path):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await stock_up(store, sku, 10)
    too_long = "S" * (SKU_RULE.max_length + 1)
    bad_lines = {
        3: "bad sku!,main,1",
        4: f"{sku},main,-3",
        5: f"{sku},north,2.5",
        6: f"{sku},main",
        7: f"{too_long},main,1",
        8: f"{sku},-west,1",
        10: f"{sku},,4",  # duplicate of line 2 once the empty location means "main"
        11: f"{sku},east,99999999999999999999",
    }
    rows = [bad_lines.get(line, f"{sku}-{line},main,{line}") for line in range(2, 12)]
    rows[0] = f"{sku},main,1"
    before = await table_snapshot(databases)

    with pytest.raises(InvalidInput) as refused:
        # Small chunks, so the duplicate is found across chunks and the staging COPY really ran.
        await import_stock(databases, write_csv(tmp_path, rows), chunk_rows=2)

    problems = refused.value.details["problems"]
    assert [p["line"] for p in problems] == sorted(bad_lines)
    assert refused.value.details["problem_count"] == len(bad_lines)
    assert "line 3" in refused.value.message and "nothing was changed" in refused.value.message
    assert "duplicate of line 2" in next(p["reason"] for p in problems if p["line"] == 10)
    assert await table_snapshot(databases) == before


@pytest.mark.parametrize(
    ("content", "line"),
    [("", 1), ("sku;location;quantity\nA,main,1\n", 1), ("sku,location,quantity\nA,main,1\n\xff\n", 3)],
)
async def test_unreadable_files_are_refused_with_a_line_number(
    databases, clean_shards, tmp_path, content, line
):
    path = tmp_path / "odd.csv"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(InvalidInput, match=f"line {line}:"):
        await import_stock(databases, path)


async def test_progress_is_reported_per_chunk(store, databases, clean_shards, tmp_path):
    skus = skus_on_shard(store.router, 0, 5) + skus_on_shard(store.router, 1, 4)
    seen: list[int] = []
    result = await import_stock(
        databases, write_csv(tmp_path, [f"{s},main,1" for s in skus]), on_progress=seen.append, chunk_rows=4
    )
    assert seen == sorted(seen) and seen[-1] == result.rows_read == len(skus)
    assert len(seen) == -(-len(skus) // 4)


@given(st.text(alphabet=st.sampled_from("aZ09._:/-! \n\té"), max_size=70))
def test_the_fast_code_check_agrees_with_the_domain_types(value: str) -> None:
    for rule, domain_type in ((SKU_RULE, Sku), (LOCATION_RULE, Location)):
        try:
            TypeAdapter(domain_type).validate_python(value)
            valid = True
        except ValidationError:
            valid = False
        assert rule.accepts(value) is valid


def test_a_code_type_without_a_pattern_is_refused() -> None:
    with pytest.raises(TypeError):
        CodeRule(str, "plain")


async def test_a_row_created_concurrently_is_relocked_and_its_delta_is_exact(store, databases, clean_shards):
    (sku,) = skus_on_shard(store.router, 0, 1)
    shard = databases.shards[0]
    async with shard.connect() as rival:
        # Another writer creates the row (with its ledger row) but has not committed when the import
        # plans, so the import sees it as new and must not overwrite it with a delta computed from 0.
        await rival.execute(
            text(
                "INSERT INTO stock_levels (sku, location, on_hand, reserved, version)"
                " VALUES (:s, 'main', 30, 0, 1)"
            ),
            {"s": sku},
        )
        await rival.execute(
            text(
                "INSERT INTO stock_movements (sku, location, delta_on_hand, delta_reserved, reason,"
                " reference, idempotency_key) VALUES (:s, 'main', 30, 0, 'receive', 'rival', :k)"
            ),
            {"s": sku, "k": f"receive:rival-{sku}"},
        )
        load = asyncio.create_task(import_stock(databases, ["sku,location,quantity", f"{sku},main,12"]))
        await wait_for_lock_waiter(databases)
        await rival.commit()
        result = await load

    assert (result.applied, result.unchanged) == (1, 0)
    [level] = await store.get(sku)
    assert (level.on_hand, level.version) == (12, 2)
    assert (await import_movements(databases, result.batch_id))[(sku, "main")][0] == 12 - 30
    await assert_clean_audit(databases)


async def wait_for_lock_waiter(databases: Databases) -> None:
    """Return once some transaction on shard 0 is blocked on a lock."""
    async with databases.shards[0].connect() as conn:
        for _ in range(500):
            if await conn.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted")):
                return
            await asyncio.sleep(0.02)
    raise AssertionError("nothing ever waited for a lock")


async def test_imports_racing_reservations_keep_every_invariant(store, databases, clean_shards, tmp_path):
    """Imports set every row to a new quantity, some below what the racing holds reserve; after the
    race the stock must equal exactly what the import results and reserve outcomes say happened."""
    rng = random.Random(7)
    skus = skus_on_shard(store.router, 0, 3) + skus_on_shard(store.router, 1, 3)
    quantities = [60, 4, 35, 2, 80, 9, 50, 1, 70, 30]
    lines = {line: sku for line, sku in enumerate(skus, start=2)}

    async def importer() -> list[tuple[int, ImportResult]]:
        results = []
        for round_, qty in enumerate(quantities):
            path = write_csv(tmp_path, [f"{sku},main,{qty}" for sku in skus], f"round-{round_}.csv")
            results.append((qty, await import_stock(databases, path)))
        return results

    async def reserver(n: int) -> tuple[str, int, bool]:
        sku, qty = rng.choice(skus), rng.randint(1, 3)
        await asyncio.sleep(rng.random() * 0.3)
        outcome = await store.reserve(store.router.shard_of(sku), request(f"o-race-{n}", (sku, qty)))
        held = outcome.state is HoldState.HELD
        if held and n % 3 == 0:
            await store.release(store.router.shard_of(sku), f"o-race-{n}")
            held = False
        return sku, qty, held

    first = await import_stock(databases, write_csv(tmp_path, [f"{sku},main,40" for sku in skus], "seed.csv"))
    assert first.applied == len(skus)
    importing = asyncio.create_task(importer())
    holds = await asyncio.gather(*(reserver(n) for n in range(300)))
    imports = await importing

    expected_on_hand = dict.fromkeys(skus, 40)
    for qty, result in imports:
        rejected = {lines[r.line] for r in result.rejected}
        assert result.applied + result.unchanged + len(result.rejected) == result.rows_read == len(skus)
        movements = await import_movements(databases, result.batch_id)
        assert len(movements) == result.applied
        for sku in skus:
            if sku not in rejected:
                expected_on_hand[sku] = qty
    expected_reserved = dict.fromkeys(skus, 0)
    for sku, qty, held in holds:
        expected_reserved[sku] += qty if held else 0
    levels = await levels_by_key(store, skus)
    assert {sku: levels[(sku, "main")][:2] for sku in skus} == {
        sku: (expected_on_hand[sku], expected_reserved[sku]) for sku in skus
    }
    assert any(result.rejected for _, result in imports), "the race never pushed an import below reserved"
    assert sum(held for _, _, held in holds) > 0
    await assert_clean_audit(databases)
