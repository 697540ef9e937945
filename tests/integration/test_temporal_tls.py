"""TLS and mTLS to Temporal, through the settings every process reads.

The Temporal dev server speaks plaintext only, so a TLS terminator stands in front of it here: it
requires a client certificate signed by the test CA (mTLS), speaks HTTP/2 by ALPN as gRPC needs, and
forwards the bytes to the dev server. Certificates are made for the test with ``cryptography``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from invsaga.domain.errors import ConfigurationError
from invsaga.temporal.configured import connect_configured


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by another CA
    stranger_key: Path


def _issue(name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, *, ca: bool = False):  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    return cert, key


def _write(directory: Path, name: str, cert, key) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key = _issue("test CA", None, ca=True)
    other_cert, other_key = _issue("another CA", None, ca=True)
    ca, _ = _write(directory, "ca", ca_cert, ca_key)
    server = _write(directory, "server", *_issue("localhost", (ca_cert.subject, ca_key)))
    client = _write(directory, "client", *_issue("worker", (ca_cert.subject, ca_key)))
    stranger = _write(directory, "stranger", *_issue("worker", (other_cert.subject, other_key)))
    return Pki(ca, *server, *client, *stranger)


@contextlib.asynccontextmanager
async def tls_terminator(pki: Pki, upstream: str) -> AsyncIterator[str]:
    """mTLS in front of a plaintext gRPC server; yields the TLS address."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    host, port = upstream.rsplit(":", 1)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def test_mtls_with_the_settings_reaches_temporal_and_a_stranger_does_not(saga_settings, pki):
    async with tls_terminator(pki, saga_settings.temporal_address) as address:
        settings = saga_settings.model_copy(
            update={
                "temporal_address": address,
                "temporal_tls_ca_file": str(pki.ca),
                "temporal_tls_cert_file": str(pki.client_cert),
                "temporal_tls_key_file": str(pki.client_key),
                "temporal_tls_server_name": "localhost",
            }
        )
        client = await connect_configured(settings)
        assert (await client.count_workflows()).count >= 0  # a real RPC, over mTLS

        stranger = settings.model_copy(
            update={
                "temporal_tls_cert_file": str(pki.stranger_cert),
                "temporal_tls_key_file": str(pki.stranger_key),
            }
        )
        without_cert = settings.model_copy(update={"temporal_tls_cert_file": "", "temporal_tls_key_file": ""})
        plaintext = settings.model_copy(
            update={
                "temporal_tls_ca_file": "",
                "temporal_tls_cert_file": "",
                "temporal_tls_key_file": "",
                "temporal_tls_server_name": "",
            }
        )
        for refused in (stranger, without_cert, plaintext):
            with pytest.raises(ConfigurationError, match="cannot reach Temporal"):
                client = await asyncio.wait_for(connect_configured(refused), 30)
                await client.count_workflows()
