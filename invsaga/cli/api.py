"""``invsaga api`` serves the HTTP API; ``invsaga api-key`` makes and hashes its keys."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from invsaga.cli.errors import fail
from invsaga.settings import load_settings

ScopeOption = typer.Option(
    "checkout", "--scope", "-s", help="checkout (services) or admin (operators)", show_default=True
)


def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on. Default: INVSAGA_API_HOST.")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port to listen on. Default: INVSAGA_API_PORT.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes. Default: INVSAGA_API_WORKERS.")
    ] = None,
) -> None:
    """Serve the HTTP API (docs at /docs) until interrupted."""
    import uvicorn

    from invsaga.api.app import create_app
    from invsaga.api.limits import KEEP_ALIVE_SECONDS

    settings = load_settings()
    # Built here even with several workers, so bad configuration fails once with one clear line.
    app = create_app(settings)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    logging.getLogger("invsaga.api").info("configuration from %s", settings.loaded_from)
    workers = workers or settings.api_workers
    host = host or settings.api_host
    port = port or settings.api_port
    if workers == 1:
        uvicorn.run(
            app, host=host, port=port, timeout_graceful_shutdown=30, timeout_keep_alive=KEEP_ALIVE_SECONDS
        )
    else:
        # Each worker process builds its own app (and connections) from the environment.
        uvicorn.run(
            "invsaga.api.app:create_app_from_env",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            timeout_graceful_shutdown=30,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            # A worker imports the whole app before it can answer the supervisor's ping; on a busy
            # machine that takes longer than uvicorn's default 5 s, and it would be killed as hung.
            timeout_worker_healthcheck=30,
        )


def hash_command(
    key: Annotated[
        str | None, typer.Argument(help="The raw key. Omit it (or pass -) to read it from stdin.")
    ] = None,
    scope: str = ScopeOption,
) -> None:
    """Print the INVSAGA_API_KEYS entry for an existing key. Reading from stdin keeps the key out of
    your shell history."""
    from invsaga.api.auth import Scope, key_entry

    raw = key if key not in (None, "-") else sys.stdin.readline()
    raw = (raw or "").strip()
    if not raw:
        raise fail("no key given")
    try:
        print(key_entry(Scope(scope), raw))
    except ValueError:
        raise fail(f"unknown scope {scope!r}: use checkout or admin") from None


def new_command(scope: str = ScopeOption) -> None:
    """Create a random key: prints the key (give it to the client) and its INVSAGA_API_KEYS entry."""
    from invsaga.api.auth import Scope, key_entry, new_key

    try:
        chosen = Scope(scope)
    except ValueError:
        raise fail(f"unknown scope {scope!r}: use checkout or admin") from None
    raw = new_key()
    print(f"key:   {raw}")
    print(f"entry: {key_entry(chosen, raw)}")


def mount(app: typer.Typer) -> None:
    app.command("api")(serve)
    keys = typer.Typer(help="Create and hash API keys.", no_args_is_help=True)
    keys.command("new")(new_command)
    keys.command("hash")(hash_command)
    app.add_typer(keys, name="api-key")
