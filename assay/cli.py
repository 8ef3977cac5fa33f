"""The ``assay`` command: the composition root that wires the roles together.

Nothing imports ``assay/``; it imports ``protocol`` and the roles, inside the
commands that need them, so ``assay --help`` stays fast and a role's heavy
imports (torch, transformers) load only when used. Each topic's commands live
in :mod:`assay.commands`, found at start-up.

Every command turns a refused input into one line on stderr that names what
was wrong, and exit status 2; nothing is changed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from assay.arguments import EXIT_USAGE, CommandError, positive_int, progress_bar, rate_ppm
from protocol.sampling import PPM

# -- demo --------------------------------------------------------------------------------------


def cmd_demo_zk(args: argparse.Namespace) -> int:
    """`assay demo --zk`: every job proved and every proof checked; forged proofs caught."""
    from assay.demo import run_zk_demo
    from prover.zk import DEVNET_SRS_WARNING

    print(f"WARNING: {DEVNET_SRS_WARNING}", file=sys.stderr)
    summary = run_zk_demo(jobs=args.zk_jobs, seed=args.seed, workdir=args.workdir)
    report = summary.to_json()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"zk demo: {summary.jobs} jobs of a small MLP (2^{summary.logrows}-row EZKL circuit, "
            f"setup {summary.setup_seconds:.1f} s), every proof checked\n"
            f"  valid proofs {summary.valid} · forged {summary.forged} · caught {summary.caught} "
            f"as INVALID_PROOF evidence · missed {summary.missed} · honest flagged "
            f"{summary.honest_flagged}\n"
            f"  prove {report['prove_seconds_mean']} s/job · "
            f"verify {report['verify_ms_mean']} ms/job · proof {summary.proof_bytes} bytes"
        )
        for reason in summary.reasons:
            print(f"  caught: {reason}")
        print(
            f"  ledger re-checked {summary.evidence_accepted} INVALID_PROOF evidence, no "
            f"committee: forger slashed {summary.forger_slashed} "
            f"({summary.forger_stake_before} → {summary.forger_stake_after} staked"
            f"{', jailed' if summary.forger_jailed else ''}) · honest node earned "
            f"{summary.honest_earnings}, lost {summary.honest_stake_lost} · "
            f"{summary.ledger_events} ledger events replayed"
        )
    caught_and_slashed = (
        summary.caught == summary.forged
        and summary.evidence_accepted == summary.caught
        and summary.honest_flagged == 0
        and summary.honest_stake_lost == 0
        and (summary.forged == 0 or summary.forger_slashed > 0)
    )
    return 0 if caught_and_slashed else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from assay.demo import DemoConfig, DemoConfigError, run_demo

    if args.zk:
        return cmd_demo_zk(args)
    try:
        config = DemoConfig(
            nodes=args.nodes,
            cheaters=args.cheaters,
            cheat_rate_ppm=args.cheat_rate,
            sample_ppm=args.p,
            jobs=args.jobs,
            validators=args.validators,
            seed=args.seed,
            threads=args.threads,
            llm=args.llm,
            canary_rate_ppm=args.canary_rate,
            lazy_validators=args.lazy_validators,
        )
    except DemoConfigError as exc:
        raise CommandError(str(exc)) from exc
    with progress_bar(disable=args.json) as progress:
        task = progress.add_task("jobs", total=config.jobs)
        summary = run_demo(
            config,
            workdir=args.workdir,
            on_job=lambda n: progress.advance(task, n),
        )
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        _print_demo(summary)
    ok = summary.honest_slashed == 0 and summary.validators_slashed == 0
    return 0 if ok else 1


def _print_demo(summary: object) -> None:
    from rich.console import Console
    from rich.table import Table

    from assay.demo import DemoSummary

    assert isinstance(summary, DemoSummary)
    out = Console()
    if not out.is_terminal:
        out = Console(width=120)
    table = Table(title="Assay demo: per node")
    for column in (
        "node", "role", "jobs", "cheated", "sampled", "mismatches",
        "stake before", "stake after", "earnings",
    ):
        table.add_column(column, justify="left" if column in ("node", "role") else "right")
    for n in summary.nodes:
        role = "cheater" if n.cheater else "honest"
        after = f"{n.stake_after}" + (" (slashed out)" if n.slashed_out else "")
        table.add_row(
            f"{n.name} ({n.node_id[:8]})", role, str(n.jobs), str(n.cheated), str(n.sampled),
            str(n.mismatches), str(n.stake_before), after, str(n.earnings),
        )
    out.print(table)
    p = summary.config.sample_ppm / PPM
    out.print(
        f"jobs {summary.jobs} · sampled {summary.sampled} (p = {p:g}) · disputes "
        f"{summary.disputes} (fraud {summary.disputes_fraud}, valid {summary.disputes_valid})"
    )
    out.print(
        f"cheaters slashed {summary.cheaters_slashed}/{summary.cheaters} · honest nodes slashed "
        f"{summary.honest_slashed} · validators slashed {summary.validators_slashed}"
    )
    out.print(
        f"canaries {summary.canaries} (sampled {summary.canaries_sampled}, caught "
        f"{summary.canaries_caught}) · lazy validators slashed {summary.lazy_slashed}"
    )
    out.print(
        f"verification overhead {summary.verification_overhead:.1%} of inference compute · "
        f"{summary.ledger_events} ledger events, chain verified · tokens conserved: "
        f"{summary.supply_conserved} · {summary.wall_seconds:.1f} s"
    )


# -- parser ------------------------------------------------------------------------------------


def _version() -> str:
    """The installed package's version (``make install`` installs it, editable)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("assay")
    except PackageNotFoundError:
        return "unknown (not installed; run make install)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assay",
        description="Verifiable AI inference: nodes commit, validators sample, cheats are slashed.",
    )
    parser.add_argument("--version", action="version", version=f"assay {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run a local network that catches a cheating node")
    demo.add_argument("--nodes", type=positive_int, default=4, help="inference nodes (4)")
    demo.add_argument("--cheaters", type=positive_int, default=1, help="of which cheat (1)")
    demo.add_argument(
        "--cheat-rate", type=rate_ppm, default=500_000,
        help="fraction of its jobs a cheater runs on another model (0.5)",
    )
    demo.add_argument(
        "-p", "--sample-rate", dest="p", type=rate_ppm, default=200_000,
        help="probability p that a job is re-executed (0.2)",
    )
    demo.add_argument("--jobs", type=positive_int, default=240, help="client jobs (240)")
    demo.add_argument("--validators", type=positive_int, default=7, help="validators (7)")
    demo.add_argument(
        "--canary-rate", type=rate_ppm, default=50_000,
        help="share of jobs the operator adds as canaries, deliberately wrong (0.05)",
    )
    demo.add_argument(
        "--lazy-validators", type=int, default=0,
        help="validators that attest VALID without re-executing, for canaries to catch (0)",
    )
    demo.add_argument("--seed", type=positive_int, default=7, help="seed for everything (7)")
    demo.add_argument("--threads", type=positive_int, default=1, help="torch threads (1)")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument(
        "--zk", action="store_true",
        help="the zk path: every job of a small MLP proved with EZKL, every proof checked",
    )
    demo.add_argument("--zk-jobs", type=positive_int, default=8, help="jobs in --zk (8)")
    demo.add_argument(
        "--llm", action="store_true",
        help="serve GPT-2 and Llama generations in the llm mode (seeded sampling + sketch)",
    )
    demo.add_argument(
        "--workdir", type=Path, default=None,
        help="keep the registry and SQLite ledger here (default: a temporary directory)",
    )
    demo.set_defaults(func=cmd_demo)

    from assay import commands as extra_commands

    for module in extra_commands.modules():
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from protocol.errors import ProtocolError

    try:
        code = args.func(args)
    except CommandError as exc:
        print(f"assay: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ProtocolError, ValueError, OSError) as exc:
        print(f"assay: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    assert isinstance(code, int)
    return code
