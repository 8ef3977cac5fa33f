"""``assay sim``: run and sweep simulated networks on the real ledger rules (netsim).

``assay sim run CONFIG.toml`` writes one run folder (resolved config, seed,
git revision, Parquet tables, plots); ``assay sim sweep CONFIG.toml --grid
p=0.001:0.2:20 --grid slash=1000,5000`` runs every grid point on a local
process pool, or on Ray with ``--ray`` or ``RAY_ADDRESS`` set. netsim is
imported inside the commands, so ``assay --help`` does not load it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from assay.arguments import CommandError, positive_int, progress_bar

DEFAULT_ROOT = Path("netsim-runs")


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    from netsim.config import parse_assignment

    overrides = dict(parse_assignment(text) for text in args.set)
    if args.seed is not None:
        overrides["seed"] = args.seed
    if getattr(args, "path", None) is not None:
        overrides["path"] = args.path
    return overrides


def _load(args: argparse.Namespace) -> Any:
    from netsim.config import ConfigError, load_config

    if not Path(args.config).is_file():
        raise CommandError(f"config file {args.config} does not exist")
    try:
        return load_config(Path(args.config), _overrides(args))
    except ConfigError as exc:
        raise CommandError(f"{args.config}: {exc}") from exc


def cmd_sim_run(args: argparse.Namespace) -> int:
    from netsim.genesis import ParamsRefused
    from netsim.output import jsonable, write_run
    from netsim.run import run_tables

    config = _load(args)
    out = args.out or DEFAULT_ROOT / f"{Path(args.config).stem}-seed{config.seed}"
    started = time.perf_counter()
    with progress_bar(args.json) as progress:
        task = progress.add_task(f"{config.path} path, epochs", total=config.epochs)
        try:
            tables = run_tables(config, on_epoch=lambda n: progress.advance(task, n))
        except ParamsRefused as exc:
            raise CommandError(f"the ledger refuses these parameters: {exc}") from exc
    seconds = time.perf_counter() - started
    write_run(Path(out), config, tables, seconds, plots=not args.no_plots)
    if args.json:
        print(json.dumps(jsonable({"out": str(out), **tables.summary}), indent=2))
    else:
        print(f"wrote {out} ({config.path} path, {tables.summary['jobs']} jobs, {seconds:.1f} s)")
        for key, value in tables.summary.items():
            shown = f"{value:.6g}" if isinstance(value, float) else str(value)
            print(f"  {key:<28} {shown}")
    return 0


def cmd_sim_sweep(args: argparse.Namespace) -> int:
    import tomllib

    from netsim.config import ConfigError, set_key
    from netsim.sweep import parse_axis, run_sweep, use_ray, write_sweep

    base = _load(args)
    if not args.grid:
        raise CommandError("a sweep needs at least one --grid NAME=START:STOP:COUNT or NAME=A,B")
    try:
        axes = [parse_axis(text) for text in args.grid]
        tree = tomllib.loads(Path(args.config).read_text())
        for key, value in _overrides(args).items():
            set_key(tree, key, value)
    except ConfigError as exc:
        raise CommandError(str(exc)) from exc
    backend = "ray" if use_ray(args.ray) else "local"
    out = args.out or DEFAULT_ROOT / f"{Path(args.config).stem}-sweep"
    total = args.replicates
    for axis in axes:
        total *= len(axis.values)
    started = time.perf_counter()
    with progress_bar(False) as progress:
        task = progress.add_task(f"sweep ({backend})", total=total)
        try:
            rows = run_sweep(tree, axes, args.replicates, args.workers, args.ray,
                             advance=lambda: progress.advance(task, 1))
        except ConfigError as exc:
            raise CommandError(str(exc)) from exc
    seconds = time.perf_counter() - started
    write_sweep(Path(out), base, axes, rows, seconds, backend, plots=not args.no_plots)
    refused = sum(r["status"] != "ok" for r in rows)
    print(f"wrote {out}: {len(rows)} points on {backend} in {seconds:.1f} s"
          + (f", {refused} refused or invalid (see the reason column)" if refused else ""))
    return 0


def register(commands: Any) -> None:
    sim = commands.add_parser("sim", help="simulate networks on the real ledger rules (netsim)")
    actions = sim.add_subparsers(dest="sim_command", required=True, metavar="ACTION")

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("config", help="TOML configuration (see netsim/examples/)")
        parser.add_argument("--seed", type=positive_int, default=None, help="override the seed")
        parser.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE",
            help="override a key (dotted path or alias p, slash, R, C, r, q, k); repeatable",
        )
        parser.add_argument("--out", type=Path, default=None,
                            help=f"output folder (default: {DEFAULT_ROOT}/<config>-…)")
        parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")

    run = actions.add_parser("run", help="run one configuration into a run folder")
    common(run)
    run.add_argument("--path", choices=("fast", "reference"), default=None,
                     help="protocol path (default: the config's, else fast)")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.set_defaults(func=cmd_sim_run)

    sweep = actions.add_parser("sweep", help="run a grid of configurations")
    common(sweep)
    sweep.add_argument(
        "--grid", action="append", default=[], metavar="NAME=SPEC",
        help="an axis: NAME=START:STOP:COUNT (inclusive) or NAME=A,B,C; repeatable",
    )
    sweep.add_argument("--replicates", type=positive_int, default=1,
                       help="seeds per point: seed, seed+1, … (1)")
    sweep.add_argument("--workers", type=positive_int, default=None,
                       help="local processes (default: one per CPU)")
    sweep.add_argument("--ray", action="store_true",
                       help="run on Ray (also when RAY_ADDRESS is set)")
    sweep.set_defaults(func=cmd_sim_sweep, path=None)
