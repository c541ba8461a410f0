"""One thread setting that every CPU producer obeys.

The number of threads is, in order of precedence: the innermost :func:`threads` block, the last
:func:`set_num_threads`, the ``PYCKAFAST_NUM_THREADS`` environment variable, ``OMP_NUM_THREADS``,
and the cores this process may run on (its CPU affinity, which a container, ``taskset`` or a
batch scheduler may set lower than the machine's core count).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

__all__ = ["get_num_threads", "set_num_threads", "threads", "blas_threads", "single_threaded_blas",
           "sync_numba"]

_override: contextvars.ContextVar[int | None] = contextvars.ContextVar("pyckafast_threads",
                                                                        default=None)
_global: int | None = None


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def get_num_threads() -> int:
    """Return the number of threads pyckafast's CPU producers use.

    In order of precedence: the innermost :func:`threads` block, the last
    :func:`set_num_threads`, ``PYCKAFAST_NUM_THREADS``, ``OMP_NUM_THREADS``, and the cores this
    process may run on (its CPU affinity).

    Returns
    -------
    int
        The number of threads (>= 1).

    Examples
    --------
    >>> import pyckafast
    >>> with pyckafast.threads(1):
    ...     pyckafast.get_num_threads()
    1
    """
    for value in (_override.get(), _global):
        if value is not None:
            return value
    for name in ("PYCKAFAST_NUM_THREADS", "OMP_NUM_THREADS"):
        env = _positive_int(os.environ.get(name))
        if env is not None:
            return env
    return available_cores()


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads from now on, in every thread of this process.

    Parameters
    ----------
    n : int or None
        A positive number of threads; None goes back to the environment's setting or the
        cores available. A :func:`threads` block still takes precedence.

    Examples
    --------
    >>> import pyckafast
    >>> pyckafast.set_num_threads(1)
    >>> pyckafast.get_num_threads()
    1
    >>> pyckafast.set_num_threads(None)
    """
    global _global
    _global = None if n is None else _check(n)


@contextlib.contextmanager
def threads(n: int) -> Iterator[int]:
    """Use ``n`` threads inside the ``with`` block (in this thread and context only).

    Parameters
    ----------
    n : int
        A positive number of threads.

    Yields
    ------
    int
        ``n``, for ``with pyckafast.threads(n) as k``.

    Examples
    --------
    >>> import numpy as np, pyckafast
    >>> x = np.random.default_rng(0).normal(size=(1000, 8))
    >>> with pyckafast.threads(1):
    ...     round(pyckafast.linear_cka(x, 2 * x), 12)
    1.0
    """
    token = _override.set(_check(n))
    try:
        yield n
    finally:
        _override.reset(token)


def _check(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"The number of threads must be a positive integer. Got {n!r} instead.")
    return n


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(text) if text else None
    except ValueError:
        return None
    return value if value is not None and value >= 1 else None


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """BLAS on at most ``n`` threads inside the block (restored after). Nothing is changed when
    ``n`` covers every available core (BLAS's own default), so the common case costs nothing."""
    if n >= available_cores():
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        yield


def single_threaded_blas() -> contextlib.AbstractContextManager[None]:
    """BLAS on one thread inside the block: for code whose own threads are the parallelism."""
    return blas_threads(1)


def sync_numba() -> None:
    """Let Numba's parallel kernels follow the setting (``numba.set_num_threads`` is per calling
    thread and capped by the threads Numba started with)."""
    import numba

    numba.set_num_threads(min(get_num_threads(), numba.config.NUMBA_NUM_THREADS))
