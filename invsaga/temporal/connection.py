"""Connecting to Temporal the same way everywhere: the pydantic data converter, end to end.

It takes an address and a namespace, not the settings, so a service that only starts checkouts needs
nothing but temporalio and pydantic (``invsaga.client``).
"""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime

from invsaga.domain.errors import ConfigurationError


async def connect(address: str, namespace: str = "default", *, runtime: Runtime | None = None) -> Client:
    try:
        return await Client.connect(
            address, namespace=namespace, data_converter=pydantic_data_converter, runtime=runtime
        )
    except RuntimeError as exc:
        raise ConfigurationError(
            f"cannot reach Temporal at {address} (namespace {namespace}): {exc}"
        ) from exc
