"""``invsaga dev``: start the whole local stack in the foreground."""

from __future__ import annotations

from pathlib import Path

import typer


def dev(
    data_dir: Path = typer.Option(Path(".data"), "--data-dir", envvar="INVSAGA_DATA_DIR"),
    shards: int = typer.Option(4, "--shards", min=1, max=64),
    no_seed: bool = typer.Option(False, "--no-seed", help="Do not load the demo catalog and stock."),
    headless: bool = typer.Option(False, "--headless", help="Run Temporal without its Web UI."),
) -> None:
    """Start Temporal with its UI, Postgres shards, payments, a worker and the API; Ctrl-C stops all."""
    from invsaga.dev.stack import DevStack

    stack = DevStack(data_dir, shards=shards, seed=not no_seed, ui=not headless)
    code = 0
    try:
        stack.start()
        print("inventory-saga dev stack is up:")
        for name, url in stack.endpoints.items():
            print(f"  {name:<16} {url}")
        for scope, key in stack.api_keys.items():
            print(f"  {'api key ' + scope:<16} {key}")
        print(f"  {'payload keys':<16} {stack.payload_keys_file}")
        print(f"endpoints written to {stack.data_dir / 'stack.json'}; Ctrl-C stops everything")
        code = stack.wait()
    finally:
        print("stopping the dev stack...")
        stack.stop()
    raise typer.Exit(code)


def mount(app: typer.Typer) -> None:
    app.command("dev")(dev)
