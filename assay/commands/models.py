"""``assay models``: the local model registry (add, list, build a zoo model)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from assay.arguments import open_registry, positive_int


def cmd_models_add(args: argparse.Namespace) -> int:
    from prover.registry import ModelRegistry

    registry = open_registry(args)
    assert isinstance(registry, ModelRegistry)
    entry = registry.add(Path(args.directory), mode=args.mode, name=args.name)
    print(f"registered {entry.name} ({entry.kind}, mode {entry.mode}) as {entry.model_id.hex()}")
    if args.suggest:
        from assay.commands.zk import print_mode_suggestion

        print_mode_suggestion(entry.path, args.latency)
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from prover.registry import ModelRegistry

    registry = open_registry(args)
    assert isinstance(registry, ModelRegistry)
    entries = registry.list()
    if args.json:
        print(json.dumps([{"id": e.model_id.hex(), **e.to_json()} for e in entries], indent=2))
        return 0
    if not entries:
        print(f"no models registered in {registry.path}")
        return 0
    for e in entries:
        print(f"{e.model_id.hex()}  {e.mode:<6} {e.kind:<6} {e.name}  {e.path}")
    return 0


def cmd_models_build(args: argparse.Namespace) -> int:
    from prover import zoo
    from prover.model_store import save_model

    built = zoo.build(args.name, seed=args.seed)
    model_id = save_model(Path(args.out), built.module, built.kind, built.config)
    print(f"wrote {args.name} (seed {args.seed}) to {args.out}; model id {model_id.hex()}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    models = commands.add_parser("models", help="the local model registry")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    registry_help = "registry directory (default: $ASSAY_HOME/models, ASSAY_HOME=~/.assay)"
    add = model_commands.add_parser("add", help="register a model directory (safetensors)")
    add.add_argument("directory", help="directory with model.safetensors and its config")
    add.add_argument(
        "--mode", default="exact", choices=("exact", "llm", "tensor", "zk"),
        help="verification mode (exact)",
    )
    add.add_argument("--name", default=None, help="a name to show (default: the directory name)")
    add.add_argument("--registry", default=None, help=registry_help)
    add.add_argument(
        "--no-suggest", dest="suggest", action="store_false",
        help="skip the suggested verification mode (zk or sampled re-execution)",
    )
    add.add_argument(
        "--latency", type=float, default=10.0,
        help="seconds a client accepts for a checked result, for the suggestion (10)",
    )
    add.set_defaults(func=cmd_models_add)
    listing = model_commands.add_parser("list", help="list registered models")
    listing.add_argument("--registry", default=None, help=registry_help)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_models_list)
    build = model_commands.add_parser("build", help="write a seeded zoo model to a directory")
    build.add_argument("name", choices=("mlp", "cnn", "gpt2", "llama"))
    build.add_argument("--seed", type=positive_int, default=0)
    build.add_argument("--out", required=True, help="directory to write")
    build.set_defaults(func=cmd_models_build)
