"""How the public functions run a producer with the one ``progress=`` option.

Where the terms are made decides what can be reported (:func:`pyckafast._core.dispatch.place`):

* ``"cpu"``: the producer itself reports its units (chunks of rows, block pairs of tiles) and
  takes ``progress=``;
* ``"dask"``: the tasks of each Dask computation, counted by a scheduler callback (local
  schedulers: threads, processes, synchronous; a ``dask.distributed`` cluster has its own
  dashboard and ``distributed.progress``, and reports nothing here);
* ``"cuda"``: the device pass is one unit (its kernels are queued asynchronously, so a finer
  count would measure the queue, not the work).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .progress import Progress, progress_reporter

__all__ = ["run_producer", "dask_progress"]


def run_producer(produce: Callable[..., Any], where: str, progress: Progress, *args: Any,
                 desc: str, **kwargs: Any) -> Any:
    """``produce(*args, **kwargs)`` with ``progress`` reported as ``where`` allows."""
    if where == "cpu":
        return produce(*args, progress=progress, **kwargs)
    if where == "dask":
        with dask_progress(progress, desc=desc):
            return produce(*args, **kwargs)
    with progress_reporter(progress, 1, desc=desc, unit="pass") as report:
        result = produce(*args, **kwargs)
        if report is not None:
            report(1, 1)
    return result


@contextmanager
def dask_progress(progress: Progress, *, desc: str = "dask") -> Iterator[None]:
    """Report ``progress(done, total)`` in tasks for every Dask computation run in the block.

    Each ``compute`` is a pass of its own (a bandwidth pass, the RBF pass): a new bar, or a new
    count from 0 for a callback.
    """
    if progress is None or progress is False:
        yield
        return
    from dask.callbacks import Callback

    class _Tasks(Callback):
        def __init__(self) -> None:
            super().__init__()
            self.passes: list = []

        def _start_state(self, dsk, state) -> None:
            total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
            bar = progress_reporter(progress, total, desc=desc, unit="task")
            self.passes.append((bar, bar.__enter__(), total))

        def _posttask(self, key, result, dsk, state, worker_id) -> None:
            _bar, report, total = self.passes[-1]
            if report is not None:
                report(min(len(state["finished"]), total), total)

        def _finish(self, dsk, state, errored) -> None:
            if self.passes:
                self.passes.pop()[0].__exit__(None, None, None)

    with _Tasks():
        yield
