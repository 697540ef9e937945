"""Payloads encrypted before they reach Temporal: AES-GCM, with the key's id in each payload's metadata.

Everything a checkout carries (the payment token, the customer, the lines, every activity's input and
result, and failure messages) is a payload, and Temporal stores payloads in its history, its database
and its backups, and shows them in the Web UI. With this codec the worker, the API, the CLI and every
client encrypt each payload before it leaves the process, so Temporal only ever holds ciphertext.

Keys rotate without breaking running or old workflows: one key (the first listed) encrypts, and every
listed key decrypts, chosen by the ``encryption-key-id`` in the payload's metadata. A payload without
that metadata was written before encryption was turned on, and passes through as it is, so old
histories keep replaying. Search attributes are not payloads of the codec: they stay readable, because
operators filter on them, and they carry ids and a status, never the token.

The key list is ``ID:BASE64KEY`` entries separated by commas or newlines (``INVSAGA_PAYLOAD_KEYS``, or a
file ``INVSAGA_PAYLOAD_KEYS_FILE`` points to); each key is 16, 24 or 32 random bytes (AES-128/192/256).
``invsaga payload-key new`` prints one.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import replace

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

from invsaga.domain.errors import ConfigurationError

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
_NONCE_BYTES = 12
_KEY_ID_RULE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class PayloadKeys:
    """The keys a process may use: ``current`` encrypts, all of ``keys`` decrypt."""

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if current not in keys:
            raise ConfigurationError(f"payload key {current!r} encrypts but is not among the keys")
        for key_id, key in keys.items():
            if not _KEY_ID_RULE.match(key_id):
                raise ConfigurationError(
                    f"payload key id {key_id!r}: use 1-64 letters, digits, '.', '_' or '-'"
                )
            if len(key) not in (16, 24, 32):
                raise ConfigurationError(f"payload key {key_id!r} is {len(key)} bytes; use 16, 24 or 32")
        self.current = current
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}

    @property
    def ids(self) -> list[str]:
        return list(self._ciphers)

    @classmethod
    def parse(cls, text: str, *, source: str = "INVSAGA_PAYLOAD_KEYS") -> PayloadKeys:
        """Read ``ID:BASE64KEY`` entries; the first one encrypts."""
        keys: dict[str, bytes] = {}
        for entry in re.split(r"[,\n]", text):
            entry = entry.strip()
            if not entry or entry.startswith("#"):
                continue
            key_id, sep, encoded = entry.partition(":")
            if not sep:
                raise ConfigurationError(f"{source}: an entry is not ID:BASE64KEY (got {key_id[:12]!r}...)")
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except binascii.Error:
                raise ConfigurationError(f"{source}: the key of {key_id.strip()!r} is not base64") from None
            if key_id.strip() in keys:
                raise ConfigurationError(f"{source}: key id {key_id.strip()!r} is listed twice")
            keys[key_id.strip()] = key
        if not keys:
            raise ConfigurationError(f"{source} lists no key")
        return cls(keys, next(iter(keys)))

    def encrypt(self, data: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(_NONCE_BYTES)
        return self.current, nonce + self._ciphers[self.current].encrypt(nonce, data, None)

    def decrypt(self, key_id: str, data: bytes) -> bytes:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise ValueError(
                f"payload encrypted with key {key_id!r}, which this process does not have "
                f"(it has {', '.join(self._ciphers)}): keep every key listed until no history uses it"
            )
        try:
            return cipher.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], None)
        except InvalidTag:
            raise ValueError(
                f"payload under key {key_id!r} does not decrypt: altered, or another key"
            ) from None


def new_key_entry(key_id: str) -> str:
    """A fresh ``ID:BASE64KEY`` entry (AES-256)."""
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(32)).decode()}"


class EncryptionCodec(PayloadCodec):
    def __init__(self, keys: PayloadKeys) -> None:
        self.keys = keys

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        encoded = []
        for payload in payloads:
            key_id, data = self.keys.encrypt(payload.SerializeToString())
            encoded.append(Payload(metadata={"encoding": ENCODING, KEY_ID: key_id.encode()}, data=data))
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                decoded.append(payload)  # written before encryption was on: as it is
                continue
            key_id = payload.metadata.get(KEY_ID, b"").decode()
            decoded.append(Payload.FromString(self.keys.decrypt(key_id, payload.data)))
        return decoded


def data_converter(keys: PayloadKeys | None) -> DataConverter:
    """The pydantic converter every process uses; with keys, payloads and failure messages (which can
    quote an order's details) are encrypted."""
    if keys is None:
        return pydantic_data_converter
    return replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keys),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
