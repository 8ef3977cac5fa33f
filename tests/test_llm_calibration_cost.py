"""What makes `assay calibrate` fit its time: core budgeting, concurrent model copies, and
statistics worked a few rows at a time — none of which may change a tolerance."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from prover import zoo
from prover.llm.generate import LLM
from prover.llm.job import DEFAULT_CALIBRATION
from prover.llm.model import llm_torch, thread_counts_are_per_thread
from prover.llm.sampler import SamplingParams, choose_tokens, gumbel_at, gumbel_noise, kept_mask
from verifier import calibrate as cal_module
from verifier.calibrate import (
    Cores,
    Deviation,
    HonestSetting,
    _choose_kept,
    _kept_ids,
    _mass_deviation,
    calibrate,
    honest_jobs,
    mass_deviation,
    measure,
    tolerances_from,
)

SETTINGS = (HonestSetting("b2 t1 sdpa", batch=2),
            HonestSetting("b1 t2 eager / prefill sdpa t2", threads=2, attention="eager",
                          verifier_attention="sdpa", verifier_threads=2))


def _held_at_once(cores: Cores, requests: list[tuple[int, int, float]]) -> tuple[int, list[int]]:
    """Run (cores, priority, seconds) tasks on threads; the most cores ever held at once and
    the order the tasks were granted."""
    lock = threading.Lock()
    held = [0, 0]
    order: list[int] = []

    def task(i: int, n: int, priority: int, seconds: float) -> None:
        with cores.take(n, priority):
            with lock:
                held[0] += min(n, cores.total)
                held[1] = max(held[1], held[0])
                order.append(i)
            time.sleep(seconds)
            with lock:
                held[0] -= min(n, cores.total)

    threads = []
    for i, (n, priority, seconds) in enumerate(requests):
        threads.append(threading.Thread(target=task, args=(i, n, priority, seconds)))
        threads[-1].start()
        time.sleep(0.01)  # arrival order
    for t in threads:
        t.join()
    return held[1], order


def test_cores_are_never_oversubscribed_and_a_wide_task_is_not_starved() -> None:
    cores = Cores(2)
    # a 1-core task runs; a 2-core task arrives; a stream of 1-core tasks arrives after it
    requests = [(1, 0, 0.2), (2, 0, 0.05)] + [(1, 0, 0.05)] * 4
    most, order = _held_at_once(cores, requests)
    assert most <= 2
    assert order[:2] == [0, 1]  # the stream did not pass the wide task on the free core


def test_cores_serve_the_more_urgent_task_first_and_clamp_to_the_machine() -> None:
    cores = Cores(1)
    # task 0 holds the core; 1 (priority 5) and 2 (priority 1) wait; 2 goes first
    most, order = _held_at_once(cores, [(1, 0, 0.15), (1, 5, 0.01), (8, 1, 0.01)])
    assert most == 1 and order == [0, 2, 1]


def test_cores_refuse_a_machine_without_any() -> None:
    with pytest.raises(ValueError, match="at least one core"):
        Cores(0)


def test_runs_of_two_models_overlap_and_runs_of_one_model_do_not() -> None:
    if not thread_counts_are_per_thread():
        pytest.skip("this torch keeps one thread count for the process: every run takes turns")
    a, b = zoo.build("gpt2", 0).module, zoo.build("gpt2", 1).module
    inside = {"a": 0, "b": 0}
    overlap = {"same": False, "other": False}
    gate = threading.Lock()

    def run(model: torch.nn.Module, key: str, other: str, threads: int, seen: dict[str, int]
            ) -> None:
        with llm_torch(threads, model, "eager"):
            with gate:
                inside[key] += 1
                if inside[other] or inside[key] > 1:
                    overlap["other" if inside[other] else "same"] = True
            seen[key] = torch.get_num_threads()
            time.sleep(0.2)
            with gate:
                inside[key] -= 1

    seen: dict[str, int] = {}
    pair = [threading.Thread(target=run, args=(a, "a", "b", 1, seen)),
            threading.Thread(target=run, args=(b, "b", "a", 2, seen))]
    for t in pair:
        t.start()
    for t in pair:
        t.join()
    assert overlap["other"] and seen == {"a": 1, "b": 2}  # each at its own thread count
    overlap["other"] = False
    same = [threading.Thread(target=run, args=(a, "a", "b", 1, seen)) for _ in range(2)]
    for t in same:
        t.start()
    for t in same:
        t.join()
    assert not overlap["same"]


def _logits(seed: int, rows: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A verifier's bfloat16-like logits (many exact ties) and a node's near them."""
    g = torch.Generator().manual_seed(seed)
    mine = (torch.randn(rows, vocab, generator=g, dtype=torch.float64) * 3).to(torch.bfloat16)
    node = mine.double() + 0.05 * torch.randn(rows, vocab, generator=g, dtype=torch.float64)
    return node, mine.double()


def test_mass_deviation_a_few_rows_at_a_time_is_the_whole_jobs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    node, mine = _logits(0, 23, 4096)  # not a multiple of the rows worked at a time
    monkeypatch.setattr(cal_module, "STATISTICS_VALUES", 4 * 4096)
    assert mass_deviation(node, mine, 0.5) == _mass_deviation(node, mine, 0.5)


@pytest.mark.parametrize("top_k,top_p_ppm", [(40, 1_000_000), (0, 900_000), (5, 500_000)])
def test_choosing_among_the_kept_tokens_is_what_the_sampler_chooses(top_k: int,
                                                                   top_p_ppm: int) -> None:
    node, _ = _logits(1, 16, 2048)
    params = SamplingParams(seed=9, temperature_milli=800, top_k=top_k, top_p_ppm=top_p_ppm)
    n = node.shape[0]
    keep = kept_mask(node, torch.full((n,), params.temperature, dtype=torch.float64),
                     torch.full((n,), top_k), torch.full((n,), params.top_p, dtype=torch.float64))
    ids, real = _kept_ids(keep)
    assert torch.equal(real.sum(-1), keep.sum(-1)) and bool(keep.gather(-1, ids).all())
    for seed in range(5):
        noise = gumbel_noise(seed, n, node.shape[-1])
        chosen = _choose_kept(node, (ids, real), params.temperature,
                              gumbel_at(seed, torch.arange(n), ids))
        assert torch.equal(chosen, choose_tokens(node, noise, [params] * n))


def test_a_jobs_sums_do_not_depend_on_how_many_rows_are_worked_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model = LLM(zoo.build("llama", 0).module)
    jobs = honest_jobs(model, 4, "bfloat16", 5, max_new_tokens=24)  # every sampling kind
    deviations = measure(model, jobs, SETTINGS[0])
    tolerances, _ = tolerances_from(deviations, "bfloat16")
    results = []
    for rows in (1, 4, 64):
        monkeypatch.setattr(cal_module, "STATISTICS_VALUES", rows * model.vocab_size)
        results.append([(d.sums(tolerances), d.mass_dev(tolerances.token_tau))
                        for d in deviations])
    assert results[0] == results[1] == results[2]
    for d, ((_, own), _) in zip(deviations, results[0], strict=True):
        assert own == d.committed_sums(tolerances)  # the job's own sums, as the validator's


def test_calibration_is_the_same_on_one_core_as_on_many() -> None:
    model = LLM(zoo.build("gpt2", 0).module)
    one = calibrate(model, jobs_per_setting=3, seed=11, settings=SETTINGS, cores=Cores(1))
    many = calibrate(model, jobs_per_setting=3, seed=11, settings=SETTINGS, cores=Cores(4))
    assert json.dumps(one.to_json(), sort_keys=True) == json.dumps(many.to_json(),
                                                                    sort_keys=True)


def test_a_deviation_without_states_has_no_sums() -> None:
    bare = Deviation(logit_dev=0.0, gap=0.0, block_dev=0.0, block_rms=0.0, tokens=4)
    assert bare.sums(DEFAULT_CALIBRATION.for_dtype("float32")) == ((0.0, 0.0), (0.0, 0.0))
