"""Liveness, readiness (up and down), metrics, the OpenAPI document and the ``invsaga api`` commands."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url
from temporalio.client import Client

from invsaga.api.app import create_app
from invsaga.api.auth import Scope, hash_key, key_entry
from invsaga.api.deps import ApiDeps
from invsaga.client import CheckoutClient
from invsaga.dev.ports import free_port
from invsaga.store.databases import Databases, make_engine
from invsaga.store.stock import StockStore
from tests.helpers import skus_on_shard
from tests.integration.api_fixtures import (
    API_KEYS_SETTING,
    CHECKOUT,
    CHECKOUT_KEY,
    assert_problem,
)

INVSAGA = Path(sys.executable).with_name("invsaga")


async def test_healthz_is_200_without_a_key(http):
    response = await http.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_is_200_when_temporal_and_every_database_answer(http, databases):
    response = await http.get("/readyz")
    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    expected = {"temporal", "core database", *(f"shard {i}" for i in range(len(databases.shards)))}
    assert set(checks) == expected and set(checks.values()) == {"ok"}


async def test_readyz_is_503_naming_what_is_down_and_reads_answer_unavailable(api, databases, store):
    dead = make_url(str(databases.shards[1].url)).set(host="127.0.0.1", port=free_port())
    broken = Databases(
        shards=[databases.shards[0], make_engine(dead, pool_size=1)],
        core=databases.core,
        router=databases.router,
    )
    temporal = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True)
    deps = ApiDeps(databases=broken, store=StockStore(broken), checkouts=CheckoutClient(temporal))
    app = create_app(api.settings, deps=deps)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            response = await client.get("/readyz")
            problem = assert_problem(response, 503, "unavailable")
            assert problem["down"] == ["temporal", "shard 1"]
            assert problem["checks"]["shard 0"] == problem["checks"]["core database"] == "ok"
            assert "temporal" in problem["detail"] and "shard 1" in problem["detail"]

            (on_dead_shard,) = skus_on_shard(store.router, 1, 1)
            read = await client.get(f"/v1/stock/{on_dead_shard}", headers=CHECKOUT)
            assert assert_problem(read, 503, "unavailable")["database"] == "shard 1"
            assert read.headers["retry-after"]
            assert (await client.get("/healthz")).status_code == 200
    finally:
        await broken.shards[1].dispose()


def counter(metrics_text: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "invsaga_api_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def test_metrics_count_requests_by_route_template_and_status(http):
    labels = {"method": "GET", "route": "/v1/stock/{sku}", "status": "404"}
    before = counter((await http.get("/metrics")).text, **labels)
    for n in range(3):
        await http.get(f"/v1/stock/NO-SUCH-{n}", headers=CHECKOUT)
    response = await http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert counter(response.text, **labels) == before + 3
    assert "invsaga_api_request_duration_seconds_bucket" in response.text
    assert 'route="/v1/stock/NO-SUCH-0"' not in response.text


async def test_the_openapi_document_lists_every_endpoint_with_examples_and_problems(http):
    schema = (await http.get("/openapi.json")).json()
    operations = {
        f"{method.upper()} {path}": op for path, ops in schema["paths"].items() for method, op in ops.items()
    }
    assert set(operations) == {
        "GET /v1/stock",
        "GET /v1/stock/{sku}",
        "POST /v1/checkouts",
        "GET /v1/checkouts/{order_id}",
        "POST /v1/checkouts/{order_id}/cancel",
        "PUT /v1/stock/{sku}/{location}",
        "POST /v1/stock/{sku}/{location}/receipts",
        "POST /v1/stock/import",
        "GET /v1/stock/{sku}/movements",
        "PUT /v1/products/{sku}",
        "GET /v1/products/{sku}",
        "GET /v1/products",
        "POST /v1/products/import",
        "GET /v1/orders",
        "GET /v1/orders/{order_id}",
        "GET /v1/events",
        "POST /v1/webhooks",
        "GET /v1/webhooks",
        "DELETE /v1/webhooks/{webhook_id}",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
    }
    schemas = schema["components"]["schemas"]
    for name, operation in operations.items():
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                content = response["content"]["application/problem+json"]
                assert content["schema"] == {"$ref": "#/components/schemas/Problem"}, name
                assert content["examples"], name
        body = operation.get("requestBody", {}).get("content", {})
        for media in body.values():
            ref = media.get("schema", {}).get("$ref", "")
            example = (
                media.get("example")
                or media.get("examples")
                or schemas.get(ref.rsplit("/", 1)[-1], {}).get("examples")
            )
            assert example, f"{name} has no request example"
        if name.startswith(("POST", "PUT")) or "{" in name:
            assert operation.get("security") or name.startswith("GET /healthz"), name
    assert "examples" in schemas["CheckoutIn"] and "examples" in schemas["StockView"]
    docs = await http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


_ASSET_LINK = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|\burl:\s*["']([^"']+)["']""")


async def test_the_docs_pages_load_every_asset_from_the_api_itself(http):
    """Without internet (or behind a proxy that blocks CDNs) /docs and /redoc must still render."""
    for page in ("/docs", "/redoc"):
        answer = await http.get(page)
        assert answer.status_code == 200, page
        links = [a or b for a, b in _ASSET_LINK.findall(answer.text)]
        assert any(link.endswith(".js") for link in links), (page, links)
        assert [link for link in links if not link.startswith("/")] == [], f"{page} loads from elsewhere"
        for link in links:
            # A connection per asset, as a browser opens several: a CI run once saw the shared test
            # client's kept-alive connection closed halfway into the CSS (headers sent, no body).
            async with httpx.AsyncClient(base_url=str(http.base_url), timeout=60) as browser:
                served = await browser.get(link)
            assert served.status_code == 200, (page, link)
            assert served.content, (page, link)
            assert len(served.content) == int(served.headers["content-length"]), (page, link)


# --- the commands -------------------------------------------------------------------------------------


def cli_env(api, **extra: str) -> dict[str, str]:
    settings = api.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVSAGA_")}
    return {
        **env,
        "INVSAGA_SHARD_DSNS": ",".join(settings.shard_dsns),
        "INVSAGA_CORE_DSN": settings.core_dsn,
        "INVSAGA_TEMPORAL_ADDRESS": settings.temporal_address,
        "INVSAGA_API_KEYS": API_KEYS_SETTING,
        "INVSAGA_DATA_DIR": "/nonexistent",
        "PYTHONFAULTHANDLER": "1",
        **extra,
    }


async def test_invsaga_api_serves_on_the_port_and_workers_from_the_environment(api):
    port = free_port()
    env = cli_env(api, INVSAGA_API_HOST="127.0.0.1", INVSAGA_API_PORT=str(port), INVSAGA_API_WORKERS="2")
    process = await asyncio.create_subprocess_exec(
        str(INVSAGA), "api", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            for _ in range(600):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.returncode is None, "invsaga api exited"
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("invsaga api never became ready")
            stock = await client.get("/v1/stock/NO-SUCH-SKU", headers=CHECKOUT)
            assert_problem(stock, 404, "unknown-sku")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    log = output.decode()
    assert process.returncode == 0, log
    assert len(set(re.findall(r"Started server process \[(\d+)\]", log))) == 2, log
    assert "died" not in log, log
    assert CHECKOUT_KEY not in log


async def test_invsaga_api_without_keys_fails_with_one_line(api):
    done = await asyncio.to_thread(
        subprocess.run,
        [str(INVSAGA), "api"],
        env=cli_env(api, INVSAGA_API_KEYS=""),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78, done
    assert done.stderr.startswith("error: INVSAGA_API_KEYS is empty") and "Traceback" not in done.stderr


def test_api_key_commands_make_and_hash_keys():
    from typer.testing import CliRunner

    from invsaga.cli import app

    runner = CliRunner()
    made = runner.invoke(app, ["api-key", "new", "--scope", "admin"])
    assert made.exit_code == 0, made.output
    key = re.search(r"key:\s+(\S+)", made.stdout).group(1)
    entry = re.search(r"entry:\s+(\S+)", made.stdout).group(1)
    assert entry == key_entry(Scope.ADMIN, key) == f"admin:{hash_key(key)}"
    hashed = runner.invoke(app, ["api-key", "hash", "--scope", "admin"], input=key + "\n")
    assert (hashed.exit_code, hashed.stdout.strip()) == (0, entry)
    assert runner.invoke(app, ["api-key", "hash", key]).stdout.strip() == key_entry(Scope.CHECKOUT, key)
    refused = runner.invoke(app, ["api-key", "new", "--scope", "root"])
    assert refused.exit_code != 0 and "unknown scope" in refused.output
