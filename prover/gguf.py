"""GGUF files, as llama.cpp and Ollama users hold their models: converted once, on the CPU.

A ``.gguf`` file holds a model's weights (quantised or not), its config and
its tokenizer, chat template included. transformers reads it with the
``gguf`` package and dequantises every tensor to float32; Assay then writes
the result as an ordinary model directory (``config.json``,
``model.safetensors``, the tokenizer files) with a marker,
``assay-gguf.json``, that records the file's SHA-256 and the converted
weights' SHA-256. The model's id is the file's (:func:`prover.model_store.gguf_model_id`),
so every operator who converts the same file serves the same model id;
dequantisation is elementwise arithmetic on the file's integers and scales,
so the converted weights are the same bytes on every machine.

transformers' ``save_pretrained`` refuses a model loaded from GGUF (it would
write the quantisation config back), so the weights are written with
safetensors directly and the config without its ``quantization_config``.

A file that is not a readable GGUF (truncated, corrupt), whose architecture
transformers cannot load from GGUF, or that is not a causal LM is refused
with :class:`~prover.model_store.ModelDirectoryError` naming the file;
nothing is left behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_model

from prover.model_store import (
    GGUF_MARKER_FILE,
    WEIGHTS_FILE,
    ModelDirectoryError,
    file_sha256,
    is_causal_lm_kind,
    weights_sha256,
)

GGUF_SUFFIX = ".gguf"
GGUF_MAGIC = b"GGUF"
MARKER_FORMAT = 1


def is_gguf_file(path: Path) -> bool:
    """A regular file named ``*.gguf`` or starting with the GGUF magic bytes."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix.lower() == GGUF_SUFFIX:
        return True
    with path.open("rb") as f:
        return f.read(len(GGUF_MAGIC)) == GGUF_MAGIC


def gguf_architecture(path: Path) -> str:
    """The ``general.architecture`` a GGUF file declares, read from its header alone."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        architecture = bytes(field.parts[field.data[0]]).decode("utf-8")
    except KeyError as exc:
        raise ModelDirectoryError(f"{path} declares no general.architecture") from exc
    except Exception as exc:  # truncated or corrupt files fail anywhere in the reader
        raise ModelDirectoryError(f"{path} is not a readable GGUF file: {exc}") from exc
    return architecture


def _check_supported(path: Path, architecture: str) -> None:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        raise ModelDirectoryError(
            f"{path}: GGUF architecture {architecture!r} is not supported; transformers loads "
            f"{sorted(GGUF_SUPPORTED_ARCHITECTURES)}"
        )


def convert_gguf(path: Path, converted_root: Path) -> Path:
    """The model directory converted from the GGUF file ``path``, under ``converted_root``.

    A conversion already there (same file hash, weights as recorded) is reused.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path).resolve()
    if not path.is_file():
        raise ModelDirectoryError(f"GGUF file {path} does not exist")
    architecture = gguf_architecture(path)
    _check_supported(path, architecture)
    digest = file_sha256(path)
    target = Path(converted_root) / digest.hex()[:32]
    if _is_conversion_of(target, digest):
        return target
    converted_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=converted_root, prefix=".converting-"))
    try:
        try:
            module = AutoModelForCausalLM.from_pretrained(
                path.parent, gguf_file=path.name, local_files_only=True, trust_remote_code=False,
                dtype=torch.float32,
            )
            tokenizer = AutoTokenizer.from_pretrained(
                path.parent, gguf_file=path.name, local_files_only=True, trust_remote_code=False,
            )
        except Exception as exc:  # the file's tensors or tokenizer do not load
            raise ModelDirectoryError(f"{path} does not load as a GGUF model: {exc}") from exc
        config = module.config.to_dict()
        config.pop("quantization_config", None)
        kind = str(config.get("model_type"))
        if not is_causal_lm_kind(kind):
            raise ModelDirectoryError(
                f"{path}: architecture {architecture!r} ({kind}) is not a causal LM"
            )
        type(module.config).from_dict(config).to_json_file(work / "config.json")
        save_model(module.to(torch.float32), str(work / WEIGHTS_FILE))
        tokenizer.save_pretrained(str(work))
        marker = {"format": MARKER_FORMAT, "source": str(path), "gguf_sha256": digest.hex(),
                  "weights_sha256": weights_sha256(work).hex()}
        (work / GGUF_MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def conversion_exists(path: Path, converted_root: Path) -> bool:
    """Whether ``converted_root`` already holds a sound conversion of the GGUF file ``path``."""
    digest = file_sha256(Path(path))
    return _is_conversion_of(Path(converted_root) / digest.hex()[:32], digest)


def _is_conversion_of(directory: Path, digest: bytes) -> bool:
    marker = directory / GGUF_MARKER_FILE
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        return (bytes.fromhex(recorded["gguf_sha256"]) == digest
                and bytes.fromhex(recorded["weights_sha256"]) == weights_sha256(directory))
    except (OSError, ValueError, KeyError, TypeError, ModelDirectoryError):
        return False
