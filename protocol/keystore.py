"""Encrypted key files (EIP-2335 style) and the signing journal that prevents double signing.

A keystore is the JSON format Ethereum validator clients use (EIP-2335):
scrypt derives a 32-byte key from the password; its first 16 bytes key
AES-128-CTR over the secret, and ``sha256(dk[16:32] ‖ ciphertext)`` is a
checksum that tells a wrong password from a corrupt file. The secret here is
an Ed25519 seed, not a BLS key, so ``path`` is empty and ``pubkey`` is the
Ed25519 public key; otherwise the fields are EIP-2335's. Passwords are
normalised as EIP-2335 says (NFKD, control characters removed), and come
from a file or a prompt, never from a config value or a flag.

The :class:`SigningJournal` is what Ethereum clients call slashing
protection: before a service signs a commitment or an attestation for a job
it records the message in SQLite, and a restarted service that meets the same
job again gets the recorded message back instead of signing a second,
different one (which the ledger would treat as equivocation, or refuse as a
second attestation).
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import sqlite3
import unicodedata
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from protocol.hashing import sha256
from protocol.keys import SEED_BYTES, SigningKey

KEYSTORE_VERSION = 4
SCRYPT_N = 2**18
"""EIP-2335's recommended cost (about 256 MiB and a second); tests and devnets may lower it."""
SCRYPT_R = 8
SCRYPT_P = 1
DKLEN = 32
MAX_SCRYPT_N = 2**20
MAX_SCRYPT_R = 8
MAX_SCRYPT_P = 16
"""Bounds on the scrypt cost a keystore may ask for when opened (1 GiB and a few seconds at
n = 2^20, r = 8): a keystore file is input, and one asking n = 2^30 would take 1 TiB. A
trusted file beyond them is opened only when forced."""


class KeystoreError(ValueError):
    """A keystore that cannot be read or opened; the message says which and why."""


def normalise_password(password: str) -> bytes:
    """NFKD, with C0, C1 and DEL control characters removed (EIP-2335, "Password requirements")."""
    text = unicodedata.normalize("NFKD", password)
    kept = "".join(ch for ch in text if not (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F))
    return kept.encode("utf-8")


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=DKLEN, n=n, r=r, p=p).derive(normalise_password(password))


def _aes_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return cipher.update(data) + cipher.finalize()


def encrypt(
    key: SigningKey, password: str, description: str = "", n: int = SCRYPT_N
) -> dict[str, Any]:
    """The keystore JSON object holding ``key``'s seed under ``password``."""
    salt, iv = secrets.token_bytes(32), secrets.token_bytes(16)
    dk = _derive(password, salt, n, SCRYPT_R, SCRYPT_P)
    ciphertext = _aes_ctr(dk[:16], iv, key.seed())
    return {
        "crypto": {
            "kdf": {
                "function": "scrypt",
                "params": {
                    "dklen": DKLEN, "n": n, "r": SCRYPT_R, "p": SCRYPT_P, "salt": salt.hex(),
                },
                "message": "",
            },
            "checksum": {
                "function": "sha256", "params": {}, "message": sha256(dk[16:32] + ciphertext).hex(),
            },
            "cipher": {"function": "aes-128-ctr", "params": {"iv": iv.hex()},
                       "message": ciphertext.hex()},
        },
        "description": description,
        "pubkey": key.public.hex(),
        "path": "",
        "uuid": str(uuid.uuid4()),
        "version": KEYSTORE_VERSION,
    }


def _field(obj: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(obj, dict) or name not in obj:
            raise KeystoreError(f"keystore has no {'.'.join(path)}")
        obj = obj[name]
    return obj


def _hex(obj: Any, *path: str) -> bytes:
    value = _field(obj, *path)
    try:
        return bytes.fromhex(value)
    except (TypeError, ValueError):
        raise KeystoreError(f"keystore {'.'.join(path)} is not hex") from None


def check_kdf_cost(n: int, r: int, p: int) -> None:
    """Refuse scrypt parameters beyond :data:`MAX_SCRYPT_N`, ``_R`` and ``_P``."""
    if n < 2 or n & (n - 1):
        raise KeystoreError(f"keystore scrypt n = {n} is not a power of two above 1")
    if n > MAX_SCRYPT_N or not 1 <= r <= MAX_SCRYPT_R or not 1 <= p <= MAX_SCRYPT_P:
        raise KeystoreError(
            f"keystore scrypt parameters n = 2^{n.bit_length() - 1}, r = {r}, p = {p} exceed "
            f"n <= 2^20, r <= 8, p <= 16 (opening it could take hours and gigabytes); "
            "force it only for a file you trust"
        )


def decrypt_secret(keystore: dict[str, Any], password: str, force: bool = False) -> bytes:
    """The secret bytes of a keystore; :class:`KeystoreError` for a wrong password or damage.

    Scrypt parameters beyond the bounds (:func:`check_kdf_cost`) are refused
    before any work is done, unless ``force``.
    """
    if keystore.get("version") != KEYSTORE_VERSION:
        raise KeystoreError(f"keystore version {keystore.get('version')!r} is not 4")
    if _field(keystore, "crypto", "kdf", "function") != "scrypt":
        raise KeystoreError("only scrypt keystores are supported")
    if _field(keystore, "crypto", "cipher", "function") != "aes-128-ctr":
        raise KeystoreError("only aes-128-ctr keystores are supported")
    params = _field(keystore, "crypto", "kdf", "params")
    try:
        n, r, p = (int(params[k]) for k in ("n", "r", "p"))
        if int(params.get("dklen", DKLEN)) != DKLEN:
            raise ValueError("dklen")
    except (KeyError, TypeError, ValueError) as exc:
        raise KeystoreError(f"keystore scrypt parameters are unusable: {exc}") from exc
    if not force:
        check_kdf_cost(n, r, p)
    salt = _hex(keystore, "crypto", "kdf", "params", "salt")
    try:
        dk = _derive(password, salt, n, r, p)
    except (TypeError, ValueError, MemoryError) as exc:
        raise KeystoreError(f"keystore scrypt parameters are unusable: {exc}") from exc
    ciphertext = _hex(keystore, "crypto", "cipher", "message")
    if sha256(dk[16:32] + ciphertext) != _hex(keystore, "crypto", "checksum", "message"):
        raise KeystoreError("wrong password (the keystore checksum does not match)")
    return _aes_ctr(dk[:16], _hex(keystore, "crypto", "cipher", "params", "iv"), ciphertext)


def decrypt(keystore: dict[str, Any], password: str, force: bool = False) -> SigningKey:
    """Open a keystore holding an Ed25519 seed and check it against its ``pubkey``."""
    seed = decrypt_secret(keystore, password, force)
    if len(seed) != SEED_BYTES:
        raise KeystoreError(f"keystore holds {len(seed)} bytes, not a {SEED_BYTES}-byte seed")
    key = SigningKey.from_seed(seed)
    if key.public.hex() != str(keystore.get("pubkey", "")).lower():
        raise KeystoreError("keystore pubkey does not match the key it holds")
    return key


def read_keystore(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc}") from exc
    if not isinstance(value, dict):
        raise KeystoreError(f"keystore {path} is not a JSON object")
    return value


def write_keystore(path: Path, keystore: dict[str, Any]) -> None:
    """Write a keystore readable by its owner only; refuses to overwrite one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeystoreError(f"{path} exists; refusing to overwrite a keystore") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(keystore, f, indent=2)
        f.write("\n")


def read_password(password_file: str | None, prompt: str = "keystore password: ") -> str:
    """The password from a file (first line) or, with none given, an interactive prompt."""
    if password_file:
        try:
            text = Path(password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise KeystoreError(f"cannot read password file {password_file}: {exc}") from exc
        return text.splitlines()[0] if text else ""
    if not os.isatty(0):
        raise KeystoreError("no password file given and no terminal to prompt on")
    return getpass.getpass(prompt)


def load_key(path: Path, password_file: str | None) -> SigningKey:
    return decrypt(read_keystore(path), read_password(password_file))


class SigningJournal:
    """Every job this key signed a message for, by kind; see the module docstring."""

    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS signed (kind TEXT NOT NULL, job_id BLOB NOT NULL, "
            "message BLOB NOT NULL, extra BLOB NOT NULL, PRIMARY KEY (kind, job_id))"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS attempts (kind TEXT NOT NULL, job_id BLOB NOT NULL, "
            "count INTEGER NOT NULL, PRIMARY KEY (kind, job_id))"
        )

    def get(self, kind: str, job_id: bytes) -> tuple[bytes, bytes] | None:
        row = self._db.execute(
            "SELECT message, extra FROM signed WHERE kind = ? AND job_id = ?", (kind, job_id)
        ).fetchone()
        return (bytes(row[0]), bytes(row[1])) if row else None

    def record(self, kind: str, job_id: bytes, message: bytes, extra: bytes = b"") -> bytes:
        """Keep ``message`` unless one is already kept for (kind, job); return the kept one."""
        self._db.execute(
            "INSERT OR IGNORE INTO signed (kind, job_id, message, extra) VALUES (?, ?, ?, ?)",
            (kind, job_id, message, extra),
        )
        kept = self.get(kind, job_id)
        assert kept is not None
        return kept[0]

    def count_attempt(self, kind: str, job_id: bytes) -> int:
        """Count one more try at (kind, job), durably, and return how many there were.

        Written before the try, so a job whose handling kills the process is
        still counted, and a restarted service can give it up.
        """
        self._db.execute(
            "INSERT INTO attempts (kind, job_id, count) VALUES (?, ?, 1) "
            "ON CONFLICT (kind, job_id) DO UPDATE SET count = count + 1",
            (kind, job_id),
        )
        (n,) = self._db.execute(
            "SELECT count FROM attempts WHERE kind = ? AND job_id = ?", (kind, job_id)
        ).fetchone()
        return int(n)

    def keep_newest(self, kind: str, keep: int) -> int:
        """Delete all but the newest ``keep`` rows of ``kind`` (in the order they were first
        kept) and return how many went. For data kept to serve to others, such as audited
        outputs; never for a kind of signed message, whose rows are what stops this key
        signing a second, different one."""
        if keep < 0:
            raise ValueError(f"rows to keep must not be negative, got {keep}")
        deleted = self._db.execute(
            "DELETE FROM signed WHERE kind = ? AND rowid NOT IN "
            "(SELECT rowid FROM signed WHERE kind = ? ORDER BY rowid DESC LIMIT ?)",
            (kind, kind, keep),
        )
        return int(deleted.rowcount)

    def count(self, kind: str) -> int:
        (n,) = self._db.execute("SELECT COUNT(*) FROM signed WHERE kind = ?", (kind,)).fetchone()
        return int(n)

    def close(self) -> None:
        self._db.close()
