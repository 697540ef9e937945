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


def _leaves(value):  # type: ignore[no-untyped-def]
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value
