"""``assay validator run``: the validator service.

Every zk job's proof is checked against the verifying key the ledger will
judge it under: the ledger's registration (``RegisterZkModel``) is the source
of truth, and a validator that checked with another key would accuse honest
nodes and be slashed for it. The keys come from the local zk store (the
``zk_store`` setting, default ``$ASSAY_HOME/zk``) for the registry's ``zk``
entries, each checked against the hashes the entry pins, so a missing or
changed artifact refuses the start and names the model, as for a node. At
start the service compares each key's verifying-key, settings and SRS hashes
with the ledger's registration (``zk_model``) before it checks any job, and
drops a key the ledger registered differently: that model's jobs are then
attested INCONCLUSIVE, never accused
(:meth:`verifier.service.ValidatorService.check_zk_keys`).

Why local keys compared by hash rather than keys fetched from the ledger: the
ledger answers ``zk_model`` with hashes only, and a key whose three hashes
equal the registered ones is byte for byte the key the ledger's checker uses,
so the verdicts cannot differ; it keeps the operator's workflow the node's
(``assay zk setup`` with the network's SRS) and the ledger protocol as it is.
"""

from __future__ import annotations

import argparse
from typing import Any

from assay.commands._service import add_settings_flags, configure_logging, run_until_signalled
from protocol.config import ValidatorConfig


def cmd_validator_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from assay.arguments import CommandError
    from assay.commands._service import settings
    from assay.commands._zk_models import registered_zk_artifacts, zk_store_root
    from protocol.keystore import KeystoreError, SigningJournal, load_key
    from protocol.net.host import PeerHost
    from protocol.net.metrics import Metrics
    from prover.node import load_registered_llms, load_registered_models, load_registered_tensors
    from prover.registry import ModelRegistry, default_registry_root
    from prover.runtime import DeterministicRuntime
    from slashing.transactions import transaction_signer
    from verifier.service import ValidatorService
    from verifier.validator import Validator
    from verifier.zk import ZkKey

    config: ValidatorConfig = settings(args, ValidatorConfig)
    configure_logging(config.log_format)
    if not config.ledger:
        raise CommandError("no ledger address: set ledger in [validator] or ASSAY_LEDGER")
    try:
        key = load_key(Path(config.keystore), config.password_file or None)
    except KeystoreError as exc:
        raise CommandError(str(exc)) from exc
    registry = ModelRegistry(Path(config.registry) if config.registry else default_registry_root())
    zk = registered_zk_artifacts(registry, zk_store_root(config.zk_store))
    validator = Validator(key, load_registered_models(registry),
                          DeterministicRuntime(threads=config.threads),
                          llms=load_registered_llms(registry),
                          zk_keys={model_id: ZkKey.from_artifacts(artifacts, entry.params)
                                   for model_id, (entry, artifacts) in zk.items()},
                          tensors=load_registered_tensors(registry))
    metrics = Metrics()
    host = PeerHost(key, config.listen, [*config.bootstrap, config.ledger], metrics)
    journal = SigningJournal(Path(config.data_dir) / "journal.sqlite")
    service = ValidatorService(config, validator, host, journal, metrics,
                               sign_tx=transaction_signer(key))
    return run_until_signalled(service.run)


def register(commands: Any) -> None:
    validator = commands.add_parser("validator", help="run a validator")
    actions = validator.add_subparsers(dest="validator_command", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run", help="follow commitments, re-execute sampled jobs, attest, accuse and vote",
        description="Settings: flag > ASSAY_<SETTING> > [validator] table of --config > default.",
    )
    add_settings_flags(run, ValidatorConfig)
    run.set_defaults(func=cmd_validator_run)
