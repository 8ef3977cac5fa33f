"""The ledger process the crash test kills: appends framed events from stdin, acks on stdout.

Run as ``python -m tests.ledger_crash_writer LEDGER SNAPSHOT_INTERVAL``. It
opens the ledger (checking the chain and replaying from the last snapshot),
prints ``ready <length>``, then reads frames — a 4-byte big-endian length and
an event's canonical bytes — and appends whatever has arrived as one batch.
Only after the batch's transaction has committed does it print, for each
event, ``ok <seq> <hash hex>`` or ``refused <reason>``. The test SIGKILLs it
at a random moment; it stops by itself only when stdin closes.
"""

from __future__ import annotations

import os
import sys

from protocol.errors import ProtocolError
from slashing import Ledger, decode_event

MAX_BATCH = 256
READ_BYTES = 1 << 16


def main() -> None:
    path, interval = sys.argv[1], int(sys.argv[2])
    ledger = Ledger.open(path, snapshot_interval=interval)
    out = sys.stdout
    out.write(f"ready {ledger.length}\n")
    out.flush()
    stdin = sys.stdin.fileno()
    buffer = bytearray()
    while chunk := os.read(stdin, READ_BYTES):
        buffer += chunk
        events = []
        while len(buffer) >= 4 and len(buffer) >= 4 + int.from_bytes(buffer[:4], "big"):
            size = int.from_bytes(buffer[:4], "big")
            events.append(decode_event(bytes(buffer[4 : 4 + size])))
            del buffer[: 4 + size]
        for start in range(0, len(events), MAX_BATCH):
            lines = []
            for result in ledger.append_batch(events[start : start + MAX_BATCH]):
                if isinstance(result, ProtocolError):
                    lines.append(f"refused {result}\n")
                else:
                    lines.append(f"ok {result.seq} {result.hash.hex()}\n")
            out.write("".join(lines))
            out.flush()
    ledger.close()


if __name__ == "__main__":
    main()
