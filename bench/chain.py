"""Settlement on an EVM chain: gas per job, attestation, dispute and beacon round on anvil.

Every figure is the ``gasUsed`` of real transactions to the contracts in
``contracts/`` on a local anvil (Prague, EIP-2537), compiled by the pinned solc:

* ``gas_per_job.N``: a node's ``postBatch`` of one Merkle root over N job
  commitments, divided by N (N = 1, 64, 1 024); the goal is ≤ 100 at 1 024;
* ``gas_per_recorded_job``: a client's ``recordJob`` (its leaf proven against
  the root, the fee escrowed, the job queued for its sample draw), median;
* ``gas_per_attestation``: the assigned auditor's VALID ``attest``, median;
* ``gas_per_dispute``: one dispute end to end — the accusation, the beacon
  round whose ``advance`` draws the committee, and every member's vote (the
  last one resolves it: slash, shares, refund);
* ``gas_per_beacon_round``: a devnet round verified by ``DevnetBeacon``
  (hash-to-G2 and a pairing check on the precompiles) plus an ``advance`` with
  nothing due; ``gas_per_drand_round``: a real quicknet round verified by
  ``DrandBeacon``;
* ``jobs_per_s``: jobs recorded per second, end to end through JSON-RPC — on
  the chain (batches of 64 posted and recorded, rounds advanced) next to the
  SQLite ledger (``Ledger.append`` of the same honest workload's events) in the
  same run.

* ``devnet_jobs_per_s.sqlite`` and ``devnet_jobs_per_s.chain``: the whole
  devnet (``assay devnet up``, ledger, two nodes and two validators as separate
  processes) answering exact-mode MLP jobs sent back to back over libp2p by
  each node's client at once, jobs answered per second (a node records each
  job on the ledger service before it answers) with the ledger on SQLite and
  with ``--chain`` (settled on anvil), in the same run;
  ``devnet_jobs_per_s.chain_settled``: the chain devnet's jobs found on chain
  per second, from the first send until the last of them is on chain (the
  ledger service posts a round's jobs when the round closes);
  ``devnet_jobs_on_chain``: how many of the jobs sent reached the chain.

* ``gas_per_zk_verification``: EZKL's generated Halo2 verifier for a small
  registered zk model (compiled by the pinned solc) checking a real proof, as
  a transaction; ``gas_per_invalid_proof_slash``: the ledger's
  ``accuseInvalidProof`` that has the verifier reject a tampered proof and
  slashes the node.

* ``contract_bytes.NAME``: the deployed code of each contract the devnet
  deploys, read back with ``eth_getCode`` (EIP-170 allows 24 576 bytes; anvil
  enforces it).

    python bench/chain.py [--quick]

Prints a table and writes bench/results/chain.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from web3 import Web3

from protocol.beacon import DevnetBeacon
from protocol.hashing import sha256
from protocol.messages import Verdict
from slashing import Ledger
from slashing import constants as c
from slashing.events import RecordJob
from slashing.evm.anvil import Anvil
from slashing.evm.chain import Chain
from slashing.evm.ledger import EvmLedger, deploy_devnet, leaf
from slashing.evm.merkle import JobBatch, JobLeaf
from slashing.evm.points import g1_uncompressed, g2_uncompressed
from slashing.state import LedgerParams
from slashing.workload import Workload, events

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "chain.json"
QUICKNET = json.loads((ROOT / "tests" / "vectors" / "drand-quicknet.json").read_text())
PARAMS = replace(
    LedgerParams.default(), sample_ppm=500_000, committee_size=2, challenge_window=1,
    audit_window=1, vote_window=1, availability_window=1, unbonding_period=16, jail_period=3,
)
"""The differential test's parameters: p = 1/2, so a few jobs reach audits and disputes."""
FEE = PARAMS.verification_fee + PARAMS.reward
MODEL = sha256(b"bench model")
BATCH_SIZES = (1, 64, 1024)
VALIDATORS = 5


class Network:
    """A ledger on anvil with a node, a zk node, five validators and a client, and its beacon."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.operator, self.node, self.zk_node, self.client, *self.validators = (
            chain.accounts[: 4 + VALIDATORS]
        )
        self.holder = DevnetBeacon(0xC4A1)
        self.ledger: EvmLedger = deploy_devnet(chain, PARAMS, self.holder.public_key,
                                               self.operator)
        self.previous = b""
        self.next_round()
        for account in (self.node, self.zk_node, self.client, *self.validators):
            self.ledger.mint(account, 10**12, self.operator)
        self.ledger.bond(c.NODE, 10**11, self.node)
        self.ledger.bond(c.NODE, 10**11, self.zk_node)
        for i, v in enumerate(self.validators):
            self.ledger.register(sha256(b"validator %d" % i), v, self.operator)
            self.ledger.bond(c.VALIDATOR, 50_000, v)
        self.jobs = 0

    def next_round(self) -> tuple[int, int]:
        """(gas to verify the round, gas to advance the ledger through it)."""
        number = self.ledger.current_round() + 1
        revealed = self.holder.reveal(number)
        verified = self.ledger.submit_devnet_round(revealed, self.operator, self.previous)
        advanced = self.ledger.advance(self.operator)
        self.previous = revealed.signature
        return verified["gasUsed"], advanced["gasUsed"]

    def batch(self, n: int) -> JobBatch:
        leaves = []
        for _ in range(n):
            self.jobs += 1
            tag = self.jobs.to_bytes(8, "big")
            leaves.append(JobLeaf(sha256(b"job" + tag), sha256(b"commitment" + tag),
                                  sha256(b"output" + tag)))
        return JobBatch.of(leaves)

    def post(self, n: int) -> tuple[int, JobBatch, int]:
        batch = self.batch(n)
        round_number = self.ledger.current_round()
        receipt = self.ledger.post_batch(round_number, batch, self.node)
        return round_number, batch, receipt["gasUsed"]

    def record(self, round_number: int, batch: JobBatch, index: int) -> int:
        receipt = self.ledger.record_job(leaf(self.node, round_number, batch, index), MODEL, FEE,
                                         self.client)
        return int(receipt["gasUsed"])


def gas_per_job(net: Network) -> dict[str, float]:
    out = {}
    for n in BATCH_SIZES:
        _, _, gas = net.post(n)
        out[str(n)] = round(gas / n, 1)
        net.next_round()
    return out


def audits_and_dispute(net: Network, jobs: int) -> dict[str, Any]:
    """Record jobs, attest the sampled ones as their auditors, and dispute one end to end."""
    round_number, batch, _ = net.post(jobs)
    recorded = [net.record(round_number, batch, i) for i in range(jobs)]
    net.next_round()
    attestations = []
    disputed: bytes | None = None
    for item in batch.leaves:
        job = net.ledger.job(item.job_id)
        assert job is not None
        if job.audit_deadline is None:
            continue
        if disputed is None:
            disputed = item.job_id
            continue  # left for the dispute: its auditor accuses instead of attesting
        receipt = net.ledger.attest(item.job_id, Verdict.VALID, job.assigned_round or 0,
                                    job.auditors[-1])
        attestations.append(receipt["gasUsed"])
    assert disputed is not None, "no job of the batch was sampled at p = 1/2"
    job = net.ledger.job(disputed)
    assert job is not None
    accuser = job.auditors[-1]
    accused = net.ledger.accuse(disputed, sha256(b"what re-execution gave"),
                                job.recorded_round + 1, sha256(b"evidence" + disputed), accuser)
    _, draw = net.next_round()
    dispute = net.ledger.dispute(sha256(b"evidence" + disputed))
    votes = [net.ledger.attest(disputed, Verdict.FRAUD, dispute.drawn_round or 0, m)["gasUsed"]
             for m in dispute.committee]
    resolved = net.ledger.dispute(sha256(b"evidence" + disputed))
    assert resolved.outcome is Verdict.FRAUD
    return {
        "gas_per_recorded_job": statistics.median(recorded),
        "gas_per_attestation": statistics.median(attestations) if attestations else None,
        "gas_per_dispute": accused["gasUsed"] + draw + sum(votes),
        "gas_dispute_parts": {"accuse": accused["gasUsed"], "advance_with_draw": draw,
                              "votes": votes},
    }


def beacon_rounds(net: Network, rounds: int) -> dict[str, Any]:
    verified, advanced = zip(*(net.next_round() for _ in range(rounds)), strict=True)
    key = g2_uncompressed(bytes.fromhex(QUICKNET["public_key"]))
    vector = QUICKNET["rounds"][0]
    drand = net.chain.deploy("DrandBeacon", key, QUICKNET["genesis_time"], QUICKNET["period"],
                             vector["round"], sender=net.operator)
    receipt = net.chain.transact(
        drand.functions.submitRound(vector["round"],
                                    g1_uncompressed(bytes.fromhex(vector["signature"]))),
        net.operator)
    return {
        "gas_per_beacon_round": statistics.median(verified) + statistics.median(advanced),
        "gas_devnet_round_verify": statistics.median(verified),
        "gas_empty_advance": statistics.median(advanced),
        "gas_per_drand_round": receipt["gasUsed"],
    }


def zk_verification(net: Network) -> dict[str, Any]:
    import warnings

    import torch

    from prover.zk import CircuitChoice, DevnetSrsWarning, ZkArtifactStore, ZkProver, small_mlp
    from slashing.evm.merkle import proof_hash
    from slashing.evm.zk_verifier import (
        compile_verifier,
        deploy_verifier,
        proof_arguments,
        render_verifier,
    )

    tiny = {"image_size": 4, "in_channels": 1, "n_hidden1": 8, "n_hidden2": 8, "n_classes": 10}
    g = torch.Generator().manual_seed(3)
    inputs = [torch.rand((1, 1, 4, 4), generator=g) for _ in range(4)]
    model_id = sha256(b"bench zk model")
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DevnetSrsWarning)
        artifacts = ZkArtifactStore(Path(tmp)).setup(
            model_id, small_mlp(11, tiny), inputs, choice=CircuitChoice(max_logrows=12))
        solidity = render_verifier(artifacts.path("vk.key"), artifacts.path("settings.json"),
                                   artifacts.srs_path)
        proof = ZkProver(artifacts).prove(inputs[0])
    artifact = compile_verifier(solidity)
    address = deploy_verifier(net.chain, artifact, net.operator)
    verifier = net.chain.w3.eth.contract(address=Web3.to_checksum_address(address),
                                         abi=artifact.abi)
    instances = proof_arguments(proof.instances)
    verified = net.chain.transact(verifier.functions.verifyProof(proof.proof, instances),
                                  net.operator)
    net.ledger.register_zk_model(model_id, address, net.operator)
    tampered = bytearray(proof.proof)
    tampered[100] ^= 1
    batch = JobBatch.of([JobLeaf(sha256(b"zk job"), sha256(b"zk commitment"),
                                 sha256(b"zk output"), proof_hash(bytes(tampered), instances))])
    round_number = net.ledger.current_round()
    net.ledger.post_batch(round_number, batch, net.zk_node)
    net.ledger.record_job(leaf(net.zk_node, round_number, batch, 0), model_id, FEE, net.client)
    net.next_round()
    slashed = net.ledger.accuse_invalid_proof(batch.leaves[0].job_id, bytes(tampered), instances,
                                              sha256(b"zk evidence"), net.validators[0])
    return {
        "gas_per_zk_verification": verified["gasUsed"],
        "gas_per_invalid_proof_slash": slashed["gasUsed"],
        "zk_verifier_bytes": artifact.deployed_size,
    }


def contract_bytes(net: Network) -> dict[str, int]:
    """The deployed code of each contract the devnet deploys (``eth_getCode``), in bytes:
    EIP-170 allows at most 24 576."""
    rounds = net.chain.call(net.ledger.contract.functions.rounds())
    deployed = {"AssayLedger": net.ledger.contract.address, "LedgerRounds": rounds,
                "DevnetBeacon": net.ledger.beacon.address}
    return {name: len(net.chain.w3.eth.get_code(address)) for name, address in deployed.items()}


def chain_jobs_per_s(net: Network, batches: int, size: int) -> float:
    started = time.perf_counter()
    for _ in range(batches):
        round_number, batch, _ = net.post(size)
        for index in range(size):
            net.record(round_number, batch, index)
        net.next_round()
    return batches * size / (time.perf_counter() - started)


def sqlite_jobs_per_s(jobs: int) -> float:
    workload = Workload(jobs=jobs)
    stream = list(events(workload))
    recorded = sum(isinstance(e, RecordJob) for e in stream)
    with tempfile.TemporaryDirectory() as tmp, Ledger.open(Path(tmp) / "ledger.db") as ledger:
        started = time.perf_counter()
        for event in stream:
            ledger.append(event)
        elapsed = time.perf_counter() - started
    return recorded / elapsed


def devnet_jobs_per_s(chain: bool, jobs_per_node: int) -> dict[str, Any]:
    """The devnet's jobs per second with its ledger on SQLite or (``chain``) on anvil."""
    import trio

    from assay.commands import devnet
    from protocol.codec import Tensor
    from protocol.keys import SigningKey
    from protocol.keystore import load_key
    from protocol.messages import JobRequest
    from protocol.net import wire
    from protocol.net.host import PeerHost
    from prover import zoo

    with tempfile.TemporaryDirectory() as tmp:
        net = devnet.create(Path(tmp) / "net", nodes=2, validators=2, sample_ppm=100_000,
                            zk=False, chain=chain,
                            node_settings={"rate_limit": 1e9, "rate_burst": 10**9})
        try:
            devnet.up(net, timeout=180)
            directory = Path(net.directory)
            nodes, ledger = net.by_role("node"), net.member("ledger")
            model_id = bytes.fromhex(net.models["mlp"])
            example = zoo.build("mlp-int8", seed=0).example_input
            sent: list[bytes] = []
            answered = 0

            async def run() -> float:
                nonlocal answered
                host = PeerHost(SigningKey.generate(), "/ip4/127.0.0.1/tcp/0",
                                [m.address for m in (*nodes, ledger)])
                async with host.running():
                    with trio.fail_after(30):
                        while not all(bytes.fromhex(m.pubkey) in host.connected()
                                      for m in (*nodes, ledger)):
                            await trio.sleep(0.05)
                    status = await host.request(bytes.fromhex(ledger.pubkey),
                                                wire.PROTOCOL_LEDGER,
                                                wire.encode_map({"op": "status"}), 10)

                    async def drive(node: Any) -> None:
                        nonlocal answered
                        client = load_key(directory / "keys" / f"{node.name}-client.json",
                                          str(directory / "keys" / f"{node.name}-client.pass"))
                        for i in range(jobs_per_node):
                            request = JobRequest(
                                model_id=model_id, input=Tensor.from_torch(example(i)),
                                client=client.public.raw, node=bytes.fromhex(node.pubkey),
                                nonce=i, fee=110, expiry_round=status["round"] + 10**6,
                                chain_id=status["chain_id"]).signed(client)
                            await host.request(bytes.fromhex(node.pubkey), wire.PROTOCOL_JOB,
                                               request.encode(), 30)
                            sent.append(request.job_id)
                            answered += 1

                    started = time.perf_counter()
                    async with trio.open_nursery() as nursery:
                        for node in nodes:
                            nursery.start_soon(drive, node)
                    return started

            started = trio.run(run)
            elapsed = time.perf_counter() - started
            result: dict[str, Any] = {"jobs_per_s": answered / elapsed, "jobs": answered}
            if chain:
                result.update(_settled_on_chain(directory, sent, started))
        finally:
            devnet.down(net)
    return result


def _settled_on_chain(directory: Path, job_ids: list[bytes], started: float,
                      timeout: float = 300) -> dict[str, Any]:
    """How many of ``job_ids`` the chain holds, waiting for them, and at what rate."""
    from protocol.config import LedgerConfig, load

    config = load(LedgerConfig, directory / "ledger.toml")
    chain = Chain(config.rpc_url)
    ledger = EvmLedger(chain, chain.contract("AssayLedger", config.ledger_contract),
                       chain.contract("DevnetBeacon", config.beacon_contract))
    waiting = list(job_ids)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        waiting = [j for j in waiting if ledger.job(j) is None]
        if waiting:
            time.sleep(0.5)
    elapsed = time.perf_counter() - started
    on_chain = len(job_ids) - len(waiting)
    return {"settled_per_s": on_chain / elapsed, "on_chain": on_chain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and jobs")
    args = parser.parse_args()
    load_before = os.getloadavg()
    started = time.perf_counter()
    with Anvil() as node:
        net = Network(Chain(node.url))
        report: dict[str, Any] = {"contract_bytes": contract_bytes(net),
                                  "gas_per_job": gas_per_job(net)}
        report.update(audits_and_dispute(net, 16 if args.quick else 64))
        report.update(beacon_rounds(net, 5 if args.quick else 20))
        report.update(zk_verification(net))
        batches = 2 if args.quick else 8
        chain_rate = chain_jobs_per_s(net, batches, 64)
    sqlite_rate = sqlite_jobs_per_s(batches * 64)
    report["jobs_per_s"] = {"chain": round(chain_rate, 1), "sqlite": round(sqlite_rate, 1)}
    jobs_per_node = 20 if args.quick else 150
    on_sqlite = devnet_jobs_per_s(False, jobs_per_node)
    on_chain = devnet_jobs_per_s(True, jobs_per_node)
    report["devnet_jobs_per_s"] = {
        "sqlite": round(on_sqlite["jobs_per_s"], 1), "chain": round(on_chain["jobs_per_s"], 1),
        "chain_settled": round(on_chain["settled_per_s"], 1),
    }
    report["devnet_jobs_sent"] = {"sqlite": on_sqlite["jobs"], "chain": on_chain["jobs"]}
    report["devnet_jobs_on_chain"] = on_chain["on_chain"]
    report = {
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs",
        "quick": args.quick,
        "load_average_start": [round(v, 2) for v in load_before],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "seconds": round(time.perf_counter() - started, 1),
        **report,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)


def print_table(report: dict[str, Any]) -> None:
    rows = [(f"contract_bytes.{n}", v) for n, v in report["contract_bytes"].items()]
    rows += [(f"gas_per_job.{n}", v) for n, v in report["gas_per_job"].items()]
    rows += [(k, report[k]) for k in ("gas_per_recorded_job", "gas_per_attestation",
                                      "gas_per_dispute", "gas_per_beacon_round",
                                      "gas_per_drand_round", "gas_per_zk_verification",
                                      "gas_per_invalid_proof_slash")]
    rows += [(f"jobs_per_s.{k}", v) for k, v in report["jobs_per_s"].items()]
    rows += [(f"devnet_jobs_per_s.{k}", v) for k, v in report["devnet_jobs_per_s"].items()]
    rows += [("devnet_jobs_on_chain", report["devnet_jobs_on_chain"])]
    for name, value in rows:
        print(f"{name:<34}{'not measured' if value is None else value:>14}")
    print(f"load {report['load_average_start']} -> {report['load_average_end']}, "
          f"{report['seconds']} s")


if __name__ == "__main__":
    main()
