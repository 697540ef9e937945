"""Opaque keyset cursors: the sort key of the last row a page showed, for the next page to start after.

A cursor is base64url of a small JSON array, so a client treats it as a token and never builds one; one
it altered or truncated is refused as invalid input, never passed to SQL as it came.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from invsaga.domain.errors import InvalidInput

#: Longer than any cursor we hand out (a timestamp and an id of at most 100 characters, or two codes).
MAX_CURSOR_LENGTH = 512


def encode_cursor(*key: Any) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, *kinds: type) -> list[Any]:
    """The key ``encode_cursor`` wrote, checked to hold one value of each of ``kinds``, in order."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidInput("cursor: not a cursor this API returned (too long)")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidInput("cursor: not a cursor this API returned") from None
    if (
        not isinstance(key, list)
        or len(key) != len(kinds)
        # bool is an int in Python; a cursor never holds one.
        or any(isinstance(v, bool) or not isinstance(v, kind) for v, kind in zip(key, kinds, strict=True))
        # Postgres text cannot hold NUL; a bigint is at most 2**63 - 1.
        or any(isinstance(v, str) and "\x00" in v for v in key)
        or any(isinstance(v, int) and not 0 <= v < 2**63 for v in key)
    ):
        raise InvalidInput("cursor: not a cursor this API returned")
    return key
