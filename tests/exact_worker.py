"""One honest machine for ``tests/test_exact_anywhere.py``: hashes of the zoo's exact jobs.

Run as ``python -m tests.exact_worker DEVICE THREADS[,THREADS...]`` with
``ATEN_CPU_CAPABILITY`` (and any other setting under test) in the environment,
which torch reads at import. Prints one JSON object: for each thread count and
every integer zoo model, every job's output hash computed alone and inside
batches of 1, 8 and 32 at several rows.
"""

from __future__ import annotations

import json
import sys

import torch

from prover import zoo
from prover.runtime import DeterministicRuntime, output_hash

JOBS = 32
INPUT_SEED = 7_000
BATCH_SIZES = (1, 8, 32)


def orders(n: int, size: int) -> list[list[int]]:
    forward = list(range(n))
    if size == 1:
        return [forward]
    return [forward, forward[::-1], forward[size // 2:] + forward[: size // 2]]


def hashes(device: str, threads: int) -> dict[str, dict[str, list[str]]]:
    runtime = DeterministicRuntime(threads=threads, device=device)
    torch.set_num_threads(threads)
    result: dict[str, dict[str, list[str]]] = {}
    for name in zoo.INTEGER_KINDS:
        model = zoo.build(name, seed=11)
        inputs = [model.example_input(INPUT_SEED + i) for i in range(JOBS)]
        runs = {"alone": [output_hash(runtime.run(model.module, x)).hex() for x in inputs]}
        for size in BATCH_SIZES:
            for k, order in enumerate(orders(JOBS, size)):
                found: list[str] = [""] * JOBS
                for start in range(0, JOBS, size):
                    chunk = order[start:start + size]
                    outputs = runtime.run_batch(model.module, [inputs[i] for i in chunk])
                    for i, out in zip(chunk, outputs, strict=True):
                        found[i] = output_hash(out).hex()
                runs[f"batch{size}/order{k}"] = found
        result[name] = runs
    return result


if __name__ == "__main__":
    device = sys.argv[1]
    print(json.dumps({
        "capability": torch.backends.cpu.get_cpu_capability(),
        "hashes": {threads: hashes(device, int(threads)) for threads in sys.argv[2].split(",")},
    }))
