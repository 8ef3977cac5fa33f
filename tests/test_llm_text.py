"""Real text: incremental detokenisation, stop strings, and their checks on both sides."""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.codec import Tensor, encode
from protocol.keys import SigningKey
from protocol.messages import Commitment, JobRequest, Verdict
from prover.llm.commit import package
from prover.llm.generate import generate
from prover.llm.job import DEFAULT_CALIBRATION, LLMJob, LLMJobError, parse_job
from prover.llm.model import LLM
from prover.llm.sampler import SamplingParams
from prover.llm.text import TextStream, stop_index
from prover.llm.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer
from prover.node import tensor_hash
from tests import checkpoints
from tests.test_llm_verify import commit
from verifier.llm import verify_generation

NODE = SigningKey.derive("test/llm-text/node")
CHAIN = b"\x0c" * 32
"""A stand-in chain id: these jobs are judged here, never recorded on a ledger."""
CLIENT = SigningKey.derive("test/llm-text/client")


@functools.cache
def bpe() -> HFTokenizer:
    directory = Path(tempfile.mkdtemp())
    checkpoints.tokenizer().save_pretrained(directory)
    return HFTokenizer(directory)


TEXT = st.text(alphabet=st.sampled_from(list("the café ñ 😀 in er a\n€")), max_size=30)


@settings(max_examples=60, deadline=None)
@given(text=TEXT)
def test_streamed_pieces_join_to_the_decoded_text(text: str) -> None:
    """Characters split over several tokens (é, €, 😀) never come out as mojibake."""
    for tok in (bpe(), ByteTokenizer()):
        ids = tok.encode(text, False)
        stream = TextStream(tok)
        pieces = [stream.push(t) for t in ids] + [stream.finish()]
        assert "\ufffd" not in "".join(pieces)
        assert "".join(pieces) == tok.decode(ids) == text


@settings(max_examples=60, deadline=None)
@given(text=TEXT, stop=st.text(alphabet=st.sampled_from(list("ae é😀")), min_size=1,
                                max_size=3))
def test_stop_strings_cut_the_text_before_the_first_one(text: str, stop: str) -> None:
    tok: Tokenizer = bpe()
    ids = tok.encode(text, False)
    stream = TextStream(tok, [stop])
    pieces = []
    for t in ids:
        pieces.append(stream.push(t))
        if stream.stopped:
            break
    pieces.append(stream.finish())
    emitted = "".join(pieces)
    full = tok.decode(ids)
    if stop in full:
        assert stream.stopped and emitted == full[: full.index(stop)]
        kept = stop_index(tok, ids, [stop])
        assert kept is not None and stop in tok.decode(ids[:kept])
        assert stop not in tok.decode(ids[: kept - 1])
    else:
        assert not stream.stopped and emitted == full
        assert stop_index(tok, ids, [stop]) is None


def test_text_that_may_begin_a_stop_string_is_held_back() -> None:
    tok = ByteTokenizer()
    stream = TextStream(tok, ["END"])
    assert [stream.push(t) for t in b"abE"] == ["a", "b", ""]
    assert stream.push(ord("x")) == "Ex"
    assert [stream.push(t) for t in b"EN"] == ["", ""]
    assert stream.push(ord("D")) == "" and stream.stopped and stream.text == "abEx"


@pytest.mark.parametrize("bad", [b"", b"\x00\x00\x00", b"\x00\x00\x00\x02\x00\x00\x00\x01",
                                 b"\x00\x00\x00\x01" * 2, b"\x00" * 68])
def test_malformed_stop_tokens_are_refused(bad: bytes) -> None:
    with pytest.raises(LLMJobError, match="stop_tokens"):
        parse_job(_request({"stop_tokens": bad}))


@pytest.mark.parametrize("bad", [encode([]), encode(["a"] * 5), encode([""]), encode(["a", "a"]),
                                 encode("abc"), encode([1]), b"\xc1", "plain"])
def test_malformed_stop_strings_are_refused(bad: object) -> None:
    with pytest.raises(LLMJobError, match="stop_strings"):
        parse_job(_request({"stop_strings": bad}))


def _request(extra: dict[str, object]) -> JobRequest:
    params = {"max_new_tokens": 8, "dtype": "float32", "seed": 1, **extra}
    return JobRequest(model_id=bytes(32), input=Tensor.from_torch(torch.tensor([[1, 2]])),
                      client=CLIENT.public.raw, node=NODE.public.raw, nonce=0, fee=1,
                      expiry_round=10, chain_id=CHAIN,
                      params=tuple(params.items()))  # type: ignore[arg-type]


def test_stop_fields_round_trip() -> None:
    job = LLMJob(8, "float32", SamplingParams(seed=1), stop_tokens=frozenset({7, 3}),
                 stop_strings=("\n\n", "é"))
    assert parse_job(_request(job.to_params())) == job


# -- the validator's length rule with stop tokens and stop strings -------------------------------


def _judge(llm: LLM, p: torch.Tensor, job: LLMJob, tokens: torch.Tensor, hidden_from: LLMJob
           ) -> tuple[Verdict, str]:
    """Commit ``tokens`` with an honest sketch of them (the prefill attack's best case)."""
    made = generate(llm, [p], [dataclasses.replace(hidden_from, max_new_tokens=64)])[0]
    n = tokens.numel()
    aux = package(dataclasses.replace(made, tokens=tokens, hidden=made.hidden[:n]), job,
                  DEFAULT_CALIBRATION).aux
    request = JobRequest(model_id=bytes(32), input=Tensor.from_torch(p[None, :]),
                         client=CLIENT.public.raw, node=NODE.public.raw, nonce=1, fee=1,
                         expiry_round=10, chain_id=CHAIN,
                         params=tuple(job.to_params().items())).signed(CLIENT)
    output = Tensor.from_torch(tokens[None, :].contiguous())
    commitment = Commitment(job_id=request.job_id, model_id=bytes(32),
                            input_hash=tensor_hash(request.input), output_hash=tensor_hash(output),
                            node=NODE.public.raw, chain_id=CHAIN, mode="llm",
                            aux=aux).signed(NODE)
    check = verify_generation(request, commitment, output, llm, DEFAULT_CALIBRATION)
    return check.verdict, check.reason


def test_stopping_early_or_late_is_fraud_and_stopping_right_is_valid() -> None:
    llm = LLM(checkpoints.build("llama"), tokenizer=bpe())
    tok = bpe()
    p = torch.tensor(tok.encode("the cat sat on the", False))
    free_job = LLMJob(64, "float32", SamplingParams(seed=3))
    free = generate(llm, [p], [free_job])[0]
    text = tok.decode(free.tokens.tolist())
    stop = text[len(tok.decode(free.tokens[:10].tolist())):][:1]
    job = dataclasses.replace(free_job, stop_strings=(stop,))
    honest = generate(llm, [p], [job])[0]
    n = honest.tokens.numel()
    assert honest.finish_reason == "stop" and n < 64
    assert _judge(llm, p, job, honest.tokens, free_job)[0] is Verdict.VALID
    # running on past the stop string, or stopping before it, is provable
    verdict, reason = _judge(llm, p, job, free.tokens[: n + 3], free_job)
    assert verdict is Verdict.FRAUD and "past a stop string" in reason
    verdict, reason = _judge(llm, p, job, free.tokens[: n - 1], free_job)
    assert verdict is Verdict.FRAUD and "without a stop token or stop string" in reason
    # a stop token the job did not name does not end it
    eos_job = dataclasses.replace(free_job, stop_tokens=frozenset({int(free.tokens[20])}))
    verdict, reason = _judge(llm, p, eos_job, free.tokens[:25], free_job)
    assert verdict is Verdict.FRAUD and "past the stop token" in reason
    # a validator without the tokenizer cannot judge where the text stopped: never FRAUD
    blind = LLM(llm.module)
    made = dataclasses.replace(free, tokens=honest.tokens, hidden=free.hidden[:n])
    aux = package(made, job, DEFAULT_CALIBRATION).aux
    request, commitment, output = commit(p, job, honest.tokens, aux)
    assert verify_generation(request, commitment, output, blind,
                             DEFAULT_CALIBRATION).verdict is Verdict.INCONCLUSIVE
