"""The ledger: rules as pure state transitions over an event-sourced, hash-chained log.

``events`` defines what is logged, ``rules`` the ``process_<event>`` functions
that decide whether it may be and what it does, ``state`` the containers they
work on, ``constants`` every number they use, and ``store`` the SQLite log
whose fold is the state.
"""

from slashing.events import (
    Accuse,
    Attest,
    BeaconRound,
    Bond,
    Event,
    Mint,
    RecordJob,
    RegisterBeacon,
    SetParams,
    decode_event,
)
from slashing.rules import LedgerRuleError, apply_event
from slashing.state import LedgerParams, State
from slashing.store import Ledger, LedgerCorrupt, LogEntry

__all__ = [
    "Accuse",
    "Attest",
    "BeaconRound",
    "Bond",
    "Event",
    "Ledger",
    "LedgerCorrupt",
    "LedgerParams",
    "LedgerRuleError",
    "LogEntry",
    "Mint",
    "RecordJob",
    "RegisterBeacon",
    "SetParams",
    "State",
    "apply_event",
    "decode_event",
]
