"""The real servers the fault suite runs against, and the handles it uses to break them.

One ``FaultStack`` per test package: three separate Postgres servers (two inventory shards, and one for
the sandbox provider's database, so the core database can be stopped on its own), the core database,
the Temporal dev server persisting to SQLite (so it can be killed and restarted on the same port and
file with every workflow intact) and the sandbox payment provider as its own ``invsaga payments serve``
process. Workers and API processes are started per scenario, as ``invsaga worker`` and ``invsaga api``.

Every child process is started with a parent-death signal where the platform has ``setpriv``, so even a
killed pytest leaves no worker, API or sandbox behind; the fixtures stop all of them in any case.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx

from invsaga.api.auth import Scope, key_entry, new_key
from invsaga.dev.ports import free_port, wait_for_port
from invsaga.dev.postgres import PgFleet, PgServer, start_fleet
from invsaga.dev.temporal import TemporalDevServer, start_dev_server
from invsaga.settings import Settings, load_settings

T = TypeVar("T")

#: The scenarios' hold sweeper runs as often as it did before the default became 5 minutes: a hold
#: orphaned by a terminated workflow must be freed within the scenario.
SWEEP_EVERY = timedelta(seconds=30)

# --- size --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """How big every scenario is. ``ci`` runs in ``make test``; ``full`` runs by hand."""

    name: str
    #: Orders per scenario.
    orders: int
    #: Orders arrive over this long (seconds), with the faults injected in between.
    arrival_seconds: float
    #: How long one outage lasts (seconds).
    outage_seconds: float
    #: How many times each scenario injects its fault.
    rounds: int
    #: Bound on waiting for every checkout of a scenario to end.
    settle_seconds: float
    #: pytest-timeout per scenario.
    timeout_seconds: int
    #: SKUs per inventory shard in each scenario.
    skus_per_shard: int = 2


SCALES = {
    "ci": Scale(
        "ci",
        orders=28,
        arrival_seconds=7.0,
        outage_seconds=3.0,
        rounds=1,
        settle_seconds=150.0,
        timeout_seconds=280,
    ),
    "full": Scale(
        "full",
        orders=300,
        arrival_seconds=75.0,
        outage_seconds=6.0,
        rounds=3,
        settle_seconds=600.0,
        timeout_seconds=1500,
        skus_per_shard=3,
    ),
}


def current_scale() -> Scale:
    name = os.environ.get("INVSAGA_FAULT_SCALE", "ci").strip().lower() or "ci"
    if name not in SCALES:
        raise RuntimeError(f"INVSAGA_FAULT_SCALE must be one of {sorted(SCALES)}, got {name!r}")
    return SCALES[name]


# --- API keys the API processes accept -----------------------------------------------------------------

CHECKOUT_KEY = new_key()
ADMIN_KEY = new_key()
API_KEYS_SETTING = ",".join([key_entry(Scope.CHECKOUT, CHECKOUT_KEY), key_entry(Scope.ADMIN, ADMIN_KEY)])
CHECKOUT_AUTH = {"Authorization": f"Bearer {CHECKOUT_KEY}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


# --- child processes -------------------------------------------------------------------------------------

_SETPRIV = shutil.which("setpriv")


class Child:
    """One ``python -m invsaga ...`` process we own, logging to its own file."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.env = dict(env)
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        #: Where a worker answers its health check (workers only).
        self.health_url = ""

    def start(self) -> Child:
        assert not self.alive, f"{self.name} is already running"
        command = [sys.executable, "-m", "invsaga", *self.args]
        if _SETPRIV:
            # Dies with us: a pytest killed by its own timeout or by CI leaves nothing running.
            command = [_SETPRIV, "--pdeathsig", "KILL", "--", *command]
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {self.starts + 1} of {self.name} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, grace: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


async def wait_http_ok(url: str, *, within: float, what: str, child: Child | None = None) -> None:
    """Poll ``url`` until it answers 200; fail with the child's log when it dies or time runs out."""
    deadline = time.monotonic() + within
    last = "no answer"
    async with httpx.AsyncClient(timeout=3) as http:
        while True:
            if child is not None and child.process is not None and child.process.poll() is not None:
                raise AssertionError(
                    f"{what} exited with {child.process.returncode} while starting:\n{child.log_tail()}"
                )
            try:
                response = await http.get(url)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            if time.monotonic() > deadline:
                tail = f"\n{child.log_tail()}" if child else ""
                raise AssertionError(f"{what} not ready at {url} within {within:.0f}s: {last}{tail}")
            await asyncio.sleep(0.1)


def run_in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end on its own loop and thread, away from pytest-asyncio's session loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


# --- the stack -------------------------------------------------------------------------------------------


class FaultStack:
    """Long-lived servers shared by every scenario, and the faults that can be done to them."""

    SHARDS = 2

    def __init__(self) -> None:
        self.base_dir = Path(tempfile.mkdtemp(prefix="invsaga-faults-"))
        self.log_dir = self.base_dir / "logs"
        self.log_dir.mkdir()
        self.fleet: PgFleet | None = None
        self.temporal: TemporalDevServer | None = None
        self.temporal_port = free_port()
        self.temporal_starts = 0
        self.payments_port = free_port()
        self.payments: Child | None = None
        self.children: list[Child] = []
        self.payments_dsn = ""
        #: Worker and API processes shared by scenarios with the same settings (harness.Processes).
        self.pools: dict[Any, Any] = {}
        #: The task queue the hold sweeper's schedule currently starts its runs on.
        self.schedule_queue = ""

    # --- the servers ------------------------------------------------------------------------------

    @property
    def shard_servers(self) -> list[PgServer]:
        assert self.fleet is not None
        return self.fleet.shards[: self.SHARDS]

    @property
    def core_server(self) -> PgServer:
        assert self.fleet is not None and self.fleet.core is not None
        return self.fleet.core

    @property
    def payments_db_server(self) -> PgServer:
        assert self.fleet is not None
        return self.fleet.shards[self.SHARDS]

    @property
    def shard_dsns(self) -> list[str]:
        return [server.dsn("inventory") for server in self.shard_servers]

    @property
    def core_dsn(self) -> str:
        return self.core_server.dsn("core")

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"

    @property
    def payments_url(self) -> str:
        return f"http://127.0.0.1:{self.payments_port}"

    def start(self) -> None:
        from invsaga.store.databases import migrate_all

        # Shard servers, then one more for the sandbox's own database, then the core database.
        self.fleet = start_fleet(self.SHARDS + 1)
        self.payments_dsn = self.payments_db_server.create_database("payments")
        run_in_thread(migrate_all(self.settings()))
        self.start_temporal()
        self.payments = self.child(
            "payments", ["payments", "serve", "--port", str(self.payments_port)], self.base_env()
        )
        self.payments.start()
        run_in_thread(
            wait_http_ok(f"{self.payments_url}/healthz", within=60, what="payments", child=self.payments)
        )

    def close(self) -> None:
        for child in self.children:
            child.kill()
        if self.temporal is not None:
            self.temporal.stop()
        if self.fleet is not None:
            self.fleet.stop()
        if not os.environ.get("INVSAGA_FAULT_KEEP"):
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # --- configuration ----------------------------------------------------------------------------

    def base_env(self, **overrides: str) -> dict[str, str]:
        """The environment of every child: no INVSAGA_* of our own process leaks in."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("INVSAGA_")}
        env.update(
            {
                "INVSAGA_DATA_DIR": str(self.base_dir),
                "INVSAGA_SHARD_DSNS": ",".join(self.shard_dsns),
                "INVSAGA_CORE_DSN": self.core_dsn,
                "INVSAGA_TEMPORAL_ADDRESS": self.temporal_address,
                "INVSAGA_PAYMENT_URL": self.payments_url,
                "INVSAGA_PAYMENT_DSN": self.payments_dsn,
                "INVSAGA_POOL_SIZE": "10",
                "INVSAGA_API_KEYS": API_KEYS_SETTING,
                # The workers' scheduled reconciler must only report: a repair would hide what the
                # scenario's own checks are there to find.
                "INVSAGA_RECONCILE_REPAIR": "false",
                # Holds the scenarios orphan (a workflow terminated mid-saga) must free within a run.
                "INVSAGA_SWEEP_EVERY_SECONDS": str(int(SWEEP_EVERY.total_seconds())),
            }
        )
        env.update(overrides)
        return env

    def settings(self, **overrides: object) -> Settings:
        base: dict[str, object] = {
            "shard_dsns": ",".join(self.shard_dsns),
            "core_dsn": self.core_dsn,
            "temporal_address": self.temporal_address,
            "payment_url": self.payments_url,
            "pool_size": 10,
            "api_keys": API_KEYS_SETTING,
        }
        return load_settings(**{**base, **overrides})

    def child(self, name: str, args: list[str], env: Mapping[str, str]) -> Child:
        child = Child(name, args, env, self.log_dir)
        self.children.append(child)
        return child

    # --- faults: Temporal ---------------------------------------------------------------------------

    def start_temporal(self) -> None:
        self.temporal_starts += 1
        self.temporal = start_dev_server(
            db_file=self.base_dir / "temporal.sqlite",
            port=self.temporal_port,
            ui=False,
            log_file=self.log_dir / "temporal.log",
        )

    def kill_temporal(self) -> None:
        """SIGKILL the dev server; its SQLite file (WAL) keeps every workflow for the restart."""
        assert self.temporal is not None
        self.temporal.process.kill()
        self.temporal.process.wait(timeout=30)

    @property
    def temporal_alive(self) -> bool:
        return self.temporal is not None and self.temporal.process.poll() is None

    # --- faults: Postgres ---------------------------------------------------------------------------

    @staticmethod
    async def stop_server(server: PgServer) -> None:
        """``pg_ctl stop -m fast``: every connection is cut and in-flight transactions roll back."""
        await asyncio.to_thread(server.stop)

    @staticmethod
    async def start_server(server: PgServer) -> None:
        await asyncio.to_thread(server.start, fsync=False)

    # --- faults: the payment provider ---------------------------------------------------------------

    def kill_payments(self) -> None:
        assert self.payments is not None
        self.payments.kill()

    async def start_payments(self) -> None:
        assert self.payments is not None
        if not self.payments.alive:
            self.payments.start()
        await wait_http_ok(f"{self.payments_url}/healthz", within=60, what="payments", child=self.payments)

    # --- between scenarios ------------------------------------------------------------------------

    async def ensure_up(self) -> None:
        """Bring back anything a failed scenario left down, so the next one starts from a whole stack."""
        for server in [*self.shard_servers, self.core_server, self.payments_db_server]:
            if not server.running:
                await self.start_server(server)
        if not self.temporal_alive:
            self.start_temporal()
        await asyncio.to_thread(wait_for_port, self.temporal_port, 60)
        await self.start_payments()
