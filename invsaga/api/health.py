"""Liveness and readiness. Ready means Temporal and every database answer, each within a short timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from fastapi import APIRouter

from invsaga.api.deps import ApiDeps, Deps
from invsaga.api.models import Liveness, Readiness
from invsaga.api.problems import problem_responses
from invsaga.domain.errors import ShardUnavailable
from invsaga.store.databases import shard_label, verify_shard
from invsaga.store.migrations import check_schema

router = APIRouter(tags=["operations"])

CHECK_TIMEOUT_SECONDS = 2.0


async def _outcome(probe: Callable[[], Awaitable[None]]) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await probe()
    except TimeoutError:
        return f"down: no answer within {CHECK_TIMEOUT_SECONDS:g}s"
    except Exception as exc:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return f"down: {message}"[:300]
    return "ok"


async def readiness_checks(deps: ApiDeps) -> dict[str, str]:
    """Every dependency by name, and "ok" or why it is down; all probed concurrently."""

    async def temporal() -> None:
        serving = await deps.temporal.service_client.check_health(
            timeout=timedelta(seconds=CHECK_TIMEOUT_SECONDS)
        )
        if not serving:
            raise RuntimeError("the workflow service is not serving")

    async def core() -> None:
        await check_schema(deps.databases.core, "core", label="core database")

    def shard(index: int) -> Callable[[], Awaitable[None]]:
        return lambda: verify_shard(deps.databases.shards[index], index)

    probes: dict[str, Callable[[], Awaitable[None]]] = {
        "temporal": temporal,
        "core database": core,
        **{shard_label(i): shard(i) for i in deps.databases.serving()},
    }
    outcomes = await asyncio.gather(*(_outcome(probe) for probe in probes.values()))
    return dict(zip(probes, outcomes, strict=True))


@router.get("/healthz", summary="Liveness", response_model=Liveness)
async def healthz() -> Liveness:
    """200 while the process serves requests. It checks nothing else: see /readyz."""
    return Liveness(status="ok")


@router.get(
    "/readyz", summary="Readiness", response_model=Readiness, responses=problem_responses(ShardUnavailable)
)
async def readyz(deps: Deps) -> Readiness:
    """200 when Temporal and every database answer; otherwise 503 naming what is down (`down`)."""
    checks = await readiness_checks(deps)
    down = [name for name, outcome in checks.items() if outcome != "ok"]
    if down:
        raise ShardUnavailable(f"not ready: {', '.join(down)} down", down=down, checks=checks)
    return Readiness(status="ready", checks=checks)
