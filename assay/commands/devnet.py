"""``assay devnet up | down``: a whole network as separate OS processes on loopback.

``up`` writes everything a network needs into one directory, then starts a
ledger, the nodes and the validators, each ``python -m assay <role> run
--config <file>`` in its own session (process group), logging to
``logs/<name>.log``, and waits until every one answers ``/health`` with 200
(all bound to 127.0.0.1). ``devnet.json`` records the processes, ports and
keys; ``down`` sends SIGTERM to each process group, then SIGKILL to any still
running after a grace period.

The devnet has a faucet: its ledger lets the key ``keys/faucet.json`` mint,
and ``assay devnet fund KEY AMOUNT`` sends it tokens, so a new operator can
fund a key of their own, bond it and join (README, "Joining a devnet").

Devnet keys use a low scrypt cost and passwords in files next to them: they
are for throwaway local networks, never for stake that matters.

With ``--zk`` (the default) the devnet also serves one small zk model,
``zk-mlp`` (:func:`prover.zk.small_mlp`, a 2^12-row circuit): it is
registered in the ``zk`` mode and set up by ``assay zk setup --devnet-srs``
itself, which generates an SRS here (testing only: it says so, loudly), pins
the hashes in the devnet registry and proves one example job; the genesis lists
it as ``[[zk_model]]`` so the ledger registers it, and every process reads the
artifacts from the devnet's own ``zk`` directory (the ``zk_store`` setting).
Nodes prove every job of it and validators check every proof. Setup adds about
8 s on two cores (5 s of key generation, 2 s to prove the example job), less
than starting the processes takes, so it is on by default; ``--no-zk`` leaves
it out.

With ``--chain`` the ledger settles on an EVM chain (``ledger_backend = "evm"``,
:mod:`slashing.evm.settlement`): ``up`` first starts anvil on a free loopback
port as the member ``chain`` (stopped last by ``down``; its state lives in
memory, so a devnet on chain does not outlive its anvil), gives the operator's
chain key (``keys/chain-operator.json``, an Ethereum keystore) gas, deploys the
devnet beacon and ledger contracts from it with the genesis parameters and
adds their addresses to ``ledger.toml``. Without the zk model: zk verdicts on
chain need the model's verifier contract, which the devnet does not deploy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from protocol.config import to_toml

DEVNET_FILE = "devnet.json"
ASSAY = (sys.executable, "-m", "assay")
"""The ``assay`` command as this interpreter runs it."""
DEVNET_SCRYPT_N = 2**14
NODE_FUNDS = 150_000
VALIDATOR_FUNDS = 50_000
CLIENT_FUNDS = 10**12
STAKE = 100_000
"""A node's stake covers stake/(p·S) jobs in flight: 60 at the devnet's p = 0.5."""
VALIDATOR_STAKE = 20_000
ANSWER_ROUNDS = 10
"""The devnet's audit and vote windows: its rounds last a second, and a validator on a laptop
needs several to re-execute a generation; a silent one pays the liveness penalty."""
UNBONDING_ROUNDS = 100
"""Covers the liability horizon those windows make (77 rounds)."""
MODELS = (("gpt2", "gpt2", "llm"), ("mlp", "mlp-int8", "exact"), ("embed", "bert", "tensor"))
"""``(name, zoo model, mode)``: a text model, an integer model judged bit for bit, and a float
sentence embedder judged within the tolerances measured when the devnet is made."""
ZK_MODEL = "zk-mlp"
"""The devnet's zk model: :func:`prover.zk.small_mlp`, served in the zk mode."""
ZK_STORE = "zk"
FAUCET = "faucet"
"""The devnet key its ledger lets mint (``assay devnet fund``)."""
CHAIN_OPERATOR = "chain-operator"
"""The ledger operator's chain key with ``--chain``."""
CHAIN_OPERATOR_GAS_WEI = 10**24
"""What anvil credits the operator with to pay its gas and fund the relayed accounts."""


@dataclass
class Member:
    name: str
    role: str
    config: str
    pubkey: str
    address: str
    http_port: int = 0
    metrics_port: int = 0
    client_pubkey: str = ""
    pid: int = 0


@dataclass
class Devnet:
    directory: str
    members: list[Member] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)

    def save(self) -> None:
        (Path(self.directory) / DEVNET_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: Path) -> Devnet:
        data = json.loads((Path(directory) / DEVNET_FILE).read_text())
        return cls(data["directory"], [Member(**m) for m in data["members"]], data["models"])

    def by_role(self, role: str) -> list[Member]:
        return [m for m in self.members if m.role == role]

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)


def free_ports(n: int) -> list[int]:
    """Ports the kernel hands out now on 127.0.0.1 (held together so they differ)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _key(directory: Path, name: str) -> Any:
    from protocol.keys import SigningKey
    from protocol.keystore import encrypt, write_keystore

    key = SigningKey.generate()
    (directory / "keys").mkdir(parents=True, exist_ok=True)
    password = os.urandom(16).hex()
    (directory / "keys" / f"{name}.pass").write_text(password + "\n")
    os.chmod(directory / "keys" / f"{name}.pass", 0o600)
    write_keystore(directory / "keys" / f"{name}.json",
                   encrypt(key, password, f"devnet {name}", n=DEVNET_SCRYPT_N))
    return key


def create(
    directory: Path,
    nodes: int,
    validators: int,
    cheaters: int = 0,
    sample_ppm: int = 500_000,
    round_seconds: float = 1.0,
    cheat_rate: float = 1.0,
    zk: bool = True,
    node_settings: dict[str, Any] | None = None,
    chain: bool = False,
) -> Devnet:
    """Write keys, models, genesis and one config per process; start nothing.

    ``zk`` adds :data:`ZK_MODEL`, set up with ``assay zk setup --devnet-srs``;
    ``node_settings`` are added to every node's config; ``chain`` settles the ledger on an
    anvil that ``up`` starts (without the zk model).
    """
    from protocol.net.identity import peer_address
    from prover import zoo
    from prover.model_store import save_model
    from prover.registry import ModelRegistry
    from verifier.tensor import REGISTRY_KEY as TENSOR_KEY
    from verifier.tensor_calibration import calibrate_tensor

    if nodes < 1 or validators < 2 or not 0 <= cheaters <= nodes:
        raise ValueError("a devnet needs nodes >= 1, validators >= 2 and 0 <= cheaters <= nodes")
    if chain and zk:
        raise ValueError("a devnet on chain runs without the zk model (no verifier contract is "
                         "deployed for it): use --no-zk with --chain")
    directory = Path(directory).resolve()
    if (directory / DEVNET_FILE).exists():
        raise ValueError(f"{directory} already holds a devnet; run devnet down and remove it")
    directory.mkdir(parents=True, exist_ok=True)
    net = Devnet(str(directory))
    registry = ModelRegistry(directory / "registry")
    for index, (name, kind, mode) in enumerate(MODELS):
        built = zoo.build(kind, seed=100 + index)
        save_model(directory / "models" / name, built.module, built.kind, built.config)
        entry = registry.add(directory / "models" / name, mode=mode, name=name)
        if mode == "tensor":  # this machine's honest variation: threads and batches
            tolerances = calibrate_tensor(directory / "models" / name, jobs=8, isa_paths=False)
            registry.update_params(entry.model_id, {TENSOR_KEY: tolerances})
        net.models[name] = entry.model_id.hex()
    if zk:
        net.models[ZK_MODEL] = _zk_model(directory, registry, seed=100 + len(MODELS))

    ports = iter(free_ports(3 + nodes * 3 + validators * 3))
    ledger_key = _key(directory, "ledger")
    faucet_key = _key(directory, FAUCET)
    ledger_port, ledger_http, ledger_metrics = next(ports), next(ports), next(ports)
    ledger_address = peer_address("127.0.0.1", ledger_port, ledger_key.public.raw)
    (directory / "beacon.secret").write_text(format(int.from_bytes(os.urandom(31), "big") + 1,
                                                    "x") + "\n")
    os.chmod(directory / "beacon.secret", 0o600)
    mints: list[tuple[str, int]] = []
    members: list[Member] = []
    for i in range(nodes):
        name = f"node-{i}"
        key, client = _key(directory, name), _key(directory, f"{name}-client")
        listen, http, metrics = next(ports), next(ports), next(ports)
        settings = {
            "keystore": f"keys/{name}.json", "password_file": f"keys/{name}.pass",
            "client_keystore": f"keys/{name}-client.json",
            "client_password_file": f"keys/{name}-client.pass",
            "data_dir": f"data/{name}", "registry": "registry", "zk_store": ZK_STORE,
            "listen": f"/ip4/127.0.0.1/tcp/{listen}", "ledger": ledger_address,
            "stake": STAKE, "http_port": http, "metrics": True, "metrics_port": metrics,
            "cheat_rate": cheat_rate if i >= nodes - cheaters else 0.0,
            **(node_settings or {}),
        }
        members.append(Member(name, "node", f"{name}.toml", key.public.hex(),
                              peer_address("127.0.0.1", listen, key.public.raw), http, metrics,
                              client.public.hex()))
        (directory / f"{name}.toml").write_text(to_toml("node", settings))
        mints += [(key.public.hex(), NODE_FUNDS), (client.public.hex(), CLIENT_FUNDS)]
    for i in range(validators):
        name = f"validator-{i}"
        key = _key(directory, name)
        listen, http, metrics = next(ports), next(ports), next(ports)
        settings = {
            "keystore": f"keys/{name}.json", "password_file": f"keys/{name}.pass",
            "data_dir": f"data/{name}", "registry": "registry", "zk_store": ZK_STORE,
            "listen": f"/ip4/127.0.0.1/tcp/{listen}", "ledger": ledger_address,
            "stake": VALIDATOR_STAKE, "http_port": http, "metrics": True, "metrics_port": metrics,
        }
        members.append(Member(name, "validator", f"{name}.toml", key.public.hex(),
                              peer_address("127.0.0.1", listen, key.public.raw), http, metrics))
        (directory / f"{name}.toml").write_text(to_toml("validator", settings))
        mints.append((key.public.hex(), VALIDATOR_FUNDS))
    everyone = [m.address for m in members]
    for m in members:
        path = directory / m.config
        peers = [a for a in everyone if a != m.address]
        path.write_text(path.read_text() + f"bootstrap = {json.dumps(peers)}\n")
    ledger = Member("ledger", "ledger", "ledger.toml", ledger_key.public.hex(), ledger_address,
                    ledger_http, ledger_metrics)
    chain_settings: dict[str, Any] = {}
    chain_members: list[Member] = []
    if chain:
        operator, port = _chain_key(directory), free_ports(1)[0]
        chain_settings = {
            "ledger_backend": "evm", "rpc_url": f"http://127.0.0.1:{port}",
            "chain_keystore": f"keys/{CHAIN_OPERATOR}.json",
            "chain_password_file": f"keys/{CHAIN_OPERATOR}.pass",
            "chain_accounts": "chain-accounts",
        }
        chain_members.append(Member("chain", "chain", "", operator, f"http://127.0.0.1:{port}",
                                    port))
    (directory / "ledger.toml").write_text(to_toml("ledger", {
        "keystore": "keys/ledger.json", "password_file": "keys/ledger.pass",
        "database": "ledger.sqlite", "beacon_secret_file": "beacon.secret",
        "genesis": "genesis.toml", "zk_store": ZK_STORE,
        "listen": f"/ip4/127.0.0.1/tcp/{ledger_port}", "round_seconds": round_seconds,
        "faucet": [faucet_key.public.hex()], "http_port": ledger_http,
        "metrics": True, "metrics_port": ledger_metrics, **chain_settings,
    }))
    committee = min(3, validators - 1)
    genesis = [f"[params]\nsample_ppm = {sample_ppm}\ncommittee_size = {committee}\n"
               f"audit_window = {ANSWER_ROUNDS}\nvote_window = {ANSWER_ROUNDS}\n"
               f"unbonding_period = {UNBONDING_ROUNDS}\n"]
    genesis += [f'[[mint]]\naccount = "{a}"\namount = {n}\n' for a, n in mints]
    if zk:
        genesis.append(f'[[zk_model]]\nmodel_id = "{net.models[ZK_MODEL]}"\n')
    (directory / "genesis.toml").write_text("\n".join(genesis))
    net.members = [*chain_members, ledger, *members]
    net.save()
    return net


def _chain_key(directory: Path) -> str:
    """The ledger operator's chain key, an Ethereum keystore at the devnet's scrypt cost."""
    from eth_account import Account

    from slashing.evm.keys import write_keystore

    password = os.urandom(16).hex()
    (directory / "keys" / f"{CHAIN_OPERATOR}.pass").write_text(password + "\n")
    os.chmod(directory / "keys" / f"{CHAIN_OPERATOR}.pass", 0o600)
    account = Account.create()
    write_keystore(directory / "keys" / f"{CHAIN_OPERATOR}.json", account, password,
                   DEVNET_SCRYPT_N)
    return str(account.address)


def start_chain(net: Devnet, member: Member, timeout: float = 30) -> None:
    """Start anvil for ``member`` in its own process group and, the first time, deploy the
    contracts from the operator's chain key and add their addresses to ``ledger.toml``."""
    from slashing.evm.anvil import Anvil, AnvilFailed, wait_answering

    directory = Path(net.directory)
    (directory / "logs").mkdir(exist_ok=True)
    log = (directory / "logs" / f"{member.name}.log").open("ab")
    anvil = Anvil(member.http_port)
    process = subprocess.Popen(anvil.command(), stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, cwd=directory, start_new_session=True)
    member.pid = process.pid
    net.save()
    try:
        wait_answering(anvil.url, anvil.chain_id, process, timeout)
    except AnvilFailed as exc:
        raise RuntimeError(f"{exc}; see {directory}/logs/{member.name}.log") from exc
    config = directory / "ledger.toml"
    if "ledger_contract" not in config.read_text():
        config.write_text(config.read_text() + _deploy(directory, anvil.url, member.pubkey))


def _deploy(directory: Path, url: str, operator_address: str) -> str:
    """Fund the operator on anvil and deploy; the ``ledger.toml`` lines naming the contracts."""
    from web3 import Web3

    from assay.commands.chain import deploy
    from slashing.evm.keys import load_keystore, read_password

    keys = directory / "keys"
    operator = load_keystore(keys / f"{CHAIN_OPERATOR}.json",
                             read_password(keys / f"{CHAIN_OPERATOR}.pass"))
    assert operator.address == operator_address
    w3 = Web3(Web3.HTTPProvider(url))
    w3.provider.make_request("anvil_setBalance",  # type: ignore[arg-type]
                             [operator.address, hex(CHAIN_OPERATOR_GAS_WEI)])
    secret = int((directory / "beacon.secret").read_text().strip(), 16)
    ledger = deploy(url, operator, directory / "genesis.toml", secret)
    return (f'ledger_contract = "{ledger.contract.address}"\n'
            f'beacon_contract = "{ledger.beacon.address}"\n')


def _zk_model(directory: Path, registry: Any, seed: int) -> str:
    """Register :data:`ZK_MODEL` in the zk mode and run ``assay zk setup --devnet-srs`` on it."""
    from assay.commands import zk as zk_commands
    from prover.model_store import save_model
    from prover.zk import SMALL_MLP_CONFIG, small_mlp

    path = directory / "models" / ZK_MODEL
    save_model(path, small_mlp(seed), "mlp", dict(SMALL_MLP_CONFIG))
    entry = registry.add(path, mode="zk", name=ZK_MODEL)
    parser = argparse.ArgumentParser(prog="assay")
    zk_commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([
        "zk", "setup", ZK_MODEL, "--registry", str(registry.root),
        "--store", str(directory / ZK_STORE), "--devnet-srs",
    ])
    args.func(args)
    return str(entry.model_id.hex())


def start(net: Devnet, member: Member) -> None:
    """Start one member in its own process group, appending to its log."""
    directory = Path(net.directory)
    (directory / "logs").mkdir(exist_ok=True)
    log = (directory / "logs" / f"{member.name}.log").open("ab")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]))}
    env = {k: v for k, v in env.items() if not k.startswith("ASSAY_")}
    process = subprocess.Popen(
        [*ASSAY, member.role, "run", "--config", str(directory / member.config)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=directory, env=env,
        start_new_session=True,
    )
    member.pid = process.pid
    net.save()


def _get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (OSError, ValueError):
        return 0, ""


def is_healthy(member: Member) -> bool:
    return _get(f"http://127.0.0.1:{member.http_port}/health")[0] == 200


def is_running(member: Member) -> bool:
    if not member.pid:
        return False
    try:
        pid, _ = os.waitpid(member.pid, os.WNOHANG)
        if pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(member.pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_healthy(net: Devnet, members: list[Member] | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(members if members is not None else net.members)
    while waiting:
        for m in list(waiting):
            if not is_running(m):
                raise RuntimeError(f"{m.name} exited; see {net.directory}/logs/{m.name}.log")
            if is_healthy(m):
                waiting.remove(m)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(m.name for m in waiting)
            raise TimeoutError(f"not healthy after {timeout:.0f} s: {names}")
        time.sleep(0.2)


def stop(member: Member, sig: int = signal.SIGTERM, grace: float = 15.0) -> int | None:
    """Signal a member's process group and wait; SIGKILL after ``grace``. Returns its status."""
    if not member.pid:
        return None
    try:
        os.killpg(member.pid, sig)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            pid, status = os.waitpid(member.pid, os.WNOHANG)
            if pid:
                member.pid = 0
                return os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            if not is_running(member):
                member.pid = 0
                return None
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(member.pid, signal.SIGKILL)
    member.pid = 0
    return None


def up(net: Devnet, timeout: float = 180) -> None:
    for chain in net.by_role("chain"):
        start_chain(net, chain)
    ledger = net.member("ledger")
    others = [m for m in net.members if m.role not in ("chain", "ledger")]
    start(net, ledger)
    wait_healthy(net, [ledger], timeout)
    for m in others:
        start(net, m)
    wait_healthy(net, others, timeout)


def down(net: Devnet) -> None:
    for m in reversed(net.members):
        stop(m)
    net.save()


def cmd_devnet_up(args: argparse.Namespace) -> int:
    from assay.arguments import CommandError

    try:
        net = create(Path(args.dir), args.nodes, args.validators, args.cheaters, args.p,
                     args.round_seconds, zk=args.zk and not args.chain, chain=args.chain)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    try:
        up(net, args.timeout)
    except (RuntimeError, TimeoutError) as exc:
        down(net)
        raise CommandError(str(exc)) from exc
    for m in net.members:
        http = f"  http://127.0.0.1:{m.http_port}/v1" if m.role == "node" else ""
        if m.role == "chain":
            http = "  (anvil; the ledger settles here)"
        print(f"{m.name:<12} pid {m.pid:<7} {m.address}{http}")
    print(f"devnet up in {net.directory}; stop it with: assay devnet down --dir {args.dir}")
    return 0


def cmd_devnet_down(args: argparse.Namespace) -> int:
    from assay.arguments import CommandError

    try:
        net = Devnet.load(Path(args.dir))
    except (OSError, ValueError, KeyError) as exc:
        raise CommandError(f"no devnet in {args.dir}: {exc}") from exc
    down(net)
    print(f"devnet in {net.directory} stopped")
    return 0


def _account_key(text: str) -> bytes:
    """A public key from 64 hex digits, or from a keystore file's ``pubkey`` (not decrypted)."""
    from assay.arguments import CommandError

    candidate = text
    path = Path(text)
    if path.is_file():
        try:
            candidate = str(json.loads(path.read_text(encoding="utf-8")).get("pubkey", ""))
        except (OSError, ValueError, AttributeError) as exc:
            raise CommandError(f"{text} is not a keystore: {exc}") from exc
    try:
        key = bytes.fromhex(candidate)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise CommandError(f"{text!r} is neither a public key of 64 hex digits nor a keystore")
    return key


def cmd_devnet_fund(args: argparse.Namespace) -> int:
    """Mint tokens for a key with the devnet's faucet key."""
    from assay.arguments import CommandError
    from assay.commands._ledger_call import with_ledger
    from protocol.keystore import KeystoreError, load_key

    account = _account_key(args.key)
    try:
        net = Devnet.load(Path(args.dir))
        keys = Path(net.directory) / "keys"
        faucet = load_key(keys / f"{FAUCET}.json", str(keys / f"{FAUCET}.pass"))
    except (OSError, ValueError, KeyError, KeystoreError) as exc:
        raise CommandError(f"no devnet faucet in {args.dir}: {exc}") from exc

    async def fund(client: Any) -> int:
        await client.call("mint", account=account, amount=args.amount)
        return int((await client.account(account)).balance)

    balance = with_ledger(faucet, net.member("ledger").address, fund)
    print(f"funded {account.hex()} with {args.amount}: balance {balance}")
    return 0


def register(commands: Any) -> None:
    from assay.arguments import positive_int, rate_ppm

    devnet = commands.add_parser("devnet", help="a local multi-process network on loopback")
    actions = devnet.add_subparsers(dest="devnet_command", required=True, metavar="ACTION")
    start_parser = actions.add_parser("up", help="start a ledger, nodes and validators")
    start_parser.add_argument("--dir", default="devnet", help="directory for the devnet (devnet)")
    start_parser.add_argument("--nodes", type=positive_int, default=3)
    start_parser.add_argument("--validators", type=positive_int, default=2)
    start_parser.add_argument("--cheaters", type=positive_int, default=0)
    start_parser.add_argument("-p", "--sample-rate", dest="p", type=rate_ppm, default=500_000,
                              help="probability that a job is re-executed (0.5)")
    start_parser.add_argument("--round-seconds", type=float, default=1.0)
    start_parser.add_argument("--timeout", type=float, default=180.0)
    start_parser.add_argument(
        "--zk", action=argparse.BooleanOptionalAction, default=True,
        help="also serve a small zk model, set up here with a devnet SRS (testing only; "
        "about 8 s); --no-zk leaves it out",
    )
    start_parser.add_argument(
        "--chain", action="store_true",
        help="settle the ledger on an EVM chain: start anvil on a free loopback port, deploy "
        "the contracts and run the ledger with ledger_backend = evm (implies --no-zk)",
    )
    start_parser.set_defaults(func=cmd_devnet_up)
    stop_parser = actions.add_parser("down", help="stop a devnet started with up")
    stop_parser.add_argument("--dir", default="devnet")
    stop_parser.set_defaults(func=cmd_devnet_down)
    fund_parser = actions.add_parser("fund", help="send tokens to a key from the devnet's faucet")
    fund_parser.add_argument("key", help="public key (64 hex digits) or its keystore file")
    fund_parser.add_argument("amount", type=positive_int)
    fund_parser.add_argument("--dir", default="devnet")
    fund_parser.set_defaults(func=cmd_devnet_fund)
