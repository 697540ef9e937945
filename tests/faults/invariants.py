"""Invariants 1-6 of ../shared/ARCHITECTURE.md, checked with this test's own SQL and HTTP calls.

Nothing here goes through the store, the audit or the reconciler under test: stock rows, holds and the
ledger are read with plain asyncpg queries on every shard; orders with one on the core database;
charges through the sandbox provider's public API (``GET /v1/charges?idempotency_key=...``), plus its
tables for the duplicate checks only an operator's view can make. Then ``invsaga reconcile --json``
runs as an operator would run it, and must find nothing.

Every check returns human-readable violations; an empty list means the scenario ended right.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx

from invsaga.domain.checkout import WORKFLOW_TYPE, CheckoutStatus

if TYPE_CHECKING:
    from tests.faults.harness import Outcome, Scenario

# --- stock rows: invariants 1-4 and the per-hold ledger (3 and 6) ----------------------------------

_OVERSOLD = """
SELECT sku, location, on_hand, reserved FROM stock_levels
 WHERE NOT (reserved >= 0 AND reserved <= on_hand)
"""

_RESERVED_VS_HOLDS = """
SELECT coalesce(s.sku, h.sku) AS sku, coalesce(s.location, h.location) AS location,
       s.reserved, coalesce(h.held, 0) AS held
  FROM stock_levels s
  FULL JOIN (SELECT sku, location, sum(quantity) AS held FROM reservations
              WHERE state = 'held' GROUP BY sku, location) h
    ON h.sku = s.sku AND h.location = s.location
 WHERE s.reserved IS DISTINCT FROM coalesce(h.held, 0)
"""

_LEVELS_VS_LEDGER = """
SELECT coalesce(s.sku, m.sku) AS sku, coalesce(s.location, m.location) AS location,
       s.on_hand, s.reserved, m.on_hand_sum, m.reserved_sum
  FROM stock_levels s
  FULL JOIN (SELECT sku, location, sum(delta_on_hand) AS on_hand_sum, sum(delta_reserved) AS reserved_sum
               FROM stock_movements GROUP BY sku, location) m
    ON m.sku = s.sku AND m.location = s.location
 WHERE s.on_hand IS DISTINCT FROM m.on_hand_sum OR s.reserved IS DISTINCT FROM m.reserved_sum
"""

_CONSERVATION = """
SELECT s.sku, s.location, s.on_hand,
       coalesce(i.qty, 0) AS brought_in, coalesce(c.qty, 0) AS sold_holds, coalesce(l.qty, 0) AS sold_ledger
  FROM stock_levels s
  LEFT JOIN (SELECT sku, location, sum(delta_on_hand) AS qty FROM stock_movements
              WHERE reason IN ('receive', 'adjust', 'import') GROUP BY sku, location) i
    ON i.sku = s.sku AND i.location = s.location
  LEFT JOIN (SELECT sku, location, sum(quantity) AS qty FROM reservations
              WHERE state = 'committed' GROUP BY sku, location) c
    ON c.sku = s.sku AND c.location = s.location
  LEFT JOIN (SELECT sku, location, -sum(delta_on_hand) AS qty FROM stock_movements
              WHERE reason = 'commit' GROUP BY sku, location) l
    ON l.sku = s.sku AND l.location = s.location
"""

# Each reason may move only what it stands for.
_BAD_MOVEMENTS = """
SELECT id, sku, location, reason, delta_on_hand, delta_reserved, idempotency_key FROM stock_movements
 WHERE (reason = 'reserve' AND NOT (delta_on_hand = 0 AND delta_reserved > 0))
    OR (reason IN ('release', 'expire') AND NOT (delta_on_hand = 0 AND delta_reserved < 0))
    OR (reason = 'commit' AND NOT (delta_on_hand < 0 AND delta_reserved = delta_on_hand))
    OR (reason IN ('receive', 'adjust', 'import') AND delta_reserved <> 0)
"""

# Every hold against its own ledger rows: what it reserved, and how it ended, recorded once each.
_HOLD_LEDGER = """
SELECT r.order_id, r.sku, r.location, r.quantity, r.state,
       coalesce(m.reserved_sum, 0) AS reserved_sum, coalesce(m.on_hand_sum, 0) AS on_hand_sum,
       coalesce(m.reserves, 0) AS reserves, coalesce(m.endings, 0) AS endings, m.reasons
  FROM reservations r
  LEFT JOIN (SELECT reference, sku, location,
                    sum(delta_reserved) AS reserved_sum, sum(delta_on_hand) AS on_hand_sum,
                    count(*) FILTER (WHERE reason = 'reserve') AS reserves,
                    count(*) FILTER (WHERE reason <> 'reserve') AS endings,
                    string_agg(reason, ',' ORDER BY id) AS reasons
               FROM stock_movements WHERE reason IN ('reserve', 'release', 'commit', 'expire')
              GROUP BY reference, sku, location) m
    ON m.reference = r.order_id AND m.sku = r.sku AND m.location = r.location
"""

_ORPHAN_HOLD_MOVEMENTS = """
SELECT m.reference, m.sku, m.location, m.reason FROM stock_movements m
 WHERE m.reason IN ('reserve', 'release', 'commit', 'expire')
   AND NOT EXISTS (SELECT 1 FROM reservations r
                    WHERE r.order_id = m.reference AND r.sku = m.sku AND r.location = m.location)
"""

_DUPLICATE_LEDGER_KEYS = """
SELECT idempotency_key, count(*) AS n FROM stock_movements GROUP BY idempotency_key HAVING count(*) > 1
"""

_DUPLICATE_HOLDS = """
SELECT order_id, sku, location, count(*) AS n FROM reservations
 GROUP BY order_id, sku, location HAVING count(*) > 1
"""

_HOLDS_WITHOUT_STOCK_ROW = """
SELECT DISTINCT r.sku, r.location FROM reservations r
 WHERE NOT EXISTS (SELECT 1 FROM stock_levels s WHERE s.sku = r.sku AND s.location = r.location)
"""

_STOCK_SKUS = "SELECT DISTINCT sku FROM stock_levels"

_ORDER_HOLDS = """
SELECT order_id, sku, location, quantity, state, pinned_at IS NOT NULL AS pinned
  FROM reservations WHERE order_id = ANY($1::text[])
"""

_ORDERS = """
SELECT order_id, customer_id, status, amount, currency, lines, reason FROM orders
 WHERE order_id = ANY($1::text[]) OR order_id LIKE $2
"""

# --- the sandbox provider's tables: duplicates the public API cannot show -------------------------

_DUPLICATE_CHARGE_KEYS = "SELECT idempotency_key, count(*) AS n FROM charges GROUP BY 1 HAVING count(*) > 1"

_TWO_CHARGES_ONE_ORDER = """
SELECT reference, count(*) AS n FROM charges WHERE status = 'succeeded' GROUP BY reference HAVING count(*) > 1
"""

_CHARGE_KEY_MISMATCH = """
SELECT id, idempotency_key, reference FROM charges
 WHERE idempotency_key LIKE 'charge-%' AND idempotency_key <> 'charge-' || reference
"""

_REFUNDS_VS_CHARGE = """
SELECT c.id, c.reference, c.refunded_amount, coalesce(sum(r.amount), 0) AS refunds
  FROM charges c LEFT JOIN refunds r ON r.charge_id = c.id
 GROUP BY c.id, c.reference, c.refunded_amount
HAVING c.refunded_amount <> coalesce(sum(r.amount), 0)
"""


async def _fetch(dsn: str, *queries: tuple[str, tuple[Any, ...]]) -> list[list[asyncpg.Record]]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return [await conn.fetch(sql, *args) for sql, args in queries]
    finally:
        await conn.close()


async def stock_violations(sc: Scenario) -> list[str]:
    violations: list[str] = []
    skus_seen: dict[str, list[int]] = defaultdict(list)
    for shard, server in enumerate(sc.stack.shard_servers):
        where = f"shard {shard}"
        (
            oversold,
            reserved_vs_holds,
            levels_vs_ledger,
            conservation,
            bad_movements,
            hold_ledger,
            orphans,
            dup_keys,
            dup_holds,
            misrouted,
            stock_skus,
        ) = await _fetch(
            server.dsn("inventory"),
            *[
                (q, ())
                for q in (
                    _OVERSOLD,
                    _RESERVED_VS_HOLDS,
                    _LEVELS_VS_LEDGER,
                    _CONSERVATION,
                    _BAD_MOVEMENTS,
                    _HOLD_LEDGER,
                    _ORPHAN_HOLD_MOVEMENTS,
                    _DUPLICATE_LEDGER_KEYS,
                    _DUPLICATE_HOLDS,
                    _HOLDS_WITHOUT_STOCK_ROW,
                    _STOCK_SKUS,
                )
            ],
        )
        for r in oversold:
            violations.append(
                f"inv1 {where}: {r['sku']}@{r['location']} on_hand={r['on_hand']} reserved={r['reserved']}"
            )
        for r in reserved_vs_holds:
            violations.append(
                f"inv2 {where}: {r['sku']}@{r['location']} reserved={r['reserved']}, "
                f"but its held holds sum to {r['held']}"
            )
        for r in levels_vs_ledger:
            violations.append(
                f"inv3 {where}: {r['sku']}@{r['location']} on_hand={r['on_hand']} reserved={r['reserved']}, "
                f"but the ledger sums to on_hand={r['on_hand_sum']} reserved={r['reserved_sum']}"
            )
        for r in conservation:
            if r["brought_in"] != r["on_hand"] + r["sold_holds"] or r["sold_holds"] != r["sold_ledger"]:
                violations.append(
                    f"inv4 {where}: {r['sku']}@{r['location']} received+adjusted={r['brought_in']} but "
                    f"on_hand={r['on_hand']} + sold={r['sold_holds']} (ledger says sold {r['sold_ledger']})"
                )
            expected_in = sc.received.get(r["sku"]) if r["location"] == "main" else None
            if expected_in is not None and r["brought_in"] != expected_in:
                violations.append(
                    f"inv4 {where}: {r['sku']} took in {r['brought_in']} units by its ledger, "
                    f"but the test put in {expected_in}"
                )
        for r in bad_movements:
            violations.append(
                f"inv3 {where}: ledger row {r['idempotency_key']} ({r['reason']}) moves "
                f"on_hand {r['delta_on_hand']:+} reserved {r['delta_reserved']:+}"
            )
        for r in hold_ledger:
            problem = _hold_ledger_problem(r)
            if problem:
                violations.append(
                    f"inv6 {where}: hold {r['order_id']}/{r['sku']}@{r['location']} "
                    f"{r['state']} x{r['quantity']}: {problem} (ledger: {r['reasons']})"
                )
        for r in orphans:
            violations.append(
                f"inv3 {where}: ledger {r['reason']} of {r['reference']}/{r['sku']}@{r['location']} "
                "has no hold row"
            )
        for r in dup_keys:
            violations.append(f"inv6 {where}: ledger key {r['idempotency_key']} recorded {r['n']} times")
        for r in dup_holds:
            violations.append(
                f"inv6 {where}: {r['n']} hold rows for {r['order_id']}/{r['sku']}@{r['location']}"
            )
        for r in misrouted:
            violations.append(
                f"inv6 {where}: holds on {r['sku']}@{r['location']}, which has no stock row here"
            )
        for r in stock_skus:
            skus_seen[r["sku"]].append(shard)
    for sku, shards in skus_seen.items():
        if len(shards) > 1:
            violations.append(f"routing: {sku} has stock rows on shards {shards}")
    for sku, shard in sc.skus.items():
        if shards_of := skus_seen.get(sku):
            if shards_of != [shard]:
                violations.append(f"routing: {sku} should live on shard {shard}, found on {shards_of}")
        else:
            violations.append(f"routing: {sku} has no stock row on any shard")
    return violations


def _hold_ledger_problem(r: asyncpg.Record) -> str | None:
    q, state = r["quantity"], r["state"]
    reserves, endings = r["reserves"], r["endings"]
    if state == "released" and reserves == 0 and endings == 0:
        return None  # a fence: released before its reserve could land, so nothing ever moved
    if reserves != 1:
        return f"{reserves} reserve movements"
    expected = {
        "held": (q, 0, 0),
        "committed": (0, -q, 1),
        "released": (0, 0, 1),
        "expired": (0, 0, 1),
    }.get(state)
    if expected is None:
        return f"unknown state {state!r}"
    found = (r["reserved_sum"], r["on_hand_sum"], endings)
    if found != expected:
        return (
            f"ledger nets reserved {found[0]:+}, on_hand {found[1]:+} over {endings} endings, "
            f"expected {expected}"
        )
    return None


# --- orders: invariant 5 ----------------------------------------------------------------------------


async def charges_by_key(payments_url: str, order_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """Each order's charge as the provider's public API reports it, looked up by idempotency key."""
    found: dict[str, dict[str, Any] | None] = {}
    gate = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=payments_url, timeout=10) as http:

        async def one(order_id: str) -> None:
            async with gate:
                for attempt in range(20):
                    try:
                        response = await http.get(
                            "/v1/charges", params={"idempotency_key": f"charge-{order_id}"}
                        )
                    except httpx.HTTPError:
                        await asyncio.sleep(0.5)
                        continue
                    if response.status_code == 404:
                        found[order_id] = None
                        return
                    if response.status_code == 200:
                        found[order_id] = response.json()
                        return
                    if attempt == 19:
                        raise AssertionError(
                            f"charge lookup for {order_id}: {response.status_code} {response.text}"
                        )
                    await asyncio.sleep(0.5)
                raise AssertionError(f"the payment provider never answered the lookup for {order_id}")

        await asyncio.gather(*(one(order_id) for order_id in order_ids))
    return found


async def order_violations(sc: Scenario, outcomes: dict[str, Outcome]) -> list[str]:
    violations: list[str] = []
    order_ids = [o.order_id for o in sc.orders]
    holds: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for server in sc.stack.shard_servers:
        (rows,) = await _fetch(server.dsn("inventory"), (_ORDER_HOLDS, (order_ids,)))
        for r in rows:
            holds[r["order_id"]].append(r)
    (order_rows,) = await _fetch(sc.stack.core_dsn, (_ORDERS, (order_ids, f"{sc.prefix}-%")))
    rows_by_id = {r["order_id"]: r for r in order_rows}
    for order_id in set(rows_by_id) - set(order_ids):
        violations.append(f"inv5 {order_id}: an order row the scenario never placed")
    charges = await charges_by_key(sc.stack.payments_url, order_ids)

    for planned in sc.orders:
        oid = planned.order_id
        outcome = outcomes[oid]
        row = rows_by_id.get(oid)
        charge = charges.get(oid)
        order_holds = holds.get(oid, [])
        live_holds = [h for h in order_holds if h["state"] in ("held", "committed")]
        where = f"inv5 {oid}"

        if outcome.workflow_status is None:
            # Refused before any checkout started (the sold-out fast path): nothing may exist for it.
            if row is not None:
                violations.append(f"{where}: no checkout, but an order row {row['status']!r}")
            if order_holds:
                violations.append(f"{where}: no checkout, but holds {_holds(order_holds)}")
            if charge is not None:
                violations.append(f"{where}: no checkout, but a charge {_charge(charge)}")
            continue
        if outcome.result is None:
            violations.append(
                f"{where}: the workflow ended {outcome.workflow_status.name}, not with a result"
            )
            continue
        result = outcome.result
        status = result.status
        succeeded = charge is not None and charge["status"] == "succeeded"

        if row is not None and row["status"] != status.value.lower():
            violations.append(f"{where}: workflow says {status.value}, the order row says {row['status']!r}")
        elif row is not None and row["status"] == "rejected" and row["reason"] != result.reason:
            violations.append(
                f"{where}: workflow says REJECTED/{result.reason}, the order row says {row['reason']!r}"
            )
        if row is None and (result.amount_minor is not None or order_holds or charge is not None):
            violations.append(f"{where}: {status.value} with holds or a charge, but no order row")
        if row is not None:
            row_amount = int(Decimal(row["amount"]) * 100)
            if row_amount != planned.amount_minor:
                violations.append(
                    f"{where}: order row amount {row_amount} != {planned.amount_minor} from prices"
                )
            row_lines = sorted((ln["sku"], ln["quantity"]) for ln in json.loads(row["lines"]))
            if row_lines != sorted(planned.lines):
                violations.append(f"{where}: order row lines {row_lines} != placed {planned.lines}")
        if charge is not None and charge["amount"] != planned.amount_minor:
            violations.append(f"{where}: charged {charge['amount']}, the order costs {planned.amount_minor}")

        if status is CheckoutStatus.CONFIRMED:
            if not succeeded:
                violations.append(f"{where}: CONFIRMED without a succeeded charge ({_charge(charge)})")
            elif charge is not None and charge["refunded_amount"] != 0:
                violations.append(
                    f"{where}: CONFIRMED but {charge['refunded_amount']} of the charge was refunded"
                )
            if charge is not None and result.charge_id not in (None, charge["id"]):
                violations.append(
                    f"{where}: result names charge {result.charge_id}, the provider has {charge['id']}"
                )
            committed = sorted((h["sku"], h["quantity"]) for h in order_holds if h["state"] == "committed")
            if committed != sorted(planned.lines) or len(order_holds) != len(committed):
                violations.append(
                    f"{where}: CONFIRMED but its holds are {_holds(order_holds)}, lines {planned.lines}"
                )
        elif status in (CheckoutStatus.REJECTED, CheckoutStatus.CANCELLED):
            if live_holds:
                violations.append(f"{where}: {status.value} but holds still {_holds(live_holds)}")
            if succeeded and charge is not None and charge["refunded_amount"] != charge["amount"]:
                violations.append(
                    f"{where}: {status.value} ({result.reason}) but "
                    f"{charge['amount'] - charge['refunded_amount']} of charge {charge['id']} is kept"
                )
            if status is CheckoutStatus.REJECTED and result.reason is None:
                violations.append(f"{where}: REJECTED without a reason")
        else:
            violations.append(f"{where}: ended with non-terminal status {status.value}")
    return violations


def _holds(rows: list[asyncpg.Record]) -> str:
    return ", ".join(f"{r['sku']} x{r['quantity']} {r['state']}" for r in rows) or "none"


def _charge(charge: dict[str, Any] | None) -> str:
    if charge is None:
        return "none"
    return f"{charge['id']} {charge['status']} {charge['amount']} refunded {charge['refunded_amount']}"


# --- the provider and Temporal: invariant 6 ------------------------------------------------------------


async def payment_violations(sc: Scenario) -> list[str]:
    dup_keys, two_charges, key_mismatch, refunds = await _fetch(
        sc.stack.payments_dsn,
        (_DUPLICATE_CHARGE_KEYS, ()),
        (_TWO_CHARGES_ONE_ORDER, ()),
        (_CHARGE_KEY_MISMATCH, ()),
        (_REFUNDS_VS_CHARGE, ()),
    )
    violations = [f"inv6 payments: charge key {r['idempotency_key']} used {r['n']} times" for r in dup_keys]
    violations += [f"inv6 payments: order {r['reference']} charged {r['n']} times" for r in two_charges]
    violations += [
        f"inv6 payments: charge {r['id']} key {r['idempotency_key']} is not its order {r['reference']}'s"
        for r in key_mismatch
    ]
    violations += [
        f"inv6 payments: charge {r['id']} ({r['reference']}) says refunded {r['refunded_amount']}, "
        f"refunds sum to {r['refunds']}"
        for r in refunds
    ]
    return violations


async def temporal_violations(sc: Scenario) -> list[str]:
    """One checkout per order id, ever: a second run of a workflow id would be a second checkout."""
    runs: dict[str, int] = defaultdict(int)
    async for execution in sc.temporal.list_workflows(
        f"WorkflowType = '{WORKFLOW_TYPE}' AND WorkflowId STARTS_WITH 'checkout-{sc.prefix}-'"
    ):
        runs[execution.id] += 1
    violations = [f"inv6 temporal: {wid} has {n} runs" for wid, n in runs.items() if n > 1]
    placed = {f"checkout-{o.order_id}" for o in sc.orders}
    violations += [f"inv6 temporal: {wid} is no order this scenario placed" for wid in set(runs) - placed]
    return violations


async def check_invariants(sc: Scenario, outcomes: dict[str, Outcome]) -> list[str]:
    parts = await asyncio.gather(
        stock_violations(sc), order_violations(sc, outcomes), payment_violations(sc), temporal_violations(sc)
    )
    return [v for part in parts for v in part]


# --- invsaga reconcile -------------------------------------------------------------------------------------


def run_reconcile(sc: Scenario) -> tuple[str, list[str]]:
    """Run ``invsaga reconcile --json`` as an operator would; returns (summary, violations).

    The command is being built alongside this suite (invsaga/reconcile.py, invsaga/cli/reconcile.py):
    until it exists, this records that it could not run and reports no violation for it.
    """
    command = [sys.executable, "-m", "invsaga", "reconcile", "--json"]
    try:
        done = subprocess.run(command, env=sc.env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return "timed out", ["reconcile: `invsaga reconcile --json` did not finish within 180s"]
    output = (done.stdout + done.stderr).strip()
    if done.returncode == 2 and "No such command" in output:
        return "not available yet (no `invsaga reconcile` command)", []
    try:
        report: Any = json.loads(done.stdout) if done.stdout.strip() else None
    except ValueError:
        report = None
    findings = _findings(report)
    if isinstance(report, dict) and report.get("clean") is False and not findings:
        findings = [report]
    if done.returncode == 0 and not findings:
        return f"clean (exit 0{_counted(report)})", []
    return f"exit {done.returncode}", [f"reconcile: exit {done.returncode}, it reports: {output[:3000]}"]


def _findings(report: Any) -> list[Any]:
    """Whatever the report lists as disagreements, however it names them."""
    if isinstance(report, list):
        return report
    if isinstance(report, dict):
        for key in ("disagreements", "findings", "problems", "issues", "violations"):
            value = report.get(key)
            if isinstance(value, list) and value:
                return value
    return []


def _counted(report: Any) -> str:
    if isinstance(report, dict):
        for key in ("checked", "orders_checked", "scanned"):
            if isinstance(report.get(key), int):
                return f", {report[key]} orders checked"
    return ""
