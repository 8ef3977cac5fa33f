"""A node that deviates a little on every job, caught and slashed on its record by the running
services: a real ledger service, real libp2p hosts, a real node service and two validator
services on loopback (:func:`tests.net_helpers.network`).

The attack: the node serves GPT-2 in bfloat16 with its weights rounded to 9 bits. Every job
alone is VALID (each deviates by less than one job's threshold leaves honest machines), so
no per-job accusation could slash it. The validators, each auditing its share, read the
node's record from the ledger once their own audits point at it; the first to find the record
at the bound accuses the job in hand with ``RECORD`` evidence, and the committee (the other
validator), reading the same record (the jobs it audited from its own journal, the rest
fetched), confirms it. The node loses S; no validator loses anything. The node also serves
each output to that job's auditor only, as long as the audit is awaited: every record job a
validator did not audit itself must come from the other validator's journal.

Slow: about a hundred ``llm`` jobs through the services (a minute or two on two cores).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import trio
from torch import nn

from protocol.codec import Tensor
from protocol.messages import JobRequest, Offence
from prover import zoo
from prover.llm.generate import LLM
from prover.llm.job import DEFAULT_CALIBRATION, REGISTRY_KEY, Calibration
from prover.service import NodeUnavailable
from slashing import constants as c
from slashing.rules import record_of
from tests.net_helpers import CLIENT, EXPIRY_ROUNDS, FEE, Network, network, zoo_registry
from tests.test_llm_evidence_audits import jobs
from tests.test_llm_verify import quantized
from tests.test_net_adversaries import CommitteeWithholdingNode, metric_total
from verifier.calibrate import HonestSetting, measure

pytestmark = pytest.mark.slow

DTYPE = "bfloat16"


def calibrated(model: LLM) -> Calibration:
    """The default thresholds with the honest mean score measured on ``model``, as ``assay
    calibrate`` measures it."""
    tolerances = DEFAULT_CALIBRATION.for_dtype(DTYPE)
    measured = [d for setting in (HonestSetting("b1"), HonestSetting("b4 eager", batch=4,
                                                                     attention="eager"))
                for d in measure(model, jobs(1, 8), setting)]
    mean = statistics.mean(d.score(tolerances) for d in measured)
    return Calibration({**DEFAULT_CALIBRATION.tolerances,
                        DTYPE: dataclasses.replace(tolerances, honest_mean_score=mean)},
                       {"source": "test"})


def rounded(bits: int) -> Callable[[dict[bytes, nn.Module]], dict[bytes, nn.Module]]:
    return lambda modules: {m: quantized(module, bits) for m, module in modules.items()}


def request_for(net: Network, model_id: bytes, i: int) -> JobRequest:
    prompt, job = jobs(1000 + i, 1)[0]
    node = net.nodes[0]
    return JobRequest(model_id=model_id, input=Tensor.from_torch(prompt[None, :]),
                      client=CLIENT.public.raw, node=node.node.node_id, nonce=i, fee=FEE,
                      expiry_round=node.ledger.round + EXPIRY_ROUNDS,
                      chain_id=node.ledger.chain_id,
                      params=tuple(job.to_params().items())).signed(CLIENT)


def test_a_node_deviating_under_the_per_job_line_is_slashed_on_its_record(
        tmp_path: Path) -> None:
    registry = zoo_registry(tmp_path, (("gpt2", "gpt2", "llm"),))
    (entry,) = registry.list()
    calibration = calibrated(LLM(zoo.build("gpt2", seed=1).module))
    registry.update_params(entry.model_id, {REGISTRY_KEY: calibration.to_json()})

    async def body(net: Network) -> None:
        node = net.nodes[0]
        stake = (await net.client.account(node.node.node_id)).node.stake
        state = net.ledger.ledger.state

        async def one(i: int) -> None:
            try:
                await node.execute(request_for(net, entry.model_id, i))
            except NodeUnavailable as exc:  # slashed and jailed meanwhile: its jobs refused
                assert "not bonded as a node" in str(exc), exc

        with trio.fail_after(420):
            i = 0
            while not any(d.on_record and d.outcome is not None
                          for d in state.disputes.values()):
                assert i < 200, "no record dispute after 200 jobs"
                async with trio.open_nursery() as jobs_nursery:
                    for _ in range(4):
                        jobs_nursery.start_soon(one, i)
                        i += 1
                await trio.sleep(0.2)
                state = net.ledger.ledger.state
        disputes = list(state.disputes.values())
        # no job alone was accused: only the record
        assert all(d.on_record for d in disputes), disputes
        decided = [d for d in disputes if d.outcome is not None]
        assert [str(d.outcome) for d in decided] == ["FRAUD"] * len(decided)
        slash = state.params.fraud_slash  # type: ignore[union-attr]
        assert (await net.client.account(node.node.node_id)).node.stake <= stake - slash
        for v in net.validators:
            assert not (await net.client.account(v.me)).jailed(c.VALIDATOR)
        # each accused on its record by one validator, confirmed by the other
        assert all(d.accusers and d.committee and not set(d.accusers) & set(d.committee)
                   for d in decided)
        # the node refused the record's outputs: they came from the validators' journals
        assert sum(metric_total(v, "assay_validator_fetch_failures") for v in net.validators) > 0
        offences = await net.client.offences(node.node.node_id)
        assert [(o.kind, o.job_id) for o in offences] == [
            (str(Offence.RECORD), d.job_id) for d in decided]  # the operator is told why
        for v in net.validators:
            assert await net.client.offences(v.me) == []
        # judged on dozens of the node's sampled jobs, as many as the bet needs (about 60 at
        # this cheat's mean score), never on one job
        assert all(len(record_of(state, d.job_id)) >= 40 for d in decided)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            async with network(tmp_path, nursery, registry=registry, cheaters=(0,),
                               substitutes=rounded(9), node_settings={"max_num_seqs": 8},
                               node_classes=(CommitteeWithholdingNode,)) as net:
                await body(net)
            nursery.cancel_scope.cancel()
        net.ledger.close()

    torch.manual_seed(0)
    trio.run(main)
