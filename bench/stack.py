"""The servers a checkout benchmark runs against, all this run's own: Postgres shard servers and a core
server (fsync on, as deployed), a Temporal dev server, and a payment sandbox as its own process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from invsaga.dev.ports import free_port, wait_for_port
from invsaga.dev.postgres import PgFleet, start_fleet
from invsaga.dev.temporal import TemporalDevServer, start_dev_server


@dataclass(frozen=True)
class CheckoutStack:
    fleet: PgFleet
    temporal: TemporalDevServer
    payment_url: str

    @property
    def core_dsn(self) -> str:
        return self.fleet.core_dsn


@contextlib.contextmanager
def checkout_stack(shards: int) -> Iterator[CheckoutStack]:
    """Start the stack; stop every part of it on the way out, whatever happened."""
    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="invsaga-bench-"))
        fleet = start_fleet(shards, fsync=True)
        stack.callback(fleet.stop)
        temporal = start_dev_server(db_file=Path(scratch) / "temporal.sqlite", ui=False)
        stack.callback(temporal.stop)
        assert fleet.core is not None
        port = free_port()
        payments = subprocess.Popen(
            [sys.executable, "-m", "invsaga", "payments", "serve", "--port", str(port)],
            env={**os.environ, "INVSAGA_PAYMENT_DSN": fleet.core.create_database("payments")},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(payments.wait)
        stack.callback(payments.terminate)
        wait_for_port(port)
        yield CheckoutStack(fleet, temporal, f"http://127.0.0.1:{port}")
