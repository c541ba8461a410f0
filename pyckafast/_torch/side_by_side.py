"""Two models' forward passes of one batch run side by side, each on its share of torch's threads.

On a CPU torch runs one operator at a time on its whole intra-op pool: each operator is split
across the pool's threads and ends at a barrier. Small operators (a convolution of 16 channels,
a batch norm, an activation) cost little work per thread but a barrier each, and on a loaded
machine every descheduled thread holds the whole team at that barrier. Two independent models
need no barrier between them: run side by side, each on its half of the threads, they finish
their small operators with no wait. Measured on 2 cores (bench/job_bench.py's models, n = 4,096,
batches of 256): the ResNet's forward passes 6.3 s one after the other, 4.1 s side by side; the
MLP's (large GEMMs, which split well) 0.51 s and 0.50 s.

They run side by side only when that cannot change what either model computes or records: both
on the CPU, two different models that share no module (a shared module's hooks would fire for
both), torch's pool of at least 2 threads, and no autocast (thread-local, as are grad and
inference mode, which the worker copies). ``PYCKAFAST_SIDE_BY_SIDE=0`` turns it off. The exact
map keeps them one after the other (``pool_between``): its tile GEMMs between the passes need
torch's whole pool, and side by side measured no faster there (ResNet, 4 rounds: 23.95 s and
23.26 s).
"""

from __future__ import annotations

import contextvars
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

__all__ = ["SideBySide"]

A = TypeVar("A")
B = TypeVar("B")


class SideBySide:
    """Runs ``first()`` here and ``second()`` in a worker thread, each on half of torch's
    intra-op threads, when :meth:`possible`; else one after the other.

    Use as a context manager around the batch loop. Inside the block the caller's thread keeps
    its half of the pool for all its torch work (changing the pool's size per batch re-forms
    torch's OpenMP team: about 1 ms each time, measured), the worker the other half; after the
    block the caller's setting is back. ``pool_between=True``: the caller's work between the
    forward passes needs torch's whole pool (the exact map's tile GEMMs), so the passes run one
    after the other.

    Examples
    --------
    >>> import torch
    >>> from pyckafast._torch.side_by_side import SideBySide
    >>> a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    >>> x = torch.ones(4, 3)
    >>> with SideBySide(a, b, "cpu", "cpu") as pair:
    ...     ya, yb = pair.run(lambda: a(x), lambda: b(x))
    >>> ya.shape == yb.shape == (4, 2)
    True
    """

    def __init__(self, model_a: Any, model_b: Any, device_a: Any, device_b: Any, *,
                 pool_between: bool = False) -> None:
        self.torch = sys.modules["torch"]
        self.threads = int(self.torch.get_num_threads())
        self.mine, self.theirs = self.threads - self.threads // 2, self.threads // 2
        self.parallel = not pool_between and self.possible(model_a, model_b, device_a, device_b)
        self.pool: ThreadPoolExecutor | None = None

    def possible(self, model_a, model_b, device_a, device_b) -> bool:
        """Whether the two forward passes may run side by side (see the module's notes)."""
        if os.environ.get("PYCKAFAST_SIDE_BY_SIDE", "1") == "0" or self.threads < 2:
            return False
        if model_a is model_b or model_b is None:
            return False
        if any(self.torch.device(d).type != "cpu" for d in (device_a, device_b)):
            return False
        if _autocast_enabled(self.torch):
            return False
        shared = {id(m) for m in model_a.modules()} & {id(m) for m in model_b.modules()}
        return not shared

    def __enter__(self) -> SideBySide:
        if self.parallel:
            # the worker's OpenMP team is its own (a thread-local setting), sized once
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="pyckafast-model-b",
                                           initializer=self.torch.set_num_threads,
                                           initargs=(self.theirs,))
            self.torch.set_num_threads(self.mine)
        return self

    def __exit__(self, *exc) -> bool:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None
            self.torch.set_num_threads(self.threads)
        return False

    def run(self, first: Callable[[], A], second: Callable[[], B] | None) -> tuple[A, B | None]:
        """``(first(), second())``; side by side inside the block when possible. Both have
        finished when it returns or raises (the error of ``first`` before that of ``second``)."""
        if second is None or self.pool is None:
            return first(), (None if second is None else second())
        future = self.pool.submit(contextvars.copy_context().run, self._in_worker, second,
                                  self.torch.is_grad_enabled(),
                                  self.torch.is_inference_mode_enabled())
        try:
            out_a = first()
        finally:
            wait([future])  # never leave the worker running (an error of first() goes first)
        return out_a, future.result()

    def _in_worker(self, fn: Callable[[], B], grad: bool, inference: bool) -> B:
        with self.torch.inference_mode(inference), self.torch.set_grad_enabled(grad):
            return fn()


def _autocast_enabled(torch) -> bool:
    """Any autocast region active on this thread (it would not carry over to the worker)."""
    try:
        return bool(torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda"))
    except TypeError:  # torch before 2.4: no device argument
        return bool(torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled())
