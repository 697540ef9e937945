"""The dev stack's ports: a default that is taken is replaced by a free port and said so; a pinned port
(a flag, or --port-base) that is taken stops ``invsaga dev`` with one line before anything starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from invsaga.dev.ports import PortUnavailable, Service, free_port, plan_ports, port_is_free
from invsaga.dev.stack import dev_services


@contextmanager
def listening(port: int | None = None) -> Iterator[int]:
    """Something else listening on ``port`` (any free one by default), as a new user's machine has."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port or 0))
        sock.listen()
        yield sock.getsockname()[1]


def _consecutive_free(count: int) -> int:
    for _ in range(50):
        start = free_port()
        if start + count < 65535 and all(port_is_free(start + i) for i in range(count)):
            return start
    raise AssertionError("no run of free ports")


def test_a_taken_default_is_replaced_and_the_note_says_which_and_why():
    with listening() as taken:
        services = [Service("api", "the API", "--api-port", taken), Service("ui", "the UI", "--ui-port", 1)]
        plan = plan_ports(services, {"ui": free_port()})
    moved = plan.port("api")
    assert moved != taken
    assert plan.notes == [f"port {taken} is taken; the API is on {moved} (pin it with --api-port)"]


def test_a_pinned_port_that_is_taken_is_an_error_not_a_substitute():
    with listening() as taken, pytest.raises(PortUnavailable, match=f"port {taken} for the API .* taken"):
        plan_ports(dev_services(2, ui=True, codec=True), {"api": taken})
    with pytest.raises(PortUnavailable, match="out of range"):
        plan_ports(dev_services(2, ui=True, codec=True), {}, base=65530)
    pinned = free_port()
    with pytest.raises(PortUnavailable, match="already given"):
        plan_ports(dev_services(2, ui=True, codec=True), {"api": pinned, "ui": pinned})


def test_port_base_puts_every_service_on_consecutive_ports_in_order():
    services = dev_services(2, ui=True, codec=True)
    base = _consecutive_free(sum(s.count for s in services))
    plan = plan_ports(services, {"ui": base + 1}, base=base)
    assert plan.notes == []
    assert plan.ports == {
        "api": [base],
        "ui": [base + 1],
        "temporal": [base + 2],
        "codec": [base + 3],
        "payments": [base + 4],
        "metrics": [base + 5],
        "postgres": [base + 6, base + 7, base + 8],  # core, shard 0, shard 1
    }


def _dev(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVSAGA_")}
    return subprocess.run(
        [sys.executable, "-m", "invsaga", "dev", "--data-dir", str(tmp_path / "data"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("flag", ["--api-port", "--port-base"])
def test_invsaga_dev_with_a_taken_pinned_port_says_so_in_one_line_and_starts_nothing(tmp_path, flag):
    with listening() as taken:
        done = _dev(tmp_path, flag, str(taken))
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: port {taken} for ") and "is taken" in line, line
    assert "stopping" not in done.stdout
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["dev.lock"]  # no server, no stack.json
