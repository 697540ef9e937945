"""``invsaga codec-server`` serves the payload codec to the Temporal Web UI and CLI;
``invsaga payload-key new`` makes a payload key."""

from __future__ import annotations

import logging
import sys
from datetime import date
from typing import Annotated

import typer

from invsaga.cli.errors import fail
from invsaga.domain.errors import ConfigurationError
from invsaga.settings import load_settings

DEFAULT_UI_ORIGIN = "http://localhost:8233"

ROTATION = """\
To encrypt with this key from now on, list it FIRST in INVSAGA_PAYLOAD_KEYS (or in the file
INVSAGA_PAYLOAD_KEYS_FILE names) of every worker, API, codec server and client, and keep every older
entry after it: each still decrypts the histories written under it. When processes restart one by one,
add the entry LAST everywhere first, then move it first. Drop an old entry only once no workflow history
uses it (docs/operations.md, "Payload encryption")."""


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8234,
    ui_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--ui-origin",
            help=f"The Web UI's origin, scheme://host:port, allowed by CORS (repeatable). "
            f"Default: {DEFAULT_UI_ORIGIN}.",
        ),
    ] = None,
    dev_without_credential: Annotated[
        bool,
        typer.Option(
            "--dev-without-credential",
            help="Development only (invsaga dev): answer without an admin API key; loopback addresses only.",
        ),
    ] = False,
) -> None:
    """Serve the payload codec (POST /decode, /encode) to the Temporal Web UI and CLI; admin API key."""
    import uvicorn

    from invsaga.api.auth import ApiKeys
    from invsaga.api.codec_server import create_codec_app, require_loopback_bind
    from invsaga.temporal.configured import payload_keys

    settings = load_settings()
    keys = payload_keys(settings)
    if keys is None:
        raise fail(
            "no payload keys, so there is nothing to decode: set INVSAGA_PAYLOAD_KEYS or "
            "INVSAGA_PAYLOAD_KEYS_FILE (`invsaga payload-key new` makes a key)",
            78,
        )
    if dev_without_credential:
        require_loopback_bind(host)
    app = create_codec_app(
        keys,
        api_keys=None if dev_without_credential else ApiKeys.parse(settings.api_keys),
        ui_origins=ui_origin or [DEFAULT_UI_ORIGIN],
        dev_without_credential=dev_without_credential,
    )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    log = logging.getLogger("invsaga.codec")
    log.info("configuration from %s; payload keys %s", settings.loaded_from, ", ".join(keys.ids))
    if dev_without_credential:
        log.warning("development mode: answering without a credential, on %s only", host)
    uvicorn.run(app, host=host, port=port, timeout_graceful_shutdown=10)


def new_payload_key(
    key_id: Annotated[
        str | None,
        typer.Option("--id", help="The key's id, written into every payload it encrypts. Default: today."),
    ] = None,
) -> None:
    """Print a fresh ID:BASE64KEY entry (AES-256) on stdout, and how to rotate to it on stderr."""
    from invsaga.temporal.codec import PayloadKeys, new_key_entry

    entry = new_key_entry(key_id or date.today().isoformat())
    try:
        PayloadKeys.parse(entry)
    except ConfigurationError as exc:
        raise fail(exc.message) from None
    print(entry)
    print(ROTATION, file=sys.stderr)


def mount(app: typer.Typer) -> None:
    app.command("codec-server")(serve)
    keys = typer.Typer(help="Make payload encryption keys.", no_args_is_help=True)
    keys.command("new")(new_payload_key)
    app.add_typer(keys, name="payload-key")
