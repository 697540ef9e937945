"""``invsaga reconcile``: check invariant 5 on every order across the four systems, and repair the safe half.

``invsaga audit`` is the stock-row check; this is the order check. Both are read-only unless told
otherwise and safe to run against live traffic.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import typer

from invsaga.cli.errors import fail, run
from invsaga.cli.settings import load_command_settings
from invsaga.domain.errors import InvalidInput
from invsaga.domain.reconcile import Finding
from invsaga.payments.client import PaymentClient
from invsaga.reconcile import ReconcileReport, reconcile
from invsaga.store.databases import Databases
from invsaga.temporal.configured import connect_configured

_DURATION = re.compile(r"^(\d{1,6})([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> timedelta:
    """``30m``, ``2h``, ``7d`` (also ``s`` and ``w``)."""
    match = _DURATION.match(text.strip())
    if not match:
        raise InvalidInput(f"cannot read duration {text!r}: write a number and a unit, e.g. 30m, 2h or 7d")
    return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])


async def _reconcile(since: timedelta | None, repair: bool) -> ReconcileReport:
    settings = load_command_settings()
    databases = await Databases.open(settings)
    try:
        temporal = await connect_configured(settings)
        async with PaymentClient(settings.payment_url, timeout=settings.payment_timeout_seconds) as payments:
            return await reconcile(databases, temporal, payments, since=since, repair=repair)
    finally:
        await databases.close()


def _line(finding: Finding) -> str:
    if finding.repaired:
        outcome = "repaired"
    elif finding.repair_error is not None:
        outcome = f"repair failed: {finding.repair_error}"
    else:
        outcome = "safe, run with --repair" if finding.safe else "needs a person"
    return (
        f"order {finding.order_id}: {finding.kind.value}: {finding.problem}. "
        f"Seen: {finding.evidence.summary()}. Fix ({outcome}): {finding.fix}"
    )


def reconcile_command(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    repair: bool = typer.Option(
        False, "--repair", help="Apply the safe fixes: refund, release, commit, record the end."
    ),
    since: str | None = typer.Option(
        None, "--since", metavar="DURATION", help="Only orders created this long ago or later (30m, 2h, 7d)."
    ),
) -> None:
    """Report every order whose parts disagree; exit 1 if any (with --repair: if any are left for a
    person or a repair failed)."""
    try:
        window = parse_duration(since) if since is not None else None
    except InvalidInput as exc:
        raise fail(exc.message, 2) from None
    report = run(_reconcile(window, repair))
    if as_json:
        payload = report.model_dump(mode="json")
        payload["clean"] = report.clean
        payload["needs_person"] = len(report.needs_person)
        print(json.dumps(payload, indent=2))
    else:
        for finding in report.findings:
            print(_line(finding))
        repaired = sum(f.repaired for f in report.findings)
        print(
            f"reconciled {report.orders_checked} order(s), skipped {report.checkouts_running} with a running "
            f"checkout: {len(report.findings)} finding(s), {repaired} repaired, "
            f"{len(report.needs_person)} for a person"
        )
    failing = report.needs_person if repair else report.findings
    if failing:
        raise typer.Exit(1)


def mount(app: typer.Typer) -> None:
    app.command("reconcile")(reconcile_command)
