"""``assay node run``: the operator binary for an inference node.

It serves every model in its registry: ``exact``, ``tensor`` and ``llm``
entries are loaded from their directories; ``zk`` entries are proved with the artifacts
``assay zk setup`` made, from the ``zk_store`` setting (default
``$ASSAY_HOME/zk``), which must be the ones the entry pins, or the node
refuses to start and names the model. At start the service also compares each
zk model's verifying key with the one the ledger registered
(:meth:`prover.service.NodeService.check_zk_keys`). A devnet cheater
(``cheat_rate``) substitutes models of the ``exact``, ``tensor`` and ``llm`` modes only:
``build_cheat`` never sees a zk model, whose jobs are always proved honestly.
"""

from __future__ import annotations

import argparse
from typing import Any

from assay.commands._service import add_settings_flags, configure_logging, run_until_signalled
from protocol.config import NodeConfig


def cmd_node_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from assay.arguments import CommandError
    from assay.commands._service import settings
    from assay.commands._zk_models import registered_zk_artifacts, zk_store_root
    from protocol.hashing import sha256
    from protocol.keystore import KeystoreError, SigningJournal, load_key
    from protocol.net.host import PeerHost
    from protocol.net.metrics import Metrics
    from prover.node import (
        InferenceNode,
        load_registered_llms,
        load_registered_models,
        load_registered_tensors,
    )
    from prover.registry import ModelRegistry, default_registry_root
    from prover.runtime import DeterministicRuntime
    from prover.service import NodeService, build_cheat
    from prover.signer_protection import SIGNER_PROTECTION_FILE, SignerProtection
    from prover.zk import ZkError, ZkProver
    from slashing.transactions import transaction_signer

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
    tensors = load_registered_tensors(registry)
    zk = registered_zk_artifacts(registry, zk_store_root(config.zk_store))
    try:
        zk_provers = {model_id: ZkProver(artifacts) for model_id, (_, artifacts) in zk.items()}
    except ZkError as exc:
        raise CommandError(str(exc)) from exc
    served = {*models, *llms, *zk_provers, *tensors}
    entries = [e for e in registry.list() if e.model_id in served]
    if not entries:
        raise CommandError(f"no exact, tensor, llm or zk models in the registry at {registry.path}")
    modules: dict[bytes, Any] = {**models, **{i: llm.module for i, (llm, _) in llms.items()},
                                 **{i: t.module for i, t in tensors.items()}}
    cheat = build_cheat(modules, config.cheat_rate, int.from_bytes(sha256(key.seed())[:4], "big"))
    Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    protection = SignerProtection.open(Path(config.data_dir) / SIGNER_PROTECTION_FILE)
    node = InferenceNode(key, models, DeterministicRuntime(threads=config.threads), cheat,
                         llms=llms, zk_provers=zk_provers, protection=protection, tensors=tensors)
    metrics = Metrics()
    host = PeerHost(key, config.listen, [*config.bootstrap, config.ledger], metrics)
    journal = SigningJournal(Path(config.data_dir) / "journal.sqlite")
    service = NodeService(config, node, client_key, entries, host, journal, metrics,
                          sign_tx=transaction_signer(key))
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
