"""The compose job that creates the namespace and registers the search attributes, run with the
arguments docker-compose.yml gives it, against a real Temporal dev server."""

from __future__ import annotations

import uuid

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

from invsaga.temporal.search_attributes import REGISTRATION
from tests.deploy.support import ROOT, load_compose, read_env_example, run_script

SETUP_NAMESPACE = ROOT / "docker" / "temporal" / "setup-namespace.sh"

# How `temporal operator search-attribute create --type` names map to the server's enum.
CLI_TYPES = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "KeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
    "Double": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    "Text": IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
}


async def test_the_setup_job_creates_the_namespace_and_registers_exactly_what_the_workflows_set(
    saga_settings, temporal_client
):
    arguments = load_compose(read_env_example()[0])["services"]["temporal-setup"]["command"]
    namespace = f"ops-{uuid.uuid4().hex[:8]}"
    env = {"TEMPORAL_ADDRESS": saga_settings.temporal_address, "TEMPORAL_NAMESPACE": namespace}

    async def run(*pairs: str) -> tuple[int, str]:
        return await run_script(SETUP_NAMESPACE, *pairs, **env)

    code, output = await run(*arguments)
    assert code == 0, output
    assert f"created namespace {namespace}" in output
    listed = await temporal_client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    assert dict(listed.custom_attributes) == {name: CLI_TYPES[kind] for name, kind in REGISTRATION.items()}

    code, output = await run(*arguments)  # again, as on every `docker compose up`
    assert code == 0, output
    assert f"namespace {namespace} exists" in output

    code, output = await run("OrderId=Double")  # an attribute the workflows could not set
    assert code != 0, output
    code, output = await run("OrderId")
    assert code == 2 and "not NAME=TYPE" in output
