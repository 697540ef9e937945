"""A streamed ``text/csv`` request body, for the import routes.

The body is spooled (in memory up to 8 MiB, then to a temporary file) so that the import reads it as a
file, row by row, whatever its size; the body limit (``invsaga.api.limits``) still caps it.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO

from fastapi import Request

from invsaga.api.errors import UnsupportedMediaType

_SPOOL_IN_MEMORY = 8 * 1024 * 1024


@asynccontextmanager
async def csv_body(request: Request) -> AsyncIterator[IO[bytes]]:
    """The request's UTF-8 CSV body as a file at its start; any other media type is 415."""
    content_type = request.headers.get("content-type", "")
    media_type, _sep, parameters = content_type.partition(";")
    if media_type.strip().lower() != "text/csv":
        raise UnsupportedMediaType(f"send the CSV as text/csv, not {media_type.strip() or 'no content type'}")
    if "charset" in parameters.lower() and "utf-8" not in parameters.lower().replace('"', ""):
        raise UnsupportedMediaType("the CSV must be UTF-8")
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY, mode="w+b") as spool:
        async for chunk in request.stream():
            spool.write(chunk)
        spool.seek(0)
        yield spool
