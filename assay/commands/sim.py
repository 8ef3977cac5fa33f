"""``assay sim``: run and sweep simulated networks on the real ledger rules (netsim).

``assay sim run CONFIG.toml --seeds 10`` writes one run folder (resolved
config, command line, git revision, Parquet tables, plots) and prints every
summary figure's mean and 95 % interval over the seeds; ``assay sim sweep
CONFIG.toml --grid p=0.001:0.2:20 --grid slash=1000,5000 --seeds 10`` runs
every grid point and seed on a local process pool, or on Ray with ``--ray``
or ``RAY_ADDRESS`` set. Everything the command was given is checked before
anything runs. netsim is imported inside the commands, so ``assay --help``
does not load it.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
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
    from netsim.simulation import check_seeds

    if not Path(args.config).is_file():
        raise CommandError(f"config file {args.config} does not exist")
    try:
        check_seeds(args.seeds, "--seeds")
        return load_config(Path(args.config), _overrides(args))
    except ConfigError as exc:
        raise CommandError(f"{args.config}: {exc}") from exc


def command_line(args: argparse.Namespace) -> str:
    """The command, as parsed, that reproduces this run or sweep."""
    parts = ["assay", "sim", args.sim_command, str(args.config), "--seeds", str(args.seeds)]
    if args.seed is not None:
        parts += ["--seed", str(args.seed)]
    for text in args.set:
        parts += ["--set", text]
    if getattr(args, "path", None) is not None:
        parts += ["--path", args.path]
    for text in getattr(args, "grid", []):
        parts += ["--grid", text]
    if args.out is not None:
        parts += ["--out", str(args.out)]
    return shlex.join(parts)


def _shown(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else "-"


def print_estimates(runs: Any) -> None:
    from netsim.intervals import INTERVAL
    from netsim.tables import is_measured

    several = len(runs.seeds) > 1
    heading = INTERVAL if several else "one seed: no interval (--seeds N gives one)"
    print(f"  {'figure':<34} {'mean':>12}   {heading}")
    for name, e in runs.estimates.items():
        interval = f"[{_shown(e.low)}, {_shown(e.high)}]" if several else ""
        flag = "  inconclusive: interval spans 0" if is_measured(name) and e.inconclusive else ""
        print(f"  {name:<34} {_shown(e.mean):>12}   {interval}{flag}")
    print(f"  {'tokens conserved':<34} {'yes' if runs.conserved else 'NO':>12}")


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def cmd_sim_run(args: argparse.Namespace) -> int:
    from netsim.genesis import ParamsRefused, check_params
    from netsim.intervals import INTERVAL
    from netsim.output import jsonable, run_folder, summary_json, write_run
    from netsim.simulation import run_seeds

    config = _load(args)
    try:
        check_params(config)
    except ParamsRefused as exc:
        raise CommandError(f"the ledger refuses these parameters: {exc}") from exc
    out = args.out or run_folder(DEFAULT_ROOT, Path(args.config).stem, config, args.seeds)
    started = time.perf_counter()
    with progress_bar(args.json) as progress:
        task = progress.add_task(f"{config.path} path, {args.seeds} seed(s), epochs",
                                 total=config.epochs * args.seeds)
        runs = run_seeds(config, args.seeds, on_epoch=lambda n: progress.advance(task, n))
    seconds = time.perf_counter() - started
    write_run(Path(out), runs, seconds, command_line(args), plots=not args.no_plots)
    _warn(runs.warnings)
    if args.json:
        print(json.dumps(jsonable({
            "out": str(out), "seeds": list(runs.seeds), "interval": INTERVAL,
            "conserved": runs.conserved, "summary": summary_json(runs),
            "inconclusive": runs.inconclusive, "warnings": runs.warnings,
        }), indent=2))
        return 0
    jobs = sum(run.summary["jobs"] for run in runs.runs)
    print(f"wrote {out} ({config.path} path, seeds {runs.seeds[0]}–{runs.seeds[-1]}, "
          f"{jobs} jobs, {seconds:.1f} s)")
    print_estimates(runs)
    if runs.inconclusive:
        print(f"inconclusive over {len(runs.seeds)} seeds: {', '.join(runs.inconclusive)}")
    return 0


def cmd_sim_sweep(args: argparse.Namespace) -> int:
    import tomllib

    from netsim.config import ConfigError, set_key
    from netsim.grid import grid_points, parse_axis, point_table, run_points, use_ray
    from netsim.output import sweep_folder, write_sweep

    base = _load(args)
    if not args.grid:
        raise CommandError("a sweep needs at least one --grid NAME=START:STOP:COUNT or NAME=A,B")
    try:
        axes = [parse_axis(text) for text in args.grid]
        tree = tomllib.loads(Path(args.config).read_text())
        for key, value in _overrides(args).items():
            set_key(tree, key, value)
        points = grid_points(tree, axes)
    except ConfigError as exc:
        raise CommandError(str(exc)) from exc
    backend = "ray" if use_ray(args.ray) else "local"
    out = args.out or sweep_folder(DEFAULT_ROOT, Path(args.config).stem, base, axes, args.seeds)
    started = time.perf_counter()
    with progress_bar(False) as progress:
        task = progress.add_task(f"sweep ({backend})", total=len(points) * args.seeds)
        rows = run_points(tree, points, args.seeds, args.workers, args.ray,
                          advance=lambda: progress.advance(task, 1))
    seconds = time.perf_counter() - started
    table = point_table(rows, axes)
    write_sweep(Path(out), base, axes, args.seeds, rows, table, seconds, backend,
                command_line(args), plots=not args.no_plots)
    refused = sum(p["status"] != "ok" for p in table)
    warned = sum(bool(p["warnings"]) for p in table)
    inconclusive = sum(bool(p["inconclusive"]) for p in table)
    print(f"wrote {out}: {len(table)} points × {args.seeds} seed(s) on {backend} "
          f"in {seconds:.1f} s")
    if refused:
        print(f"  {refused} points refused by the ledger (see the reason column)")
    if inconclusive:
        print(f"  {inconclusive} points with inconclusive figures (see the inconclusive column)")
    if warned:
        print(f"warning: {warned} points degenerated or rest on too small a sample "
              "(see the warnings column of sweep.parquet and sweep.json)", file=sys.stderr)
    return 0


def register(commands: Any) -> None:
    sim = commands.add_parser("sim", help="simulate networks on the real ledger rules (netsim)")
    actions = sim.add_subparsers(dest="sim_command", required=True, metavar="ACTION")

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("config", help="TOML configuration (see netsim/examples/)")
        parser.add_argument("--seed", type=positive_int, default=None,
                            help="override the first seed")
        parser.add_argument("--seeds", type=int, default=1,
                            help="run seeds seed, seed+1, …: means and 95 %% intervals (1)")
        parser.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE",
            help="override a key (dotted path or alias p, slash, R, C, r, q, k); repeatable",
        )
        parser.add_argument("--out", type=Path, default=None,
                            help=f"output folder (default: {DEFAULT_ROOT}/<config>-<hash>)")
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
        help="an axis: NAME=START:STOP:COUNT (a range) or NAME=A,B,C (listed); repeatable",
    )
    sweep.add_argument("--workers", type=positive_int, default=None,
                       help="local processes (default: one per CPU)")
    sweep.add_argument("--ray", action="store_true",
                       help="run on Ray (also when RAY_ADDRESS is set)")
    sweep.set_defaults(func=cmd_sim_sweep, path=None)
