"""The sandbox payment provider and its client, against a real sandbox (uvicorn on a loopback port) and
a real Postgres database. Only the card network is simulated, by the test tokens."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from invsaga.dev.payments.server import SandboxServer
from invsaga.dev.ports import free_port
from invsaga.dev.postgres import PgFleet
from invsaga.domain.errors import InvalidInput, PaymentDeclined, PaymentUnavailable
from invsaga.payments.client import PaymentClient, PaymentOutcomeUnknown
from invsaga.payments.models import MAX_AMOUNT, Charge
from invsaga.payments.problems import (
    CHARGE_NOT_FOUND,
    CHARGE_NOT_REFUNDABLE,
    IDEMPOTENCY_KEY_REQUIRED,
    IDEMPOTENCY_KEY_REUSED,
    INVALID_REQUEST,
    PROBLEM_MEDIA_TYPE,
    REFUND_EXCEEDS_CHARGE,
    TEMPORARILY_UNAVAILABLE,
    UNKNOWN_TOKEN,
    ProblemType,
)

#: The installed console script, run as a user would.
INVSAGA = str(Path(sys.executable).parent / "invsaga")


@pytest.fixture(scope="module")
def payment_dsn(pg_fleet: PgFleet) -> str:
    assert pg_fleet.core is not None
    try:
        return pg_fleet.core.create_database("payments")
    except subprocess.CalledProcessError as exc:
        if b"already exists" not in exc.stderr:
            raise
        return pg_fleet.core.dsn("payments")


@pytest.fixture(scope="module")
def sandbox(payment_dsn: str) -> Iterator[SandboxServer]:
    with SandboxServer(payment_dsn) as server:
        yield server


@pytest.fixture
async def client(sandbox: SandboxServer) -> AsyncIterator[PaymentClient]:
    async with PaymentClient(sandbox.url, timeout=5) as payment_client:
        yield payment_client


@pytest.fixture
async def http(sandbox: SandboxServer) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=sandbox.url, timeout=10, limits=limits) as raw:
        yield raw


def new_key() -> str:
    return f"test-{uuid.uuid4()}"


def charge_body(token: str = "tok_success", amount: int = 1250, **overrides: object) -> dict[str, object]:
    return {
        "amount": amount,
        "currency": "EUR",
        "token": token,
        "reference": f"order-{uuid.uuid4()}",
    } | overrides


async def count(dsn: str, sql: str, *args: object) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def charges_for(dsn: str, key: str) -> int:
    return await count(dsn, "SELECT count(*) FROM charges WHERE idempotency_key = $1", key)


async def pay(client: PaymentClient, key: str, token: str = "tok_success", amount: int = 1250) -> Charge:
    return await client.charge(key, amount, "EUR", token, f"order-{key}")


async def post(
    http: httpx.AsyncClient, path: str, body: dict[str, object], key: str | None = None
) -> httpx.Response:
    """POST with an Idempotency-Key header: a fresh key unless one is given."""
    return await http.post(path, json=body, headers={"Idempotency-Key": new_key() if key is None else key})


def assert_problem(response: httpx.Response, problem_type: ProblemType) -> dict[str, object]:
    assert response.status_code == problem_type.status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, object] = response.json()
    assert body["type"] == problem_type.uri and body["status"] == problem_type.status
    return body


# --- charges ---------------------------------------------------------------------------------------


async def test_success_records_one_succeeded_charge(client, payment_dsn):
    key = new_key()
    charge = await client.charge(key, 1250, "EUR", "tok_success", "order-1")
    assert charge.succeeded and charge.id.startswith("ch_")
    assert (charge.amount, charge.currency, charge.reference) == (1250, "EUR", "order-1")
    assert (charge.idempotency_key, charge.refunded_amount) == (key, 0)
    sql = "SELECT count(*) FROM charges WHERE id = $1 AND status = 'succeeded'"
    assert await count(payment_dsn, sql, charge.id) == 1


async def test_decline_is_recorded_and_its_key_replays_the_decline(client, http, payment_dsn):
    key = new_key()
    with pytest.raises(PaymentDeclined) as first:
        await pay(client, key, "tok_decline")
    with pytest.raises(PaymentDeclined) as replay:
        await pay(client, key, "tok_decline")
    assert first.value.details["charge_id"] == replay.value.details["charge_id"]
    stored = await client.find_charge(key)
    assert stored is not None and stored.status == "declined"
    assert stored.id == first.value.details["charge_id"]
    assert await charges_for(payment_dsn, key) == 1
    response = await post(http, "/v1/charges", charge_body("tok_decline"))
    assert response.status_code == 402 and Charge.model_validate(response.json()).status == "declined"


async def test_same_key_twice_makes_one_charge(client, http, payment_dsn):
    key, body = new_key(), charge_body()
    first = await post(http, "/v1/charges", body, key)
    second = await post(http, "/v1/charges", body, key)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json() == second.json()
    assert "idempotent-replayed" not in first.headers and second.headers["idempotent-replayed"] == "true"
    assert await charges_for(payment_dsn, key) == 1


async def warm_up(http: httpx.AsyncClient) -> None:
    """Fill the sandbox's connection pool, so concurrent requests race instead of queueing on connects."""
    await asyncio.gather(*(http.get("/healthz") for _ in range(30)))


@pytest.mark.parametrize("token", ["tok_success", "tok_decline"])
async def test_concurrent_identical_requests_make_exactly_one_charge(http, payment_dsn, token):
    await warm_up(http)
    for _ in range(10):  # a race is a matter of luck; give it several chances to show
        key, body = new_key(), charge_body(token)
        answers = await asyncio.gather(*(post(http, "/v1/charges", body, key) for _ in range(30)))
        assert len({(a.status_code, a.text) for a in answers}) == 1, {a.status_code for a in answers}
        assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
        assert await charges_for(payment_dsn, key) == 1


async def test_same_key_with_another_body_is_a_conflict(client, http, payment_dsn):
    key, body = new_key(), charge_body(amount=1000)
    await post(http, "/v1/charges", body, key)
    response = await post(http, "/v1/charges", body | {"amount": 2000}, key)
    assert_problem(response, IDEMPOTENCY_KEY_REUSED)
    with pytest.raises(InvalidInput) as raised:
        await client.charge(key, 1000, "EUR", "tok_success", "another-order")
    assert raised.value.details["problem_type"] == IDEMPOTENCY_KEY_REUSED.uri
    assert await count(payment_dsn, "SELECT sum(amount) FROM charges WHERE idempotency_key = $1", key) == 1000


async def test_flaky_fails_n_times_without_charging_then_succeeds(client, payment_dsn):
    key = new_key()
    for _ in range(2):
        with pytest.raises(PaymentUnavailable) as raised:
            await pay(client, key, "tok_flaky_2")
        assert not isinstance(raised.value, PaymentOutcomeUnknown)
        assert raised.value.details["problem_type"] == TEMPORARILY_UNAVAILABLE.uri
        assert await charges_for(payment_dsn, key) == 0
    charge = await pay(client, key, "tok_flaky_2")
    assert charge.succeeded
    assert (await pay(client, key, "tok_flaky_2")).id == charge.id
    assert await charges_for(payment_dsn, key) == 1


async def test_flaky_attempts_are_counted_across_restarts_and_instances(sandbox, payment_dsn):
    key, body = new_key(), charge_body("tok_flaky_2")
    statuses = []
    for _ in range(2):  # a fresh sandbox each time: the count must live in Postgres
        async with SandboxServer(payment_dsn) as fresh, httpx.AsyncClient(base_url=fresh.url) as raw:
            statuses.append((await post(raw, "/v1/charges", body, key)).status_code)
    async with httpx.AsyncClient(base_url=sandbox.url) as raw:
        statuses.append((await post(raw, "/v1/charges", body, key)).status_code)
    assert statuses == [503, 503, 201]
    assert await charges_for(payment_dsn, key) == 1


async def test_slow_answer_leaves_the_outcome_unknown_until_looked_up(sandbox, client, payment_dsn):
    key = new_key()
    async with PaymentClient(sandbox.url, timeout=0.3) as impatient:
        with pytest.raises(PaymentOutcomeUnknown):
            await pay(impatient, key, "tok_slow_1500")
    found = await client.find_charge(key)
    assert found is not None and found.succeeded and found.idempotency_key == key
    retried = await pay(client, key, "tok_slow_1500")  # patient retry with the same key: a replay
    assert retried.id == found.id
    assert await charges_for(payment_dsn, key) == 1


async def test_lookups_by_id_and_key(client, http):
    charge = await pay(client, new_key())
    response = await http.get(f"/v1/charges/{charge.id}")
    assert response.status_code == 200 and Charge.model_validate(response.json()) == charge
    assert await client.find_charge(charge.idempotency_key) == charge
    assert await client.find_charge(new_key()) is None
    assert_problem(await http.get("/v1/charges/ch_missing"), CHARGE_NOT_FOUND)
    assert_problem(await http.get("/v1/charges", params={"idempotency_key": "nope"}), CHARGE_NOT_FOUND)
    assert_problem(await http.get("/v1/charges"), INVALID_REQUEST)


@pytest.mark.parametrize(
    ("overrides", "problem_type"),
    [
        ({"amount": 0}, INVALID_REQUEST),
        ({"amount": -5}, INVALID_REQUEST),
        ({"amount": 12.5}, INVALID_REQUEST),
        ({"amount": "1250"}, INVALID_REQUEST),
        ({"amount": True}, INVALID_REQUEST),
        ({"amount": MAX_AMOUNT + 1}, INVALID_REQUEST),
        ({"currency": "eur"}, INVALID_REQUEST),
        ({"currency": "EURO"}, INVALID_REQUEST),
        ({"reference": ""}, INVALID_REQUEST),
        ({"surprise": 1}, INVALID_REQUEST),
        ({"token": "tok_nope"}, UNKNOWN_TOKEN),
        ({"token": "tok_flaky_x"}, UNKNOWN_TOKEN),
        ({"token": "tok_slow_999999"}, UNKNOWN_TOKEN),
    ],
)
async def test_bad_charges_are_422_problems_and_charge_nothing(http, payment_dsn, overrides, problem_type):
    key = new_key()
    response = await post(http, "/v1/charges", charge_body() | overrides, key)
    assert_problem(response, problem_type)
    assert await charges_for(payment_dsn, key) == 0


@pytest.mark.parametrize("path", ["/v1/charges", "/v1/refunds"])
async def test_posts_without_idempotency_key_are_400_problems(http, path):
    body = charge_body() if path == "/v1/charges" else {"charge_id": "ch_x", "amount": 1}
    assert_problem(await http.post(path, json=body), IDEMPOTENCY_KEY_REQUIRED)
    assert_problem(await post(http, path, body, ""), IDEMPOTENCY_KEY_REQUIRED)


# --- refunds ---------------------------------------------------------------------------------------


async def refunded(http: httpx.AsyncClient, charge_id: str) -> int:
    return int((await http.get(f"/v1/charges/{charge_id}")).json()["refunded_amount"])


async def test_full_refund_and_its_replay(client, http, payment_dsn):
    charge = await pay(client, new_key(), amount=1000)
    key = new_key()
    refund = await client.refund(key, charge.id, 1000)
    assert (refund.charge_id, refund.amount, refund.idempotency_key) == (charge.id, 1000, key)
    assert refund.id.startswith("re_")
    assert (await client.refund(key, charge.id, 1000)).id == refund.id
    assert await refunded(http, charge.id) == 1000
    assert await count(payment_dsn, "SELECT count(*) FROM refunds WHERE charge_id = $1", charge.id) == 1


async def test_partial_refunds_stop_at_the_charged_amount(client, http):
    charge = await pay(client, new_key(), amount=1000)
    await client.refund(new_key(), charge.id, 300)
    await client.refund(new_key(), charge.id, 500)
    over = await post(http, "/v1/refunds", {"charge_id": charge.id, "amount": 300})
    assert assert_problem(over, REFUND_EXCEEDS_CHARGE)["refundable_amount"] == 200
    with pytest.raises(InvalidInput):
        await client.refund(new_key(), charge.id, 201)
    await client.refund(new_key(), charge.id, 200)
    assert await refunded(http, charge.id) == 1000


async def test_refund_key_reused_for_another_amount_is_a_conflict(client, http):
    charge = await pay(client, new_key(), amount=1000)
    key = new_key()
    await client.refund(key, charge.id, 100)
    response = await post(http, "/v1/refunds", {"charge_id": charge.id, "amount": 200}, key)
    assert_problem(response, IDEMPOTENCY_KEY_REUSED)
    assert await refunded(http, charge.id) == 100


async def test_refunding_a_declined_or_unknown_charge_is_refused(client, http):
    with pytest.raises(PaymentDeclined) as declined:
        await pay(client, new_key(), "tok_decline")
    for charge_id, problem_type in [
        (declined.value.details["charge_id"], CHARGE_NOT_REFUNDABLE),
        ("ch_unknown", CHARGE_NOT_FOUND),
    ]:
        body = {"charge_id": charge_id, "amount": 100}
        assert_problem(await post(http, "/v1/refunds", body), problem_type)
        with pytest.raises(InvalidInput) as raised:
            await client.refund(new_key(), charge_id, 100)
        assert raised.value.details["problem_type"] == problem_type.uri


async def test_concurrent_replays_of_a_full_refund_all_answer_the_refund(client, http, payment_dsn):
    charge = await pay(client, new_key(), amount=1000)
    key, body = new_key(), {"charge_id": charge.id, "amount": 1000}
    await warm_up(http)
    answers = await asyncio.gather(*(post(http, "/v1/refunds", body, key) for _ in range(20)))
    assert {a.status_code for a in answers} == {201}
    assert len({a.text for a in answers}) == 1
    assert await count(payment_dsn, "SELECT count(*) FROM refunds WHERE charge_id = $1", charge.id) == 1
    assert await refunded(http, charge.id) == 1000


async def test_concurrent_partial_refunds_never_exceed_the_charge(client, http):
    charge = await pay(client, new_key(), amount=1000)
    body = {"charge_id": charge.id, "amount": 300}
    await warm_up(http)
    answers = await asyncio.gather(*(post(http, "/v1/refunds", body) for _ in range(10)))
    assert sorted(a.status_code for a in answers) == [201] * 3 + [409] * 7
    assert await refunded(http, charge.id) == 900


# --- service ---------------------------------------------------------------------------------------


async def test_healthz_and_unknown_routes(http):
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    missing = await http.get("/v2/nothing")
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM_MEDIA_TYPE


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVSAGA_")}
    return env | extra


@pytest.mark.parametrize(
    ("dsn", "exit_code", "message"),
    [
        (None, 78, "INVSAGA_PAYMENT_DSN is not set"),
        ("mysql://user@localhost/payments", 78, "INVSAGA_PAYMENT_DSN: expected a postgresql:// URL"),
        ("postgresql://postgres@127.0.0.1:1/payments", 69, "unreachable"),
    ],
)
def test_serve_without_a_usable_database_is_one_line_and_non_zero(dsn, exit_code, message):
    env = cli_env(**({"INVSAGA_PAYMENT_DSN": dsn} if dsn else {}))
    command = [INVSAGA, "payments", "serve"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


async def test_serve_runs_the_sandbox_until_interrupted(payment_dsn):
    port = free_port()
    command = [INVSAGA, "payments", "serve", "--port", str(port)]
    process = await asyncio.create_subprocess_exec(
        *command,
        env=cli_env(INVSAGA_PAYMENT_DSN=payment_dsn),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with PaymentClient(f"http://127.0.0.1:{port}", timeout=5) as served:
            assert (await _first_charge(served, process)).succeeded
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), timeout=20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _first_charge(served: PaymentClient, process: asyncio.subprocess.Process) -> Charge:
    for _ in range(200):
        if process.returncode is not None:
            stderr = await process.stderr.read() if process.stderr else b""
            raise AssertionError(f"`payments serve` exited {process.returncode}: {stderr.decode()}")
        try:
            return await pay(served, new_key())
        except PaymentUnavailable:
            await asyncio.sleep(0.1)
    raise AssertionError("`payments serve` never answered")
