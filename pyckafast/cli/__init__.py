"""The ``pyckafast`` command line: CKA of two .npy files of any size, layer maps, demo, benchmark.

Usage::

    pyckafast cka X.npy Y.npy [--kernel linear|rbf] [--debiased] [--backend NAME]
                              [--chunk-size N] [--json] [--progress | --no-progress] [--estimate]
                              [--sigma S | --sigma SX,SY | --threshold T --bandwidth RULE]
    pyckafast map DIR_OR_NPZ [--kernel linear|rbf] [--debiased] [--out DIR] [--names-max-len N]
    pyckafast robustness EXPERIMENT --out DIR [...]
    pyckafast info
    pyckafast demo [--n N] [--p P]
    pyckafast bench [--n N] [--p P ...] [--repeat R]
    pyckafast --version

Exit status: 0 on success; 1 when the inputs are valid but the result is undefined (zero
variance) or a figure could not be written; 2 for bad arguments or bad input files. Errors are
one line on stderr (no traceback).
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

from .._core.dispatch import BACKENDS, BackendUnavailable
from .args import (BANDWIDTH_RULES, UndefinedResult, add_progress_options, check_kernel_options,
                   parse_sigma, positive_float, positive_int, progress_enabled, sigma_arg)
from .files import (
    CLIError, check_finite, constant_files, naming_bad_values, open_npy, warnings_as_lines,
)

__all__ = ["main", "build_parser", "CLIError", "UndefinedResult", "open_npy", "progress_bar",
           "sigma_arg", "parse_sigma", "positive_int", "positive_float", "add_progress_options",
           "progress_enabled", "check_kernel_options", "median_rule_sigma", "cost_of",
           "ANNOUNCE_SECONDS"]

EXIT_UNDEFINED = 1
EXIT_BAD_INPUT = 2
# The Python docs' SIGPIPE recipe exits with 1 once stdout is gone (e.g. ``| head``).
EXIT_BROKEN_PIPE = 1

# A run expected to take longer than this says so on stderr before it starts.
ANNOUNCE_SECONDS = 5.0
# Rate of a fast machine: a run that would be short even at a slower rate needs no measurement.
_FAST_RATE = 2e11


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name.

    Returns
    -------
    int
        0 on success, 1 for an undefined result, 2 for bad arguments or input files.

    Examples
    --------
    >>> from pyckafast.cli import main
    >>> main(["cka", "/no/such/x.npy", "/no/such/y.npy"])
    2
    """
    try:
        status = _run_command(argv)
        sys.stdout.flush()  # a closed pipe shows up here, not in the interpreter's exit flush
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    return status


def _run_command(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except BrokenPipeError:
        raise  # an OSError, but the reader went away: not the user's input
    except UndefinedResult as exc:
        print(f"pyckafast: error: {exc}", file=sys.stderr)
        return EXIT_UNDEFINED
    except (CLIError, BackendUnavailable, ValueError, TypeError, OSError) as exc:
        print(f"pyckafast: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _discard_stdout() -> None:
    """Point stdout at /dev/null so that Python's final flush does not raise again.

    From the Python docs ("Note on SIGPIPE", signal module): the reader of the pipe is gone, so
    the remaining output has nowhere to go and must not produce a second traceback at exit.
    """
    with contextlib.suppress(AttributeError, OSError, ValueError):  # e.g. a captured stdout
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def build_parser() -> argparse.ArgumentParser:
    """The ``pyckafast`` argument parser with every subcommand.

    Returns
    -------
    argparse.ArgumentParser
        The ``pyckafast`` parser; each subcommand sets ``handler`` to the function that runs it.

    Examples
    --------
    >>> from pyckafast.cli import build_parser
    >>> build_parser().parse_args(["cka", "x.npy", "y.npy", "--sigma", "1,2"]).sigma
    (1.0, 2.0)
    """
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="pyckafast", description="Exact CKA/HSIC at scale: files, layer maps, robustness "
        "experiments, demo, benchmark.",
        epilog="Exit status: 0 success, 1 undefined result (zero variance) or no figure written, "
               "2 bad arguments or input files.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_cka_parser(sub)
    info = sub.add_parser("info", help="show versions, backends and devices (show_config)")
    info.set_defaults(handler=_run_info)
    from . import bench, demo

    demo.add_demo_parser(sub)
    bench.add_bench_parser(sub)
    _register_optional_commands(sub)
    return parser


def _register_optional_commands(sub) -> None:
    """Subcommands that live in their own modules (layer maps, robustness) register themselves."""
    from .map import add_map_parser
    from .robustness import add_robustness_parser
    from .significance import add_significance_parsers

    add_map_parser(sub)
    add_robustness_parser(sub)
    add_significance_parsers(sub)


def _add_cka_parser(sub) -> None:
    p = sub.add_parser(
        "cka", help="CKA between two .npy files (rows = samples), streamed",
        description="CKA between two representations of the same samples, each a .npy file of "
                    "shape (n,) or (n, p). The linear kernel streams the files (any size); the RBF "
                    "kernel holds them in memory and costs O(n^2 p).",
    )
    p.add_argument("x", help="first representation, .npy of shape (n, p1)")
    p.add_argument("y", help="second representation, .npy of shape (n, p2)")
    p.add_argument("--kernel", choices=("linear", "rbf"), default="linear",
                   help="kernel: linear (default) or rbf (Gaussian)")
    p.add_argument("--debiased", action="store_true",
                   help="debiased CKA from the unbiased HSIC (Song et al. 2012); default: biased "
                        "HSIC (Kornblith et al. 2019)")
    p.add_argument("--backend", default="auto", choices=("auto", *BACKENDS),
                   help=f"who computes: auto (default: fastest usable), {', '.join(BACKENDS)}")
    p.add_argument("--chunk-size", type=positive_int, default=None, metavar="N",
                   help="linear kernel only: rows per streamed chunk (default: about 8 MB per chunk)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: the value, options, sigma used, shapes, dtypes, timing")
    p.add_argument("--estimate", action="store_true",
                   help="print the up-front cost (pass, block pairs, flops, memory, expected time "
                        "at this machine's measured rate) and exit without computing; a run "
                        f"prints it on stderr when it expects more than {ANNOUNCE_SECONDS:g} s")
    add_progress_options(p)
    rbf = p.add_argument_group("rbf kernel (--kernel rbf only)")
    rbf.add_argument("--sigma", type=sigma_arg, default=None, metavar="S[,S]",
                     help="explicit bandwidth: one value for both sides or SX,SY "
                          "(excludes --threshold and --bandwidth)")
    rbf.add_argument("--threshold", type=positive_float, default=None, metavar="T",
                     help="sigma = T x sqrt(median squared distance), per side (default 1.0)")
    rbf.add_argument("--bandwidth", choices=BANDWIDTH_RULES, default=None,
                     help="which median: kornblith (default; all n^2 distances, as Kornblith et "
                          "al.), offdiag (distinct pairs), sampled (100,000 random pairs)")
    p.set_defaults(handler=_run_cka)


def _run_info(args) -> int:
    from .._config import show_config

    show_config()
    return 0


def _run_cka(args) -> int:
    check_kernel_options(args)
    x, y = open_npy(args.x), open_npy(args.y)
    if x.shape[0] != y.shape[0]:
        raise CLIError(
            f"{args.x} and {args.y} must have the same number of samples (rows); "
            f"got {x.shape[0]} and {y.shape[0]}."
        )
    arrays = {args.x: x, args.y: y}
    if args.estimate:
        return _print_estimate(args, x, y)
    _refuse_constant(arrays)
    cost = _announce_cost(args, x, y)
    start = time.perf_counter()
    if args.kernel == "linear":
        value, sigma = _linear_from_files(args, x.shape[0], arrays), None
    else:
        value, sigma = _rbf_from_arrays(args, arrays)
    seconds = time.perf_counter() - start
    if math.isnan(value):
        raise UndefinedResult(f"CKA of {args.x} and {args.y} is undefined (nan): a centred "
                              "kernel matrix has no variance.")
    if args.json:
        report = _report(args, x, y, value, sigma, seconds)
        if cost is not None:
            report["estimated_seconds"] = round(cost.seconds, 6)
        print(json.dumps(report))
    else:
        print(f"{value:.12g}")
    return 0


def cost_of(args: argparse.Namespace, x: np.ndarray, y: np.ndarray,
            rate: float | None = None):
    """Estimate the cost of this ``cka`` run (:class:`~pyckafast.cost.CostEstimate`).

    The linear kernel streams the files in the feature form; the RBF kernel adds its bandwidth
    passes unless ``--sigma`` is given.

    Parameters
    ----------
    args : argparse.Namespace
        The ``cka`` subcommand's options.
    x, y : numpy.ndarray
        The opened files (only shapes and dtypes are read).
    rate : float, optional
        The flop/s to assume (default: measured on this machine).

    Returns
    -------
    pyckafast.CostEstimate
        The estimate.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.cli import build_parser, cost_of
    >>> args = build_parser().parse_args(["cka", "x.npy", "y.npy", "--kernel", "rbf"])
    >>> x = np.zeros((5000, 16))
    >>> cost_of(args, x, x, rate=1e10).bandwidth_passes
    6
    """
    from ..cost import estimate_cost

    if args.kernel == "linear":
        return estimate_cost(x, y, "linear", form="features", chunk_size=args.chunk_size,
                             rate=rate)
    return estimate_cost(x, y, "rbf", sigma=_explicit_sigma(args.sigma),
                         bandwidth=args.bandwidth or "kornblith", rate=rate)


def _print_estimate(args, x: np.ndarray, y: np.ndarray) -> int:
    cost = cost_of(args, x, y)
    print(json.dumps(cost.as_dict()) if args.json else str(cost))
    return 0


def _announce_cost(args, x: np.ndarray, y: np.ndarray):
    """Print the estimate on stderr when the run is expected to be long; return it (None when
    even a fast machine would finish within :data:`ANNOUNCE_SECONDS`: nothing measured)."""
    if cost_of(args, x, y, rate=_FAST_RATE).seconds <= ANNOUNCE_SECONDS:
        return None
    cost = cost_of(args, x, y)
    if cost.seconds > ANNOUNCE_SECONDS:
        print(f"pyckafast: estimate: {cost}", file=sys.stderr, flush=True)
    return cost


def _refuse_constant(arrays: dict[str, np.ndarray]) -> None:
    """Zero variance makes CKA 0/0: say which file, instead of printing nan."""
    constant = constant_files(arrays)
    if constant:
        raise UndefinedResult(f"{constant[0]} has zero variance (every row is the same): CKA is "
                              "undefined.")


def _linear_from_files(args, n: int, arrays: dict[str, np.ndarray]) -> float:
    from ..streaming import stream_npy

    with progress_bar(n, enabled=progress_enabled(args)) as progress, naming_bad_values(arrays):
        state = stream_npy(args.x, args.y, chunk_size=args.chunk_size, debiased=args.debiased,
                           backend=args.backend, progress=progress)
    with warnings_as_lines():
        return state.result(debiased=args.debiased)


def _rbf_from_arrays(args, arrays: dict[str, np.ndarray]) -> tuple[float, tuple[float, float] | None]:
    """The RBF CKA and the (sigma_x, sigma_y) it used (None if the GPU chose it)."""
    from .. import rbf_cka

    for path, a in arrays.items():  # the O(n p) scan is nothing beside the O(n^2 p) pass
        check_finite(a, path)
    (x_path, x), (y_path, y) = arrays.items()
    sigma = _explicit_sigma(args.sigma)
    if sigma is None and args.backend != "cuda":
        # The same median rule rbf_cka applies, computed here once so that --json can report it
        # and then passed explicitly (no second median pass). On a GPU, rbf_cka finds it there.
        sigma = (median_rule_sigma(x, x_path, args), median_rule_sigma(y, y_path, args))
    # Only the options that apply: the library may reject a threshold next to an explicit sigma.
    bandwidth = ({"sigma": sigma} if sigma is not None else
                 {"threshold": args.threshold or 1.0, "bandwidth": args.bandwidth or "kornblith"})
    # rbf_cka draws its own bar over the block pairs of the pass (when tqdm is installed).
    bar = progress_enabled(args) and _has_tqdm()
    with warnings_as_lines():
        value = rbf_cka(x, y, debiased=args.debiased, backend=args.backend, progress=bar,
                        **bandwidth)
    return value, sigma


def _has_tqdm() -> bool:
    import importlib.util

    return importlib.util.find_spec("tqdm") is not None


def _explicit_sigma(sigma: tuple[float, ...] | None) -> tuple[float, float] | None:
    if sigma is None:
        return None
    return (sigma[0], sigma[0]) if len(sigma) == 1 else (sigma[0], sigma[1])


def median_rule_sigma(a: np.ndarray, path: str, args: argparse.Namespace) -> float:
    """Compute sigma = threshold x sqrt(median squared distance) of the rows of ``a``.

    This is ``rbf_cka``'s bandwidth rule, evaluated here so that ``--json`` can report it.

    Parameters
    ----------
    a : numpy.ndarray, shape (n,) or (n, p)
        One representation.
    path : str
        Its file, named in the error.
    args : argparse.Namespace
        ``threshold``, ``bandwidth`` (None: the defaults 1.0 and "kornblith") and ``backend``.

    Returns
    -------
    float
        The bandwidth sigma of that side.

    Raises
    ------
    CLIError
        When the median is 0 (at least half of the pairs are identical rows).

    Examples
    --------
    >>> import argparse
    >>> import numpy as np
    >>> from pyckafast.cli import median_rule_sigma
    >>> args = argparse.Namespace(threshold=None, bandwidth="offdiag", backend="numpy")
    >>> median_rule_sigma(np.array([0.0, 1.0, 3.0]), "x.npy", args)  # median of 1, 4, 9
    2.0
    """
    from .._core import bandwidth, dispatch

    rule = args.bandwidth or "kornblith"
    threshold = args.threshold or 1.0
    ops = dispatch.resolve(args.backend, "rbf_tile", "cpu")
    median = bandwidth.median_sq_distance(_float_rows(a), rule, ops=ops)
    if not median > 0:
        raise CLIError(f"{path}: the {rule!r} median squared distance between rows is 0 (at least "
                       "half of the pairs of rows are identical), so the median rule gives sigma = "
                       "0; pass --sigma or --bandwidth offdiag.")
    return threshold * math.sqrt(median)


def _float_rows(a: np.ndarray) -> np.ndarray:
    """(n, p) in the dtype rbf_cka computes in: integers and bool as float64, float16 as float32."""
    rows = a[:, None] if a.ndim == 1 else a
    if rows.dtype.kind in "biu":
        return rows.astype(np.float64)
    if rows.dtype.itemsize < 4:
        return rows.astype(np.float32)
    return rows.astype(np.float64) if rows.dtype.itemsize > 8 else rows


def _report(args, x: np.ndarray, y: np.ndarray, value: float,
            sigma: tuple[float, float] | None, seconds: float) -> dict:
    report = {
        "cka": value, "kernel": args.kernel, "estimator": "debiased" if args.debiased else "biased",
        "debiased": args.debiased, "backend": args.backend,
        "backend_used": _backend_used(args), "x": args.x, "y": args.y, "n": int(x.shape[0]),
        "p_x": _width(x), "p_y": _width(y), "dtype_x": str(x.dtype), "dtype_y": str(y.dtype),
        "seconds": round(seconds, 6),
    }
    if args.kernel == "linear":
        report.update(form="features", chunk_size=args.chunk_size)
    else:
        report.update(form="pairs", **_sigma_report(args, sigma))
    return report


def _sigma_report(args, sigma: tuple[float, float] | None) -> dict:
    """What --json says about the RBF bandwidth: the per-side sigma and where it came from."""
    if args.sigma is not None:
        source = "given (--sigma)"
    elif sigma is not None:
        source = (f"threshold x sqrt({args.bandwidth or 'kornblith'} median squared distance), "
                  "per side")
    else:
        source = "median rule evaluated on the GPU by rbf_cka (not reported)"
    return {"sigma_x": None if sigma is None else sigma[0],
            "sigma_y": None if sigma is None else sigma[1], "sigma_source": source,
            "threshold": None if args.sigma is not None else (args.threshold or 1.0),
            "bandwidth": None if args.sigma is not None else (args.bandwidth or "kornblith")}


def _backend_used(args) -> str:
    """The backend that "auto" (or the named one) resolves to for this kernel's CPU pass."""
    from .._core import dispatch

    if args.backend == "cuda":
        return "cuda"
    op = "linear_moments" if args.kernel == "linear" else "rbf_tile"
    module = dispatch.resolve(args.backend, op, "cpu").__name__
    return next((name for name, b in BACKENDS.items() if b.module == module), module)


def _width(a: np.ndarray) -> int:
    return 1 if a.ndim == 1 else int(a.shape[1])


@contextlib.contextmanager
def progress_bar(total: int, *, enabled: bool = True) -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr; None without tqdm.

    Parameters
    ----------
    total : int
        Rows to process.
    enabled : bool, default True
        False: yield None (no bar).

    Yields
    ------
    callable or None
        ``progress(rows_done, total)``.

    Examples
    --------
    >>> from pyckafast.cli import progress_bar
    >>> with progress_bar(100, enabled=False) as progress:
    ...     progress is None
    True
    """
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
