"""``assay zk``: set up a registered model's zk circuit and keys, once.

``assay zk setup MODEL`` exports the model to ONNX, calibrates and compiles
the EZKL circuit, generates the proving and verifying keys, proves and
verifies one example job, and pins the hashes of the verifying key, the
settings and the SRS in the model's registry entry. The SRS is never
downloaded: ``--srs FILE`` loads a ceremony's file whose SHA-256 is pinned
(``--srs-sha256``, or already in the registry) and refuses any other;
``--devnet-srs`` generates one here, for test networks only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

SUGGEST_LATENCY_SECONDS = 10.0
"""Default latency a client accepts for a checked result, for mode suggestions."""
CALIBRATION_INPUTS = 8


def default_zk_root() -> Path:
    """``$ASSAY_HOME/zk``, beside the model registry."""
    home = os.environ.get("ASSAY_HOME") or "~/.assay"
    return Path(home).expanduser() / "zk"


def _entry(registry: object, model: str) -> object:
    from assay.arguments import CommandError
    from prover.registry import ModelRegistry, UnknownModel

    assert isinstance(registry, ModelRegistry)
    try:
        return registry.get(model)
    except UnknownModel:
        named = [e for e in registry.list() if e.name == model]
        if len(named) != 1:
            raise CommandError(
                f"no single registered model with id or name {model!r} in {registry.path}"
            ) from None
        return named[0]


def _srs(args: argparse.Namespace, store: object, pinned_hex: str | None) -> Path | None:
    """The SRS to set up with: a pinned ceremony file, or None for a fresh devnet one."""
    from assay.arguments import CommandError
    from prover.zk import DEVNET_SRS_WARNING, ZkArtifactStore

    assert isinstance(store, ZkArtifactStore)
    if args.devnet_srs:
        print(f"WARNING: {DEVNET_SRS_WARNING}", file=sys.stderr)
        return None
    given = args.srs_sha256.lower() if args.srs_sha256 else None
    if given and pinned_hex and given != pinned_hex:
        raise CommandError(
            f"--srs-sha256 {given} differs from the SRS {pinned_hex} the registry pins"
        )
    pin = given or pinned_hex
    if pin is None:
        raise CommandError(
            "no SRS is pinned for this model: pass --srs FILE --srs-sha256 HEX (the ceremony's "
            "published hash), or --devnet-srs for a local test network"
        )
    try:
        pin_bytes = bytes.fromhex(pin)
    except ValueError:
        raise CommandError(f"SRS hash {pin!r} is not hex") from None
    if args.srs:
        return store.import_srs(Path(args.srs), pin_bytes)
    return store.pinned_srs(pin_bytes)


def cmd_zk_setup(args: argparse.Namespace) -> int:
    from assay.arguments import CommandError, open_registry
    from prover import zoo
    from prover.mode_choice import MeasuredCosts, NetworkTerms, choose_check
    from prover.model_store import load_model
    from prover.registry import ModelRegistry, RegistryEntry
    from prover.runtime import DeterministicRuntime
    from prover.zk import PARAM_SRS, CircuitChoice, DevnetSrsWarning, ZkArtifactStore, ZkProver
    from slashing import constants as c
    from verifier.zk import ZkKey, check_zk

    registry = open_registry(args)
    assert isinstance(registry, ModelRegistry)
    entry = _entry(registry, args.model)
    assert isinstance(entry, RegistryEntry)
    if entry.mode != "zk":
        raise CommandError(
            f"model {entry.name} is registered in mode {entry.mode!r}; register it with "
            "`assay models add DIR --mode zk` first"
        )
    if entry.kind not in zoo.IMAGE_KINDS:
        raise CommandError(f"zk circuits are built for {list(zoo.IMAGE_KINDS)}, not {entry.kind}")
    store = ZkArtifactStore(Path(args.store) if args.store else default_zk_root())
    srs = _srs(args, store, entry.params.get(PARAM_SRS))
    module, meta = load_model(entry.path)
    inputs = [zoo.example_input(meta.kind, meta.config, i) for i in range(CALIBRATION_INPUTS)]
    choice = CircuitChoice(scale=args.scale, max_logrows=args.max_logrows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DevnetSrsWarning)  # already said above, once
        artifacts = store.setup(entry.model_id, module, inputs, srs=srs, choice=choice)
    entry = registry.update_params(entry.model_id, artifacts.registry_params())
    import json

    from prover.zk import SETTINGS_FILE

    run_args = json.loads(artifacts.path(SETTINGS_FILE).read_text(encoding="utf-8"))["run_args"]
    print(
        f"zk keys for {entry.name}: 2^{artifacts.logrows} rows, scale {artifacts.input_scale}, "
        f"{run_args['num_inner_cols']} inner columns, range checks of {run_args['decomp_legs']} "
        f"× base {run_args['decomp_base']}, setup {artifacts.setup_seconds:.1f} s, "
        f"in {artifacts.directory}"
    )
    for key in sorted(artifacts.registry_params()):
        print(f"  pinned {key} = {entry.params[key]}")

    # one example job, proved and checked, to show the keys work and to measure them
    from protocol.codec import Tensor
    from protocol.keys import SigningKey
    from protocol.messages import Commitment, JobRequest, Verdict
    from prover.node import tensor_hash

    client = SigningKey.derive("assay-zk-setup/client")
    no_network = bytes(32)  # the example is checked here, never recorded on a ledger
    request = JobRequest(
        model_id=entry.model_id, input=Tensor.from_torch(inputs[0]),
        client=client.public.raw, node=client.public.raw, nonce=0, fee=0, expiry_round=0,
        chain_id=no_network,
    ).signed(client)
    started = time.perf_counter()
    proof = ZkProver(artifacts).prove(inputs[0])
    prove = time.perf_counter() - started
    commitment = Commitment(
        job_id=request.job_id, model_id=entry.model_id, input_hash=tensor_hash(request.input),
        output_hash=tensor_hash(proof.output_tensor()), node=client.public.raw,
        chain_id=no_network, mode="zk", aux=proof.encode(),
    )
    check = check_zk(request, commitment, ZkKey.from_artifacts(artifacts, entry.params))
    if check.verdict is not Verdict.VALID:
        raise CommandError(f"the example proof did not verify: {check.reason}")
    started = time.perf_counter()
    DeterministicRuntime().run(module, inputs[0])
    inference = time.perf_counter() - started
    print(
        f"example job: proved in {prove:.2f} s, verified in {check.seconds * 1000:.1f} ms, "
        f"proof {len(proof.proof)} bytes"
    )
    suggestion = choose_check(
        MeasuredCosts(inference=inference, prove=prove, verify=check.seconds, reexecute=inference),
        NetworkTerms(
            sample_rate=c.DEFAULT_SAMPLE_PPM / 1_000_000,
            challenge_window=c.DEFAULT_CHALLENGE_WINDOW,
            latency_budget=args.latency,
        ),
    )
    print(f"suggested check for this model: {suggestion.check} ({suggestion.reason})")
    return 0


def print_mode_suggestion(directory: Path, latency: float) -> None:
    """What `assay models add` prints: the check the mode rule suggests for this model."""
    from prover import zoo
    from prover.mode_choice import NetworkTerms, choose_check, measure_costs
    from prover.model_store import load_model
    from slashing import constants as c

    module, meta = load_model(directory)
    if meta.kind not in zoo.IMAGE_KINDS:
        return
    costs = measure_costs(meta.kind, module, zoo.example_input(meta.kind, meta.config, 0))
    suggestion = choose_check(
        costs,
        NetworkTerms(
            sample_rate=c.DEFAULT_SAMPLE_PPM / 1_000_000,
            challenge_window=c.DEFAULT_CHALLENGE_WINDOW,
            latency_budget=latency,
        ),
    )
    mode = ("zk" if suggestion.check == "zk"
            else "sampled re-execution (exact after --quantize, or tensor)")
    print(f"suggested mode: {mode}: {suggestion.reason} (proving time estimated)")


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from assay.arguments import positive_int

    zk = commands.add_parser("zk", help="zero-knowledge proofs for small models (EZKL)")
    actions = zk.add_subparsers(dest="zk_command", required=True, metavar="ACTION")
    setup = actions.add_parser(
        "setup", help="build a registered zk model's circuit and keys, and pin their hashes"
    )
    setup.add_argument("model", help="registered model id (hex) or name")
    setup.add_argument("--registry", default=None, help="registry directory ($ASSAY_HOME/models)")
    setup.add_argument("--store", default=None, help="zk artifact directory ($ASSAY_HOME/zk)")
    srs = setup.add_mutually_exclusive_group()
    srs.add_argument("--srs", default=None, help="a ceremony SRS file (its hash must be pinned)")
    srs.add_argument(
        "--devnet-srs", action="store_true",
        help="generate an SRS here: FOR TEST NETWORKS ONLY (this machine could forge proofs)",
    )
    setup.add_argument("--srs-sha256", default=None, help="pin the ceremony SRS's SHA-256")
    setup.add_argument("--scale", type=positive_int, default=None,
                       help="fixed-point bits (default: calibrated, 13 or 7)")
    setup.add_argument("--max-logrows", type=positive_int, default=17, help="largest circuit (17)")
    setup.add_argument(
        "--latency", type=float, default=SUGGEST_LATENCY_SECONDS,
        help="seconds a client accepts for a checked result, for the mode suggestion (10)",
    )
    setup.set_defaults(func=cmd_zk_setup)
