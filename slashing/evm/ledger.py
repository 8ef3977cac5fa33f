"""The ledger contracts on a chain: deployed from the same genesis as the Python ledger.

:func:`deploy_devnet` puts the devnet's chained BLS beacon and :class:`AssayLedger`
(with ``LedgerRounds``, the part of its rules it runs by delegatecall) with
:class:`slashing.state.LedgerParams` on a chain; :class:`EvmLedger` sends the ledger's
transactions from an account and reads its state back in the Python rules' own
terms (:class:`slashing.state.Stake`, :class:`slashing.state.Unbonding`,
:class:`slashing.state.JobStatus`, :class:`protocol.messages.Verdict`), so the
two backends can be compared field for field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from web3 import Web3
from web3.contract import Contract
from web3.types import TxReceipt

from protocol.beacon import GENESIS_SEED, BeaconRound
from protocol.messages import Verdict
from slashing import constants as c
from slashing.evm.chain import Chain, Sender
from slashing.evm.merkle import JobBatch
from slashing.evm.points import g1_uncompressed, g2_uncompressed
from slashing.state import JobStatus, LedgerParams, Stake, Unbonding

ROLES = {c.NODE: 0, c.VALIDATOR: 1}
ROLE_NAMES = {v: k for k, v in ROLES.items()}
VERDICTS = {Verdict.VALID: 1, Verdict.FRAUD: 2, Verdict.INCONCLUSIVE: 3}
VERDICT_OF = {v: k for k, v in VERDICTS.items()}
STATUS_OF = {1: JobStatus.PENDING, 2: JobStatus.SETTLED, 3: JobStatus.REFUNDED}
NONE = 2**64 - 1
"""The contract's unset optional round."""
ZERO_ADDRESS = "0x" + "00" * 20


@dataclass(frozen=True)
class ChainAccount:
    """An account as the contract holds it, in the Python ledger's records."""

    balance: int
    known: bool
    key: bytes
    node: Stake
    validator: Stake
    unbonding: tuple[Unbonding, ...]
    locked: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ChainJob:
    """A job as the contract holds it; accounts are chain addresses, unset values None."""

    client: str
    node: str
    fee: int
    recorded_round: int
    status: JobStatus
    sampled: bool
    zk: bool
    equivocated: bool
    audit_pending: bool
    verifier: str | None
    closed_round: int | None
    availability_reporter: str | None
    unavailable_since: int | None
    served_round: int | None
    assigned_round: int | None
    audit_deadline: int | None
    commitment_id: bytes
    output_hash: bytes
    model_id: bytes
    proof_hash: bytes
    dispute: bytes | None
    auditors: tuple[str, ...]
    accusers: tuple[str, ...]
    attestations: tuple[tuple[str, Verdict], ...]


@dataclass(frozen=True)
class ChainDispute:
    job_id: bytes
    node: str
    opened_round: int
    bond: int
    draws: int
    drawn_round: int | None
    closed_round: int | None
    outcome: Verdict | None
    accusers: tuple[str, ...]
    committee: tuple[str, ...]
    votes: tuple[tuple[str, Verdict], ...]


def params_tuple(params: LedgerParams) -> tuple[int, ...]:
    """``LedgerParams`` as the contract's ``Params`` struct (the same fields, in order)."""
    return dataclasses.astuple(params)


def _stake(raw: Any) -> Stake:
    amount, jailed_until, offences, slashed_out = raw
    return Stake(amount=amount, slashed_out=slashed_out,
                 jailed_until=jailed_until or None, offences=offences)


def _optional_round(value: int) -> int | None:
    return None if value == NONE else value


def _optional_address(value: str) -> str | None:
    return None if int(value, 16) == 0 else value


def deploy_devnet(chain: Chain, params: LedgerParams, beacon_public_key: bytes,
                  sender: Sender) -> EvmLedger:
    """The devnet beacon (its G1 key) and the ledger, deployed by ``sender``, the operator.

    The ledger is two contracts, each under EIP-170's limit on deployed code:
    ``LedgerRounds`` (the beacon-round processing, audits and disputes), deployed first,
    and ``AssayLedger``, which runs it on its own storage by delegatecall.
    """
    beacon = chain.deploy("DevnetBeacon", g1_uncompressed(beacon_public_key), GENESIS_SEED,
                          sender=sender)
    rounds = chain.deploy("LedgerRounds", beacon.address, sender=sender)
    ledger = chain.deploy("AssayLedger", beacon.address, params_tuple(params), rounds.address,
                          sender=sender)
    return EvmLedger(chain, ledger, beacon)


class EvmLedger:
    """The deployed ledger and its beacon, and the transactions the roles send to them."""

    def __init__(self, chain: Chain, ledger: Contract, beacon: Contract) -> None:
        self.chain = chain
        self.contract = ledger
        self.beacon = beacon

    # -- the clock ---------------------------------------------------------------------------
    def submit_devnet_round(self, revealed: BeaconRound, sender: Sender,
                            previous_signature: bytes) -> TxReceipt:
        """Verify a devnet round on chain (anyone may submit it; the signature is the proof)."""
        call = self.beacon.functions.submitRound(
            revealed.round, g2_uncompressed(revealed.signature), previous_signature
        )
        return self.chain.transact(call, sender)

    def advance(self, sender: Sender) -> TxReceipt:
        """Process the next verified round: committees, draws, deadlines, settlements."""
        return self.chain.transact(self.contract.functions.advance(), sender)

    def current_round(self) -> int:
        """The latest round the ledger processed (-1 before the first)."""
        count: int = self.contract.functions.roundCount().call()
        first: int = self.contract.functions.firstRound().call()
        return first + count - 1

    # -- transactions --------------------------------------------------------------------------
    def mint(self, to: str, amount: int, operator: Sender) -> TxReceipt:
        return self.chain.transact(self.contract.functions.mint(to, amount), operator)

    def register(self, key: bytes, account: str, operator: Sender) -> TxReceipt:
        """Bind `account` to the protocol key it signs with; only the operator may."""
        call = self.contract.functions.register(Web3.to_checksum_address(account), key)
        return self.chain.transact(call, operator)

    def bond(self, role: str, amount: int, sender: Sender) -> TxReceipt:
        return self.chain.transact(self.contract.functions.bond(ROLES[role], amount), sender)

    def unbond(self, role: str, amount: int, sender: Sender) -> TxReceipt:
        return self.chain.transact(self.contract.functions.unbond(ROLES[role], amount), sender)

    def withdraw(self, sender: Sender) -> TxReceipt:
        return self.chain.transact(self.contract.functions.withdraw(), sender)

    def post_batch(self, round_number: int, batch: JobBatch, sender: Sender) -> TxReceipt:
        call = self.contract.functions.postBatch(round_number, batch.root, batch.count)
        return self.chain.transact(call, sender)

    def record_job(self, job_leaf: tuple[Any, ...], model_id: bytes, fee: int,
                   client: Sender) -> TxReceipt:
        call = self.contract.functions.recordJob(job_leaf, model_id, fee)
        return self.chain.transact(call, client)

    def attest(self, job_id: bytes, verdict: Verdict, beacon_round: int,
               validator: Sender) -> TxReceipt:
        call = self.contract.functions.attest(job_id, VERDICTS[verdict], beacon_round)
        return self.chain.transact(call, validator)

    def accuse(self, job_id: bytes, observed_hash: bytes, beacon_round: int, evidence_id: bytes,
               validator: Sender) -> TxReceipt:
        call = self.contract.functions.accuse(job_id, observed_hash, beacon_round, evidence_id)
        return self.chain.transact(call, validator)

    def report_equivocation(self, first: tuple[Any, ...], second: tuple[Any, ...],
                            sender: Sender) -> TxReceipt:
        call = self.contract.functions.reportEquivocation(first, second)
        return self.chain.transact(call, sender)

    def report_unavailable(self, job_id: bytes, validator: Sender) -> TxReceipt:
        return self.chain.transact(self.contract.functions.reportUnavailable(job_id), validator)

    def serve_data(self, job_id: bytes, output: bytes, sender: Sender) -> TxReceipt:
        return self.chain.transact(self.contract.functions.serveData(job_id, output), sender)

    def plant_canary(self, digest: bytes, operator: Sender) -> TxReceipt:
        return self.chain.transact(self.contract.functions.plantCanary(digest), operator)

    def reveal_canary(self, salt: bytes, job_id: bytes, operator: Sender) -> TxReceipt:
        return self.chain.transact(self.contract.functions.revealCanary(salt, job_id), operator)

    def register_zk_model(self, model_id: bytes, verifier: str, operator: Sender) -> TxReceipt:
        call = self.contract.functions.registerZkModel(model_id, verifier)
        return self.chain.transact(call, operator)

    def accuse_invalid_proof(self, job_id: bytes, proof: bytes, instances: list[int],
                             evidence_id: bytes, validator: Sender) -> TxReceipt:
        call = self.contract.functions.accuseInvalidProof(job_id, proof, instances, evidence_id)
        return self.chain.transact(call, validator)

    # -- reads ----------------------------------------------------------------------------------
    def account(self, address: str) -> ChainAccount:
        balance, known, key, node, validator, unbonding, locked = (
            self.contract.functions.account(address).call()
        )
        return ChainAccount(
            balance=balance,
            known=known,
            key=bytes(key),
            node=_stake(node),
            validator=_stake(validator),
            unbonding=tuple(
                Unbonding(role=ROLE_NAMES[role], amount=amount, started_round=started,
                          release_round=release)
                for role, amount, started, release in unbonding
            ),
            locked=tuple((release, amount) for release, amount in locked),
        )

    def job(self, job_id: bytes) -> ChainJob | None:
        raw = self.contract.functions.job(job_id).call()
        (client, fee, node, recorded, status, sampled, zk, equivocated, audit_pending, verifier,
         closed, reporter, unavailable, served, assigned, deadline, commitment_id, output_hash,
         model_id, proof_hash, dispute, auditors, accusers, attestations) = raw
        if status == 0:
            return None
        return ChainJob(
            client=client, node=node, fee=fee, recorded_round=recorded, status=STATUS_OF[status],
            sampled=sampled, zk=zk, equivocated=equivocated, audit_pending=audit_pending,
            verifier=_optional_address(verifier), closed_round=_optional_round(closed),
            availability_reporter=_optional_address(reporter),
            unavailable_since=_optional_round(unavailable), served_round=_optional_round(served),
            assigned_round=_optional_round(assigned), audit_deadline=_optional_round(deadline),
            commitment_id=bytes(commitment_id), output_hash=bytes(output_hash),
            model_id=bytes(model_id), proof_hash=bytes(proof_hash),
            dispute=bytes(dispute) if any(dispute) else None,
            auditors=tuple(auditors), accusers=tuple(accusers),
            attestations=tuple((v, VERDICT_OF[verdict]) for v, verdict in attestations),
        )

    def dispute(self, dispute_id: bytes) -> ChainDispute:
        (job_id, node, opened, bond, draws, drawn, closed, outcome, accusers, committee,
         votes) = self.contract.functions.dispute(dispute_id).call()
        return ChainDispute(
            job_id=bytes(job_id), node=node, opened_round=opened, bond=bond, draws=draws,
            drawn_round=_optional_round(drawn), closed_round=_optional_round(closed),
            outcome=VERDICT_OF[outcome] if outcome else None, accusers=tuple(accusers),
            committee=tuple(committee),
            votes=tuple((v, VERDICT_OF[verdict]) for v, verdict in votes),
        )

    def totals(self) -> tuple[int, int]:
        """(minted, burned)."""
        return (self.contract.functions.minted().call(), self.contract.functions.burned().call())


def leaf(node: str, round_number: int, batch: JobBatch, index: int) -> tuple[Any, ...]:
    """The contract's ``Leaf`` for leaf ``index`` of ``batch``, posted by ``node`` in a round."""
    item = batch.leaves[index]
    return (node, round_number, batch.root, batch.count, index, item.job_id, item.commitment_id,
            item.output_hash, item.proof_hash, batch.proof(index))
