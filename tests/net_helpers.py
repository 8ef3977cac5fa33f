"""Shared pieces of the network tests: an in-process ledger, hostile payloads."""

from __future__ import annotations

import os
import random
from pathlib import Path

import trio
from hypothesis import strategies as st

from protocol import codec
from protocol.beacon import DevnetBeacon
from protocol.keys import SigningKey
from protocol.net.host import PeerHost
from protocol.net.identity import peer_address
from protocol.net.metrics import Metrics
from slashing import Ledger
from slashing.service import Genesis, LedgerService, safe_params
from slashing.state import LedgerParams

BEACON_SECRET = 0x1234567
GENESIS_FUNDS = 10**9


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ledger_service(tmp: Path, accounts: list[bytes], round_seconds: float = 0.2
                   ) -> tuple[LedgerService, str]:
    key = SigningKey.generate()
    port = free_port()
    params = LedgerParams(**{**LedgerParams.default().__dict__, "committee_size": 1,
                             "sample_ppm": 500_000})
    genesis = Genesis(params=safe_params(params),
                      mints=tuple((a, GENESIS_FUNDS) for a in accounts))
    host = PeerHost(key, f"/ip4/127.0.0.1/tcp/{port}", (), Metrics())
    service = LedgerService(host, Ledger.open(tmp / "ledger.sqlite"),
                            DevnetBeacon(BEACON_SECRET), genesis, round_seconds, host.metrics)
    return service, peer_address("127.0.0.1", port, key.public.raw)


async def connected(host: PeerHost, peer: bytes, seconds: float = 10) -> None:
    with trio.fail_after(seconds):
        while peer not in host.connected():
            await trio.sleep(0.05)


def random_frames(rng: random.Random, n: int) -> list[bytes]:
    """Hostile request bodies: random bytes, truncated and bit-flipped msgpack, bad maps."""
    valid = codec.encode({"op": "status"})
    out = []
    for i in range(n):
        choice = i % 6
        if choice == 0:
            out.append(rng.randbytes(rng.randrange(0, 300)))
        elif choice == 1:
            out.append(valid[: rng.randrange(0, len(valid))])
        elif choice == 2:
            flipped = bytearray(valid)
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            out.append(bytes(flipped))
        elif choice == 3:
            out.append(codec.encode({"op": rng.choice(["tx", "mint", "", "x" * 40]),
                                     "event": rng.randbytes(40)}))
        elif choice == 4:
            out.append(codec.encode({"op": rng.choice(["record_job", "attest", "accuse"]),
                                     "request": rng.randbytes(60), "commitment": b"",
                                     "attestation": rng.randbytes(8), "evidence": 7}))
        else:
            out.append(codec.encode([1, 2, {"op": "status"}]) + os.urandom(3))
    return out


hostile_maps = st.dictionaries(
    st.sampled_from(["op", "job_id", "round", "account", "dispute_id", "role", "amount",
                     "request", "commitment", "attestation", "evidence", "kind", "v"]),
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.binary(max_size=64),
              st.text(max_size=20), st.sampled_from(["status", "job", "bond", "beacon",
                                                    "account", "dispute", "record_job"])),
    max_size=5,
)
