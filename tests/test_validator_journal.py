"""The validator's journal keeps audited outputs for record committees, bounded on disk.

Every audited ``llm`` output is journalled so that a committee judging the node's record can
have it; the journal keeps the newest ``outputs_kept`` of them and never touches the signed
rows that stop the key signing twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.config import ConfigError, ValidatorConfig
from protocol.keys import SigningKey
from protocol.keystore import SigningJournal
from protocol.net.host import PeerHost
from protocol.net.identity import peer_address
from protocol.net.metrics import Metrics
from slashing.transactions import transaction_signer
from tests.net_helpers import free_port
from verifier.service import AUDIT, OUTPUT, ValidatorService
from verifier.validator import Validator

KEY = SigningKey.derive("test/validator-journal/key")
LEDGER = SigningKey.derive("test/validator-journal/ledger")


def service(journal: SigningJournal, **settings: int) -> ValidatorService:
    config = ValidatorConfig(ledger=peer_address("127.0.0.1", 1, LEDGER.public.raw),
                             **settings)
    metrics = Metrics()
    host = PeerHost(KEY, f"/ip4/127.0.0.1/tcp/{free_port()}", (), metrics)
    return ValidatorService(config, Validator(KEY, {}), host, journal, metrics,
                            transaction_signer(KEY))


def test_outputs_beyond_the_kept_number_are_pruned_and_signed_rows_stay(tmp_path: Path) -> None:
    journal = SigningJournal(tmp_path / "journal.sqlite")
    jobs = [bytes([i]) * 32 for i in range(10)]
    for job in jobs:
        journal.record(OUTPUT, job, b"tokens")
        journal.record(AUDIT, job, b"attestation")
    service(journal, outputs_kept=3)
    assert [journal.get(OUTPUT, j) is not None for j in jobs] == [False] * 7 + [True] * 3
    assert journal.count(AUDIT) == 10


def test_a_negative_number_of_outputs_is_refused_and_nothing_is_pruned(tmp_path: Path) -> None:
    journal = SigningJournal(tmp_path / "journal.sqlite")
    journal.record(OUTPUT, b"\x01" * 32, b"tokens")
    with pytest.raises(ConfigError, match="outputs_kept must not be negative"):
        service(journal, outputs_kept=-1)
    assert journal.count(OUTPUT) == 1
