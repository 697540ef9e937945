"""The rebalance planner: equal shares, the fewest slots moved, spread picks, short moves, a cap."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest

from invsaga.domain.errors import InvalidInput
from invsaga.store.rebalance import DEFAULT_CHUNK, PlannedMove, plan_rebalance
from invsaga.store.routing import SLOT_COUNT, ShardRouter


def _applied(slot_owner: list[int], moves: list[PlannedMove]) -> list[int]:
    """The map after the moves, checking each move takes slots its source owns at that point."""
    after = list(slot_owner)
    for move in moves:
        assert move.source != move.target
        for slot in move.slots:
            assert after[slot] == move.source, (slot, move)
            after[slot] = move.target
    return after


def _moved(moves: list[PlannedMove]) -> list[int]:
    return [slot for move in moves for slot in move.slots]


def _surplus(slot_owner: list[int], takers: list[int]) -> int:
    """The fewest slots any plan can move: all of the non-takers', plus what takers hold above the
    larger share (over ceil(4096/n) must go; the floor-share shards may keep one extra each only
    while there are spare larger shares)."""
    counts = Counter(slot_owner)
    base, extra = divmod(SLOT_COUNT, len(takers))
    over_ceiling = sum(max(0, counts[t] - (base + 1)) for t in takers)
    at_ceiling = sum(1 for t in takers if counts[t] >= base + 1)
    return (
        sum(n for shard, n in counts.items() if shard not in takers)
        + over_ceiling
        + max(0, at_ceiling - extra)
    )


def _assert_balanced(slot_owner: list[int], takers: list[int]) -> None:
    counts = Counter(slot_owner)
    assert set(counts) <= set(takers)
    sizes = [counts[t] for t in takers]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == SLOT_COUNT


def _check_plan(slot_owner: list[int], takers: list[int], moves: list[PlannedMove]) -> list[int]:
    after = _applied(slot_owner, moves)
    _assert_balanced(after, takers)
    moved = _moved(moves)
    assert len(moved) == len(set(moved)) == _surplus(slot_owner, takers)
    assert all(0 < len(m.slots) <= DEFAULT_CHUNK and m.slots == sorted(m.slots) for m in moves)
    return after


def test_two_shards_to_three_moves_a_third_of_the_slots_to_the_new_one():
    before = ShardRouter.evenly(2).slots
    moves = plan_rebalance(before, [0, 1, 2], max_slots=None)
    after = _check_plan(before, [0, 1, 2], moves)
    assert sorted(Counter(after).values()) == [1365, 1365, 1366]
    assert {m.target for m in moves} == {2}
    assert Counter(m.source for m in moves for _ in m.slots) in (
        Counter({0: 682, 1: 683}),
        Counter({0: 683, 1: 682}),
    )


def test_three_shards_to_four():
    before = ShardRouter.evenly(3).slots
    moves = plan_rebalance(before, [0, 1, 2, 3], max_slots=None)
    after = _check_plan(before, [0, 1, 2, 3], moves)
    assert Counter(after) == {0: 1024, 1: 1024, 2: 1024, 3: 1024}
    assert len(_moved(moves)) == 1024


def test_a_draining_shard_gives_away_every_slot_and_nothing_else_moves():
    before = ShardRouter.evenly(3).slots  # 1366 / 1365 / 1365
    moves = plan_rebalance(before, [0, 2], max_slots=None)
    after = _check_plan(before, [0, 2], moves)
    assert 1 not in after
    assert {m.source for m in moves} == {1}
    assert Counter(after) == {0: 2048, 2: 2048}


def test_a_draining_shard_and_an_overloaded_one_both_give():
    before = [0] * 3000 + [1] * 96 + [2] * 1000
    moves = plan_rebalance(before, [0, 2, 3], max_slots=None)
    after = _check_plan(before, [0, 2, 3], moves)
    assert {m.source for m in moves} == {0, 1}
    assert Counter(after)[0] == 1366  # the fullest keeps the larger share


@pytest.mark.parametrize("shard_count", [1, 2, 3, 5])
def test_a_balanced_map_plans_no_moves(shard_count):
    before = ShardRouter.evenly(shard_count).slots
    assert plan_rebalance(before, list(range(shard_count)), max_slots=None) == []


def test_a_balanced_map_in_any_arrangement_plans_no_moves():
    before = [0] * 1365 + [1] * 1366 + [2] * 1365
    random.Random(7).shuffle(before)
    assert plan_rebalance(before, [0, 1, 2], max_slots=None) == []


def test_max_slots_caps_the_run_evenly_and_the_next_run_finishes():
    before = ShardRouter.evenly(2).slots
    capped = plan_rebalance(before, [0, 1, 2], max_slots=64)
    assert len(_moved(capped)) == 64
    midway = _applied(before, capped)
    assert Counter(midway) == {0: 2016, 1: 2016, 2: 64}  # taken evenly from both donors
    rest = plan_rebalance(midway, [0, 1, 2], max_slots=None)
    _check_plan(midway, [0, 1, 2], rest)
    assert len(_moved(capped)) + len(_moved(rest)) == _surplus(before, [0, 1, 2])


def test_a_cap_above_what_must_move_moves_only_that():
    before = ShardRouter.evenly(3).slots
    moves = plan_rebalance(before, [0, 1, 2, 3], max_slots=5000)
    assert len(_moved(moves)) == 1024


def test_a_cap_of_zero_moves_nothing_and_a_negative_cap_is_refused():
    before = ShardRouter.evenly(2).slots
    assert plan_rebalance(before, [0, 1, 2], max_slots=0) == []
    with pytest.raises(InvalidInput):
        plan_rebalance(before, [0, 1, 2], max_slots=-1)


def test_slots_moved_equal_the_sum_of_the_surpluses_on_uneven_maps():
    rng = random.Random(13)
    for _ in range(40):
        shards = rng.randint(1, 5)
        weights = [rng.random() for _ in range(shards)]
        before = rng.choices(range(shards), weights=weights, k=SLOT_COUNT)
        takers = sorted(rng.sample(range(shards + 2), rng.randint(1, shards + 1)))
        moves = plan_rebalance(before, takers, max_slots=None)
        _check_plan(before, takers, moves)


def test_the_plan_is_deterministic():
    before = [0] * 2500 + [1] * 1596
    random.Random(3).shuffle(before)
    first = plan_rebalance(before, [0, 1, 2, 3], max_slots=700)
    again = plan_rebalance(list(before), [3, 2, 1, 0], max_slots=700)
    assert first == again


def test_a_donor_gives_every_kth_slot_not_one_block():
    before = ShardRouter.evenly(2).slots
    moves = plan_rebalance(before, [0, 1, 2], max_slots=None)
    from_zero = sorted(s for m in moves if m.source == 0 for s in m.slots)
    gaps = {b - a for a, b in itertools.pairwise(from_zero)}
    # Shard 0 owns every 2nd slot and gives one in k of them: the gaps are 2 * floor(k) or 2 * ceil(k).
    k = 2048 / len(from_zero)
    assert gaps <= {2 * math.floor(k), 2 * math.ceil(k)}
    assert from_zero[0] < 10 and from_zero[-1] > SLOT_COUNT - 10
    for move in moves:  # every move spans the range, as every 6th slot or so: no contiguous block
        assert move.slots[0] < 64 and move.slots[-1] > SLOT_COUNT - 64
        assert len(move.slots) in (len(moves[0].slots), len(moves[0].slots) - 1)


def test_a_donor_feeding_two_receivers_gives_each_slots_from_its_whole_range():
    before = [0] * 1024 + [1] * 1024 + [2] * 2048  # shard 2 drains into 0 and 1
    moves = plan_rebalance(before, [0, 1], max_slots=None)
    _check_plan(before, [0, 1], moves)
    for target in (0, 1):
        received = sorted(s for m in moves if m.target == target for s in m.slots)
        assert received[0] < 2048 + 64 and received[-1] > SLOT_COUNT - 64, target


def test_moves_are_one_source_and_one_target_of_at_most_the_chunk():
    before = [0] * SLOT_COUNT
    moves = plan_rebalance(before, [0, 1, 2, 3], max_slots=None, chunk=100)
    assert all(len(m.slots) <= 100 for m in moves)
    assert Counter(m.target for m in moves for _ in m.slots) == {1: 1024, 2: 1024, 3: 1024}


def test_no_takers_is_refused():
    with pytest.raises(InvalidInput, match="no active shard"):
        plan_rebalance(ShardRouter.evenly(2).slots, [], max_slots=None)
