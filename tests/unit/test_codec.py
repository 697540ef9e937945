"""The payload codec: what it writes carries no plaintext, old payloads pass through, keys rotate."""

from __future__ import annotations

import base64

import pytest
from temporalio.api.common.v1 import Payload

from invsaga.domain.checkout import CheckoutLine, CheckoutRequest
from invsaga.domain.errors import ConfigurationError
from invsaga.settings import load_settings
from invsaga.temporal.codec import (
    ENCODING,
    KEY_ID,
    EncryptionCodec,
    PayloadKeys,
    data_converter,
    new_key_entry,
)
from invsaga.temporal.configured import payload_keys, tls_config

REQUEST = CheckoutRequest(
    order_id="ord-secret",
    customer_id="cust-alice",
    lines=[CheckoutLine(sku="MUG-BLUE", quantity=1)],
    payment_token="tok_4242_do_not_log",
)


def keys(*ids: str) -> PayloadKeys:
    return PayloadKeys.parse(",".join(new_key_entry(key_id) for key_id in ids))


async def test_encoded_payloads_carry_no_plaintext_and_decode_to_the_original():
    converter = data_converter(keys("k1"))
    [encoded] = await converter.encode([REQUEST])
    assert encoded.metadata["encoding"] == ENCODING and encoded.metadata[KEY_ID] == b"k1"
    for secret in (b"tok_4242", b"cust-alice", b"ord-secret", b"MUG-BLUE"):
        assert secret not in encoded.SerializeToString()
    [decoded] = await converter.decode([encoded], [CheckoutRequest])
    assert decoded == REQUEST


async def test_the_same_payload_encrypts_differently_each_time():
    codec = EncryptionCodec(keys("k1"))
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"a":1}')
    first, second = await codec.encode([plain, plain])
    assert first.data != second.data  # a fresh nonce per payload


async def test_a_payload_written_before_encryption_passes_through():
    plain = (await data_converter(None).encode([REQUEST]))[0]
    assert plain.metadata["encoding"] == b"json/plain"
    assert await EncryptionCodec(keys("k1")).decode([plain]) == [plain]


async def test_rotation_old_key_still_decrypts_new_key_encrypts():
    old_entry, new_entry = new_key_entry("2026-01"), new_key_entry("2026-06")
    before = EncryptionCodec(PayloadKeys.parse(old_entry))
    after = EncryptionCodec(PayloadKeys.parse(f"{new_entry}\n{old_entry}"))
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"token":"tok_x"}')
    [written_before] = await before.encode([plain])
    [written_after] = await after.encode([plain])
    assert written_after.metadata[KEY_ID] == b"2026-06"
    assert await after.decode([written_before, written_after]) == [plain, plain]
    with pytest.raises(ValueError, match=r"2026-06.*does not have"):
        await before.decode([written_after])


async def test_an_altered_payload_is_refused():
    codec = EncryptionCodec(keys("k1"))
    [encoded] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b"{}")])
    encoded.data = encoded.data[:-1] + bytes([encoded.data[-1] ^ 1])
    with pytest.raises(ValueError, match="does not decrypt"):
        await codec.decode([encoded])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "lists no key"),
        ("k1", "not ID:BASE64KEY"),
        ("k1:not base64!", "not base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "5 bytes"),
        (f"{new_key_entry('k1')},{new_key_entry('k1')}", "listed twice"),
        (new_key_entry("bad id"), "1-64"),
    ],
)
def test_bad_key_lists_are_one_clear_configuration_error(text: str, problem: str):
    with pytest.raises(ConfigurationError, match=problem):
        PayloadKeys.parse(text)


def test_keys_come_from_the_setting_or_the_file_it_points_to(tmp_path, monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("INVSAGA_")]:
        monkeypatch.delenv(key)
    assert payload_keys(load_settings()) is None
    entry = new_key_entry("from-file")
    secret = tmp_path / "payload-keys"
    secret.write_text(f"# rotated 2026-12\n{entry}\n")
    assert payload_keys(load_settings(payload_keys_file=str(secret))).ids == ["from-file"]  # type: ignore[union-attr]
    inline = load_settings(payload_keys=new_key_entry("inline"), payload_keys_file=str(secret))
    assert payload_keys(inline).ids == ["inline"]  # type: ignore[union-attr]
    with pytest.raises(ConfigurationError, match="INVSAGA_PAYLOAD_KEYS_FILE: cannot read"):
        payload_keys(load_settings(payload_keys_file=str(tmp_path / "missing")))


def test_tls_settings(tmp_path):
    assert tls_config(load_settings()) is None
    assert tls_config(load_settings(temporal_tls=True)) is True
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"CA")
    config = tls_config(
        load_settings(temporal_tls_ca_file=str(ca), temporal_tls_server_name="temporal.internal")
    )
    assert not isinstance(config, bool) and config is not None
    assert (config.server_root_ca_cert, config.domain, config.client_cert) == (
        b"CA",
        "temporal.internal",
        None,
    )
    with pytest.raises(ConfigurationError, match="both"):
        tls_config(load_settings(temporal_tls_cert_file=str(ca)))
    with pytest.raises(ConfigurationError, match="INVSAGA_TEMPORAL_TLS_CA_FILE: cannot read"):
        tls_config(load_settings(temporal_tls_ca_file=str(tmp_path / "nope.pem")))
