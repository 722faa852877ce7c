"""Work spread over forked worker processes, for the CPU-bound baseline path.

:class:`ForkPool` runs a module-level function over many items on processes that inherit a shared
state at the fork (ingest prepares blocks of records with it); :class:`AnalyzerPool` is the one
that scores texts with an analyzer.

jieba, the TF-IDF look-ups and the per-text rules are Python code that holds the GIL, so threads do
not help; processes do. :class:`AnalyzerPool` forks its workers once (per ``enrich`` run) from a
process whose analyzer is loaded and warmed up: each worker starts with the models, the jieba
dictionary and the vocabularies already in memory (shared copy-on-write with the parent), so
nothing is loaded again. Work goes out in chunks, at most two per worker in flight (memory stays
bounded however many rows are pending), and results come back in submission order, so a run with
workers stores exactly what a serial run stores.

``workers=1``, a platform without ``fork``, or an analyzer that runs a torch model (the
transformer and the ensemble already use every core through torch's threads, and forking a process
whose OpenMP pool has started is unsafe) run the same function in-process instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing as mp
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.pool import AsyncResult, Pool
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:   # not imported at run time: ingest uses ForkPool without loading any model code
    from models.predict import Analyzer

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

_WORKER_STATE: object = None   # set in the parent just before forking; the workers inherit it


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity respected)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parallel_safe(analyzer: Analyzer) -> bool:
    """Whether ``analyzer`` may be forked into workers: no torch model inside (see the module doc)."""
    return getattr(analyzer.model, "kind", None) == "baseline" and analyzer.encoder is None


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: the parent stops the pool, workers must not die half-way
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):  # a worker must not outlive a parent killed with SIGKILL
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _run(fn: Callable[[object, T], R], item: T) -> R:
    assert _WORKER_STATE is not None, "ForkPool worker started without its state"
    return fn(_WORKER_STATE, item)


def warm_up(analyzer: Analyzer) -> None:
    """Load everything an analysis touches lazily (dictionaries, look-up tables), so that forked
    workers inherit it instead of each building its own."""
    from nlp.keyword_rank import warm_up as warm_up_keywords
    from nlp.word_column import warm_up as warm_up_word_column

    analyzer.analyze(["快递很快，但是客服态度太差了，我要投诉12315！<PHONE>", "好评"])
    warm_up_keywords()   # used once a worker's memo of keyword weights has grown (nlp.segment)
    warm_up_word_column()   # what pipelines.enrich stores the words with


class ForkPool(Generic[S]):
    """Run ``fn(state, item)`` for many items on ``workers`` forked processes (or in-process).

    ``state`` (an analyzer, the settings of a file being prepared) is what every item needs: the
    workers inherit it at the fork instead of receiving it with each item. Use as a context
    manager; :meth:`imap` yields results in the order of the items. ``workers=1`` or a platform
    without ``fork`` runs ``fn`` in-process."""

    def __init__(self, state: S, workers: int) -> None:
        self.state = state
        self.workers = max(1, int(workers))
        if "fork" not in mp.get_all_start_methods():
            self.workers = 1
        self._pool: Pool | None = None

    def __enter__(self) -> ForkPool[S]:
        if self.workers > 1:
            global _WORKER_STATE
            _WORKER_STATE = self.state
            # objects that exist now are the parent's: the workers' garbage collector leaves them
            # alone, so their pages stay shared instead of being copied into every worker
            gc.freeze()
            try:
                self._pool = mp.get_context("fork").Pool(self.workers, initializer=_worker_init)
            finally:
                gc.unfreeze()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        global _WORKER_STATE
        pool, self._pool = self._pool, None
        if pool is not None:
            if exc_type is None:
                pool.close()
            else:
                pool.terminate()
            pool.join()
            _WORKER_STATE = None

    def imap(self, fn: Callable[[S, T], R], items: Iterable[T]) -> Iterator[R]:
        """``fn(state, item)`` for each item, in order. ``fn`` must be a module-level function
        (workers receive it by name). At most two items per worker are in flight."""
        if self._pool is None:
            for item in items:
                yield fn(self.state, item)
            return
        window: deque[AsyncResult] = deque()
        for item in items:
            window.append(self._pool.apply_async(_run, (fn, item)))
            if len(window) >= 2 * self.workers:
                yield window.popleft().get()
        while window:
            yield window.popleft().get()


class AnalyzerPool(ForkPool["Analyzer"]):
    """A :class:`ForkPool` over an analyzer: warmed up before the fork, and in-process for an
    analyzer that runs a torch model (see the module doc)."""

    def __init__(self, analyzer: Analyzer, workers: int) -> None:
        super().__init__(analyzer, workers if parallel_safe(analyzer) else 1)
        self.analyzer = analyzer

    def __enter__(self) -> AnalyzerPool:
        if self.workers > 1:
            warm_up(self.analyzer)
        super().__enter__()
        return self
