"""Every benchmark runs end to end at a tiny size and reports its figures; the full sizes run by hand.

This checks the benchmarks work, not the targets: timing targets on a shared CI machine are noise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import BENCHMARKS


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_benchmark_runs_and_reports(name, tmp_path: Path):
    env = {**os.environ, "INVSAGA_BENCH_RESULTS": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", name], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [result] = list(tmp_path.glob("*.json"))
    payload = json.loads(result.read_text())
    assert payload, "empty result"
    numbers = [v for v in _leaves(payload) if isinstance(v, int | float) and not isinstance(v, bool)]
    assert numbers and all(n == n for n in numbers), "a figure is missing or NaN"
    assert list(tmp_path.glob("*.png")) or name in ("bulk_import", "relay")
    if name in _CHECKS:
        _CHECKS[name](payload)


def _leaves(value):  # type: ignore[no-untyped-def]
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _check_reshard(payload: dict) -> None:  # type: ignore[type-arg]
    """A rebalance 2 -> 3 shards ran under checkouts, each move's rate and fence were measured and the
    audit is clean (that every checkout ended right is the scale test's to check,
    tests/integration/test_reshard_live.py)."""
    assert payload["audit_clean"], payload
    assert payload["moves"] and all(m["fence_ms"] >= 0 and m["seconds"] > 0 for m in payload["moves"])
    assert 0 < payload["move_rate"]["skus_copied"] < 2000  # about a third of the SKUs move to the new shard
    assert all(payload["checkouts"][window]["ops"] > 0 for window in ("before", "during"))


#: What a benchmark's smoke run must also show, beyond figures that are there and not NaN.
_CHECKS = {"reshard": _check_reshard}
