"""A shard's Postgres server stopped: only that shard's SKUs fail. Reads of the other shards' SKUs go on
through the store, the CLI (``invsaga stock get``) and the HTTP API (one SKU, and the batch read, which
names the unreachable SKUs as ``unavailable``), and a process started while the shard is down still
starts. A dedicated fleet, so the session's shared one is never stopped."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from activities.inventory import InventoryActivities
from invsaga.api.app import create_app
from invsaga.dev.asgi_thread import ThreadedAsgiServer
from invsaga.dev.postgres import PgFleet, start_fleet
from invsaga.domain.errors import ShardUnavailable
from invsaga.domain.stock import ReserveRequest, StockLine
from invsaga.settings import Settings, load_settings
from invsaga.store.databases import Databases, migrate_all
from invsaga.store.stock import StockStore
from tests.helpers import assert_clean_audit, catalog, skus_on_shard
from tests.integration.api_fixtures import API_KEYS_SETTING, CHECKOUT, assert_problem

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def own_fleet() -> Iterator[PgFleet]:
    fleet = start_fleet(2)
    try:
        yield fleet
    finally:
        fleet.stop()


async def _the_sweeper_sweeps_the_shards_that_answer(store: StockStore, sku: str) -> None:
    """A down shard is reported, not raised: the sweep of the others completes, so a shard outage does
    not turn every scheduled sweeper run into a FAILED workflow (the next run sweeps it)."""
    await store.reserve(0, ReserveRequest(order_id=f"stale-{sku}", lines=[StockLine(sku=sku, quantity=1)],
                                          ttl_seconds=1))  # fmt: skip
    await asyncio.sleep(1.2)
    swept = await InventoryActivities(store).expire_holds()
    assert (swept.expired_per_shard, swept.unavailable_shards) == ([1, 0], [1])


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVSAGA_")}
    env |= {"INVSAGA_SHARD_DSNS": ",".join(settings.shard_dsns), "INVSAGA_CORE_DSN": settings.core_dsn}
    return subprocess.run(
        [sys.executable, "-m", "invsaga", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def test_with_a_shard_down_the_other_shards_skus_still_read(own_fleet, temporal_server):
    settings = load_settings(
        shard_dsns=",".join(own_fleet.shard_dsns),
        core_dsn=own_fleet.core_dsn,
        temporal_address=temporal_server.address,
        api_keys=API_KEYS_SETTING,
    )
    await migrate_all(settings)
    databases = await Databases.open(settings)
    try:
        store = StockStore(databases)
        (healthy,) = skus_on_shard(store.router, 0, 1, prefix="UP")
        never_stocked = skus_on_shard(store.router, 0, 2, prefix="NONE")[1]
        (lost,) = skus_on_shard(store.router, 1, 1, prefix="DOWN")
        await catalog(databases, store, (healthy, 5), (lost, 7))
    finally:
        await databases.close()

    own_fleet.shards[1].stop()
    try:
        # Opening checks every shard that answers; the one that does not no longer fails the process.
        databases = await Databases.open(settings)
        try:
            store = StockStore(databases)
            assert [lv.on_hand for lv in await store.get(healthy)] == [5]
            with pytest.raises(ShardUnavailable):
                await store.get(lost)
            found, down = await store.get_many_reachable([healthy, lost])
            assert list(found) == [healthy]
            assert [error.details["skus"] for error in down] == [[lost]]
            with pytest.raises(ShardUnavailable):
                await store.get_many([healthy, lost])
            await _the_sweeper_sweeps_the_shards_that_answer(store, healthy)
        finally:
            await databases.close()

        up, gone = await asyncio.gather(
            asyncio.to_thread(_cli, settings, "stock", "get", healthy, "--json"),
            asyncio.to_thread(_cli, settings, "stock", "get", lost),
        )
        assert up.returncode == 0, up.stderr
        assert '"on_hand": 5' in up.stdout
        assert gone.returncode == 69
        [line] = gone.stderr.splitlines()
        assert line.startswith("error: shard 1 is unreachable")

        # The API starts with the shard down, and answers what it can.
        async with (
            ThreadedAsgiServer(create_app(settings), name="API") as server,
            httpx.AsyncClient(base_url=server.url, timeout=30) as http,
        ):
            batch = f"/v1/stock?sku={healthy}&sku={lost}&sku={never_stocked}"
            answers = await asyncio.gather(*(http.get(batch, headers=CHECKOUT) for _ in range(20)))
            assert {a.status_code for a in answers} == {200}, answers[0].text
            for answer in answers:
                body = answer.json()
                assert [item["sku"] for item in body["items"]] == [healthy]
                assert (body["unknown"], body["unavailable"]) == ([never_stocked], [lost])
            assert (await http.get(f"/v1/stock/{healthy}", headers=CHECKOUT)).status_code == 200
            assert_problem(await http.get(f"/v1/stock/{lost}", headers=CHECKOUT), 503, "unavailable")
    finally:
        if not own_fleet.shards[1].running:
            own_fleet.shards[1].start(fsync=False)

    databases = await Databases.open(settings)
    try:
        found, down = await StockStore(databases).get_many_reachable([healthy, lost])
        assert (sorted(found), down) == (sorted([healthy, lost]), [])
        await assert_clean_audit(databases)
    finally:
        await databases.close()
