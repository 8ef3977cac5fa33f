"""``assay signer``: move a node's signer protection database between machines.

The database (``prover.signer_protection``) records every commitment a node
key signed, so the node never signs a second, different one for a job. When a
key moves to a new machine its record must move too, or the new machine could
sign what the old one already did: ``export`` writes the interchange JSON
(modelled on Ethereum's EIP-3076) and ``import`` merges one, blocking any job
on which the two disagree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from assay.arguments import CommandError


def default_protection_path() -> Path:
    """``$ASSAY_HOME/signer-protection.sqlite``, with ``ASSAY_HOME`` defaulting to ``~/.assay``."""
    home = Path(os.environ.get("ASSAY_HOME") or "~/.assay").expanduser()
    from prover.signer_protection import SIGNER_PROTECTION_FILE

    return home / SIGNER_PROTECTION_FILE


def cmd_export(args: argparse.Namespace) -> int:
    from prover.signer_protection import SignerProtection

    if not args.db.is_file():
        raise CommandError(f"no signer protection database at {args.db}")
    with SignerProtection.open(args.db) as protection:
        document = protection.export()
    text = json.dumps(document, indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
    count = sum(len(entry["signed_commitments"]) for entry in document["data"])
    print(f"exported {count} signed commitments", file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from prover.signer_protection import SignerProtection

    try:
        document = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CommandError(f"{args.file} is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise CommandError(f"{args.file} is not an interchange document")
    args.db.parent.mkdir(parents=True, exist_ok=True)
    with SignerProtection.open(args.db) as protection:
        added, blocked = protection.import_(document)
    print(f"imported {added} signed commitments into {args.db}; {blocked} jobs now blocked")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    signer = commands.add_parser(
        "signer",
        help="export or import a node's signer protection database",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = signer.add_subparsers(dest="signer_command", required=True, metavar="ACTION")
    db_help = (
        "the database: a running node keeps it in its data_dir "
        "(default: $ASSAY_HOME/signer-protection.sqlite, ASSAY_HOME=~/.assay)"
    )
    export = actions.add_parser("export", help="write the interchange JSON")
    export.add_argument("--db", type=Path, default=default_protection_path(), help=db_help)
    export.add_argument("--out", default=None, help="file to write (default: standard output)")
    export.set_defaults(func=cmd_export)
    importer = actions.add_parser("import", help="merge an interchange JSON file")
    importer.add_argument("file", help="interchange JSON written by `assay signer export`")
    importer.add_argument("--db", type=Path, default=default_protection_path(), help=db_help)
    importer.set_defaults(func=cmd_import)
