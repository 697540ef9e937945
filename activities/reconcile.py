"""The order reconciler as an activity, so a Temporal Schedule runs it and its counts reach Prometheus.

The run itself is ``invsaga.reconcile.reconcile``, the same one ``invsaga reconcile`` runs by hand. What
to look at and whether to repair come from the worker's settings, so turning repair on is a setting and
a worker restart, not a new schedule. The result is only counts: the findings themselves can be many
and belong in the worker's log and in ``invsaga reconcile``, not in workflow history.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity
from temporalio.client import Client

from activities.errors import domain_errors_as_application_errors
from invsaga.domain.reconcile import FindingKind
from invsaga.payments.client import PaymentClient
from invsaga.reconcile import ReconcileReport, reconcile
from invsaga.settings import Settings
from invsaga.store.databases import Databases
from invsaga.store.stock import StockStore

log = logging.getLogger("invsaga.reconcile")


class ReconcileInput(BaseModel):
    """Overrides of the worker's settings for one run; None keeps the setting."""

    since_seconds: int | None = None
    repair: bool | None = None


class ReconcileSummary(BaseModel):
    orders_checked: int
    checkouts_running: int
    findings: dict[str, int]
    repaired: int
    needs_person: int
    repair: bool


class ReconcileActivities:
    def __init__(
        self,
        databases: Databases,
        store: StockStore,
        temporal: Client,
        payments: PaymentClient,
        settings: Settings,
    ) -> None:
        self.databases = databases
        self.store = store
        self.temporal = temporal
        self.payments = payments
        self.settings = settings

    @activity.defn
    @domain_errors_as_application_errors
    async def reconcile_orders(self, inp: ReconcileInput) -> ReconcileSummary:
        seconds = self.settings.reconcile_since_seconds if inp.since_seconds is None else inp.since_seconds
        repair = self.settings.reconcile_repair if inp.repair is None else inp.repair
        report = await reconcile(
            self.databases,
            self.temporal,
            self.payments,
            since=timedelta(seconds=seconds) if seconds else None,
            repair=repair,
            store=self.store,
            on_progress=activity.heartbeat,
        )
        for finding in report.findings:
            log.warning(
                "order %s: %s: %s; fix: %s%s",
                finding.order_id,
                finding.kind.value,
                finding.problem,
                finding.fix,
                " (repaired)" if finding.repaired else "",
            )
        _record_metrics(report)
        return ReconcileSummary(
            orders_checked=report.orders_checked,
            checkouts_running=report.checkouts_running,
            findings={kind.value: n for kind, n in report.counts().items() if n},
            repaired=sum(f.repaired for f in report.findings),
            needs_person=len(report.needs_person),
            repair=repair,
        )


def _record_metrics(report: ReconcileReport) -> None:
    """Gauges hold the last run's numbers (so an alert clears once a person has fixed the order);
    counters add up what the reconciler changed, for rates over time."""
    meter = activity.metric_meter()
    findings = meter.create_gauge(
        "invsaga_reconcile_findings", "Orders' disagreements found by the last reconcile run, by kind"
    )
    for kind, n in report.counts().items():
        findings.set(n, {"kind": kind.value})
    meter.create_gauge(
        "invsaga_reconcile_needs_person",
        "Findings of the last run left for a person (unsafe, or repair failed)",
    ).set(len(report.needs_person))
    meter.create_gauge("invsaga_reconcile_orders_checked", "Orders compared by the last run").set(
        report.orders_checked
    )
    meter.create_gauge(
        "invsaga_reconcile_checkouts_running", "Orders the last run skipped because their checkout runs"
    ).set(report.checkouts_running)
    repaired = meter.create_counter("invsaga_reconcile_repaired", "Safe fixes applied by the reconciler")
    failed = meter.create_counter("invsaga_reconcile_repair_failures", "Safe fixes that failed")
    for kind in FindingKind:
        done = sum(1 for f in report.findings if f.kind is kind and f.repaired)
        broken = sum(1 for f in report.findings if f.kind is kind and f.repair_error is not None)
        if done:
            repaired.add(done, {"kind": kind.value})
        if broken:
            failed.add(broken, {"kind": kind.value})
