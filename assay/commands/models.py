"""``assay models``: the local model registry (add, remove, list, run, build a zoo model).

``add`` lists a model directory under a verification mode. With no ``--mode``
an integer model is ``exact``, a transformers causal LM (a ``save_pretrained``
directory of any architecture ``AutoModelForCausalLM`` builds, with its
``tokenizer.json`` and chat template) ``llm``, and any other float model
``tensor``. A ``.gguf`` file is dequantised to a float32 directory under the
registry (:mod:`prover.gguf`) and listed under the file's own hash;
``--chat-template`` overrides an llm model's template, as vLLM's does. A float checkpoint
offered to the exact mode is refused unless ``--quantize`` turns it into its
integer twin (:mod:`prover.integer`): written beside the registry under
``quantized/``, registered instead of the float model, with the accuracy it
gives up against the float model measured on held-out inputs and recorded in
its entry (``params["quantization"]``).

``run`` is an operator's smoke test: one job, computed as a node computes it,
printed with the output hash its commitment would carry.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from assay.arguments import CommandError, open_registry, positive_int

ZOO_BUILD_NAMES = ("mlp", "cnn", "gpt2", "llama", "bert", "mlp-int8", "cnn-int8")
HELD_OUT_SEED = 1 << 30
"""Accuracy of a quantised model is measured on inputs from seeds ``HELD_OUT_SEED + i``."""
HELD_OUT_INPUTS = 256


def _quantise_directory(directory: Path, registry: Any, name: str | None) -> tuple[Path, Any]:
    """Quantise the float model in ``directory``: the integer twin's directory, and its report."""
    from prover import integer, zoo
    from prover.model_store import ModelDirectoryError, load_model, save_model

    try:
        module, meta = load_model(directory)
    except ModelDirectoryError as exc:
        raise CommandError(f"cannot quantise {directory}: {exc}") from exc
    if meta.kind not in integer.INTEGER_ARCHITECTURES:
        raise CommandError(
            f"--quantize turns {sorted(integer.INTEGER_ARCHITECTURES)} models into integer "
            f"models; this is a {meta.kind} (register it with --mode tensor or llm)"
        )
    integer_kind = f"{meta.kind}-int8"
    quantised, config = integer.quantize(
        meta.kind, meta.config, module, zoo.calibration_images(meta.kind, meta.config)
    )
    held_out = [zoo.example_input(integer_kind, config, HELD_OUT_SEED + i)
                for i in range(HELD_OUT_INPUTS)]
    report = integer.measure(module, quantised, config["quantization"]["output_scale"], held_out)
    target = Path(registry.root) / "quantized" / f"{name or directory.name}-int8"
    save_model(target, quantised, integer_kind, config)
    return target, report


def cmd_models_add(args: argparse.Namespace) -> int:
    from prover.registry import ModelRegistry

    registry = open_registry(args)
    assert isinstance(registry, ModelRegistry)
    directory = Path(args.directory)
    params: dict[str, Any] = {}
    if args.quantize:
        if args.mode not in (None, "exact"):
            raise CommandError(f"--quantize makes an exact-mode model, not a {args.mode} one")
        directory, report = _quantise_directory(directory, registry, args.name)
        params["quantization"] = report.to_json()
        print(f"quantised to int8 in {directory}: top-1 agreement with the float model "
              f"{report.top1_agreement:.1%} on {report.inputs} held-out inputs, largest logit "
              f"error {report.max_abs_error:.3g} (float logits' RMS {report.float_logit_rms:.3g})")
    if args.dtype != "float32":
        if args.mode != "tensor":
            raise CommandError("--dtype applies to the tensor mode: pass --mode tensor")
        params["dtype"] = args.dtype
    if args.chat_template is not None:
        from prover.llm.tokenizer import TokenizerError, read_chat_template

        try:
            params["chat_template"] = read_chat_template(args.chat_template)
        except TokenizerError as exc:
            raise CommandError(str(exc)) from exc
    mode = "exact" if args.quantize else args.mode
    if args.chat_template is not None and mode not in (None, "llm"):
        raise CommandError("--chat-template applies to the llm mode")
    entry = registry.add(directory, mode=mode, name=args.name, params=params)
    print(f"registered {entry.name} ({entry.kind}, mode {entry.mode}) as {entry.model_id.hex()}")
    if entry.mode == "tensor":
        print(f"measure its honest variation before validators can judge it: "
              f"assay calibrate {entry.name}")
    if entry.mode == "llm":
        print(f"measure its honest variation before validators judge its bfloat16 jobs: "
              f"assay calibrate {entry.name}")
    elif args.suggest and not args.quantize:
        from assay.commands.zk import print_mode_suggestion

        print_mode_suggestion(entry.path, args.latency)
    return 0


def cmd_models_remove(args: argparse.Namespace) -> int:
    from assay.commands.calibrate import find_entry
    from prover.registry import ModelRegistry

    registry = open_registry(args)
    assert isinstance(registry, ModelRegistry)
    entry = registry.remove(find_entry(registry, args.model).model_id)
    print(f"removed {entry.name} ({entry.model_id.hex()}); its directory {entry.path} is kept")
    return 0


def read_input_file(path: Path) -> Any:
    """A job input from a ``.npy`` file or a canonical tensor encoding (``protocol.codec``)."""
    import io

    import numpy as np
    import torch

    from protocol import codec
    from protocol.codec import Tensor
    from protocol.errors import ProtocolError

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read --input {path}: {exc}") from exc
    if raw.startswith(b"\x93NUMPY"):
        try:
            array = np.load(io.BytesIO(raw), allow_pickle=False)
        except ValueError as exc:
            raise CommandError(f"--input {path} is not a readable .npy array: {exc}") from exc
        return torch.from_numpy(np.ascontiguousarray(array))
    try:
        value = codec.decode(raw)
    except ProtocolError as exc:
        raise CommandError(
            f"--input {path} is neither a .npy file nor a canonical tensor encoding: {exc}"
        ) from exc
    if not isinstance(value, Tensor):
        raise CommandError(f"--input {path} decodes to a {type(value).__name__}, not a tensor")
    return value.to_torch()


def cmd_models_run(args: argparse.Namespace) -> int:
    import torch

    from assay.commands.calibrate import find_entry
    from protocol import codec
    from protocol.codec import Tensor
    from protocol.hashing import sha256
    from prover import zoo
    from prover.model_store import load_model
    from prover.node import tensor_hash
    from prover.registry import ModelRegistry
    from prover.runtime import DeterministicRuntime, JobInputError
    from prover.tensor import TensorModel, run_tensor_jobs

    registry = open_registry(args)
    assert isinstance(registry, ModelRegistry)
    entry = find_entry(registry, args.model)
    if entry.mode not in ("exact", "tensor"):
        raise CommandError(
            f"models run computes exact and tensor jobs; {entry.name} is in the {entry.mode} "
            "mode (use `assay infer` or the node's HTTP API)"
        )
    if (args.input is None) == (args.example is None):
        raise CommandError("give exactly one of --input FILE or --example SEED")
    module, meta = load_model(Path(entry.path))
    job_input = (read_input_file(Path(args.input)) if args.input is not None
                 else zoo.example_input(meta.kind, meta.config, args.example))
    started = time.perf_counter()
    sketch = None
    try:
        if entry.mode == "exact":
            output = DeterministicRuntime(threads=args.threads).run(module, job_input)
        else:
            job_id = sha256(codec.encode(Tensor.from_torch(job_input)))
            model = TensorModel(module, dtype=str(entry.params.get("dtype", "float32")))
            result = run_tensor_jobs(model, [job_input], [job_id], threads=args.threads)[0]
            output, sketch = result.output.to_torch(), result.sketch.to_torch()
    except (JobInputError, ValueError, RuntimeError) as exc:
        raise CommandError(f"{entry.name} cannot run this input: {exc}") from exc
    seconds = time.perf_counter() - started
    output_hash = tensor_hash(Tensor.from_torch(output)).hex()
    report: dict[str, Any] = {
        "model": entry.name,
        "model_id": entry.model_id.hex(),
        "mode": entry.mode,
        "kind": entry.kind,
        "threads": args.threads,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "output_hash": output_hash,
        "output": {"dtype": str(output.dtype).removeprefix("torch."),
                   "shape": list(output.shape), "values": output.flatten().tolist()},
        "seconds": round(seconds, 6),
    }
    if sketch is not None:
        report["sketch"] = sketch.tolist()
    if args.json:
        print(json.dumps(report))
        return 0
    values = report["output"]["values"]
    shown = ", ".join(f"{v:g}" for v in values[:10]) + (", …" if len(values) > 10 else "")
    print(f"{entry.name} ({entry.mode}, {entry.kind}) on {report['cpu_capability']}, "
          f"{args.threads} thread(s), {seconds * 1000:.2f} ms")
    print(f"output {report['output']['dtype']} {report['output']['shape']}: [{shown}]")
    print(f"output_hash {output_hash}")
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
    add = model_commands.add_parser(
        "add", help="register a model directory (safetensors) or a .gguf file")
    add.add_argument(
        "directory",
        help="directory with model.safetensors (or its shards) and its config, or a .gguf file "
             "(converted to float32 under the registry, its SHA-256 recorded)")
    add.add_argument(
        "--mode", default=None, choices=("exact", "llm", "tensor", "zk"),
        help="verification mode (default: exact for integer models, llm for transformers causal "
             "LMs and GGUF files, tensor for other float models)",
    )
    add.add_argument(
        "--chat-template", default=None,
        help="llm mode: a Jinja chat template (a file or the text) used instead of the model's",
    )
    add.add_argument(
        "--quantize", action="store_true",
        help="quantise a float mlp/cnn to int8 for the exact mode, recording the accuracy lost",
    )
    add.add_argument(
        "--dtype", default="float32", choices=("float32", "bfloat16"),
        help="what a tensor-mode model computes in (float32)",
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
    remove = model_commands.add_parser("remove", help="drop a model from the registry")
    remove.add_argument("model", help="registered model name or id (hex)")
    remove.add_argument("--registry", default=None, help=registry_help)
    remove.set_defaults(func=cmd_models_remove)
    run = model_commands.add_parser(
        "run", help="run one job locally, as a node would, and print its output hash"
    )
    run.add_argument("model", help="registered model name or id (hex)")
    run.add_argument("--input", default=None, help="input tensor: a .npy file or canonical bytes")
    run.add_argument("--example", type=positive_int, default=None,
                     help="use the model's seeded example input SEED instead of --input")
    run.add_argument("--threads", type=positive_int, default=1, help="torch threads (1)")
    run.add_argument("--json", action="store_true",
                     help="print model, mode, output_hash and the output as JSON")
    run.add_argument("--registry", default=None, help=registry_help)
    run.set_defaults(func=cmd_models_run)
    listing = model_commands.add_parser("list", help="list registered models")
    listing.add_argument("--registry", default=None, help=registry_help)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_models_list)
    build = model_commands.add_parser("build", help="write a seeded zoo model to a directory")
    build.add_argument("name", choices=ZOO_BUILD_NAMES)
    build.add_argument("--seed", type=positive_int, default=0)
    build.add_argument("--out", required=True, help="directory to write")
    build.set_defaults(func=cmd_models_build)
