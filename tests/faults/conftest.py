"""The fault suite's servers, shared by every scenario in this package, and its summary at the end.

Sizes: ``INVSAGA_FAULT_SCALE=ci`` (the default, part of ``make test``) or ``full`` (by hand). Seeds:
each scenario prints its seed; ``INVSAGA_FAULT_SEED=<seed>`` reruns with it. ``INVSAGA_FAULT_KEEP=1``
keeps every process log and the Temporal SQLite file (the path is printed) for a post-mortem;
``INVSAGA_FAULT_DEBUG=1`` prints the history of each scenario's slowest checkout.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.harness import REPORTS
from tests.faults.stack import FaultStack, Scale, current_scale


@pytest.fixture(scope="package")
def fault_stack() -> Iterator[FaultStack]:
    """Postgres x4, the Temporal dev server and the payment sandbox, for this package only: they are
    stopped once its last scenario ran, not kept for the rest of the test session."""
    stack = FaultStack()
    try:
        stack.start()
        print(f"fault stack in {stack.base_dir}")
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="package")
def scale() -> Scale:
    return current_scale()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORTS:
        return
    tr = terminalreporter
    tr.section("fault suite")
    for report in REPORTS:
        tr.write_line(
            f"{report['scenario']:<22} scale={report['scale']} seed={report['seed']:<7} "
            f"orders={report['orders']:<4} faults={report['faults']:<3} "
            f"violations={len(report['violations']):<3} {report['seconds']:>6.1f}s  {report['outcomes']}"
        )
        tr.write_line(f"{'':<22} reconcile: {report['reconcile']}; timeline {report['timeline']}")
        for note in report["notes"][:3]:
            tr.write_line(f"{'':<22} note: {note}")
    total_orders = sum(r["orders"] for r in REPORTS)
    total_faults = sum(r["faults"] for r in REPORTS)
    total_violations = sum(len(r["violations"]) for r in REPORTS)
    tr.write_line(
        f"total: {len(REPORTS)} scenarios, {total_orders} orders, {total_faults} faults, "
        f"{total_violations} violations, {sum(r['seconds'] for r in REPORTS):.0f}s in scenarios"
    )
