"""The sandbox payment provider: a FastAPI app that behaves like a real PSP, so the saga is exercised
against real HTTP, real timeouts and real idempotency rather than a mock.

State lives in its own Postgres database (``INVSAGA_PAYMENT_DSN``); the schema is created at start-up.
Amounts are integer minor units with an ISO 4217 currency. Errors are ``application/problem+json``
(RFC 9457) with a stable ``type`` from ``invsaga.payments.problems``.

    POST /v1/charges       Idempotency-Key header, {amount, currency, token, reference}
                           -> 201 charge, or 402 with the declined charge. The same key replays the
                           first answer (header ``Idempotent-Replayed: true``); the same key with
                           another body -> 409.
    GET  /v1/charges?idempotency_key=K, GET /v1/charges/{id}   -> 200 charge, or 404.
    POST /v1/voids         {charge_idempotency_key} -> 200 {charge_idempotency_key, charge}: no charge
                           can be made with that key any more (a later POST answers 409
                           charge-key-voided); ``charge`` is the one made before the void, if any.
                           The caller that gave up on a charge voids its key before refunding, so a
                           request still in flight cannot land after the refund looked.
    POST /v1/refunds       Idempotency-Key header, {charge_id, amount} -> 201 refund, replayed by key;
                           more than remains, or a declined charge -> 409; an unknown charge -> 404.
    GET  /healthz          -> 200 once the database answers.

Test tokens stand in for the card network:

    tok_success     the charge succeeds.
    tok_decline     the charge is declined: it is recorded, answered 402 with the declined charge, and a
                    replay of its key answers the same decline.
    tok_flaky_<N>   the first N attempts for an idempotency key answer 503 and charge nothing; later
                    attempts succeed. Attempts are counted in Postgres, so this holds across restarts and
                    across several sandbox processes.
    tok_slow_<MS>   the charge is recorded as succeeded at once, but every POST answer for it is held back
                    MS milliseconds, so a client with a shorter timeout cannot know the outcome and has to
                    look the charge up by key.
    tok_late_<MS>   the POST waits MS milliseconds before the charge is recorded (as succeeded): a charge
                    that lands after its caller gave up.
    anything else   422 (``unknown-token``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Annotated, Any, cast

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from starlette.exceptions import HTTPException

from invsaga.dev.payments.ledger import Ledger
from invsaga.dev.payments.tokens import UnknownToken, behaviour_of
from invsaga.domain.errors import ConfigurationError, PaymentUnavailable
from invsaga.payments.models import Charge, ChargeRequest, RefundRequest, Void, VoidRequest
from invsaga.payments.problems import (
    CHARGE_NOT_FOUND,
    IDEMPOTENCY_KEY_REQUIRED,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    PROBLEM_MEDIA_TYPE,
    TEMPORARILY_UNAVAILABLE,
    UNKNOWN_TOKEN,
    Problem,
    Rejected,
)
from invsaga.settings import to_asyncpg_url

MAX_KEY_LENGTH = 255


class SandboxSettings(BaseSettings):
    """The sandbox's own setting. Only the sandbox reads it, so it is not one of the shared settings
    (``invsaga.settings``) that the worker, the API and the CLI load."""

    model_config = SettingsConfigDict(env_prefix="INVSAGA_", extra="ignore")

    #: Postgres DSN of the sandbox provider's own database.
    payment_dsn: str = ""


def database_url(dsn: str) -> URL:
    """The sandbox's database URL, or a ConfigurationError naming the setting to fix."""
    if not dsn:
        raise ConfigurationError("INVSAGA_PAYMENT_DSN is not set: give the sandbox provider's Postgres DSN")
    try:
        return to_asyncpg_url(dsn)
    except ValueError as exc:
        raise ConfigurationError(f"INVSAGA_PAYMENT_DSN: {exc}") from None


async def check_database(url: URL) -> None:
    """Open the database and create the schema once, so start-up problems surface as one clear error."""
    where = f"{url.host}:{url.port or 5432}/{url.database}"
    try:
        ledger = await Ledger.open(url, pool_size=1)
    except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as exc:
        raise PaymentUnavailable(f"payment sandbox database {where} is unreachable: {exc}") from None
    except sa_exc.DBAPIError as exc:
        raise ConfigurationError(f"payment sandbox database {where}: {exc.orig}") from None
    await ledger.close()


def create_app(dsn: str) -> FastAPI:
    url = database_url(dsn)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        ledger = await Ledger.open(url)
        try:
            yield {"ledger": ledger}
        finally:
            await ledger.close()

    app = FastAPI(title="inventory-saga payment sandbox", lifespan=lifespan)
    app.include_router(router)
    app.add_exception_handler(Rejected, _rejected)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    return app


# --- requests -------------------------------------------------------------------------------------


def _ledger(request: Request) -> Ledger:
    return cast(Ledger, request.state.ledger)


def _idempotency_key(key: Annotated[str | None, Header(alias="Idempotency-Key")] = None) -> str:
    if not key or len(key) > MAX_KEY_LENGTH:
        raise Rejected(IDEMPOTENCY_KEY_REQUIRED, "send a unique Idempotency-Key header with every POST")
    return key


LedgerDep = Annotated[Ledger, Depends(_ledger)]
KeyDep = Annotated[str, Depends(_idempotency_key)]

router = APIRouter()


@router.post("/v1/charges", status_code=201, response_model=Charge)
async def create_charge(body: ChargeRequest, key: KeyDep, ledger: LedgerDep) -> JSONResponse:
    try:
        behaviour = behaviour_of(body.token)
    except UnknownToken as exc:
        raise Rejected(UNKNOWN_TOKEN, str(exc)) from None
    if behaviour.failures and await ledger.count_attempt(key) <= behaviour.failures:
        raise Rejected(TEMPORARILY_UNAVAILABLE, f"{body.token}: this attempt fails on purpose")
    if behaviour.record_after_seconds:
        await asyncio.sleep(behaviour.record_after_seconds)
    charge, replayed = await ledger.record_charge(key, body, behaviour.status)
    if behaviour.delay_seconds:
        await asyncio.sleep(behaviour.delay_seconds)
    return _resource(
        charge, HTTPStatus.CREATED if charge.succeeded else HTTPStatus.PAYMENT_REQUIRED, replayed
    )


@router.get("/v1/charges", response_model=Charge)
async def find_charge_by_key(
    ledger: LedgerDep, idempotency_key: Annotated[str, Query(min_length=1, max_length=MAX_KEY_LENGTH)]
) -> Charge:
    return _found(await ledger.find_charge(key=idempotency_key), f"no charge for key {idempotency_key!r}")


@router.get("/v1/charges/{charge_id}", response_model=Charge)
async def get_charge(charge_id: str, ledger: LedgerDep) -> Charge:
    return _found(await ledger.find_charge(charge_id=charge_id), f"no charge {charge_id!r}")


@router.post("/v1/voids", response_model=Void)
async def void_charge_key(body: VoidRequest, ledger: LedgerDep) -> Void:
    return await ledger.void_key(body.charge_idempotency_key)


@router.post("/v1/refunds", status_code=201)
async def create_refund(body: RefundRequest, key: KeyDep, ledger: LedgerDep) -> JSONResponse:
    refund, replayed = await ledger.refund(key, body)
    return _resource(refund, HTTPStatus.CREATED, replayed)


@router.get("/healthz")
async def healthz(ledger: LedgerDep) -> dict[str, str]:
    await ledger.ping()
    return {"status": "ok"}


def _found(charge: Charge | None, detail: str) -> Charge:
    if charge is None:
        raise Rejected(CHARGE_NOT_FOUND, detail)
    return charge


def _resource(resource: BaseModel, status: HTTPStatus, replayed: bool) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return JSONResponse(resource.model_dump(mode="json"), status_code=status, headers=headers)


# --- problems -------------------------------------------------------------------------------------


def _problem(problem: Problem) -> JSONResponse:
    return JSONResponse(
        problem.model_dump(mode="json", exclude_none=True),
        status_code=problem.status or HTTPStatus.INTERNAL_SERVER_ERROR,
        media_type=PROBLEM_MEDIA_TYPE,
    )


async def _rejected(_: Request, exc: Exception) -> JSONResponse:
    return _problem(cast(Rejected, exc).problem)


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    errors = [
        {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
        for err in cast(RequestValidationError, exc).errors()
    ]
    detail = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in errors)
    return _problem(Problem.of(INVALID_REQUEST, detail, errors=errors))


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    error = cast(HTTPException, exc)
    phrase = HTTPStatus(error.status_code).phrase
    return _problem(Problem(title=phrase, status=error.status_code, detail=str(error.detail)))


async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    return _problem(Problem.of(INTERNAL_ERROR, type(exc).__name__))
