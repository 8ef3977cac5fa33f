"""The demo's story on chain: a cheater slashed, honest nodes untouched, a false accuser
slashed, an equivocation slashed from a Merkle proof, an invalid zk proof slashed by EZKL's
generated verifier contract, a drand round accepted and a forged one refused.

Everything runs on a real anvil through ``AssayLedger``: nodes post Merkle roots of their
jobs, the client records each job by its leaf, the ledger's draws (from devnet beacon rounds
verified on chain) sample jobs and assign auditors and committees, and the assigned
validators answer. The zk case builds a real EZKL circuit, renders its Solidity verifier,
compiles it with the pinned solc and proves a real job (slow-marked: it takes a minute).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from web3.exceptions import ContractCustomError

from protocol.beacon import DevnetBeacon
from protocol.hashing import sha256
from protocol.messages import Verdict
from slashing import constants as c
from slashing.evm.chain import Chain, ContractRevert, decode_revert
from slashing.evm.ledger import EvmLedger, deploy_devnet, leaf
from slashing.evm.merkle import JobBatch, JobLeaf, proof_hash
from slashing.evm.points import g1_uncompressed, g2_uncompressed
from slashing.state import JobStatus, LedgerParams

P = replace(
    LedgerParams.default(), sample_ppm=500_000, committee_size=2, challenge_window=1,
    audit_window=1, vote_window=1, availability_window=1, unbonding_period=16, jail_period=3,
)
FEE = P.verification_fee + P.reward
STAKE = 20_000
MODEL = sha256(b"demo model")
QUICKNET: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent / "vectors" / "drand-quicknet.json").read_text()
)


@dataclass
class Demo:
    chain: Chain
    ledger: EvmLedger
    holder: DevnetBeacon
    operator: str
    client: str
    nodes: dict[str, str]
    validators: list[str]
    previous: bytes = b""
    jobs: int = 0

    def next_round(self) -> int:
        number = self.ledger.current_round() + 1
        revealed = self.holder.reveal(number)
        self.ledger.submit_devnet_round(revealed, self.operator, self.previous)
        self.ledger.advance(self.operator)
        self.previous = revealed.signature
        return number

    def run_jobs(self, node: str, n: int, proof: bytes = bytes(32)) -> list[bytes]:
        """n jobs committed by ``node`` in one batch and paid for by the client."""
        leaves = []
        for _ in range(n):
            self.jobs += 1
            tag = self.jobs.to_bytes(4, "big")
            leaves.append(JobLeaf(sha256(b"job" + tag), sha256(b"commitment" + tag),
                                  sha256(b"output" + tag), proof))
        batch = JobBatch.of(leaves)
        round_number = self.ledger.current_round()
        self.ledger.post_batch(round_number, batch, self.nodes[node])
        for index in range(n):
            self.ledger.record_job(leaf(self.nodes[node], round_number, batch, index), MODEL,
                                   FEE, self.client)
        return [item.job_id for item in batch.leaves]

    def sampled(self, job_ids: list[bytes]) -> bytes:
        chosen = [j for j in job_ids if (job := self.ledger.job(j)) and job.sampled]
        assert chosen, "the fixed beacon samples one of these jobs at p = 1/2"
        return chosen[0]

    def accuse(self, job_id: bytes, accuser: str) -> bytes:
        """``accuser`` reports that re-execution disagrees; the id of its evidence."""
        job = self.ledger.job(job_id)
        assert job is not None
        evidence = sha256(b"evidence" + job_id + accuser.encode())
        self.ledger.accuse(job_id, sha256(b"what re-execution gave"), job.recorded_round + 1,
                           evidence, accuser)
        return evidence

    def vote(self, dispute_id: bytes, verdict: Verdict) -> Any:
        """The committee the ledger drew votes ``verdict``; the dispute as it ends."""
        dispute = self.ledger.dispute(dispute_id)
        assert len(dispute.committee) == P.committee_size
        for member in dispute.committee:
            self.ledger.attest(dispute.job_id, verdict, dispute.drawn_round or 0, member)
        return self.ledger.dispute(dispute_id)

    def stake(self, address: str, role: str) -> Any:
        account = self.ledger.account(address)
        return account.node if role == c.NODE else account.validator


@pytest.fixture
def demo(chain: Chain) -> Demo:
    operator, client, honest, cheater, equivocator, prover, *validators = chain.accounts[:10]
    holder = DevnetBeacon(0xDE30)
    ledger = deploy_devnet(chain, P, holder.public_key, operator)
    nodes = {"honest": honest, "cheater": cheater, "equivocator": equivocator, "zk": prover}
    d = Demo(chain, ledger, holder, operator, client, nodes, validators)
    d.next_round()
    ledger.mint(client, 10**6, operator)
    for address in nodes.values():
        ledger.mint(address, 3 * STAKE, operator)
        ledger.bond(c.NODE, STAKE, address)
    for i, v in enumerate(validators):
        ledger.mint(v, 3 * STAKE, operator)
        ledger.register(sha256(b"demo validator %d" % i), v, operator)
        ledger.bond(c.VALIDATOR, STAKE, v)
    return d


def test_the_demo_story_on_chain(demo: Demo) -> None:
    ledger = demo.ledger
    honest_jobs = demo.run_jobs("honest", 6)
    cheats = demo.run_jobs("cheater", 6)
    demo.next_round()

    # Every assigned auditor answers: VALID for the honest node's jobs; for the cheater's,
    # re-execution disagrees and the auditor accuses. The committees drawn next round confirm
    # FRAUD: the cheater loses S for each, its auditors earn their share, clients are refunded.
    disputes, auditors = [], {}
    for job_id in honest_jobs + cheats:
        job = ledger.job(job_id)
        assert job is not None
        if job.audit_deadline is None:
            continue
        if job_id in cheats:
            auditors[job_id] = job.auditors[-1]
            disputes.append(demo.accuse(job_id, job.auditors[-1]))
        else:
            ledger.attest(job_id, Verdict.VALID, job.assigned_round or 0, job.auditors[-1])
    assert disputes, "the fixed beacon samples some of the cheater's six jobs at p = 1/2"
    paid = {a: ledger.account(a).balance for a in auditors.values()}
    demo.next_round()
    for dispute_id in disputes:
        assert demo.vote(dispute_id, Verdict.FRAUD).outcome is Verdict.FRAUD
    cheater = demo.stake(demo.nodes["cheater"], c.NODE)
    assert cheater.offences == len(disputes)
    assert cheater.amount == max(0, STAKE - len(disputes) * P.fraud_slash)
    assert all(ledger.account(a).balance > paid[a] for a in auditors.values())
    assert all(ledger.job(j).status is JobStatus.REFUNDED for j in auditors)  # type: ignore[union-attr]

    # A false accusation against the honest node's sampled job: the committee finds it VALID,
    # the accuser loses its slash and bond, and the honest node is paid for the trouble.
    honest_job = next(j for j in honest_jobs if ledger.job(j).sampled)  # type: ignore[union-attr]
    job = ledger.job(honest_job)
    assert job is not None
    accuser = next(v for v in demo.validators if v not in job.auditors)
    before = demo.stake(accuser, c.VALIDATOR)
    evidence = demo.accuse(honest_job, accuser)
    demo.next_round()
    assert demo.vote(evidence, Verdict.VALID).outcome is Verdict.VALID
    after = demo.stake(accuser, c.VALIDATOR)
    assert after.amount == before.amount - P.false_accusation_slash
    assert after.offences == before.offences + 1

    # An equivocation: two leaves for one job in one posted root, slashed on that alone.
    twice = JobLeaf(sha256(b"one job"), sha256(b"first answer"), sha256(b"first output"))
    again = JobLeaf(twice.job_id, sha256(b"second answer"), sha256(b"second output"))
    batch = JobBatch.of([twice, again])
    round_number = ledger.current_round()
    ledger.post_batch(round_number, batch, demo.nodes["equivocator"])
    reporter = demo.validators[-1]
    ledger.report_equivocation(leaf(demo.nodes["equivocator"], round_number, batch, 0),
                               leaf(demo.nodes["equivocator"], round_number, batch, 1), reporter)
    equivocator = demo.stake(demo.nodes["equivocator"], c.NODE)
    assert equivocator.slashed_out and equivocator.amount == STAKE - P.equivocation_slash

    # The honest node: never slashed, its jobs settle into its locked earnings.
    for _ in range(6):
        demo.next_round()
    honest = ledger.account(demo.nodes["honest"])
    assert honest.node.amount == STAKE and honest.node.offences == 0
    assert honest.node.jailed_until is None
    settled = [ledger.job(j) for j in honest_jobs]
    assert all(j is not None and j.status is JobStatus.SETTLED for j in settled)
    assert sum(amount for _, amount in honest.locked) == 6 * (FEE - P.verification_fee)
    # Conservation: with every job final and every dispute closed, what was minted is held by
    # the accounts (balance, stake, unbonding, locked earnings) or was burned
    minted, burned = ledger.totals()
    everyone = [demo.client, *demo.nodes.values(), *demo.validators]
    assert minted == 10**6 + (len(demo.nodes) + len(demo.validators)) * 3 * STAKE
    held = 0
    for address in everyone:
        account = ledger.account(address)
        held += account.balance + account.node.amount + account.validator.amount
        held += sum(e.amount for e in account.unbonding) + sum(a for _, a in account.locked)
    assert burned > 0 and held + burned == minted


def test_drand_round_accepted_and_forged_refused(chain: Chain) -> None:
    key = g2_uncompressed(bytes.fromhex(QUICKNET["public_key"]))
    genuine, other = QUICKNET["rounds"][0], QUICKNET["rounds"][1]
    beacon = chain.deploy("DrandBeacon", key, QUICKNET["genesis_time"], QUICKNET["period"],
                          genuine["round"], sender=chain.accounts[0])
    # Another round's signature offered for this round: a forgery
    forged = beacon.functions.submitRound(
        genuine["round"], g1_uncompressed(bytes.fromhex(other["signature"])))
    with pytest.raises(ContractRevert, match=r"^ForgedBeaconRound"):
        chain.transact(forged, chain.accounts[0])
    assert beacon.functions.roundCount().call() == 0
    chain.transact(beacon.functions.submitRound(
        genuine["round"], g1_uncompressed(bytes.fromhex(genuine["signature"]))), chain.accounts[0])
    assert beacon.functions.randomness(genuine["round"]).call().hex() == genuine["randomness"]


@pytest.mark.slow
def test_an_invalid_zk_proof_is_slashed_by_the_verifier_contract(
    demo: Demo, tmp_path: Path
) -> None:
    """A zk node commits to a tampered proof; a validator's INVALID_PROOF evidence is judged by
    EZKL's verifier contract and the node loses S. Evidence against a proof that holds costs
    its accuser the false-accusation slash, and starving the verifier of gas is refused."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("ezkl")
    from prover.zk import CircuitChoice, DevnetSrsWarning, ZkArtifactStore, ZkProver, small_mlp
    from slashing.evm.zk_verifier import (
        compile_verifier,
        deploy_verifier,
        proof_arguments,
        render_verifier,
    )

    tiny = {"image_size": 4, "in_channels": 1, "n_hidden1": 8, "n_hidden2": 8, "n_classes": 10}
    g = torch.Generator().manual_seed(3)
    inputs = [torch.rand((1, 1, 4, 4), generator=g) for _ in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DevnetSrsWarning)
        artifacts = ZkArtifactStore(tmp_path / "zk").setup(
            MODEL, small_mlp(11, tiny), inputs, choice=CircuitChoice(max_logrows=12))
    solidity = render_verifier(artifacts.path("vk.key"), artifacts.path("settings.json"),
                               artifacts.srs_path)
    verifier = deploy_verifier(demo.chain, compile_verifier(solidity), demo.operator)
    demo.ledger.register_zk_model(MODEL, verifier, demo.operator)

    proof = ZkProver(artifacts).prove(inputs[0])
    instances = proof_arguments(proof.instances)
    tampered = bytearray(proof.proof)
    tampered[100] ^= 1
    bad = bytes(tampered)
    (cheat,) = demo.run_jobs("zk", 1, proof_hash(bad, instances))
    (sound,) = demo.run_jobs("honest", 1, proof_hash(proof.proof, instances))
    demo.next_round()
    accuser, wrong = demo.validators[0], demo.validators[1]

    # Starved of gas, the verifier would revert on a sound proof: the ledger refuses the call
    starved = demo.ledger.contract.functions.accuseInvalidProof(
        sound, proof.proof, instances, sha256(b"starved"))
    with pytest.raises(ContractCustomError) as caught:
        starved.call({"from": wrong, "gas": 900_000})
    assert decode_revert(bytes.fromhex(str(caught.value.data)[2:])).error == "TooLittleGas"
    # A proof other than the committed one is refused by name
    with pytest.raises(ContractRevert, match=r"^WrongProof"):
        demo.ledger.accuse_invalid_proof(cheat, proof.proof, instances, sha256(b"e0"), accuser)

    demo.ledger.accuse_invalid_proof(cheat, bad, instances, sha256(b"e1"), accuser)
    node = demo.stake(demo.nodes["zk"], c.NODE)
    assert node.amount == STAKE - P.fraud_slash and node.offences == 1
    assert demo.ledger.job(cheat).status is JobStatus.REFUNDED  # type: ignore[union-attr]

    demo.ledger.accuse_invalid_proof(sound, proof.proof, instances, sha256(b"e2"), wrong)
    assert demo.stake(wrong, c.VALIDATOR).amount == STAKE - P.false_accusation_slash
    assert demo.stake(demo.nodes["honest"], c.NODE).amount == STAKE
