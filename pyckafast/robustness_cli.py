"""``pyckafast robustness <experiment> ... --out DIR``: run a sweep, write its PNG and JSON.

The main CLI calls :func:`add_robustness_parser` on its subparsers; :func:`main` runs it alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np

__all__ = ["add_robustness_parser", "run_robustness", "main"]

EXPERIMENTS = ("translation", "invertible", "outlier", "class-translation")


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers; got {text!r}") from None


def add_robustness_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``robustness`` command on an ``argparse`` subparsers object; return its parser."""
    p = subparsers.add_parser(
        "robustness", help="reproduce the CKA robustness experiments of Davari et al. (2023)",
        description="Run a robustness sweep; write <experiment>.png and <experiment>.json to --out. "
                    "Linear CKA is exact on all points; RBF CKA (sigma = m x median distance) uses "
                    "a random subsample of --rbf-samples rows.",
    )
    p.add_argument("experiment", choices=EXPERIMENTS)
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--seeds", type=int, default=10, help="number of seeds (default 10)")
    p.add_argument("--n-per-cube", type=int, default=None,
                   help="points per cube (default 10000; outlier: 1000)")
    p.add_argument("--dim", type=int, default=None,
                   help="dimension (default: translation 1000, invertible 500, outlier 100)")
    p.add_argument("--magnitudes", type=_floats, default=None,
                   help="comma-separated c values (default: the paper's)")
    p.add_argument("--grid", type=_floats, default=None,
                   help="invertible: comma-separated means = stds (default 1,5,10,25,50,100,500,1e3,5e3)")
    p.add_argument("--rbf", type=_floats, default=[1.0, 0.5, 0.2],
                   help="RBF bandwidth multipliers (default 1,0.5,0.2)")
    p.add_argument("--no-rbf", action="store_true", help="linear CKA only")
    p.add_argument("--rbf-samples", type=int, default=2000,
                   help="rows used for RBF CKA (O(n^2 p) each); 0 = all rows (default 2000)")
    p.add_argument("--linear-method", choices=("gram", "engine"), default="gram",
                   help="invertible: exact Gram identity (default) or materialise X M")
    p.add_argument("--representation", choices=("pixels", "mlp"), default="pixels",
                   help="class-translation: digits pixels or a small MLP's hidden layer")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_robustness)
    return p


def _measures(args, default_rbf: bool):
    from .robustness import linear_measure, rbf_measure

    measures = [linear_measure()]
    if default_rbf and not args.no_rbf:
        samples = None if args.rbf_samples == 0 else args.rbf_samples
        measures += [rbf_measure(m, samples) for m in args.rbf]
    return measures


def _progress_bar(total: int, desc: str, disabled: bool):
    if disabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="pt", file=sys.stderr)


def run_robustness(args: argparse.Namespace) -> int:
    """Run the experiment named in ``args``; write the JSON, then the PNG; return the exit status.

    The results are saved before any plotting, so a missing matplotlib costs the figure only.
    """
    from .robustness import sweeps

    os.makedirs(args.out, exist_ok=True)
    seeds = list(range(args.seeds))
    exp = args.experiment
    kw = {k: v for k, v in (("n_per_cube", args.n_per_cube), ("dim", args.dim)) if v is not None}
    if exp == "invertible":
        grid = args.grid or list(sweeps.PAPER_GRID)
        bar = _progress_bar(len(seeds) * len(grid) ** 2, exp, args.no_progress)
        result = sweeps.invertible_sweep(grid, grid, seeds, linear_method=args.linear_method,
                                         progress=bar and bar.update, **kw)
    else:
        run = {"translation": sweeps.translation_sweep, "outlier": sweeps.outlier_sweep,
               "class-translation": sweeps.class_translation_sweep}[exp]
        if exp == "class-translation":
            kw = {"representation": args.representation}
        if args.magnitudes:
            kw["magnitudes"] = args.magnitudes
        n_mag = len(kw.get("magnitudes", run.__defaults__[0]))
        bar = _progress_bar(len(seeds) * n_mag, exp, args.no_progress)
        result = run(seeds=seeds, measures=_measures(args, True), progress=bar and bar.update, **kw)
    if bar is not None:
        bar.close()
    result.params["rbf_samples"] = None if args.rbf_samples == 0 else args.rbf_samples
    js = os.path.join(args.out, f"{exp}.json")
    result.save_json(js)
    for name in result.values:
        mean = np.atleast_1d(result.mean(name))
        print(f"{name:>10}: mean over seeds {np.array2string(mean.ravel()[:12], precision=3)}")
    print(f"wrote {js}")
    return _write_figure(result, exp, args.out)


def _write_figure(result, exp: str, out: str) -> int:
    """The PNG of a finished sweep; 1 (after saying why) when matplotlib is missing."""
    from ._core.optional import MissingDependency

    try:
        from .robustness.plots import plot_curves, plot_heatmap, save_figure

        fig = plot_heatmap(result) if exp == "invertible" else plot_curves(result)
    except MissingDependency as exc:
        print(f"pyckafast: no figure written: {exc}", file=sys.stderr)
        return 1
    png = save_figure(fig, os.path.join(out, f"{exp}.png"))
    print(f"wrote {png}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: ``python -m pyckafast.robustness_cli robustness translation --out d``."""
    parser = argparse.ArgumentParser(prog="pyckafast")
    add_robustness_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
