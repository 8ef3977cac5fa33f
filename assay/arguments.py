"""What every ``assay`` command shares: the refused-command error, argument types, a progress bar.

Kept apart from :mod:`assay.cli` so that command modules import it without
importing the parser that imports them.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from protocol.sampling import PPM

EXIT_USAGE = 2


class CommandError(Exception):
    """A refused command; the message is shown to the user as is."""


def rate_ppm(text: str) -> int:
    """Parse a probability such as ``0.05`` or ``5%`` into integer parts per million."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability like 0.05 or 5%") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability between 0 and 1")
    return round(value * PPM)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def progress_bar(disable: bool = False) -> Any:
    """A rich progress bar on stderr, off when asked or when stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    err = Console(stderr=True)
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=disable or not err.is_terminal,
    )


def open_registry(args: argparse.Namespace) -> Any:
    """The model registry named by ``--registry``, or the default one under ``$ASSAY_HOME``."""
    from prover.registry import ModelRegistry, default_registry_root

    return ModelRegistry(Path(args.registry) if args.registry else default_registry_root())
