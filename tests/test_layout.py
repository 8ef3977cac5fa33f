"""The import rules of docs/ARCHITECTURE.md, checked on the source: every arrow points down."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("protocol", "prover", "verifier", "slashing", "netsim", "assay")
RESEARCH = {"bench", "papers", "tests"}
ALLOWED = {
    "protocol": set(),
    "prover": {"protocol"},
    "verifier": {"protocol", "prover"},
    "slashing": {"protocol"},
    "netsim": {"protocol", "slashing", "verifier"},
    "assay": {"protocol", "prover", "verifier", "slashing", "netsim"},
}


def imported_modules(path: Path) -> set[str]:
    """Absolute module names this file imports (``from a import b`` counts ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def top_level(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def our_modules() -> dict[str, set[str]]:
    """Each module of the shipped packages, mapped to the modules of ours it imports."""
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        graph[name] = {m for m in imported_modules(path) if m in files}
    return graph


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_what_lies_below_them(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        ours = top_level(imported_modules(path)) & (set(PACKAGES) | RESEARCH)
        forbidden = ours - ALLOWED[package] - {package}
        assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}"


def test_nothing_imports_the_binary() -> None:
    for package in PACKAGES:
        if package == "assay":
            continue
        for path in (ROOT / package).rglob("*.py"):
            assert "assay" not in top_level(imported_modules(path)), path


def test_no_import_cycles() -> None:
    """Depth-first search for a cycle among our modules (imports inside functions included)."""
    graph = our_modules()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt == node or nxt == node.rsplit(".", 1)[0]:
                continue  # a module importing its own package's __init__ is not a cycle
            if state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt):], nxt] if nxt in trail else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])


OUTSIDE = re.compile(r"""parents\[\d+\]\.parent\b|["']\.\./|/\s*["']\.\.["']""")


def test_nothing_reads_outside_the_repository() -> None:
    """A user's clone has nothing beside it: no source climbs above the repository root."""
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "*.py", "*.sh", "Makefile", ".ci/*"],
        capture_output=True, text=True, check=False,
    ).stdout.split()
    sources = [ROOT / f for f in tracked] or list(ROOT.rglob("*.py"))
    for path in sources:
        if ".venv" in path.parts or not path.is_file():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            assert not OUTSIDE.search(line), f"{path.relative_to(ROOT)}:{n} reads outside: {line}"
