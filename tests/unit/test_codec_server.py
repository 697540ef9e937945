"""The codec server's rules that need no Temporal (in process, over httpx's ASGI transport): what dev
mode admits, what it refuses to bind, malformed bodies; and the dev stack's payload key file."""

from __future__ import annotations

import base64

import httpx
import pytest

from invsaga.api.auth import ApiKeys, Scope, key_entry, new_key
from invsaga.api.codec_server import CODEC_BODY_LIMIT, create_codec_app, require_loopback_bind
from invsaga.dev.stack import dev_payload_keys
from invsaga.domain.errors import ConfigurationError
from invsaga.temporal.codec import PayloadKeys, new_key_entry

KEYS = PayloadKeys.parse(new_key_entry("unit"))
PLAIN = {"metadata": {"encoding": base64.b64encode(b"json/plain").decode()}, "data": "e30="}


def _client(app, peer: str = "127.0.0.1", host: str = "127.0.0.1:8234") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 50000))
    return httpx.AsyncClient(transport=transport, base_url=f"http://{host}")


def _dev_app():
    return create_codec_app(KEYS, api_keys=None, dev_without_credential=True)


async def test_dev_mode_answers_loopback_without_a_credential():
    async with _client(_dev_app()) as http:
        sealed = await http.post("/encode", json={"payloads": [PLAIN]})
        assert sealed.status_code == 200
        opened = await http.post("/decode", json=sealed.json())
    assert opened.json() == {"payloads": [PLAIN]}


@pytest.mark.parametrize(
    ("peer", "host"),
    [("192.0.2.7", "127.0.0.1:8234"), ("127.0.0.1", "rebound.example:8234")],
    ids=["remote-peer", "dns-rebinding"],
)
async def test_dev_mode_refuses_anything_but_loopback(peer: str, host: str):
    async with _client(_dev_app(), peer=peer, host=host) as http:
        refused = await http.post("/decode", json={"payloads": [PLAIN]})
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7", "::", "codec.example"])
def test_dev_mode_binds_loopback_only(host: str):
    with pytest.raises(ConfigurationError, match="loopback"):
        require_loopback_bind(host)
    for loopback in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        require_loopback_bind(loopback)


def test_without_an_admin_key_the_server_refuses_to_start():
    checkout_only = ApiKeys.parse(key_entry(Scope.CHECKOUT, new_key()))
    for api_keys in (None, ApiKeys.parse(""), checkout_only):
        with pytest.raises(ConfigurationError, match="no admin key"):
            create_codec_app(KEYS, api_keys=api_keys)


@pytest.mark.parametrize("origin", ["http://localhost:8233/", "localhost:8233", "http://ui/path"])
def test_a_ui_origin_must_be_exactly_what_a_browser_sends(origin: str):
    with pytest.raises(ConfigurationError, match="scheme://host"):
        create_codec_app(KEYS, api_keys=None, ui_origins=[origin], dev_without_credential=True)


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{}", "text/plain", 415),  # what a page of another origin could send without asking
        (b'{"payloads": [{"data": 7}]}', "application/json", 422),
        (b"not json", "application/json", 422),
        (b"{}", "application/json", 200),
    ],
)
async def test_bodies_other_than_payloads_json_are_refused(content: bytes, content_type: str, status: int):
    async with _client(_dev_app()) as http:
        answer = await http.post("/decode", content=content, headers={"Content-Type": content_type})
    assert answer.status_code == status, answer.text
    if status == 200:
        assert answer.json() == {"payloads": []}  # the key is always there: the Web UI reads it
    else:
        assert answer.headers["content-type"] == "application/problem+json"


async def test_a_body_over_the_limit_is_413():
    async with _client(_dev_app()) as http:
        answer = await http.post(
            "/decode", content=b" " * (CODEC_BODY_LIMIT + 1), headers={"Content-Type": "application/json"}
        )
    assert answer.status_code == 413


def test_the_dev_payload_key_is_made_once_private_and_never_replaced(tmp_path):
    path = dev_payload_keys(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    first = path.read_text()
    assert PayloadKeys.parse(first).ids[0].startswith("dev-")
    assert dev_payload_keys(tmp_path).read_text() == first  # a restart reuses it
    path.write_text("garbled")
    with pytest.raises(ConfigurationError):
        dev_payload_keys(tmp_path)  # the stored histories need the old key: fix it, never replace it
    assert path.read_text() == "garbled"
