"""Hypothesis strategies for protocol values and messages."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from protocol.codec import DTYPE_SIZES, Tensor
from protocol.keys import SigningKey
from protocol.messages import (
    Attestation,
    Commitment,
    Evidence,
    JobRequest,
    Offence,
    SignedMessage,
    Verdict,
)

KEYS = [SigningKey.derive(f"test-{i}") for i in range(4)]

digests = st.binary(min_size=32, max_size=32)
uint64 = st.integers(min_value=0, max_value=2**64 - 1)
text = st.text(max_size=40)


@st.composite
def tensors(draw: st.DrawFn) -> Tensor:
    dtype = draw(st.sampled_from(sorted(DTYPE_SIZES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    n = math.prod(shape) * DTYPE_SIZES[dtype]
    return Tensor(dtype, shape, draw(st.binary(min_size=n, max_size=n)))


def float_tensor(values: list[float]) -> Tensor:
    return Tensor.from_numpy(np.asarray(values, dtype=np.float32))


canonical_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | text
    | st.binary(max_size=40)
    | tensors(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)

params = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.integers(0, 2**64 - 1) | st.text(max_size=8) | st.binary(max_size=8),
    max_size=4,
)


@st.composite
def job_requests(draw: st.DrawFn) -> JobRequest:
    key = draw(st.sampled_from(KEYS))
    return JobRequest(
        model_id=draw(digests),
        input=draw(tensors()),
        client=key.public.raw,
        node=draw(st.sampled_from(KEYS)).public.raw,
        nonce=draw(uint64),
        fee=draw(uint64),
        expiry_round=draw(uint64),
        chain_id=draw(digests),
        params=tuple(draw(params).items()),
    ).signed(key)


@st.composite
def commitments(draw: st.DrawFn) -> Commitment:
    key = draw(st.sampled_from(KEYS))
    return Commitment(
        job_id=draw(digests),
        model_id=draw(digests),
        input_hash=draw(digests),
        output_hash=draw(digests),
        node=key.public.raw,
        chain_id=draw(digests),
        mode=draw(st.sampled_from(["exact", "llm", "tensor", "zk"])),
        aux=draw(st.binary(max_size=32)),
    ).signed(key)


@st.composite
def attestations(draw: st.DrawFn) -> Attestation:
    key = draw(st.sampled_from(KEYS))
    return Attestation(
        job_id=draw(digests),
        commitment_id=draw(digests),
        validator=key.public.raw,
        verdict=draw(st.sampled_from(list(Verdict))),
        beacon_round=draw(uint64),
        chain_id=draw(digests),
        observed_hash=draw(st.just(b"") | digests),
        reason=draw(text),
    ).signed(key)


@st.composite
def evidence(draw: st.DrawFn) -> Evidence:
    key = draw(st.sampled_from(KEYS))
    accused = draw(commitments())
    offence = draw(st.sampled_from([Offence.MISMATCH, Offence.EQUIVOCATION]))
    conflicting = b""
    if offence is Offence.EQUIVOCATION:
        node_key = next(k for k in KEYS if k.public.raw == accused.node)
        other = Commitment(
            job_id=accused.job_id,
            model_id=accused.model_id,
            input_hash=accused.input_hash,
            output_hash=bytes(b ^ 0xFF for b in accused.output_hash),
            node=accused.node,
            chain_id=accused.chain_id,
        ).signed(node_key)
        conflicting = other.encode()
    return Evidence(
        offence=offence,
        job_id=accused.job_id,
        accuser=key.public.raw,
        commitment=accused.encode(),
        chain_id=accused.chain_id,
        conflicting=conflicting,
        observed_hash=draw(st.just(b"") | digests),
        beacon_round=draw(uint64),
        detail=draw(text),
    ).signed(key)


any_message: st.SearchStrategy[SignedMessage] = st.one_of(
    job_requests(), commitments(), attestations(), evidence()
)
