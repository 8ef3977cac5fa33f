"""``assay calibrate MODEL``: measure honest variation and store the model's tolerances.

For a ``tensor``-mode model it runs the matrix of
:mod:`verifier.tensor_calibration` — threads 1 and 2, every
``ATEN_CPU_CAPABILITY`` this CPU has (one subprocess each), batches of 1, 8
and 32 with each job at several rows — in the dtype the model is registered
to compute in, and stores the output and sketch tolerances under
``params["tensor"]``.

For an ``llm``-mode model:

Runs the honest-variation matrix of :mod:`verifier.calibrate` (batching with
padding, 1 and 2 threads, SDPA and eager attention, KV cache against
prefill, float32 and bfloat16) on a model registered in the ``llm`` mode, and
stores the tolerances (per-token gap, top-p mass slack, per-job gap sum,
sketch), with the margin they leave and what was measured, in
the model's registry entry under ``params["llm"]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def find_entry(registry: Any, model: str) -> Any:
    from prover.registry import UnknownModel

    for entry in registry.list():
        if model in (entry.name, entry.model_id.hex()):
            return entry
    raise UnknownModel(f"no model named or with id {model!r} in the registry at {registry.path}")


def cmd_calibrate(args: argparse.Namespace) -> int:
    from assay.arguments import CommandError
    from prover.llm.job import GAP_SUM_TOKENS, REGISTRY_KEY
    from prover.llm.model import load_llm
    from prover.model_store import load_model
    from prover.registry import ModelRegistry, default_registry_root
    from verifier.calibrate import calibrate

    registry = ModelRegistry(Path(args.registry) if args.registry else default_registry_root())
    entry = find_entry(registry, args.model)
    if entry.mode == "tensor":
        return _calibrate_tensor(args, registry, entry)
    if args.jobs is None:
        args.jobs = 12
    if args.jobs < 1:
        raise CommandError(f"--jobs must be at least 1, got {args.jobs}")
    if entry.mode != "llm":
        raise CommandError(
            f"model {entry.name} is registered in mode {entry.mode!r}; calibration is for the "
            "tensor and llm modes (exact models are judged bit for bit)"
        )
    module, _ = load_model(Path(entry.path))
    template = entry.params.get("chat_template")
    llm = load_llm(Path(entry.path), module,
                   chat_template=template if isinstance(template, str) else None)
    calibration = calibrate(llm, jobs_per_setting=args.jobs, seed=args.seed)
    registry.update_params(entry.model_id, {REGISTRY_KEY: calibration.to_json()})
    if args.json:
        print(json.dumps(calibration.to_json(), indent=2))
        return 0
    print(f"calibrated {entry.name} ({entry.model_id.hex()[:16]}…), margin "
          f"{calibration.record['margin']} of each threshold:")
    for dtype, tol in sorted(calibration.tolerances.items()):
        seen = calibration.record["measured"][dtype]
        print(f"  {dtype:<9} token_tau {tol.token_tau:.3g} (worst honest gap/2δ "
              f"{max(seen['max_gap'], 2 * seen['max_logit_dev']):.3g}), mass_tau "
              f"{min(map(min, tol.mass_tau)):.3g}–{max(map(max, tol.mass_tau)):.3g} (worst "
              f"honest T·Δmass {max(map(max, seen['max_mass_dev'])):.3g}), gap_sum_tau "
              f"{tol.gap_sum_tau:.3g} per {GAP_SUM_TOKENS} tokens (worst honest "
              f"{seen['max_gap_sum']:.3g}), mass_sum_tau {tol.mass_sum_tau:.3g} (worst honest "
              f"{seen['max_mass_sum']:.3g}), sketch step "
              f"2^{tol.sketch_exp}, sketch limits at {GAP_SUM_TOKENS} tokens: value "
              f"{tol.sketch_value_limit(GAP_SUM_TOKENS):.3g}, rms "
              f"{tol.sketch_rms_limit(GAP_SUM_TOKENS):.3g} quanta (honest block norm ≤ "
              f"{tol.sketch_norm_tau:.3g}, energy ≤ {tol.sketch_energy_tau:.3g}); "
              f"{seen['jobs']} jobs, "
              f"{seen['positions']} positions")
    return 0


def _calibrate_tensor(args: argparse.Namespace, registry: Any, entry: Any) -> int:
    import sys

    from assay.arguments import CommandError
    from verifier.tensor import REGISTRY_KEY
    from verifier.tensor_calibration import calibrate_tensor

    if args.jobs is None:
        args.jobs = 32
    if args.jobs < 2:
        raise CommandError(f"tensor calibration needs --jobs of at least 2, got {args.jobs}")
    dtype = str(entry.params.get("dtype", "float32"))
    record = calibrate_tensor(
        Path(entry.path), dtype=dtype, jobs=args.jobs, isa_paths=not args.this_isa_only,
        progress=None if args.json else lambda label: print(f"  measuring {label}",
                                                             file=sys.stderr),
    )
    registry.update_params(entry.model_id, {REGISTRY_KEY: record})
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    worst = record["worst_honest"]
    print(f"calibrated {entry.name} ({entry.model_id.hex()[:16]}…) in {dtype} over "
          f"{record['runs']} honest runs of {record['jobs']} jobs "
          f"({', '.join(record['settings'])}; "
          f"batches {record['batch_sizes']}):")
    print(f"  output tolerance {record['output_tau']:.3g} (worst honest {worst['output']:.3g}), "
          f"sketch tolerance {record['sketch_tau']:.3g} (worst honest {worst['sketch']:.3g}); "
          f"floor {record['floor']:g}")
    return 0


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "calibrate",
        help="measure honest variation of a tensor or llm model and store its tolerances"
    )
    parser.add_argument("model", help="registered model name or id (hex)")
    parser.add_argument(
        "--jobs", type=int, default=None,
        help="honest jobs per setting and dtype (llm 12, tensor 32)",
    )
    parser.add_argument(
        "--this-isa-only", action="store_true",
        help="tensor mode: measure this process's CPU path only, not every ATEN_CPU_CAPABILITY",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the honest jobs (1)")
    parser.add_argument(
        "--registry", default=None,
        help="registry directory (default: $ASSAY_HOME/models, ASSAY_HOME=~/.assay)",
    )
    parser.add_argument("--json", action="store_true", help="print the calibration as JSON")
    parser.set_defaults(func=cmd_calibrate)
