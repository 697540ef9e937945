"""``invsaga dev``: start the whole local stack in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from invsaga.cli.errors import fail

#: Exit codes (sysexits): a pinned port that is taken is the caller's to fix; a running stack is
#: "try again later".
EXIT_PORT_UNAVAILABLE = 2
EXIT_ALREADY_RUNNING = 75


def _port_option(flag: str, what: str, default: int) -> Any:
    return typer.Option(
        None, flag, min=1, max=65535, metavar="PORT", help=f"Pin {what} to PORT (default {default}, if free)."
    )


def dev(
    data_dir: Path = typer.Option(Path(".data"), "--data-dir", envvar="INVSAGA_DATA_DIR"),
    shards: int = typer.Option(4, "--shards", min=1, max=64),
    no_seed: bool = typer.Option(False, "--no-seed", help="Do not load the demo catalog and stock."),
    headless: bool = typer.Option(False, "--headless", help="Run Temporal without its Web UI."),
    port_base: int | None = typer.Option(
        None,
        "--port-base",
        min=1,
        max=65535,
        metavar="N",
        help="Pin every port: the API at N, then the Web UI (unless --headless), Temporal, the codec "
        "server, payments, the worker's metrics and Postgres (core, then each shard) at N+1, N+2, ...",
    ),
    api_port: int | None = _port_option("--api-port", "the HTTP API", 8000),
    ui_port: int | None = _port_option("--ui-port", "the Temporal Web UI", 8233),
    temporal_port: int | None = _port_option("--temporal-port", "the Temporal frontend", 7233),
    codec_port: int | None = _port_option("--codec-port", "the codec server", 8234),
    payments_port: int | None = _port_option("--payments-port", "the sandbox payment provider", 8081),
    metrics_port: int | None = _port_option("--metrics-port", "the worker's Prometheus metrics", 9464),
    postgres_port: int | None = typer.Option(
        None,
        "--postgres-port",
        min=1,
        max=65535,
        metavar="PORT",
        help="Pin Postgres: the core database at PORT, shard i at PORT+1+i (default 55439, if free).",
    ),
) -> None:
    """Start Temporal with its UI, Postgres shards, payments, a worker and the API; Ctrl-C stops all.

    Each service takes its default port when it is free; when it is not, the stack says which port it
    took instead. A port pinned with a flag or --port-base must be free, or nothing starts.
    """
    from invsaga.dev.lock import StackAlreadyRunning
    from invsaga.dev.ports import PortUnavailable
    from invsaga.dev.stack import DevStack

    pinned = {
        key: port
        for key, port in {
            "api": api_port,
            "ui": ui_port,
            "temporal": temporal_port,
            "codec": codec_port,
            "payments": payments_port,
            "metrics": metrics_port,
            "postgres": postgres_port,
        }.items()
        if port is not None
    }
    if headless and ui_port is not None:
        raise fail("--ui-port pins the Web UI, which --headless turns off: give one of them")
    stack = DevStack(
        data_dir, shards=shards, seed=not no_seed, ui=not headless, pinned_ports=pinned, port_base=port_base
    )
    code = 0
    try:
        stack.start()
        print("inventory-saga dev stack is up:")
        for name, url in stack.endpoints.items():
            print(f"  {name:<16} {url}")
        for scope, key in stack.api_keys.items():
            print(f"  {'api key ' + scope:<16} {key}")
        print(f"  {'payload keys':<16} {stack.payload_keys_file}")
        for note in stack.port_plan.notes:
            print(f"  note: {note}")
        print(f"endpoints written to {stack.data_dir / 'stack.json'}; Ctrl-C stops everything")
        code = stack.wait()
    except StackAlreadyRunning as exc:
        raise fail(str(exc), EXIT_ALREADY_RUNNING) from None
    except PortUnavailable as exc:
        raise fail(str(exc), EXIT_PORT_UNAVAILABLE) from None
    finally:
        if stack.fleet is not None:
            print("stopping the dev stack...")
        stack.stop()
    raise typer.Exit(code)


def mount(app: typer.Typer) -> None:
    app.command("dev")(dev)
