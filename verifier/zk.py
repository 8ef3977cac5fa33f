"""The ``zk`` mode's verifier side: every proof checked, each failure self-contained evidence.

A zk job is not sampled: a proof costs milliseconds to check, so the
validator checks every one. It checks the proof against the verifying key the
registry pins for the commitment's model, with public values it computes
itself from the job — Poseidon of the request's quantized input, Poseidon of
the committed output — so a proof made with another model's key, for another
input or for another output does not verify. The verdict is FRAUD for any
proof that fails (the node signed it, and anyone holding the job request, the
commitment, the verifying key and the SRS can re-check it; no committee is
needed), INCONCLUSIVE when this validator holds no key for the model.

Checks, in order, each with its own reason: the commitment matches the
request; ``aux`` decodes as a proof; the committed output hash is the hash of
the proof's output; the proof's public values are Poseidon of the job's input
and of that output; the proof verifies under the registered key.

The ledger judges such evidence with the same check: :class:`LedgerProofChecker`
is the function its INVALID_PROOF rule calls (installed by the composition
root with ``slashing.rules.install_proof_checker``), given the verifying key
and settings the log holds and the SRS by its pinned hash.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.errors import MalformedMessage
from protocol.hashing import sha256
from protocol.messages import Commitment, JobRequest, Verdict
from prover.node import tensor_hash
from prover.zk import (
    SETTINGS_FILE,
    VK_FILE,
    ZkArtifacts,
    ZkArtifactStore,
    ZkError,
    ZkProof,
    felt_hex,
    poseidon,
    quantize,
    require_ezkl,
)
from verifier.reexecute import Check

ZK_MODE = "zk"


@dataclass(frozen=True)
class ZkKey:
    """What verifying one model's proofs needs: its pinned verifying key, settings and SRS."""

    model_id: bytes
    vk_path: Path
    settings_path: Path
    srs_path: Path
    input_scale: int
    vk_sha256: bytes

    @classmethod
    def from_artifacts(cls, artifacts: ZkArtifacts, params: Mapping[str, Any]) -> ZkKey:
        """The key of a registered model; refuses artifacts the registry does not pin."""
        artifacts.check_pins(params)
        return cls(
            model_id=artifacts.model_id,
            vk_path=artifacts.path(VK_FILE),
            settings_path=artifacts.path(SETTINGS_FILE),
            srs_path=artifacts.srs_path,
            input_scale=artifacts.input_scale,
            vk_sha256=artifacts.vk_sha256,
        )


def _fraud(reason: str, started: float) -> Check:
    return Check(Verdict.FRAUD, reason, b"", time.perf_counter() - started)


def verify_proof(key: ZkKey, proof: ZkProof, instances: tuple[bytes, ...]) -> bool:
    """ezkl's KZG verification of ``proof`` with the given public values under ``key``."""
    ezkl = require_ezkl()
    with tempfile.TemporaryDirectory(prefix="assay-zkv-") as tmp:
        path = Path(tmp) / "proof.json"
        path.write_text(json.dumps(proof.proof_json(instances)), encoding="utf-8")
        try:
            # ezkl's fifth argument is ``non_reduced_srs``: False reads only the SRS
            # points a KZG verifier needs instead of the whole file (2^k points)
            return bool(
                ezkl.verify(
                    str(path), str(key.settings_path), str(key.vk_path), str(key.srs_path),
                    False,
                )
            )
        except RuntimeError:
            return False


def check_zk(request: JobRequest, commitment: Commitment, key: ZkKey | None) -> Check:
    """Judge a zk commitment by its proof; see the module docstring for the checks."""
    started = time.perf_counter()
    if commitment.job_id != request.job_id:
        return Check(Verdict.INCONCLUSIVE, "commitment is for another job", b"", 0.0)
    if commitment.model_id != request.model_id:
        return _fraud("commitment names a model the client did not ask for", started)
    if commitment.input_hash != tensor_hash(request.input):
        return _fraud("commitment's input hash is not the request's input", started)
    if commitment.mode != ZK_MODE:
        return _fraud(f"commitment is in mode {commitment.mode!r}, the model's mode is zk", started)
    if key is None:
        return Check(
            Verdict.INCONCLUSIVE, "validator holds no verifying key for this model", b"", 0.0
        )
    try:
        proof = ZkProof.decode(commitment.aux)
        output = proof.output_tensor()
    except MalformedMessage as exc:
        return _fraud(f"commitment carries no well-formed proof: {exc}", started)
    if tensor_hash(output) != commitment.output_hash:
        return _fraud("committed output hash is not the hash of the proof's output", started)
    expected = (
        poseidon(quantize(request.input.to_torch(), key.input_scale)),
        poseidon([felt_hex(v) for v in proof.output.to_torch().flatten().tolist()]),
    )
    if len(proof.instances) != len(expected):
        return _fraud(
            f"proof has {len(proof.instances)} public values; a zk job has 2 "
            "(Poseidon of input and of output)",
            started,
        )
    if proof.instances[0] != expected[0]:
        return _fraud("proof is for another input: its input hash is not Poseidon(job input)",
                      started)
    if proof.instances[1] != expected[1]:
        return _fraud("proof is for another output: its output hash is not Poseidon(output)",
                      started)
    if not verify_proof(key, proof, expected):
        return _fraud(
            f"proof does not verify under the registered verifying key "
            f"{key.vk_sha256.hex()[:16]}… (tampered, or made for another model)",
            started,
        )
    return Check(
        Verdict.VALID,
        "proof verifies under the registered key for the job's input and output",
        commitment.output_hash,
        time.perf_counter() - started,
    )


class LedgerProofChecker:
    """The ledger's re-check of INVALID_PROOF evidence (``slashing.rules.ProofChecker``).

    Given what the log holds — the model's verifying key and settings, the SRS
    hash, the job's request and the node's commitment — it runs
    :func:`check_zk` and returns None when the proof holds, or the reason it
    fails. The SRS comes from ``store`` by its pinned SHA-256; the key and
    settings are written once under ``store.root / "ledger-keys"`` by their
    own SHA-256. It raises :class:`ZkError` when it cannot decide (no SRS with
    that hash here), which the rule turns into a refusal, never a verdict.
    """

    def __init__(self, store: ZkArtifactStore) -> None:
        self.store = store
        self.keys_dir = store.root / "ledger-keys"

    def _blob(self, data: bytes, suffix: str) -> Path:
        path = self.keys_dir / f"{sha256(data).hex()}{suffix}"
        if not path.exists():
            self.keys_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.keys_dir)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return path

    def __call__(
        self,
        verifying_key: bytes,
        settings: bytes,
        srs_sha256: bytes,
        request: JobRequest,
        commitment: Commitment,
    ) -> str | None:
        try:
            meta = json.loads(settings)
            input_scale = int(meta["model_input_scales"][0])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ZkError(f"the registered settings are not EZKL settings: {exc}") from exc
        key = ZkKey(
            model_id=request.model_id,
            vk_path=self._blob(verifying_key, ".vk"),
            settings_path=self._blob(settings, ".json"),
            srs_path=self.store.pinned_srs(srs_sha256),
            input_scale=input_scale,
            vk_sha256=sha256(verifying_key),
        )
        check = check_zk(request, commitment, key)
        if check.verdict is Verdict.VALID:
            return None
        if check.verdict is Verdict.FRAUD:
            return check.reason
        raise ZkError(f"the proof could not be judged: {check.reason}")
