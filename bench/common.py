"""Shared benchmark plumbing: servers, closed-loop drivers, pgbench baselines, stats, JSON and plots.

Every figure is measured in the run that reports it, and every target is a ratio against a baseline
measured on the same servers in the same run, because this 2-core machine is noisy.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invsaga.dev.postgres import PgServer, find_pg_bin

RESULTS = Path(os.environ.get("INVSAGA_BENCH_RESULTS", Path(__file__).parent / "results"))


@dataclass
class LoadResult:
    callers: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def ops(self) -> int:
        return len(self.latencies_ms)

    @property
    def per_second(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        return {
            "callers": self.callers,
            "ops": self.ops,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.per_second, 1),
            "p50_ms": round(self.percentile(50), 3),
            "p99_ms": round(self.percentile(99), 3),
        }


async def closed_loop(
    operation: Callable[[int, int], Awaitable[object]], *, callers: int, seconds: float
) -> LoadResult:
    """``callers`` tasks each call ``operation(caller, n)`` back to back for ``seconds``."""
    result = LoadResult(callers=callers, seconds=seconds)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def caller(index: int) -> None:
        n = 0
        while loop.time() < deadline:
            started = time.perf_counter()
            try:
                await operation(index, n)
            except Exception:
                result.errors += 1
            else:
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
            n += 1

    started = loop.time()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    result.seconds = loop.time() - started
    return result


def pgbench(server: PgServer, database: str, script: str, *, clients: int, seconds: int) -> dict[str, float]:
    """Run pgbench with a custom script on ``server``; returns tps and latency average in ms."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
        path = handle.name
    Path(path).chmod(0o644)
    cmd = [
        str(find_pg_bin() / "pgbench"), "-n", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres",
        "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds), "-f", path, "-r", database,
    ]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = re.search(r"latency average = ([\d.]+) ms", out)
    return {
        "clients": clients,
        "tps": round(tps, 1),
        "latency_avg_ms": float(latency.group(1)) if latency else -1,
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))
    return path


def plot(
    name: str,
    title: str,
    series: dict[str, tuple[list[float], list[float]]],
    xlabel: str,
    ylabel: str,
    *,
    logx: bool = False,
) -> Path:
    """One PNG line plot of named (x, y) series, next to the JSON result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = RESULTS / f"{name}.png"
    fig.savefig(path)
    plt.close(fig)
    return path
