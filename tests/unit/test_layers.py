"""The package's layers, checked from the code's own imports (ast), so the layout cannot drift.

Dependencies point one way: domain <- store <- activities <- workflows and workers, with the settings
at the bottom and the HTTP API and the CLI as thin entrypoints on top. The dev stack (``invsaga.dev``,
the payment sandbox included) sits above everything, and production code never imports it: only the
two commands that start it do, inside the command, so ``invsaga --help`` in production never loads it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("invsaga", "workflows", "activities", "workers")

#: layer -> the layers it may import (besides itself). A module's layer is its longest prefix here.
_BOTTOM = {"invsaga.domain"}
_ADAPTERS = _BOTTOM | {"invsaga.settings", "invsaga.temporal", "invsaga.payments", "invsaga.store"}
_RUNTIME = _ADAPTERS | {"invsaga.reconcile", "activities", "workflows"}
_ENTRYPOINTS = _RUNTIME | {"workers", "invsaga.client", "invsaga.api", "invsaga.events"}
MAY_IMPORT: dict[str, set[str]] = {
    "invsaga.domain": set(),
    "invsaga.settings": _BOTTOM,
    # invsaga.temporal.configured reads the settings; the client must not load it (see below).
    "invsaga.temporal": _BOTTOM | {"invsaga.settings"},
    "invsaga.client": _BOTTOM | {"invsaga.temporal"},
    "invsaga.payments": _BOTTOM | {"invsaga.settings"},
    "invsaga.store": _BOTTOM | {"invsaga.settings"},
    "invsaga.reconcile": _ADAPTERS,
    "invsaga.events": _ADAPTERS,
    "activities": _ADAPTERS | {"invsaga.reconcile"},
    "workflows": _BOTTOM | {"invsaga.temporal", "activities"},
    "workers": _RUNTIME | {"invsaga.events"},
    "invsaga.api": _ADAPTERS | {"invsaga.client", "invsaga.events"},
    "invsaga.cli": _ENTRYPOINTS,
    "invsaga.dev": _ENTRYPOINTS | {"invsaga.cli"},
    "invsaga": {"invsaga.cli"},  # ``python -m invsaga``
}

#: The commands that start the dev stack: they may import it, and only inside the command.
DEV_ENTRYPOINTS = {"invsaga.cli.dev", "invsaga.cli.payments"}

#: What the domain may use besides the standard library: it describes, it does no I/O.
DOMAIN_THIRD_PARTY = {"pydantic"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = ast.parse(path.read_text(), filename=str(path))
    return found


def _layer(module: str) -> str:
    candidates = [layer for layer in MAY_IMPORT if module == layer or module.startswith(layer + ".")]
    assert candidates, f"{module} is in no layer: add it to MAY_IMPORT"
    return max(candidates, key=len)


def _imports(tree: ast.Module) -> list[tuple[str, int, bool]]:
    """(module imported, line, at module level) for every absolute import, type-checking-only ones too."""
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # ``if TYPE_CHECKING:`` blocks count as module level
        if isinstance(node, ast.If):
            top_level |= {id(child) for child in node.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno, id(node) in top_level))
    return found


MODULES = _modules()


def test_every_import_points_down_a_layer_and_none_into_the_dev_stack() -> None:
    wrong = []
    for module, tree in MODULES.items():
        layer = _layer(module)
        for target, line, at_top in _imports(tree):
            if target.split(".")[0] not in PACKAGES:
                continue
            target_layer = _layer(target)
            if target_layer == layer:
                continue
            if target_layer == "invsaga.dev" and module in DEV_ENTRYPOINTS:
                if at_top:
                    wrong.append(f"{module}:{line} imports the dev stack at import time ({target})")
                continue
            if target_layer not in MAY_IMPORT[layer]:
                wrong.append(f"{module}:{line} ({layer}) imports {target} ({target_layer})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_domain_does_no_io() -> None:
    allowed = set(sys.stdlib_module_names) | DOMAIN_THIRD_PARTY | {"invsaga", "__future__"}
    wrong = [
        f"{module}:{line} imports {target}"
        for module, tree in MODULES.items()
        if _layer(module) == "invsaga.domain"
        for target, line, _ in _imports(tree)
        if target.split(".")[0] not in allowed
    ]
    assert not wrong, "\n".join(wrong)


def test_the_layer_table_is_not_stale() -> None:
    """A layer nobody is in would let the table claim rules the code no longer has."""
    used = {_layer(module) for module in MODULES}
    assert used == set(MAY_IMPORT)


def test_the_distribution_installs_exactly_four_top_level_packages() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = find_packages(where=str(ROOT), include=include)
    assert {name.split(".")[0] for name in packages} == set(PACKAGES)
    # Every package on disk is shipped: a folder without __init__.py would be left out silently.
    on_disk = {_module_name(p.parent) for p in ROOT.glob("*/**/*.py") if p.parent.name != "__pycache__"}
    assert {m for m in on_disk if m.split(".")[0] in PACKAGES} <= set(packages)


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        # A service that only starts checkouts: temporalio and pydantic, no store, no driver.
        (
            "invsaga.client",
            [
                "sqlalchemy",
                "asyncpg",
                "invsaga.store",
                "invsaga.settings",
                "invsaga.temporal.configured",
                "workflows",
            ],
        ),
        # The production CLI never loads the dev stack (nor the sandbox's web stack) to start.
        ("invsaga.cli", ["invsaga.dev"]),
    ],
)
def test_importing_loads_only_what_it_needs(module: str, absent: list[str]) -> None:
    probe = f"import sys, {module}; print(sorted(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    names = set(ast.literal_eval(loaded.strip()))
    unwanted = sorted({a for n in names for a in absent if n == a or n.startswith(a + ".")})
    assert not unwanted, f"importing {module} loaded {unwanted}"
