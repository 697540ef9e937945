"""``invsaga payments``: run the sandbox payment provider that ships with us.

The sandbox is part of the dev stack (``invsaga.dev``), which production code never imports: it is
loaded only when this command runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer

from invsaga.cli.errors import run
from invsaga.settings import Settings, load_settings

if TYPE_CHECKING:
    from fastapi import FastAPI


def mount(app: typer.Typer) -> None:
    group = typer.Typer(help="The sandbox payment provider.", no_args_is_help=True)
    group.command("serve")(serve)
    app.add_typer(group, name="payments")


def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on. Default: the host of INVSAGA_PAYMENT_URL.")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port to listen on. Default: the port of INVSAGA_PAYMENT_URL."),
    ] = None,
) -> None:
    """Serve the sandbox provider until interrupted, keeping its state in INVSAGA_PAYMENT_DSN."""
    import uvicorn

    settings, app = run(_prepare())
    # By default listen where the workers' client will call, so one setting wires both ends.
    default = urlsplit(settings.payment_url)
    uvicorn.run(
        app,
        host=host or default.hostname or "127.0.0.1",
        port=port or default.port or (443 if default.scheme == "https" else 80),
        timeout_graceful_shutdown=5,
    )


async def _prepare() -> tuple[Settings, FastAPI]:
    from invsaga.dev.payments.sandbox import SandboxSettings, check_database, create_app, database_url

    settings = load_settings()
    dsn = SandboxSettings().payment_dsn
    await check_database(database_url(dsn))
    return settings, create_app(dsn)
