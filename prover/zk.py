"""The ``zk`` mode's prover side: EZKL circuits, keys and proofs (DESIGN decision 4).

EZKL (Halo2 with KZG commitments over BN254) turns an ONNX graph into a
circuit. We build it so that a proof says exactly one thing — *this* model
gave *this* output on *this* input:

- the weights are **fixed columns** (``param_visibility="fixed"``): they are
  baked into the verifying key, so a different model is a different key and a
  proof made with one model's key never verifies under another's;
- the input and the output are **Poseidon-hashed public instances**
  (``hashed/public``): the proof's two public values are Poseidon(input) and
  Poseidon(output) over the quantized field elements, so it cannot be replayed
  for another input or output.

A node proves every job; the commitment's ``aux`` carries a :class:`ZkProof`
(proof bytes, the two public values, and the quantized output) and its
``output_hash`` is the hash of that output dequantized to float32 — the very
numbers the proof is about.

Artifacts (ONNX export, settings, compiled circuit, proving and verifying keys)
are made once per model by :meth:`ZkArtifactStore.setup` and kept under the
model id, with a manifest of their SHA-256s; the registry entry pins the hashes
of the verifying key, the settings and the SRS (:data:`PARAM_VK`, ...).

**The SRS** (structured reference string, the KZG trusted setup) is never
downloaded. A devnet generates one locally with :func:`generate_devnet_srs`;
whoever generated it knows its secret and can forge proofs, so it is for
testing only and every use says so. A production network loads the file of a
public ceremony whose SHA-256 it pins in the registry and refuses any other
(:meth:`ZkArtifactStore.import_srs`).

**Settings** (:class:`CircuitChoice`). The zoo's MLPs and CNNs need no
lookup table (ReLU and rescaling are range checks by decomposition), so
what the prover pays for is rows × columns, and it roughly doubles with each
extra log-row. Measured on the issue's 50,890-parameter MLP (784→64→10,
hashed I/O, fixed weights, scale 7 unless said; CPU seconds of
``ezkl.prove`` on a shared 2-vCPU machine, about twice the wall time on a
quiet one; EZKL's defaults, which calibrate to scale 13 without rescaling,
took 15.8–18 CPU s there):

- **inner columns are calibrated, 2 or 4**: on that MLP 4 columns need no
  fewer rows (2^15) and make 6,048-byte proofs that take longer to prove
  (24–29 CPU s) and to verify; 1 column needs 2^16–2^17 rows (20–43 CPU s).
  With 2: 2^15 rows, 15–16.5 CPU s, 3,840 bytes. A convolution fills wider
  rows, and the 8×8 CNN fits 2^13 rows with 4 columns, 2^14 with 2, so setup
  keeps the fewest rows and, of equals, the fewer columns.
- **the range-check decomposition is calibrated**: EZKL's 2^14-row table with
  2 legs (:data:`DECOMPOSITIONS`) fits that MLP in 2^15 rows where 4 legs of a
  128-row table need 2^16 (twice the cells per rescale: 30 CPU s), but the
  2^14-row table alone would force 2^15 rows on the 2^11–2^12-row circuits of
  small models, so setup calibrates both and keeps the one with fewer rows.
- **the scale is calibrated too**: with no lookup table a finer scale costs
  no rows, so setup tries :data:`SCALES` and keeps 13 bits (2^-13
  resolution, rescaled after every multiply) at equal rows: on that MLP the
  same 2^15 rows and 16.3 CPU s, top-1 agreement with the float model 1.0
  over 16 inputs and largest error 0.0006, where scale 7 gave 0.94 and 0.04
  (scales 5 and 6 save nothing and lose more: 0.69 / 0.14, 0.63 / 0.09).
  Circuits with non-linearity lookups (softmax, GELU: the transformer block
  in bench/zk.py) need tables 64 times narrower at scale 7, which then needs
  fewer rows and is kept.
- **what hashing costs**: half of it. The same circuit with plain public
  input and output proves in 8.0 CPU s, 4.3 s wall (3,072-byte proofs),
  against 16.6 CPU s, 9.4 s hashed (bench/zk.py, quiet machine). EZKL's
  Poseidon chip (width 2, rate 1: one permutation per field element, over a
  tree of 32-element blocks; ezkl ``src/circuit/modules/poseidon.rs``) is
  laid out in its own columns beside the model, and hashing 784 inputs and
  10 outputs takes 32,558 rows by itself, so the MLP needs 2^15 rows whatever
  the model's layout does. Committing the input instead (``polycommit``) while hashing the
  output saves nothing (14.4 CPU s). The 784 public input values would bind
  the job as well as their hash does; hashed I/O is kept because the design
  fixes the public values as the two hashes (DESIGN decision 4).
- **so settings cannot beat EZKL's defaults on that MLP**: the defaults
  already reach the 2^15 rows the hashing forces, and every variant tried
  gives the same columns at 2^15 (byte-identical key sizes: 79,687-byte
  verifying key, 329 MB proving key): scale 7 or 13, rebasing after every
  multiply or after 10 (EZKL's default), no range checks on inputs and
  outputs, Freivalds' check off. Wider rows only add columns (4 inner
  columns: 6,048-byte proofs, 22 CPU s) and a 128-row decomposition table
  makes the model itself 34,789 rows (2^16). Measured quietly, ours proves in
  9.4 s (16.6 CPU s) against the defaults' 8.8 s (15.7 CPU s): the same
  circuit shape, with 6% more cells because we rescale after every multiply,
  which we keep so that activations stay at 13 bits: the defaults' output
  sits at scale 39, and their circuit cannot lay out a witness for an input
  of all 4s (the calibration inputs lie in [0, 1]) where ours proves inputs
  of all 256s.
- **verification grows with 2^k**: ``ezkl.verify`` reads the verifying key,
  which rebuilds the circuit's evaluation domain, and precomputing that
  domain's FFT twiddles was three quarters of a 2^15 verification in a
  ``perf`` profile (``FFTData::new`` and its field multiplications); the
  pairing and the MSM are small. So a 2^12 circuit verifies in 10 ms, a 2^15
  one in 35–45 ms on this machine, whatever the settings. We read the
  reduced SRS (``non_reduced_srs=False``); at 2^15 that made no measurable
  difference.
- ``check_mode`` stays UNSAFE, EZKL's choice after calibration: SAFE adds
  prover-side sanity checks (EZKL's ``CheckMode``: assertions on accumulated
  values while laying out the witness, and a verification of its own proof),
  not constraints, so the circuit, its keys and verification are the same.

The ezkl version is pinned (:data:`EZKL_VERSION`): its Python API changed
between 22.x and 23.x, and keys and proofs are only meaningful to the version
that made them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from protocol import codec
from protocol.codec import Tensor
from protocol.errors import MalformedMessage
from prover import zoo

EZKL_VERSION = "23.0.5"
ONNX_OPSET = 18
"""The newest opset EZKL's ONNX importer (tract) is tested against."""

BN254_SCALAR_FIELD = 0x30644E72E131A029B85045B68181585D2833E84879B9709143E1F593F0000001
"""The order of BN254's scalar field: EZKL's field elements live modulo this prime."""
FELT_BYTES = 32
HASHED_PUBLIC = "hashed/public"
FIXED = "fixed"
MAX_LOGROWS = 20
"""Largest circuit we set up: 2^20 rows, a proving key of several GiB."""

PARAM_VK = "zk_vk_sha256"
PARAM_SETTINGS = "zk_settings_sha256"
PARAM_SRS = "zk_srs_sha256"
PARAM_LOGROWS = "zk_logrows"
ZK_PARAMS = (PARAM_VK, PARAM_SETTINGS, PARAM_SRS, PARAM_LOGROWS)
"""Registry ``params`` keys that pin a zk model's keys and reference string."""

ONNX_FILE = "model.onnx"
SETTINGS_FILE = "settings.json"
CIRCUIT_FILE = "circuit.ezkl"
PK_FILE = "pk.key"
VK_FILE = "vk.key"
MANIFEST_FILE = "manifest.json"
ARTIFACT_FILES = (ONNX_FILE, SETTINGS_FILE, CIRCUIT_FILE, PK_FILE, VK_FILE)
SRS_DIR = "srs"

DEVNET_SRS_WARNING = (
    "DEVNET SRS, FOR TESTING ONLY: this reference string was generated on this machine, "
    "so whoever ran it can forge proofs. A production network loads a public ceremony's "
    "SRS whose SHA-256 is pinned in the registry."
)


class ZkError(ValueError):
    """A zk setup or proving request that was refused; the message says what to do."""


class SrsMismatch(ZkError):
    """An SRS file whose SHA-256 is not the one pinned for this network."""


class DevnetSrsWarning(UserWarning):
    """A locally generated SRS is in use: proofs are only as sound as this machine is honest."""


def require_ezkl() -> ModuleType:
    """Import ezkl and refuse any version but the pinned one."""
    try:
        import ezkl
    except ImportError as exc:
        raise ZkError(f"the zk mode needs ezkl=={EZKL_VERSION}; install it with pip") from exc
    version = getattr(ezkl, "__version__", None)
    if version != EZKL_VERSION:
        raise ZkError(
            f"ezkl {version} is installed; the zk mode is pinned to {EZKL_VERSION} "
            "(keys and proofs are only valid for the version that made them)"
        )
    return ezkl


def file_sha256(path: Path) -> bytes:
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


# -- field elements ------------------------------------------------------------------------------


def felt_hex(value: int) -> str:
    """EZKL's text form of a field element: 32 bytes little-endian, in hex."""
    return (value % BN254_SCALAR_FIELD).to_bytes(FELT_BYTES, "little").hex()


def quantize(values: torch.Tensor, scale: int) -> list[str]:
    """``values`` as EZKL quantizes circuit inputs: round(x · 2^scale), half away from zero."""
    ezkl = require_ezkl()
    flat = values.detach().to(torch.float64).flatten().tolist()
    return [ezkl.float_to_felt(v, scale) for v in flat]


def poseidon(felts: Sequence[str]) -> bytes:
    """EZKL's Poseidon hash of a list of field elements, as 32 little-endian bytes."""
    ezkl = require_ezkl()
    (digest,) = ezkl.poseidon_hash(list(felts))
    return bytes.fromhex(digest)


def dequantize(values: Tensor, scale: int) -> Tensor:
    """Quantized integers back to float32: the job output that a zk commitment hashes."""
    ints = values.to_torch().to(torch.float64)
    return Tensor.from_torch((ints / 2.0**scale).to(torch.float32))


# -- the proof as a commitment carries it ---------------------------------------------------------


@dataclass(frozen=True)
class ZkProof:
    """What a zk commitment's ``aux`` holds: the proof, its public values, the proven output.

    ``instances`` are Poseidon(input) and Poseidon(output), as 32-byte
    little-endian field elements; ``output`` is the circuit's output as int64
    integers at ``output_scale`` (value = integer / 2^scale).
    """

    proof: bytes
    instances: tuple[bytes, ...]
    output: Tensor
    output_scale: int

    def encode(self) -> bytes:
        return codec.encode(
            {
                "instances": list(self.instances),
                "output": self.output,
                "output_scale": self.output_scale,
                "proof": self.proof,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> ZkProof:
        """Parse a commitment's ``aux``; :class:`MalformedMessage` if it is not a zk proof."""
        value = codec.decode(data)
        if not isinstance(value, dict) or set(value) != {
            "instances", "output", "output_scale", "proof"
        }:
            raise MalformedMessage("zk aux must be a map of instances, output, output_scale, proof")
        proof, instances = value["proof"], value["instances"]
        output, scale = value["output"], value["output_scale"]
        if not isinstance(proof, bytes) or not proof:
            raise MalformedMessage("zk aux proof must be non-empty bytes")
        if not isinstance(instances, list) or not all(
            isinstance(i, bytes) and len(i) == FELT_BYTES for i in instances
        ):
            raise MalformedMessage(f"zk aux instances must be {FELT_BYTES}-byte field elements")
        if not isinstance(output, Tensor) or output.dtype != "int64":
            raise MalformedMessage("zk aux output must be an int64 tensor")
        if not isinstance(scale, int) or not 0 <= scale <= 62:
            raise MalformedMessage("zk aux output_scale must be an integer in [0, 62]")
        return cls(proof=proof, instances=tuple(instances), output=output, output_scale=scale)

    def output_tensor(self) -> Tensor:
        """The job output this proof is about, as float32."""
        return dequantize(self.output, self.output_scale)

    def proof_json(self, instances: Sequence[bytes]) -> dict[str, Any]:
        """The proof file ezkl.verify reads, with the public values the verifier chose."""
        return {
            "instances": [[i.hex() for i in instances]],
            "proof": list(self.proof),
            "protocol": None,
        }


# -- circuit settings ---------------------------------------------------------------------------


DECOMPOSITIONS: tuple[tuple[int, int], ...] = ((16384, 2), (128, 4))
"""Range-check decompositions (base, legs) that setup tries, each covering 2^28: EZKL's
default 2^14-row table with 2 legs, and a 128-row table with 4 legs."""
INNER_COLUMNS: tuple[int, ...] = (2, 4)
"""Inner columns (the width of a dot-product row) that setup tries."""
SCALES: tuple[int, ...] = (13, 7)
"""Fixed-point scales (bits) that setup tries: 13 is exact enough to agree with the float
model, 7 keeps the lookup tables of non-linearities (softmax, GELU) 64 times narrower."""


@dataclass(frozen=True)
class CircuitChoice:
    """The EZKL run arguments we choose; see the module docstring for why.

    Left as None, the scale, the inner columns and the range-check
    decomposition are chosen by :meth:`ZkArtifactStore.setup`, which
    calibrates every combination of :data:`SCALES`, :data:`INNER_COLUMNS` and
    :data:`DECOMPOSITIONS` and keeps the one with the fewest rows; of equals,
    fewer columns (smaller proofs, faster verification), fewer legs (fewer
    cells), then the finer scale.
    """

    scale: int | None = None
    num_inner_cols: int | None = None
    decomp_base: int | None = None
    decomp_legs: int | None = None
    max_logrows: int = 17

    def __post_init__(self) -> None:
        if self.scale is not None and not 1 <= self.scale <= 16:
            raise ZkError(f"scale must be between 1 and 16, got {self.scale}")
        if not 1 <= self.max_logrows <= MAX_LOGROWS:
            raise ZkError(f"max_logrows must be between 1 and {MAX_LOGROWS}")
        if (self.decomp_base is None) != (self.decomp_legs is None):
            raise ZkError("decomp_base and decomp_legs are set together, or both left to setup")
        if (self.num_inner_cols is not None and self.num_inner_cols < 1) or (
            self.decomp_base is not None
            and (self.decomp_base < 2 or self.decomp_legs is None or self.decomp_legs < 1)
        ):
            raise ZkError("num_inner_cols, decomp_base and decomp_legs must be positive")

    def inner_columns(self) -> tuple[int, ...]:
        """The inner-column counts setup calibrates: the chosen one, or every default."""
        return INNER_COLUMNS if self.num_inner_cols is None else (self.num_inner_cols,)

    def scales(self) -> tuple[int, ...]:
        """The scales setup calibrates: the chosen one, or every default."""
        return SCALES if self.scale is None else (self.scale,)

    def decompositions(self) -> tuple[tuple[int, int], ...]:
        """The (base, legs) candidates setup calibrates: the chosen one, or every default."""
        if self.decomp_base is None or self.decomp_legs is None:
            return DECOMPOSITIONS
        return ((self.decomp_base, self.decomp_legs),)

    def run_args(
        self,
        decomposition: tuple[int, int] | None = None,
        scale: int | None = None,
        columns: int | None = None,
    ) -> Any:
        ezkl = require_ezkl()
        base, legs = decomposition or self.decompositions()[-1]
        scale = scale or self.scales()[-1]
        columns = columns or self.inner_columns()[0]
        args = ezkl.PyRunArgs()
        args.input_visibility = HASHED_PUBLIC
        args.output_visibility = HASHED_PUBLIC
        args.param_visibility = FIXED
        args.input_scale = scale
        args.param_scale = scale
        args.scale_rebase_multiplier = 1
        args.num_inner_cols = columns
        args.decomp_base = base
        args.decomp_legs = legs
        args.logrows = self.max_logrows
        return args


def export_onnx(module: nn.Module, example_input: torch.Tensor, path: Path) -> None:
    """Export an image model for one job (batch 1) to ONNX with the legacy TorchScript exporter.

    The legacy exporter needs only the ``onnx`` package (the dynamo exporter
    also pulls in onnxscript) and writes plain Gemm/Conv/Relu graphs that EZKL
    reads.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module.eval(),
            (example_input,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["input"],
            output_names=["output"],
            do_constant_folding=True,
        )


def _input_json(inputs: Sequence[torch.Tensor]) -> dict[str, Any]:
    flat: list[float] = []
    for x in inputs:
        flat.extend(x.detach().to(torch.float64).flatten().tolist())
    return {"input_data": [flat]}


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value), encoding="utf-8")


def srs_logrows(path: Path) -> int:
    """The log2 size of an SRS file, read from its header (a little-endian u32)."""
    with Path(path).open("rb") as f:
        header = f.read(4)
    if len(header) != 4:
        raise ZkError(f"{path} is not an SRS file")
    return int.from_bytes(header, "little")


def generate_devnet_srs(path: Path, logrows: int) -> bytes:
    """Generate an SRS here (testing only: this machine knows its secret); returns its SHA-256."""
    warnings.warn(DEVNET_SRS_WARNING, DevnetSrsWarning, stacklevel=2)
    require_ezkl().gen_srs(str(path), logrows)
    return file_sha256(path)


# -- artifacts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZkArtifacts:
    """One model's circuit and keys on disk, with the hashes the registry pins."""

    directory: Path
    model_id: bytes
    logrows: int
    input_scale: int
    output_scale: int
    vk_sha256: bytes
    settings_sha256: bytes
    srs_sha256: bytes
    srs_path: Path
    choice: CircuitChoice
    setup_seconds: float

    def path(self, name: str) -> Path:
        return self.directory / name

    def registry_params(self) -> dict[str, str | int]:
        return {
            PARAM_VK: self.vk_sha256.hex(),
            PARAM_SETTINGS: self.settings_sha256.hex(),
            PARAM_SRS: self.srs_sha256.hex(),
            PARAM_LOGROWS: self.logrows,
        }

    def check_pins(self, params: Mapping[str, Any]) -> None:
        """Refuse artifacts whose keys, settings or SRS are not the ones the registry pins."""
        missing = [k for k in ZK_PARAMS if k not in params]
        if missing:
            raise ZkError(
                f"registry entry of model {self.model_id.hex()} pins no zk keys ({missing}); "
                "run `assay zk setup` for it"
            )
        ours = self.registry_params()
        for key in ZK_PARAMS:
            if params[key] != ours[key]:
                raise ZkError(
                    f"zk artifacts of model {self.model_id.hex()[:16]}… have {key} {ours[key]}, "
                    f"the registry pins {params[key]}; re-run `assay zk setup`"
                )


class ZkArtifactStore:
    """Artifacts per model id under ``root/<model id>/``, SRS files under ``root/srs/<sha256>``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def directory(self, model_id: bytes) -> Path:
        return self.root / model_id.hex()

    def srs_path(self, sha: bytes) -> Path:
        return self.root / SRS_DIR / f"{sha.hex()}.srs"

    # -- SRS --------------------------------------------------------------------------------
    def import_srs(self, path: Path, pinned_sha256: bytes) -> Path:
        """Copy a ceremony SRS into the store if, and only if, its SHA-256 is the pinned one."""
        actual = file_sha256(path)
        if actual != pinned_sha256:
            raise SrsMismatch(
                f"SRS file {path} has SHA-256 {actual.hex()}, the pinned SRS is "
                f"{pinned_sha256.hex()}; refusing it"
            )
        target = self.srs_path(actual)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        return target

    def devnet_srs(self, logrows: int) -> Path:
        """A locally generated SRS of at least ``logrows`` (reused if the store has one)."""
        warnings.warn(DEVNET_SRS_WARNING, DevnetSrsWarning, stacklevel=2)
        marker = self.root / SRS_DIR / f"devnet-{logrows}"
        if marker.exists():
            path = self.srs_path(bytes.fromhex(marker.read_text().strip()))
            if path.exists():
                return path
        (self.root / SRS_DIR).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root / SRS_DIR) as tmp:
            fresh = Path(tmp) / "devnet.srs"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DevnetSrsWarning)
                sha = generate_devnet_srs(fresh, logrows)
            os.replace(fresh, self.srs_path(sha))
        marker.write_text(sha.hex())
        return self.srs_path(sha)

    def pinned_srs(self, pinned_sha256: bytes) -> Path:
        """The stored SRS with this hash, checked again before use."""
        path = self.srs_path(pinned_sha256)
        if not path.exists():
            raise ZkError(
                f"no SRS with SHA-256 {pinned_sha256.hex()} in {self.root / SRS_DIR}; "
                "import the network's SRS with `assay zk setup --srs FILE`"
            )
        if file_sha256(path) != pinned_sha256:
            raise SrsMismatch(f"stored SRS {path} no longer matches its pinned SHA-256")
        return path

    # -- artifacts ----------------------------------------------------------------------------
    def load(self, model_id: bytes) -> ZkArtifacts:
        """The stored artifacts of ``model_id``, each file checked against the manifest."""
        directory = self.directory(model_id)
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise ZkError(
                f"no zk artifacts for model {model_id.hex()} in {self.root}; "
                "run `assay zk setup` for it"
            )
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("ezkl") != EZKL_VERSION:
            raise ZkError(
                f"zk artifacts of model {model_id.hex()[:16]}… were made by ezkl "
                f"{manifest.get('ezkl')}, not {EZKL_VERSION}; re-run `assay zk setup`"
            )
        for name in ARTIFACT_FILES:
            if file_sha256(directory / name).hex() != manifest["files"][name]:
                raise ZkError(f"{directory / name} does not match its manifest hash")
        return ZkArtifacts(
            directory=directory,
            model_id=model_id,
            logrows=int(manifest["logrows"]),
            input_scale=int(manifest["input_scale"]),
            output_scale=int(manifest["output_scale"]),
            vk_sha256=bytes.fromhex(manifest["files"][VK_FILE]),
            settings_sha256=bytes.fromhex(manifest["files"][SETTINGS_FILE]),
            srs_sha256=bytes.fromhex(manifest["srs_sha256"]),
            srs_path=self.srs_path(bytes.fromhex(manifest["srs_sha256"])),
            choice=CircuitChoice(**manifest["choice"]),
            setup_seconds=float(manifest["setup_seconds"]),
        )

    def setup(
        self,
        model_id: bytes,
        module: nn.Module,
        calibration_inputs: Sequence[torch.Tensor],
        srs: Path | None = None,
        choice: CircuitChoice | None = None,
    ) -> ZkArtifacts:
        """Export, calibrate, compile and run key generation once; later calls reuse the result.

        ``srs`` is a stored SRS (from :meth:`import_srs` or :meth:`devnet_srs`);
        ``None`` generates a devnet one of the size the circuit needs.
        Stored artifacts are reused when they were made with the same choice
        and the same SRS.
        """
        ezkl = require_ezkl()
        choice = choice or CircuitChoice()
        if not calibration_inputs:
            raise ZkError("calibration needs at least one example input")
        try:
            existing = self.load(model_id)
        except (ZkError, OSError, KeyError, ValueError, TypeError):
            existing = None
        if (
            existing is not None
            and existing.choice == choice
            and (srs is None or file_sha256(srs) == existing.srs_sha256)
            and existing.srs_path.exists()
        ):
            return existing
        started = time.perf_counter()
        self.root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{model_id.hex()[:16]}-"))
        try:
            onnx, settings = work / ONNX_FILE, work / SETTINGS_FILE
            export_onnx(module, calibration_inputs[0], onnx)
            calibration = work / "calibration.json"
            _write_json(calibration, _input_json(calibration_inputs))
            best: tuple[int, int, int, int, str] | None = None  # rows, cols, legs, -scale
            failures = []
            for scale, columns, decomposition in itertools.product(
                choice.scales(), choice.inner_columns(), choice.decompositions()
            ):
                name = f"scale {scale}, {columns} columns, {decomposition}"
                ezkl.gen_settings(
                    str(onnx), str(settings),
                    py_run_args=choice.run_args(decomposition, scale, columns),
                )
                try:
                    ezkl.calibrate_settings(
                        str(calibration),
                        str(onnx),
                        str(settings),
                        "resources",
                        scales=[scale],
                        scale_rebase_multiplier=[1],
                        max_logrows=choice.max_logrows,
                    )
                except RuntimeError as exc:  # does not fit in max_logrows this way
                    failures.append(f"{name}: {exc}")
                    continue
                text = settings.read_text(encoding="utf-8")
                rows = int(json.loads(text)["run_args"]["logrows"])
                if rows > choice.max_logrows:
                    failures.append(f"{name}: 2^{rows} rows")
                    continue
                candidate = (rows, columns, decomposition[1], -scale, text)
                if best is None or candidate[:4] < best[:4]:
                    best = candidate
            if best is None:
                raise ZkError(
                    f"no circuit of at most 2^{choice.max_logrows} rows: {'; '.join(failures)}"
                )
            settings.write_text(best[4], encoding="utf-8")
            calibration.unlink()
            meta = json.loads(settings.read_text(encoding="utf-8"))
            logrows = int(meta["run_args"]["logrows"])
            ezkl.compile_circuit(str(onnx), str(work / CIRCUIT_FILE), str(settings))
            srs_path = srs if srs is not None else self.devnet_srs(logrows)
            if srs_logrows(srs_path) < logrows:
                raise ZkError(
                    f"the SRS has 2^{srs_logrows(srs_path)} points; this circuit needs 2^{logrows}"
                )
            ezkl.setup(
                str(work / CIRCUIT_FILE), str(work / VK_FILE), str(work / PK_FILE), str(srs_path)
            )
            seconds = time.perf_counter() - started
            manifest = {
                "ezkl": EZKL_VERSION,
                "model_id": model_id.hex(),
                "logrows": logrows,
                "input_scale": int(meta["model_input_scales"][0]),
                "output_scale": int(meta["model_output_scales"][0]),
                "srs_sha256": file_sha256(srs_path).hex(),
                "choice": asdict(choice),
                "setup_seconds": round(seconds, 3),
                "files": {name: file_sha256(work / name).hex() for name in ARTIFACT_FILES},
            }
            _write_json(work / MANIFEST_FILE, manifest)
            target = self.directory(model_id)
            if target.exists():
                shutil.rmtree(target)
            os.replace(work, target)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return self.load(model_id)


# -- small models ------------------------------------------------------------------------------

SMALL_MLP_CONFIG: Mapping[str, int] = {
    "image_size": 8, "in_channels": 1, "n_hidden1": 16, "n_hidden2": 16, "n_classes": 10,
}
"""The zoo's MLP architecture on 8×8 images: a circuit of 2^12 rows that proves in seconds."""


def small_mlp(seed: int, config: Mapping[str, int] = SMALL_MLP_CONFIG) -> nn.Module:
    """A seeded zoo ``mlp`` of a size EZKL proves quickly (the zoo's own is 2^16 rows)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return zoo.architecture("mlp", dict(config))


# -- proving ------------------------------------------------------------------------------------


class ZkProver:
    """Proves jobs for one model with its stored proving key."""

    def __init__(self, artifacts: ZkArtifacts) -> None:
        self.artifacts = artifacts
        self._ezkl = require_ezkl()

    def prove(self, job_input: torch.Tensor) -> ZkProof:
        """Run the circuit on one job input and prove it; the proof carries the output."""
        a = self.artifacts
        with tempfile.TemporaryDirectory(prefix="assay-zk-") as tmp:
            data, witness, proof = (Path(tmp) / n for n in ("input.json", "wit.json", "proof.json"))
            _write_json(data, _input_json([job_input]))
            try:
                wit = self._ezkl.gen_witness(
                    str(data), str(a.path(CIRCUIT_FILE)), str(witness)
                )
                self._ezkl.prove(
                    str(witness), str(a.path(CIRCUIT_FILE)), str(a.path(PK_FILE)), str(proof),
                    str(a.srs_path),
                )
            except RuntimeError as exc:
                raise ZkError(f"proving failed for model {a.model_id.hex()[:16]}…: {exc}") from exc
            written = json.loads(proof.read_text(encoding="utf-8"))
        outputs = [int(self._ezkl.felt_to_int(f)) for f in wit["outputs"][0]]
        return ZkProof(
            proof=bytes(written["proof"]),
            instances=tuple(bytes.fromhex(i) for i in written["instances"][0]),
            output=Tensor.from_torch(torch.tensor([outputs], dtype=torch.int64)),
            output_scale=a.output_scale,
        )
