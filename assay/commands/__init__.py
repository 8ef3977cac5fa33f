"""Subcommands of ``assay`` beyond the built-in ones, one module per topic.

Each module here defines ``register(commands)``, which adds its subparsers to
the top-level ``assay`` parser and sets ``func`` on each. :mod:`assay.cli`
finds them with :func:`modules`, so adding a topic is adding a file. Like the
CLI itself these modules are part of the composition root: they may import
roles, but only inside their command functions.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def modules() -> list[ModuleType]:
    """Every command module in this package, in name order."""
    return [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name)
        if not info.name.startswith("_")
    ]
