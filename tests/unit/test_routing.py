"""Routing must be stable across processes and spread SKUs evenly over the shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from invsaga.domain.errors import ConfigurationError
from invsaga.domain.stock import StockLine
from invsaga.store.routing import SLOT_COUNT, ShardRouter, slot_of

SAMPLE = [f"SKU-{n}" for n in range(2000)] + ["mug", "MUG", "é-unicode", "a" * 64]


def test_slots_are_the_same_in_another_process_with_another_hash_seed():
    script = (
        "import json, sys; from invsaga.store.routing import slot_of; "
        "print(json.dumps([slot_of(s) for s in json.load(sys.stdin)]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(SAMPLE), env=env, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    assert json.loads(other.stdout) == [slot_of(s) for s in SAMPLE]


def test_a_million_skus_spread_evenly_over_four_shards():
    router = ShardRouter.evenly(4)
    counts = Counter(router.shard_of(f"SKU-{n:07d}") for n in range(1_000_000))
    shares = {shard: count / 1_000_000 for shard, count in counts.items()}
    assert set(shares) == {0, 1, 2, 3}
    assert all(0.24 <= share <= 0.26 for share in shares.values()), shares


def test_slots_cover_the_whole_range():
    assert {slot_of(f"S{n}") for n in range(100_000)} == set(range(SLOT_COUNT))


def test_lines_are_grouped_by_shard_and_sorted_by_key():
    router = ShardRouter.evenly(3)
    lines = [StockLine(sku=f"SKU-{n}", quantity=1, location=loc) for n in range(30) for loc in ("b", "a")]
    groups = router.group_lines(reversed(lines))
    assert sum(len(g) for g in groups.values()) == len(lines)
    for shard, group in groups.items():
        assert all(router.shard_of(line.sku) == shard for line in group)
        assert [line.key for line in group] == sorted(line.key for line in group)


def test_a_slot_map_must_be_complete():
    with pytest.raises(ConfigurationError):
        ShardRouter([0] * (SLOT_COUNT - 1))
    with pytest.raises(ConfigurationError):
        ShardRouter.evenly(0)
