"""The Ed25519 checks the rules make, and running a batch's checks ahead of time in parallel.

A signature check is a pure function of (signer, domain tag, payload,
signature), so its answer can be computed anywhere, earlier, and remembered.
A check costs about as much as the rest of a ``RecordJob`` together, so
:func:`pipelined` hands a batch's checks to worker threads, group by group,
and the rules find the ones that passed already done. A check is one call
into libsodium, and cffi, which PyNaCl's bindings are built with, makes C
calls with the GIL released (cffi documentation, since cffi 0.3): the
workers check side by side on separate cores, most of all while the applying
thread waits for its next group (running the rules, it holds the GIL most of
the time). Unlike worker processes, threads copy no batch anywhere and back.
A check that failed ahead of time is simply made again by the rule, which
raises ``BadSignature`` as it would have. Nothing is remembered beyond the
batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from protocol.errors import BadSignature, MalformedMessage
from protocol.keys import PublicKey
from slashing.events import SignatureCheck

_passed: set[SignatureCheck] = set()
"""Checks that passed ahead of time, for the batch being applied; only the applying thread
reads or writes it."""

MIN_PARALLEL_CHECKS = 64
"""Fewer checks than this are not worth handing to other threads."""


def check_signature(check: SignatureCheck) -> None:
    """Raise :class:`BadSignature` unless ``signer`` signed ``payload`` under ``tag``."""
    if check in _passed:
        return
    signer, tag, payload, signature = check
    PublicKey(signer).verify(tag, payload, signature)


def passes(check: SignatureCheck) -> bool:
    try:
        signer, tag, payload, signature = check
        PublicKey(signer).verify(tag, payload, signature)
    except (BadSignature, MalformedMessage):
        return False
    return True


def _passes_all(checks: Sequence[SignatureCheck]) -> list[bool]:
    return [passes(check) for check in checks]


class SignaturePool:
    """Worker threads that run signature checks; created once, used by many batches."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"a signature pool needs at least one worker, got {workers}")
        self.workers = workers
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="assay-signatures"
        )

    def close(self) -> None:
        self._executor.shutdown(cancel_futures=True)

    def start(self, groups: Sequence[Sequence[SignatureCheck]]) -> list[Future[list[bool]]]:
        """Start checking each group in the workers; one future per group, in order."""
        return [self._executor.submit(_passes_all, group) for group in groups]


def pipelined(
    groups: Sequence[Sequence[SignatureCheck]], pool: SignaturePool | None
) -> Iterator[int]:
    """Yield each group's index once its checks are done, while later groups are checked.

    The caller applies the events of group ``i`` when ``i`` is yielded; the
    workers meanwhile check the groups after it, so rule work and signature
    work overlap. Without a pool (or for few checks) the rules check as usual.
    """
    if pool is None or sum(len(g) for g in groups) < MIN_PARALLEL_CHECKS:
        yield from range(len(groups))
        return
    futures = pool.start(groups)
    try:
        for index, (group, future) in enumerate(zip(groups, futures, strict=True)):
            _passed.update(check for check, ok in zip(group, future.result(), strict=True) if ok)
            yield index
    finally:
        for future in futures:
            future.cancel()
        _passed.clear()
