"""Progress reporting that flows can call without knowing who listens.

The CLI installs a rich progress bar with :func:`reporting`; inside a Prefect deployment nothing is
installed and the calls cost nothing (flows log their counts through Prefect's logger instead).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Reporter(Protocol):
    def start(self, stage: str, total: int | None) -> None: ...
    def advance(self, stage: str, n: int = 1) -> None: ...
    def finish(self, stage: str) -> None: ...


class _Silent:
    def start(self, stage: str, total: int | None) -> None:
        pass

    def advance(self, stage: str, n: int = 1) -> None:
        pass

    def finish(self, stage: str) -> None:
        pass


_current: Reporter = _Silent()


def reporter() -> Reporter:
    return _current


@contextmanager
def reporting(r: Reporter) -> Iterator[Reporter]:
    """Send progress of everything run inside the block to ``r``."""
    global _current
    previous, _current = _current, r
    try:
        yield r
    finally:
        _current = previous
