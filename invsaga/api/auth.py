"""Bearer API keys with scopes.

``INVSAGA_API_KEYS`` lists comma-separated entries ``SCOPE:SHA256HEX``, the SHA-256 of a raw key, so the
environment never holds a usable key. A key listed under several scopes has all of them.

The rule, per route (also in the `api` package docstring and on /docs):

- ``checkout`` (services): read stock; start, follow and cancel checkouts.
- ``admin`` (operators): read stock; set stock, receive stock, import stock.

The scopes are deliberately disjoint apart from reading stock, which both audiences need (an operator
reads the version to send as If-Match): a service key cannot change stock, and an operator key cannot
charge a buyer. List one key under both scopes for a client that needs both.

A missing or unknown key is 401, a known key without the route's scope is 403. Keys are compared as
digests with ``hmac.compare_digest`` against every entry, and neither keys nor digests are logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from invsaga.api.errors import Forbidden, Unauthorized
from invsaga.domain.errors import ConfigurationError


class Scope(StrEnum):
    CHECKOUT = "checkout"
    ADMIN = "admin"


#: Raw keys look like this, so secret scanners and people can tell one when they see it.
KEY_PREFIX = "isk_"
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
#: Longer bearer tokens are refused unhashed: no configured key is that long.
MAX_KEY_LENGTH = 256
DEV_KEYS_FILE = "api-keys.json"


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


def key_entry(scope: Scope, raw_key: str) -> str:
    """The ``INVSAGA_API_KEYS`` entry that grants ``scope`` to ``raw_key``."""
    return f"{scope.value}:{hash_key(raw_key)}"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """Who called: a short id derived from the key's digest (safe to store and log) and its scopes."""

    key_id: str
    scopes: frozenset[Scope]


class ApiKeys:
    def __init__(self, entries: list[tuple[Scope, bytes]]) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    def grants(self, scope: Scope) -> bool:
        """Whether some listed key has ``scope``."""
        return any(granted is scope for granted, _ in self._entries)

    @classmethod
    def parse(cls, setting: str) -> ApiKeys:
        entries: list[tuple[Scope, bytes]] = []
        for position, raw_entry in enumerate(setting.split(","), start=1):
            entry = raw_entry.strip()
            if not entry:
                continue
            scope, _, digest = entry.partition(":")
            digest = digest.strip().lower()
            if scope.strip() not in {s.value for s in Scope} or not _HEX_DIGEST.match(digest):
                # Never echo the entry: someone may have pasted a raw key by mistake.
                raise ConfigurationError(
                    f"INVSAGA_API_KEYS entry {position} is not SCOPE:SHA256HEX with SCOPE one of "
                    f"{', '.join(s.value for s in Scope)}; `invsaga api-key hash` prints a valid entry"
                )
            entries.append((Scope(scope.strip()), bytes.fromhex(digest)))
        return cls(entries)

    def authenticate(self, raw_key: str) -> Principal | None:
        if len(raw_key) > MAX_KEY_LENGTH:
            return None
        digest = hashlib.sha256(raw_key.encode("utf-8")).digest()
        scopes = set()
        # Every entry is compared, matched or not, so timing says nothing about which one matched.
        for scope, expected in self._entries:
            if hmac.compare_digest(digest, expected):
                scopes.add(scope)
        if not scopes:
            return None
        return Principal(key_id=digest.hex()[:16], scopes=frozenset(scopes))


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key: `Authorization: Bearer isk_...`. `invsaga dev` prints one of each scope.",
)

Authorizer = Callable[[Request, HTTPAuthorizationCredentials | None], Awaitable[Principal]]


@dataclass(frozen=True)
class Requirement:
    """Which scopes a route admits; the one check, inside FastAPI's dependencies and outside them."""

    scopes: tuple[Scope, ...]

    def admit(self, keys: ApiKeys, credentials: HTTPAuthorizationCredentials | None) -> Principal:
        """The caller, or the 401/403 refusal."""
        if credentials is None:
            raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
        principal = keys.authenticate(credentials.credentials)
        if principal is None:
            raise Unauthorized("the API key is not valid")
        if not principal.scopes & frozenset(self.scopes):
            names = " or ".join(s.value for s in self.scopes)
            raise Forbidden(f"this route needs an API key with the {names} scope")
        return principal

    async def caller(self, connection: HTTPConnection) -> Principal:
        """``admit`` for a request FastAPI has not parsed (the fast refusal path): the same header
        parsing (``HTTPBearer``) and the same keys."""
        return self.admit(connection.app.state.api_keys, await _bearer(connection))


def requires(*scopes: Scope) -> Authorizer:
    """A dependency admitting keys with any of ``scopes``; it returns the caller."""
    requirement = Requirement(scopes)

    async def authorize(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        return requirement.admit(request.app.state.api_keys, credentials)

    return authorize


# --- dev keys --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DevKeys:
    #: Raw keys, one per scope, to print for the developer.
    keys: dict[Scope, str]

    @property
    def setting(self) -> str:
        """The value for ``INVSAGA_API_KEYS``."""
        return ",".join(key_entry(scope, raw) for scope, raw in self.keys.items())


def generate_dev_keys(data_dir: Path) -> DevKeys:
    """One key per scope for ``invsaga dev``, kept in ``<data_dir>/api-keys.json`` (mode 0600) so they
    survive restarts of the stack; a missing or unreadable file is replaced by fresh keys."""
    path = data_dir / DEV_KEYS_FILE
    try:
        stored = json.loads(path.read_text())
        keys = {scope: str(stored[scope.value]) for scope in Scope}
        if all(key.startswith(KEY_PREFIX) for key in keys.values()):
            return DevKeys(keys)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    keys = {scope: new_key() for scope in Scope}
    data_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump({scope.value: key for scope, key in keys.items()}, file, indent=2)
        file.write("\n")
    os.chmod(path, 0o600)
    return DevKeys(keys)


#: The callers each route takes, as dependencies: reads take either scope, checkouts ``checkout``,
#: changes ``admin``.
Reader = Annotated[Principal, Depends(requires(Scope.CHECKOUT, Scope.ADMIN))]
SERVICE = Requirement((Scope.CHECKOUT,))
Service = Annotated[Principal, Depends(requires(*SERVICE.scopes))]
Operator = Annotated[Principal, Depends(requires(Scope.ADMIN))]
#: What every route that needs a key may answer without one, or with one that lacks the scope.
AUTH_ERRORS = (Unauthorized, Forbidden)
