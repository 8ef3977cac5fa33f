"""The import rules of docs/ARCHITECTURE.md, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROLES = {"prover", "verifier", "slashing"}
RESEARCH = {"netsim", "bench", "papers", "tests"}
COMPOSITION_ROOT = {"assay/cli.py", "assay/demo.py"}
COMPOSITION_DIRS = ("assay/commands/",)
ALLOWED = {
    "assay": set(),
    "prover": {"assay"},
    "verifier": {"assay", "prover"},
    "slashing": {"assay"},
    "netsim": {"assay", "slashing", "verifier"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_what_the_layout_allows(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in COMPOSITION_ROOT or rel.startswith(COMPOSITION_DIRS):
            continue
        ours = imported_packages(path) & (ROLES | RESEARCH | {"assay"})
        forbidden = ours - ALLOWED[package] - {package}
        assert not forbidden, f"{rel} imports {sorted(forbidden)}"


def test_nothing_imports_research_code() -> None:
    """Only the CLI's command modules may load netsim (``assay sim``), and only netsim itself."""
    for package in ALLOWED:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            wiring = rel in COMPOSITION_ROOT or rel.startswith(COMPOSITION_DIRS)
            allowed = {package} | ({"netsim"} if wiring else set())
            assert not (imported_packages(path) & RESEARCH) - allowed, path
