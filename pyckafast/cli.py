"""The ``pyckafast`` command line: CKA of two .npy files of any size, config, demo, benchmark.

Usage::

    pyckafast cka X.npy Y.npy [--kernel linear|rbf] [--debiased] [--backend NAME]
                              [--chunk-size N] [--json] [--no-progress]
                              [--sigma S] [--threshold T] [--bandwidth RULE]
    pyckafast info
    pyckafast demo [--n N] [--p P]
    pyckafast bench [--n N] [--p P ...] [--repeat R]

Bad input files print one line to stderr and exit with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np

from ._core.dispatch import BACKENDS, BackendUnavailable

__all__ = ["main", "build_parser", "CLIError"]

EXIT_BAD_INPUT = 2


class CLIError(Exception):
    """A user error that the CLI reports as one line on stderr (exit status 2)."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    Examples
    --------
    >>> from pyckafast.cli import main
    >>> main(["cka", "/no/such/x.npy", "/no/such/y.npy"])
    2
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (CLIError, BackendUnavailable, ValueError, TypeError, OSError) as exc:
        print(f"pyckafast: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyckafast", description="Exact CKA/HSIC at scale: files, demo, benchmark."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_cka_parser(sub)
    info = sub.add_parser("info", help="show versions, backends and devices (show_config)")
    info.set_defaults(handler=_run_info)
    from . import _cli_tools

    _cli_tools.add_demo_parser(sub)
    _cli_tools.add_bench_parser(sub)
    _register_optional_commands(sub)
    return parser


def _register_optional_commands(sub) -> None:
    """Subcommands that live in their own modules (the robustness suite) register themselves."""
    from .robustness_cli import add_robustness_parser

    add_robustness_parser(sub)


def _add_cka_parser(sub) -> None:
    p = sub.add_parser("cka", help="CKA between two .npy files (rows = samples), streamed")
    p.add_argument("x", help="first representation, .npy of shape (n, p1)")
    p.add_argument("y", help="second representation, .npy of shape (n, p2)")
    p.add_argument("--kernel", choices=("linear", "rbf"), default="linear")
    p.add_argument("--debiased", action="store_true", help="unbiased HSIC (Song et al. 2012)")
    p.add_argument("--backend", default="auto", choices=("auto", *BACKENDS))
    p.add_argument("--chunk-size", type=int, default=None, metavar="N",
                   help="rows per streamed chunk (linear kernel)")
    p.add_argument("--json", action="store_true", help="print a JSON object with options and timing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    rbf = p.add_argument_group("rbf kernel")
    rbf.add_argument("--sigma", type=float, default=None, help="explicit bandwidth")
    rbf.add_argument("--threshold", type=float, default=1.0, help="bandwidth multiplier")
    rbf.add_argument("--bandwidth", default="kornblith", help="bandwidth rule (default kornblith)")
    p.set_defaults(handler=_run_cka)


def _run_info(args) -> int:
    from ._config import show_config

    show_config()
    return 0


def _run_cka(args) -> int:
    if args.chunk_size is not None and args.chunk_size < 1:
        raise CLIError(f"--chunk-size must be a positive integer; got {args.chunk_size}.")
    x, y = open_npy(args.x), open_npy(args.y)
    if x.shape[0] != y.shape[0]:
        raise CLIError(
            f"{args.x} and {args.y} must have the same number of samples (rows); "
            f"got {x.shape[0]} and {y.shape[0]}."
        )
    start = time.perf_counter()
    if args.kernel == "linear":
        value = _linear_from_files(args, x.shape[0])
    else:
        value = _rbf_from_arrays(args, x, y)
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps(_report(args, x, y, value, seconds)))
    else:
        print(f"{value:.12g}")
    return 0


def _linear_from_files(args, n: int) -> float:
    from .streaming import stream_npy

    with progress_bar(n, enabled=not args.no_progress) as progress:
        state = stream_npy(args.x, args.y, chunk_size=args.chunk_size, debiased=args.debiased,
                           backend=args.backend, progress=progress)
    return state.result(debiased=args.debiased)


def _rbf_from_arrays(args, x: np.ndarray, y: np.ndarray) -> float:
    from . import rbf_cka

    return rbf_cka(x, y, sigma=args.sigma, threshold=args.threshold, bandwidth=args.bandwidth,
                   debiased=args.debiased, backend=args.backend)


def _report(args, x: np.ndarray, y: np.ndarray, value: float, seconds: float) -> dict:
    report = {
        "cka": None if math.isnan(value) else value,
        "kernel": args.kernel, "debiased": args.debiased, "backend": args.backend,
        "x": args.x, "y": args.y, "n": int(x.shape[0]),
        "p_x": _width(x), "p_y": _width(y), "dtype_x": str(x.dtype), "dtype_y": str(y.dtype),
        "seconds": round(seconds, 6),
    }
    if args.kernel == "linear":
        report["chunk_size"] = args.chunk_size
    else:
        report.update(sigma=args.sigma, threshold=args.threshold, bandwidth=args.bandwidth)
    return report


def _width(a: np.ndarray) -> int:
    return 1 if a.ndim == 1 else int(a.shape[1])


def open_npy(path: str) -> np.ndarray:
    """Memory-map a .npy file of shape (n,) or (n, p) with real numbers, or raise CLIError."""
    if not os.path.exists(path):
        raise CLIError(f"{path}: no such file.")
    if os.path.isdir(path):
        raise CLIError(f"{path}: is a directory, expected a .npy file.")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CLIError(f"{path}: not a readable .npy array ({exc}).") from None
    if not isinstance(arr, np.ndarray):  # np.load gives an NpzFile for .npz archives
        with contextlib.suppress(AttributeError):
            arr.close()
        raise CLIError(f"{path}: is a .npz archive; expected a single .npy array (np.save).")
    if arr.dtype.kind not in "biuf":
        raise CLIError(f"{path}: must hold real numbers (float, int or bool); got dtype {arr.dtype}.")
    if arr.ndim not in (1, 2):
        raise CLIError(
            f"{path}: must be 1-D or 2-D (n_samples, n_features); got shape {arr.shape} "
            "(flatten each sample first, e.g. a.reshape(len(a), -1))."
        )
    if arr.shape[0] == 0:
        raise CLIError(f"{path}: has no samples (shape {arr.shape}).")
    return arr


@contextlib.contextmanager
def progress_bar(total: int, *, enabled: bool = True) -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr; None without tqdm."""
    if not enabled:
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError:  # the progress bar is optional (pip install pyckafast[cli])
        yield None
        return
    bar = tqdm(total=total, unit="rows", unit_scale=True, file=sys.stderr, leave=False,
               desc="pyckafast")
    try:
        yield lambda done, _total: bar.update(done - bar.n)
    finally:
        bar.close()


if __name__ == "__main__":  # pragma: no cover - ``python -m pyckafast`` uses __main__.py
    sys.exit(main())
