"""Every third-party package the product's code imports is declared in pyproject.toml,
pinned exactly, and nothing declared goes unused: a transitive dependency that a release
of another package drops must not break an import, and a pin nobody uses is a supply
chain risk for nothing."""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("domain", "application", "adapters", "projections", "dashboard")
# Declared but loaded by name rather than imported: uvicorn takes loop="uvloop", http="httptools".
LOADED_BY_NAME = {"uvloop", "httptools"}


def declared() -> dict[str, str]:
    """Runtime dependencies: normalised distribution name -> requirement as written."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    found = {}
    for requirement in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
        found[_normal(name)] = requirement
    return found


def imported_distributions() -> dict[str, set[str]]:
    """Distribution -> the product modules importing it (stdlib and our own packages left out)."""
    by_module = importlib.metadata.packages_distributions()
    found: dict[str, set[str]] = {}
    for package in PRODUCT_PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for top in _top_level_imports(path):
                if top in sys.stdlib_module_names or top in PRODUCT_PACKAGES:
                    continue
                for distribution in by_module.get(top, [top]):
                    found.setdefault(_normal(distribution), set()).add(str(path.relative_to(REPO)))
    return found


def _top_level_imports(path: Path) -> set[str]:
    tops = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            tops.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.split(".")[0])
    return tops


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared() -> None:
    missing = {
        name: sorted(modules)[:3] for name, modules in imported_distributions().items() if name not in declared()
    }
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_every_declared_package_is_used() -> None:
    unused = set(declared()) - set(imported_distributions()) - LOADED_BY_NAME
    assert not unused, f"declared in pyproject.toml but never imported: {sorted(unused)}"


def test_every_declared_package_is_pinned_exactly() -> None:
    loose = [requirement for requirement in declared().values() if "==" not in requirement]
    assert not loose, f"not pinned with ==: {loose}"
