"""Receipts: what an HTTP user keeps to check a node's answer without trusting the node.

Every response of a node's HTTP API carries, in its ``assay`` field, the job's
signed request (signed by the node's gateway account, which paid the fee),
the node's signed commitment and the output's canonical bytes. A saved
response — a JSON body, or the server-sent events of a streamed one — is a
receipt. :func:`read_receipt` takes it apart and :func:`check_receipt` checks,
offline:

* both signatures, and that the commitment is to this request (job id, model,
  input hash);
* that the output hashes to the commitment's output hash;
* that the request names the node that signed the commitment, on the same
  network (chain id);
* that what the user was shown is that output: the text of a completion or
  chat completion (byte-level tokens, :mod:`protocol.text`, or the model's own
  tokenizer given as ``decode``; cut before a stop string), the tensor of
  ``/v1/infer``, or an embedding of ``/v1/embeddings``, whose every item is a
  job and a receipt of its own (:func:`read_receipts`).

What is left is whether the job is on the ledger, where validators may audit
it: :func:`check_recorded` compares the ledger's record of the job with the
receipt (``assay receipt verify`` asks the ledger). A node that answered but
did not record the job has signed a commitment it hid from the validators;
anyone may then record it from the receipt (``record_job`` needs only the two
signed messages), and it is sampled like any other.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from protocol import codec
from protocol.codec import Tensor
from protocol.errors import ProtocolError
from protocol.hashing import sha256
from protocol.messages import Commitment, JobRequest
from protocol.net.ledger_replies import JobInfo
from protocol.text import decode_tokens


class ReceiptError(ProtocolError):
    """The receipt does not hold, or cannot be read; the message says which check failed."""


@dataclass(frozen=True)
class Receipt:
    request: JobRequest
    commitment: Commitment
    output: Tensor
    shown: str | Tensor
    """What the response showed the user: text, or the ``/v1/infer`` output tensor."""
    claimed: dict[str, Any]
    """The response's ``assay`` field as it came (hex ids the user may have copied from it)."""


def _b64(assay: dict[str, Any], name: str) -> bytes:
    value = assay.get(name)
    if not isinstance(value, str):
        raise ReceiptError(f"the receipt's assay.{name} is missing (a response from before "
                           "receipts, or not a node's response)")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ReceiptError(f"the receipt's assay.{name} is not base64: {exc}") from exc


def _chunks(text: str) -> list[dict[str, Any]]:
    """The JSON chunks of a server-sent-events transcript (``data: {...}`` lines)."""
    out = []
    for line in text.splitlines():
        if not line.startswith("data:"):
            continue
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            continue
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise ReceiptError(f"a streamed chunk is not JSON: {exc}") from exc
        if not isinstance(chunk, dict):
            raise ReceiptError("a streamed chunk is not a JSON object")
        out.append(chunk)
    return out


def _choice_text(choice: Any, streamed: bool) -> str:
    if not isinstance(choice, dict):
        raise ReceiptError("a choice of the response is not an object")
    if "text" in choice:
        text = choice["text"]
    else:
        message = choice.get("delta" if streamed else "message") or {}
        text = message.get("content") if isinstance(message, dict) else None
        text = "" if text is None and streamed else text
    if not isinstance(text, str):
        raise ReceiptError("the response's choice holds no text")
    return text


def _shown(body: dict[str, Any], chunks: list[dict[str, Any]] | None) -> str | Tensor:
    if chunks is not None:
        return "".join(_choice_text(c["choices"][0], True) for c in chunks if c.get("choices"))
    if "output" in body:
        raw = body["output"]
        try:
            return Tensor(str(raw["dtype"]), tuple(int(d) for d in raw["shape"]),
                          base64.b64decode(raw["data"], validate=True))
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ReceiptError(f"the response's output is not {{dtype, shape, data}}: {exc}"
                               ) from exc
    choices = body.get("choices")
    if not isinstance(choices, list) or len(choices) != 1:
        raise ReceiptError("the response has neither an output nor exactly one choice")
    return _choice_text(choices[0], False)


def _embedding(item: dict[str, Any]) -> Tensor:
    """An ``/v1/embeddings`` item's vector as shown: floats, or base64 little-endian float32."""
    shown = item.get("embedding")
    try:
        if isinstance(shown, str):
            return Tensor.from_numpy(np.frombuffer(base64.b64decode(shown, validate=True),
                                                   dtype="<f4"))
        if isinstance(shown, list) and all(isinstance(v, (int, float)) and
                                           not isinstance(v, bool) for v in shown):
            return Tensor.from_numpy(np.asarray(shown, dtype=np.float32))
    except (ValueError, binascii.Error, ProtocolError) as exc:
        raise ReceiptError(f"the embedding shown is not float32 values: {exc}") from exc
    raise ReceiptError("an embeddings item shows no embedding (floats or base64)")


def read_receipts(saved: str) -> list[Receipt]:
    """The receipts of a saved response: one per item of an ``/v1/embeddings`` answer (each
    embedding is a job of its own), else the response's one (:func:`read_receipt`)."""
    try:
        body = json.loads(saved)
    except ValueError:
        return [read_receipt(saved)]
    if not (isinstance(body, dict) and body.get("object") == "list"
            and isinstance(body.get("data"), list)):
        return [read_receipt(saved)]
    if not body["data"]:
        raise ReceiptError("the embeddings response holds no item")
    out = []
    for item in body["data"]:
        if not isinstance(item, dict) or not isinstance(item.get("assay"), dict):
            raise ReceiptError("an embeddings item carries no assay field: it is not a receipt")
        request, commitment, output = _signed(item["assay"])
        shown = _embedding(item)
        if shown.numel == output.numel:  # shown flat: one vector of the [1, width] output
            shown = Tensor(shown.dtype, output.shape, shown.data)
        out.append(Receipt(request, commitment, output, shown, dict(item["assay"])))
    return out


def read_receipt(saved: str) -> Receipt:
    """A receipt from a saved response: a JSON body, or a streamed response's events."""
    chunks: list[dict[str, Any]] | None = None
    try:
        body = json.loads(saved)
    except ValueError:
        chunks = _chunks(saved)
        if not chunks:
            raise ReceiptError("the file is neither a JSON response nor a streamed one") from None
        body = chunks[-1]
    if not isinstance(body, dict) or not isinstance(body.get("assay"), dict):
        raise ReceiptError("the response carries no assay field: it is not a receipt")
    request, commitment, output = _signed(body["assay"])
    return Receipt(request, commitment, output, _shown(body, chunks), dict(body["assay"]))


def _signed(assay: dict[str, Any]) -> tuple[JobRequest, Commitment, Tensor]:
    """The request, commitment and output an ``assay`` field carries."""
    try:
        request = JobRequest.decode(_b64(assay, "request"))
        commitment = Commitment.decode(_b64(assay, "commitment"))
        output = codec.decode(_b64(assay, "output"))
    except ReceiptError:
        raise
    except ProtocolError as exc:
        raise ReceiptError(f"the receipt does not decode: {exc}") from exc
    if not isinstance(output, Tensor):
        raise ReceiptError("the receipt's assay.output is not a tensor")
    return request, commitment, output


def committed_text(request: JobRequest, output: Tensor,
                   decode: Callable[[Sequence[int]], str] = decode_tokens) -> str:
    """The text of a generation's committed tokens, cut before the first of the request's
    stop strings (the token that completed it is committed; its text is not shown)."""
    text = decode([int(t) for t in output.to_numpy().reshape(-1)])
    stops = dict(request.params).get("stop_strings")
    if isinstance(stops, bytes):
        try:
            strings = codec.decode(stops)
        except ProtocolError as exc:
            raise ReceiptError(f"the request's stop_strings do not decode: {exc}") from exc
        if not isinstance(strings, list) or not all(isinstance(x, str) and x for x in strings):
            raise ReceiptError("the request's stop_strings are not a list of strings")
        hits = [i for i in (text.find(x) for x in strings) if i >= 0]
        if hits:
            text = text[:min(hits)]
    return text


def check_receipt(receipt: Receipt, decode: Callable[[Sequence[int]], str] = decode_tokens
                  ) -> None:
    """Every check that needs no ledger (see the module docstring); raises :class:`ReceiptError`.

    ``decode`` turns token ids into text: byte-level by default (the zoo's vocabulary); for
    a model with its own tokenizer, its ``decode``."""
    request, commitment, output = receipt.request, receipt.commitment, receipt.output
    try:
        request.verify()
    except ProtocolError as exc:
        raise ReceiptError(f"the request's signature does not verify: {exc}") from exc
    try:
        commitment.verify()
    except ProtocolError as exc:
        raise ReceiptError(f"the commitment's signature does not verify: {exc}") from exc
    if commitment.job_id != request.job_id:
        raise ReceiptError("the commitment is for another job than the request")
    if commitment.node != request.node:
        raise ReceiptError("the commitment is signed by another node than the request names")
    if commitment.chain_id != request.chain_id:
        raise ReceiptError("the commitment is signed for another network than the request")
    if commitment.model_id != request.model_id:
        raise ReceiptError("the commitment names another model than the request")
    if commitment.input_hash != sha256(codec.encode(request.input)):
        raise ReceiptError("the commitment's input hash is not the request's input")
    if sha256(codec.encode(output)) != commitment.output_hash:
        raise ReceiptError("the output does not hash to the commitment's output hash")
    if isinstance(receipt.shown, Tensor):
        if receipt.shown != output:
            raise ReceiptError("the output shown is not the committed output")
    elif receipt.shown != committed_text(request, output, decode):
        raise ReceiptError("the text shown is not the committed tokens' text")
    claimed = receipt.claimed
    for name, value in (("job_id", commitment.job_id), ("commitment_id", commitment.content_id),
                        ("node", commitment.node)):
        if claimed.get(name) != value.hex():
            raise ReceiptError(f"the receipt's assay.{name} is not the signed commitment's")


def check_recorded(receipt: Receipt, job: JobInfo) -> None:
    """The ledger recorded the receipt's job with its commitment; raises :class:`ReceiptError`."""
    if not job.found:
        raise ReceiptError(
            f"job {receipt.commitment.job_id.hex()} is not recorded on the ledger: the node "
            "answered without recording it, so no validator may audit it (record it with "
            "--record)"
        )
    if job.commitment_id != receipt.commitment.content_id:
        raise ReceiptError("the ledger recorded another commitment for this job: the node "
                           "signed two (equivocation)")
    if job.node != receipt.commitment.node:
        raise ReceiptError("the ledger recorded the job for another node")
