"""``assay receipt verify FILE``: check a node's saved HTTP response against the ledger.

The response (a JSON body, or the events of a streamed one) carries the
signed request, the signed commitment and the output (:mod:`protocol.receipt`);
an ``/v1/embeddings`` answer carries one such receipt per item, and each is
checked.
The command checks the signatures, that the output is the committed one and
is what the response showed, and asks the ledger whether the job is recorded
with that commitment. Exit status 0 when everything holds, 1 when a check
fails (the line names it), 2 for an unusable command. A job the node never
recorded can be recorded from the receipt with ``--record``, after which
validators may sample it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def cmd_receipt_verify(args: argparse.Namespace) -> int:
    from assay.arguments import CommandError
    from assay.commands._ledger_call import with_ledger
    from protocol.keys import SigningKey
    from protocol.receipt import ReceiptError, check_receipt, check_recorded, read_receipts

    try:
        saved = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {args.file}: {exc}") from exc
    try:
        receipts = read_receipts(saved)
        for receipt in receipts:
            check_receipt(receipt)
    except ReceiptError as exc:
        print(f"receipt FAILS: {exc}")
        return 1
    for receipt in receipts:
        commitment = receipt.commitment
        print(f"signatures hold; the output is the one node {commitment.node.hex()[:16]}… "
              f"committed to for job {commitment.job_id.hex()}")
    if args.offline:
        return 0
    if not args.ledger:
        raise CommandError("give --ledger ADDRESS to check the job is recorded, or --offline")

    async def recorded(client: Any) -> list[Any]:
        jobs = []
        for receipt in receipts:
            job = await client.job(receipt.commitment.job_id)
            if not job.found and args.record:
                await client.call("record_job", request=receipt.request.encode(),
                                  commitment=receipt.commitment.encode())
                print("the job was not recorded; recorded it from the receipt")
                job = await client.job(receipt.commitment.job_id)
            jobs.append(job)
        return jobs

    jobs = with_ledger(SigningKey.generate(), args.ledger, recorded)
    try:
        for receipt, job in zip(receipts, jobs, strict=True):
            check_recorded(receipt, job)
    except ReceiptError as exc:
        print(f"receipt FAILS: {exc}")
        return 1
    for job in jobs:
        print(f"recorded on the ledger in round {job.recorded_round} (status {job.status})")
    return 0


def register(commands: Any) -> None:
    receipt = commands.add_parser("receipt", help="check a node's saved HTTP response")
    actions = receipt.add_subparsers(dest="receipt_command", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify", help="signatures, output against commitment, and the ledger's record of the job")
    verify.add_argument("file", help="a saved response: JSON, or a streamed response's events")
    verify.add_argument("--ledger", default=None, help="the ledger's /p2p/ address")
    verify.add_argument("--offline", action="store_true", help="skip the ledger check")
    verify.add_argument("--record", action="store_true",
                        help="record the job from the receipt if the node did not")
    verify.set_defaults(func=cmd_receipt_verify)
