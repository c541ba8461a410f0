"""``pyckafast test X.npy Y.npy`` and ``pyckafast influence X.npy Y.npy``: significance and
per-sample influence of the CKA of two .npy files (memory-mapped, any size).

The main CLI calls :func:`add_significance_parsers` on its subparsers.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from .args import non_negative_int, positive_int

__all__ = ["add_significance_parsers", "run_test", "run_influence"]

_METHODS = ("auto", "moments", "permutation", "exact")
_THIRD = {"auto": "auto", "yes": True, "no": False}


def add_significance_parsers(subparsers) -> None:
    """Register the ``test`` and ``influence`` commands on an ``argparse`` subparsers object.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``ArgumentParser.add_subparsers()`` returned.

    Examples
    --------
    >>> import argparse
    >>> from pyckafast.cli.significance import add_significance_parsers
    >>> parser = argparse.ArgumentParser()
    >>> add_significance_parsers(parser.add_subparsers(dest="command"))
    >>> parser.parse_args(["test", "x.npy", "y.npy", "--method", "moments"]).method
    'moments'
    """
    from .args import add_progress_options

    t = subparsers.add_parser(
        "test", help="is the CKA of two .npy files above chance? (permutation test)",
        description="One-sided permutation test of CKA between two .npy files (rows = samples): "
                    "exact permutation moments with a Pearson type III p-value, explicit "
                    "permutations, or full enumeration.")
    _common(t)
    t.add_argument("--method", choices=_METHODS, default="auto",
                   help="auto (default: exact for n <= 8, else moments), moments, permutation, "
                        "exact")
    t.add_argument("--permutations", type=positive_int, default=9999, metavar="B",
                   help="permutations of --method permutation (default 9999)")
    t.add_argument("--seed", type=non_negative_int, default=None, metavar="S",
                   help="seed of the permutations (default: fresh entropy)")
    t.add_argument("--third-moment", choices=tuple(_THIRD), default="auto",
                   help="exact third moment for --method moments: auto (default: when cheap), "
                        "yes, no")
    add_progress_options(t)
    t.set_defaults(handler=run_test)
    i = subparsers.add_parser(
        "influence", help="which samples move the CKA of two .npy files most (leave-one-out)",
        description="Exact leave-one-out CKA of every sample, the jackknife standard error, and "
                    "the samples whose removal moves CKA most.")
    _common(i)
    i.add_argument("--top", type=positive_int, default=10, metavar="K",
                   help="how many samples to list (default 10)")
    add_progress_options(i)
    i.set_defaults(handler=run_influence)


def _common(p: argparse.ArgumentParser) -> None:
    from .args import BANDWIDTH_RULES, positive_float, sigma_arg

    p.add_argument("x", help="first representation, .npy of shape (n, p1)")
    p.add_argument("y", help="second representation, .npy of shape (n, p2)")
    p.add_argument("--kernel", choices=("linear", "rbf"), default="linear",
                   help="kernel: linear (default) or rbf")
    p.add_argument("--debiased", action="store_true", help="debiased CKA (unbiased HSIC)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    rbf = p.add_argument_group("rbf kernel (--kernel rbf only)")
    rbf.add_argument("--sigma", type=sigma_arg, default=None, metavar="S[,S]",
                     help="explicit bandwidth: one value or SX,SY")
    rbf.add_argument("--threshold", type=positive_float, default=None, metavar="T",
                     help="sigma = T x sqrt(median squared distance) (default 1.0)")
    rbf.add_argument("--bandwidth", choices=BANDWIDTH_RULES, default=None,
                     help="which median: kornblith (default), offdiag, sampled")


def _inputs(args) -> tuple[np.ndarray, np.ndarray, dict]:
    from .args import check_kernel_options
    from .files import CLIError, open_npy

    args.chunk_size = None
    check_kernel_options(args)
    x, y = open_npy(args.x), open_npy(args.y)
    if x.shape[0] != y.shape[0]:
        raise CLIError(f"{args.x} and {args.y} must have the same number of samples (rows); "
                       f"got {x.shape[0]} and {y.shape[0]}.")
    options = {"kernel": args.kernel, "debiased": args.debiased}
    if args.kernel == "rbf":
        if args.sigma is not None:
            options["sigma"] = args.sigma[0] if len(args.sigma) == 1 else tuple(args.sigma)
        if args.threshold is not None:
            options["threshold"] = args.threshold
        if args.bandwidth is not None:
            options["bandwidth"] = args.bandwidth
    return x, y, options


def _progress(args):
    from .args import progress_enabled

    return True if progress_enabled(args) and _has_tqdm() else None


def _has_tqdm() -> bool:
    import importlib.util

    return importlib.util.find_spec("tqdm") is not None


def run_test(args: argparse.Namespace) -> int:
    """Run ``pyckafast test``: print the p-value (or one JSON object of the result's fields).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments of the ``test`` command.

    Returns
    -------
    int
        0 on success.

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> from pyckafast.cli import main
    >>> d = tempfile.mkdtemp()
    >>> x = np.random.default_rng(0).normal(size=(40, 3))
    >>> np.save(os.path.join(d, "x.npy"), x); np.save(os.path.join(d, "y.npy"), x ** 3)
    >>> main(["test", os.path.join(d, "x.npy"), os.path.join(d, "y.npy")])  # doctest: +ELLIPSIS
    cka=0.7... pvalue=... (moments, pearson3)
    0
    """
    from .. import cka_test
    from .args import UndefinedResult

    x, y, options = _inputs(args)
    start = time.perf_counter()
    r = cka_test(x, y, method=args.method, n_permutations=args.permutations, seed=args.seed,
                 third_moment=_THIRD[args.third_moment], progress=_progress(args), **options)
    if math.isnan(r.cka):
        raise UndefinedResult(f"CKA of {args.x} and {args.y} is undefined (nan): a centred "
                              "kernel matrix has no variance.")
    if args.json:
        report = {**r.to_dict(), "x": args.x, "y": args.y, "n": int(x.shape[0]),
                  "kernel": args.kernel, "debiased": args.debiased,
                  "seconds": round(time.perf_counter() - start, 6)}
        print(json.dumps(_finite(report)))
    else:
        print(f"cka={r.cka:.10g} pvalue={r.pvalue:.6g} ({r.method}, {r.approximation})")
    return 0


def run_influence(args: argparse.Namespace) -> int:
    """Run ``pyckafast influence``: CKA, jackknife se and the samples that move CKA most.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments of the ``influence`` command.

    Returns
    -------
    int
        0 on success.

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> from pyckafast.cli import main
    >>> d = tempfile.mkdtemp()
    >>> x = np.random.default_rng(0).normal(size=(40, 3))
    >>> y = x.copy(); y[5] += 30
    >>> np.save(os.path.join(d, "x.npy"), x); np.save(os.path.join(d, "y.npy"), y)
    >>> main(["influence", os.path.join(d, "x.npy"), os.path.join(d, "y.npy"), "--top", "1"])  # doctest: +ELLIPSIS
    cka=... se=...
    5 loo=... delta=...
    0
    """
    from .. import cka_influence
    from .args import UndefinedResult

    x, y, options = _inputs(args)
    start = time.perf_counter()
    r = cka_influence(x, y, progress=_progress(args) if args.kernel == "rbf" else None,
                      **options)
    if math.isnan(r.cka):
        raise UndefinedResult(f"CKA of {args.x} and {args.y} is undefined (nan).")
    idx, delta = r.top(args.top)
    lo, hi = r.ci(0.95)
    if args.json:
        report = {"cka": r.cka, "se": r.se, "ci95": [lo, hi], "n": int(x.shape[0]),
                  "top": [{"index": int(i), "loo": float(r.loo[i]), "delta": float(d)}
                          for i, d in zip(idx, delta)],
                  "x": args.x, "y": args.y, "kernel": args.kernel, "debiased": args.debiased,
                  "seconds": round(time.perf_counter() - start, 6)}
        print(json.dumps(_finite(report)))
    else:
        print(f"cka={r.cka:.10g} se={r.se:.4g} ci95=[{lo:.6g}, {hi:.6g}]")
        for i, d in zip(idx, delta):
            print(f"{int(i)} loo={r.loo[i]:.10g} delta={d:+.4g}")
    return 0


def _finite(report: dict) -> dict:
    """JSON has no nan: an undefined value (e.g. a skewness not computed) becomes null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in report.items()}
