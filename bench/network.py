"""What the network costs: gossip throughput across processes, and the latency of the network path.

Two measurements, written to ``bench/results/network.json``:

* ``commitments_per_s``: signed commitments gossiped across ``--processes``
  (≥ 10) separate processes on loopback, each a Noise-only libp2p host running
  the real topic validation (decode, signature, staked publisher, replay
  guard). Two processes publish, in batches on ``commitment-batches`` as nodes
  do (``--no-batch``: one commitment per gossip message); every process stays
  until all have every commitment (or a deadline), and the rate is distinct
  commitments divided by the time from the first publish until the last
  process has every one.
* ``job_latency_ms``: a client sends an exact-mode MLP job over the libp2p job
  protocol to a node of a real devnet (ledger, node and validators as separate
  processes); the node runs it, journals it, records it on the ledger and
  queues the commitment for gossip before answering. ``baseline_latency_ms`` is the same model and
  inputs through :meth:`InferenceNode.handle` in this process; the difference
  is what the network path adds (since the node asks the ledger whether the
  client can pay before it computes, that includes one more ledger round
  trip). The bench's one client sends jobs back to back, faster than a node's
  default per-caller rate limit allows, so its devnet's nodes run without one.

``--quick`` uses fewer messages and jobs (under two minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocol.keys import SigningKey  # noqa: E402
from protocol.messages import Commitment  # noqa: E402


def bench_key(index: int) -> SigningKey:
    return SigningKey.derive(f"bench/network/{index}")


def commitment(key: SigningKey, n: int) -> Commitment:
    job = n.to_bytes(8, "big") + key.public.raw[:24]
    return Commitment(job_id=job, model_id=b"\x01" * 32, input_hash=b"\x02" * 32,
                      output_hash=b"\x03" * 32, node=key.public.raw,
                      chain_id=b"\x04" * 32).signed(key)


# -- gossip worker (one process) ------------------------------------------------------------
async def gossip_worker(index: int, ports: list[int], publishers: int, per_publisher: int,
                        start_at: float, out: Path, batch: bool = True) -> None:
    """One process: publish (if a publisher), count distinct commitments, stay until all are done.

    A process that left as soon as it alone had everything would cut its peers
    off from whatever it still had queued, which measures the bench, not gossip.
    """
    from protocol.net import validate, wire
    from protocol.net.host import BatchPublisher, PeerHost
    from protocol.net.identity import peer_address
    from protocol.net.ledger_client import LedgerClient

    key = bench_key(index)
    peers = [peer_address("127.0.0.1", p, bench_key(i).public.raw)
             for i, p in enumerate(ports) if i != index]
    host = PeerHost(key, f"/ip4/127.0.0.1/tcp/{ports[index]}", peers)
    staked = LedgerClient.__new__(LedgerClient)
    staked.nodes = frozenset(bench_key(i).public.raw for i in range(publishers))
    staked.validators = frozenset()
    staked.key = b"\x00" * 32
    staked.status = None  # no ledger: the chain id is not checked, every other rule is
    expected = publishers * per_publisher - (per_publisher if index < publishers else 0)
    received: set[bytes] = set()
    done = trio.Event()
    last = 0.0

    async def count(message: Commitment, sender: bytes) -> None:
        nonlocal last
        received.add(message.job_id)
        last = time.time()
        if len(received) >= expected:
            done.set()

    async def count_batch(batch: tuple[Commitment, ...], sender: bytes) -> None:
        for message in batch:
            await count(message, sender)

    host.subscribe(wire.TOPIC_COMMITMENTS, validate.commitments(staked), count)
    host.subscribe(wire.TOPIC_COMMITMENT_BATCHES, validate.commitment_batches(staked),
                   count_batch)
    batcher = BatchPublisher(host, wire.TOPIC_COMMITMENT_BATCHES)
    messages = [commitment(key, n).encode() for n in range(per_publisher)] \
        if index < publishers else []
    markers = [out.with_name(f"{i}.done") for i in range(len(ports))]
    async with host.running(), trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        await trio.sleep(max(0.0, start_at - time.time()))
        first = time.time()
        for data in messages:
            if batch:
                await batcher.submit(data)
            else:
                await host.publish(wire.TOPIC_COMMITMENTS, data)
        with trio.move_on_after(GOSSIP_DEADLINE_S):
            await done.wait()
        markers[index].touch()
        with trio.move_on_after(max(0.0, first + GOSSIP_DEADLINE_S - time.time())):
            while not all(m.exists() for m in markers):
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    out.write_text(json.dumps({"index": index, "received": len(received), "first": first,
                               "last": last, "peers": len(host.connected())}))


GOSSIP_DEADLINE_S = 150.0


def gossip_bench(processes: int, per_publisher: int, batch: bool = True) -> dict[str, float]:
    from assay.commands.devnet import free_ports

    publishers = 2
    ports = free_ports(processes)
    start_at = time.time() + 20
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        try:
            for i in range(processes):
                procs.append(subprocess.Popen(
                    [sys.executable, __file__, "--gossip-worker", str(i), "--ports",
                     ",".join(map(str, ports)), "--per-publisher", str(per_publisher),
                     "--start-at", str(start_at), "--out", f"{tmp}/{i}.json",
                     *([] if batch else ["--no-batch"])],
                    start_new_session=True, stderr=subprocess.DEVNULL,
                ))
            for p in procs:
                p.wait(timeout=240)
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, 9)
        results = [json.loads(Path(f"{tmp}/{i}.json").read_text()) for i in range(processes)]
    total = publishers * per_publisher
    receivers = [r for r in results if r["index"] >= publishers]
    complete = sum(r["received"] for r in receivers) / (total * len(receivers))
    elapsed = max(r["last"] for r in receivers) - min(r["first"] for r in results)
    return {"processes": processes, "published": total, "batched": batch,
            "delivered_fraction": complete, "gossip_seconds": elapsed,
            "commitments_per_s": total * complete / elapsed}


# -- job latency -----------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_bench(jobs: int) -> dict[str, float]:
    import torch

    from assay.commands import devnet
    from protocol.codec import Tensor
    from protocol.keystore import load_key
    from protocol.messages import JobRequest
    from protocol.net import wire
    from protocol.net.host import PeerHost
    from prover import zoo
    from prover.node import InferenceNode, load_registered_models
    from prover.registry import ModelRegistry

    with tempfile.TemporaryDirectory() as tmp:
        net = devnet.create(Path(tmp) / "net", nodes=1, validators=2, sample_ppm=100_000,
                            node_settings={"rate_limit": 1e9, "rate_burst": 10**9})
        try:
            devnet.up(net, timeout=150)
            node = net.member("node-0")
            directory = Path(net.directory)
            client = load_key(directory / "keys" / "node-0-client.json",
                              str(directory / "keys" / "node-0-client.pass"))
            model_id = bytes.fromhex(net.models["mlp"])
            example = zoo.build("mlp-int8", seed=0).example_input  # the devnet's mlp
            ledger = net.member("ledger")
            network_ms: list[float] = []
            requests: list[JobRequest] = []

            async def run() -> None:
                host = PeerHost(SigningKey.generate(), "/ip4/127.0.0.1/tcp/0",
                                [node.address, ledger.address])
                async with host.running():
                    with trio.fail_after(20):
                        while not all(bytes.fromhex(peer.pubkey) in host.connected()
                                      for peer in (node, ledger)):
                            await trio.sleep(0.05)
                    status = await host.request(bytes.fromhex(ledger.pubkey),
                                                wire.PROTOCOL_LEDGER,
                                                wire.encode_map({"op": "status"}), 10)
                    requests[:] = [
                        JobRequest(model_id=model_id, input=Tensor.from_torch(example(i)),
                                   client=client.public.raw, node=bytes.fromhex(node.pubkey),
                                   nonce=i, fee=110, expiry_round=status["round"] + 10**6,
                                   chain_id=status["chain_id"]).signed(client)
                        for i in range(jobs)
                    ]
                    for request in requests:
                        started = time.perf_counter()
                        await host.request(bytes.fromhex(node.pubkey), wire.PROTOCOL_JOB,
                                           request.encode(), 30)
                        network_ms.append((time.perf_counter() - started) * 1000)

            trio.run(run)
            registry = ModelRegistry(directory / "registry")
            node_key = load_key(directory / "keys" / "node-0.json",
                                str(directory / "keys" / "node-0.pass"))
            local = InferenceNode(node_key, load_registered_models(registry))
            baseline_ms = []
            torch.set_num_threads(1)
            for request in requests:
                started = time.perf_counter()
                local.handle(request)
                baseline_ms.append((time.perf_counter() - started) * 1000)
        finally:
            devnet.down(net)
    warm = network_ms[2:] or network_ms
    return {
        "jobs": jobs,
        "job_latency_ms": {"p50": statistics.median(warm), "p99": percentile(warm, 0.99)},
        "baseline_latency_ms": {"p50": statistics.median(baseline_ms),
                                "p99": percentile(baseline_ms, 0.99)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--processes", type=int, default=10)
    parser.add_argument("--gossip-worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ports", default="", help=argparse.SUPPRESS)
    parser.add_argument("--per-publisher", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    parser.add_argument("--no-batch", action="store_true",
                        help="publish one commitment per gossip message (the unbatched topic)")
    args = parser.parse_args()
    if args.gossip_worker is not None:
        ports = [int(p) for p in args.ports.split(",")]
        trio.run(gossip_worker, args.gossip_worker, ports, 2, args.per_publisher,
                 args.start_at, Path(args.out), not args.no_batch)
        return
    per_publisher, jobs = (300, 40) if args.quick else (600, 200)
    started = time.time()
    gossip = gossip_bench(max(10, args.processes), per_publisher, not args.no_batch)
    latency = latency_bench(jobs)
    result = {
        "quick": args.quick,
        "commitments_per_s": round(gossip["commitments_per_s"], 1),
        "job_latency_ms": {k: round(v, 3) for k, v in latency["job_latency_ms"].items()},
        "baseline_latency_ms": {k: round(v, 3) for k, v in latency["baseline_latency_ms"].items()},
        "gossip": {k: v if isinstance(v, bool) else round(v, 4) for k, v in gossip.items()},
        "jobs": latency["jobs"],
        "wall_seconds": round(time.time() - started, 1),
    }
    out = ROOT / "bench" / "results" / "network.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'commitments/s gossiped across ' + str(gossip['processes']) + ' processes':<48}"
          f"{result['commitments_per_s']:>10}")
    print(f"{'delivered fraction':<48}{gossip['delivered_fraction']:>10.4f}")
    for name in ("job_latency_ms", "baseline_latency_ms"):
        for q in ("p50", "p99"):
            print(f"{name + ' ' + q:<48}{result[name][q]:>10}")  # type: ignore[index]
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
