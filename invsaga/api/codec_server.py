"""The codec server: how the Temporal Web UI and the ``temporal`` CLI read payloads we encrypt.

Workers and clients encrypt every payload before Temporal sees it (``invsaga.temporal.codec``), so the
Web UI and ``temporal workflow show`` see ciphertext. Both can hand payloads to a remote codec, which
is this app: ``POST /decode`` and ``POST /encode`` take and answer ``{"payloads": [...]}``, the protobuf
JSON of ``temporal.api.common.v1.Payloads``. The Web UI calls it from the operator's browser (sending
``X-Namespace``), so CORS admits the UI's origins and no other; ``GET /healthz`` needs nothing.

Decoded payloads are the payment token and the customer's order, so every call needs an operator's
key: ``Authorization: Bearer <key>`` with a key of the ``admin`` scope in ``INVSAGA_API_KEYS``, checked
by ``invsaga.api.auth`` as the HTTP API checks it (401 without a key or with an unknown one, 403 for a
``checkout`` key). ``temporal workflow show --codec-endpoint URL --codec-auth 'Bearer KEY'`` sends one.
A payload that does not decrypt (a key id this process lacks, altered bytes) is a 422 problem.

Dev mode (``dev_without_credential``) is for ``invsaga dev`` alone. The dev Web UI has no login, so it
has no token to pass, and this mode answers without one. It is only acceptable because nothing but
this machine can reach it: ``invsaga codec-server --dev-without-credential`` refuses to bind anything
but a loopback address (``require_loopback_bind``), and the app itself refuses a peer that is not
loopback and a ``Host`` that does not name loopback (a web page rebinding its DNS name to 127.0.0.1).
Anyone with a shell on the machine can still decode: never use it where the keys guard real data.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from starlette.middleware.cors import CORSMiddleware
from temporalio.api.common.v1 import Payload, Payloads

from invsaga.api import problems
from invsaga.api.auth import ApiKeys, Scope, requires
from invsaga.api.errors import Forbidden, PayloadUndecodable, UnsupportedMediaType
from invsaga.api.limits import BodyLimitMiddleware
from invsaga.domain.errors import ConfigurationError, InvalidInput
from invsaga.temporal.codec import EncryptionCodec, PayloadKeys

log = logging.getLogger("invsaga.codec")

DEFAULT_PORT = 8234
#: Temporal refuses a payload over 2 MiB by default and JSON adds a third for base64; this leaves room
#: for a request carrying several large ones.
CODEC_BODY_LIMIT = 16 * 1024 * 1024
#: What the Web UI sends: a JSON body, the namespace, and (with a login) the user's token.
CORS_HEADERS = ["content-type", "x-namespace", "authorization"]


def create_codec_app(
    keys: PayloadKeys,
    *,
    api_keys: ApiKeys | None,
    ui_origins: Sequence[str] = (),
    dev_without_credential: bool = False,
) -> FastAPI:
    """The codec server for ``keys``. ``api_keys`` must grant the admin scope to someone, unless
    ``dev_without_credential`` (see the module docstring), which ignores them."""
    for origin in ui_origins:
        check_origin(origin)
    if dev_without_credential:
        guard = Depends(_loopback_only)
    elif api_keys is None or not api_keys.grants(Scope.ADMIN):
        raise ConfigurationError(
            "INVSAGA_API_KEYS lists no admin key, so the codec server would refuse everyone: "
            "make one with `invsaga api-key new --scope admin` and list its entry"
        )
    else:
        guard = Depends(requires(Scope.ADMIN))

    codec = EncryptionCodec(keys)
    router = APIRouter(dependencies=[guard])

    @router.post("/decode")
    async def decode(payloads: Annotated[list[Payload], Depends(_payloads)]) -> JSONResponse:
        try:
            decoded = await codec.decode(payloads)
        except (ValueError, DecodeError) as exc:
            raise PayloadUndecodable(str(exc)) from None
        return _answer(decoded)

    @router.post("/encode")
    async def encode(payloads: Annotated[list[Payload], Depends(_payloads)]) -> JSONResponse:
        return _answer(await codec.encode(payloads))

    # Not a public API: no schema or docs pages, which dev mode would serve to anyone on the machine.
    app = FastAPI(title="inventory-saga codec server", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.api_keys = api_keys
    problems.install(app)
    app.include_router(router)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(BodyLimitMiddleware, limit_for=lambda _path: CODEC_BODY_LIMIT)
    # Added last, so it runs first: a preflight is answered before authentication, which it carries none of.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(ui_origins),
        allow_methods=["POST", "OPTIONS"],
        allow_headers=CORS_HEADERS,
        max_age=600,
    )
    return app


def check_origin(origin: str) -> None:
    """A browser sends ``Origin: scheme://host[:port]`` exactly; anything else would never match."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
        raise ConfigurationError(
            f"UI origin {origin!r} is not scheme://host[:port] (no path, no trailing slash), "
            "e.g. http://localhost:8233"
        )


def require_loopback_bind(host: str) -> None:
    """Dev mode answers without a credential, so it may listen on this machine only."""
    if not _is_loopback(host):
        raise ConfigurationError(
            f"--dev-without-credential answers without a key, so it binds a loopback address only "
            f"(127.0.0.1, ::1 or localhost), not {host!r}"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def _loopback_only(request: Request) -> None:
    peer = request.client.host if request.client else ""
    if not (_is_loopback(peer) and _is_loopback(request.url.hostname or "")):
        raise Forbidden("the dev codec server answers requests from this machine, to a loopback address only")


async def _payloads(request: Request) -> list[Payload]:
    # Only a JSON body: a browser must then ask (preflight) before sending one cross-origin, which
    # CORS refuses to any page but the UI's.
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType("send the body as application/json: Payloads in protobuf JSON")
    try:
        message = json_format.Parse(await request.body(), Payloads())
    except (json_format.ParseError, ValueError) as exc:
        raise InvalidInput(f"the body is not Payloads in protobuf JSON: {exc}") from None
    return list(message.payloads)


def _answer(payloads: Sequence[Payload]) -> JSONResponse:
    # Always with the key: the Web UI reads `payloads` even when there are none.
    return JSONResponse({"payloads": [json_format.MessageToDict(p) for p in payloads]})
