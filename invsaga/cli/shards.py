"""``invsaga shards list|add|rebalance|drain|remove`` and ``invsaga slots move|moves|resume|abort``:
grow and shrink the shards while checkouts run.

Adding a shard registers and migrates it and moves nothing; ``rebalance`` then moves slots to it, a
short move at a time (``invsaga.store.rebalance`` plans, ``invsaga.store.slot_move`` moves). Every
move is recorded before it starts, so a command stopped by Ctrl-C or SIGTERM leaves it resumable:
``slots resume`` (or the next ``rebalance``) takes it on from its recorded phase, ``slots abort`` undoes
it. Every failure is one line on stderr and an exit code from ``cli.errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from collections import Counter
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import URL

from invsaga.cli.errors import fail, run
from invsaga.cli.settings import command_databases, load_command_settings
from invsaga.domain.checkout import STEPWISE_WORKFLOW_TYPE
from invsaga.domain.errors import ConfigurationError, InvalidInput, MoveRefused
from invsaga.events.owed import owed_by_shard
from invsaga.store.databases import Databases, make_engine, migrate_shard, unavailable_as
from invsaga.store.rebalance import PlannedMove, plan_rebalance
from invsaga.store.registry import (
    ShardEntry,
    check_dsn,
    register_shard,
    resolve_dsn,
    set_shard_state,
)
from invsaga.store.routing import SLOT_COUNT
from invsaga.store.slot_move import MoveOptions, SlotMove, SlotMover, slot_ranges

T = TypeVar("T")

shards_app = typer.Typer(
    help="The shards: list, add, rebalance, drain and remove them while checkouts run.",
    no_args_is_help=True,
)
slots_app = typer.Typer(
    help="Slot moves: move slots to a shard; list, resume and abort moves.", no_args_is_help=True
)

JsonOption = typer.Option(False, "--json", help="Print the result as JSON.")
BatchRowsOption = typer.Option(
    None, "--batch-rows", min=1, help="Rows per copy transaction (default: the mover's)."
)
CatchUpRoundsOption = typer.Option(
    None,
    "--catch-up-rounds",
    min=1,
    help="Catch-up rounds at least before the fence, however few changes come (default: the mover's).",
)
RoundPauseOption = typer.Option(
    None,
    "--round-pause",
    min=0.0,
    max=60.0,
    metavar="SECONDS",
    help="Seconds between catch-up rounds (default: the mover's).",
)
ShardArgument = typer.Argument(metavar="SHARD", min=0, help="The shard's index (`invsaga shards list`).")
StepwiseOption = typer.Option(
    False,
    "--allow-stepwise-checkouts",
    help=f"Move even while checkouts of the old workflow type {STEPWISE_WORKFLOW_TYPE} run, or without "
    "asking Temporal whether they do.",
)

#: Exit code of a command stopped by SIGTERM (128 + 15), as a shell reports it.
_TERMINATED = 143
_INTERRUPTED = 130

_SLOT_PART = re.compile(r"([0-9]+)(?:-([0-9]+))?")
_SLOTS_FORM = "slots and ranges like 0-99,200,4000-4095"


def mount(app: typer.Typer) -> None:
    app.add_typer(shards_app, name="shards")
    app.add_typer(slots_app, name="slots")


# --- input --------------------------------------------------------------------------------------


def parse_slots(value: str) -> list[int]:
    """``0-99,200,4000-4095`` as sorted slots. Strict: no blanks, no backward range, no slot named twice,
    none outside 0..4095, so a typo is refused instead of moving other slots than meant."""
    slots: set[int] = set()
    for part in value.split(","):
        found = _SLOT_PART.fullmatch(part)
        if found is None:
            raise InvalidInput(f"SLOTS: cannot read {part!r} in {value!r}; write {_SLOTS_FORM}")
        start = int(found.group(1))
        end = int(found.group(2)) if found.group(2) is not None else start
        if end < start:
            raise InvalidInput(f"SLOTS: the range {part} runs backwards; write it as {end}-{start}")
        if end >= SLOT_COUNT:
            raise InvalidInput(f"SLOTS: slots are numbered 0..{SLOT_COUNT - 1}, got {end}")
        named = set(range(start, end + 1))
        twice = slots & named
        if twice:
            raise InvalidInput(f"SLOTS: slot {min(twice)} is named twice in {value!r}")
        slots |= named
    return sorted(slots)


def _options(batch_rows: int | None, catch_up_rounds: int | None, round_pause: float | None) -> MoveOptions:
    """The mover's defaults, but for what the command was given. More catch-up rounds than the
    mover's cap raise the cap too, so the rounds asked for are run."""
    given: dict[str, Any] = {}
    if batch_rows is not None:
        given["batch_rows"] = batch_rows
    if catch_up_rounds is not None:
        given["min_rounds"] = catch_up_rounds
        given["max_rounds"] = max(MoveOptions.max_rounds, catch_up_rounds)
    if round_pause is not None:
        given["round_pause"] = round_pause
    return MoveOptions(**given)


# --- running a command that moves slots ---------------------------------------------------------


class _Interrupted(Exception):
    """A move stopped by Ctrl-C or SIGTERM; it is recorded, and resumable."""


class _Stop:
    """Whether the command was stopped by SIGTERM (rather than Ctrl-C), for its exit code."""

    terminated = False


def _run_moving(coro: Coroutine[Any, Any, T]) -> T:
    """``cli.errors.run`` for a command that moves slots: SIGTERM stops it like Ctrl-C does (the
    command's coroutine is cancelled, so the mover's lock and connections are let go of), and a move
    cut short says how to resume it."""
    stop = _Stop()
    try:
        return run(_cancelled_by_sigterm(coro, stop))
    except _Interrupted as stopped:
        raise fail(str(stopped), _TERMINATED if stop.terminated else _INTERRUPTED) from None
    except asyncio.CancelledError:
        raise fail("stopped by SIGTERM", _TERMINATED) from None


async def _cancelled_by_sigterm(coro: Coroutine[Any, Any, T], stop: _Stop) -> T:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def terminate() -> None:
        stop.terminated = True
        if task is not None:
            task.cancel()

    # Not in the main thread (a test's runner) there are no signal handlers, and none are needed.
    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
        loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        return await coro
    finally:
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.remove_signal_handler(signal.SIGTERM)


class _Narrator:
    """Prints a line as a move enters each phase, and a summary when it is done; remembers the move
    and phase last seen, for the line an interruption prints."""

    def __init__(self) -> None:
        self.last: SlotMove | None = None

    def __call__(self, move: SlotMove) -> None:
        seen = self.last
        self.last = move
        if seen is not None and (seen.move_id, seen.phase) == (move.move_id, move.phase):
            return  # another copied batch
        if move.phase == "copying":
            _say(f"move {move.move_id}: copying {_route(move)}")
        elif move.phase == "catching_up":
            _say(f"move {move.move_id}: copied {move.skus_copied} SKU(s); catching up")
        elif move.phase == "flipped":
            _say(f"move {move.move_id}: flipped: shard {move.target} serves the slots{_fence(move)}")
        elif move.phase == "done":
            _say(f"move {move.move_id} done: {_route(move)}, {move.skus_copied} SKU(s) copied{_fence(move)}")


def _say(line: str) -> None:
    print(line, flush=True)


def _route(move: SlotMove | PlannedMove) -> str:
    return f"shard {move.source} -> shard {move.target}, {len(move.slots)} slot(s)"


def _fence(move: SlotMove) -> str:
    return "" if move.fence_ms is None else f", fence {move.fence_ms:.1f} ms"


async def _run_move(mover: SlotMover, narrator: _Narrator, move: SlotMove) -> SlotMove:
    """Run (or resume) one move to done; an interruption says where it stopped and how to go on."""
    if move.phase != "planned":
        _say(f"move {move.move_id}: resuming from phase {move.phase} ({_route(move)})")
    narrator.last = move
    try:
        return await mover.run(move.move_id)
    except asyncio.CancelledError:
        phase = narrator.last.phase if narrator.last is not None else move.phase
        raise _Interrupted(
            f"stopped: move {move.move_id} (last recorded phase: {phase}) is resumable: "
            f"run `invsaga slots resume {move.move_id}` (or `invsaga slots abort {move.move_id}`)"
        ) from None


async def _run_planned(mover: SlotMover, narrator: _Narrator, planned: list[PlannedMove]) -> int:
    """Record and run the planned moves in turn; returns the slots moved."""
    moved = 0
    for step in planned:
        for move in await mover.plan(step.slots, step.target):
            done = await _run_move(mover, narrator, move)
            moved += len(done.slots)
    return moved


def _registry(databases: Databases) -> list[ShardEntry]:
    """The registry; empty only when ``invsaga db migrate`` has not registered INVSAGA_SHARD_DSNS."""
    if not databases.registry:
        raise ConfigurationError(
            "the shard registry is empty: run `invsaga db migrate`, which registers INVSAGA_SHARD_DSNS"
        )
    return databases.registry


def _entry(databases: Databases, shard: int) -> ShardEntry:
    for entry in _registry(databases):
        if entry.index == shard:
            return entry
    raise InvalidInput(f"there is no shard {shard}; `invsaga shards list` shows them")


def _takers(databases: Databases, *, without: int | None = None) -> list[int]:
    return [e.index for e in _registry(databases) if e.takes_slots and e.index != without]


def _holdings(slot_owner: list[int], shards: list[int]) -> str:
    counts = Counter(slot_owner)
    return " ".join(f"{shard}:{counts[shard]}" for shard in shards)


def _move_view(move: SlotMove) -> dict[str, Any]:
    return {
        "move_id": move.move_id,
        "phase": move.phase,
        "source": move.source,
        "target": move.target,
        "slots": move.slots,
        "skus_copied": move.skus_copied,
        "fence_ms": move.fence_ms,
    }


def _move_line(move: SlotMove) -> str:
    return f"  move {move.move_id:<6} {move.phase:<12} {_route(move)}"


# --- shards list --------------------------------------------------------------------------------


async def _list() -> tuple[list[dict[str, Any]], list[SlotMove]]:
    async with command_databases() as databases:
        counts = Counter(databases.router.slots)
        shards = [
            {"index": e.index, "state": e.state, "slots": counts[e.index], "dsn": e.shown_dsn}
            for e in _registry(databases)
        ]
        return shards, await SlotMover(databases).moves(open_only=True)


@shards_app.command("list", help="Every registered shard, its state and slots, and the open slot moves.")
def list_command(as_json: bool = JsonOption) -> None:
    shards, moves = run(_list())
    if as_json:
        print(json.dumps({"shards": shards, "moves": [_move_view(m) for m in moves]}, indent=2))
        return
    print(f"{'shard':<6} {'state':<9} {'slots':>5}  dsn")
    for shard in shards:
        print(f"{shard['index']:<6} {shard['state']:<9} {shard['slots']:>5}  {shard['dsn']}")
    if moves:
        print("open slot moves:")
        for move in moves:
            print(_move_line(move))
    else:
        print("no open slot moves")


# --- shards add ---------------------------------------------------------------------------------


def _first_line(exc: BaseException | None) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _place(url: URL) -> tuple[str | None, int, str | None]:
    return (url.host, url.port or 5432, url.database)


async def _probe_empty(url: URL, shown: str) -> None:
    """The new database must answer, and must not be a shard already (of this or another deployment):
    registering one that is not would leave a shard that every `db migrate` then fails on."""
    engine = make_engine(url, pool_size=1)
    try:
        async with unavailable_as(shown), engine.connect() as conn:
            stamped = await conn.scalar(text("SELECT to_regclass('shard_identity') IS NOT NULL"))
            recorded = await conn.scalar(text("SELECT shard_index FROM shard_identity")) if stamped else None
    except sa_exc.DBAPIError as exc:
        raise InvalidInput(f"cannot use {shown}: {_first_line(exc.orig)}") from None
    finally:
        await engine.dispose()
    if recorded is not None:
        raise InvalidInput(f"{shown} is shard {recorded} of a deployment already; give an empty database")


async def _add(dsn: str) -> int:
    check_dsn(dsn)
    shown = ShardEntry(index=-1, dsn=dsn, state="active").shown_dsn
    async with command_databases() as databases:
        settings = databases.settings or load_command_settings()
        url = resolve_dsn(dsn, settings)
        for entry in _registry(databases):
            if _place(resolve_dsn(entry.dsn, settings)) == _place(url):
                raise InvalidInput(
                    f"{shown} is registered as shard {entry.index} already (if its migration failed, "
                    "`invsaga db migrate` finishes it)"
                )
        await _probe_empty(url, shown)
        index = await register_shard(databases.core, dsn)
    try:
        await migrate_shard(url, index)
    except Exception as exc:
        reason = getattr(exc, "message", None) or _first_line(exc)
        raise ConfigurationError(
            f"shard {index} is registered but its migration failed: {reason}; fix that and run "
            "`invsaga db migrate`, which migrates every registered shard"
        ) from None
    return index


@shards_app.command(
    "add",
    help="Register a new, empty shard and migrate it; it owns no slots until `invsaga shards rebalance`. "
    "DSN is a Postgres URL or env:NAME (an environment variable every process resolves, so no password "
    "is stored in the registry).",
)
def add_command(dsn: str = typer.Argument(metavar="DSN", help="postgresql://... or env:NAME")) -> None:
    index = run(_add(dsn))
    print(f"shard {index} registered and migrated; it owns no slots yet: run `invsaga shards rebalance`")


# --- before a move: the old workflow type ------------------------------------------------------

_RUNNING_STEPWISE = f'WorkflowType = "{STEPWISE_WORKFLOW_TYPE}" AND ExecutionStatus = "Running"'


async def _refuse_while_stepwise_checkouts_run(allowed: bool) -> None:
    """Refuse to start moving slots while checkouts of the old workflow type run (MoveRefused).

    They name a shard in each step's input instead of routing by their lines when the step runs, so a
    step whose slot moved is refused by its old shard until it times out: a paid one would be stuck
    confirming. Asked of Temporal's visibility, which counts what any worker runs."""
    if allowed:
        return
    from temporalio.service import RPCError

    from invsaga.temporal.configured import connect_configured

    settings = load_command_settings()
    skip = "pass --allow-stepwise-checkouts to move without asking"
    try:
        client = await connect_configured(settings)
        running = (await client.count_workflows(_RUNNING_STEPWISE)).count
    except (ConfigurationError, RPCError) as exc:
        raise MoveRefused(
            f"cannot ask Temporal whether {STEPWISE_WORKFLOW_TYPE} checkouts still run: {_first_line(exc)}; "
            f"{skip}"
        ) from None
    if running:
        raise MoveRefused(
            f"{running} checkout(s) of the old workflow type {STEPWISE_WORKFLOW_TYPE} still run, and a "
            f"step of theirs whose slot moved would be refused: let them finish, or {skip}"
        )


# --- shards rebalance ---------------------------------------------------------------------------


async def _rebalance(dry_run: bool, max_slots: int | None, options: MoveOptions, stepwise: bool) -> None:
    narrator = _Narrator()
    if not dry_run:
        await _refuse_while_stepwise_checkouts_run(stepwise)
    async with command_databases() as databases:
        mover = SlotMover(databases, options, narrator)
        takers = _takers(databases)
        open_moves = await mover.moves(open_only=True)
        resumed = 0
        owner = databases.router.slots
        for move in open_moves:
            if dry_run:
                _say(f"would resume move {move.move_id} ({move.phase}): {_route(move)}")
                for slot in move.slots:  # the plan starts from where those moves end
                    owner[slot] = move.target
            else:
                resumed += len((await _run_move(mover, narrator, move)).slots)
        if not dry_run and open_moves:
            owner = (await databases.refresh()).slots
        cap = None if max_slots is None else max(0, max_slots - resumed)
        plan = plan_rebalance(owner, takers, max_slots=cap)
        if dry_run:
            for step in plan:
                _say(f"would move {_route(step)}: {slot_ranges(step.slots)}")
            after = list(owner)
            for step in plan:
                for slot in step.slots:
                    after[slot] = step.target
            moving = sum(len(step.slots) for step in plan)
            _say(
                f"dry run: would move {moving} slot(s) in {len(plan)} move(s); the shards would hold "
                f"{_holdings(after, takers)} (nothing was changed)"
            )
            return
        moved = resumed + await _run_planned(mover, narrator, plan)
        owner = (await databases.refresh()).slots
        left = sum(len(step.slots) for step in plan_rebalance(owner, takers, max_slots=None))
        more = f"; {left} slot(s) still to move: run `invsaga shards rebalance` again" if left else ""
        verdict = "balanced" if not left else "not balanced yet"
        _say(f"moved {moved} slot(s); {verdict}: the shards hold {_holdings(owner, takers)}{more}")


@shards_app.command(
    "rebalance",
    help="Resume any open slot move, then move slots until every active shard holds an equal share. "
    "Stopped (Ctrl-C, SIGTERM), the move in progress stays resumable.",
)
def rebalance_command(
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; change nothing."),
    max_slots: int | None = typer.Option(
        None, "--max-slots", min=1, help="Move at most this many slots this run; the next run goes on."
    ),
    batch_rows: int | None = BatchRowsOption,
    catch_up_rounds: int | None = CatchUpRoundsOption,
    round_pause: float | None = RoundPauseOption,
    stepwise: bool = StepwiseOption,
) -> None:
    _run_moving(_rebalance(dry_run, max_slots, _options(batch_rows, catch_up_rounds, round_pause), stepwise))


# --- shards drain / remove ----------------------------------------------------------------------


async def _drain(shard: int, options: MoveOptions, stepwise: bool) -> None:
    narrator = _Narrator()
    await _refuse_while_stepwise_checkouts_run(stepwise)
    async with command_databases() as databases:
        entry = _entry(databases, shard)
        if entry.state == "removed":
            raise MoveRefused(f"shard {shard} is removed already")
        takers = _takers(databases, without=shard)
        if not takers:
            raise MoveRefused(f"shard {shard} is the only active shard: add another first")
        mover = SlotMover(databases, options, narrator)
        open_moves = await mover.moves(open_only=True)
        inbound = [m for m in open_moves if m.target == shard]
        if inbound:
            raise MoveRefused(
                f"move {inbound[0].move_id} moves slots to shard {shard}: finish it (`invsaga slots resume "
                f"{inbound[0].move_id}`) or abort it (`invsaga slots abort {inbound[0].move_id}`) first"
            )
        await set_shard_state(databases.core, shard, "draining")
        _say(f"shard {shard} is draining: it takes no more slots")
        moved = 0
        for move in open_moves:
            if move.source == shard:
                moved += len((await _run_move(mover, narrator, move)).slots)
        owner = (await databases.refresh()).slots
        plan = [step for step in plan_rebalance(owner, takers, max_slots=None) if step.source == shard]
        moved += await _run_planned(mover, narrator, plan)
        owner = (await databases.refresh()).slots
        _say(
            f"shard {shard} drained: moved {moved} slot(s), it owns {owner.count(shard)}; "
            f"`invsaga shards remove {shard}` retires it"
        )


@shards_app.command(
    "drain",
    help="Stop giving SHARD slots and move every slot it owns to the active shards.",
)
def drain_command(
    shard: int = ShardArgument,
    batch_rows: int | None = BatchRowsOption,
    catch_up_rounds: int | None = CatchUpRoundsOption,
    round_pause: float | None = RoundPauseOption,
    stepwise: bool = StepwiseOption,
) -> None:
    _run_moving(_drain(shard, _options(batch_rows, catch_up_rounds, round_pause), stepwise))


async def _remove(shard: int, *, force: bool) -> str:
    async with command_databases() as databases:
        entry = _entry(databases, shard)
        if entry.state == "removed":
            return f"shard {shard} is removed already"
        owned = databases.router.slots.count(shard)
        if owned:
            raise MoveRefused(
                f"shard {shard} owns {owned} slot(s): `invsaga shards drain {shard}` moves them away first"
            )
        naming = [
            m for m in await SlotMover(databases).moves(open_only=True) if shard in (m.source, m.target)
        ]
        if naming:
            raise MoveRefused(
                f"open move {naming[0].move_id} names shard {shard}: resume or abort it first "
                "(`invsaga slots moves` lists it)"
            )
        owed = {} if force else await owed_by_shard(databases, shard)
        if owed:
            webhook, count = max(owed.items(), key=lambda item: item[1])
            raise MoveRefused(
                f"shard {shard}'s stock events are not all delivered yet ({count} to webhook {webhook}"
                f"{f' and more to {len(owed) - 1} other(s)' if len(owed) > 1 else ''}): no relay reads "
                "them once it is removed; keep `invsaga relay` running until they are, or pass --force"
            )
        await set_shard_state(databases.core, shard, "removed")
    return (
        f"shard {shard} removed: no process routes to it any more. Its data was not deleted; "
        "the server can be retired"
    )


@shards_app.command(
    "remove", help="Retire SHARD once it owns no slots (drain it first) and its events are delivered."
)
def remove_command(
    shard: int = ShardArgument,
    force: bool = typer.Option(
        False, "--force", help="Remove it even though webhooks have not got all of its stock events."
    ),
) -> None:
    print(run(_remove(shard, force=force)))


# --- slots --------------------------------------------------------------------------------------


async def _move(slots: list[int], target: int, options: MoveOptions, stepwise: bool) -> None:
    narrator = _Narrator()
    await _refuse_while_stepwise_checkouts_run(stepwise)
    async with command_databases() as databases:
        _registry(databases)
        mover = SlotMover(databases, options, narrator)
        moves = await mover.plan(slots, target)
        if not moves:
            _say(f"nothing to move: shard {target} owns every one of those slots")
            return
        for move in moves:
            await _run_move(mover, narrator, move)


@slots_app.command("move", help="Move SLOTS (like 0-99,200,4000-4095) to shard SHARD.")
def move_command(
    slots: str = typer.Argument(metavar="SLOTS", help=f"The slots: {_SLOTS_FORM}."),
    to: int = typer.Option(..., "--to", metavar="SHARD", min=0, help="The shard that takes them."),
    batch_rows: int | None = BatchRowsOption,
    catch_up_rounds: int | None = CatchUpRoundsOption,
    round_pause: float | None = RoundPauseOption,
    stepwise: bool = StepwiseOption,
) -> None:
    try:
        wanted = parse_slots(slots)
    except InvalidInput as exc:
        raise fail(exc.message) from None
    _run_moving(_move(wanted, to, _options(batch_rows, catch_up_rounds, round_pause), stepwise))


async def _moves(include_finished: bool) -> list[SlotMove]:
    async with command_databases() as databases:
        return await SlotMover(databases).moves(open_only=not include_finished)


@slots_app.command("moves", help="The open slot moves (every move with --all).")
def moves_command(
    include_finished: bool = typer.Option(False, "--all", help="Include finished and aborted moves."),
    as_json: bool = JsonOption,
) -> None:
    moves = run(_moves(include_finished))
    if as_json:
        print(json.dumps([_move_view(m) for m in moves], indent=2))
        return
    if not moves:
        print("no slot moves" if include_finished else "no open slot moves")
    for move in moves:
        print(f"{_move_line(move)}, {move.skus_copied} SKU(s) copied{_fence(move)}")


async def _resume(move_id: int | None, options: MoveOptions) -> None:
    narrator = _Narrator()
    async with command_databases() as databases:
        mover = SlotMover(databases, options, narrator)
        moves = [await mover.get(move_id)] if move_id is not None else await mover.moves(open_only=True)
        if not moves:
            _say("no open slot moves")
        for move in moves:
            if move.phase == "done":
                _say(f"move {move.move_id} is done already: {_route(move)}")
                continue
            await _run_move(mover, narrator, move)


@slots_app.command(
    "resume", help="Run an open slot move from its recorded phase (every open one by default)."
)
def resume_command(
    move_id: int | None = typer.Argument(None, metavar="[MOVE_ID]", help="The move (`invsaga slots moves`)."),
    batch_rows: int | None = BatchRowsOption,
    catch_up_rounds: int | None = CatchUpRoundsOption,
    round_pause: float | None = RoundPauseOption,
) -> None:
    _run_moving(_resume(move_id, _options(batch_rows, catch_up_rounds, round_pause)))


async def _abort(move_id: int) -> SlotMove:
    async with command_databases() as databases:
        return await SlotMover(databases).abort(move_id)


@slots_app.command(
    "abort", help="Undo a slot move that has not flipped: its source serves the slots as before."
)
def abort_command(
    move_id: int = typer.Argument(metavar="MOVE_ID", help="The move (`invsaga slots moves`)."),
) -> None:
    move = run(_abort(move_id))
    print(
        f"move {move.move_id} aborted: shard {move.source} serves its {len(move.slots)} slot(s) as before; "
        f"the copy on shard {move.target} was deleted"
    )
