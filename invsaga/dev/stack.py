"""``invsaga dev``: the whole local stack in one foreground process.

It starts Postgres shards and the core database, the Temporal dev server with its Web UI (SQLite in
WAL mode under the data directory, so checkouts survive a restart), migrates, seeds a demo catalog,
then runs the sandbox payment provider, a worker and the HTTP API as child processes. It writes every
endpoint to ``<data-dir>/stack.json``, which the other ``invsaga`` commands read when no environment is
set. Ctrl-C or SIGTERM stops every child it started.

Payloads are encrypted as in production, under a key made once in ``<data-dir>/payload-keys``; the
codec server runs in its dev mode (no credential, loopback only) and the Web UI decodes through it, so
a developer reads checkouts in the UI while the history on disk holds ciphertext.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from pathlib import Path

from invsaga.cli.settings import STACK_FILE
from invsaga.dev.lock import StackLock
from invsaga.dev.ports import PortPlan, Service, plan_ports, wait_for_port
from invsaga.dev.postgres import PgFleet, server_os_user, start_fleet
from invsaga.dev.temporal import TemporalDevServer, start_dev_server
from invsaga.domain.keys import demo_seed_key
from invsaga.settings import Settings, load_settings
from invsaga.store.catalog import Product, upsert_products
from invsaga.store.databases import Databases, migrate_all
from invsaga.store.stock import StockStore
from invsaga.temporal.codec import PayloadKeys, new_key_entry

PAYLOAD_KEYS_FILE = "payload-keys"

DEMO_CATALOG = [
    (Product(sku="MUG-BLUE", name="Blue enamel mug", price=Decimal("12.50")), 100),
    (Product(sku="TSHIRT-L", name="Logo T-shirt, large", price=Decimal("25.00")), 50),
    (Product(sku="SNEAKER-42", name="Running sneaker, EU 42", price=Decimal("89.90")), 20),
    (Product(sku="LAPTOP-PRO", name="Laptop Pro 14", price=Decimal("1999.00")), 5),
    (Product(sku="FLASH-DEAL", name="Flash-sale headphones", price=Decimal("9.99")), 1000),
]


def _pg_base_dir(data_dir: Path) -> Path:
    """Postgres runs as the postgres OS user under root, which cannot enter a private home folder."""
    wanted = data_dir / "postgres"
    user = server_os_user()
    if user is None:
        return wanted
    probe = subprocess.run(["runuser", "-u", user, "--", "test", "-x", str(data_dir.resolve())], check=False)
    if probe.returncode == 0:
        return wanted
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"invsaga-{digest}" / "postgres"


def dev_payload_keys(data_dir: Path) -> Path:
    """The file holding the dev stack's payload key, made once (mode 0600) and reused by every
    restart. The Temporal database under ``data_dir`` is encrypted under it, so a file that no longer
    parses is an error to fix, never replaced: a new key could not read a single stored history."""
    path = data_dir / PAYLOAD_KEYS_FILE
    if path.exists():
        PayloadKeys.parse(path.read_text(), source=str(path))
        return path
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(f"# invsaga dev's payload key: {data_dir / 'temporal.sqlite'} is encrypted under it\n")
        file.write(new_key_entry(f"dev-{date.today().isoformat()}") + "\n")
    return path


def dev_services(shards: int, *, ui: bool, codec: bool) -> list[Service]:
    """The stack's listening services with their default ports, in ``--port-base`` order."""
    services = [Service("api", "the API", "--api-port", 8000)]
    if ui:
        services.append(Service("ui", "the Temporal Web UI", "--ui-port", 8233))
    services.append(Service("temporal", "Temporal", "--temporal-port", 7233))
    if codec:
        services.append(Service("codec", "the codec server", "--codec-port", 8234))
    services += [
        Service("payments", "the sandbox payment provider", "--payments-port", 8081),
        Service("metrics", "the worker's metrics", "--metrics-port", 9464),
        Service(
            "postgres",
            "Postgres",
            "--postgres-port",
            55439,
            count=shards + 1,
            parts=("Postgres (core)", *(f"Postgres (shard {i})" for i in range(shards))),
        ),
    ]
    return services


class DevStack:
    def __init__(
        self,
        data_dir: Path,
        *,
        shards: int,
        seed: bool,
        ui: bool = True,
        pinned_ports: Mapping[str, int] | None = None,
        port_base: int | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.shard_count = shards
        self.seed = seed
        self.ui = ui
        self.pinned_ports = dict(pinned_ports or {})
        self.port_base = port_base
        self.lock = StackLock(self.data_dir)
        self.port_plan = PortPlan()
        self.fleet: PgFleet | None = None
        self.temporal: TemporalDevServer | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.endpoints: dict[str, str] = {}
        self.env: dict[str, str] = {}
        self.api_keys: dict[str, str] = {}
        self.payload_keys_file = self.data_dir / PAYLOAD_KEYS_FILE

    # --- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start everything, or raise StackAlreadyRunning / PortUnavailable having touched nothing."""
        self.lock.acquire(stack_file=self.data_dir / STACK_FILE)
        # The codec server lives beside the API (FastAPI): without it the UI shows ciphertext.
        services = dev_services(self.shard_count, ui=self.ui, codec=_has_api())
        # Its notes (a default port taken, and the port used instead) are printed with the endpoints.
        self.port_plan = plan = plan_ports(services, self.pinned_ports, base=self.port_base)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        core_port, *shard_ports = plan.ports["postgres"]
        self.fleet = start_fleet(
            self.shard_count,
            base_dir=_pg_base_dir(self.data_dir),
            fsync=True,
            ports=[*shard_ports, core_port],
        )
        payments_dsn = self._payments_database()
        self.payload_keys_file = dev_payload_keys(self.data_dir)
        ui_port = plan.port("ui") if self.ui else None
        codec_port = plan.port("codec") if "codec" in plan.ports else None
        codec_url = f"http://127.0.0.1:{codec_port}" if codec_port else None
        self.temporal = start_dev_server(
            db_file=self.data_dir / "temporal.sqlite",
            port=plan.port("temporal"),
            ui=self.ui,
            ui_port=ui_port,
            log_file=self.data_dir / "logs" / "temporal.log",
            ui_codec_endpoint=codec_url,
        )
        payments_port = plan.port("payments")
        api_port = plan.port("api")
        self.env = {
            # A file, not the key itself: stack.json (which hand-run commands read) is not private.
            "INVSAGA_PAYLOAD_KEYS_FILE": str(self.payload_keys_file),
            "INVSAGA_SHARD_DSNS": ",".join(self.fleet.shard_dsns),
            "INVSAGA_CORE_DSN": self.fleet.core_dsn,
            "INVSAGA_PAYMENT_DSN": payments_dsn,
            "INVSAGA_PAYMENT_URL": f"http://127.0.0.1:{payments_port}",
            "INVSAGA_TEMPORAL_ADDRESS": self.temporal.address,
            "INVSAGA_API_PORT": str(api_port),
            "INVSAGA_METRICS_PORT": str(plan.port("metrics")),
        }
        if _has_api():
            from invsaga.api.auth import generate_dev_keys

            dev_keys = generate_dev_keys(self.data_dir)  # reused across restarts, mode 0600
            self.env["INVSAGA_API_KEYS"] = dev_keys.setting
            self.api_keys = {scope.value: key for scope, key in dev_keys.keys.items()}
        settings = load_settings(**{k.removeprefix("INVSAGA_").lower(): v for k, v in self.env.items()})
        asyncio.run(self._prepare_databases(settings))

        self._spawn("payments", ["payments", "serve", "--port", str(payments_port)])
        wait_for_port(payments_port, timeout=30)
        self._spawn("worker", ["worker"])
        if _has_api():
            self._spawn("api", ["api"])
            wait_for_port(api_port, timeout=30)
            self.endpoints["api"] = f"http://127.0.0.1:{api_port}"
            self.endpoints["api_docs"] = f"http://127.0.0.1:{api_port}/docs"
        if codec_port and codec_url:
            self._spawn("codec", self._codec_server_args(codec_port, ui_port))
            wait_for_port(codec_port, timeout=30)
            self.endpoints["codec_server"] = codec_url
        if self.temporal.ui_url:
            self.endpoints = {"temporal_ui": self.temporal.ui_url, **self.endpoints}
        self.endpoints.update(
            {
                "temporal": self.temporal.address,
                "payments": self.env["INVSAGA_PAYMENT_URL"],
                "worker_metrics": f"http://127.0.0.1:{self.env['INVSAGA_METRICS_PORT']}/metrics",
                "core_db": self.fleet.core_dsn,
                **{f"shard_{i}": dsn for i, dsn in enumerate(self.fleet.shard_dsns)},
            }
        )
        self._write_stack_file()

    @staticmethod
    def _codec_server_args(port: int, ui_port: int | None) -> list[str]:
        # The UI answers on 127.0.0.1 and on localhost, which are two origins to a browser.
        origins = [f"http://{host}:{ui_port}" for host in ("127.0.0.1", "localhost")] if ui_port else []
        args = ["codec-server", "--dev-without-credential", "--host", "127.0.0.1", "--port", str(port)]
        return args + [arg for origin in origins for arg in ("--ui-origin", origin)]

    def _payments_database(self) -> str:
        assert self.fleet is not None and self.fleet.core is not None
        marker = self.fleet.base_dir / "payments-db-created"
        if not marker.exists():
            self.fleet.core.create_database("payments")
            marker.touch()
        return self.fleet.core.dsn("payments")

    async def _prepare_databases(self, settings: Settings) -> None:
        await migrate_all(settings)
        if not self.seed:
            return
        databases = await Databases.open(settings)
        try:
            await upsert_products(databases.core, [product for product, _ in DEMO_CATALOG])
            store = StockStore(databases)
            for product, quantity in DEMO_CATALOG:
                await store.receive(product.sku, "main", quantity, idempotency_key=demo_seed_key(product.sku))
        finally:
            await databases.close()

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.data_dir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        env = {**os.environ, **self.env}
        command = [sys.executable, "-m", "invsaga", *args]
        self.children[name] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def _write_stack_file(self) -> None:
        payload = {"endpoints": self.endpoints, "env": self.env, "pid": os.getpid()}
        (self.data_dir / STACK_FILE).write_text(json.dumps(payload, indent=2) + "\n")

    # --- run and stop --------------------------------------------------------------------------

    def wait(self) -> int:
        """Block until a signal arrives or a child dies; returns the exit code for the command."""
        stop = {"signal": 0}

        def on_signal(signum: int, _frame: object) -> None:
            stop["signal"] = signum

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while not stop["signal"]:
            for name, child in self.children.items():
                if child.poll() is not None:
                    print(
                        f"{name} exited with {child.returncode}; see {self.data_dir}/logs/{name}.log",
                        file=sys.stderr,
                    )
                    return 1
            time.sleep(0.5)
        return 0

    def stop(self) -> None:
        """Stop what this stack started; a stack that never got the lock owns nothing to stop."""
        if not self.lock.held:
            return
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children.values():
            try:
                child.wait(timeout=40)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if self.temporal is not None:
            self.temporal.stop()
        if self.fleet is not None:
            self.fleet.stop()
        stack_file = self.data_dir / STACK_FILE
        stack_file.unlink(missing_ok=True)
        self.lock.release()


def _has_api() -> bool:
    try:
        import invsaga.api.app  # noqa: F401
    except ImportError:
        return False
    return True
