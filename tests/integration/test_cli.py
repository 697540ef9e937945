"""The real ``invsaga`` console script, run as a subprocess against the test shards."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from temporalio.service import RPCError

from invsaga.dev.ports import free_port
from invsaga.store.migrations import definitions_for, latest_version
from tests.helpers import in_catalog, request, skus_on_shard, stock_up

INVSAGA = Path(sys.executable).with_name("invsaga")

pytestmark = pytest.mark.usefixtures("clean_shards")


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def error_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, f"expected one error line, got: {self.stderr!r}"
        return lines[0]


def cli_env(shard_dsns: list[str], core_dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVSAGA_")}
    return {**env, "INVSAGA_SHARD_DSNS": ",".join(shard_dsns), "INVSAGA_CORE_DSN": core_dsn}


@pytest.fixture
def invsaga(settings):
    """Run ``invsaga ARGS`` against the test fleet (or ``env``), never accepting a traceback."""

    async def run_cli(*args: str, env: dict[str, str] | None = None) -> CliResult:
        done = await asyncio.to_thread(
            subprocess.run,
            [str(INVSAGA), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env or cli_env(settings.shard_dsns, settings.core_dsn),
        )
        assert "Traceback" not in done.stderr, done.stderr
        return CliResult(done.returncode, done.stdout, done.stderr)

    return run_cli


async def test_migrate_twice_reports_versions_and_the_second_run_is_a_no_op(pg_fleet, invsaga):
    tag = uuid.uuid4().hex[:8]
    shard_dsns = [server.create_database(f"migrate_{tag}") for server in pg_fleet.shards]
    core_dsn = pg_fleet.core.create_database(f"migrate_{tag}")
    env = cli_env(shard_dsns, core_dsn)
    expected_after = [latest_version("core")] + [latest_version("shard")] * len(shard_dsns)

    first = await invsaga("db", "migrate", "--json", env=env)
    second = await invsaga("db", "migrate", env=env)
    again = await invsaga("db", "migrate", "--json", env=env)

    assert first.code == second.code == again.code == 0
    assert [r["database"] for r in first.json()] == ["core database"] + [f"shard {i}" for i in range(2)]
    assert [(r["before"], r["after"]) for r in first.json()] == [(0, v) for v in expected_after]
    assert [(r["before"], r["after"]) for r in again.json()] == [(v, v) for v in expected_after]
    core_definitions = [d.name for d in definitions_for("core")]
    shard_definitions = [d.name for d in definitions_for("shard")]
    assert [r["definitions"] for r in first.json()] == [core_definitions] + [shard_definitions] * len(
        shard_dsns
    )
    assert [r["definitions"] for r in again.json()] == [[]] * len(expected_after)
    assert second.stdout.count("up to date") == len(expected_after)
    fresh = await invsaga("stock", "get", "NEVER-STOCKED", env=env)
    assert fresh.code == 3  # migrated and usable: the sku is simply unknown


async def test_receive_set_and_get_round_trip(store, databases, invsaga):
    (sku,) = skus_on_shard(store.router, 1, 1, prefix="CLI")
    await in_catalog(databases, sku)

    received = await invsaga("stock", "receive", sku, "10", "--key", "po-77", "--json")
    replayed = await invsaga("stock", "receive", sku, "10", "--key", "po-77", "--json")
    lowered = await invsaga("stock", "set", sku, "4", "--json")
    east = await invsaga("stock", "set", sku, "3", "--location", "east")
    shown = await invsaga("stock", "get", sku, "--json")
    table = await invsaga("stock", "get", sku)

    assert [r.code for r in (received, replayed, lowered, east, shown, table)] == [0] * 6
    assert received.json()["locations"][0]["on_hand"] == replayed.json()["locations"][0]["on_hand"] == 10
    assert (lowered.json()["locations"][0]["on_hand"], lowered.json()["locations"][0]["version"]) == (4, 2)
    levels = await store.get(sku)
    assert shown.json() == {
        "sku": sku,
        "locations": [{**lv.model_dump(), "available": lv.available} for lv in levels],
        "total": {
            "on_hand": sum(lv.on_hand for lv in levels),
            "reserved": sum(lv.reserved for lv in levels),
            "available": sum(lv.available for lv in levels),
        },
    }
    assert {lv.location: lv.on_hand for lv in levels} == {"main": 4, "east": 3}
    assert "total" in table.stdout and sku in table.stdout


async def test_set_with_a_stale_version_is_refused_and_changes_nothing(store, invsaga):
    (sku,) = skus_on_shard(store.router, 0, 1, prefix="CLI")
    await stock_up(store, sku, 5)
    seen = (await invsaga("stock", "get", sku, "--json")).json()["locations"][0]["version"]
    moved = await store.adjust(sku, "main", 7, expected_version=seen, idempotency_key=f"other-{sku}")

    stale = await invsaga("stock", "set", sku, "2", "--expected-version", str(seen))

    assert stale.code == 5
    assert "version" in stale.error_line and str(moved.version) in stale.error_line
    assert await store.get(sku) == [moved]


async def test_set_below_reserved_is_refused(store, invsaga):
    (sku,) = skus_on_shard(store.router, 0, 1, prefix="CLI")
    await stock_up(store, sku, 9)
    await store.reserve(0, request(f"o-{sku}", (sku, 6)))
    refused = await invsaga("stock", "set", sku, "5")
    assert refused.code == 5 and "reserved" in refused.error_line
    [level] = await store.get(sku)
    assert (level.on_hand, level.reserved) == (9, 6)


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["stock", "set", "CLI-NEG", "-5"], 2, "quantity"),
        (["stock", "receive", "CLI-ZERO", "0"], 2, "quantity"),
        (["stock", "get", "bad sku!"], 2, "sku"),
        (["stock", "set", "CLI-X", "1", "--location", "no place"], 2, "location"),
        (["stock", "set", "CLI-X", "1", "--expected-version", str(2**64)], 2, "version"),
        (["stock", "get", "CLI-NEVER-RECEIVED"], 3, "unknown sku"),
        (["stock", "import", "/nonexistent/stock.csv"], 2, "cannot read"),
    ],
)
async def test_bad_input_is_one_line_and_its_own_exit_code(invsaga, args, code, needle):
    result = await invsaga(*args)
    assert result.code == code
    assert result.error_line.startswith("error:") and needle in result.error_line


async def test_receipts_past_bigint_are_one_line_and_exit_2(store, databases, invsaga):
    (sku,) = skus_on_shard(store.router, 0, 1, prefix="CLI")
    await in_catalog(databases, sku)
    first = await invsaga("stock", "receive", sku, str(2**62))
    overflow = await invsaga("stock", "receive", sku, str(2**62))
    beyond = await invsaga("stock", "receive", sku, str(2**64))

    assert first.code == 0
    assert overflow.code == 2 and "on_hand" in overflow.error_line and "SQL" not in overflow.stderr
    assert beyond.code == 2 and "quantity" in beyond.error_line
    [level] = await store.get(sku)
    assert (level.on_hand, level.version) == (2**62, 1)


# ANY-1 is on shard 1, the down one: a SKU on shard 0 still reads (test_shard_down_reads.py).
@pytest.mark.parametrize("args", [["stock", "get", "ANY-1"], ["db", "migrate"], ["audit"]])
async def test_an_unreachable_shard_is_exit_69(settings, invsaga, args):
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/inventory"
    env = cli_env([settings.shard_dsns[0], dead], settings.core_dsn)
    result = await invsaga(*args, env=env)
    assert result.code == 69
    assert "shard 1" in result.error_line and "unreachable" in result.error_line


@asynccontextmanager
async def worker_with_shard_1_down(settings, temporal_client, databases):
    """A worker whose shard 1 refuses connections, as a stopped Postgres does; yields its task queue."""
    from invsaga.payments.client import PaymentClient
    from invsaga.store.batching import ReservationBatcher
    from invsaga.store.databases import Databases, make_engine
    from invsaga.store.stock import StockStore
    from workers.worker import WorkerDeps, build_worker

    dead = make_engine(make_url(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/inventory"))
    down = Databases(shards=[databases.shards[0], dead], core=databases.core, router=databases.router)
    store = StockStore(down)
    deps = WorkerDeps(down, store, ReservationBatcher(store), PaymentClient(settings.payment_url, timeout=1))
    task_queue = f"test-{uuid.uuid4()}"
    try:
        async with build_worker(temporal_client, settings, deps, task_queue=task_queue):
            yield task_queue
    finally:
        await deps.batcher.aclose()
        await deps.payments.aclose()
        await dead.dispose()


async def test_checkout_with_a_shard_down_exits_69_within_its_timeout(
    saga_settings, temporal_client, databases, store, invsaga
):
    from invsaga.domain.checkout import workflow_id_for
    from invsaga.store.catalog import Product, upsert_products

    (sku,) = skus_on_shard(store.router, 1, 1, prefix="CLI")
    await upsert_products(databases.core, [Product(sku=sku, name="mug", price=Decimal("5.00"))])
    await stock_up(store, sku, 3)
    order_id = f"cli-down-{uuid.uuid4().hex[:8]}"
    async with worker_with_shard_1_down(saga_settings, temporal_client, databases) as task_queue:
        env = {
            **cli_env(saga_settings.shard_dsns, saga_settings.core_dsn),
            "INVSAGA_TEMPORAL_ADDRESS": saga_settings.temporal_address,
            "INVSAGA_TASK_QUEUE": task_queue,
        }
        started = time.monotonic()
        result = await invsaga("checkout", f"{sku}:1", "--order-id", order_id, "--timeout", "5", env=env)
        elapsed = time.monotonic() - started
        with contextlib.suppress(RPCError):  # none started if the CLI refused its arguments
            await temporal_client.get_workflow_handle(workflow_id_for(order_id)).terminate("test over")

    assert result.code == 69, result
    assert "may still be running" in result.error_line and order_id in result.error_line
    assert elapsed < 5 + 10  # the deadline, plus the interpreter's start-up
    assert [(lv.on_hand, lv.reserved) for lv in await store.get(sku)] == [(3, 0)]


async def test_import_then_get(store, databases, invsaga, tmp_path):
    skus = skus_on_shard(store.router, 0, 2, prefix="CLI") + skus_on_shard(store.router, 1, 2, prefix="CLI")
    await in_catalog(databases, *skus)
    wanted = {sku: 10 + n for n, sku in enumerate(skus)}
    path = tmp_path / "stock.csv"
    path.write_text("sku,location,quantity\n" + "".join(f"{s},,{q}\n" for s, q in wanted.items()))

    imported = await invsaga("stock", "import", str(path), "--json")
    text_run = await invsaga("stock", "import", str(path))
    shown = await asyncio.gather(*(invsaga("stock", "get", sku, "--json") for sku in skus))

    assert imported.code == 0 and text_run.code == 0
    report = imported.json()
    assert (report["rows_read"], report["applied"], report["unchanged"], report["rejected"]) == (
        len(wanted),
        len(wanted),
        0,
        [],
    )
    assert f"{len(wanted)} unchanged" in text_run.stdout
    assert {r.json()["sku"]: r.json()["total"]["on_hand"] for r in shown} == wanted


async def test_import_refuses_a_file_with_a_malformed_row_on_line_4(store, databases, invsaga, tmp_path):
    skus = skus_on_shard(store.router, 0, 3, prefix="CLI")
    path = tmp_path / "bad.csv"
    path.write_text(f"sku,location,quantity\n{skus[0]},main,5\n{skus[1]},main,6\n{skus[2]},main,lots\n")

    refused = await invsaga("stock", "import", str(path))

    assert refused.code == 2
    assert "line 4" in refused.error_line and "lots" in refused.error_line
    assert await store.get_many(skus) == {}
    async with databases.shards[0].connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM stock_movements")) == 0


async def test_import_lists_rows_below_reserved_and_exits_5(store, databases, invsaga, tmp_path):
    held, free = skus_on_shard(store.router, 1, 2, prefix="CLI")
    await in_catalog(databases, held, free)
    await stock_up(store, held, 8)
    await store.reserve(1, request(f"o-{held}", (held, 5)))
    path = tmp_path / "low.csv"
    path.write_text(f"sku,location,quantity\n{free},main,3\n{held},main,4\n")

    result = await invsaga("stock", "import", str(path))

    assert result.code == 5
    assert f"line 3: {held} at main" in result.stdout and "1 applied" in result.stdout
    levels = await store.get_many([held, free])
    assert (levels[held][0].on_hand, levels[free][0].on_hand) == (8, 3)


async def test_audit_is_clean_then_reports_tampering(store, databases, invsaga):
    (sku,) = skus_on_shard(store.router, 0, 1, prefix="CLI")
    await stock_up(store, sku, 10)
    clean, clean_json = await asyncio.gather(invsaga("audit"), invsaga("audit", "--json"))
    assert clean.code == 0 and clean_json.code == 0
    assert "clean" in clean.stdout and clean_json.json()["clean"] is True

    async with databases.shards[0].begin() as conn:
        await conn.execute(text("UPDATE stock_levels SET reserved = 3 WHERE sku = :s"), {"s": sku})
    dirty, dirty_json = await asyncio.gather(invsaga("audit"), invsaga("audit", "--json"))

    assert dirty.code == 1 and dirty_json.code == 1
    assert f"invariant 2 violated on shard 0: sku {sku} at main: reserved=3 held=0" in dirty.stdout
    violations = {
        (v["invariant"], v["shard"], v["sku"], v["location"]) for v in dirty_json.json()["violations"]
    }
    assert violations == {(2, 0, sku, "main"), (3, 0, sku, "main")}
    assert dirty_json.json()["clean"] is False


# --- payload keys and the codec server --------------------------------------------------------------


async def test_payload_key_new_prints_an_entry_and_how_to_rotate(invsaga):
    from invsaga.temporal.codec import PayloadKeys

    made, named, bad = await asyncio.gather(
        invsaga("payload-key", "new"),
        invsaga("payload-key", "new", "--id", "2027-q1"),
        invsaga("payload-key", "new", "--id", "no spaces"),
    )
    assert made.code == 0 and len(made.stdout.splitlines()) == 1, "stdout is the entry alone"
    [key_id] = PayloadKeys.parse(made.stdout).ids
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", key_id)  # today's date
    assert "FIRST" in made.stderr and "keep every older" in made.stderr
    assert PayloadKeys.parse(named.stdout).ids == ["2027-q1"]
    assert bad.code == 2 and "payload key id" in bad.error_line


def _codec_env(settings, **variables: str) -> dict[str, str]:
    return {**cli_env(settings.shard_dsns, settings.core_dsn), **variables}


PAYLOAD_KEYS = "k1:" + base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    ("variables", "args", "needle"),
    [
        ({}, [], "no payload keys"),
        ({"INVSAGA_PAYLOAD_KEYS": "k1:not-base64!"}, [], "not base64"),
        ({"INVSAGA_PAYLOAD_KEYS": PAYLOAD_KEYS}, [], "no admin key"),
        (
            {"INVSAGA_PAYLOAD_KEYS": PAYLOAD_KEYS},
            ["--dev-without-credential", "--host", "0.0.0.0"],
            "loopback",
        ),
        (
            {"INVSAGA_PAYLOAD_KEYS": PAYLOAD_KEYS},
            ["--dev-without-credential", "--ui-origin", "ui:1"],
            "scheme",
        ),
    ],
    ids=["no-keys", "bad-keys", "no-admin-key", "dev-mode-on-all-interfaces", "bad-origin"],
)
async def test_the_codec_server_refuses_to_start_misconfigured(settings, invsaga, variables, args, needle):
    result = await invsaga("codec-server", *args, env=_codec_env(settings, **variables))
    assert result.code == 78 and needle in result.error_line


async def test_the_codec_server_serves_and_asks_for_a_key(settings):
    from invsaga.api.auth import Scope, key_entry, new_key

    port = free_port()
    env = _codec_env(
        settings, INVSAGA_PAYLOAD_KEYS=PAYLOAD_KEYS, INVSAGA_API_KEYS=key_entry(Scope.ADMIN, new_key())
    )
    server = await asyncio.create_subprocess_exec(
        str(INVSAGA),
        "codec-server",
        "--port",
        str(port),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            for _ in range(600):  # 30 s: a busy machine imports slowly
                with contextlib.suppress(httpx.TransportError):
                    health = await http.get("/healthz")
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the codec server did not start")
            assert health.json() == {"status": "ok"}
            refused = await http.post("/decode", json={"payloads": []})
            assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 15)
