"""Signer protection: a node never signs two different commitments for one job."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from protocol.errors import MalformedMessage
from protocol.hashing import sha256
from protocol.keys import SigningKey
from protocol.messages import Commitment
from prover.node import InferenceNode
from prover.signer_protection import SignerProtection, SigningRefused

KEY = SigningKey.derive("protection/node")


def commitment(job: bytes, output: bytes) -> Commitment:
    return Commitment(job_id=sha256(job), model_id=sha256(b"model"), input_hash=sha256(b"in"),
                      output_hash=sha256(output), node=KEY.public.raw, chain_id=sha256(b"chain"))


def test_the_same_commitment_may_be_signed_again_a_different_one_never(tmp_path: Path) -> None:
    node = InferenceNode(KEY, {}, protection=SignerProtection.open(tmp_path / "p.sqlite"))
    first = node.sign(commitment(b"job", b"one"))
    assert node.sign(commitment(b"job", b"one")) == first  # Ed25519 is deterministic
    with pytest.raises(SigningRefused, match="would be equivocation"):
        node.sign(commitment(b"job", b"two"))
    node.sign(commitment(b"other job", b"two"))


def test_protection_survives_a_restart(tmp_path: Path) -> None:
    with SignerProtection.open(tmp_path / "p.sqlite") as protection:
        protection.approve(commitment(b"job", b"one"))
    with SignerProtection.open(tmp_path / "p.sqlite") as protection:
        with pytest.raises(SigningRefused):
            protection.approve(commitment(b"job", b"two"))
        root = protection.signed_root(KEY.public.raw, sha256(b"job"))
        assert root == commitment(b"job", b"one").content_id


def test_worker_threads_sign_through_one_database(tmp_path: Path) -> None:
    """The node service signs in worker threads; each thread is held to the same record."""
    protection = SignerProtection.open(tmp_path / "p.sqlite")
    node = InferenceNode(KEY, {}, protection=protection)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(
            lambda i: node.sign(commitment(b"job %d" % (i % 8), b"one")), range(32)))
    assert len({r.content_id for r in results}) == 8
    with ThreadPoolExecutor(max_workers=1) as pool:
        refused = pool.submit(node.sign, commitment(b"job 3", b"two")).exception()
    assert isinstance(refused, SigningRefused)


def test_export_import_moves_protection_and_blocks_conflicts(tmp_path: Path) -> None:
    with SignerProtection.open(tmp_path / "old.sqlite") as old:
        old.approve(commitment(b"a", b"1"))
        old.approve(commitment(b"b", b"1"))
        document = old.export()
    assert document["metadata"]["interchange_format"] == "assay-signer-protection"
    with SignerProtection.open(tmp_path / "new.sqlite") as new:
        new.approve(commitment(b"b", b"2"))  # the new machine already signed another for b
        assert new.import_(document) == (1, 1)
        with pytest.raises(SigningRefused):
            new.approve(commitment(b"a", b"2"))
        with pytest.raises(SigningRefused, match="is blocked"):
            new.approve(commitment(b"b", b"2"))
        assert new.import_(document) == (0, 0)  # importing again changes nothing


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: {**d, "metadata": {}}, "not an assay-signer-protection"),
        (lambda d: {**d, "metadata": {**d["metadata"], "interchange_format_version": "9"}},
         "interchange version '9'"),
        (lambda d: {**d, "data": [{"pubkey": "zz", "signed_commitments": []}]},
         r"data\[0\].pubkey must be 32 bytes"),
        (lambda d: {**d, "data": [{**d["data"][0], "signed_commitments": [{"job_id": "00"}]}]},
         r"job_id must be 32 bytes"),
    ],
)
def test_a_malformed_document_changes_nothing(tmp_path: Path, change: object, match: str) -> None:
    with SignerProtection.open(tmp_path / "p.sqlite") as protection:
        protection.approve(commitment(b"a", b"1"))
        document = protection.export()
        assert callable(change)
        with pytest.raises(MalformedMessage, match=match):
            protection.import_(change(document))
        assert protection.export() == document
