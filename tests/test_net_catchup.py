"""Validators learn their duties from the ledger: gossip is not the way in.

Jobs are recorded on a real ledger service while no validator runs and nothing
is gossiped; the ledger assigns each sampled job its auditor, and a validator
started afterwards must still find every job assigned to it (``duties``),
take its request from the ledger's record (``job_data``: an exact job needs
nothing from the node), re-execute and attest.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
import trio

from protocol import codec
from protocol.codec import Tensor
from protocol.config import ValidatorConfig
from protocol.keys import SigningKey
from protocol.keystore import SigningJournal
from protocol.messages import Commitment, JobRequest, Verdict
from protocol.net import validate, wire
from protocol.net.gossip import GossipValidator
from protocol.net.host import PeerHost
from protocol.net.identity import peer_id_of
from protocol.net.ledger_client import LedgerClient
from protocol.net.metrics import Metrics
from prover import zoo
from prover.node import InferenceNode
from slashing.transactions import transaction_signer
from tests.net_helpers import connected, free_port, ledger_service
from verifier.service import ValidatorService
from verifier.validator import Validator

NODE = SigningKey.derive("catchup/node")
CLIENT = SigningKey.derive("catchup/client")
VALIDATOR = SigningKey.derive("catchup/validator")
MODEL_ID = b"\x07" * 32
JOBS = 16


def test_a_validator_started_after_the_jobs_audits_every_sampled_one(tmp_path: Path) -> None:
    torch.manual_seed(0)
    built = zoo.build("mlp", seed=0)
    node = InferenceNode(NODE, {MODEL_ID: built.module})
    recorded: list[Commitment] = []

    async def main() -> None:
        # rounds long enough that the jobs are still open (challenge window: 4 rounds)
        ledger, address = ledger_service(tmp_path, [NODE.public.raw, CLIENT.public.raw,
                                                    VALIDATOR.public.raw], round_seconds=2.0)
        node_host = PeerHost(NODE, f"/ip4/127.0.0.1/tcp/{free_port()}", [address])
        node_ledger = LedgerClient(node_host, address, transaction_signer(NODE))
        async with trio.open_nursery() as nursery:
            await nursery.start(ledger.run)
            async with node_host.running():
                await connected(node_host, node_ledger.key)
                await node_ledger.transact("bond", role="node", amount=100_000)
                # the validator is bonded but not running while the jobs are recorded
                bonder = PeerHost(VALIDATOR, f"/ip4/127.0.0.1/tcp/{free_port()}", [address])
                async with bonder.running():
                    await connected(bonder, node_ledger.key)
                    await LedgerClient(bonder, address, transaction_signer(VALIDATOR)).transact(
                        "bond", role="validator", amount=20_000)
                status = await node_ledger.call("status")
                for n in range(JOBS):
                    request = JobRequest(
                        model_id=MODEL_ID, input=Tensor.from_torch(built.example_input(n)),
                        client=CLIENT.public.raw, node=NODE.public.raw, nonce=n, fee=110,
                        expiry_round=status["round"] + 100, chain_id=status["chain_id"],
                    ).signed(CLIENT)
                    result = node.handle(request)
                    await node_ledger.call("record_job", request=request.encode(),
                                           commitment=result.commitment.encode())
                    recorded.append(result.commitment)
                last = await node_ledger.call("job", job_id=recorded[-1].job_id)
                with trio.fail_after(10):  # the sample rounds of every job are revealed
                    while (await node_ledger.call("status"))["round"] < last["sample_round"]:
                        await trio.sleep(0.1)

                metrics = Metrics()
                host = PeerHost(VALIDATOR, f"/ip4/127.0.0.1/tcp/{free_port()}", [address],
                                metrics)
                service = ValidatorService(
                    ValidatorConfig(ledger=address), Validator(VALIDATOR, {MODEL_ID: built.module}),
                    host, SigningJournal(tmp_path / "validator" / "journal.sqlite"), metrics,
                    transaction_signer(VALIDATOR),
                )
                shutdown = trio.Event()
                nursery.start_soon(service.run, shutdown)
                want = []
                for commitment in recorded:
                    job = await node_ledger.call("job", job_id=commitment.job_id)
                    if job["sampled"]:
                        assert job["auditor"] == VALIDATOR.public.raw  # the only validator
                        want.append(commitment.job_id)
                assert want, "no job sampled at 50 %: rerun"
                with trio.fail_after(60):
                    while True:
                        done = [(await node_ledger.call("job", job_id=j))["attested_by"]
                                for j in want]
                        if all(VALIDATOR.public.raw in voters for voters in done):
                            break
                        await trio.sleep(0.2)
                assert metrics.duties.labels("audit")._value.get() == len(want)
                assert metrics.verified.labels(str(Verdict.VALID))._value.get() == len(want)
                shutdown.set()
            nursery.cancel_scope.cancel()
        ledger.close()

    trio.run(main)


def test_jobs_since_pages_through_the_log_and_refuses_bad_cursors(tmp_path: Path) -> None:
    async def main() -> None:
        ledger, address = ledger_service(tmp_path, [NODE.public.raw, CLIENT.public.raw],
                                         round_seconds=60)
        host = PeerHost(NODE, f"/ip4/127.0.0.1/tcp/{free_port()}", [address])
        client = LedgerClient(host, address)
        async with trio.open_nursery() as nursery:
            await nursery.start(ledger.run)
            async with host.running():
                await connected(host, client.key)
                first = await client.call("jobs_since", after=0)
                assert first["jobs"] == [] and first["cursor"] == first["length"]
                for bad in (-1, "0", first["length"] + 1, True):
                    try:
                        await client.call("jobs_since", after=bad)
                    except wire.RemoteError:
                        continue
                    raise AssertionError(f"after={bad!r} was accepted")
                nursery.cancel_scope.cancel()
        ledger.close()

    trio.run(main)


def _fake(data: bytes, publisher: SigningKey) -> object:
    return SimpleNamespace(data=data, from_id=peer_id_of(publisher.public.raw).to_bytes())


def test_a_commitment_batch_is_accepted_whole_or_refused_whole() -> None:
    staked = LedgerClient.__new__(LedgerClient)
    staked.nodes = frozenset({NODE.public.raw})
    staked.validators = frozenset()
    staked.key = b"\x00" * 32
    staked.status = SimpleNamespace(chain_id=b"\x0c" * 32)
    metrics = Metrics()
    check = GossipValidator(wire.TOPIC_COMMITMENT_BATCHES, validate.commitment_batches(staked),
                            metrics)

    def commitment(n: int, key: SigningKey = NODE, chain_id: bytes = b"\x0c" * 32) -> bytes:
        return Commitment(job_id=bytes([n]) * 32, model_id=MODEL_ID, input_hash=b"\x01" * 32,
                          output_hash=b"\x02" * 32, node=key.public.raw,
                          chain_id=chain_id).signed(key).encode()

    good = codec.encode([commitment(n) for n in range(3)])
    assert check.libp2p_validator(None, _fake(good, NODE)) is True  # type: ignore[arg-type]
    assert len(check.take(good)) == 3
    for bad in (
        codec.encode([commitment(5), commitment(6, CLIENT)]),  # one unstaked signer
        codec.encode([commitment(7), b"\x00"]),  # one malformed
        codec.encode([commitment(9), commitment(10, chain_id=b"\x0d" * 32)]),  # another network
        codec.encode([]),  # empty
        codec.encode([commitment(n) for n in range(wire.MAX_BATCH + 1)]),  # too many
        commitment(8),  # a single commitment is not a batch
    ):
        assert check.libp2p_validator(None, _fake(bad, NODE)) is False  # type: ignore[arg-type]
    assert metrics.dropped_total() == 6
