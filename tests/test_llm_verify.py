"""The llm mode end to end: honest variation is VALID, cheats are FRAUD, bad input never crashes."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from assay.cli import main
from protocol.codec import Tensor
from protocol.keys import SigningKey
from protocol.messages import Commitment, JobRequest, Verdict
from prover import zoo
from prover.llm.commit import package
from prover.llm.generate import LLM, Generated, generate, prefill
from prover.llm.job import DEFAULT_CALIBRATION, Calibration, LLMJob, parse_job
from prover.llm.sampler import SamplingParams
from prover.llm.sketch import decode_sketch, deviations, make_sketch
from prover.llm.tokenizer import ByteTokenizer
from prover.node import InferenceNode, tensor_hash
from verifier.calibrate import (
    CALIBRATION_PROMPTS,
    SAMPLING_MIX,
    HonestSetting,
    calibrate,
    honest_jobs,
    measure,
)
from verifier.llm import LLMCheck, sampling_gaps, top_p_excess, verify_generation
from verifier.validator import Validator

NODE = SigningKey.derive("test/llm/node")
CLIENT = SigningKey.derive("test/llm/client")
VALIDATOR = SigningKey.derive("test/llm/validator")
N_NEW = 64
CAL = DEFAULT_CALIBRATION


@functools.cache
def llm(name: str, seed: int = 0) -> LLM:
    return LLM(zoo.build(name, seed).module)


def quantized(module: nn.Module, bits: int) -> nn.Module:
    q = copy.deepcopy(module)
    levels = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for name, p in q.named_parameters():
            if p.dim() == 2:
                rows = p if "c_" not in name else p.T
                scale = rows.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / levels
                rows.copy_(torch.round(rows / scale).clamp(-levels, levels) * scale)
    return q


def prompt(seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (20,), generator=torch.Generator().manual_seed(seed))


CHAIN = b"\x0c" * 32
"""A stand-in chain id: these jobs are judged here, never recorded on a ledger."""


def job(seed: int, dtype: str = "float32", **sampling: int) -> LLMJob:
    return LLMJob(N_NEW, dtype, SamplingParams(seed=seed, **sampling))


def commit(p: torch.Tensor, j: LLMJob, tokens: torch.Tensor, aux: bytes, model_id: bytes = bytes(32)
           ) -> tuple[JobRequest, Commitment, Tensor]:
    request = JobRequest(model_id=model_id, input=Tensor.from_torch(p[None, :]),
                         client=CLIENT.public.raw, node=NODE.public.raw, nonce=1, fee=1,
                         expiry_round=10, chain_id=CHAIN,
                         params=tuple(j.to_params().items())).signed(CLIENT)
    output = Tensor.from_torch(tokens[None, :].contiguous())
    commitment = Commitment(job_id=request.job_id, model_id=model_id,
                            input_hash=tensor_hash(request.input), output_hash=tensor_hash(output),
                            node=NODE.public.raw, chain_id=CHAIN, mode="llm",
                            aux=aux).signed(NODE)
    return request, commitment, output


def judge(model: LLM, p: torch.Tensor, j: LLMJob, made: Generated, aux: bytes | None = None,
          cal: Calibration = CAL) -> LLMCheck:
    aux = package(made, j, cal).aux if aux is None else aux
    request, commitment, output = commit(p, j, made.tokens, aux)
    return verify_generation(request, commitment, output, model, cal)


# -- honest variation: never FRAUD -------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpt2", "llama"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_honest_variations_are_valid(name: str, dtype: str) -> None:
    model = llm(name)
    prompts = [prompt(i) for i in range(8)]
    jobs = [job(i, dtype, temperature_milli=[0, 1000, 700, 1000][i % 4],
                top_k=[0, 0, 40, 0][i % 4], top_p_ppm=[10**6, 10**6, 10**6, 900_000][i % 4])
            for i in range(8)]
    batched = generate(model, prompts, jobs, attention="sdpa")  # batch of 8, left padding
    alone = [generate(model, [p], [j], attention="eager", threads=2)[0]
             for p, j in zip(prompts[:2], jobs[:2], strict=True)]
    for p, j, made in [*zip(prompts, jobs, batched, strict=True),
                       *zip(prompts[:2], jobs[:2], alone, strict=True)]:
        check = judge(model, p, j, made)
        assert check.verdict is Verdict.VALID, check.reason
        assert check.score < 0.66


# -- attacks: FRAUD, never VALID ---------------------------------------------------------------


def attack_commitments(name: str, dtype: str) -> dict[str, tuple[torch.Tensor, LLMJob, Generated,
                                                                  bytes | None]]:
    real = llm(name)
    p, j = prompt(99), job(99, dtype)
    other_prompt = p.clone()
    other_prompt[3] = (other_prompt[3] + 1) % 256
    small = LLM(zoo.build(name, 5).module)
    cheap = generate(small, [p], [j])[0]
    honest_sketch = make_sketch(prefill(real, p, cheap.tokens, dtype).hidden, 99,
                                CAL.for_dtype(dtype).sketch_exp).encode()
    honest = generate(real, [p], [j])[0]
    wrong_t = dataclasses.replace(j, sampling=dataclasses.replace(j.sampling,
                                                                  temperature_milli=700))
    wrong_seed = dataclasses.replace(j, sampling=dataclasses.replace(j.sampling, seed=100))
    j_p = job(98, dtype, top_p_ppm=900_000)  # top-p: the bfloat16 misses of the mass slack
    greedy_p = dataclasses.replace(j_p, sampling=dataclasses.replace(j_p.sampling,
                                                                     temperature_milli=0))
    wrong_t_p = dataclasses.replace(j_p, sampling=dataclasses.replace(j_p.sampling,
                                                                      temperature_milli=700))
    return {
        "other seed": (p, j, generate(LLM(zoo.build(name, 1).module), [p], [j])[0], None),
        "int4": (p, j, generate(LLM(quantized(real.module, 4)), [p], [j])[0], None),
        "int8": (p, j, generate(LLM(quantized(real.module, 8)), [p], [j])[0], None),
        "prompt changed": (p, j, generate(real, [other_prompt], [j])[0], None),
        "wrong temperature": (p, j, generate(real, [p], [wrong_t])[0], None),
        "wrong seed": (p, j, generate(real, [p], [wrong_seed])[0], None),
        "wrong temperature, top-p": (p, j_p, generate(real, [p], [wrong_t_p])[0], None),
        "greedy, top-p": (p, j_p, generate(real, [p], [greedy_p])[0], None),
        "prefill attack": (p, j, cheap, honest_sketch),
        "truncated": (p, j, Generated(honest.tokens[:40], honest.hidden[:40]), None),
    }


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_attacks_are_fraud(dtype: str) -> None:
    for attack, (p, j, made, aux) in attack_commitments("llama", dtype).items():
        check = judge(llm("llama"), p, j, made, aux)
        if dtype == "bfloat16" and attack == "int8":
            # int8 weights deviate by about the honest bfloat16 size: one job's sketch limit,
            # which allows twice the worst honest deviation at a 1e-10 false-positive level,
            # does not accuse it; it must not vouch for it either, and the evidence across a
            # node's audits catches it (tests/test_llm_evidence_audits.py)
            assert check.verdict is not Verdict.VALID, (attack, check.reason)
            continue
        assert check.verdict is Verdict.FRAUD, (attack, check.reason)
        assert check.tokens_to_fraud is not None and check.tokens_to_fraud <= N_NEW


# -- verdict logic -------------------------------------------------------------------------------


def test_sampling_gap_is_zero_for_the_argmax_and_infinite_outside_top_k() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0, -2.0]], dtype=torch.float64)
    noise = torch.zeros_like(logits)
    params = SamplingParams(seed=0, temperature_milli=1000, top_k=2)

    def gap(t: int) -> float:
        return float(sampling_gaps(logits, noise, torch.tensor([t]), params, 1e-3, 1e-3)[0])

    assert gap(0) == 0.0
    assert gap(1) == 2.0
    assert gap(2) == float("inf")
    # a near-tie at the top-k boundary is tolerated both ways
    tie = torch.tensor([[3.0, 1.0, 1.0 - 1e-6, -2.0]], dtype=torch.float64)
    assert float(sampling_gaps(tie, noise, torch.tensor([2]), params, 1e-3, 1e-3)[0]) < 2.1


def test_gap_sum_catches_a_wrong_temperature_that_no_single_token_shows() -> None:
    """bfloat16, T = 1 committed, T = 0.7 used: with the per-token limit out of reach, the
    job's sum of gaps still convicts; the honest job stays far below the same limit."""
    model = llm("llama")
    p, j = prompt(5), job(5, "bfloat16")
    cheat_job = dataclasses.replace(j, sampling=dataclasses.replace(j.sampling,
                                                                    temperature_milli=700))
    lax = dataclasses.replace(CAL.for_dtype("bfloat16"), token_tau=1e6)
    cal = Calibration(tolerances={**CAL.tolerances, "bfloat16": lax}, record={})
    cheat = generate(model, [p], [cheat_job])[0]
    honest = generate(model, [p], [j])[0]
    assert not torch.equal(cheat.tokens, honest.tokens)
    caught = judge(model, p, j, cheat, package(cheat, j, cal).aux, cal=cal)
    assert caught.verdict is Verdict.FRAUD and caught.reason.startswith("gap-sum"), caught.reason
    assert caught.token_score < 1 < caught.gap_sum_score
    assert caught.tokens_to_fraud is not None and caught.tokens_to_fraud <= N_NEW
    fine = judge(model, p, j, honest, cal=cal)
    assert fine.verdict is Verdict.VALID and fine.gap_sum_score < 0.66, fine.reason


def test_gap_sum_limit_grows_with_the_job_and_old_entries_still_load() -> None:
    tol = CAL.for_dtype("bfloat16")
    assert tol.gap_sum_limit(1) == tol.gap_sum_limit(64) == tol.gap_sum_tau
    assert tol.gap_sum_limit(256) == 4 * tol.gap_sum_tau
    stored = CAL.to_json()
    for t in stored["tolerances"].values():
        del t["mass_tau"], t["gap_sum_tau"], t["mass_sum_tau"]
    old = Calibration.from_json(stored).for_dtype("bfloat16")
    assert {m for row in old.mass_tau for m in row} == {old.token_tau}
    assert old.gap_sum_tau == 64 * old.token_tau
    assert old.mass_sum_limit(64) > 64  # T·(1 − p) < 100 a token: never reached
    # between calibrated temperatures the larger bound applies; beyond them the nearest
    assert tol.mass_levels(0.8) == tuple(map(max, tol.mass_levels(0.7), tol.mass_levels(1.0)))
    assert tol.mass_levels(0.01) == tol.mass_tau[0] and tol.mass_levels(9.0) == tol.mass_tau[-1]


def test_top_p_slack_is_additive_mass() -> None:
    """Token 2 sits past p = 0.8 by 0.05 of mass: out with a 0.01 slack, possible with 0.1."""
    logits = torch.log(torch.tensor([[0.5, 0.35, 0.1, 0.05]], dtype=torch.float64))
    noise = torch.tensor([[0.0, 0.0, 5.0, 0.0]], dtype=torch.float64)
    params = SamplingParams(seed=0, temperature_milli=1000, top_p_ppm=800_000)
    assert float(sampling_gaps(logits, noise, torch.tensor([2]), params, 1e-6, 0.01)[0]) == \
        float("inf")
    assert float(sampling_gaps(logits, noise, torch.tensor([2]), params, 1e-6, 0.1)[0]) == 0.0
    # token 0, which every node kept, scores above token 1: a gap
    assert float(sampling_gaps(logits, noise, torch.tensor([1]), params, 1e-6, 0.01)[0]) > 0


def test_top_p_excess_is_the_mass_clearly_above_past_p() -> None:
    """Token 2 has 0.85 of mass clearly above it, 0.05 past p = 0.8 (× T); a token within
    the nucleus, greedy jobs and jobs without top-p have none."""
    logits = torch.log(torch.tensor([[0.5, 0.35, 0.1, 0.05]], dtype=torch.float64))
    params = SamplingParams(seed=0, temperature_milli=1000, top_p_ppm=800_000)
    excess = top_p_excess(logits, torch.tensor([2]), params, 1e-6)
    assert abs(float(excess[0]) - 0.05) < 1e-9
    assert float(top_p_excess(logits, torch.tensor([1]), params, 1e-6)[0]) == 0.0
    every = top_p_excess(logits, torch.arange(4)[None, :], params, 1e-6)
    assert every.shape == (1, 4) and float(every[0, 2]) == float(excess[0])
    # the tokens within the logit tolerance above t do not count: token 1 is 0.35 of mass
    assert float(top_p_excess(logits, torch.tensor([2]), params, 1.5)[0]) == 0.0
    for off in (dataclasses.replace(params, top_p_ppm=1_000_000),
                dataclasses.replace(params, temperature_milli=0)):
        assert float(top_p_excess(logits, torch.tensor([3]), off, 1e-6)[0]) == 0.0


def test_scores_near_the_threshold_are_inconclusive() -> None:
    """Between SUSPICIOUS and 1 of a threshold the validator neither vouches nor accuses."""
    model = llm("gpt2")
    p, j = prompt(1), job(1)
    made = generate(model, [p], [j])[0]
    aux = package(made, j, CAL).aux
    view = prefill(model, p, made.tokens, "float32")
    rms = float(deviations(decode_sketch(aux, N_NEW), view.hidden, 1).pow(2).mean().sqrt())
    base = CAL.for_dtype("float32")
    for ratio, verdict in ((0.9, Verdict.INCONCLUSIVE), (1.1, Verdict.FRAUD),
                           (0.5, Verdict.VALID)):
        # an energy bound that puts this job's rms at ``ratio`` of its limit
        energy = (rms / ratio - 0.5) / (base.sketch_rms_limit(N_NEW) - 0.5) * \
            base.sketch_energy_tau
        squeezed = dataclasses.replace(base, sketch_norm_tau=1e9, sketch_energy_tau=energy)
        cal = Calibration(tolerances={**CAL.tolerances, "float32": squeezed}, record={})
        assert judge(model, p, j, made, aux, cal=cal).verdict is verdict, ratio


# -- bad input: FRAUD or a clear refusal, never VALID, never a crash -------------------------------


def test_malformed_commitments_are_fraud_or_inconclusive_never_valid() -> None:
    model = llm("gpt2")
    p, j = prompt(2), job(2)
    made = generate(model, [p], [j])[0]
    good = package(made, j, CAL).aux
    bad_sketches = {
        "empty": b"",
        "truncated": good[:-1],
        "too long": good + b"\x00",
        "wrong version": b"\x09" + good[1:],
        "wrong step": good[:1] + bytes([(good[1] + 1) % 256]) + good[2:],
        "another model": package(generate(llm("gpt2", 1), [p], [j])[0], j, CAL).aux,
        "garbage": bytes(range(len(good))),
    }
    for what, aux in bad_sketches.items():
        check = judge(model, p, j, made, aux)
        assert check.verdict is Verdict.FRAUD, (what, check.reason)
    request, commitment, output = commit(p, j, made.tokens, good)
    for label, out in {
        "missing output": None,
        "output not matching hash": Tensor.from_torch(made.tokens[None, :1].contiguous()),
    }.items():
        check = verify_generation(request, commitment, out, model, CAL)
        assert check.verdict is Verdict.INCONCLUSIVE, label
    assert verify_generation(request, commitment, output, None, CAL).verdict is Verdict.INCONCLUSIVE
    floats = Tensor.from_torch(torch.zeros((1, N_NEW)))
    _, commitment_f, _ = commit(p, j, made.tokens, good)
    commitment_f = dataclasses.replace(commitment_f, output_hash=tensor_hash(floats))
    assert verify_generation(request, commitment_f, floats, model, CAL).verdict is Verdict.FRAUD
    exact = dataclasses.replace(commitment, mode="exact")
    assert verify_generation(request, exact, output, model, CAL).verdict is Verdict.FRAUD


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"dtype": "float32", "seed": 1}, "max_new_tokens"),
        ({"max_new_tokens": 5, "seed": 1}, "dtype"),
        ({"max_new_tokens": 5, "dtype": "float16", "seed": 1}, "dtype"),
        ({"max_new_tokens": 5, "dtype": "float32"}, "seed"),
        ({"max_new_tokens": 5, "dtype": "float32", "seed": 1, "temperature": 1}, "unknown"),
        ({"max_new_tokens": 5, "dtype": "float32", "seed": 1, "top_p_ppm": 0}, "top_p_ppm"),
    ],
)
def test_bad_job_parameters_are_named(params: dict[str, int | str], message: str) -> None:
    request = JobRequest(model_id=bytes(32), input=Tensor.from_torch(prompt(0)[None, :]),
                         client=CLIENT.public.raw, node=NODE.public.raw, nonce=0, fee=1,
                         expiry_round=10, chain_id=CHAIN, params=tuple(params.items()))
    with pytest.raises(ValueError, match=message):
        parse_job(request)


# -- node, validator, calibration, demo ------------------------------------------------------------


def test_node_and_validator_agree_and_a_substitute_is_caught() -> None:
    model_id = b"\x01" * 32
    llms = {model_id: (llm("gpt2"), CAL)}
    node = InferenceNode(NODE, {}, llms=llms)
    validator = Validator(VALIDATOR, {}, llms=llms)
    request = JobRequest(model_id=model_id, input=Tensor.from_torch(prompt(3)[None, :]),
                         client=CLIENT.public.raw, node=NODE.public.raw, nonce=3, fee=1,
                         expiry_round=10, chain_id=CHAIN,
                         params=tuple(job(3).to_params().items())).signed(CLIENT)
    result = node.handle(request)
    assert result.commitment.mode == "llm" and result.output.shape == (1, N_NEW)
    finding = validator.audit(request, result.commitment, 1, result.output)
    assert getattr(finding, "verdict", None) is Verdict.VALID
    assert validator.audit(request, result.commitment, 1).verdict is Verdict.INCONCLUSIVE

    class Always:
        def __init__(self) -> None:
            self.cheated: set[bytes] = set()

        def choose_model(self, request: JobRequest, honest: nn.Module) -> nn.Module:
            return llm("gpt2", 1).module

    cheat = InferenceNode(NODE, {}, cheat=Always(), llms=llms).handle(request)
    evidence = validator.audit(request, cheat.commitment, 1, cheat.output)
    assert evidence.KIND == "evidence" and evidence.accused() == cheat.commitment


def test_calibration_puts_honest_runs_inside_the_margin() -> None:
    model = llm("llama")
    setting = HonestSetting("b2 t1 sdpa", batch=2)
    cal = calibrate(model, jobs_per_setting=2, seed=3, settings=[setting])
    assert cal.record["margin"] == 0.5
    for dtype in ("float32", "bfloat16"):
        tol = cal.for_dtype(dtype)
        assert tol.token_tau > 0 and tol.sketch_norm_tau > 0 and tol.sketch_energy_tau > 0
        assert min(map(min, tol.mass_tau)) > 0 and tol.gap_sum_tau > 0 and tol.mass_sum_tau > 0
        seen = cal.record["measured"][dtype]
        assert 0 < tol.honest_mean_score <= seen["max_score"] <= 1  # what audits accumulate
        assert seen["max_gap_sum"] <= cal.record["margin"] * tol.gap_sum_tau
        assert seen["max_mass_sum"] <= cal.record["margin"] * tol.mass_sum_tau
        for measured, tau in zip(seen["max_mass_dev"], tol.mass_tau, strict=True):
            assert all(m <= cal.record["margin"] * t for m, t in zip(measured, tau, strict=True))
    assert Calibration.from_json(json.loads(json.dumps(cal.to_json()))) == cal
    deviations = measure(model, [(prompt(0), job(0))], setting)
    assert deviations[0].logit_dev < cal.for_dtype("float32").token_tau


def test_calibration_prompts_are_half_real_text_through_the_chat_template() -> None:
    """Real text moves hidden states further than random ids: with a tokenizer, calibration
    takes half its prompts (every sampling kind alike) through the model's chat template."""
    model = LLM(zoo.build("llama", 0).module, tokenizer=ByteTokenizer())
    texts = [bytes(p.tolist()).decode("utf-8", "replace")
             for p, _ in honest_jobs(model, 8, "float32", 5)]
    chat = [i for i, text in enumerate(texts) if any(q in text for q in CALIBRATION_PROMPTS)]
    assert len(chat) == 4 and all("<|im_start|>user" in texts[i] for i in chat)
    assert {SAMPLING_MIX[i % len(SAMPLING_MIX)] for i in chat} == set(SAMPLING_MIX)
    no_tokenizer = [p for p, _ in honest_jobs(llm("llama"), 8, "float32", 5)]
    assert all(4 <= p.numel() <= 64 for p in no_tokenizer)


def test_assay_calibrate_stores_thresholds_in_the_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = str(tmp_path / "reg")
    assert main(["models", "build", "gpt2", "--out", str(tmp_path / "g")]) == 0
    assert main(["models", "add", str(tmp_path / "g"), "--mode", "llm", "--registry",
                 registry]) == 0
    assert main(["calibrate", "g", "--jobs", "1", "--registry", registry]) == 0
    out = capsys.readouterr().out
    assert "margin 0.5" in out and "bfloat16" in out
    stored = json.loads((tmp_path / "reg" / "registry.json").read_text())
    (entry,) = stored["models"].values()
    assert set(entry["params"]["llm"]["tolerances"]) == {"bfloat16", "float32"}
    assert main(["calibrate", "nope", "--registry", registry]) == 2
    assert "no model named" in capsys.readouterr().err
    assert main(["models", "build", "mlp-int8", "--out", str(tmp_path / "int")]) == 0
    assert main(["models", "add", str(tmp_path / "int"), "--name", "x", "--registry",
                 str(tmp_path / "reg2"), "--no-suggest"]) == 0
    capsys.readouterr()
    assert main(["calibrate", "x", "--registry", str(tmp_path / "reg2")]) == 2
    assert "exact models are judged bit for bit" in capsys.readouterr().err


def test_llm_demo_catches_the_cheater(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--llm", "--jobs", "24", "-p", "0.5", "--cheat-rate", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["cheaters_slashed"] == 1 and out["honest_slashed"] == 0
    assert out["validators_slashed"] == 0
