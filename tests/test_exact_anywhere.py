"""The exact mode is exact anywhere: one job, one output, on every honest machine setting.

Each ISA path runs in a subprocess of its own, because torch reads
``ATEN_CPU_CAPABILITY`` once, at import: every capability this CPU has
(default, avx2, avx512 on x86-64), with MKL's ``MKL_CBWR`` code-path switch
varied between them, threads 1 and 2 in each, and CUDA when a GPU is
present. In each, every integer zoo model runs 32 jobs alone and inside
batches of 1, 8 and 32, each job at several rows.
Every hash must be the same everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import torch

from assay.cli import main
from prover import zoo
from verifier.tensor_calibration import cpu_capabilities

ROOT = Path(__file__).resolve().parents[1]


def settings() -> list[tuple[str, str, dict[str, str]]]:
    """``(label, device, environment)``: one subprocess per ISA path, MKL's path switch varied.

    Each subprocess runs threads 1 and 2 itself (the thread count can change
    in a process; the ISA path cannot).
    """
    capabilities = cpu_capabilities()
    cbwr = ["", "AVX2" if "avx2" in capabilities else "", "COMPATIBLE"]
    found = []
    for i, cap in enumerate(capabilities):
        env = {"ATEN_CPU_CAPABILITY": cap}
        if cbwr[i % len(cbwr)]:
            env["MKL_CBWR"] = cbwr[i % len(cbwr)]
        found.append((" ".join(f"{k}={v}" for k, v in env.items()), "cpu", env))
    if torch.cuda.is_available():
        found.append(("cuda", "cuda", {}))
    return found


@cache
def run_setting(label: str) -> dict[str, Any]:
    _, device, extra = next(s for s in settings() if s[0] == label)
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    done = subprocess.run(
        [sys.executable, "-m", "tests.exact_worker", device, "1,2"],
        capture_output=True, text=True, cwd=ROOT, env={**env, **extra}, timeout=600, check=False,
    )
    assert done.returncode == 0, f"{label}: {done.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(done.stdout)
    if "ATEN_CPU_CAPABILITY" in extra:
        ran = report["capability"].lower()
        assert ran == extra["ATEN_CPU_CAPABILITY"], f"{label} ran {ran}"
    return report


def test_every_exact_job_has_one_output_on_every_setting_and_in_every_batch() -> None:
    labels = [s[0] for s in settings()]
    reference = run_setting(labels[0])["hashes"]["1"]
    checked = 0
    for label in labels:
        for threads, by_model in run_setting(label)["hashes"].items():
            for name in zoo.INTEGER_KINDS:
                want = reference[name]["alone"]
                for run, got in by_model[name].items():
                    differing = [i for i, (a, b) in enumerate(zip(want, got, strict=True))
                                 if a != b]
                    where = f"{name} {label} t{threads} {run}"
                    assert not differing, f"{where}: jobs {differing} differ"
                    checked += len(got)
    assert checked >= len(labels) * 2 * len(zoo.INTEGER_KINDS) * 32 * 8


def test_models_run_prints_the_hash_every_setting_computes(tmp_path: Path) -> None:
    """``assay models run --json`` under another ISA path and thread count agrees."""
    from prover.model_store import save_model

    built = zoo.build("cnn-int8", seed=11)
    save_model(tmp_path / "cnn-int8", built.module, built.kind, built.config)
    registry = tmp_path / "registry"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": cpu_capabilities()[0]}
    assert main(["models", "add", str(tmp_path / "cnn-int8"), "--registry", str(registry),
                 "--no-suggest"]) == 0
    x = built.example_input(7_000)  # job 0 of the worker
    import numpy as np

    np.save(tmp_path / "input.npy", x.numpy())
    done = subprocess.run(
        [sys.executable, "-m", "assay", "models", "run", "cnn-int8", "--input",
         str(tmp_path / "input.npy"), "--threads", "2", "--json", "--registry", str(registry)],
        capture_output=True, text=True, cwd=ROOT, env=env, check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["model"], report["mode"]) == ("cnn-int8", "exact")
    assert report["output"]["dtype"] == "int32"
    labels = [s[0] for s in settings()]
    assert report["output_hash"] == run_setting(labels[-1])["hashes"]["2"]["cnn-int8"]["alone"][0]
