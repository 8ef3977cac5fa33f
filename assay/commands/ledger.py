"""``assay ledger``: check, export, import and read a ledger file.

``verify`` replays the whole log from genesis (every chain link, rule and
signature, every snapshot); ``export`` writes it as JSON lines and
``import`` rebuilds a new ledger file from them, checking the same things;
``show`` and ``history`` read one account. ACCOUNT is a public key in hex,
or a prefix of one that only one account on the ledger has. (``run``, from
``ledger_service``, serves a ledger on the devnet.)

Replaying ``accuse_invalid_proof`` events re-checks their zk proofs: every
action installs ``verifier.zk``'s checker (loaded only when a log holds such
an event), which finds the pinned SRS in the zk store (``--zk-store``,
default ``$ASSAY_HOME/zk``; ``assay zk setup`` fills it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.arguments import CommandError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from protocol.messages import Commitment, JobRequest
    from slashing import Ledger
    from slashing.state import Account, Stake, State

MIN_PREFIX = 8
"""Hex digits an account prefix needs, so a typo does not match some other account."""


def default_ledger_path() -> Path:
    """``$ASSAY_HOME/ledger.sqlite``, with ``ASSAY_HOME`` defaulting to ``~/.assay``."""
    return Path(os.environ.get("ASSAY_HOME") or "~/.assay").expanduser() / "ledger.sqlite"


class LazyProofChecker:
    """``verifier.zk.LedgerProofChecker`` over the zk store at ``root``, built on first use.

    The ledger's INVALID_PROOF rule calls it; importing the verifier (torch,
    EZKL) only then keeps logs without zk evidence as quick to open as before.
    An import or store failure propagates, which the rule turns into a
    refusal (``ProofCheckUnavailable``), never a verdict.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._checker: Any = None

    def __call__(
        self, verifying_key: bytes, settings: bytes, srs_sha256: bytes, request: JobRequest,
        commitment: Commitment,
    ) -> str | None:
        if self._checker is None:
            from prover.zk import ZkArtifactStore
            from verifier.zk import LedgerProofChecker

            self._checker = LedgerProofChecker(ZkArtifactStore(self.root))
        failure = self._checker(verifying_key, settings, srs_sha256, request, commitment)
        assert failure is None or isinstance(failure, str)
        return failure


@contextmanager
def proof_checker(zk_store: Path | None) -> Iterator[None]:
    """Install the zk proof checker (store ``zk_store`` or the default) for the ``with`` body."""
    from assay.commands.zk import default_zk_root
    from slashing import install_proof_checker

    previous = install_proof_checker(LazyProofChecker(zk_store or default_zk_root()))
    try:
        yield
    finally:
        install_proof_checker(previous)


@contextmanager
def _open(path: Path, zk_store: Path | None = None) -> Iterator[Ledger]:
    from slashing import Ledger, LedgerCorrupt

    if not path.is_file():
        raise CommandError(f"no ledger at {path}")
    with proof_checker(zk_store):
        try:
            ledger = Ledger.open(path)
        except LedgerCorrupt as exc:
            raise CommandError(f"{path}: {exc}") from exc
        try:
            yield ledger
        finally:
            ledger.close()


def resolve_account(state: State, text: str) -> bytes:
    """The account ``text`` names: a whole key in hex, or a unique prefix of a known one."""
    try:
        bytes.fromhex(text if len(text) % 2 == 0 else text + "0")
    except ValueError:
        raise CommandError(f"account {text!r} is not hex") from None
    if len(text) == 64:
        return bytes.fromhex(text)
    if len(text) < MIN_PREFIX:
        raise CommandError(f"account prefix {text!r} is shorter than {MIN_PREFIX} hex digits")
    matches = [a for a in state.accounts if a.hex().startswith(text.lower())]
    if len(matches) != 1:
        found = "no account starts" if not matches else f"{len(matches)} accounts start"
        raise CommandError(f"{found} with {text!r} on the ledger")
    return matches[0]


def _stake(stake: Stake, state: State) -> dict[str, Any]:
    from slashing.rules import is_jailed

    return {
        "amount": stake.amount,
        "slashed_out": stake.slashed_out,
        "jailed": is_jailed(state, stake),
        "jailed_until": stake.jailed_until,
        "offences": stake.offences,
    }


def account_json(account: bytes, record: Account, state: State) -> dict[str, Any]:
    return {
        "account": account.hex(),
        "balance": record.balance,
        "nonce": record.nonce,
        "node": _stake(record.node, state),
        "validator": _stake(record.validator, state),
        "unbonding": [
            {
                "role": e.role,
                "amount": e.amount,
                "started_round": e.started_round,
                "release_round": e.release_round,
            }
            for e in record.unbonding
        ],
    }


def cmd_verify(args: argparse.Namespace) -> int:
    from slashing import LedgerCorrupt

    with _open(args.ledger, args.zk_store) as ledger:
        try:
            count = ledger.verify()
        except LedgerCorrupt as exc:
            raise CommandError(f"{args.ledger}: {exc}") from exc
        state = ledger.state
        print(
            f"{count} events verified from genesis (chain, rules, signatures, snapshots); "
            f"round {state.current_round}; head {ledger.head_hash.hex()}; "
            f"state {ledger.state_hash().hex()}; supply {state.minted} = held + escrow + "
            f"burned: {state.total_supply() == state.minted}"
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from slashing.store import export_jsonl

    with _open(args.ledger, args.zk_store) as ledger:
        if args.out is None:
            count = export_jsonl(ledger, sys.stdout)
        else:
            with open(args.out, "w", encoding="utf-8") as out:
                count = export_jsonl(ledger, out)
    print(f"exported {count} events", file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from slashing import Ledger, LedgerCorrupt
    from slashing.store import import_jsonl

    target: Path = args.ledger
    if target.exists():
        raise CommandError(f"{target} exists; import writes a new ledger file")
    if not Path(args.file).is_file():
        raise CommandError(f"no export file at {args.file}")
    try:
        with proof_checker(args.zk_store), Ledger.open(target) as ledger, \
                open(args.file, encoding="utf-8") as lines:
            count = import_jsonl(ledger, lines)
            head = ledger.head_hash.hex()
    except (LedgerCorrupt, ValueError) as exc:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        raise CommandError(f"{args.file}: {exc}; nothing was imported") from exc
    print(f"imported {count} events into {target}; head {head}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with _open(args.ledger, args.zk_store) as ledger:
        state = ledger.state
    account = resolve_account(state, args.account)
    record = state.accounts.get(account)
    if record is None:
        raise CommandError(f"account {account.hex()} is not on the ledger")
    out = account_json(account, record, state)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"account   {out['account']}")
    print(f"balance   {record.balance}")
    print(f"nonce     {record.nonce}")
    for role in ("node", "validator"):
        s = out[role]
        standing = "tombstoned" if s["slashed_out"] else "jailed" if s["jailed"] else "active"
        if not s["amount"] and not s["offences"] and not s["slashed_out"]:
            standing = "not bonded"
        print(f"{role:<9} {s['amount']} bonded, {standing}, {s['offences']} offences")
    for e in out["unbonding"]:
        print(f"unbonding {e['amount']} as {e['role']} since round {e['started_round']}, "
              f"released in round {e['release_round']}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    with _open(args.ledger, args.zk_store) as ledger:
        account = resolve_account(ledger.state, args.account)
        entries = ledger.history(account)
    rows = [
        {"seq": e.seq, "type": e.event.TYPE, "hash": e.hash.hex()} for e in entries
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no events touch {account.hex()}")
    else:
        for row in rows:
            print(f"{row['seq']:>8}  {row['type']:<20} {row['hash']}")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ledger = commands.add_parser(
        "ledger",
        help="verify, export, import and read a ledger file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    path_help = "the ledger file (default: $ASSAY_HOME/ledger.sqlite, ASSAY_HOME=~/.assay)"

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_text)
        parser.add_argument("--ledger", type=Path, default=default_ledger_path(), help=path_help)
        parser.add_argument("--zk-store", type=Path, default=None,
                            help="zk artifact store holding the pinned SRS, to re-check the "
                            "proofs of accuse_invalid_proof events (default: $ASSAY_HOME/zk)")
        return parser

    verify = action("verify", "replay the log from genesis and check everything")
    verify.set_defaults(func=cmd_verify)
    export = action("export", "write the log as JSON lines")
    export.add_argument("--out", default=None, help="file to write (default: standard output)")
    export.set_defaults(func=cmd_export)
    importer = action("import", "build a new ledger file from exported JSON lines")
    importer.add_argument("file", help="JSON lines written by `assay ledger export`")
    importer.set_defaults(func=cmd_import)
    show = action("show", "an account's balance, stake, standing and unbonding")
    show.add_argument("account", help="public key in hex, or a unique prefix")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)
    history = action("history", "the events that touched an account")
    history.add_argument("account", help="public key in hex, or a unique prefix")
    history.add_argument("--json", action="store_true")
    history.set_defaults(func=cmd_history)
