"""Static checks of docker-compose.yml, since this machine has no Docker engine: the file is read and
interpolated the way Compose does, then checked against the published Compose Specification schema
and against our own code (the CLI, the settings model, the search-attribute registration)."""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from sqlalchemy.engine import make_url

from invsaga.dev.payments.sandbox import SandboxSettings
from invsaga.settings import Settings, load_settings
from invsaga.temporal.search_attributes import REGISTRATION
from tests.deploy.support import (
    COMPOSE_FILE,
    ROOT,
    SCHEMA_FILE,
    InterpolationError,
    duration_seconds,
    load_compose,
    parse_cli,
    raw_compose,
    read_env_example,
    referenced_variables,
)

ENV, DOCUMENTED_DEFAULTS = read_env_example()
COMPOSE = load_compose(ENV)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
SETTINGS_PREFIX = str(Settings.model_config.get("env_prefix", ""))


def ours(service: dict[str, Any]) -> bool:
    """Built from our Dockerfile, so its command is an `invsaga` command."""
    return "build" in service


def is_job(service: dict[str, Any]) -> bool:
    """A one-shot job: it runs to completion and is never restarted."""
    return service.get("restart") == "no"


OUR_SERVICES = sorted(name for name, service in SERVICES.items() if ours(service))
LONG_RUNNING = sorted(name for name, service in SERVICES.items() if not is_job(service))
JOBS = sorted(name for name, service in SERVICES.items() if is_job(service))


def env_of(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {str(k): "" if v is None else str(v) for k, v in environment.items()}


def test_the_compose_file_is_valid_against_the_compose_specification():
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(COMPOSE), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_schema_check_can_fail():
    schema = json.loads(SCHEMA_FILE.read_text())
    broken = {**COMPOSE, "services": {**SERVICES, "worker": {**SERVICES["worker"], "replica": 2}}}
    assert not jsonschema.Draft202012Validator(schema).is_valid(broken)


def test_the_compose_file_parses_as_plain_yaml_without_duplicate_keys():
    class Strict(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            keys = [key.value for key, _ in node.value if isinstance(key, yaml.ScalarNode)]
            duplicates = {k for k in keys if keys.count(k) > 1 and k != "<<"}
            assert not duplicates, f"duplicate keys {duplicates} at line {node.start_mark.line + 1}"
            return super().construct_mapping(node, deep=deep)

    yaml.load(COMPOSE_FILE.read_text(), Loader=Strict)


def test_secrets_have_no_defaults_so_the_stack_refuses_to_start_without_them():
    required = {
        name for name, (op, _) in referenced_variables(COMPOSE_FILE.read_text()).items() if op == ":?"
    }
    assert {"TEMPORAL_DB_PASSWORD", "INVENTORY_DB_PASSWORD", "PAYMENTS_DB_PASSWORD"} <= required
    for name in required:
        with pytest.raises(InterpolationError, match=name):
            load_compose({k: v for k, v in ENV.items() if k != name})


# --- our services run our CLI with settings it reads ---------------------------------------------


@pytest.mark.parametrize("name", OUR_SERVICES)
def test_each_of_our_services_runs_an_invsaga_command(name: str):
    service = SERVICES[name]
    assert "entrypoint" not in service, "our image's entrypoint is `invsaga`; pass a command instead"
    command = service.get("command")
    assert isinstance(command, list) and command, "use the list form, so nothing is re-split by a shell"
    parse_cli(command)  # raises for an unknown command, option or value


def test_the_cli_check_can_fail():
    with pytest.raises(Exception, match="no command"):
        parse_cli(["db", "migrat"])
    with pytest.raises(Exception, match="--bogus"):
        parse_cli(["payments", "serve", "--bogus"])


@pytest.mark.parametrize("name", OUR_SERVICES)
def test_every_variable_our_services_set_is_a_setting(name: str):
    unknown = [key for key in env_of(SERVICES[name]) if not _setting_field(key)]
    assert not unknown, f"{name} sets {unknown}, which no settings model reads"


def _setting_field(variable: str) -> str | None:
    if not variable.startswith(SETTINGS_PREFIX):
        return None
    field = variable.removeprefix(SETTINGS_PREFIX).lower()
    known = Settings.model_fields.keys() | SandboxSettings.model_fields.keys()
    return field if field in known else None


@pytest.mark.parametrize("name", OUR_SERVICES)
def test_the_settings_of_each_service_load(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Each service's environment, exactly as its container would read it, is a valid configuration."""
    import os

    for key in list(os.environ):
        if key.startswith(SETTINGS_PREFIX):
            monkeypatch.delenv(key)
    monkeypatch.setenv(f"{SETTINGS_PREFIX}DATA_DIR", str(tmp_path))  # no dev stack to fall back on
    for key, value in env_of(SERVICES[name]).items():
        monkeypatch.setenv(key, value)
    load_settings()


def test_every_database_the_services_use_is_a_postgres_service_of_the_stack():
    env = env_of(SERVICES["worker"])
    shards = [make_url(dsn).host for dsn in env["INVSAGA_SHARD_DSNS"].split(",")]
    core = make_url(env["INVSAGA_CORE_DSN"]).host
    payments = make_url(env_of(SERVICES["payments"])["INVSAGA_PAYMENT_DSN"]).host
    assert len(shards) >= 2 and len(set(shards)) == len(shards)
    databases = [*shards, core, payments]
    assert len(set(databases)) == len(databases), "every shard, the core and payments: a server each"
    for host in databases:
        assert host in SERVICES and SERVICES[host]["image"].startswith("postgres:"), host
    for name, service in SERVICES.items():
        if ours(service):
            for key, value in env_of(service).items():
                if key.endswith(("_DSNS", "_DSN")):
                    for dsn in value.split(","):
                        assert make_url(dsn).host in databases, f"{name}: {key} names an unknown host"


def test_the_services_reach_temporal_and_the_payment_provider_where_they_listen():
    payments_command = SERVICES["payments"]["command"]
    port = int(payments_command[payments_command.index("--port") + 1])
    for name in OUR_SERVICES:
        env = env_of(SERVICES[name])
        if "INVSAGA_PAYMENT_URL" in env:
            url = urlsplit(env["INVSAGA_PAYMENT_URL"])
            assert (url.hostname, url.port) == ("payments", port), name
        if "INVSAGA_TEMPORAL_ADDRESS" in env:
            host, _, temporal_port = env["INVSAGA_TEMPORAL_ADDRESS"].rpartition(":")
            assert (host, temporal_port) == ("temporal", "7233"), name


# --- health, dependencies, jobs -------------------------------------------------------------------


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_every_long_running_service_has_a_healthcheck(name: str):
    healthcheck = SERVICES[name].get("healthcheck") or {}
    assert not healthcheck.get("disable"), f"{name} runs for good: it needs a real healthcheck"
    test = healthcheck.get("test")
    assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name


@pytest.mark.parametrize("name", JOBS)
def test_every_job_is_awaited_by_its_exit_code(name: str):
    awaited = [
        other
        for other, service in SERVICES.items()
        if (service.get("depends_on") or {}).get(name, {}).get("condition")
        == "service_completed_successfully"
    ]
    on_demand = bool(SERVICES[name].get("profiles"))
    assert awaited or on_demand, f"nothing waits for the job {name} to succeed"
    assert (SERVICES[name].get("healthcheck") or {}).get("disable"), "a job's health is its exit code"


def test_the_health_probes_of_our_services_exist():
    for name in OUR_SERVICES:
        test = (SERVICES[name].get("healthcheck") or {}).get("test") or []
        if test[1:3] == ["python", "-m"]:
            assert importlib.util.find_spec(test[3]) is not None, f"{name}: no module {test[3]}"
        elif test[1:3] == ["python", "-c"]:
            compile(test[3], f"<{name} healthcheck>", "exec")


def test_every_dependency_waits_on_a_condition():
    for name, service in SERVICES.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: use the long depends_on form, with conditions"
        for dependency, spec in depends_on.items():
            assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"
            expected = "service_completed_successfully" if is_job(SERVICES[dependency]) else "service_healthy"
            assert spec.get("condition") == expected, f"{name} -> {dependency}: want {expected}"


#: Needs nothing else running to serve: payload keys in, payloads out, no database and no Temporal.
NEEDS_NOTHING = {"codec-server"}


def test_every_service_but_the_databases_waits_for_something():
    free = {name for name, service in SERVICES.items() if not service.get("depends_on")}
    databases = {name for name, service in SERVICES.items() if service["image"].startswith("postgres:")}
    assert free == databases | NEEDS_NOTHING


def test_the_dependency_graph_has_no_cycle():
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for dependency in SERVICES[name].get("depends_on") or {}:
            visit(dependency, (*path, name))
        done.add(name)

    for name in SERVICES:
        visit(name, ())


# --- what the issue asks of the stack ----------------------------------------------------------------


def test_workers_run_replicated_and_drain_before_docker_kills_them():
    worker = SERVICES["worker"]
    assert int(worker["deploy"]["replicas"]) >= 2
    grace = float(env_of(worker)["INVSAGA_WORKER_SHUTDOWN_GRACE_SECONDS"])
    assert duration_seconds(worker["stop_grace_period"]) >= grace + 10, "SIGKILL would cut the drain"
    env = env_of(worker)
    assert env["INVSAGA_WORKER_HEALTH_PORT"] in worker["expose"]
    assert env["INVSAGA_METRICS_PORT"] in worker["expose"]
    assert env["INVSAGA_WORKER_DEPLOYMENT_NAME"] and env["INVSAGA_WORKER_BUILD_ID"]


def published_port(service: dict[str, Any], container_port: int) -> int:
    """The host port compose publishes ``container_port`` of ``service`` on."""
    for mapping in service.get("ports", []):
        host, _, inside = str(mapping).rpartition(":")
        if int(inside) == container_port:
            return int(host)
    raise AssertionError(f"port {container_port} is not published")


#: The commands that read or write payloads: each must have the payload keys.
PAYLOAD_COMMANDS = {"worker", "api", "codec-server"}


def test_every_process_that_reads_payloads_has_the_same_keys_from_a_mounted_secret():
    readers = [name for name in OUR_SERVICES if SERVICES[name]["command"][0] in PAYLOAD_COMMANDS]
    assert {SERVICES[name]["command"][0] for name in readers} == PAYLOAD_COMMANDS
    paths = set()
    for name in readers:
        service, env = SERVICES[name], env_of(SERVICES[name])
        assert "INVSAGA_PAYLOAD_KEYS" not in env, f"{name}: keys belong in the secret, not the environment"
        path = env["INVSAGA_PAYLOAD_KEYS_FILE"]
        secret = path.removeprefix("/run/secrets/")
        assert secret != path and secret in service.get("secrets", []), f"{name} does not mount {path}"
        assert "file" in COMPOSE["secrets"][secret]
        paths.add(path)
    assert len(paths) == 1, "every process must hold the same keys"


def test_the_codec_server_needs_a_credential_and_the_web_ui_finds_it():
    codec, ui = SERVICES["codec-server"], SERVICES["temporal-ui"]
    command, env = codec["command"], env_of(codec)
    assert "--dev-without-credential" not in command, "dev mode answers anyone: invsaga dev only"
    assert env["INVSAGA_API_KEYS"] == env_of(SERVICES["api"])["INVSAGA_API_KEYS"]
    assert not [key for key in env if key.endswith(("_DSN", "_DSNS"))], "it needs no database"
    # Both addresses as the operator's browser sees them: where compose publishes each.
    origin = urlsplit(command[command.index("--ui-origin") + 1])
    assert (origin.hostname, origin.port) == ("localhost", published_port(ui, 8080))
    endpoint = urlsplit(env_of(ui)["TEMPORAL_CODEC_ENDPOINT"])
    codec_port = int(command[command.index("--port") + 1])
    assert (endpoint.hostname, endpoint.port) == ("localhost", published_port(codec, codec_port))


def test_the_version_job_promotes_the_build_the_workers_run():
    job, worker = env_of(SERVICES["worker-version"]), env_of(SERVICES["worker"])
    for key in ("INVSAGA_WORKER_DEPLOYMENT_NAME", "INVSAGA_WORKER_BUILD_ID"):
        assert job[key] == worker[key]
    assert job["TEMPORAL_NAMESPACE"] == worker["INVSAGA_TEMPORAL_NAMESPACE"]


def test_temporal_persists_to_postgres_with_its_schema_set_up_first():
    temporal = SERVICES["temporal"]
    env = env_of(temporal)
    assert env["DB"] == "postgres12" and env["POSTGRES_SEEDS"] == "temporal-db"
    assert SERVICES["temporal-db"]["image"].startswith("postgres:")
    assert temporal["depends_on"]["temporal-schema"]["condition"] == "service_completed_successfully"
    assert SERVICES["temporal-schema"]["image"].split(":")[1] == temporal["image"].split(":")[1], (
        "admin-tools must match the server release, or the schema would be for another version"
    )


def test_compose_registers_exactly_the_search_attributes_the_workflows_set():
    setup = SERVICES["temporal-setup"]
    pairs = dict(argument.split("=", 1) for argument in setup["command"])
    assert pairs == REGISTRATION
    assert env_of(setup)["TEMPORAL_NAMESPACE"] == env_of(SERVICES["worker"])["INVSAGA_TEMPORAL_NAMESPACE"]


def test_every_postgres_server_keeps_its_data_in_a_named_volume():
    volumes = COMPOSE["volumes"]
    for name, service in SERVICES.items():
        image = service["image"]
        if not image.startswith("postgres:"):
            continue
        major = int(image.split(":")[1].split(".")[0])
        # The image moved its data directory in 18 (PGDATA=/var/lib/postgresql/18/docker).
        target = "/var/lib/postgresql" if major >= 18 else "/var/lib/postgresql/data"
        mounts = [m for m in service.get("volumes", []) if m.split(":")[0] in volumes]
        assert [m.split(":")[1] for m in mounts] == [target], f"{name} would lose its data"
    database_volumes = [
        m.split(":")[0] for s in SERVICES.values() if s["image"].startswith("postgres:") for m in s["volumes"]
    ]
    assert len(set(database_volumes)) == len(database_volumes), "two servers share a volume"


def test_every_image_we_do_not_build_is_pinned_to_a_release():
    for name, service in SERVICES.items():
        if ours(service):
            continue
        repository, _, tag = service["image"].rpartition(":")
        assert repository and tag and tag != "latest" and any(ch.isdigit() for ch in tag), name


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items() if s.get("entrypoint")])
def test_the_scripts_the_jobs_run_are_mounted_and_parse(name: str):
    service = SERVICES[name]
    shell, script = service["entrypoint"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in service.get("volumes", [])}
    mount_point = next(point for point in mounts if script.startswith(point + "/"))
    source = ROOT / mounts[mount_point] / script.removeprefix(mount_point + "/")
    assert source.is_file(), f"{name} runs {script}, which is not in the repository"
    subprocess.run([shell if shell != "/bin/sh" else "sh", "-n", str(source)], check=True)


def test_the_temporal_dynamic_config_is_well_formed():
    mounts = [m for m in SERVICES["temporal"]["volumes"] if "dynamicconfig" in m]
    [mount] = mounts
    source, target = mount.split(":")[:2]
    config = yaml.safe_load((ROOT / source).read_text())
    assert target.endswith(env_of(SERVICES["temporal"])["DYNAMIC_CONFIG_FILE_PATH"])
    for key, values in config.items():
        assert isinstance(values, list) and all("value" in v for v in values), key


# --- .env.example ----------------------------------------------------------------------------------


def test_env_example_documents_every_variable_compose_reads_and_nothing_else():
    used = referenced_variables(COMPOSE_FILE.read_text())
    documented = ENV.keys() | DOCUMENTED_DEFAULTS.keys()
    assert used.keys() - documented == set(), "add these to .env.example"
    assert documented - used.keys() == set(), "compose does not read these"


def test_env_example_states_the_defaults_compose_really_uses():
    used = referenced_variables(COMPOSE_FILE.read_text())
    for name, documented in DOCUMENTED_DEFAULTS.items():
        op, default = used[name]
        assert op in (":-", "-"), f"{name} has no default in compose, so it must be set in .env.example"
        assert documented == default, f"{name}: .env.example says {documented!r}, compose uses {default!r}"


def test_env_example_sets_every_required_variable():
    used = referenced_variables(COMPOSE_FILE.read_text())
    required = {name for name, (op, _) in used.items() if op in (":?", "?")}
    assert required <= {name for name, value in ENV.items() if value}


def test_env_example_variables_for_our_containers_are_settings():
    for name in ENV.keys() | DOCUMENTED_DEFAULTS.keys():
        if name.startswith(SETTINGS_PREFIX):
            assert _setting_field(name), f"{name} is not a field of invsaga/settings.py"


def test_interpolation_follows_compose_rules():
    from tests.deploy.support import interpolate

    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} $$SET $SET", env) == "x d d  $SET x"
    assert interpolate("${SET:+y}${UNSET:+y}", env) == "y"
    with pytest.raises(InterpolationError, match="needed"):
        interpolate("${EMPTY:?needed}", env)
    assert shlex.split(interpolate("a ${SET}", env)) == ["a", "x"]


def test_raw_file_keeps_secrets_out_of_literals():
    for name, service in raw_compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key or key.endswith("_PWD"):
                assert str(value).startswith("${"), f"{name}: {key} is written into the file"
