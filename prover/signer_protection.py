"""Signer protection: a node never signs two different commitments for one job.

Two different signed commitments to one job are equivocation, which the
ledger slashes on sight and tombstones. A node can equivocate without meaning
to: it crashes after signing and runs the job again after a restart with
another runtime, or its key runs on two machines. So, in the spirit of
Ethereum's slashing protection (EIP-3076), the node records what it is about
to sign in a local database, durably, before it signs, and refuses anything
that conflicts with a record:

* the *signing root* of a commitment is its content id, the SHA-256 of its
  canonical body: the exact bytes the signature covers;
* signing the same root again is allowed (Ed25519 is deterministic, so it is
  the same signature), a different root for a recorded job is refused;
* the record is committed with ``synchronous=FULL`` before the signature is
  made, so no crash leaves a released signature unrecorded.

The database exports to, and imports from, a JSON interchange file modelled
on EIP-3076's, so protection moves with a key to a new machine. Importing
takes the union; where the file and the database disagree on a job, the job
is blocked — never signed again — since a key that already signed two
commitments for it must not sign a third.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from protocol.errors import MalformedMessage, ProtocolError
from protocol.hashing import DIGEST_BYTES
from protocol.keys import PUBLIC_KEY_BYTES
from protocol.messages import Commitment

SIGNER_PROTECTION_FILE = "signer-protection.sqlite"
"""Its file name, in a node's ``data_dir`` or in ``$ASSAY_HOME``."""
INTERCHANGE_FORMAT = "assay-signer-protection"
INTERCHANGE_VERSION = "1"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS signed_commitments ("
    "node BLOB NOT NULL, job_id BLOB NOT NULL, signing_root BLOB, "
    "PRIMARY KEY (node, job_id)) WITHOUT ROWID"
)
"""One row per (node key, job); a NULL signing root means the job is blocked."""


class SigningRefused(ProtocolError):
    """Signing would make a second, different commitment for a job: equivocation."""


class SignerProtection:
    """The local protection database of one or more node keys. Open with :meth:`open`."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> SignerProtection:
        # The node service signs in worker threads: one connection, used under a lock.
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(_SCHEMA)
        return cls(db)

    def approve(self, commitment: Commitment) -> None:
        """Record ``commitment`` as about to be signed, or refuse it; call before signing.

        Raises :class:`SigningRefused` when the node already signed a different
        commitment for the job, or the job is blocked by an import.
        """
        with self._lock:
            self._approve(commitment)

    def _approve(self, commitment: Commitment) -> None:
        root = commitment.content_id
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute(
                "SELECT signing_root FROM signed_commitments WHERE node = ? AND job_id = ?",
                (commitment.node, commitment.job_id),
            ).fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO signed_commitments (node, job_id, signing_root) VALUES (?, ?, ?)",
                    (commitment.node, commitment.job_id, root),
                )
            elif row[0] != root:
                job = commitment.job_id.hex()[:16]
                why = (
                    "is blocked: imported protection data disagrees about it"
                    if row[0] is None
                    else f"already has a signed commitment {row[0].hex()[:16]}…"
                )
                raise SigningRefused(
                    f"refusing to sign commitment {root.hex()[:16]}… for job {job}…: "
                    f"the job {why}; signing it would be equivocation, which the ledger slashes"
                )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def signed_root(self, node: bytes, job_id: bytes) -> bytes | None:
        """The signing root recorded for a job (None when none is, or the job is blocked)."""
        row = self._db.execute(
            "SELECT signing_root FROM signed_commitments WHERE node = ? AND job_id = ?",
            (node, job_id),
        ).fetchone()
        return None if row is None else row[0]

    def export(self) -> dict[str, Any]:
        """The database as an interchange document (see the module docstring)."""
        data: dict[bytes, list[dict[str, str | None]]] = {}
        for node, job_id, root in self._db.execute(
            "SELECT node, job_id, signing_root FROM signed_commitments ORDER BY node, job_id"
        ):
            data.setdefault(node, []).append(
                {"job_id": job_id.hex(), "signing_root": None if root is None else root.hex()}
            )
        return {
            "metadata": {
                "interchange_format": INTERCHANGE_FORMAT,
                "interchange_format_version": INTERCHANGE_VERSION,
            },
            "data": [
                {"pubkey": node.hex(), "signed_commitments": records}
                for node, records in data.items()
            ],
        }

    def import_(self, document: Mapping[str, Any]) -> tuple[int, int]:
        """Merge an interchange document; returns (records added, jobs newly blocked).

        The whole document is checked before anything is written; a malformed
        one raises :class:`MalformedMessage` and changes nothing.
        """
        records = _parse(document)
        added = blocked = 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for node, job_id, root in records:
                row = self._db.execute(
                    "SELECT signing_root FROM signed_commitments WHERE node = ? AND job_id = ?",
                    (node, job_id),
                ).fetchone()
                if row is None:
                    self._db.execute(
                        "INSERT INTO signed_commitments (node, job_id, signing_root) "
                        "VALUES (?, ?, ?)",
                        (node, job_id, root),
                    )
                    added += 1
                elif row[0] is not None and row[0] != root:
                    self._db.execute(
                        "UPDATE signed_commitments SET signing_root = NULL "
                        "WHERE node = ? AND job_id = ?",
                        (node, job_id),
                    )
                    blocked += 1
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return added, blocked

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _hex_bytes(value: object, size: int, where: str) -> bytes:
    try:
        data = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        data = None
    if data is None or len(data) != size:
        raise MalformedMessage(f"{where} must be {size} bytes in hex, got {value!r:.80}")
    return data


def _parse(document: Mapping[str, Any]) -> list[tuple[bytes, bytes, bytes | None]]:
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping) or metadata.get("interchange_format") != (
        INTERCHANGE_FORMAT
    ):
        raise MalformedMessage(f"not an {INTERCHANGE_FORMAT} interchange document")
    if metadata.get("interchange_format_version") != INTERCHANGE_VERSION:
        raise MalformedMessage(
            f"interchange version {metadata.get('interchange_format_version')!r}; "
            f"this node reads {INTERCHANGE_VERSION!r}"
        )
    entries = document.get("data")
    if not isinstance(entries, list):
        raise MalformedMessage("interchange 'data' must be a list")
    records = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("signed_commitments"), list):
            raise MalformedMessage(f"data[{i}] must have 'pubkey' and 'signed_commitments'")
        node = _hex_bytes(entry.get("pubkey"), PUBLIC_KEY_BYTES, f"data[{i}].pubkey")
        for j, record in enumerate(entry["signed_commitments"]):
            where = f"data[{i}].signed_commitments[{j}]"
            if not isinstance(record, Mapping):
                raise MalformedMessage(f"{where} must be an object")
            job_id = _hex_bytes(record.get("job_id"), DIGEST_BYTES, f"{where}.job_id")
            raw_root = record.get("signing_root")
            root = (
                None
                if raw_root is None
                else _hex_bytes(raw_root, DIGEST_BYTES, f"{where}.signing_root")
            )
            records.append((node, job_id, root))
    return records
