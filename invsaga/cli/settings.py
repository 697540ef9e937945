"""Settings for the commands a developer runs by hand (stock, audit, checkout, reconcile, db).

When no ``INVSAGA_*`` variable is set, a running ``invsaga dev`` stack's file supplies them, so the
README's commands work against the local stack with nothing exported. The worker and the API never do
this (``invsaga.settings.load_settings``): started in a folder that holds a dev stack, they must not
connect to it. The stack file's name and shape are defined here, and the dev stack writes it.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from invsaga.settings import Settings, load_settings, load_settings_over
from invsaga.store.databases import Databases

STACK_FILE = "stack.json"

#: Variables that say where a dev stack is or how to report, not how to connect: they do not count as
#: "configured" when deciding whether a command may fall back to a running dev stack.
_NOT_CONFIGURATION = {"INVSAGA_DATA_DIR", "INVSAGA_DEBUG"}


def read_stack_env(data_dir: Path) -> dict[str, str]:
    """The environment a running ``invsaga dev`` published in its stack file, or nothing."""
    try:
        payload = json.loads((data_dir / STACK_FILE).read_text())
    except (OSError, ValueError):
        return {}
    env = payload.get("env") if isinstance(payload, dict) else None
    return {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {}


def load_command_settings() -> Settings:
    """The environment's settings, or a running dev stack's when nothing at all is configured."""
    if any(key.startswith("INVSAGA_") and key not in _NOT_CONFIGURATION for key in os.environ):
        return load_settings()
    data_dir = Path(os.environ.get("INVSAGA_DATA_DIR", ".data"))
    found = read_stack_env(data_dir)
    if not found:
        return load_settings()
    defaults = {key.removeprefix("INVSAGA_").lower(): value for key, value in found.items()}
    return load_settings_over(defaults, source=f"the dev stack's {data_dir / STACK_FILE}")


@asynccontextmanager
async def command_databases(*, check: bool = True) -> AsyncIterator[Databases]:
    """The databases of ``load_command_settings``, closed when the command is done. ``check=False``
    opens them unchecked: engines connect on first use, so a command reaches only the databases it
    needs, however many others are down."""
    databases = await Databases.open(load_command_settings(), check=check)
    try:
        yield databases
    finally:
        await databases.close()
