"""The allocation settings: read from the environment, checked like every other setting."""

from __future__ import annotations

import pytest

from invsaga.domain.errors import ConfigurationError
from invsaga.domain.stock import AllocationPolicy, AllocationStrategy
from invsaga.settings import load_settings
from invsaga.store.allocation import allocation_rule


def test_the_priority_list_and_strategy_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("INVSAGA_ALLOCATION_STRATEGY", "priority")
    monkeypatch.setenv("INVSAGA_ALLOCATION_PRIORITY", "main, east,west")
    policy = load_settings().allocation_policy
    assert policy == AllocationPolicy(strategy=AllocationStrategy.PRIORITY, priority=("main", "east", "west"))
    assert allocation_rule(policy) == "*priority:main,east,west"


def test_the_default_tries_main_first():
    assert load_settings().allocation_policy == AllocationPolicy(priority=("main",))


def test_most_available_needs_no_list(monkeypatch):
    monkeypatch.setenv("INVSAGA_ALLOCATION_STRATEGY", "most_available")
    assert allocation_rule(load_settings().allocation_policy) == "*most_available"


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("INVSAGA_ALLOCATION_STRATEGY", "nearest", "INVSAGA_ALLOCATION_STRATEGY"),
        ("INVSAGA_ALLOCATION_PRIORITY", "main,main", "listed twice"),
        ("INVSAGA_ALLOCATION_PRIORITY", "main,*east", "INVSAGA_ALLOCATION_PRIORITY"),
    ],
)
def test_a_bad_allocation_setting_is_one_configuration_error(monkeypatch, name, value, problem):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=problem):
        load_settings()
