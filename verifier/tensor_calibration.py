"""Tolerances for the ``tensor`` mode, from honest variation measured across the matrix.

An honest node may run any thread count, any ISA code path
(``ATEN_CPU_CAPABILITY``: default, avx2, avx512 on x86-64), and may batch
jobs (1, 8 or 32 at a time, a job at any row). This module runs the same
seeded calibration jobs under each such setting — each ISA path in a
subprocess of its own, because torch reads the variable once, at import —
and measures, for every job, the largest relative distance
(:func:`verifier.tensor.relative_distance`) between any two honest runs, for
the output and for the sketch. The tolerances are

    τ = max(MARGIN_FACTOR × worst honest distance, FLOOR[dtype])

so the worst honest run sits at half a tolerance or less (a score ≤ 0.5;
FRAUD needs more than ``FRAUD_SCORE`` tolerances). The floor stands for what
no single machine can measure — another vendor's CPU, a GPU: float32 runs of
one model agree to about 1e-6 relative across them, bfloat16 ones to about
one bfloat16 ulp (2^-8) on the values that move.

Calibration jobs are drawn from seeds ``CALIBRATION_SEED + i``, a range that
judging (``bench/tensor_verify.py``) never uses.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from protocol import codec
from protocol.codec import Tensor
from protocol.hashing import sha256
from prover import zoo
from prover.model_store import load_model
from prover.tensor import TensorJobResult, TensorModel, run_tensor_jobs
from verifier.tensor import relative_distance

MARGIN_FACTOR = 2.0
FLOOR = {"float32": 1e-5, "bfloat16": 1e-2}
CALIBRATION_SEED = 1 << 40
BATCH_SIZES = (1, 8, 32)
X86_CAPABILITIES = ("default", "avx2", "avx512")


@dataclass(frozen=True)
class Setting:
    capability: str
    threads: int

    @property
    def label(self) -> str:
        return f"{self.capability}/t{self.threads}"


def cpu_capabilities() -> list[str]:
    """The ``ATEN_CPU_CAPABILITY`` values this CPU can run: every level up to its own."""
    own = torch.backends.cpu.get_cpu_capability().lower()
    if own in X86_CAPABILITIES:
        return list(X86_CAPABILITIES[: X86_CAPABILITIES.index(own) + 1])
    return ["default", own] if own != "default" else ["default"]


def calibration_inputs(kind: str, config: dict[str, Any], jobs: int,
                       seed_base: int = CALIBRATION_SEED) -> list[torch.Tensor]:
    """Seeded job inputs: ``seed_base + i`` (calibration's own range unless told otherwise)."""
    return [zoo.example_input(kind, config, seed_base + i) for i in range(jobs)]


def job_ids(inputs: Sequence[torch.Tensor]) -> list[bytes]:
    """Stand-in job ids for calibration jobs (the sketch directions depend on the id)."""
    return [sha256(b"assay/tensor/calibration" + codec.encode(Tensor.from_torch(x)))
            for x in inputs]


def batch_orders(n: int, size: int) -> list[list[int]]:
    """Orders in which to batch ``n`` jobs ``size`` at a time, so each job sits at other rows."""
    if size == 1:
        return [list(range(n))]
    forward = list(range(n))
    return [forward, forward[::-1], forward[size // 2:] + forward[: size // 2]]


def run_variants(model: TensorModel, inputs: Sequence[torch.Tensor], ids: Sequence[bytes],
                 threads: int, dtype: str, batch_sizes: Sequence[int] = BATCH_SIZES
                 ) -> dict[str, list[TensorJobResult]]:
    """Every job's result under each batch size and order, keyed ``b<size>/<order>``."""
    variants: dict[str, list[TensorJobResult]] = {}
    for size in batch_sizes:
        for k, order in enumerate(batch_orders(len(inputs), size)):
            results: list[TensorJobResult | None] = [None] * len(inputs)
            for start in range(0, len(order), size):
                chunk = order[start:start + size]
                done = run_tensor_jobs(model, [inputs[i] for i in chunk], [ids[i] for i in chunk],
                                       threads=threads, dtype=dtype)
                for i, result in zip(chunk, done, strict=True):
                    results[i] = result
            variants[f"b{size}/{k}"] = [r for r in results if r is not None]
    return variants


def _worker_main() -> None:
    """``python -m verifier.tensor_calibration --worker``: one setting, answers on stdout."""
    spec = json.loads(sys.stdin.read())
    module, meta = load_model(Path(spec["model"]))
    inputs = calibration_inputs(meta.kind, meta.config, spec["jobs"],
                                spec.get("seed_base", CALIBRATION_SEED))
    variants = run_variants(TensorModel(module), inputs, job_ids(inputs), spec["threads"],
                            spec["dtype"], spec["batch_sizes"])
    encoded = {key: [[r.output, r.sketch] for r in results] for key, results in variants.items()}
    sys.stdout.buffer.write(codec.encode(encoded))


def run_setting(directory: Path, setting: Setting, jobs: int, dtype: str,
                batch_sizes: Sequence[int] = BATCH_SIZES,
                seed_base: int = CALIBRATION_SEED) -> dict[str, list[TensorJobResult]]:
    """Every variant of ``jobs`` seeded jobs under ``setting``, run in a subprocess of its own."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": setting.capability}
    spec = {"model": str(directory), "threads": setting.threads, "jobs": jobs, "dtype": dtype,
            "batch_sizes": list(batch_sizes), "seed_base": seed_base}
    done = subprocess.run(
        [sys.executable, "-m", "verifier.tensor_calibration", "--worker"],
        input=json.dumps(spec).encode(), capture_output=True, env=env, check=False,
        cwd=str(Path(__file__).resolve().parents[1]),
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"calibration worker for {setting.label} failed: {done.stderr.decode()[-2000:]}"
        )
    raw = codec.decode(done.stdout, max_bytes=1 << 30)
    return {key: [TensorJobResult(output=o, sketch=s) for o, s in rows]
            for key, rows in raw.items()}


def worst_distances(runs: Sequence[Sequence[TensorJobResult]]) -> tuple[float, float, list[float]]:
    """Largest pairwise output and sketch distances over honest runs; per-job output worst."""
    worst_out = worst_sketch = 0.0
    per_job = []
    for j in range(len(runs[0])):
        job_worst = 0.0
        for a, b in itertools.permutations(range(len(runs)), 2):
            d_out = relative_distance(runs[a][j].output.to_torch(), runs[b][j].output.to_torch())
            d_sk = relative_distance(runs[a][j].sketch.to_torch(), runs[b][j].sketch.to_torch())
            worst_out, worst_sketch = max(worst_out, d_out), max(worst_sketch, d_sk)
            job_worst = max(job_worst, d_out)
        per_job.append(job_worst)
    return worst_out, worst_sketch, per_job


def calibrate_tensor(directory: Path, dtype: str = "float32", jobs: int = 32,
                     isa_paths: bool = True, threads: Sequence[int] = (1, 2),
                     batch_sizes: Sequence[int] = BATCH_SIZES,
                     progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure honest variation of the model in ``directory``; returns ``params["tensor"]``.

    With ``isa_paths`` every CPU capability runs in a subprocess; without,
    only this process's — quicker, for tests, the demo and a first look
    (``threads`` and ``batch_sizes`` narrow it further; the floor still holds).
    """
    if dtype not in FLOOR:
        raise ValueError(f"tensor models compute in {sorted(FLOOR)}, not {dtype!r}")
    if jobs < 2:
        raise ValueError(f"calibration needs at least 2 jobs, got {jobs}")
    capabilities = cpu_capabilities() if isa_paths else [
        torch.backends.cpu.get_cpu_capability().lower()
    ]
    settings = [Setting(c, t) for c in capabilities for t in threads]
    runs: list[list[TensorJobResult]] = []
    labels: list[str] = []
    if isa_paths:
        for setting in settings:
            if progress:
                progress(setting.label)
            for key, results in run_setting(directory, setting, jobs, dtype,
                                            batch_sizes).items():
                runs.append(results)
                labels.append(f"{setting.label}/{key}")
    else:
        module, meta = load_model(directory)
        inputs = calibration_inputs(meta.kind, meta.config, jobs)
        model = TensorModel(module)
        for setting in settings:
            if progress:
                progress(setting.label)
            for key, results in run_variants(model, inputs, job_ids(inputs), setting.threads,
                                             dtype, batch_sizes).items():
                runs.append(results)
                labels.append(f"{setting.label}/{key}")
    worst_out, worst_sketch, _ = worst_distances(runs)
    return {
        "dtype": dtype,
        "output_tau": max(MARGIN_FACTOR * worst_out, FLOOR[dtype]),
        "sketch_tau": max(MARGIN_FACTOR * worst_sketch, FLOOR[dtype]),
        "margin_factor": MARGIN_FACTOR,
        "floor": FLOOR[dtype],
        "worst_honest": {"output": worst_out, "sketch": worst_sketch},
        "jobs": jobs,
        "runs": len(runs),
        "settings": [s.label for s in settings],
        "batch_sizes": list(batch_sizes),
        "machine": f"{platform.machine()} {platform.system()}, torch {torch.__version__}, "
                   f"{torch.backends.cpu.get_cpu_capability()}",
    }


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker_main()
