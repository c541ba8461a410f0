"""A competing load for "busy machine" benchmarks: processes that spin until told to stop.

A shared workstation, a cluster node or several Dask workers on one machine leave fewer cores
than ``os.cpu_count()`` says. ``busy(2)`` starts two processes that each keep one core busy (a
pure-Python loop: no BLAS, no memory traffic, so the measured code competes for the cores only),
and stops them on exit. Each stops by itself after ``max_seconds`` too, so a crashed benchmark
never leaves load behind::

    with busy(2):
        time_something()
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

_SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def busy(processes: int = 2, *, max_seconds: float = 1800.0) -> Iterator[list[subprocess.Popen]]:
    """Run ``processes`` spinning processes (each one core) while the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", _SPIN.format(seconds=max_seconds)])
             for _ in range(processes)]
    time.sleep(0.5)  # let them start spinning before anything is timed
    try:
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)
