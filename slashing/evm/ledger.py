"""The ledger contracts on a chain: deployed from the same genesis as the Python ledger.

:func:`deploy` puts a beacon (the devnet's chained BLS beacon, or drand
quicknet) and :class:`AssayLedger` with :class:`slashing.state.LedgerParams`
on a chain; :class:`EvmLedger` sends the ledger's transactions from an
account and reads its state back in the Python rules' own records
(:class:`slashing.state.Stake`, :class:`slashing.state.Unbonding`), so the two
backends can be compared field for field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from web3.contract import Contract
from web3.types import TxReceipt

from protocol.beacon import GENESIS_SEED, BeaconRound
from slashing import constants as c
from slashing.evm.chain import Chain, Sender
from slashing.evm.merkle import JobBatch
from slashing.evm.points import g1_uncompressed, g2_uncompressed
from slashing.state import LedgerParams, Stake, Unbonding

ROLES = {c.NODE: 0, c.VALIDATOR: 1}
ROLE_NAMES = {v: k for k, v in ROLES.items()}


@dataclass(frozen=True)
class ChainAccount:
    """An account as the contract holds it, in the Python ledger's records."""

    balance: int
    known: bool
    node: Stake
    validator: Stake
    unbonding: tuple[Unbonding, ...]


def params_tuple(params: LedgerParams) -> tuple[int, ...]:
    """``LedgerParams`` as the contract's ``Params`` struct (the same fields, in order)."""
    return dataclasses.astuple(params)


def _stake(raw: Any) -> Stake:
    amount, jailed_until, offences, slashed_out = raw
    return Stake(amount=amount, slashed_out=slashed_out,
                 jailed_until=jailed_until or None, offences=offences)


def deploy_devnet(chain: Chain, params: LedgerParams, beacon_public_key: bytes,
                  sender: Sender) -> EvmLedger:
    """The devnet beacon (its G1 key) and the ledger, deployed by ``sender``, the operator."""
    beacon = chain.deploy("DevnetBeacon", g1_uncompressed(beacon_public_key), GENESIS_SEED,
                          sender=sender)
    ledger = chain.deploy("AssayLedger", beacon.address, params_tuple(params), sender=sender)
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

    def current_round(self) -> int:
        count: int = self.beacon.functions.roundCount().call()
        first: int = self.beacon.functions.firstRound().call()
        return first + count - 1

    # -- transactions --------------------------------------------------------------------------
    def mint(self, to: str, amount: int, operator: Sender) -> TxReceipt:
        return self.chain.transact(self.contract.functions.mint(to, amount), operator)

    def bond(self, role: str, amount: int, sender: Sender) -> TxReceipt:
        return self.chain.transact(self.contract.functions.bond(ROLES[role], amount), sender)

    def unbond(self, role: str, amount: int, sender: Sender) -> TxReceipt:
        return self.chain.transact(self.contract.functions.unbond(ROLES[role], amount), sender)

    def withdraw(self, sender: Sender) -> TxReceipt:
        return self.chain.transact(self.contract.functions.withdraw(), sender)

    def post_batch(self, round_number: int, batch: JobBatch, sender: Sender) -> TxReceipt:
        call = self.contract.functions.postBatch(round_number, batch.root, batch.count)
        return self.chain.transact(call, sender)

    def report_equivocation(self, first: tuple[Any, ...], second: tuple[Any, ...],
                            sender: Sender) -> TxReceipt:
        call = self.contract.functions.reportEquivocation(first, second)
        return self.chain.transact(call, sender)

    # -- reads ----------------------------------------------------------------------------------
    def account(self, address: str) -> ChainAccount:
        balance, known, node, validator, unbonding = self.contract.functions.account(address).call()
        return ChainAccount(
            balance=balance,
            known=known,
            node=_stake(node),
            validator=_stake(validator),
            unbonding=tuple(
                Unbonding(role=ROLE_NAMES[role], amount=amount, started_round=started,
                          release_round=release)
                for role, amount, started, release in unbonding
            ),
        )

    def totals(self) -> tuple[int, int]:
        """(minted, burned)."""
        return (self.contract.functions.minted().call(), self.contract.functions.burned().call())


def leaf(node: str, round_number: int, batch: JobBatch, index: int) -> tuple[Any, ...]:
    """The contract's ``Leaf`` for leaf ``index`` of ``batch``, posted by ``node`` in a round."""
    job_id, commitment_id = batch.leaves[index]
    return (node, round_number, batch.root, batch.count, index, job_id, commitment_id,
            batch.proof(index))
