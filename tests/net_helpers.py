"""Shared pieces of the network tests: an in-process ledger, a whole network, hostile payloads.

:func:`network` runs a real ledger service, node services and validator
services in one trio nursery on loopback (real libp2p hosts, real models,
real SQLite), each built exactly as the ``assay`` commands build them; a test
may pass its own node or validator class to play an adversary.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import multiaddr
import torch
import trio
from hypothesis import strategies as st
from libp2p.peer.peerinfo import info_from_p2p_addr
from torch import nn

from protocol import codec
from protocol.beacon import DevnetBeacon
from protocol.codec import Tensor
from protocol.config import NodeConfig, ValidatorConfig
from protocol.keys import SigningKey
from protocol.keystore import SigningJournal
from protocol.messages import JobRequest
from protocol.net.host import PeerHost
from protocol.net.identity import peer_address, public_key_of
from protocol.net.ledger_client import LedgerClient
from protocol.net.metrics import Metrics
from protocol.sampling import PPM
from prover import zoo
from prover.adversary import SubstituteModel
from prover.model_store import save_model
from prover.node import (
    InferenceNode,
    load_registered_llms,
    load_registered_models,
    load_registered_tensors,
)
from prover.registry import ModelRegistry
from prover.service import NodeService, build_cheat
from slashing import Ledger
from slashing.service import Genesis, LedgerService, safe_params
from slashing.state import LedgerParams
from slashing.transactions import transaction_signer
from verifier.service import ValidatorService
from verifier.validator import Validator

BEACON_SECRET = 0x1234567
GENESIS_FUNDS = 10**9


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ledger_service(tmp: Path, accounts: list[bytes], round_seconds: float = 0.2
                   ) -> tuple[LedgerService, str]:
    key = SigningKey.generate()
    port = free_port()
    params = LedgerParams(**{**LedgerParams.default().__dict__, "committee_size": 1,
                             "sample_ppm": 500_000})
    genesis = Genesis(params=safe_params(params),
                      mints=tuple((a, GENESIS_FUNDS) for a in accounts))
    host = PeerHost(key, f"/ip4/127.0.0.1/tcp/{port}", (), Metrics())
    service = LedgerService(host, Ledger.open(tmp / "ledger.sqlite"),
                            DevnetBeacon(BEACON_SECRET), genesis, round_seconds, host.metrics)
    return service, peer_address("127.0.0.1", port, key.public.raw)


async def dial(host: PeerHost, address: str, seconds: float = 10) -> None:
    """Connect ``host`` to the peer at ``address`` and wait until it is connected."""
    info = info_from_p2p_addr(multiaddr.Multiaddr(address))
    await host.host.connect(info)
    await connected(host, public_key_of(info.peer_id), seconds)


def node_address(node: NodeService) -> str:
    """A running node service's libp2p address."""
    port = int(node.host.listen.value_for_protocol("tcp"))
    return peer_address("127.0.0.1", port, node.node.node_id)


async def connected(host: PeerHost, peer: bytes, seconds: float = 10) -> None:
    with trio.fail_after(seconds):
        while peer not in host.connected():
            await trio.sleep(0.05)


def random_frames(rng: random.Random, n: int) -> list[bytes]:
    """Hostile request bodies: random bytes, truncated and bit-flipped msgpack, bad maps."""
    valid = codec.encode({"op": "status"})
    out = []
    for i in range(n):
        choice = i % 6
        if choice == 0:
            out.append(rng.randbytes(rng.randrange(0, 300)))
        elif choice == 1:
            out.append(valid[: rng.randrange(0, len(valid))])
        elif choice == 2:
            flipped = bytearray(valid)
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            out.append(bytes(flipped))
        elif choice == 3:
            out.append(codec.encode({"op": rng.choice(["tx", "mint", "", "x" * 40]),
                                     "event": rng.randbytes(40)}))
        elif choice == 4:
            out.append(codec.encode({"op": rng.choice(["record_job", "attest", "accuse"]),
                                     "request": rng.randbytes(60), "commitment": b"",
                                     "attestation": rng.randbytes(8), "evidence": 7}))
        else:
            out.append(codec.encode([1, 2, {"op": "status"}]) + os.urandom(3))
    return out


MISTYPED: tuple[Any, ...] = (None, True, -1, -(2**63), 2**64 - 1, "x", b"", b"\x00" * 31,
                             b"\x00" * 33, [1], {}, {"nested": [1, {}]}, 1.5)
"""Values of every type the codec has (and a float, which it refuses), for mistyped fields."""


def _tensor_ext(value: object) -> msgpack.ExtType:
    """How the codec packs a tensor, for maps it refuses to encode (they hold a float)."""
    assert isinstance(value, Tensor)
    payload = msgpack.packb([value.dtype, list(value.shape), value.data], use_bin_type=True)
    return msgpack.ExtType(codec.TENSOR_EXT, payload)


def malformed_maps(good: dict[str, Any], rng: random.Random, n: int) -> list[bytes]:
    """``n`` malformed forms of the request ``good``: well-formed msgpack with a field missing,
    an unknown field added, or a field of another type; random bytes; truncations and bit flips
    of ``good``'s bytes."""
    names = sorted(good)
    encoded = codec.encode(good)
    out = []
    for i in range(n):
        kind = i % 6
        request = dict(good)
        if kind == 0:
            del request[rng.choice(names)]
        elif kind == 1:
            request[rng.choice(["zzz", "extra", "v", "kind", "op2"])] = rng.choice(MISTYPED)
        elif kind == 2:
            name = rng.choice(names)
            request[name] = rng.choice([v for v in MISTYPED if type(v) is not type(good[name])])
        elif kind == 3:
            out.append(rng.randbytes(rng.randrange(0, 120)))
            continue
        elif kind == 4:
            out.append(encoded[: rng.randrange(0, len(encoded))])
            continue
        else:
            flipped = bytearray(encoded)
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            out.append(bytes(flipped))
            continue
        try:
            out.append(codec.encode(request))
        except (TypeError, ValueError):  # a float: the codec refuses it, msgpack does not
            packed = msgpack.packb(request, use_bin_type=True, default=_tensor_ext)
            assert isinstance(packed, bytes)
            out.append(packed)
    return out


hostile_maps = st.dictionaries(
    st.sampled_from(["op", "job_id", "round", "account", "dispute_id", "role", "amount",
                     "request", "commitment", "attestation", "evidence", "kind", "v"]),
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.binary(max_size=64),
              st.text(max_size=20), st.sampled_from(["status", "job", "bond", "beacon",
                                                    "account", "dispute", "record_job"])),
    max_size=5,
)


# -- a whole network in one process ------------------------------------------------------------

CLIENT = SigningKey.derive("net/client")
"""The client (and HTTP gateway) account every :func:`network` funds."""
FEE = 110
NODE_STAKE = 200_000
EXPIRY_ROUNDS = 1_000
UNLIMITED = {"rate_limit": 1e9, "rate_burst": 10**9}
"""Node settings that take the per-caller rate limit out of a test's way."""


@dataclass
class Network:
    tmp: Path
    ledger: LedgerService
    address: str
    registry: ModelRegistry
    nodes: list[NodeService] = field(default_factory=list)
    validators: list[ValidatorService] = field(default_factory=list)
    shutdown: trio.Event = field(default_factory=trio.Event)

    def model(self, name: str) -> bytes:
        return next(e.model_id for e in self.registry.list() if e.name == name)

    @property
    def client(self) -> LedgerClient:
        """A ledger client on the first node's host, for the test's own queries."""
        return self.nodes[0].ledger


def zoo_registry(tmp: Path, models: Sequence[tuple[str, str, str]] = (
        ("mlp", "mlp-int8", "exact"), ("gpt2", "gpt2", "llm"))) -> ModelRegistry:
    """``(name, zoo model, mode)`` registered: by default an integer MLP judged bit for bit
    and GPT-2."""
    registry = ModelRegistry(tmp / "registry")
    for name, kind, mode in models:
        built = zoo.build(kind, seed=1)
        save_model(tmp / name, built.module, built.kind, built.config)
        registry.add(tmp / name, mode=mode, name=name)
    return registry


@asynccontextmanager
async def network(tmp: Path, nursery: trio.Nursery,
                  node_classes: Sequence[type[NodeService]] = (NodeService,),
                  validator_classes: Sequence[type[ValidatorService]] = (ValidatorService,) * 2,
                  round_seconds: float = 0.5, node_settings: dict[str, Any] | None = None,
                  funded: Sequence[bytes] = (), cheaters: Sequence[int] = (),
                  registry: ModelRegistry | None = None,
                  substitutes: Callable[[dict[bytes, nn.Module]], dict[bytes, nn.Module]]
                  | None = None,
                  **params: int) -> AsyncIterator[Network]:
    """Ledger, nodes and validators on loopback, all bonded and ready when this yields.

    ``params`` override the ledger's genesis parameters (by default every job
    is sampled, committees have one member, and the challenge and answer
    windows are long enough for fetch retries and re-executions on a loaded
    machine; the fraud slash is the largest the stake-at-risk bound allows,
    1 000 at p = 1). Nodes bond ``NODE_STAKE``, room for 200 jobs in flight.
    The nodes numbered in ``cheaters`` run a changed model on every job,
    exact, tensor or llm (as a devnet cheater does), or the models
    ``substitutes`` makes of the honest ones. ``registry`` replaces the zoo's
    MLP and GPT-2.
    """
    node_keys = [SigningKey.derive(f"net/node/{i}") for i in range(len(node_classes))]
    validator_keys = [SigningKey.derive(f"net/validator/{i}")
                      for i in range(len(validator_classes))]
    ledger_key = SigningKey.derive("net/ledger")
    merged = {**LedgerParams.default().__dict__, "committee_size": 1, "sample_ppm": 1_000_000,
              "challenge_window": 8, "audit_window": 12, "vote_window": 12,
              "unbonding_period": 100, **params}
    accounts = [k.public.raw for k in (*node_keys, *validator_keys, CLIENT)] + list(funded)
    genesis = Genesis(params=safe_params(LedgerParams(**merged)),
                      mints=tuple((a, GENESIS_FUNDS) for a in accounts))
    port = free_port()
    address = peer_address("127.0.0.1", port, ledger_key.public.raw)
    host = PeerHost(ledger_key, f"/ip4/127.0.0.1/tcp/{port}", (), Metrics())
    ledger = LedgerService(host, Ledger.open(tmp / "ledger.sqlite"), DevnetBeacon(BEACON_SECRET),
                           genesis, round_seconds, host.metrics)
    registry = registry or zoo_registry(tmp)
    net = Network(tmp, ledger, address, registry)
    await nursery.start(ledger.run)
    node_addresses = []
    for i, (key, node_class) in enumerate(zip(node_keys, node_classes, strict=True)):
        node_port = free_port()
        node_addresses.append(peer_address("127.0.0.1", node_port, key.public.raw))
        node_host = PeerHost(key, f"/ip4/127.0.0.1/tcp/{node_port}", [address], Metrics())
        models, llms = load_registered_models(registry), load_registered_llms(registry)
        tensors = load_registered_tensors(registry)
        modules = {**models, **{m: llm.module for m, (llm, _) in llms.items()},
                   **{m: t.module for m, t in tensors.items()}}
        cheat: SubstituteModel | None = None
        if i in cheaters:
            cheat = (build_cheat(modules, 1.0, i) if substitutes is None
                     else SubstituteModel(substitutes(modules), PPM, i))
        node = InferenceNode(key, models, cheat=cheat, llms=llms, tensors=tensors)
        config = NodeConfig(ledger=address, http_port=free_port(), fee=FEE,
                            **{"stake": NODE_STAKE, **(node_settings or {})})
        service = node_class(config, node, CLIENT, registry.list(), node_host,
                             SigningJournal(tmp / f"node-{i}" / "journal.sqlite"),
                             node_host.metrics, transaction_signer(key))
        net.nodes.append(service)
        nursery.start_soon(service.run, net.shutdown)
    validator_ports = [free_port() for _ in validator_keys]
    validator_addresses = [peer_address("127.0.0.1", p, k.public.raw)
                           for p, k in zip(validator_ports, validator_keys, strict=True)]
    for i, (key, validator_class) in enumerate(zip(validator_keys, validator_classes,
                                                   strict=True)):
        others = [a for j, a in enumerate(validator_addresses) if j != i]
        validator_host = PeerHost(key, f"/ip4/127.0.0.1/tcp/{validator_ports[i]}",
                                  [address, *node_addresses, *others], Metrics())
        validator = Validator(key, load_registered_models(registry),
                              llms=load_registered_llms(registry),
                              tensors=load_registered_tensors(registry))
        vservice = validator_class(
            ValidatorConfig(ledger=address, http_port=free_port()), validator, validator_host,
            SigningJournal(tmp / f"validator-{i}" / "journal.sqlite"), validator_host.metrics,
            transaction_signer(key),
        )
        net.validators.append(vservice)
        nursery.start_soon(vservice.run, net.shutdown)
    with trio.fail_after(60):
        while not (all(n.health()[0] for n in net.nodes)
                   and all(v.health()[0] for v in net.validators)
                   and all({v.me for v in net.validators} <= n.ledger.validators
                           for n in net.nodes)
                   and all({v.me for v in net.validators} <= v.ledger.validators
                           for v in net.validators)):
            await trio.sleep(0.1)
    try:
        yield net
    finally:
        net.shutdown.set()


def llm_request(node: NodeService, model_id: bytes, nonce: int, tokens: int = 4,
                key: SigningKey = CLIENT, fee: int = FEE) -> JobRequest:
    """A signed GPT-2 job of ``tokens`` new tokens for ``node``, on its ledger's chain."""
    ids = torch.tensor([list(b"job %d" % nonce)], dtype=torch.int64)
    params = {"max_new_tokens": tokens, "dtype": "float32", "seed": nonce,
              "temperature_milli": 1000, "top_k": 0, "top_p_ppm": 1_000_000}
    return JobRequest(model_id=model_id, input=Tensor.from_torch(ids), client=key.public.raw,
                      node=node.node.node_id, nonce=nonce, fee=fee,
                      expiry_round=node.ledger.round + EXPIRY_ROUNDS,
                      chain_id=node.ledger.chain_id, params=tuple(params.items())).signed(key)


def exact_request(node: NodeService, model_id: bytes, nonce: int, key: SigningKey = CLIENT
                  ) -> JobRequest:
    """A signed job of the zoo's integer MLP (``exact`` mode) for ``node``, on its ledger's
    chain."""
    x = Tensor.from_torch(zoo.build("mlp-int8", seed=1).example_input(nonce))
    return JobRequest(model_id=model_id, input=x, client=key.public.raw, node=node.node.node_id,
                      nonce=nonce, fee=FEE, expiry_round=node.ledger.round + EXPIRY_ROUNDS,
                      chain_id=node.ledger.chain_id).signed(key)
