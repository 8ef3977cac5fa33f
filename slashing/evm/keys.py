"""Chain keys: secp256k1 accounts in the standard Ethereum keystore (Web3 Secret Storage v3).

``eth-account`` encrypts and decrypts them (scrypt, AES-128-CTR, a keccak MAC),
so any Ethereum wallet reads the files this writes. A key is never logged or
printed: errors name the file and what is wrong with it, never its contents.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

DEFAULT_SCRYPT_N = 2**18
"""eth-account's default scrypt cost, for keys that hold value."""


class ChainKeyError(ValueError):
    """A chain keystore that cannot be used; the message names the file (never the key)."""


def read_password(password_file: Path) -> str:
    """The first line of ``password_file``."""
    try:
        return password_file.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, UnicodeDecodeError, IndexError) as exc:
        raise ChainKeyError(f"cannot read the password file {password_file}: {exc}") from None


def write_keystore(path: Path, account: LocalAccount, password: str,
                   scrypt_n: int = DEFAULT_SCRYPT_N) -> None:
    """Encrypt ``account`` under ``password`` into a new file readable by its owner alone."""
    if path.exists():
        raise ChainKeyError(f"{path} already exists; a keystore is never overwritten")
    data = Account.encrypt(account.key, password, kdf="scrypt", iterations=scrypt_n)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(data, out)


def load_keystore(path: Path, password: str) -> LocalAccount:
    """The account in the keystore at ``path``; a wrong password is named as such."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ChainKeyError(f"cannot read the chain keystore {path}: {exc}") from None
    try:
        key = Account.decrypt(data, password)
    except ValueError as exc:
        wrong = "MAC mismatch" in str(exc)
        raise ChainKeyError(
            f"chain keystore {path}: wrong password" if wrong
            else f"chain keystore {path} is not a valid keystore: {exc}"
        ) from None
    except (KeyError, TypeError) as exc:
        raise ChainKeyError(f"chain keystore {path} lacks the field {exc}") from None
    account: LocalAccount = Account.from_key(key)
    return account


def import_key(hex_key: str) -> LocalAccount:
    """An account from a private key in hex (``0x`` optional); the key is never echoed."""
    text = hex_key.strip().removeprefix("0x")
    try:
        raw = bytes.fromhex(text)
        if len(raw) != 32:
            raise ValueError
        account: LocalAccount = Account.from_key(raw)
    except ValueError:
        raise ChainKeyError("the private key is not 64 hex digits of a valid secp256k1 key"
                            ) from None
    return account
