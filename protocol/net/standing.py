"""A service's standing on the ledger: bonded, jailed, tombstoned, and why it changed.

Nodes and validators poll their own account (``STANDING_INTERVAL_S``) and
answer ``/health`` from what the ledger last said, not from what they did at
start: a node slashed out while running must stop saying "ready". A new
offence is logged at WARNING with the ledger's evidence for it (``offences``),
so an operator learns of a slash from the node's own log; so is a liveness
penalty (stake taken and jailed with no offence: an audit or vote the ledger
awaited did not come in time). A drop in stake that is neither (unbonding)
is not a warning.

Bonding retries with capped exponential backoff and says why it waits (most
often an account with too few tokens, and how to fund one).
"""

from __future__ import annotations

import logging

import trio

from protocol.errors import ProtocolError
from protocol.net.backoff import Backoff
from protocol.net.ledger_client import LedgerClient
from protocol.net.ledger_replies import AccountInfo, Offence

STANDING_INTERVAL_S = 1.0
BOND_BACKOFF = (1.0, 60.0)
"""First and longest wait, in seconds, between bonding attempts."""


class Standing:
    def __init__(self, ledger: LedgerClient, account: bytes, role: str, log: logging.Logger
                 ) -> None:
        self.ledger = ledger
        self.account = account
        self.role = role
        self.log = log
        self.info: AccountInfo | None = None
        self.bonded = False
        """The bonding at start is done (the ledger took the bond, or the stake was there)."""
        self._known: set[tuple[str, bytes, bytes]] = set()
        self._first = True

    def problems(self) -> list[str]:
        """Why this role cannot act on the ledger now; empty when it can."""
        info, status = self.info, self.ledger.status
        if info is None or status is None:
            return ["the ledger has not answered for this account yet"]
        minimum = status.min_node_stake if self.role == "node" else status.min_validator_stake
        standing = info.standing(self.role)
        out = []
        if standing.slashed_out:
            out.append(f"tombstoned: slashed out as a {self.role} for good "
                       f"after {standing.offences} offences")
        elif standing.stake < minimum:
            out.append(f"not bonded: {standing.stake} staked as a {self.role}, "
                       f"below the minimum {minimum}")
        if info.jailed(self.role):
            out.append(f"jailed until round {standing.jailed_until} (the ledger is at round "
                       f"{info.round})")
        return out

    async def refresh(self) -> None:
        info = await self.ledger.account(self.account)
        before, self.info = self.info, info
        if before is None:
            return
        old, new = before.standing(self.role), info.standing(self.role)
        if new.offences > old.offences:
            await self._report_offences(old.stake, new.stake)
        elif new.stake < old.stake and new.jailed_until > old.jailed_until:
            self.log.warning(
                "paid the liveness penalty as a %s: stake %d -> %d, jailed until round %d; the "
                "ledger awaited an audit or a vote from this account that did not come in time",
                self.role, old.stake, new.stake, new.jailed_until)

    async def _report_offences(self, old_stake: int, new_stake: int) -> None:
        try:
            offences = [o for o in await self.ledger.offences(self.account)
                        if o.role == self.role]
        except ProtocolError as exc:
            offences = []
            self.log.warning("could not ask the ledger why the stake changed: %s", exc)
        new = [o for o in offences if _key(o) not in self._known]
        self._known.update(_key(o) for o in offences)
        standing = self.info.standing(self.role) if self.info else None
        evidence = ", ".join(
            f"{o.kind} on job {o.job_id.hex()[:16]}…"
            + (f" (evidence {o.evidence.hex()})" if o.evidence else "") for o in new
        ) or "none listed"
        self.log.warning(
            "slashed as a %s: stake %d -> %d%s%s; evidence: %s", self.role, old_stake, new_stake,
            f", jailed until round {standing.jailed_until}" if standing and standing.jailed_until
            else "", ", tombstoned" if standing and standing.slashed_out else "", evidence,
        )

    async def watch(self) -> None:
        """Keep :attr:`info` fresh; log every slash with its evidence."""
        while True:
            try:
                if self._first:
                    self._known = {_key(o) for o in await self.ledger.offences(self.account)}
                    self._first = False
                await self.refresh()
            except ProtocolError as exc:
                self.log.debug("refreshing the account failed: %s", exc)
            await trio.sleep(STANDING_INTERVAL_S)

    async def bond(self, stake: int) -> None:
        """Bond up to ``stake`` from the account's balance, waiting (and saying why) until it can.

        Gives up, with an error in the log, on a tombstoned role, which can never bond again.
        """
        backoff = Backoff(*BOND_BACKOFF)
        while True:
            await self.ledger.wait_reachable()
            try:
                info = await self.ledger.account(self.account)
                standing = info.standing(self.role)
                if standing.slashed_out:
                    self.log.error("not bonding: this key is tombstoned as a %s on the ledger",
                                   self.role)
                    return
                need = stake - standing.stake
                if need <= 0:
                    self.bonded = True
                    return
                if info.balance < need:
                    raise ProtocolError(
                        f"account {self.account.hex()} holds {info.balance} tokens, and bonding "
                        f"{need} needs that many; fund it (on a devnet: "
                        f"assay devnet fund {self.account.hex()} {need})"
                    )
                await self.ledger.transact("bond", role=self.role, amount=need)
                self.log.info("bonded %d as a %s", need, self.role)
                self.bonded = True
                return
            except ProtocolError as exc:
                wait = backoff.next()
                self.log.warning("cannot bond %d as a %s yet: %s; retrying in %.0f s",
                                 stake, self.role, exc, wait)
                await trio.sleep(wait)


def _key(offence: Offence) -> tuple[str, bytes, bytes]:
    return offence.kind, offence.job_id, offence.evidence
