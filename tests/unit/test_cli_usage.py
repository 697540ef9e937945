"""The ``invsaga`` console script's usage errors, help and version, as a newcomer meets them: a usage
error is one line on stderr and exit 2, boolean options read as flags, and ``--version`` answers from
the installed distribution. No server is needed: every case fails (or answers) before one is used."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

import pytest

_BOX = ("╭", "│", "╰")


def _invsaga(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVSAGA_")}
    return subprocess.run(
        [sys.executable, "-m", "invsaga", *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["no-such-command"], "No such command 'no-such-command' (see 'invsaga --help')"),
        (["checkout", "--no-such-option", "MUG:1"], "No such option: --no-such-option"),
        (["stock", "get"], "Missing argument 'SKU' (see 'invsaga stock get --help')"),
        (["checkout", "MUG:1", "--timeout", "soon"], "Invalid value for '--timeout'"),
        (["dev", "--shards", "0"], "Invalid value for '--shards'"),
    ],
)
def test_a_usage_error_is_one_line_on_stderr_and_exit_2(args, needle):
    done = _invsaga(*args)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert not any(mark in done.stderr for mark in _BOX)


def test_help_shows_boolean_options_as_plain_flags():
    done = _invsaga("checkout", "--help")
    assert done.returncode == 0, done.stderr
    [json_line] = [line for line in done.stdout.splitlines() if line.strip().startswith("--json")]
    assert "<bool>" not in json_line and "Print the result as JSON" in json_line
    assert not any(mark in done.stdout for mark in _BOX)


def test_version_comes_from_the_installed_distribution():
    done = _invsaga("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"invsaga {version('inventory-saga')}"
