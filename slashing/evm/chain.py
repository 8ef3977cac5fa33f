"""Talking to the contracts over JSON-RPC: deploy, call, transact, and name every revert.

A refused transaction is first tried with ``eth_call``, so it costs nothing and
changes nothing; its revert data is decoded against the ABIs of every
contract in ``contracts/`` and raised as :class:`ContractRevert`, whose
message names the custom error (``InvalidMerkleProof``, ``NotBonded``, …) and
its arguments. It is a :class:`slashing.rules.LedgerRuleError`, as a refusal
by the Python rules is, so callers handle both backends' refusals alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.crypto import keccak
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.exceptions import ContractCustomError, ContractLogicError, ContractPanicError
from web3.types import TxReceipt

from slashing.evm.toolchain import Artifact, compile_contracts
from slashing.rules import LedgerRuleError

Sender = str | LocalAccount
"""An account anvil holds unlocked (its address), or a local key that signs its transactions."""

GAS_CAP = 15_000_000
"""The gas every transaction may use; what it does not use is refunded."""


class ContractRevert(LedgerRuleError):
    """A contract refused a transaction with a named custom error; nothing changed."""

    def __init__(self, error: str, arguments: tuple[Any, ...], raw: bytes) -> None:
        shown = ", ".join(_show(a) for a in arguments)
        super().__init__(f"{error}({shown})")
        self.error = error
        self.arguments = arguments
        self.raw = raw


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return repr(value)


@dataclass(frozen=True)
class _ErrorSpec:
    name: str
    types: tuple[str, ...]


def _type_of(entry: dict[str, Any]) -> str:
    kind = str(entry["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_type_of(c) for c in entry["components"])
        return f"({inner}){kind[5:]}"
    return kind


@cache
def _error_specs() -> dict[bytes, _ErrorSpec]:
    """Every custom error of every contract, by its 4-byte selector."""
    specs: dict[bytes, _ErrorSpec] = {
        bytes.fromhex("08c379a0"): _ErrorSpec("Error", ("string",)),
        bytes.fromhex("4e487b71"): _ErrorSpec("Panic", ("uint256",)),
    }
    for artifact in compile_contracts().values():
        for entry in artifact.abi:
            if entry.get("type") != "error":
                continue
            types = tuple(_type_of(i) for i in entry["inputs"])
            selector = keccak(text=f"{entry['name']}({','.join(types)})")[:4]
            specs[selector] = _ErrorSpec(entry["name"], types)
    return specs


def decode_revert(data: bytes) -> ContractRevert:
    """The named error in a revert's return data."""
    spec = _error_specs().get(data[:4])
    if spec is None:
        return ContractRevert("UnknownRevert", (data,), data)
    values = abi_decode(list(spec.types), data[4:])
    shown = tuple(
        Web3.to_checksum_address(v) if kind == "address" else v
        for kind, v in zip(spec.types, values, strict=True)
    )
    return ContractRevert(spec.name, shown, data)


def _revert_data(exc: Exception) -> bytes:
    data = getattr(exc, "data", None)
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    return b""


class Chain:
    """A JSON-RPC connection and the compiled contracts."""

    def __init__(self, rpc_url: str) -> None:
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 60}))
        self.artifacts = compile_contracts()

    @property
    def accounts(self) -> list[str]:
        """The node's unlocked accounts (anvil's funded test accounts)."""
        return list(self.w3.eth.accounts)

    def contract(self, name: str, address: str) -> Contract:
        return self.w3.eth.contract(address=Web3.to_checksum_address(address),
                                    abi=self.artifacts[name].abi)

    def deploy(self, name: str, *args: Any, sender: Sender) -> Contract:
        return self.deploy_artifact(self.artifacts[name], *args, sender=sender)

    def deploy_artifact(self, artifact: Artifact, *args: Any, sender: Sender) -> Contract:
        """Deploy a compiled contract that is not among ``contracts/`` (a generated one)."""
        factory = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        receipt = self._send(factory.constructor(*args), sender)
        address = receipt["contractAddress"]
        assert address is not None
        return self.w3.eth.contract(address=address, abi=artifact.abi)

    def call(self, call: ContractFunction) -> Any:
        """Read a view; a revert raises :class:`ContractRevert` naming its error."""
        try:
            return call.call()
        except (ContractCustomError, ContractLogicError, ContractPanicError) as exc:
            raise decode_revert(_revert_data(exc)) from None

    def transact(self, call: ContractFunction, sender: Sender) -> TxReceipt:
        """Send a contract call; a refusal raises :class:`ContractRevert` and changes nothing."""
        return self._send(call, sender)

    def transfer(self, to: str, value: int, sender: LocalAccount) -> TxReceipt:
        """Send ``value`` wei of the chain's own currency (gas money) to ``to``."""
        tx: dict[str, Any] = {
            "to": Web3.to_checksum_address(to), "value": value, "gas": 21_000,
            "nonce": self.w3.eth.get_transaction_count(sender.address, "pending"),
            "chainId": self._chain_id(), "gasPrice": self.w3.eth.gas_price,
        }
        tx_hash = self.w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
        return self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60, poll_latency=0.005)

    def _address(self, sender: Sender) -> ChecksumAddress:
        return Web3.to_checksum_address(sender if isinstance(sender, str) else sender.address)

    def _send(self, call: Any, sender: Sender) -> TxReceipt:
        """Try it with ``eth_call`` (which names a refusal at no cost), then send it with the
        gas cap (unused gas is refunded) and take the receipt: anvil mines it at once."""
        address = self._address(sender)
        try:
            self.w3.eth.call({"from": address, **self._payload(call)})  # type: ignore[typeddict-item]
        except (ContractCustomError, ContractLogicError, ContractPanicError) as exc:
            raise decode_revert(_revert_data(exc)) from None
        tx: dict[str, Any] = {"from": address, "gas": GAS_CAP, **self._payload(call)}
        if isinstance(sender, str):
            tx_hash = self.w3.eth.send_transaction(tx)  # type: ignore[arg-type]
        else:
            tx.update(nonce=self.w3.eth.get_transaction_count(address, "pending"),
                      chainId=self._chain_id(), gasPrice=self.w3.eth.gas_price)
            del tx["from"]
            signed = sender.sign_transaction(tx)
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60, poll_latency=0.005)
        if receipt["status"] != 1:
            raise LedgerRuleError(f"transaction {tx_hash.hex()} failed on chain after estimating")
        return receipt

    @staticmethod
    def _payload(call: Any) -> dict[str, Any]:
        if isinstance(call, ContractConstructor):
            return {"data": call.data_in_transaction}
        return {"to": call.address, "data": call._encode_transaction_data()}

    @cache  # noqa: B019 (one Chain per connection, kept for the process)
    def _chain_id(self) -> int:
        return self.w3.eth.chain_id

    def snapshot(self) -> str:
        """An anvil state snapshot to return to (``revert``)."""
        return str(self.w3.provider.make_request("evm_snapshot", [])["result"])  # type: ignore[arg-type]

    def revert(self, snapshot: str) -> None:
        self.w3.provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]
