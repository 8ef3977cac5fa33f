"""``assay validator run``: the validator service."""

from __future__ import annotations

import argparse
from typing import Any

from assay.commands._service import add_settings_flags, configure_logging, run_until_signalled
from assay.config import ValidatorConfig


def cmd_validator_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from assay.cli import CommandError
    from assay.commands._service import settings
    from assay.keystore import KeystoreError, SigningJournal, load_key
    from assay.net.host import PeerHost
    from assay.net.metrics import Metrics
    from prover.node import load_registered_llms, load_registered_models
    from prover.registry import ModelRegistry, default_registry_root
    from prover.runtime import DeterministicRuntime
    from verifier.service import ValidatorService
    from verifier.validator import Validator

    config: ValidatorConfig = settings(args, ValidatorConfig)
    configure_logging(config.log_format)
    if not config.ledger:
        raise CommandError("no ledger address: set ledger in [validator] or ASSAY_LEDGER")
    try:
        key = load_key(Path(config.keystore), config.password_file or None)
    except KeystoreError as exc:
        raise CommandError(str(exc)) from exc
    registry = ModelRegistry(Path(config.registry) if config.registry else default_registry_root())
    validator = Validator(key, load_registered_models(registry),
                          DeterministicRuntime(threads=config.threads),
                          llms=load_registered_llms(registry))
    metrics = Metrics()
    host = PeerHost(key, config.listen, [*config.bootstrap, config.ledger], metrics)
    journal = SigningJournal(Path(config.data_dir) / "journal.sqlite")
    service = ValidatorService(config, validator, host, journal, metrics)
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
