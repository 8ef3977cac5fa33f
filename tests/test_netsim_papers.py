"""The numbers in papers/*/README.md are what their scripts measure today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("paper", ["posp", "pocket"])
def test_paper_readme_regenerates(paper: str) -> None:
    script = ROOT / "papers" / paper / "reproduce.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
