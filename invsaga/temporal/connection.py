"""Connecting to Temporal the same way everywhere: the pydantic data converter, end to end.

It takes an address, a namespace and what the connection needs (payload keys, TLS, an API key), not
the settings, so a service that only starts checkouts needs nothing but temporalio, pydantic and
cryptography (``invsaga.client``). Processes that read ``INVSAGA_*`` use ``invsaga.temporal.configured``.
"""

from __future__ import annotations

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from invsaga.domain.errors import ConfigurationError
from invsaga.temporal.codec import PayloadKeys, data_converter


async def connect(
    address: str,
    namespace: str = "default",
    *,
    keys: PayloadKeys | None = None,
    tls: TLSConfig | bool | None = None,
    api_key: str | None = None,
    runtime: Runtime | None = None,
) -> Client:
    """``keys`` encrypt every payload (``invsaga.temporal.codec``); ``tls`` is a TLSConfig for mTLS or
    a private CA, or True for the system's CAs; ``api_key`` is sent as a bearer token (Temporal Cloud),
    and turns TLS on unless ``tls`` says otherwise."""
    try:
        return await Client.connect(
            address,
            namespace=namespace,
            data_converter=data_converter(keys),
            tls=tls,
            api_key=api_key,
            runtime=runtime,
        )
    except RuntimeError as exc:
        raise ConfigurationError(
            f"cannot reach Temporal at {address} (namespace {namespace}): {exc}"
        ) from exc
