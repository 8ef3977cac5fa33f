"""Where the log holds each pending job's request, commitment and served output.

The ledger service answers ``job_data`` from its own log, so a validator
re-executes from what the ledger recorded and never depends on the node for
a job's request (the node may withhold it, or send something else): only an
``llm`` audit needs the node's output, and a node that withholds that is
reported and must post it on the log (``ServeData``), where this index finds
it too.

The index maps job ids to log rows for pending jobs, and for the newest
``2 · RECORD_JOBS`` settled sampled jobs of each node and model: a settled job
is never audited again, but a ``RECORD`` dispute's committee re-executes the
node's record (:func:`slashing.rules.record_of`). It is rebuilt at start by one pass over the log (a
decode of every event: about the cost of replaying from genesis) and kept
up to date as the service appends. :class:`RecordOrder` lists every job of
each node and model in the ledger's order, which a ``record`` query walks.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator

from protocol.sampling import RECORD_JOBS
from slashing.events import RecordJob, ServeData
from slashing.rules import record_key
from slashing.settlement import Settlement
from slashing.state import Job, JobStatus, State
from slashing.store import LogEntry


class RecordOrder:
    """Every job of each node and model in the ledger's record order
    (:func:`slashing.rules.record_key`), so that a ``record`` query walks back from its job
    over that node's jobs only (:func:`slashing.rules.record_of` with ``newest_first``)
    instead of sorting the whole ledger: a query any peer may send must not cost the service
    the ledger's size."""

    def __init__(self) -> None:
        self._keys: dict[tuple[bytes, bytes], list[tuple[int, bytes]]] = {}
        self._known: set[bytes] = set()

    def add(self, job: Job) -> None:
        if job.job_id in self._known:
            return
        self._known.add(job.job_id)
        bisect.insort(self._keys.setdefault((job.node, job.model_id), []), record_key(job))

    def earlier(self, job: Job) -> Iterator[bytes]:
        """The ids of the node's jobs of the model recorded before ``job``, newest first."""
        keys = self._keys.get((job.node, job.model_id), [])
        for i in range(bisect.bisect_left(keys, record_key(job)) - 1, -1, -1):
            yield keys[i][1]


class JobRecords:
    def __init__(self, ledger: Settlement) -> None:
        self.ledger = ledger
        self._recorded: dict[bytes, int] = {}
        self._served: dict[bytes, int] = {}
        self._kept: dict[tuple[bytes, bytes], deque[bytes]] = {}
        """Per (node, model): the settled sampled jobs kept for records, oldest first."""
        self.order = RecordOrder()
        for entry in ledger.events(0):
            self.note(entry)
        self.prune(ledger.state)

    def note(self, entry: LogEntry) -> None:
        """Index an event the ledger just appended (or the start-up pass read)."""
        event = entry.event
        if isinstance(event, RecordJob):
            job_id = event.request_message.job_id
            self._recorded.setdefault(job_id, entry.seq)  # the first record is the job's
            job = self.ledger.state.jobs.get(job_id)
            if job is not None:
                self.order.add(job)
        elif isinstance(event, ServeData):
            self._served[event.job_id] = entry.seq

    def prune(self, state: State) -> None:
        """Forget jobs that are no longer pending, but the newest sampled ones of each node and
        model (a record reaches back to them)."""
        kept_ids = self._kept_ids()
        final = sorted((job.recorded_round, job_id, job) for job_id in self._recorded
                       if job_id not in kept_ids and _final(state, job_id)
                       and (job := state.jobs.get(job_id)) is not None
                       and job.sampled and not job.zk)
        for _, job_id, job in final:
            kept = self._kept.setdefault((job.node, job.model_id), deque())
            kept.append(job_id)
            while len(kept) > 2 * RECORD_JOBS:
                self._forget(kept.popleft())
        kept_ids = self._kept_ids()
        for table in (self._recorded, self._served):
            for job_id in [j for j in table if _final(state, j) and j not in kept_ids]:
                del table[job_id]

    def _kept_ids(self) -> set[bytes]:
        return {job_id for kept in self._kept.values() for job_id in kept}

    def _forget(self, job_id: bytes) -> None:
        self._recorded.pop(job_id, None)
        self._served.pop(job_id, None)

    def _event(self, seq: int) -> object:
        return next(self.ledger.events(seq - 1)).event

    def record(self, job_id: bytes) -> RecordJob | None:
        """The job's ``RecordJob`` event, while the job is pending or kept for records."""
        seq = self._recorded.get(job_id)
        if seq is None:
            return None
        event = self._event(seq)
        assert isinstance(event, RecordJob)
        return event

    def served(self, job_id: bytes) -> bytes | None:
        """The output posted for the job (its canonical tensor bytes), if any."""
        seq = self._served.get(job_id)
        if seq is None:
            return None
        event = self._event(seq)
        assert isinstance(event, ServeData)
        return event.output

    def __len__(self) -> int:
        return len(self._recorded)


def _final(state: State, job_id: bytes) -> bool:
    job = state.jobs.get(job_id)
    return job is None or job.status is not JobStatus.PENDING
