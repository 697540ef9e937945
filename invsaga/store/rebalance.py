"""Which slots to move so that every active shard holds an equal share: the plan, not the moving.

Given the slot map and the shards that take slots, the plan moves as few slots as possible. Each
active shard's share is ``SLOT_COUNT // n`` or one more; the larger shares go to the shards that hold
the most already, so the slots moved are exactly the sum of the surpluses (every slot of a draining
shard, and what an active shard holds above its share). Nothing is moved twice and nothing is moved
between two shards that are both at their share.

Slots leave the most loaded donors first. A donor gives every k-th of its slots rather than one block,
dealt out evenly to its receivers, and each move takes every m-th of those, so a hot range of SKUs is
spread over several moves instead of fencing as one. Moves are one source and one target each and at
most ``chunk`` slots (equal to within one), so each move's fence stays short. A cap on the slots moved
in one run takes from the donors and gives to the receivers evenly, so the map after a capped run is as
close to balanced as that many moves can make it, and the next run goes on from there.

Pure: no I/O, the same input always gives the same plan (``invsaga shards rebalance`` runs it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from invsaga.domain.errors import InvalidInput
from invsaga.store.routing import SLOT_COUNT

#: Slots per move: small enough that one move's catch-up and fence are short.
DEFAULT_CHUNK = 128


@dataclass(frozen=True)
class PlannedMove:
    source: int
    target: int
    slots: list[int]


def shares(slot_owner: Sequence[int], takers: Sequence[int]) -> dict[int, int]:
    """Each taker's share of the slots: equal to within one, the larger shares to the fullest shards."""
    counts = _counts(slot_owner)
    ordered = sorted(set(takers), key=lambda shard: (-counts.get(shard, 0), shard))
    if not ordered:
        raise InvalidInput("no active shard takes slots: add or reactivate one first")
    base, extra = divmod(len(slot_owner), len(ordered))
    return {shard: base + (1 if rank < extra else 0) for rank, shard in enumerate(ordered)}


def plan_rebalance(
    slot_owner: Sequence[int],
    takers: Sequence[int],
    *,
    max_slots: int | None,
    chunk: int = DEFAULT_CHUNK,
) -> list[PlannedMove]:
    """The moves that balance ``slot_owner`` (the shard of every slot) over ``takers``, moving at most
    ``max_slots`` slots (None: all that must move). Empty when the map is balanced already."""
    if len(slot_owner) != SLOT_COUNT:
        raise InvalidInput(f"the slot map has {len(slot_owner)} slots, need {SLOT_COUNT}")
    if max_slots is not None and max_slots < 0:
        raise InvalidInput(f"the most slots to move must be 0 or more, got {max_slots}")
    if chunk < 1:
        raise InvalidInput(f"slots per move must be 1 or more, got {chunk}")
    counts = _counts(slot_owner)
    share = shares(slot_owner, takers)
    surplus = {shard: n - share.get(shard, 0) for shard, n in counts.items() if n > share.get(shard, 0)}
    deficit = {
        shard: want - counts.get(shard, 0) for shard, want in share.items() if want > counts.get(shard, 0)
    }
    budget = sum(surplus.values()) if max_slots is None else min(max_slots, sum(surplus.values()))
    given = _even_draw(surplus, counts, budget)
    taken = _even_draw(deficit, {shard: -counts.get(shard, 0) for shard in deficit}, budget)

    owned: dict[int, list[int]] = {}
    for slot, shard in enumerate(slot_owner):
        owned.setdefault(shard, []).append(slot)
    moves: list[PlannedMove] = []
    receivers = [[shard, n] for shard, n in sorted(taken.items()) if n]
    for donor in sorted(given, key=lambda shard: (-counts[shard], shard)):
        portions: list[tuple[int, int]] = []  # (receiver, slots), filling the receivers in turn
        left = given[donor]
        while left:
            receiver = receivers[0]
            portion = min(receiver[1], left)
            portions.append((receiver[0], portion))
            receiver[1] -= portion
            left -= portion
            if not receiver[1]:
                receivers.pop(0)
        for receiver_shard, slots in _deal(_spread(owned[donor], given[donor]), portions):
            parts = -(-len(slots) // chunk)
            # Every parts-th slot per move: each move spans the range, and the moves are equal to
            # within one slot.
            moves.extend(PlannedMove(donor, receiver_shard, slots[i::parts]) for i in range(parts))
    return moves


def _counts(slot_owner: Sequence[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for shard in slot_owner:
        counts[shard] = counts.get(shard, 0) + 1
    return counts


def _even_draw(limits: dict[int, int], load: dict[int, int], budget: int) -> dict[int, int]:
    """``budget`` units drawn from ``limits`` one at a time, each from the shard with the most left
    (by ``load``, less what it has given so far; ties to the lower index): with a cap, the donors
    end as even as they can, and so do the receivers."""
    drawn = dict.fromkeys(limits, 0)
    for _ in range(budget):
        shard = min((s for s in limits if drawn[s] < limits[s]), key=lambda s: (-(load[s] - drawn[s]), s))
        drawn[shard] += 1
    return {shard: n for shard, n in drawn.items() if n}


def _deal(picks: list[int], portions: list[tuple[int, int]]) -> list[tuple[int, list[int]]]:
    """The picks dealt out in order to the receivers, each in proportion to its portion, so every
    receiver's slots span the donor's whole range instead of one part of it."""
    dealt: list[list[int]] = [[] for _ in portions]
    for pick in picks:
        open_ = [i for i, (_, n) in enumerate(portions) if len(dealt[i]) < n]
        chosen = min(open_, key=lambda i: (len(dealt[i]) / portions[i][1], i))
        dealt[chosen].append(pick)
    return [(receiver, slots) for (receiver, _), slots in zip(portions, dealt, strict=True)]


def _spread(slots: list[int], count: int) -> list[int]:
    """``count`` of ``slots`` (sorted), evenly spaced over them: every k-th one, not one block."""
    if count >= len(slots):
        return list(slots)
    return [slots[(2 * i + 1) * len(slots) // (2 * count)] for i in range(count)]


__all__ = ["DEFAULT_CHUNK", "PlannedMove", "plan_rebalance", "shares"]
