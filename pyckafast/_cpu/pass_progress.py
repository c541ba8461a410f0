"""Progress of the CPU passes: block pairs of the RBF and tiled linear passes, rows of chunks.

:func:`reporter` opens the bar (:func:`pyckafast._core.progress.progress_reporter`) when the
pass first reports, i.e. once the pass knows its total, and serialises the calls of worker
threads.

The BLAS-tiled pass already visits block pairs (:func:`pyckafast._core.pairs.reduce_pairs`):
:func:`counted` wraps its accumulator. The fused pass of the C++ extension is one call over a
whole row set, which cannot report; with ``progress`` it runs the same call over bands of rows
(:func:`fused_in_bands`), each band pair one unit, scattered by the same
:class:`~pyckafast._core.pairs.PairTermsSum`. Without ``progress`` nothing here runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import Any

from .._core.pairs import Bounds, CentredSide, PairTerms, PairTermsSum, block_bounds, reduce_pairs
from .._core.progress import Progress, Report, progress_reporter

__all__ = ["pair_count", "counted", "fused_in_bands", "band_rows", "reporter"]

# Bands of the fused pass: at most this many per side (<= 136 band pairs), and at least this
# many fused blocks per band, so each call still has work for every thread.
_MAX_BANDS = 16
_MIN_BLOCKS_PER_BAND = 4


def pair_count(bounds_a: Sequence[Bounds], bounds_b: Sequence[Bounds] | None) -> int:
    """Block pairs :func:`~pyckafast._core.pairs.block_pairs` visits."""
    if bounds_b is None:
        return len(bounds_a) * (len(bounds_a) + 1) // 2
    return len(bounds_a) * len(bounds_b)


@dataclass
class _Counted:
    """A pass-through accumulator that reports each block pair added."""

    inner: Any
    report: Report
    total: int
    done: int = 0

    def add(self, part: Any, a: Bounds, b: Bounds, diagonal: bool) -> None:
        self.inner.add(part, a, b, diagonal)
        self.done += 1
        self.report(self.done, self.total)

    def result(self) -> Any:
        return self.inner.result()


@contextmanager
def counted(inner: Any, progress: Progress, bounds_a: Sequence[Bounds],
            bounds_b: Sequence[Bounds] | None, *, desc: str = "rbf pairs") -> Iterator[Any]:
    """``inner``, reporting ``progress(done, total)`` per block pair when asked."""
    total = pair_count(bounds_a, bounds_b)
    with progress_reporter(progress, total, desc=desc, unit="pair") as report:
        yield inner if report is None else _Counted(inner, report, total)


def band_rows(n: int, block: int) -> int:
    """Rows per band of the counted fused pass (a multiple of the fused ``block``)."""
    per_band = max(_MIN_BLOCKS_PER_BAND * block, -(-n // _MAX_BANDS))
    return -(-per_band // block) * block


def fused_in_bands(a: tuple[CentredSide, CentredSide], b: tuple[CentredSide, CentredSide] | None,
                   progress: Progress, run: Callable[[Any, Any], PairTerms],
                   block: int) -> PairTerms:
    """``run(sides_a, sides_b)`` (the fused set-pair pass; ``sides_b`` None for a set against
    itself) over band pairs of rows, reported per band pair; the same sums as one call."""
    band = band_rows(max(a[0].n, 1 if b is None else b[0].n), block)
    bounds_a = block_bounds(a[0].n, band)
    bounds_b = None if b is None else block_bounds(b[0].n, band)

    def load(sides):
        return lambda bounds: tuple(_rows(side, bounds) for side in sides)

    def body(band_a, band_b, diagonal: bool) -> PairTerms:
        return run(band_a, None if diagonal else band_b)

    into = PairTermsSum(a[0].n, None if b is None else b[0].n)
    with counted(into, progress, bounds_a, bounds_b) as into:
        return reduce_pairs(body, bounds_a, bounds_b, load_a=load(a),
                            load_b=None if b is None else load(b), into=into)


def _rows(side: CentredSide, bounds: Bounds) -> CentredSide:
    # A view of the rows with the side's own shift: every band is centred alike.
    return replace(side, rows=side.rows[bounds[0]:bounds[1]])


@contextmanager
def reporter(progress: Progress, *, desc: str, unit: str) -> Iterator[Report | None]:
    """``report(done, total)`` for ``progress`` (None when silent), safe to call from worker
    threads; the bar opens at the first report, with that call's total."""
    if progress is None or progress is False:
        yield None
        return
    lock, opened = threading.Lock(), []
    with ExitStack() as stack:
        def report(done: int, total: int) -> None:
            with lock:
                if not opened:
                    opened.append(stack.enter_context(
                        progress_reporter(progress, total, desc=desc, unit=unit)))
                opened[0](done, total)

        yield report
