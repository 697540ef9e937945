"""Schema fuzzing: schemathesis generates requests from /openapi.json and sends them over real HTTP.

No answer may be a 5xx, and every answer must conform to the document: a documented status, a documented
content type, a body that matches its schema, the documented headers. ``INVSAGA_FUZZ_EXAMPLES`` sets the
cases per operation (default sized for CI); runs are derandomized so CI is repeatable.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from typing import Any

import httpx
import pytest
import schemathesis
import schemathesis.specs.openapi.schemas  # imported here, not in fuzz()'s thread: see fuzz()
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import checks
from schemathesis.openapi.checks import JsonSchemaError

from tests.integration.api_fixtures import (
    BOTH_KEY,
    bearer,
)

EXAMPLES_PER_OPERATION = int(os.environ.get("INVSAGA_FUZZ_EXAMPLES", "40"))
MIN_CASES = 300

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


@schemathesis.serializer("text/csv")
def _csv(_context: Any, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def fuzz(base_url: str, document: dict[str, Any]) -> dict[str, int]:
    """Run every operation's generated cases; returns how many ran per operation.

    This runs in a thread, so the modules it would import lazily are imported with this test module:
    compiling (pytest rewrites schemathesis as a plugin) in a thread while the worker compiles too can
    fail on CPython 3.11 (python/cpython#106905).
    """
    schema = schemathesis.openapi.from_dict(document)
    headers = bearer(BOTH_KEY)
    ran: dict[str, int] = {}

    def cases_of(operation: schemathesis.APIOperation) -> Any:
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            ran[operation.label] = ran.get(operation.label, 0) + 1
            response = case.call(base_url=base_url, headers=headers, timeout=60)
            case.validate_response(response, checks=CHECKS)

        return run

    for result in schema.get_all_operations():
        cases_of(result.ok())()
    return ran


async def test_generated_requests_never_fail_the_server_or_the_schema(api, http):
    document = (await http.get("/openapi.json")).json()
    ran = await asyncio.to_thread(fuzz, api.url, document)
    assert set(ran) == {
        f"{method.upper()} {path}" for path, ops in document["paths"].items() for method in ops
    }
    print(f"schemathesis cases per operation: {ran}")
    assert sum(ran.values()) >= MIN_CASES, ran
    assert all(ran.values()), ran
    # The stack is still healthy after the barrage.
    assert (await http.get("/readyz")).status_code == 200


async def test_the_fuzzer_catches_a_response_that_breaks_its_schema(api, http):
    """Guard against a vacuous run: the same checks fail on a documented 200 with an undocumented body."""
    document = (await http.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(document)
    operation = schema["/healthz"]["GET"]
    case = operation.Case()
    fake = httpx.Response(200, json={"status": 1}, request=httpx.Request("GET", f"{api.url}/healthz"))
    fake.elapsed = timedelta(milliseconds=1)
    with pytest.raises(BaseExceptionGroup) as caught:
        case.validate_response(fake, checks=CHECKS)
    assert caught.group_contains(JsonSchemaError)
