"""``assay node run``: the operator binary for an inference node."""

from __future__ import annotations

import argparse
from typing import Any

from assay.commands._service import add_settings_flags, configure_logging, run_until_signalled
from assay.config import NodeConfig


def cmd_node_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from assay.cli import CommandError
    from assay.commands._service import settings
    from assay.hashing import sha256
    from assay.keystore import KeystoreError, SigningJournal, load_key
    from assay.net.host import PeerHost
    from assay.net.metrics import Metrics
    from prover.node import InferenceNode, load_registered_llms, load_registered_models
    from prover.registry import ModelRegistry, default_registry_root
    from prover.runtime import DeterministicRuntime
    from prover.service import NodeService, build_cheat
    from prover.signer_protection import SIGNER_PROTECTION_FILE, SignerProtection

    config: NodeConfig = settings(args, NodeConfig)
    configure_logging(config.log_format)
    if not config.ledger:
        raise CommandError("no ledger address: set ledger in [node] or ASSAY_LEDGER")
    try:
        key = load_key(Path(config.keystore), config.password_file or None)
        client_key = (
            load_key(Path(config.client_keystore), config.client_password_file or None)
            if config.client_keystore else key
        )
    except KeystoreError as exc:
        raise CommandError(str(exc)) from exc
    registry = ModelRegistry(Path(config.registry) if config.registry else default_registry_root())
    models = load_registered_models(registry)
    llms = load_registered_llms(registry)
    entries = [e for e in registry.list() if e.model_id in models or e.model_id in llms]
    if not entries:
        raise CommandError(f"no exact or llm models in the registry at {registry.path}")
    modules: dict[bytes, Any] = {**models, **{i: llm.module for i, (llm, _) in llms.items()}}
    cheat = build_cheat(modules, config.cheat_rate, int.from_bytes(sha256(key.seed())[:4], "big"))
    Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    protection = SignerProtection.open(Path(config.data_dir) / SIGNER_PROTECTION_FILE)
    node = InferenceNode(key, models, DeterministicRuntime(threads=config.threads), cheat,
                         llms=llms, protection=protection)
    metrics = Metrics()
    host = PeerHost(key, config.listen, [*config.bootstrap, config.ledger], metrics)
    journal = SigningJournal(Path(config.data_dir) / "journal.sqlite")
    service = NodeService(config, node, client_key, entries, host, journal, metrics)
    return run_until_signalled(service.run)


def register(commands: Any) -> None:
    node = commands.add_parser("node", help="run an inference node")
    actions = node.add_subparsers(dest="node_command", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run", help="serve jobs over libp2p and an OpenAI-compatible HTTP API",
        description="Settings: flag > ASSAY_<SETTING> > [node] table of --config > default.",
    )
    add_settings_flags(run, NodeConfig)
    run.set_defaults(func=cmd_node_run)
