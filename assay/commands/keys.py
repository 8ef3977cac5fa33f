"""``assay keys new | import | export | list``: encrypted Ed25519 keystores (EIP-2335 style)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def _password(args: argparse.Namespace, confirm: bool) -> str:
    from assay.arguments import CommandError
    from protocol.keystore import KeystoreError, read_password

    try:
        password = read_password(args.password_file)
        if confirm and not args.password_file and read_password(None, "again: ") != password:
            raise CommandError("the passwords differ")
    except KeystoreError as exc:
        raise CommandError(str(exc)) from exc
    return password


def _write(args: argparse.Namespace, key: Any) -> int:
    from assay.arguments import CommandError
    from protocol.keystore import KeystoreError, encrypt, write_keystore
    from protocol.net.identity import peer_id_of

    if args.scrypt_n < 2**10 or args.scrypt_n & (args.scrypt_n - 1):
        raise CommandError("--scrypt-n must be a power of two, at least 1024")
    keystore = encrypt(key, _password(args, confirm=True), args.description, n=args.scrypt_n)
    try:
        write_keystore(Path(args.out), keystore)
    except KeystoreError as exc:
        raise CommandError(str(exc)) from exc
    print(f"{args.out}: pubkey {key.public.hex()} peer {peer_id_of(key.public.raw).to_base58()}")
    return 0


def cmd_keys_new(args: argparse.Namespace) -> int:
    from protocol.keys import SigningKey

    return _write(args, SigningKey.generate())


def cmd_keys_import(args: argparse.Namespace) -> int:
    from assay.arguments import CommandError
    from protocol.keys import SigningKey

    try:
        seed = bytes.fromhex(Path(args.seed_file).read_text().strip())
        key = SigningKey.from_seed(seed)
    except (OSError, ValueError) as exc:
        raise CommandError(f"{args.seed_file}: not a 32-byte hex Ed25519 seed ({exc})") from exc
    return _write(args, key)


def cmd_keys_export(args: argparse.Namespace) -> int:
    """Decrypt a keystore and write its seed, hex, to a new file only its owner can read."""
    from assay.arguments import CommandError
    from protocol.keystore import KeystoreError, decrypt, read_keystore

    try:
        key = decrypt(read_keystore(Path(args.keystore)), _password(args, confirm=False),
                      force=args.force_kdf)
    except KeystoreError as exc:
        raise CommandError(str(exc)) from exc
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CommandError(f"{args.out} exists; refusing to overwrite it") from None
    with os.fdopen(fd, "w") as f:
        f.write(key.seed().hex() + "\n")
    print(f"wrote the seed of {key.public.hex()} to {args.out}")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from protocol.keystore import KeystoreError, read_keystore
    from protocol.net.identity import peer_id_of

    found = 0
    for path in sorted(Path(args.directory).glob("*.json")):
        try:
            keystore = read_keystore(path)
            pubkey = bytes.fromhex(str(keystore["pubkey"]))
            peer = peer_id_of(pubkey).to_base58()
        except (KeystoreError, KeyError, ValueError):
            continue
        found += 1
        print(f"{pubkey.hex()}  {peer}  {path.name}  {keystore.get('description', '')}")
    if not found:
        print(f"no keystores in {args.directory}")
    return 0


def register(commands: Any) -> None:
    from protocol.keystore import SCRYPT_N

    keys = commands.add_parser("keys", help="encrypted Ed25519 keystores")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    def keystore_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", required=True, help="keystore file to write")
        parser.add_argument("--description", default="", help="a note stored in the keystore")
        parser.add_argument(
            "--scrypt-n", type=int, default=SCRYPT_N,
            help=f"scrypt cost ({SCRYPT_N}, EIP-2335's); lower only for throwaway test keys",
        )

    password_help = "read the password from this file's first line (default: prompt)"
    new = actions.add_parser("new", help="generate a key and write it encrypted")
    keystore_options(new)
    new.add_argument("--password-file", default=None, help=password_help)
    new.set_defaults(func=cmd_keys_new)
    imported = actions.add_parser("import", help="encrypt an existing 32-byte seed (hex file)")
    imported.add_argument("seed_file", help="file holding the seed as 64 hex digits")
    keystore_options(imported)
    imported.add_argument("--password-file", default=None, help=password_help)
    imported.set_defaults(func=cmd_keys_import)
    export = actions.add_parser("export", help="decrypt a keystore's seed into a new hex file")
    export.add_argument("keystore")
    export.add_argument("--out", required=True, help="seed file to create (mode 0600)")
    export.add_argument("--password-file", default=None, help=password_help)
    export.add_argument("--force-kdf", action="store_true",
                        help="open a keystore whose scrypt cost exceeds n = 2^20, r = 8, p = 16")
    export.set_defaults(func=cmd_keys_export)
    listing = actions.add_parser("list", help="list keystores in a directory")
    listing.add_argument("directory", nargs="?", default=".")
    listing.set_defaults(func=cmd_keys_list)
