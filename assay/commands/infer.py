"""``assay infer``: submit one job to a node over libp2p as a client, and check the answer.

The client signs its own ``JobRequest`` with a keystore whose account pays the
fee on the ledger, sends it on the job protocol, and accepts the answer only
if the node's signed commitment is for this job, is signed by the node it
asked, and its output hash is the hash of the output it sent back. What it
prints — the output, the commitment id and the node's signature — is what a
client would keep to dispute the job later.
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
from pathlib import Path
from typing import Any

from assay.arguments import CommandError, positive_int

CONNECT_TIMEOUT_S = 20.0
EXPIRY_ROUNDS = 1_000
"""Rounds after the ledger's current one in which the job may still be recorded: room for a
long generation or proof (a quarter of an hour of the devnet's one-second rounds)."""
DEFAULT_FEE = 110
"""The demo ledger's R + verification fee; a ledger refuses fees above that."""


def register(commands: Any) -> None:
    infer = commands.add_parser(
        "infer", help="submit a signed job to a node over libp2p and check its commitment"
    )
    infer.add_argument("--node", required=True,
                       help="the node's libp2p address, /ip4/…/tcp/…/p2p/<peer id>")
    infer.add_argument("--ledger", required=True,
                       help="the ledger's /p2p/ address: the request names its chain id and an "
                            "expiry round from its clock")
    infer.add_argument("--keystore", required=True, type=Path,
                       help="the client's keystore (its account pays the fee)")
    infer.add_argument("--password-file", default=None,
                       help="file holding the keystore password (default: prompt)")
    infer.add_argument("--model", required=True, help="model id, 64 hex digits (assay models list)")
    what = infer.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="text for an llm model (byte-level tokens)")
    what.add_argument("--input", type=Path, help="a .npy file: the input tensor of a tensor model")
    infer.add_argument("--max-tokens", type=positive_int, default=16)
    infer.add_argument("--seed", type=positive_int, default=None,
                       help="sampling seed (default: random; printed)")
    infer.add_argument("--temperature", type=float, default=1.0)
    infer.add_argument("--top-k", type=positive_int, default=0)
    infer.add_argument("--top-p", type=float, default=1.0)
    infer.add_argument("--fee", type=positive_int, default=DEFAULT_FEE)
    infer.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (120)")
    infer.add_argument("--json", action="store_true", help="print the answer as JSON")
    infer.set_defaults(func=cmd_infer)


def _model_id(text: str) -> bytes:
    try:
        model_id = bytes.fromhex(text)
    except ValueError:
        model_id = b""
    if len(model_id) != 32:
        raise CommandError(f"--model must be a model id of 64 hex digits, got {text!r}")
    return model_id


def _llm_params(args: argparse.Namespace) -> dict[str, int | str]:
    from protocol.sampling import PPM

    for name, value, high in (("temperature", args.temperature, 2.0), ("top-p", args.top_p, 1.0)):
        if not math.isfinite(value) or not 0.0 <= value <= high:
            raise CommandError(f"--{name} must be between 0 and {high}, got {value}")
    return {
        "max_new_tokens": args.max_tokens,
        "dtype": "float32",
        "seed": args.seed if args.seed is not None else secrets.randbelow(2**63),
        "temperature_milli": round(args.temperature * 1000),
        "top_k": args.top_k,
        "top_p_ppm": round(args.top_p * PPM) or PPM,
    }


def _job_input(args: argparse.Namespace) -> Any:
    import numpy as np
    import torch

    from protocol.codec import Tensor

    if args.prompt is not None:
        ids = list(args.prompt.encode("utf-8"))
        if not ids:
            raise CommandError("--prompt must not be empty")
        return Tensor.from_torch(torch.tensor([ids], dtype=torch.int64))
    try:
        array = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CommandError(f"--input {args.input}: not a readable .npy array: {exc}") from exc
    return Tensor.from_numpy(array)


def cmd_infer(args: argparse.Namespace) -> int:
    import multiaddr
    import trio
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from protocol.codec import Tensor, encode
    from protocol.hashing import sha256
    from protocol.keys import SigningKey
    from protocol.keystore import load_key
    from protocol.messages import Commitment, JobRequest
    from protocol.net import wire
    from protocol.net.host import PeerHost, PeerUnavailable
    from protocol.net.identity import public_key_of

    def peer_key(flag: str, address: str) -> bytes:
        try:
            return public_key_of(info_from_p2p_addr(multiaddr.Multiaddr(address)).peer_id)
        except Exception as exc:  # multiaddr and libp2p raise many types for a bad address
            raise CommandError(f"--{flag} {address!r} is not a /p2p/ address: {exc}") from exc

    node_key = peer_key("node", args.node)
    ledger_key = peer_key("ledger", args.ledger)
    model_id = _model_id(args.model)
    params = _llm_params(args) if args.prompt is not None else {}
    job_input = _job_input(args)
    key: SigningKey = load_key(args.keystore, args.password_file)
    signed: list[JobRequest] = []

    async def connect(host: PeerHost, peer: bytes, address: str) -> str:
        with trio.move_on_after(min(args.timeout, CONNECT_TIMEOUT_S)):
            while peer not in host.connected():
                await trio.sleep(0.05)
        return "" if peer in host.connected() else f"could not connect to {address}"

    async def submit() -> tuple[dict[str, Any] | None, str]:
        """The node's answer, or why there is none (raised inside the host's nursery,
        an exception would reach trio.run wrapped in an exception group)."""
        host = PeerHost(key, "/ip4/127.0.0.1/tcp/0", [args.node, args.ledger])
        async with host.running():
            failed = await connect(host, ledger_key, args.ledger)
            if failed:
                return None, failed
            try:
                status = await host.request(ledger_key, wire.PROTOCOL_LEDGER,
                                            wire.encode_map({"op": "status"}), args.timeout)
            except (wire.RemoteError, PeerUnavailable) as exc:
                return None, f"the ledger did not say its chain id: {exc}"
            chain_id, now = status.get("chain_id"), status.get("round")
            if not isinstance(chain_id, bytes) or not isinstance(now, int):
                return None, "the ledger's status lacks its chain id or round"
            request = JobRequest(
                model_id=model_id, input=job_input, client=key.public.raw, node=node_key,
                nonce=secrets.randbelow(2**63), fee=args.fee,
                expiry_round=max(now, 0) + EXPIRY_ROUNDS, chain_id=chain_id,
                params=tuple(params.items()),
            ).signed(key)
            signed.append(request)
            failed = await connect(host, node_key, args.node)
            if failed:
                return None, failed
            try:
                payload = request.encode()
                return await host.request(node_key, wire.PROTOCOL_JOB, payload, args.timeout), ""
            except wire.RemoteError as exc:
                return None, f"the node refused the job: {exc}"
            except PeerUnavailable as exc:
                return None, f"the node did not answer: {exc}"

    answer, failure = trio.run(submit)
    if answer is None:
        raise CommandError(failure)
    (request,) = signed
    output, raw_commitment = answer.get("output"), answer.get("commitment")
    if not isinstance(output, Tensor) or not isinstance(raw_commitment, bytes):
        raise CommandError("the node's answer lacks an output tensor or a commitment")
    commitment = Commitment.decode(raw_commitment).verify()
    if commitment.node != node_key:
        raise CommandError("the commitment is signed by another key than the node asked")
    if commitment.job_id != request.job_id:
        raise CommandError("the commitment is for another job")
    if commitment.output_hash != sha256(encode(output)):
        raise CommandError("the output the node sent is not the output it committed to")
    result: dict[str, Any] = {
        "job_id": request.job_id.hex(),
        "commitment_id": commitment.content_id.hex(),
        "node": commitment.node.hex(),
        "signature": commitment.signature.hex(),
        "mode": commitment.mode,
        "output_hash": commitment.output_hash.hex(),
    }
    if args.prompt is not None:
        tokens = [int(t) for t in output.to_torch().reshape(-1).tolist()]
        result["text"] = bytes(t for t in tokens if 0 <= t < 256).decode("utf-8", "replace")
        result["tokens"] = tokens
        result["seed"] = params["seed"]
    else:
        result["output"] = {"dtype": output.dtype, "shape": list(output.shape),
                            "values": output.to_torch().reshape(-1).tolist()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        shown = result.get("text", result.get("output"))
        print(shown)
        print(f"job {result['job_id'][:16]}… committed by node {result['node'][:16]}… "
              f"(commitment {result['commitment_id'][:16]}…, mode {result['mode']})")
    return 0
