"""``assay stake status | unbond | withdraw``: an operator's stake, through the ledger service.

Each command signs the account's own transaction (``unbond``, ``withdraw``)
with its keystore and next nonce, so the log proves the account asked. The
ledger address and the keystore come from flags or from the node's or
validator's config file (``--config``), whose role also names the stake.
Unbonded stake stays slashable for the unbonding period (``status`` says
when each entry is released); ``withdraw`` then moves every released entry to
the balance, refused while a dispute or availability challenge against the
account is open.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _operator(args: argparse.Namespace) -> tuple[Any, str, str]:
    """(key, ledger address, role) from the flags, or the config file they override."""
    from assay.arguments import CommandError
    from protocol.config import ConfigError, read_toml, role_of
    from protocol.keystore import KeystoreError, load_key

    keystore, password_file, ledger, role = args.keystore, args.password_file, args.ledger, None
    if args.config is not None:
        try:
            data = read_toml(args.config)
            role = role_of(data, args.config)
        except ConfigError as exc:
            raise CommandError(str(exc)) from exc
        table = data[role]
        base = Path(args.config).resolve().parent
        keystore = keystore or (str(base / table["keystore"]) if "keystore" in table else None)
        if password_file is None and table.get("password_file"):
            password_file = str(base / table["password_file"])
        ledger = ledger or table.get("ledger")
    role = args.role or role
    if not keystore or not ledger or role not in ("node", "validator"):
        raise CommandError("give --keystore, --ledger and --role, or --config with a node's or "
                           "validator's config file")
    try:
        key = load_key(Path(keystore), password_file)
    except KeystoreError as exc:
        raise CommandError(str(exc)) from exc
    return key, str(ledger), role


def cmd_stake_status(args: argparse.Namespace) -> int:
    from assay.commands._ledger_call import with_ledger

    key, ledger, role = _operator(args)
    account = with_ledger(key, ledger, lambda client: client.account(key.public.raw))
    standing = account.standing(role)
    print(f"account {key.public.hex()}")
    if not account.found:
        print("  not on the ledger: it holds no tokens (on a devnet: assay devnet fund)")
        return 0
    state = ("tombstoned" if standing.slashed_out else
             f"jailed until round {standing.jailed_until}" if account.jailed(role) else "active")
    print(f"  balance {account.balance}; {role} stake {standing.stake} ({state}, "
          f"{standing.offences} offences); ledger round {account.round}")
    for entry in account.unbonding:
        when = ("released: withdraw it" if entry.release_round <= account.round
                else f"released in round {entry.release_round}")
        print(f"  unbonding {entry.amount} as {entry.role}: {when}")
    return 0


def cmd_stake_unbond(args: argparse.Namespace) -> int:
    from assay.arguments import CommandError
    from assay.commands._ledger_call import with_ledger

    key, ledger, role = _operator(args)

    async def unbond(client: Any) -> tuple[int, int]:
        account = await client.account(key.public.raw)
        amount = args.amount if args.amount is not None else account.standing(role).stake
        if amount <= 0:
            raise CommandError(f"nothing is bonded as a {role}")
        await client.transact("unbond", role=role, amount=amount)
        status = await client.call("status")
        return amount, int(status["round"]) + int(status["unbonding_period"])

    amount, release = with_ledger(key, ledger, unbond)
    print(f"unbonding {amount} as a {role}: withdraw it from round {release} on "
          "(assay stake withdraw)")
    return 0


def cmd_stake_withdraw(args: argparse.Namespace) -> int:
    from assay.commands._ledger_call import with_ledger

    key, ledger, _ = _operator(args)

    async def withdraw(client: Any) -> tuple[int, int]:
        before = await client.account(key.public.raw)
        await client.transact("withdraw")
        after = await client.account(key.public.raw)
        return before.balance, after.balance

    before, after = with_ledger(key, ledger, withdraw)
    print(f"withdrew {after - before}: balance {before} -> {after}")
    return 0


def register(commands: Any) -> None:
    from assay.arguments import positive_int

    stake = commands.add_parser("stake", help="an operator's stake on the ledger")
    actions = stake.add_subparsers(dest="stake_command", required=True, metavar="ACTION")
    for name, func, text in (
        ("status", cmd_stake_status, "balance, stake, jail and unbonding entries"),
        ("unbond", cmd_stake_unbond, "start unbonding stake (all of it by default)"),
        ("withdraw", cmd_stake_withdraw, "move released unbonding stake to the balance"),
    ):
        parser = actions.add_parser(name, help=text)
        parser.add_argument("--config", type=Path, default=None,
                            help="a node's or validator's config file (keystore, ledger, role)")
        parser.add_argument("--keystore", default=None)
        parser.add_argument("--password-file", default=None)
        parser.add_argument("--ledger", default=None, help="the ledger's /p2p/ address")
        parser.add_argument("--role", choices=("node", "validator"), default=None)
        if name == "unbond":
            parser.add_argument("--amount", type=positive_int, default=None)
        parser.set_defaults(func=func)
