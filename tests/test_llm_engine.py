"""Continuous batching: jobs join and leave a running batch at every step, and a job's tokens
depend only on the job (identical when greedy in float32, VALID in every case)."""

from __future__ import annotations

import functools

import pytest
import torch

from protocol.messages import Verdict
from prover.llm.commit import package
from prover.llm.engine import DecodeBatch, Engine, Generated, QueueFull, StepToken
from prover.llm.generate import generate
from prover.llm.job import DEFAULT_CALIBRATION, LLMJob
from prover.llm.model import LLM, GenerationError
from prover.llm.sampler import SamplingParams
from tests import checkpoints
from tests.test_llm_verify import commit
from verifier.llm import verify_generation

EOS = checkpoints.SMALL["eos_token_id"]


@functools.cache
def model(arch: str) -> LLM:
    return LLM(checkpoints.build(arch), tokenizer=_tokenizer())


@functools.cache
def _tokenizer() -> object:
    import tempfile
    from pathlib import Path

    from prover.llm.tokenizer import HFTokenizer

    directory = Path(tempfile.mkdtemp())
    checkpoints.tokenizer().save_pretrained(directory)
    return HFTokenizer(directory)


def prompt(seed: int, length: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (length,), generator=g)


def verdict(llm: LLM, p: torch.Tensor, job: LLMJob, made: Generated) -> Verdict:
    aux = package(made, job, DEFAULT_CALIBRATION).aux
    request, commitment, output = commit(p, job, made.tokens, aux)
    check = verify_generation(request, commitment, output, llm, DEFAULT_CALIBRATION)
    assert check.verdict is Verdict.VALID, check.reason
    return check.verdict


def jobs(dtype: str) -> dict[str, tuple[torch.Tensor, LLMJob]]:
    def job(seed: int, n: int, t: int, **kw: int) -> LLMJob:
        return LLMJob(n, dtype, SamplingParams(seed=seed, temperature_milli=t, **kw))

    return {
        "a": (prompt(1, 9), job(1, 40, 0)),  # greedy, runs through every join and leave
        "b": (prompt(2, 30), job(2, 8, 1000)),  # leaves early
        "c": (prompt(3, 5), job(3, 30, 700, top_k=20)),  # joins at step 5
        "d": (prompt(4, 17), job(4, 20, 1000, top_p_ppm=900_000)),  # waits for room
        "e": (prompt(5, 12), job(5, 30, 0)),  # cancelled while running
    }


def drive(llm: LLM, dtype: str) -> tuple[dict[str, Generated], dict[str, list[StepToken]]]:
    """The schedule (three sequences at most): a, b start; c joins at step 5; d waits for b
    to leave; e waits for d to leave, runs a few steps and is cancelled."""
    work = jobs(dtype)
    engine = Engine(llm, max_num_seqs=3, max_waiting=4)
    streamed: dict[str, list[StepToken]] = {k: [] for k in work}
    for key in "ab":
        engine.submit(key, *work[key])
    results: dict[str, Generated] = {}
    step = 0
    while engine.running or engine.waiting:
        if step == 5:
            for key in "cd":
                engine.submit(key, *work[key])
            assert engine.waiting == 2
        if step == 9:
            assert engine.waiting == 0 and engine.running == 3  # b left, d joined
            engine.submit("e", *work["e"])
        if step == 10:
            assert engine.waiting == 1  # no room until d leaves
        if step == 33:
            assert engine.running == 3 and engine.waiting == 0
            engine.cancel("e")
        for token in engine.step():
            streamed[str(token.key)].append(token)
            if token.finish_reason is not None:
                results[str(token.key)] = engine.pop(token.key)
        step += 1
    return results, streamed


@pytest.mark.parametrize("arch", ["llama", "mistral", "gemma2", "gpt2"])
def test_a_job_is_the_same_alone_or_joining_a_running_batch(arch: str) -> None:
    """Mistral and Gemma 2 keep sliding-window caches shorter than these jobs."""
    llm = model(arch)
    for dtype in ("float32", "bfloat16"):
        results, streamed = drive(llm, dtype)
        assert set(results) == set("abcd")  # e was cancelled: no result
        assert "e" not in results and 0 < len(streamed["e"]) < 30
        for key, made in results.items():
            p, job = jobs(dtype)[key]
            alone = generate(llm, [p], [job])[0]
            assert [t.token for t in streamed[key]] == made.tokens.tolist()
            verdict(llm, p, job, made)
            if dtype == "float32" and job.sampling.greedy:
                assert torch.equal(made.tokens, alone.tokens), key
        assert len(results["b"].tokens) == 8


def test_stop_tokens_and_strings_end_a_job_and_text_streams_in_pieces() -> None:
    llm = model("llama")
    tok = llm.tokenizer
    assert tok is not None
    p = prompt(7, 10)
    free = generate(llm, [p], [LLMJob(30, "float32", SamplingParams(seed=9))])[0]
    full_text = tok.decode(free.tokens.tolist())
    # a stop string: a piece of the free run's text past its first few tokens
    stop = full_text[len(tok.decode(free.tokens[:6].tolist())):][:2]
    assert stop
    job = LLMJob(30, "float32", SamplingParams(seed=9), stop_strings=(stop,))
    batch = DecodeBatch(llm, "float32")
    batch.join([("s", p, job)])
    pieces = []
    while len(batch):
        pieces += [t.text for t in batch.step()]
    made = batch.pop("s")
    assert made.finish_reason == "stop" and made.tokens.numel() < 30
    assert stop not in made.text and full_text.startswith(made.text)
    assert "".join(pieces) == made.text
    assert torch.equal(made.tokens, free.tokens[: made.tokens.numel()])
    verdict(llm, p, job, made)
    eos = int(free.tokens[4])
    with_eos = LLMJob(30, "float32", SamplingParams(seed=9), stop_tokens=frozenset({eos}))
    ended = generate(llm, [p], [with_eos])[0]
    assert ended.finish_reason == "stop" and ended.tokens.tolist()[-1] == eos
    assert ended.tokens.numel() <= 5
    verdict(llm, p, with_eos, ended)


def test_log_probabilities_come_from_the_distribution_sampled() -> None:
    llm = model("qwen2")
    p = prompt(11, 8)
    job = LLMJob(12, "float32", SamplingParams(seed=4, temperature_milli=800, top_k=5))
    batch = DecodeBatch(llm, "float32")
    batch.join([("x", p, job)], top_logprobs=5)
    while len(batch):
        batch.step()
    made = batch.pop("x")
    assert len(made.logprobs) == 12
    for token, lp in zip(made.tokens.tolist(), made.logprobs, strict=True):
        assert lp.token == token and lp.logprob <= 0
        assert len(lp.top) == 5  # top-k 5: exactly the kept tokens, renormalised
        kept = torch.tensor([v for _, v in lp.top], dtype=torch.float64)
        assert abs(float(kept.exp().sum()) - 1) < 1e-9
        assert token in {i for i, _ in lp.top}


def test_the_engine_bounds_its_queue_and_refuses_what_it_cannot_run() -> None:
    llm = model("llama")
    engine = Engine(llm, max_num_seqs=1, max_model_len=64, max_waiting=2)
    job = LLMJob(8, "float32", SamplingParams(seed=1))
    engine.submit("a", prompt(1, 5), job)
    engine.submit("b", prompt(2, 5), job)
    with pytest.raises(QueueFull, match="max_waiting 2"):
        engine.submit("c", prompt(3, 5), job)
    with pytest.raises(GenerationError, match="already"):
        engine.submit("a", prompt(3, 5), job)
    with pytest.raises(GenerationError, match="max_model_len 64"):
        Engine(llm, max_model_len=64).submit("d", prompt(4, 60), job)
    with pytest.raises(GenerationError, match=r"0\.\.319"):
        engine.submit("d", torch.tensor([1, 320]), job)
    with pytest.raises(ValueError, match="max_model_len"):
        Engine(llm, max_model_len=10_000)
    engine.step()
    assert engine.running == 1 and engine.waiting == 1  # max_num_seqs 1
    with pytest.raises(GenerationError, match="bfloat16 job cannot join a float32"):
        DecodeBatch(llm, "float32").join([("z", prompt(1, 5), LLMJob(4, "bfloat16",
                                                                      SamplingParams(seed=1)))])


def test_a_step_hands_its_tokens_out_before_its_forward_pass_and_they_are_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``Engine.step(chosen)`` gives the tokens (and a finished job's result) before the forward
    pass that prepares the next step; the tokens are the ones a plain step makes."""
    llm = model("llama")
    p = prompt(5, 7)
    job = LLMJob(6, "float32", SamplingParams(seed=3, temperature_milli=700))
    plain = generate(llm, [p], [job])[0]
    engine = Engine(llm)
    engine.submit("k", p, job)
    forwards: list[int] = []
    seen: list[tuple[int, int, int]] = []
    batch_forward = DecodeBatch._forward

    def counted(batch: DecodeBatch, tokens: torch.Tensor) -> None:
        forwards.append(tokens.numel())
        batch_forward(batch, tokens)

    def chosen(tokens: list[StepToken]) -> None:
        for t in tokens:
            result = engine.pop(t.key).tokens.numel() if t.finish_reason is not None else 0
            seen.append((t.token, len(forwards), result))

    monkeypatch.setattr(DecodeBatch, "_forward", counted)
    while engine.running or engine.waiting:
        engine.step(chosen)
    assert [s[0] for s in seen] == plain.tokens.tolist()
    assert [s[1] for s in seen] == list(range(6))  # token i before the i-th forward pass
    assert seen[-1][2] == 6 and len(forwards) == 5  # the last step runs none


def test_a_batch_that_chose_its_tokens_takes_no_join_until_it_advances() -> None:
    llm = model("llama")
    job = LLMJob(4, "float32", SamplingParams(seed=1))
    batch = DecodeBatch(llm, "float32")
    batch.join([("a", prompt(1, 5), job)])
    batch.choose()
    for act in (batch.choose, lambda: batch.join([("b", prompt(2, 5), job)]),
                lambda: batch.remove("a")):
        with pytest.raises(GenerationError, match="advance it first"):
            act()
    batch.advance()
    batch.join([("b", prompt(2, 5), job)])
    assert batch.keys == ["a", "b"]
