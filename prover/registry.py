"""The node's local model registry: which model ids it serves, from where, in which mode.

One JSON file, ``registry.json``, in the registry root::

    {"version": 1, "models": {"<model id hex>": {"path", "mode", "kind", "name",
                                                 "added_at", "params"}}}

``add`` loads a directory before it is listed, so every entry names a model
that loaded when it was added. A ``.gguf`` file is converted first
(:mod:`prover.gguf`) into ``converted/`` under the registry root, and the
entry points at the conversion, with the file's path and SHA-256 in
``params["gguf"]``. ``params`` holds per-model settings that later
stages fill in (calibrated tolerances for the ``tensor`` and ``llm`` modes)
and is carried through every rewrite. The file is replaced atomically (temp
file, fsync, ``os.replace``), so a failed or interrupted call leaves it as it
was. One process writes a registry at a time.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prover import gguf, model_store, zoo

MODES = ("exact", "llm", "tensor", "zk")
CONVERTED_DIR = "converted"
REGISTRY_FILE = "registry.json"
REGISTRY_VERSION = 1


class ModelRegistryError(ValueError):
    """A registry request that was refused; the registry file is unchanged."""


class UnknownModel(ModelRegistryError):
    """The model id is not in the registry."""


def default_registry_root() -> Path:
    """``$ASSAY_HOME/models``, with ``ASSAY_HOME`` defaulting to ``~/.assay``."""
    home = os.environ.get("ASSAY_HOME") or "~/.assay"
    return Path(home).expanduser() / "models"


@dataclass(frozen=True)
class RegistryEntry:
    model_id: bytes
    path: Path
    mode: str
    kind: str
    name: str
    added_at: int  # Unix seconds
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "mode": self.mode,
            "kind": self.kind,
            "name": self.name,
            "added_at": self.added_at,
            "params": self.params,
        }

    @classmethod
    def from_json(cls, id_hex: str, value: Mapping[str, Any]) -> RegistryEntry:
        return cls(
            model_id=bytes.fromhex(id_hex),
            path=Path(value["path"]),
            mode=str(value["mode"]),
            kind=str(value["kind"]),
            name=str(value["name"]),
            added_at=int(value["added_at"]),
            params=dict(value.get("params", {})),
        )


class FloatModelNotExact(ModelRegistryError):
    """A float checkpoint offered to the exact mode: its bits differ between honest machines."""


def default_mode(kind: str, source: str = "") -> str:
    """``exact`` for an integer model, ``llm`` for a transformers causal LM checkpoint,
    ``tensor`` for any other float model."""
    if kind in zoo.INTEGER_KINDS:
        return "exact"
    if source == model_store.TRANSFORMERS_CONFIG_FILE and model_store.is_causal_lm_kind(kind):
        return "llm"
    return "tensor"


def _check_llm_loads(directory: Path, module: Any, params: Mapping[str, Any]) -> None:
    """An llm model must run as the mode runs it, with a tokenizer and a chat template that
    load (``params["chat_template"]``, when given, overrides the model's)."""
    from prover.llm.model import UnsupportedArchitecture, load_llm
    from prover.llm.tokenizer import TokenizerError

    template = params.get("chat_template")
    if template is not None and not isinstance(template, str):
        raise ModelRegistryError("params chat_template must be the template's text")
    try:
        load_llm(directory, module, chat_template=template)
    except (TokenizerError, UnsupportedArchitecture) as exc:
        raise ModelRegistryError(f"cannot register {directory} in mode 'llm': {exc}") from exc


def _check_mode_fits(mode: str, kind: str) -> None:
    if mode == "llm" and not model_store.is_causal_lm_kind(kind):
        raise ModelRegistryError(
            f"mode 'llm' generates text and needs a causal LM "
            f"({list(zoo.CAUSAL_LM_KINDS)} or a transformers checkpoint of one); "
            f"this model is a {kind}"
        )
    if mode == "exact" and kind not in zoo.INTEGER_KINDS:
        raise FloatModelNotExact(
            f"this {kind} model computes in float32, whose bits differ between honest machines "
            "(CPU vendor, ISA path, threads, batch, GPU), so the exact mode would slash honest "
            "nodes: quantise it for the exact mode (`assay models add DIR --mode exact "
            "--quantize`, which records the accuracy given up), or register it with "
            "--mode tensor"
        )
    if mode in ("tensor", "llm", "zk") and kind in zoo.INTEGER_KINDS:
        raise ModelRegistryError(
            f"a {kind} model is an integer model, judged bit for bit: register it with --mode exact"
        )


def _default_name(directory: Path, params: Mapping[str, Any]) -> str:
    """The directory's name, or a GGUF file's name without ``.gguf``."""
    source = params.get("gguf")
    if isinstance(source, dict) and "file" in source:
        return Path(str(source["file"])).stem
    return directory.name


def _id_hex(model_id: bytes | str) -> str:
    return model_id.hex() if isinstance(model_id, bytes) else model_id.lower()


class ModelRegistry:
    """The models this node serves, keyed by model id; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def path(self) -> Path:
        return self.root / REGISTRY_FILE

    def _read(self) -> dict[str, RegistryEntry]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != REGISTRY_VERSION:
                raise ValueError(f"version {data.get('version')!r} is not {REGISTRY_VERSION}")
            return {
                id_hex: RegistryEntry.from_json(id_hex, value)
                for id_hex, value in data["models"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelRegistryError(
                f"registry file {self.path} is unreadable ({exc}); fix or move it aside"
            ) from exc

    def _write(self, entries: Mapping[str, RegistryEntry]) -> None:
        data = {
            "version": REGISTRY_VERSION,
            "models": {id_hex: entries[id_hex].to_json() for id_hex in sorted(entries)},
        }
        text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{REGISTRY_FILE}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def add(
        self,
        directory: Path,
        mode: str | None = None,
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> RegistryEntry:
        """Load the model in ``directory``, compute its id and list it under ``mode``.

        With no ``mode``, an integer model is listed as ``exact`` and a float one as ``tensor``.
        """
        directory = Path(directory).resolve()
        if mode is not None and mode not in MODES:
            raise ModelRegistryError(f"unknown mode {mode!r}; expected one of {list(MODES)}")
        params = dict(params or {})
        converted: Path | None = None
        try:
            if gguf.is_gguf_file(directory):
                source = directory
                try:
                    existed = gguf.conversion_exists(source, self.root / CONVERTED_DIR)
                    directory = gguf.convert_gguf(source, self.root / CONVERTED_DIR)
                except model_store.ModelDirectoryError as exc:
                    raise ModelRegistryError(f"cannot register {source}: {exc}") from exc
                converted = None if existed else directory
                params["gguf"] = {"file": str(source),
                                  "sha256": model_store.file_sha256(source).hex()}
            return self._add(directory, mode, name, params)
        except BaseException:
            if converted is not None:
                shutil.rmtree(converted, ignore_errors=True)  # nothing registered, nothing left
            raise

    def _add(self, directory: Path, mode: str | None, name: str | None,
             params: dict[str, Any]) -> RegistryEntry:
        try:
            module, meta = model_store.load_model(directory)
            model_id = model_store.model_id(directory)
        except model_store.ModelDirectoryError as exc:
            raise ModelRegistryError(f"cannot register {directory}: {exc}") from exc
        if mode is None:
            mode = default_mode(meta.kind, meta.source)
        _check_mode_fits(mode, meta.kind)
        if mode == "llm":
            _check_llm_loads(directory, module, params)
        try:
            json.dumps(params, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ModelRegistryError(f"params must be finite JSON values: {exc}") from exc
        entries = self._read()
        existing = entries.get(model_id.hex())
        if existing is not None:
            raise ModelRegistryError(
                f"model {model_id.hex()} is already registered as {existing.name!r} "
                f"from {existing.path}; remove it first to change its entry"
            )
        entry = RegistryEntry(
            model_id=model_id,
            path=directory,
            mode=mode,
            kind=meta.kind,
            name=name if name is not None else _default_name(directory, params),
            added_at=int(time.time()),
            params=params,
        )
        self._write({**entries, model_id.hex(): entry})
        return entry

    def get(self, model_id: bytes | str) -> RegistryEntry:
        """The entry for ``model_id`` (bytes or hex); :class:`UnknownModel` if absent."""
        entry = self._read().get(_id_hex(model_id))
        if entry is None:
            raise UnknownModel(f"model {_id_hex(model_id)} is not in the registry at {self.path}")
        return entry

    def update_params(self, model_id: bytes | str, params: Mapping[str, Any]) -> RegistryEntry:
        """Merge ``params`` into a listed model's entry (later stages pin what they set up)."""
        entry = self.get(model_id)
        merged = {**entry.params, **params}
        try:
            json.dumps(merged, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ModelRegistryError(f"params must be finite JSON values: {exc}") from exc
        updated = dataclasses.replace(entry, params=merged)
        self._write({**self._read(), entry.model_id.hex(): updated})
        return updated

    def remove(self, model_id: bytes | str) -> RegistryEntry:
        """Drop ``model_id`` from the registry (the model directory is left alone)."""
        entry = self.get(model_id)
        entries = self._read()
        del entries[entry.model_id.hex()]
        self._write(entries)
        return entry

    def list(self) -> builtins.list[RegistryEntry]:
        """Every entry, ordered by name, then id."""
        return sorted(self._read().values(), key=lambda e: (e.name, e.model_id))
