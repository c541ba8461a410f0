"""One thread budget that every CPU producer obeys, shared with torch inside model loops.

The number of threads is, in order of precedence: the innermost :func:`threads` block, the last
:func:`set_num_threads`, the ``PYCKAFAST_NUM_THREADS`` environment variable, ``OMP_NUM_THREADS``,
and the cores this process may run on (its CPU affinity, which a container, ``taskset`` or a
batch scheduler may set lower than the machine's core count). Every setting is validated in one
place (:func:`_checked`): a value that is not a positive whole number is an error naming the
setting (``OMP_NUM_THREADS``, which other libraries read too, is ignored with a warning), and a
count above the machine's logical CPUs is capped there with a warning (a count that large
cannot run faster, and the C++ extension takes a C int).

Inside a loop that runs torch models (:func:`model_loop`), pyckafast's BLAS, Numba and C++
threads are cut to :func:`torch_aware_threads`: the cores torch's intra-op pool leaves free,
at least one. The two pools take turns (pyckafast works between forward passes), and a second
pool of busy-waiting workers next to torch's OpenMP team made the forward passes 2.2x slower.
Work on torch tensors runs in torch's own pool instead (``pyckafast.minibatch``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import operator
import os
import sys
import warnings
from collections.abc import Iterator

__all__ = ["get_num_threads", "set_num_threads", "threads", "blas_threads", "single_threaded_blas",
           "sync_numba", "torch_aware_threads", "model_loop", "loop_torch"]

_override: contextvars.ContextVar[int | None] = contextvars.ContextVar("pyckafast_threads",
                                                                        default=None)
# The budget of the model loop this context is in (None: not in one).
_loop_budget: contextvars.ContextVar[int | None] = contextvars.ContextVar("pyckafast_loop",
                                                                           default=None)
_global: int | None = None


def machine_threads() -> int:
    """The logical CPUs of the machine: more threads than this cannot run at once."""
    return max(1, os.cpu_count() or 1, available_cores())


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
    setting = _setting()
    loop = _loop_budget.get()
    return setting if loop is None else min(setting, loop)


def _setting() -> int:
    """The thread setting before any model-loop budget."""
    for value in (_override.get(), _global):
        if value is not None:
            return value
    for name in ("PYCKAFAST_NUM_THREADS", "OMP_NUM_THREADS"):
        text = os.environ.get(name)
        if text is not None and text.strip():
            env = _env_threads(name, text, machine_threads())
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
    _global = None if n is None else _checked(n, "set_num_threads(n)")


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
    k = _checked(n, "threads(n)")
    token = _override.set(k)
    try:
        yield k
    finally:
        _override.reset(token)


def _checked(n: object, setting: str) -> int:
    """The one validation of a thread count: a positive whole number (Python or NumPy integer),
    capped at :func:`machine_threads` with a warning naming ``setting``."""
    try:
        k = None if isinstance(n, bool) else operator.index(n)
    except TypeError:
        k = None
    if k is None or k < 1:
        raise ValueError(f"{setting}: the number of threads must be a positive integer; got "
                         f"{n!r}.")
    cap = machine_threads()
    if k > cap:
        warnings.warn(f"{setting}: {k} threads asked for, but this machine runs at most {cap} at "
                      f"once; using {cap}.", RuntimeWarning, stacklevel=4)
        return cap
    return k


@functools.lru_cache(maxsize=32)
def _env_threads(name: str, text: str, cap: int) -> int | None:
    """An environment variable's thread count, validated once per value and cap (cached: a
    warning is given once). OMP_NUM_THREADS may be OpenMP's nested list ("4,2"): its first
    level counts."""
    raw = text.strip().split(",")[0].strip() if name == "OMP_NUM_THREADS" else text.strip()
    try:
        value: object = int(raw, 10)
    except ValueError:
        value = text
    try:
        return _checked(value, f"{name}={text!r}")
    except ValueError as err:
        if name != "OMP_NUM_THREADS":
            raise ValueError(f"{err} Set {name} to a positive whole number or unset it.") from None
        # Not pyckafast's own setting (OpenMP and BLAS read it too): step over it, loudly.
        warnings.warn(f"{err} pyckafast ignores it and uses the {available_cores()} cores "
                      "available.", RuntimeWarning, stacklevel=4)
        return None


def torch_aware_threads() -> int:
    """Return the threads pyckafast may use next to torch's intra-op pool.

    The setting (:func:`get_num_threads` outside a model loop), cut to the cores that torch's
    pool (``torch.get_num_threads()``) leaves free of the cores available, but at least one.
    Without torch imported, the setting itself.

    Returns
    -------
    int
        The number of threads (>= 1).

    Examples
    --------
    >>> from pyckafast._core.threads import torch_aware_threads
    >>> torch_aware_threads() >= 1
    True
    """
    setting = _setting()
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "get_num_threads"):
        return setting
    return max(1, min(setting, available_cores() - int(torch.get_num_threads())))


@contextlib.contextmanager
def model_loop() -> Iterator[int]:
    """Run a loop of torch forward passes and pyckafast work under one thread budget.

    Inside the block :func:`get_num_threads` (and so the C++ and Numba kernels) and BLAS
    (through threadpoolctl) are held to :func:`torch_aware_threads`, so pyckafast's workers do
    not sit on the cores torch's intra-op threads run on. Nested blocks keep the outer budget.

    Yields
    ------
    int
        The budget.

    Examples
    --------
    >>> import pyckafast
    >>> from pyckafast._core.threads import model_loop
    >>> with model_loop() as n:
    ...     pyckafast.get_num_threads() == n
    True
    """
    if _loop_budget.get() is not None:
        yield _loop_budget.get()
        return
    n = torch_aware_threads()
    token = _loop_budget.set(n)
    try:
        with blas_threads(n):
            yield n
    finally:
        _loop_budget.reset(token)


def loop_torch():
    """torch, inside a :func:`model_loop` that leaves pyckafast fewer cores than torch's pool
    has threads; else None.

    pyckafast works between the forward passes, while torch's intra-op pool is idle: a host
    GEMM handed to torch (``torch.from_numpy`` views, no copies) runs on all of that pool's
    threads instead of the one core left beside it, and never on top of it.

    Examples
    --------
    >>> from pyckafast._core.threads import loop_torch
    >>> loop_torch() is None  # not in a model loop
    True
    """
    budget = _loop_budget.get()
    torch = sys.modules.get("torch")
    if budget is None or torch is None or not hasattr(torch, "get_num_threads"):
        return None
    return torch if int(torch.get_num_threads()) > budget else None


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
