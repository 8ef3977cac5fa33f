"""``assay chain key new | import`` and ``assay chain deploy``: settling the ledger on an EVM chain.

A ledger service with ``ledger_backend = "evm"`` needs the operator's chain key,
a standard Ethereum keystore (``key new`` makes one, ``key import`` encrypts an
existing private key read from a file, never from the command line), and the
contracts deployed from that key with the network's genesis parameters and
beacon key (``deploy``, which prints the addresses for ``ledger_contract`` and
``beacon_contract``). The key itself is never printed or logged.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _password(args: argparse.Namespace) -> str:
    from assay.arguments import CommandError
    from protocol.keystore import KeystoreError, read_password

    try:
        return read_password(args.password_file)
    except KeystoreError as exc:
        raise CommandError(str(exc)) from exc


def _write(args: argparse.Namespace, account: Any) -> int:
    from assay.arguments import CommandError
    from slashing.evm.keys import ChainKeyError, write_keystore

    if args.scrypt_n < 2**10 or args.scrypt_n & (args.scrypt_n - 1):
        raise CommandError("--scrypt-n must be a power of two, at least 1024")
    try:
        write_keystore(Path(args.out), account, _password(args), args.scrypt_n)
    except ChainKeyError as exc:
        raise CommandError(str(exc)) from exc
    print(f"{args.out}: address {account.address}")
    return 0


def cmd_chain_key_new(args: argparse.Namespace) -> int:
    from eth_account import Account

    return _write(args, Account.create())


def cmd_chain_key_import(args: argparse.Namespace) -> int:
    from assay.arguments import CommandError
    from slashing.evm.keys import ChainKeyError, import_key

    try:
        account = import_key(Path(args.private_key_file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {args.private_key_file}: {exc}") from exc
    except ChainKeyError as exc:
        raise CommandError(f"{args.private_key_file}: {exc}") from exc
    return _write(args, account)


def deploy(rpc_url: str, operator: Any, genesis_file: Path, beacon_secret: int) -> Any:
    """The devnet beacon and the ledger, deployed from ``operator`` with the genesis's params."""
    from protocol.beacon import DevnetBeacon
    from protocol.config import read_toml
    from slashing.evm.chain import Chain
    from slashing.evm.ledger import deploy_devnet
    from slashing.service import Genesis

    genesis = Genesis.from_toml(read_toml(genesis_file))
    return deploy_devnet(Chain(rpc_url), genesis.params, DevnetBeacon(beacon_secret).public_key,
                         operator)


def cmd_chain_deploy(args: argparse.Namespace) -> int:
    from assay.arguments import CommandError
    from protocol.errors import ProtocolError
    from slashing.evm.keys import ChainKeyError, load_keystore
    from slashing.rules import LedgerRuleError

    try:
        operator = load_keystore(Path(args.keystore), _password(args))
        secret = int(Path(args.beacon_secret_file).read_text().strip(), 16)
        ledger = deploy(args.rpc_url, operator, Path(args.genesis), secret)
    except (ChainKeyError, OSError, ValueError, ProtocolError, LedgerRuleError) as exc:
        raise CommandError(f"cannot deploy: {exc}") from exc
    except Exception as exc:  # the RPC endpoint: connection refused, no funds for gas
        raise CommandError(f"cannot deploy on {args.rpc_url}: {type(exc).__name__}: {exc}"
                           ) from exc
    print(f"ledger_contract = \"{ledger.contract.address}\"")
    print(f"beacon_contract = \"{ledger.beacon.address}\"")
    return 0


def register(commands: Any) -> None:
    chain = commands.add_parser("chain", help="settle the ledger on an EVM chain")
    actions = chain.add_subparsers(dest="chain_command", required=True, metavar="ACTION")
    key = actions.add_parser("key", help="the operator's chain key (an Ethereum keystore)")
    key_actions = key.add_subparsers(dest="chain_key_command", required=True, metavar="ACTION")
    for name, func, help_text in (
        ("new", cmd_chain_key_new, "make a new chain key"),
        ("import", cmd_chain_key_import, "encrypt an existing private key"),
    ):
        parser = key_actions.add_parser(name, help=help_text)
        parser.add_argument("--out", required=True, help="keystore file to write")
        parser.add_argument("--password-file", default=None,
                            help="file whose first line is the password (else prompted)")
        parser.add_argument("--scrypt-n", type=int, default=2**18,
                            help="scrypt cost (eth-account's default 2^18)")
        if name == "import":
            parser.add_argument("--private-key-file", required=True,
                                help="file holding the private key, 64 hex digits")
        parser.set_defaults(func=func)
    deploy_parser = actions.add_parser(
        "deploy", help="deploy the devnet beacon and ledger contracts with a genesis")
    deploy_parser.add_argument("--rpc-url", required=True)
    deploy_parser.add_argument("--keystore", required=True, help="the operator's chain key")
    deploy_parser.add_argument("--password-file", default=None)
    deploy_parser.add_argument("--genesis", default="genesis.toml")
    deploy_parser.add_argument("--beacon-secret-file", default="beacon.secret")
    deploy_parser.set_defaults(func=cmd_chain_deploy)
