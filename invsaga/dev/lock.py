"""One ``invsaga dev`` per data directory.

A second stack on the same folder would start Postgres on clusters that are already running (pg_ctl
fails), then, cleaning up, delete the running stack's ``stack.json``. So the stack holds an exclusive
``flock`` on ``<data-dir>/dev.lock`` for its whole life, with its pid written inside for the message.
The kernel drops the lock when the process ends, however it ends, so a stack that died leaves no lock
to clear by hand: the next one takes over. Two started at once race on one ``flock`` call, which only
one can win; the loser touches nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

LOCK_FILE = "dev.lock"
#: How long a loser waits for the winner to write its pid (it does so right after locking).
_PID_WAIT_SECONDS = 2.0


class StackAlreadyRunning(Exception):
    def __init__(self, pid: int | None, data_dir: Path) -> None:
        self.pid = pid
        running = f"a dev stack is already running, pid {pid}" if pid else "a dev stack is already running"
        super().__init__(f"{running} (data dir {data_dir}); stop it first, or use another --data-dir")


class StackLock:
    """Held from before the first server starts until the last one has stopped."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, stack_file: Path | None = None) -> None:
        """Take the lock, or raise StackAlreadyRunning naming the holder's pid. With ``stack_file``, a
        stack that an older version started (no lock, but a live pid in its stack.json) also counts."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Not inherited by the children (Python's default): Postgres outlives a pg_ctl call, and must
        # not keep the lock after the stack is gone.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StackAlreadyRunning(self._holder(), self.data_dir) from None
        unlocked_pid = _live_stack_pid(stack_file) if stack_file else None
        if unlocked_pid is not None:
            os.close(fd)
            raise StackAlreadyRunning(unlocked_pid, self.data_dir)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        # The file stays: unlinking it would let a newcomer lock a fresh file while a waiter holds the
        # old one, and two stacks would run.
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    def _holder(self) -> int | None:
        deadline = time.monotonic() + _PID_WAIT_SECONDS
        while True:
            try:
                text = self.path.read_text().strip()
            except OSError:
                text = ""
            if text.isdigit():
                return int(text)
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)


def _live_stack_pid(stack_file: Path) -> int | None:
    """The pid in ``stack_file`` if that process still runs ``invsaga``; None for a stale file."""
    try:
        pid = int(json.loads(stack_file.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid == os.getpid() or not _alive(pid):
        return None
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid  # no /proc to tell a reused pid apart: alive is the best we know
    return pid if b"invsaga\0dev" in command else None  # `invsaga dev`, not a worker with its pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
