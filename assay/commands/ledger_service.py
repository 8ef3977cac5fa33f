"""``assay ledger run``: the devnet's ledger service.

``assay/commands/ledger.py`` (registered before this module: modules load in
name order) may already have created the ``ledger`` command with its own
actions; ``run`` is then added to its action subparsers rather than creating
a second ``ledger`` command, which argparse would refuse.
"""

from __future__ import annotations

import argparse
from typing import Any

from assay.commands._service import add_settings_flags, configure_logging, run_until_signalled
from assay.config import LedgerConfig


def cmd_ledger_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from assay.cli import CommandError
    from assay.commands._service import settings
    from assay.config import read_toml
    from assay.errors import ProtocolError
    from assay.keystore import KeystoreError, load_key
    from assay.net.metrics import Metrics
    from slashing.service import Genesis, LedgerService

    config: LedgerConfig = settings(args, LedgerConfig)
    configure_logging(config.log_format)
    try:
        key = load_key(Path(config.keystore), config.password_file or None)
        secret = int(Path(config.beacon_secret_file).read_text().strip(), 16)
        genesis = Genesis.from_toml(read_toml(Path(config.genesis)))
    except (KeystoreError, OSError, ValueError) as exc:
        raise CommandError(f"cannot start the ledger: {exc}") from exc
    metrics = Metrics()
    try:
        service = LedgerService.open(key, Path(config.database), secret, genesis, config.listen,
                                     config.round_seconds, metrics, tuple(config.bootstrap))
    except ProtocolError as exc:
        raise CommandError(f"cannot open the ledger: {exc}") from exc

    async def run(shutdown: Any) -> None:
        import trio

        from assay.net.http import metrics_app, serve_http

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(service.run)
                if config.metrics:
                    nursery.start_soon(serve_http, metrics_app(metrics), config.metrics_host,
                                       config.metrics_port, shutdown)
                await shutdown.wait()
                nursery.cancel_scope.cancel()
        finally:
            service.close()

    return run_until_signalled(run)


def _actions(parser: argparse.ArgumentParser) -> Any:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def register(commands: Any) -> None:
    ledger = commands.choices.get("ledger")
    if ledger is None:
        ledger = commands.add_parser("ledger", help="the staking ledger")
    actions = _actions(ledger)
    if actions is None:
        actions = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run", help="serve the SQLite ledger and the devnet beacon over libp2p",
        description="Settings: flag > ASSAY_<SETTING> > [ledger] table of --config > default.",
    )
    add_settings_flags(run, LedgerConfig)
    run.set_defaults(func=cmd_ledger_run)
