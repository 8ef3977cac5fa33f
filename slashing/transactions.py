"""An account's signed ledger transactions, built for the services that send them.

Nodes, validators and ``assay stake`` send ``bond``, ``unbond``, ``withdraw``
and ``report_unavailable`` as the ledger's own events (:mod:`slashing.events`),
signed by the account with its next nonce. They may not import the ledger,
so the composition root hands them :func:`transaction_signer`, which is the
one place that turns (type, nonce, fields) into a signed event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocol.keys import SigningKey
from protocol.net.ledger_client import SignTransaction
from slashing.events import AccountTx, Bond, ReportUnavailable, Unbond, Withdraw

ACCOUNT_TRANSACTIONS: Mapping[str, type[AccountTx]] = {
    cls.TYPE: cls for cls in (Bond, Unbond, Withdraw, ReportUnavailable)
}
"""The transactions an account sends itself, by their ledger op."""


def transaction_signer(key: SigningKey) -> SignTransaction:
    """Sign ``kind`` transactions for ``key``'s account (its key field is filled in here)."""

    def sign(kind: str, nonce: int, fields: Mapping[str, Any]) -> bytes:
        cls = ACCOUNT_TRANSACTIONS.get(kind)
        if cls is None:
            raise ValueError(f"{kind!r} is not an account transaction; "
                             f"they are {sorted(ACCOUNT_TRANSACTIONS)}")
        event = cls(**{cls.SIGNER: key.public.raw, **fields}, nonce=nonce)
        return event.signed(key).encode()

    return sign
