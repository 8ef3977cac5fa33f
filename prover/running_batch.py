"""The node's running batches: one :class:`~prover.llm.engine.Engine` per ``llm`` model,
stepped in a worker thread while the event loop keeps serving.

A job is submitted with its key (the job id) and gets a channel on which
every token arrives as soon as a step has chosen it (the forward pass that
prepares the next step runs meanwhile), the last one with the job's
:class:`~prover.llm.engine.Generated` result. The channel is unbounded, but
holds at most ``max_new_tokens`` entries per job, so a client that never
reads costs the node that much memory and never stalls the batch. A job
whose client went away is cancelled: it leaves the batch at the next step
and leaves no result.

:meth:`RunningBatches.run` starts the loop in one worker thread: while any
engine has work it runs one step of each (joins, one token for every running
job, leaves), and the next at once; the event loop hands each step's tokens
out while the thread runs the step's forward passes, and updates the gauges
(``assay:num_requests_running``/``waiting``, as vLLM names them). The thread
never waits for the event loop between steps: a round trip to it per step (a
thread handed the step, then the loop woken with its result) cost 1-2 ms a
step on two busy cores. A step that raises drops the jobs it held (their
callers see them end unfinished, nothing committed) and the loop goes on
with fresh engines. With no work the thread sleeps until a job is submitted.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import trio

from protocol.net.metrics import Metrics
from prover.llm.engine import Engine, Generated, StepToken
from prover.llm.job import LLMJob
from prover.llm.model import LLM

log = logging.getLogger("assay.node")


@dataclass(frozen=True)
class Produced:
    """One token of a job, and the job's result when it was its last."""

    token: StepToken
    result: Generated | None


Channel = trio.MemoryReceiveChannel[Produced]


class RunningBatches:
    """See the module docstring."""

    def __init__(self, llms: Mapping[bytes, LLM], metrics: Metrics, attention: str = "sdpa",
                 threads: int = 1, max_num_seqs: int = 16, max_model_len: int = 0,
                 max_waiting: int = 64) -> None:
        def engine(llm: LLM) -> Engine:
            return Engine(llm, attention=attention, threads=threads, max_num_seqs=max_num_seqs,
                          max_model_len=min(max_model_len, llm.max_positions)
                          if max_model_len else None, max_waiting=max_waiting)

        self._fresh = engine
        self.engines = {model_id: engine(llm) for model_id, llm in llms.items()}
        self.metrics = metrics
        self.steps = 0
        """Decoding steps run so far (all engines together): a clock clients can compare."""
        self._channels: dict[bytes, trio.MemorySendChannel[Produced]] = {}
        self._model_of: dict[bytes, bytes] = {}
        self._wake = threading.Event()

    def serves(self, model_id: bytes) -> bool:
        return model_id in self.engines

    def max_model_len(self, model_id: bytes) -> int:
        return self.engines[model_id].max_model_len

    def submit(self, model_id: bytes, key: bytes, prompt: torch.Tensor, job: LLMJob,
               top_logprobs: int | None = None) -> Channel:
        """Queue a job; its tokens arrive on the channel returned. Raises the engine's
        ``QueueFull`` (retry later) or ``GenerationError`` (a job it cannot run)."""
        self.engines[model_id].submit(key, prompt, job, top_logprobs)
        send, receive = trio.open_memory_channel[Produced](math.inf)
        self._channels[key] = send
        self._model_of[key] = model_id
        self._wake.set()
        self.metrics.requests_waiting.set(sum(e.waiting for e in self.engines.values()))
        return receive

    def cancel(self, key: bytes) -> None:
        """Drop a job (its client went away): it leaves the batch at the next step."""
        model_id = self._model_of.pop(key, None)
        channel = self._channels.pop(key, None)
        if model_id is not None:
            self.engines[model_id].cancel(key)
        if channel is not None:
            channel.close()

    async def run(self) -> None:
        """Step in a worker thread while there is work (see the module docstring); the
        thread stops after the step it is in when this is cancelled."""
        stop = threading.Event()
        try:
            work = functools.partial(self._work, trio.lowlevel.current_trio_token(), stop)
            # mypy reads no keyword arguments after run_sync's *args: Unpack[Ts]
            await trio.to_thread.run_sync(work, abandon_on_cancel=True)  # type: ignore[call-arg]
        finally:
            stop.set()
            self._wake.set()

    def _work(self, loop: trio.lowlevel.TrioToken, stop: threading.Event) -> None:
        """The worker thread: step, hand the step's tokens to the event loop, step again."""
        while not stop.is_set():
            self._wake.clear()
            engines = self.engines
            if not any(e.running or e.waiting for e in engines.values()):
                self._wake.wait()
                continue
            try:
                for engine in engines.values():
                    if engine.running or engine.waiting:
                        engine.step(functools.partial(self._chosen, loop, engine, engines))
            except Exception:  # a bug in a step fails the jobs it held, never the node
                log.exception("a decoding step failed; its jobs are dropped")
                with contextlib.suppress(trio.RunFinishedError):
                    trio.from_thread.run_sync(self._reset, trio_token=loop)

    def _chosen(self, loop: trio.lowlevel.TrioToken, engine: Engine,
                engines: Mapping[bytes, Engine], tokens: list[StepToken]) -> None:
        """In the worker thread, as soon as a step has chosen its tokens (before its forward
        passes): pass them, and the results of the jobs they ended, to the event loop."""
        produced = [Produced(token, engine.pop(token.key) if token.finish_reason is not None
                             else None) for token in tokens]
        running = sum(e.running for e in engines.values())
        waiting = sum(e.waiting for e in engines.values())
        with contextlib.suppress(trio.RunFinishedError):  # the event loop is gone: nobody waits
            loop.run_sync_soon(self._hand_out, produced, running, waiting)

    def _hand_out(self, produced: list[Produced], running: int, waiting: int) -> None:
        """On the event loop: one step's tokens to their jobs' channels, and the gauges."""
        self.steps += 1
        for item in produced:
            key = item.token.key
            assert isinstance(key, bytes)
            channel = self._channels.get(key)
            if channel is not None:
                with contextlib.suppress(trio.BrokenResourceError):  # its caller went away
                    channel.send_nowait(item)
            if item.result is not None:
                self._model_of.pop(key, None)
                if channel is not None:
                    self._channels.pop(key).close()
        self.metrics.requests_running.set(running)
        self.metrics.requests_waiting.set(waiting)

    def _reset(self) -> None:
        """Fresh engines; every job's channel closed (its caller sees it end unfinished)."""
        self.engines = {m: self._fresh(e.llm) for m, e in self.engines.items()}
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._model_of.clear()
        self._gauges()

    def _gauges(self) -> None:
        self.metrics.requests_running.set(sum(e.running for e in self.engines.values()))
        self.metrics.requests_waiting.set(sum(e.waiting for e in self.engines.values()))
