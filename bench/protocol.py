"""Per-job protocol overhead next to model inference time, for each zoo model.

For one job of each zoo model this times what the protocol adds around the
model run: canonical encoding of the request and commitment, SHA-256 of the
input and output tensors and of the message bodies, Ed25519 signing of the
commitment, decoding, and verifying both signatures — and compares it with
the model's inference (integer models in the runtime, float models as the
tensor mode runs them). For the exact mode's integer models it also times the
float model of the same shape and seed on the same input (``pixels / 255``):
``integer_over_float`` is what exactness costs in inference time.

    python bench/protocol.py [--quick]

Prints a table and writes bench/results/protocol.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# The repository root before this file's folder: ``import protocol`` is the package, not this file.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from protocol.codec import Tensor, encode
from protocol.hashing import sha256
from protocol.keys import SigningKey
from protocol.messages import Commitment, JobRequest
from prover import zoo
from prover.integer import pixels_to_float
from prover.runtime import DeterministicRuntime
from prover.tensor import TensorModel, run_tensor_jobs

RESULTS = Path(__file__).resolve().parent / "results" / "protocol.json"


def time_us(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in microseconds over ``repeats`` runs (after one warm-up)."""
    fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - started) / 1000)
    return statistics.median(samples)


CHAIN_ID = sha256(b"bench/protocol/chain")
"""A stand-in chain id: these messages are signed and checked, never recorded on a ledger."""


def measure(name: str, repeats: int) -> dict[str, float | int | str]:
    client, node = SigningKey.derive("bench/client"), SigningKey.derive("bench/node")
    built = zoo.build(name, seed=1)
    runtime = DeterministicRuntime(threads=1)
    job_input = built.example_input(0)
    request = JobRequest(
        model_id=sha256(name.encode()),
        input=Tensor.from_torch(job_input),
        client=client.public.raw,
        node=node.public.raw,
        nonce=1,
        fee=110,
        expiry_round=10,
        chain_id=CHAIN_ID,
    ).signed(client)
    if name in zoo.EMBEDDER_KINDS:
        model = TensorModel(built.module)

        def infer() -> torch.Tensor:
            return run_tensor_jobs(model, [job_input], [bytes(32)])[0].output.to_torch()
    else:
        def infer() -> torch.Tensor:
            return runtime.run(built.module, job_input)
    output = Tensor.from_torch(infer())

    def commit() -> Commitment:
        return Commitment(
            job_id=request.job_id,
            model_id=request.model_id,
            input_hash=sha256(encode(request.input)),
            output_hash=sha256(encode(output)),
            node=node.public.raw,
            chain_id=CHAIN_ID,
        ).signed(node)

    commitment = commit()
    request_bytes, commitment_bytes = request.encode(), commitment.encode()

    encode_us = time_us(lambda: (request.encode(), commitment.encode()), repeats)
    hash_us = time_us(
        lambda: (
            sha256(encode(request.input)),
            sha256(encode(output)),
            request.content_id,
            commitment.content_id,
        ),
        repeats,
    )
    sign_us = time_us(lambda: node.sign(b"commitment", commitment.body_bytes()), repeats)
    decode_us = time_us(
        lambda: (JobRequest.decode(request_bytes), Commitment.decode(commitment_bytes)), repeats
    )
    verify_us = time_us(lambda: (request.verify(), commitment.verify()), repeats)
    node_side_us = time_us(commit, repeats)
    inference_us = time_us(infer, repeats)
    protocol_us = encode_us + hash_us + sign_us + decode_us + verify_us
    twin: dict[str, float] = {}
    if name in zoo.INTEGER_KINDS:
        source = zoo.build(zoo.FLOAT_SOURCE[name], seed=1).module
        float_input = pixels_to_float(job_input)
        float_us = time_us(lambda: runtime.run(source, float_input), repeats)
        twin = {"float_inference_us": round(float_us, 1),
                "integer_over_float": round(inference_us / float_us, 2)}
    weights = [*built.module.parameters(), *built.module.buffers()]
    return {
        "model": name,
        "params": sum(p.numel() for p in weights),
        "input_bytes": len(request.input.data),
        "request_bytes": len(request_bytes),
        "commitment_bytes": len(commitment_bytes),
        "encode_us": round(encode_us, 1),
        "hash_us": round(hash_us, 1),
        "sign_us": round(sign_us, 1),
        "decode_us": round(decode_us, 1),
        "verify_us": round(verify_us, 1),
        "protocol_us": round(protocol_us, 1),
        "node_commit_us": round(node_side_us, 1),
        "inference_us": round(inference_us, 1),
        "protocol_over_inference": round(protocol_us / inference_us, 3),
        **twin,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (seconds, not minutes)")
    args = parser.parse_args()
    repeats = 30 if args.quick else 300
    torch.manual_seed(0)
    rows = [measure(name, repeats) for name in zoo.ZOO_NAMES]
    header = (
        f"{'model':<9} {'params':>8} {'req B':>7} {'encode':>7} {'hash':>7} {'sign':>7} "
        f"{'decode':>7} {'verify':>7} {'total':>8} {'infer':>8} {'ratio':>6} {'float':>8} "
        f"{'int/fl':>6}"
    )
    print("per-job protocol overhead (µs, median) vs inference (1 thread, batch 1)")
    print(header)
    for r in rows:
        print(
            f"{r['model']:<9} {r['params']:>8} {r['request_bytes']:>7} {r['encode_us']:>7} "
            f"{r['hash_us']:>7} {r['sign_us']:>7} {r['decode_us']:>7} {r['verify_us']:>7} "
            f"{r['protocol_us']:>8} {r['inference_us']:>8} {r['protocol_over_inference']:>6} "
            f"{r.get('float_inference_us', ''):>8} {r.get('integer_over_float', ''):>6}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "protocol",
                "quick": args.quick,
                "repeats": repeats,
                "load_average": [round(v, 2) for v in os.getloadavg()],
                "machine": {
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(),
                },
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
