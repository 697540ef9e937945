"""The schema's files keep their roles: tables in numbered migrations, every function and trigger in
one repeatable definition, and keys built in SQL from the one format of each in the domain."""

from __future__ import annotations

import re

import pytest

from invsaga.domain.keys import import_key
from invsaga.store.ledger import key_sql
from invsaga.store.migrations import definitions_for, migrations_for

_CREATES = re.compile(r"^\s*CREATE\s+(OR\s+REPLACE\s+)?(FUNCTION|TRIGGER|PROCEDURE)\s+(\w+)", re.I | re.M)


@pytest.mark.parametrize("kind", ["shard", "core"])
def test_no_numbered_migration_creates_a_function_or_trigger(kind):
    """Their text lives in one definition each; a migration that created one would split it again."""
    for migration in migrations_for(kind):
        assert not _CREATES.search(migration.sql), f"{kind}_{migration.version:03d}.sql"


def test_each_definition_replaces_what_it_creates_and_is_named_by_its_function():
    shard_names = [
        "guard_moving_slots", "notify_stock_available", "notify_stock_inserted", "record_stock_events",
        "reserve_stock", "slot_served_here",
    ]  # fmt: skip
    assert [d.name for d in definitions_for("shard")] == shard_names
    assert [d.name for d in definitions_for("core")] == ["record_order_events"]
    for definition in [*definitions_for("shard"), *definitions_for("core")]:
        creates = _CREATES.findall(definition.sql)
        assert creates and all(or_replace for or_replace, _, _ in creates), definition.name
        assert [name for _, what, name in creates if what.upper() == "FUNCTION"] == [definition.name]


def test_a_key_rendered_in_sql_keeps_the_domain_format():
    assert key_sql(import_key, ":batch", "sku", "location") == (
        r"'import\:' || :batch || '\:' || sku || '\:' || location"
    )
    assert key_sql(lambda who: f"it's {who}", "name") == "'it''s ' || name"


def test_a_key_function_that_does_more_than_format_cannot_be_rendered():
    with pytest.raises(ValueError, match="each of its arguments once"):
        key_sql(lambda a, b: f"{a}-{a}", "x", "y")
