"""The one ``progress=`` option of every long pass: off, a tqdm bar, or the caller's callback.

A pass reports ``report(done, total)`` after each unit of work (rows, block pairs, batches);
``progress_reporter`` turns what the user passed into such a function and closes the bar
afterwards. tqdm is optional and imported only when a bar is asked for.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Union

from .optional import require

__all__ = ["Progress", "Report", "progress_reporter", "check_progress"]

Report = Callable[[int, int], None]
# What users pass: None/False (silent), True (a tqdm bar on stderr), or report(done, total).
Progress = Union[bool, None, Report]


def check_progress(progress: object, name: str = "progress") -> None:
    """Raise a TypeError naming ``name`` unless ``progress`` is None, a bool or a callable."""
    if progress is None or isinstance(progress, bool) or callable(progress):
        return
    raise TypeError(f"{name} must be None, True/False or a callable report(done, total); "
                    f"got {type(progress).__name__}.")


@contextmanager
def progress_reporter(progress: Progress, total: int, *, desc: str = "",
                      unit: str = "it") -> Iterator[Report | None]:
    """Yield ``report(done, total)`` for ``progress`` (None when silent).

    Parameters
    ----------
    progress : None, bool or callable
        None/False: no reporting. True: a tqdm bar on stderr (tqdm must be installed: the
        ``[cli]`` extra). A callable: called as ``progress(done, total)``.
    total : int
        Units of work in the pass.
    desc, unit : str
        The bar's label and unit name.

    Yields
    ------
    callable or None
        ``report(done, total)``: ``done`` counts units finished so far (monotone).
    """
    check_progress(progress)
    if progress is None or progress is False:
        yield None
        return
    if progress is not True:
        yield progress  # the caller's own callback
        return
    tqdm = require("tqdm", "progress=True").tqdm
    bar = tqdm(total=total, desc=desc or None, unit=unit, unit_scale=True, file=sys.stderr,
               leave=False, dynamic_ncols=True)
    shown = 0

    def report(done: int, _total: int) -> None:
        nonlocal shown
        if done > shown:
            bar.update(done - shown)
            shown = done

    try:
        yield report
    finally:
        bar.close()
