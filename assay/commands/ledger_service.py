"""``assay ledger run``: the devnet's ledger service.

``assay/commands/ledger.py`` (registered before this module: modules load in
name order) may already have created the ``ledger`` command with its own
actions; ``run`` is then added to its action subparsers rather than creating
a second ``ledger`` command, which argparse would refuse.

The genesis file may list the operator's zk models as ``[[zk_model]]`` tables
with a ``model_id`` (hex): their verifying key, settings and SRS hash are read
from the zk store (the ``zk_store`` setting, default ``$ASSAY_HOME/zk``,
filled by ``assay zk setup``) and
registered (``RegisterZkModel``) when the service starts, each once. The
service installs ``verifier.zk``'s proof checker over the same store before it
opens the ledger, so it can judge (and replay) ``accuse_invalid_proof``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.commands._service import add_settings_flags, configure_logging, run_until_signalled
from protocol.config import LedgerConfig

if TYPE_CHECKING:
    from slashing import RegisterZkModel
    from slashing.service import Genesis


ZK_MODEL_KEYS = frozenset({"model_id"})
"""The keys of a genesis ``[[zk_model]]`` table."""


def zk_registrations(data: dict[str, Any], zk_store: Path) -> tuple[RegisterZkModel, ...]:
    """``RegisterZkModel`` events for the genesis file's ``[[zk_model]]`` tables.

    Each table holds one ``model_id``, 64 hex digits; the model's artifacts
    must be in ``zk_store``. Anything else is a ``CommandError`` that names
    the table (by position) and what is wrong with it.
    """
    from assay.arguments import CommandError

    entries = data.get("zk_model", [])
    if not isinstance(entries, list):
        raise CommandError(
            f"genesis zk_model must be a list of [[zk_model]] tables, got {entries!r}"
        )
    if not entries:
        return ()
    from prover.zk import SETTINGS_FILE, VK_FILE, ZkArtifactStore, ZkError
    from slashing import RegisterZkModel

    store = ZkArtifactStore(zk_store)
    events: list[RegisterZkModel] = []
    for index, entry in enumerate(entries, start=1):
        where = f"genesis [[zk_model]] table {index}"
        if not isinstance(entry, dict):
            raise CommandError(f"{where} is not a table with a model_id: {entry!r}")
        if set(entry) != ZK_MODEL_KEYS:
            raise CommandError(
                f"{where} must hold exactly a model_id (hex); it holds {sorted(entry)}"
            )
        text = entry["model_id"]
        try:
            model_id = bytes.fromhex(text) if isinstance(text, str) else b""
        except ValueError:
            model_id = b""
        if len(model_id) != 32:
            raise CommandError(f"{where}: model_id {text!r} is not 64 hex digits (a model id)")
        if any(e.model_id == model_id for e in events):
            raise CommandError(f"{where}: model {text} is listed twice")
        try:
            artifacts = store.load(model_id)
            events.append(RegisterZkModel(
                model_id=model_id,
                verifying_key=artifacts.path(VK_FILE).read_bytes(),
                settings=artifacts.path(SETTINGS_FILE).read_bytes(),
                srs_sha256=artifacts.srs_sha256,
            ))
        except (KeyError, TypeError, ValueError, OSError, ZkError) as exc:
            raise CommandError(f"{where}, model {model_id.hex()}: {exc}") from exc
    return tuple(events)


def cmd_ledger_run(args: argparse.Namespace) -> int:
    import dataclasses

    from assay.arguments import CommandError
    from assay.commands._service import settings
    from assay.commands._zk_models import zk_store_root
    from assay.commands.ledger import LazyProofChecker
    from protocol.config import read_toml
    from protocol.errors import ProtocolError
    from protocol.keystore import KeystoreError, load_key
    from protocol.net.metrics import Metrics
    from slashing import install_proof_checker
    from slashing.service import Genesis, LedgerService
    from slashing.store import tune_gc_for_ledger

    config: LedgerConfig = settings(args, LedgerConfig)
    configure_logging(config.log_format)
    try:
        key = load_key(Path(config.keystore), config.password_file or None)
        secret = int(Path(config.beacon_secret_file).read_text().strip(), 16)
        genesis_toml = read_toml(Path(config.genesis))
        genesis = Genesis.from_toml(genesis_toml)
    except (KeystoreError, OSError, ValueError) as exc:
        raise CommandError(f"cannot start the ledger: {exc}") from exc
    zk_store = zk_store_root(config.zk_store)
    genesis = dataclasses.replace(genesis, zk_models=zk_registrations(genesis_toml, zk_store))
    # before the ledger opens: replaying the log may re-check zk proofs
    install_proof_checker(LazyProofChecker(zk_store))
    metrics = Metrics()
    tune_gc_for_ledger()
    faucet = frozenset(_faucet_key(text) for text in config.faucet)
    settle = _settlement(config, genesis, secret)
    try:
        service = LedgerService.open(key, Path(config.database), secret, genesis, config.listen,
                                     config.round_seconds, metrics, tuple(config.bootstrap),
                                     faucet, config.faucet_limit, settle)
    except (ProtocolError, ValueError) as exc:
        raise CommandError(f"cannot open the ledger: {exc}") from exc

    async def run(shutdown: Any) -> None:
        import trio

        from protocol.net.http import health_app, metrics_app, serve_http

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(service.run)
                nursery.start_soon(serve_http, health_app(service.health), config.http_host,
                                   config.http_port, shutdown)
                if config.metrics:
                    nursery.start_soon(serve_http, metrics_app(metrics), config.metrics_host,
                                       config.metrics_port, shutdown)
                await shutdown.wait()
                nursery.cancel_scope.cancel()
        finally:
            service.close()

    return run_until_signalled(run)


def _settlement(config: LedgerConfig, genesis: Genesis, secret: int) -> Any:
    """With ``ledger_backend = "evm"``: the chain settlement to put the log under, its settings
    checked against the chain and the genesis before the log is opened; None for ``sqlite``.
    Every refusal names the setting that is wrong."""
    from assay.arguments import CommandError
    from slashing.settlement import BACKENDS

    if config.ledger_backend not in BACKENDS:
        raise CommandError(f"ledger_backend {config.ledger_backend!r} is not one of "
                           f"{', '.join(BACKENDS)}")
    if config.ledger_backend == "sqlite":
        return None
    for name in ("rpc_url", "ledger_contract", "beacon_contract", "chain_keystore",
                 "chain_password_file"):
        if not getattr(config, name):
            raise CommandError(f'{name} is required when ledger_backend = "evm"')
    from protocol.beacon import DevnetBeacon
    from slashing.evm.keys import ChainKeyError, load_keystore, read_password
    from slashing.evm.settlement import (
        ChainConfigError,
        ChainSettings,
        ChainSettlement,
        connect,
        operator_scrypt_n,
    )

    try:
        password = read_password(Path(config.chain_password_file))
        keystore = Path(config.chain_keystore)
        operator = load_keystore(keystore, password)
        settings = ChainSettings(config.rpc_url, config.ledger_contract, config.beacon_contract,
                                 operator, password, operator_scrypt_n(keystore),
                                 Path(config.chain_accounts))
        chain = connect(settings, genesis.params, DevnetBeacon(secret).public_key)
    except (ChainKeyError, ChainConfigError) as exc:
        raise CommandError(f"cannot settle on chain: {exc}") from exc
    return lambda log, beacon: ChainSettlement(log, chain, settings, beacon)


def _faucet_key(text: str) -> bytes:
    from assay.arguments import CommandError

    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise CommandError(f"faucet key {text!r} is not a public key of 64 hex digits")
    return key


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
        "run", help="serve the ledger (SQLite, or settled on an EVM chain) and the devnet "
        "beacon over libp2p",
        description="Settings: flag > ASSAY_<SETTING> > [ledger] table of --config > default.",
    )
    add_settings_flags(run, LedgerConfig)
    run.set_defaults(func=cmd_ledger_run)
