"""Static checks of the Dockerfile, its build context and its dependency lock (no Docker engine here)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.support import (
    DOCKERFILE,
    LOCK_FILE,
    ROOT,
    dockerignore_excludes,
    dockerignore_patterns,
    load_compose,
    parse_cli,
    read_env_example,
)

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PARSER = DockerfileParser(path=str(DOCKERFILE))
INSTRUCTIONS: list[dict[str, Any]] = [i for i in PARSER.structure if i["instruction"] != "COMMENT"]


def stages() -> list[list[dict[str, Any]]]:
    found: list[list[dict[str, Any]]] = []
    for instruction in INSTRUCTIONS:
        if instruction["instruction"] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def stage_name(stage: list[dict[str, Any]]) -> str | None:
    parts = stage[0]["value"].split()
    return parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None


def last(stage: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    matches = [i for i in stage if i["instruction"] == kind]
    return matches[-1] if matches else None


def exec_form(instruction: dict[str, Any]) -> list[str]:
    value = json.loads(instruction["value"])
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), "use the exec (JSON) form"
    return value


FINAL = stages()[-1]


def test_the_dockerfile_parses_into_a_multi_stage_build():
    assert PARSER.is_multistage and len(stages()) >= 2
    names = [stage_name(stage) for stage in stages()]
    assert None not in names, "name every stage"
    for stage in stages():
        for instruction in stage:
            match = re.search(r"--from=(\S+)", instruction["value"])
            if instruction["instruction"] == "COPY" and match:
                assert match[1] in names[: stages().index(stage)], f"COPY from unknown stage {match[1]}"
    copies = [i["value"] for i in FINAL if i["instruction"] == "COPY"]
    assert copies and all("--from=" in value for value in copies), "the runtime stage takes only artifacts"


def test_the_image_runs_as_an_unprivileged_numeric_user():
    user = last(FINAL, "USER")
    assert user is not None, "the runtime stage must set USER"
    uid, _, gid = user["value"].partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric uid lets orchestrators enforce runAsNonRoot"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    after = FINAL[FINAL.index(user) :]
    assert not [i for i in after if i["instruction"] == "RUN"], "nothing may run as root after USER"


def test_the_entrypoint_is_our_cli_and_the_default_command_exists():
    entrypoint = exec_form(last(FINAL, "ENTRYPOINT") or {"value": "null"})
    assert entrypoint == ["invsaga"]
    assert "invsaga" in PYPROJECT["project"]["scripts"]
    command = exec_form(last(FINAL, "CMD") or {"value": "null"})
    assert parse_cli(command) == ["worker"]


def test_the_base_image_is_pinned_to_the_python_the_lock_was_made_for():
    [default] = [
        i["value"] for i in INSTRUCTIONS if i["instruction"] == "ARG" and "PYTHON_IMAGE=" in i["value"]
    ]
    image = default.split("=", 1)[1]
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-\w+", image)
    assert match, f"pin the base image to a patch release: {image}"
    assert f"{match[1]}.{match[2]}" == "3.11" == PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert "--python-version 3.11" in (ROOT / "docker" / "update-lock.sh").read_text()
    assert set(PARSER.parent_images) == {image}


def test_dependencies_are_installed_from_the_hashed_lock_and_nothing_else():
    runs = [i["value"] for i in INSTRUCTIONS if i["instruction"] == "RUN"]
    pip_installs = [shlex.split(part) for run in runs for part in run.split("&&") if "pip install" in part]
    assert pip_installs
    for words in pip_installs:
        assert "--no-deps" in words, f"every install is --no-deps, so only locked packages get in: {words}"
    [locked] = [w for w in pip_installs if "-r" in w]
    assert "--require-hashes" in locked
    copied = [i["value"].split() for i in INSTRUCTIONS if i["instruction"] == "COPY"]
    lock = str(LOCK_FILE.relative_to(ROOT))
    assert [lock, locked[locked.index("-r") + 1]] in copied


def _lock_entries() -> dict[str, tuple[Version, str, list[str]]]:
    text = LOCK_FILE.read_text().replace("\\\n", " ")
    entries: dict[str, tuple[Version, str, list[str]]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        hashes = re.findall(r"--hash=(\S+)", line)
        spec = re.sub(r"--hash=\S+", "", line).strip()
        requirement = Requirement(spec)
        [pin] = list(requirement.specifier)
        assert pin.operator == "==", f"not pinned: {spec}"
        entries[canonicalize_name(requirement.name)] = (Version(pin.version), str(requirement.marker), hashes)
    return entries


def test_the_lock_pins_every_dependency_within_what_pyproject_allows():
    """A stale lock (docker/update-lock.sh not re-run after a pyproject change) fails here."""
    entries = _lock_entries()
    wanted = [
        *PYPROJECT["build-system"]["requires"],
        *PYPROJECT["project"]["dependencies"],
        *PYPROJECT["project"]["optional-dependencies"]["otel"],
    ]
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in entries, (
            f"{requirement.name} is missing from {LOCK_FILE.name}: run docker/update-lock.sh"
        )
        version = entries[name][0]
        assert requirement.specifier.contains(version, prereleases=True), f"{name}=={version} breaks {text}"
    unhashed = [locked for locked, (_, _, hashes) in entries.items() if not hashes]
    assert not unhashed, f"no hashes for {unhashed}"


def test_the_lock_script_parses():
    subprocess.run(["sh", "-n", str(ROOT / "docker" / "update-lock.sh")], check=True)


# --- the build context ------------------------------------------------------------------------------


def _our_packages() -> list[str]:
    includes = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    roots = {pattern.rstrip("*").rstrip(".") for pattern in includes}
    return sorted(root for root in roots if (ROOT / root / "__init__.py").exists())


def test_the_build_context_holds_our_packages_and_the_lock():
    patterns = dockerignore_patterns()
    needed = ["pyproject.toml", str(LOCK_FILE.relative_to(ROOT))]
    for package in _our_packages():
        needed += [str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*") if p.is_file()]
    missing = [
        path
        for path in needed
        if "__pycache__" not in path and not path.endswith(".pyc") and dockerignore_excludes(path, patterns)
    ]
    assert not missing, f".dockerignore leaves out what the image is built from: {missing[:5]}"


@pytest.mark.parametrize(
    "path",
    [".env", ".git/config", ".venv/bin/python", ".data/stack.json", "tests/conftest.py", "bench/run.py",
     "docker-compose.yml", "invsaga/store/__pycache__/stock.cpython-311.pyc", "docs/operations.md"],
)  # fmt: skip
def test_the_build_context_leaves_out_secrets_and_local_state(path: str):
    assert dockerignore_excludes(path, dockerignore_patterns())


def _named_by_package_data(path: Path, package_data: dict[str, list[str]]) -> bool:
    """Whether a pattern of the file's package, or of a package above it, names it: setuptools globs each
    pattern from its package's folder, so ``definitions/*/*.sql`` reaches into folders that are not
    packages, and ``*.sql`` does not."""
    for folder in path.parents:
        if folder == ROOT:
            return False
        if not (folder / "__init__.py").exists():
            continue
        relative = path.relative_to(folder)
        patterns = package_data.get("*", []) + package_data.get(".".join(folder.relative_to(ROOT).parts), [])
        if any(len(Path(p).parts) == len(relative.parts) and relative.match(p) for p in patterns):
            return True
    return False


def test_every_data_file_of_our_packages_is_installed():
    """The image installs our packages as a wheel, which carries only the data files that
    [tool.setuptools.package-data] names (the SQL migrations, for one)."""
    package_data: dict[str, list[str]] = PYPROJECT["tool"]["setuptools"].get("package-data", {})
    uncovered = []
    for package in _our_packages():
        for path in (ROOT / package).rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            if not _named_by_package_data(path, package_data):
                uncovered.append(str(path.relative_to(ROOT)))
    assert not uncovered, (
        f"missing from the installed package (so from the image): {uncovered}; "
        "list them under [tool.setuptools.package-data] in pyproject.toml"
    )


def test_the_image_listens_where_compose_expects():
    exposed = {int(port) for i in FINAL if i["instruction"] == "EXPOSE" for port in i["value"].split()}
    compose = load_compose(read_env_example()[0])
    wanted = set()
    for service in compose["services"].values():
        if "build" not in service:
            continue
        env = service.get("environment") or {}
        for key in ("INVSAGA_API_PORT", "INVSAGA_WORKER_HEALTH_PORT", "INVSAGA_METRICS_PORT"):
            if key in env:
                wanted.add(int(env[key]))
        command = service["command"]
        if "--port" in command:
            wanted.add(int(command[command.index("--port") + 1]))
    assert wanted == exposed
