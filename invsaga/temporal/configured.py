"""A Temporal connection as the ``INVSAGA_*`` settings describe it: address, namespace, TLS or mTLS,
an API key, and the payload keys. The worker, the API, the CLI and the reconciler all connect through
this, so each of them encrypts and authenticates the same way."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from invsaga.domain.errors import ConfigurationError
from invsaga.settings import Settings
from invsaga.temporal.codec import PayloadKeys
from invsaga.temporal.connection import connect


async def connect_configured(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    return await connect(
        settings.temporal_address,
        settings.temporal_namespace,
        keys=payload_keys(settings),
        tls=tls_config(settings),
        api_key=settings.temporal_api_key.get_secret_value() or None,
        runtime=runtime,
    )


def payload_keys(settings: Settings) -> PayloadKeys | None:
    """The payload keys, from ``INVSAGA_PAYLOAD_KEYS`` or the file ``INVSAGA_PAYLOAD_KEYS_FILE`` names;
    None when neither is set (payloads go to Temporal in plain JSON)."""
    inline = settings.payload_keys.get_secret_value()
    if inline.strip():
        return PayloadKeys.parse(inline)
    if settings.payload_keys_file:
        text = _read("INVSAGA_PAYLOAD_KEYS_FILE", settings.payload_keys_file).decode()
        return PayloadKeys.parse(text, source=f"INVSAGA_PAYLOAD_KEYS_FILE ({settings.payload_keys_file})")
    return None


def tls_config(settings: Settings) -> TLSConfig | bool | None:
    """What ``Client.connect`` takes as ``tls``: None lets an API key turn TLS on by itself."""
    cert, key = settings.temporal_tls_cert_file, settings.temporal_tls_key_file
    if bool(cert) != bool(key):
        raise ConfigurationError(
            "mTLS needs both INVSAGA_TEMPORAL_TLS_CERT_FILE and INVSAGA_TEMPORAL_TLS_KEY_FILE, or neither"
        )
    files = settings.temporal_tls_ca_file or cert
    if not files and not settings.temporal_tls_server_name:
        return True if settings.temporal_tls else None
    return TLSConfig(
        server_root_ca_cert=_read("INVSAGA_TEMPORAL_TLS_CA_FILE", settings.temporal_tls_ca_file)
        if settings.temporal_tls_ca_file
        else None,
        client_cert=_read("INVSAGA_TEMPORAL_TLS_CERT_FILE", cert) if cert else None,
        client_private_key=_read("INVSAGA_TEMPORAL_TLS_KEY_FILE", key) if key else None,
        domain=settings.temporal_tls_server_name or None,
    )


def _read(variable: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{variable}: cannot read {path}: {exc.strerror or exc}") from None
