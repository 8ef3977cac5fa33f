"""The ledger: rules as pure state transitions over an event-sourced, hash-chained log.

``events`` defines what is logged, ``rules`` the ``process_<event>`` functions
that decide whether it may be and what it does, ``state`` the containers they
work on (and the canonical state hash), ``constants`` every number they use,
``signatures`` the Ed25519 checks the rules make (in worker threads for a
batch), ``store`` the SQLite log whose fold is the state, with its snapshots,
``workload`` a deterministic stream of valid events for benchmarks and crash
tests, and ``service`` the devnet's ledger behind a libp2p endpoint.
"""

from slashing.events import (
    AccountTx,
    Accuse,
    AccuseInvalidProof,
    Attest,
    BeaconRound,
    Bond,
    Event,
    Mint,
    PlantCanary,
    RecordJob,
    RegisterBeacon,
    RegisterZkModel,
    ReportUnavailable,
    RevealCanary,
    ServeData,
    SetParams,
    Unbond,
    Withdraw,
    canary_digest,
    decode_event,
)
from slashing.rules import (
    AmountOutOfRange,
    InsufficientFunds,
    LedgerRuleError,
    NonceOutOfOrder,
    NotAZkModel,
    ProofCheckUnavailable,
    UnknownAccount,
    UnknownJob,
    apply_event,
    apply_event_in_place,
    install_proof_checker,
    is_bonded,
    process_event,
)
from slashing.state import LedgerParams, State, state_hash
from slashing.store import BatchRefused, Ledger, LedgerCorrupt, LogEntry

__all__ = [
    "AccountTx",
    "Accuse",
    "AccuseInvalidProof",
    "AmountOutOfRange",
    "Attest",
    "BatchRefused",
    "BeaconRound",
    "Bond",
    "Event",
    "InsufficientFunds",
    "Ledger",
    "LedgerCorrupt",
    "LedgerParams",
    "LedgerRuleError",
    "LogEntry",
    "Mint",
    "NonceOutOfOrder",
    "NotAZkModel",
    "PlantCanary",
    "ProofCheckUnavailable",
    "RecordJob",
    "RegisterBeacon",
    "RegisterZkModel",
    "ReportUnavailable",
    "RevealCanary",
    "ServeData",
    "SetParams",
    "State",
    "Unbond",
    "UnknownAccount",
    "UnknownJob",
    "Withdraw",
    "apply_event",
    "apply_event_in_place",
    "canary_digest",
    "decode_event",
    "install_proof_checker",
    "is_bonded",
    "process_event",
    "state_hash",
]
