"""Both BLS backends against the Ethereum consensus BLS vectors, and against each other.

The vectors live in ``tests/vectors/eth-bls`` (see its README for the sources
and quirks, and ``tests/vectors/SOURCES.md``). A ``null`` output means the operation must
fail, which our interface spells as raising BlsError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from py_arkworks_bls12381 import G1Point, G2Point, Scalar

from protocol.bls import (
    BACKEND_NAMES,
    CURVE_ORDER,
    DEFAULT_BACKEND,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    BlsBackend,
    BlsError,
    get_backend,
)
from protocol.bls.arkworks_backend import ArkworksBackend

VECTORS = Path(__file__).resolve().parent / "vectors" / "eth-bls"
CASE_FILES = sorted(
    path for path in VECTORS.rglob("*") if path.suffix in {".yaml", ".json"} and path.is_file()
)
MAIN_SET_CASES = 52
SUPPLEMENT_CASES = 10

BACKENDS = {name: get_backend(name) for name in BACKEND_NAMES}

G1_INFINITY = bytes([0xC0]) + bytes(47)
G2_INFINITY = bytes([0xC0]) + bytes(95)


def _hex(value: str) -> bytes:
    assert value.startswith("0x"), value
    return bytes.fromhex(value[2:])


def _run_case(backend: BlsBackend, handler: str, data: Any) -> bytes | bool:
    """Apply the operation a vector file names to its input."""
    if handler == "sign":
        return backend.sign(int(data["privkey"], 16), _hex(data["message"]))
    if handler == "verify":
        return backend.verify(_hex(data["pubkey"]), _hex(data["message"]), _hex(data["signature"]))
    if handler == "aggregate":
        return backend.aggregate([_hex(sig) for sig in data])
    if handler == "fast_aggregate_verify":
        return backend.fast_aggregate_verify(
            [_hex(pk) for pk in data["pubkeys"]], _hex(data["message"]), _hex(data["signature"])
        )
    if handler == "aggregate_verify":
        return backend.aggregate_verify(
            [_hex(pk) for pk in data["pubkeys"]],
            [_hex(msg) for msg in data["messages"]],
            _hex(data["signature"]),
        )
    raise AssertionError(f"unknown vector handler {handler!r}")


def test_vector_set_is_complete() -> None:
    supplement = [path for path in CASE_FILES if "supplement" in path.parts]
    assert len(CASE_FILES) == MAIN_SET_CASES + SUPPLEMENT_CASES
    assert len(supplement) == SUPPLEMENT_CASES


# Both backends run every vector in the default suite (py_ecc takes ~15 s of it): the
# reference and the fast backend must agree with the published cases on every run.
VECTOR_BACKENDS = ["arkworks", "py_ecc"]


@pytest.mark.parametrize("case_file", CASE_FILES, ids=lambda p: str(p.relative_to(VECTORS)))
@pytest.mark.parametrize("backend_name", VECTOR_BACKENDS)
def test_ethereum_vector(backend_name: str, case_file: Path) -> None:
    case = yaml.safe_load(case_file.read_text())
    handler = case_file.parent.name
    backend = BACKENDS[backend_name]
    expected = case["output"]
    if expected is None:
        with pytest.raises(BlsError):
            _run_case(backend, handler, case["input"])
        return
    result = _run_case(backend, handler, case["input"])
    if isinstance(expected, bool):
        assert result is expected
    else:
        assert result == _hex(expected)


# py_ecc needs ~0.1 s per signature, so few examples keep this file well under a minute.
@settings(max_examples=20, deadline=None)
@given(sk=st.integers(min_value=1, max_value=CURVE_ORDER - 1), msg=st.binary(max_size=64))
@example(sk=1, msg=b"")
@example(sk=CURVE_ORDER - 1, msg=b"\xff" * 64)
def test_backends_agree_byte_for_byte(sk: int, msg: bytes) -> None:
    fast, reference = BACKENDS["arkworks"], BACKENDS["py_ecc"]
    pk = fast.sk_to_pk(sk)
    sig = fast.sign(sk, msg)
    assert len(pk) == PUBLIC_KEY_BYTES and len(sig) == SIGNATURE_BYTES
    assert reference.sk_to_pk(sk) == pk
    assert reference.sign(sk, msg) == sig
    assert fast.verify(pk, msg, sig)
    assert not fast.verify(pk, msg + b"\x00", sig)


@settings(max_examples=50, deadline=None)
@given(
    sks=st.lists(st.integers(min_value=1, max_value=CURVE_ORDER - 1), min_size=1, max_size=4),
    msgs=st.lists(st.binary(max_size=16), min_size=4, max_size=4),
)
def test_fast_backend_aggregates_verify(sks: list[int], msgs: list[bytes]) -> None:
    """Aggregates of honest signatures verify; dropping a signer breaks them."""
    # Keys that cancel (sum 0 mod r) aggregate to the point at infinity: see below.
    assume(sum(sks) % CURVE_ORDER != 0)
    bls = ArkworksBackend()
    pks = [bls.sk_to_pk(sk) for sk in sks]
    same_msg = bls.aggregate([bls.sign(sk, msgs[0]) for sk in sks])
    assert bls.fast_aggregate_verify(pks, msgs[0], same_msg)
    own_msgs = msgs[: len(sks)]
    distinct = bls.aggregate([bls.sign(sk, m) for sk, m in zip(sks, own_msgs, strict=True)])
    assert bls.aggregate_verify(pks, own_msgs, distinct)
    assert not bls.aggregate_verify(pks, own_msgs[:-1], distinct)
    if len(sks) > 1 and len(set(pks)) == len(pks):
        assert not bls.fast_aggregate_verify(pks[1:], msgs[0], same_msg)


def test_cancelling_keys_do_not_verify() -> None:
    """sk and r − sk sign to an aggregate at infinity, which no message may verify against."""
    bls = ArkworksBackend()
    sks = [1, CURVE_ORDER - 1]
    pks = [bls.sk_to_pk(sk) for sk in sks]
    aggregate = bls.aggregate([bls.sign(sk, b"") for sk in sks])
    assert aggregate[0] == 0xC0 and not any(aggregate[1:])  # the compressed infinity point
    assert not bls.fast_aggregate_verify(pks, b"", aggregate)
    assert not bls.fast_aggregate_verify(pks, b"other", aggregate)


@pytest.mark.parametrize("backend_name", BACKEND_NAMES)
@pytest.mark.parametrize("sk", [0, -1, CURVE_ORDER, CURVE_ORDER + 1, 2**256])
def test_invalid_secret_keys_raise(backend_name: str, sk: int) -> None:
    backend = BACKENDS[backend_name]
    with pytest.raises(BlsError, match="secret key"):
        backend.sign(sk, b"msg")
    with pytest.raises(BlsError, match="secret key"):
        backend.sk_to_pk(sk)


def _non_subgroup_g2_point() -> bytes:
    """A point on the G2 curve outside the prime-order subgroup: x = u, the unit of Fp2 = Fp[u]."""
    x_bytes = (1).to_bytes(48, "big") + bytes(48)
    encoded = bytes([x_bytes[0] | 0x80]) + x_bytes[1:]
    point = G2Point.from_compressed_bytes_unchecked(encoded)
    assert not point.is_in_subgroup()
    return encoded


# Encodings that must be rejected. arkworks alone accepts the first two as infinity.
NON_CANONICAL_G1 = [
    bytes([0xE0]) + bytes(47),  # infinity with the sign flag set
    bytes([0xC0]) + bytes(46) + b"\x01",  # infinity flag with a nonzero x
    bytes(48),  # compression flag missing
    G1Point().to_compressed_bytes()[:47],  # one byte short
]


@pytest.mark.parametrize("backend_name", BACKEND_NAMES)
@pytest.mark.parametrize("bad_pk", NON_CANONICAL_G1, ids=["inf-sign", "inf-x", "no-flag", "short"])
def test_non_canonical_public_keys_are_rejected(backend_name: str, bad_pk: bytes) -> None:
    backend = BACKENDS[backend_name]
    msg = b"assay"
    sig = BACKENDS["arkworks"].sign(1, msg)
    assert not backend.verify(bad_pk, msg, sig)
    assert not backend.fast_aggregate_verify([bad_pk], msg, sig)
    assert not backend.aggregate_verify([bad_pk], [msg], sig)


@pytest.mark.parametrize("backend_name", BACKEND_NAMES)
def test_non_canonical_signature_encodings_do_not_aggregate(backend_name: str) -> None:
    backend = BACKENDS[backend_name]
    for bad in (bytes([0xE0]) + bytes(95), bytes([0xC0]) + bytes(94) + b"\x01", bytes(96)):
        with pytest.raises(BlsError, match="not a valid compressed G2 point"):
            backend.aggregate([bad])


@pytest.mark.parametrize("backend_name", BACKEND_NAMES)
def test_aggregate_decodes_without_subgroup_check(backend_name: str) -> None:
    """Both backends follow the draft: Aggregate only decodes, and Verify rejects the result."""
    backend = BACKENDS[backend_name]
    outsider = _non_subgroup_g2_point()
    sig = BACKENDS["arkworks"].sign(7, b"m")
    outsider_point = G2Point.from_compressed_bytes_unchecked(outsider)
    expected = outsider_point + G2Point.from_compressed_bytes(sig)
    total = backend.aggregate([outsider, sig])
    assert total == expected.to_compressed_bytes()
    assert not backend.verify(BACKENDS["arkworks"].sk_to_pk(7), b"m", total)


@pytest.mark.parametrize("backend_name", BACKEND_NAMES)
def test_keys_summing_to_identity_fail_fast_aggregate_verify(backend_name: str) -> None:
    """A rogue pair (pk, -pk) aggregates to the identity, which KeyValidate refuses."""
    backend = BACKENDS[backend_name]
    pk = G1Point() * Scalar(5)
    assert not backend.fast_aggregate_verify(
        [pk.to_compressed_bytes(), (-pk).to_compressed_bytes()], b"m", G2_INFINITY
    )


@pytest.mark.parametrize("backend_name", BACKEND_NAMES)
def test_mismatched_aggregate_verify_lengths_are_false(backend_name: str) -> None:
    backend = BACKENDS[backend_name]
    sig = BACKENDS["arkworks"].sign(3, b"a")
    assert not backend.aggregate_verify([BACKENDS["arkworks"].sk_to_pk(3)], [b"a", b"b"], sig)
    assert not backend.verify(G1_INFINITY, b"a", G2_INFINITY)


def test_default_backend_is_the_fast_one() -> None:
    assert DEFAULT_BACKEND == "arkworks"
    assert isinstance(get_backend(), ArkworksBackend)


def test_unknown_backend_is_named_in_the_error() -> None:
    with pytest.raises(BlsError, match="'blst'"):
        get_backend("blst")
