"""B-reshard: a rebalance from 2 to 3 shards of N SKUs (default 100,000) while checkouts run, against
the same checkout load in a window before the move, on the same servers in the same run.

The deployment is this run's own: three Postgres shard servers and a core server (fsync on), the first
two shards listed and filled by one bulk import, the third added with ``invsaga shards add`` before the
baseline (it owns no slots, so the baseline runs on two). A real Temporal dev server, a payment sandbox
process and a worker in this process, whose ``Databases`` watch the registry as a deployed worker's
do. Closed-loop callers run checkouts (1 to 3 lines over the traffic SKUs, tokens that succeed) from
before the baseline window until after the move, with ``invsaga shards rebalance`` run as its own
process, the way an operator runs it.

Reports:
- the move rate: SKUs copied / move seconds (``slot_moves``: planned to done), per move and overall;
- ``fence_ms`` per move (the mover's own measure of the final catch-up under the fence): median, max;
- checkout throughput and p99 latency during the move against the baseline before it (and after it,
  which says how much of a difference is the machine drifting);
- the p99 of the checkouts that touched a moving slot while its move's fence was up, and of those that
  touched a moving slot at any time of its move, against the baseline p99. A fence's window is taken
  from the rebalance's own line for it (``flipped: ..., fence F ms``), stamped as it was read.

    .venv/bin/python -m bench.reshard [--skus 100000] [--callers 16] [--baseline-seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from sqlalchemy import text

from bench.common import LoadResult, median, plot, write_result
from bench.stack import checkout_stack
from invsaga.client import CheckoutClient
from invsaga.domain.checkout import CheckoutLine, CheckoutRequest, CheckoutStatus
from invsaga.settings import Settings, load_settings
from invsaga.store.audit import audit
from invsaga.store.bulk_import import import_stock
from invsaga.store.catalog import Product, upsert_products
from invsaga.store.databases import Databases, migrate_all
from invsaga.store.routing import slot_of
from invsaga.temporal.configured import connect_configured
from workers.worker import WorkerDeps, build_worker

INVSAGA = Path(sys.executable).with_name("invsaga")
FILL_UNITS = 10
TRAFFIC_UNITS = 1_000_000
#: The longest one checkout of the load is waited for.
CHECKOUT_SECONDS = 60.0
_FLIPPED = re.compile(r"move (\d+): flipped: .*, fence ([0-9.]+) ms")


@dataclass(frozen=True)
class Checkout:
    """One checkout the load ran, in wall-clock seconds (``time.time()``, as the databases stamp)."""

    started: float
    ended: float
    slots: frozenset[int]
    confirmed: bool

    @property
    def ms(self) -> float:
        return (self.ended - self.started) * 1000


class Load:
    """Closed-loop callers, each starting a checkout and waiting for its end before the next."""

    def __init__(self, client: CheckoutClient, skus: Sequence[str], callers: int) -> None:
        self.client, self.skus, self.callers = client, list(skus), callers
        self.stop = asyncio.Event()
        self.done: list[Checkout] = []
        #: How each checkout that did not confirm ended: "order_id: status reason: detail".
        self.unconfirmed: list[str] = []
        self.errors: Counter[str] = Counter()
        #: Checkouts given up on (still running when their wait ran out), to be ended at the end.
        self.abandoned: list[str] = []
        self._tag = uuid.uuid4().hex[:8]

    def _request(self, caller: int, n: int) -> CheckoutRequest:
        # Deterministic per caller and number: lines spread over the traffic SKUs, 1 to 3 of them.
        first = (caller * 7919 + n * 104_729) % len(self.skus)
        count = 1 + (caller + n) % 3
        picked = [self.skus[(first + k * 613) % len(self.skus)] for k in range(count)]
        return CheckoutRequest(
            order_id=f"rb-{self._tag}-{caller}-{n}",
            customer_id="bench",
            lines=[CheckoutLine(sku=sku, quantity=1) for sku in dict.fromkeys(picked)],
            payment_token="tok_success",
        )

    async def caller(self, index: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            request = self._request(index, n)
            started = time.time()
            try:
                # Bounded: a checkout stuck on a step is counted (and the run not met), not waited for.
                async with asyncio.timeout(CHECKOUT_SECONDS):
                    await self.client.start(request)
                    result = await self.client.result(request.order_id)
            except Exception as exc:
                self.errors[type(exc).__name__] += 1
                self.abandoned.append(request.order_id)
                continue
            slots = frozenset(slot_of(line.sku) for line in request.lines)
            confirmed = result.status is CheckoutStatus.CONFIRMED
            if not confirmed:
                why = f"{result.status.value} {result.reason.value if result.reason else ''}"
                self.unconfirmed.append(f"{request.order_id}: {why}: {result.detail}")
            self.done.append(Checkout(started, time.time(), slots, confirmed))

    def started_within(self, start: float, end: float) -> list[Checkout]:
        return [c for c in self.done if start <= c.started < end]


class Narration:
    """The rebalance's output lines, each stamped with the wall-clock time it was read."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []

    def read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append((time.time(), line.rstrip("\n")))

    def fences(self) -> dict[int, tuple[float, float]]:
        """Each move's fence, as (start, end): its flip line, and the fence time it names before it."""
        found = {}
        for stamp, line in self.lines:
            if flipped := _FLIPPED.fullmatch(line):
                found[int(flipped.group(1))] = (stamp - float(flipped.group(2)) / 1000, stamp)
        return found

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


@dataclass(frozen=True)
class Move:
    move_id: int
    slots: frozenset[int]
    skus_copied: int
    fence_ms: float
    created: float
    done: float

    @property
    def seconds(self) -> float:
        return self.done - self.created


async def _invsaga(env: dict[str, str], *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(INVSAGA), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"invsaga {' '.join(args)} failed ({process.returncode}): {output.decode()}")
    return output.decode()


def _rebalance(env: dict[str, str]) -> Narration:
    """``invsaga shards rebalance`` to the end, its lines stamped as they come. Run on a thread of its
    own (``asyncio.to_thread``), so a busy event loop does not delay the stamps."""
    narration = Narration()
    with subprocess.Popen(
        [str(INVSAGA), "shards", "rebalance"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        assert process.stdout is not None
        narration.read(process.stdout)
    if process.returncode != 0:
        raise RuntimeError(f"the rebalance failed ({process.returncode}):\n{narration.text}")
    return narration


async def _fill(databases: Databases, skus: list[str], traffic: list[str]) -> float:
    """Every SKU by one bulk import; the traffic SKUs with stock that never runs out, and in the catalog."""
    started = time.perf_counter()
    units = dict.fromkeys(skus, FILL_UNITS) | dict.fromkeys(traffic, TRAFFIC_UNITS)
    await upsert_products(databases.core, [Product(sku=s, name=s, price=Decimal("1.00")) for s in traffic])
    result = await import_stock(
        databases, ["sku,location,quantity", *(f"{s},main,{n}" for s, n in units.items())]
    )
    if result.applied != len(skus) or result.rejected:
        raise RuntimeError(f"the import applied {result.applied} of {len(skus)} rows")
    return time.perf_counter() - started


async def _moves(databases: Databases) -> list[Move]:
    async with databases.core.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT move_id, slots, skus_copied, fence_ms, phase, created_at, updated_at"
                    " FROM slot_moves ORDER BY move_id"
                )
            )
        ).all()
    if any(row.phase != "done" for row in rows):
        raise RuntimeError(
            f"moves not done: {[(row.move_id, row.phase) for row in rows if row.phase != 'done']}"
        )
    return [
        Move(
            row.move_id,
            frozenset(row.slots),
            int(row.skus_copied),
            float(row.fence_ms or 0.0),
            row.created_at.timestamp(),
            row.updated_at.timestamp(),
        )
        for row in rows
    ]


async def _terminate(load: Load) -> None:
    """End the checkouts the load gave up on (they are counted as not confirmed already), so that the
    worker stops without waiting for their steps."""
    for order_id in load.abandoned:
        with contextlib.suppress(Exception):
            await load.client.handle(order_id).terminate(reason="bench.reshard: given up on")


def _p99(checkouts: Sequence[Checkout]) -> float | None:
    """None without a checkout to measure (a small run can have no checkout under any fence)."""
    if not checkouts:
        return None
    return LoadResult(callers=0, seconds=0, latencies_ms=[c.ms for c in checkouts]).percentile(99)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _window(load: Load, start: float, end: float) -> dict[str, Any]:
    started = load.started_within(start, end)
    result = LoadResult(callers=load.callers, seconds=end - start, latencies_ms=[c.ms for c in started])
    return result.summary()


def _touching(
    checkouts: Sequence[Checkout], windows: list[tuple[frozenset[int], float, float]]
) -> list[Checkout]:
    """The checkouts that, while one of ``windows`` was open, were running with a line in its slots."""
    return [
        c
        for c in checkouts
        if any(c.slots & slots and c.started < end and c.ended > start for slots, start, end in windows)
    ]


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def _run(
    settings: Settings, env: dict[str, str], third_dsn: str, args: argparse.Namespace
) -> dict[str, Any]:
    await migrate_all(settings)
    databases = await Databases.open(settings)
    try:
        skus = [f"RB-{n:07d}" for n in range(args.skus)]
        traffic = skus[:: max(1, args.skus // args.traffic_skus)]
        fill_seconds = await _fill(databases, skus, traffic)
        # Registered before the baseline: it serves nothing until the rebalance gives it slots.
        await _invsaga(env, "shards", "add", third_dsn)
        temporal = await connect_configured(settings)
        task_queue = f"bench-reshard-{uuid.uuid4().hex[:8]}"
        load_before = _loadavg()
        async with (
            WorkerDeps.open(settings) as deps,
            build_worker(temporal, settings, deps, task_queue=task_queue),
        ):
            load = Load(CheckoutClient(temporal, task_queue=task_queue), traffic, args.callers)
            callers = [asyncio.create_task(load.caller(i)) for i in range(args.callers)]
            try:
                await asyncio.sleep(args.warmup_seconds)
                baseline_start = time.time()
                await asyncio.sleep(args.baseline_seconds)
                baseline_end = time.time()
                narration = await asyncio.to_thread(_rebalance, env)
                rebalance_end = time.time()
                await asyncio.sleep(args.after_seconds)
                after_end = time.time()
            finally:
                load.stop.set()
                await asyncio.gather(*callers)
                await _terminate(load)
        report = await audit(databases)
        moves = await _moves(databases)
    finally:
        await databases.close()
    load_after = _loadavg()

    during_start, during_end = min(m.created for m in moves), max(m.done for m in moves)
    baseline = _window(load, baseline_start, baseline_end)
    during = _window(load, during_start, during_end)
    after = _window(load, rebalance_end, after_end)
    fences = narration.fences()
    fenced = _touching(load.done, [(m.slots, *fences[m.move_id]) for m in moves if m.move_id in fences])
    moving = _touching(load.done, [(m.slots, m.created, m.done) for m in moves])
    baseline_p99 = _p99(load.started_within(baseline_start, baseline_end))
    copied = sum(m.skus_copied for m in moves)
    rates = [m.skus_copied / m.seconds for m in moves if m.seconds > 0]
    fence_ms = [m.fence_ms for m in moves]
    not_confirmed = sum(not c.confirmed for c in load.done) + sum(load.errors.values())
    payload: dict[str, Any] = {
        "benchmark": "B-reshard rebalance 2 -> 3 shards under checkouts",
        "machine": {
            "cpus": os.cpu_count(),
            "fsync": True,
            "loadavg_before_and_after": [load_before, load_after],
        },
        "skus": args.skus,
        "traffic_skus": len(traffic),
        "callers": args.callers,
        "fill_seconds": round(fill_seconds, 1),
        "moves": [
            {
                "move_id": m.move_id,
                "slots": len(m.slots),
                "skus_copied": m.skus_copied,
                "seconds": round(m.seconds, 3),
                "skus_per_second": round(m.skus_copied / m.seconds, 1) if m.seconds > 0 else None,
                "fence_ms": round(m.fence_ms, 1),
            }
            for m in moves
        ],
        "move_rate": {
            "skus_copied": copied,
            "move_seconds": round(during_end - during_start, 2),
            "skus_per_second_overall": round(copied / (during_end - during_start), 1),
            "skus_per_second_per_move_median": round(median(rates), 1),
        },
        "fence_ms": {"median": round(median(fence_ms), 1), "max": round(max(fence_ms), 1)},
        "checkouts": {"before": baseline, "during": during, "after": after},
        "throughput_during_to_before": _ratio(during["per_second"], baseline["per_second"]),
        "throughput_after_to_before": _ratio(after["per_second"], baseline["per_second"]),
        "p99_during_to_before": _ratio(during["p99_ms"], baseline["p99_ms"]),
        "p99_after_to_before": _ratio(after["p99_ms"], baseline["p99_ms"]),
        "touching_a_fenced_slot": {
            "checkouts": len(fenced),
            "p99_ms": _round(_p99(fenced)),
            "p99_to_before": _ratio(_p99(fenced), baseline_p99),
        },
        "touching_a_moving_slot": {
            "checkouts": len(moving),
            "p99_ms": _round(_p99(moving)),
            "p99_to_before": _ratio(_p99(moving), baseline_p99),
        },
        "checkouts_not_confirmed": not_confirmed,
        "unconfirmed": load.unconfirmed,
        "errors": dict(load.errors),
        "audit_clean": report.clean,
    }
    # No timing target is set for a move; what must hold is that it loses nothing and fails no checkout.
    payload["met"] = report.clean and not_confirmed == 0
    payload["timeline"] = _timeline(load, baseline_start, during_start, during_end)
    return payload


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _timeline(load: Load, origin: float, move_start: float, move_end: float) -> dict[str, Any]:
    """Checkouts completed per second, from the start of the baseline: for the plot."""
    per_second = Counter(int(c.ended - origin) for c in load.done if c.ended >= origin)
    seconds = list(range(max(per_second, default=0) + 1))
    return {
        "seconds": seconds,
        "completed": [per_second.get(s, 0) for s in seconds],
        "move_from_to": [round(move_start - origin, 1), round(move_end - origin, 1)],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skus", type=int, default=100_000, help="SKUs on the two shards before the move")
    parser.add_argument("--traffic-skus", type=int, default=1000, help="SKUs the checkouts buy")
    parser.add_argument("--callers", type=int, default=16, help="checkouts in flight (closed loop)")
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--baseline-seconds", type=float, default=15.0)
    parser.add_argument("--after-seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.skus < 1 or not 1 <= args.traffic_skus <= args.skus or args.callers < 1:
        parser.error("--skus and --callers must be 1 or more, and --traffic-skus from 1 to --skus")

    with checkout_stack(3) as stack:
        listed = ",".join(stack.fleet.shard_dsns[:2])
        settings = load_settings(
            shard_dsns=listed,
            core_dsn=stack.core_dsn,
            pool_size=20,
            temporal_address=stack.temporal.address,
            payment_url=stack.payment_url,
            worker_shutdown_grace_seconds=5.0,
            payload_keys="",
            payload_keys_file="",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("INVSAGA_")}
        env |= {
            "INVSAGA_SHARD_DSNS": listed,
            "INVSAGA_CORE_DSN": stack.core_dsn,
            "INVSAGA_TEMPORAL_ADDRESS": stack.temporal.address,
        }
        payload = asyncio.run(_run(settings, env, stack.fleet.shard_dsns[2], args))
    timeline = payload.pop("timeline")
    write_result("reshard", payload)
    move_start, move_end = timeline["move_from_to"]
    top = max(timeline["completed"], default=1)
    plot(
        "reshard",
        f"Rebalance 2 -> 3 shards of {args.skus:,} SKUs under {args.callers} checkout callers",
        {
            "checkouts completed per second": (timeline["seconds"], timeline["completed"]),
            "slots moving": ([move_start, move_start, move_end, move_end], [0, top, top, 0]),
        },
        "seconds since the baseline window began",
        "checkouts per second",
    )
    return payload


if __name__ == "__main__":
    main()
