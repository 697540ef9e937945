"""Test tokens stand in for the card network: each one picks how the sandbox answers a charge.

The tokens and what they do are listed in ``invsaga.dev.payments.sandbox``'s docstring.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from invsaga.payments.models import ChargeStatus

MAX_FLAKY_FAILURES = 100
MAX_SLOW_MS = 60_000

_FLAKY = re.compile(r"tok_flaky_(\d{1,9})")
_SLOW = re.compile(r"tok_slow_(\d{1,9})")
_LATE = re.compile(r"tok_late_(\d{1,9})")


class UnknownToken(ValueError):
    pass


@dataclass(frozen=True)
class TokenBehaviour:
    status: ChargeStatus = ChargeStatus.SUCCEEDED
    #: The first ``failures`` attempts for an idempotency key answer 503 and charge nothing.
    failures: int = 0
    #: How long the answer to a POST is held back after the charge is recorded.
    delay_seconds: float = 0.0
    #: How long a POST waits before the charge is recorded: a charge that lands late.
    record_after_seconds: float = 0.0


def behaviour_of(token: str) -> TokenBehaviour:
    if token == "tok_success":
        return TokenBehaviour()
    if token == "tok_decline":
        return TokenBehaviour(status=ChargeStatus.DECLINED)
    if match := _FLAKY.fullmatch(token):
        failures = int(match.group(1))
        if failures > MAX_FLAKY_FAILURES:
            raise UnknownToken(f"tok_flaky_<N> allows at most {MAX_FLAKY_FAILURES} failures")
        return TokenBehaviour(failures=failures)
    if match := _SLOW.fullmatch(token):
        delay_ms = int(match.group(1))
        if delay_ms > MAX_SLOW_MS:
            raise UnknownToken(f"tok_slow_<MS> allows at most {MAX_SLOW_MS} ms")
        return TokenBehaviour(delay_seconds=delay_ms / 1000)
    if match := _LATE.fullmatch(token):
        delay_ms = int(match.group(1))
        if delay_ms > MAX_SLOW_MS:
            raise UnknownToken(f"tok_late_<MS> allows at most {MAX_SLOW_MS} ms")
        return TokenBehaviour(record_after_seconds=delay_ms / 1000)
    raise UnknownToken(
        f"unknown test token {token!r}; use tok_success, tok_decline, tok_flaky_<N>, tok_slow_<MS>"
        " or tok_late_<MS>"
    )
