"""One ``invsaga dev`` per data directory: a second refuses, naming the running stack's pid, and touches
nothing; of two started at once exactly one wins; a stack that died leaves nothing in the way.

The whole stack running beside a second ``invsaga dev`` is tested in tests/e2e/test_dev_stack.py; here
the holder of the lock is a small process, so every case takes a second."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from invsaga.dev.lock import StackAlreadyRunning, StackLock

#: Takes the lock on the data dir in argv[1], says so, and holds it until its stdin closes.
_HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from invsaga.dev.lock import StackAlreadyRunning, StackLock
    lock = StackLock(Path(sys.argv[1]))
    try:
        lock.acquire()
    except StackAlreadyRunning as exc:
        print("refused", exc.pid, flush=True)
        sys.exit(75)
    print("locked", flush=True)
    sys.stdin.read()
    """
)


def _holder(data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _release(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    process.wait(timeout=10)


def test_a_second_invsaga_dev_refuses_with_the_running_pid_and_touches_nothing(tmp_path):
    data_dir = tmp_path / "data"
    holder = _holder(data_dir)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        stack_file = data_dir / "stack.json"
        stack_file.write_text(json.dumps({"pid": holder.pid, "endpoints": {}, "env": {}}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("INVSAGA_")}
        done = subprocess.run(
            [sys.executable, "-m", "invsaga", "dev", "--data-dir", str(data_dir), "--shards", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 75, done.stdout + done.stderr
        [line] = done.stderr.splitlines()
        assert line.startswith(f"error: a dev stack is already running, pid {holder.pid} ")
        assert "stopping" not in done.stdout
        assert json.loads(stack_file.read_text())["pid"] == holder.pid  # still there, unchanged
        assert sorted(p.name for p in data_dir.iterdir()) == ["dev.lock", "stack.json"]
    finally:
        _release(holder)


def test_of_several_started_at_once_exactly_one_holds_the_lock(tmp_path):
    data_dir = tmp_path / "data"
    racers = [_holder(data_dir) for _ in range(6)]
    try:
        answers = [racer.stdout.readline().split() for racer in racers if racer.stdout is not None]
        winners = [racer for racer, answer in zip(racers, answers, strict=True) if answer == ["locked"]]
        assert len(winners) == 1, answers
        refusals = [answer for answer in answers if answer[0] == "refused"]
        assert refusals == [["refused", str(winners[0].pid)]] * 5
    finally:
        for racer in racers:
            if racer.poll() is None:
                _release(racer)


def test_a_stack_that_died_leaves_its_lock_and_stack_file_to_the_next(tmp_path):
    data_dir = tmp_path / "data"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    (data_dir).mkdir()
    (data_dir / "stack.json").write_text(json.dumps({"pid": int(dead.stdout), "endpoints": {}}))
    first = _holder(data_dir)
    assert first.stdout is not None and first.stdout.readline().strip() == "locked"
    first.kill()  # as a crash would: no clean-up ran, and the kernel dropped the lock
    first.wait(timeout=10)
    lock = StackLock(data_dir)
    lock.acquire(stack_file=data_dir / "stack.json")
    try:
        assert (data_dir / "dev.lock").read_text().strip() == str(os.getpid())
        with pytest.raises(StackAlreadyRunning, match=f"pid {os.getpid()}"):
            StackLock(data_dir).acquire()  # a second open file description: flock refuses it too
    finally:
        lock.release()
