"""Configuration is read from the environment and malformed values fail with one clear message."""

from __future__ import annotations

import json

import pytest

from invsaga.cli.settings import load_command_settings
from invsaga.domain.errors import ConfigurationError
from invsaga.settings import load_settings

A = "postgresql://postgres@127.0.0.1:5433/inventory"
B = "postgresql://postgres@127.0.0.1:5434/inventory"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in list(__import__("os").environ):
        if key.startswith("INVSAGA_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("INVSAGA_DATA_DIR", str(tmp_path))


def test_shard_dsns_are_comma_separated_and_trimmed(monkeypatch):
    monkeypatch.setenv("INVSAGA_SHARD_DSNS", f" {A} ,{B},")
    monkeypatch.setenv("INVSAGA_CORE_DSN", A.replace("inventory", "core"))
    settings = load_settings()
    assert settings.shard_dsns == [A, B]
    assert [url.drivername for url in settings.shard_urls] == ["postgresql+asyncpg"] * 2


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not a url", "shard 0"),
        (f"{A},mysql://u@h/db", "shard 1: expected a postgresql:// URL"),
        (f"{A},{A}", "listed twice"),
        ("postgresql://u@h:1/", "names no database"),
    ],
)
def test_malformed_shard_dsns_are_one_clear_error(monkeypatch, value, message):
    monkeypatch.setenv("INVSAGA_SHARD_DSNS", value)
    with pytest.raises(ConfigurationError, match=message) as error:
        load_settings()
    assert "INVSAGA_SHARD_DSNS" in str(error.value)


def test_missing_dsns_fail_when_they_are_needed():
    settings = load_settings()
    with pytest.raises(ConfigurationError, match="INVSAGA_SHARD_DSNS is not set"):
        _ = settings.shard_urls
    with pytest.raises(ConfigurationError, match="INVSAGA_CORE_DSN is not set"):
        _ = settings.core_url


def test_a_hold_must_outlive_the_payment_deadline(monkeypatch):
    monkeypatch.setenv("INVSAGA_HOLD_TTL_SECONDS", "60")
    monkeypatch.setenv("INVSAGA_CHECKOUT_PAYMENT_DEADLINE_SECONDS", "120")
    with pytest.raises(ConfigurationError, match="HOLD_TTL"):
        load_settings()


def test_wrong_types_name_the_variable(monkeypatch):
    monkeypatch.setenv("INVSAGA_POOL_SIZE", "lots")
    with pytest.raises(ConfigurationError, match="INVSAGA_POOL_SIZE"):
        load_settings()


def test_a_running_dev_stack_is_found_by_dev_commands_when_nothing_is_configured(tmp_path, monkeypatch):
    (tmp_path / "stack.json").write_text(
        json.dumps({"env": {"INVSAGA_SHARD_DSNS": A, "INVSAGA_TASK_QUEUE": "q"}})
    )
    settings = load_command_settings()
    assert settings.shard_dsns == [A] and settings.task_queue == "q"
    assert "stack.json" in settings.loaded_from
    monkeypatch.setenv("INVSAGA_SHARD_DSNS", B)
    explicit = load_command_settings()
    assert explicit.shard_dsns == [B], "explicit configuration wins over the dev stack"
    assert explicit.task_queue != "q", "any INVSAGA_* variable turns the dev stack off"
    assert "environment" in explicit.loaded_from


def test_a_worker_or_api_never_picks_up_a_dev_stack_by_itself(tmp_path, monkeypatch):
    """Regression: a production worker started in a folder that held a dev stack connected to it."""
    (tmp_path / "stack.json").write_text(json.dumps({"env": {"INVSAGA_SHARD_DSNS": A}}))
    settings = load_settings()
    assert settings.shard_dsns == [] and "environment" in settings.loaded_from
