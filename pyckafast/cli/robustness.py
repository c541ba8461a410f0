"""``pyckafast robustness <experiment> ... --out DIR``: run a sweep, write its PNG and JSON.

The main CLI calls :func:`add_robustness_parser` on its subparsers; :func:`main` runs it alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np

from .args import non_negative_int

__all__ = ["add_robustness_parser", "run_robustness", "main", "check_applicable", "format_table",
           "summary_tables", "APPLIES_TO"]

EXPERIMENTS = ("translation", "invertible", "outlier", "class-translation")
_CURVES = ("translation", "outlier", "class-translation")
_CUBES = ("translation", "invertible", "outlier")

# option dest -> (flag, experiments that use it). Any other experiment would silently ignore
# the option, which hides a mistake in the command: it is an error instead. (--no-rbf is not
# here: invertible measures linear CKA only, so the request is honoured, not ignored.)
APPLIES_TO = {
    "n_per_cube": ("--n-per-cube", _CUBES),
    "dim": ("--dim", _CUBES),
    "magnitudes": ("--magnitudes", _CURVES),
    "grid": ("--grid", ("invertible",)),
    "rbf": ("--rbf", _CURVES),
    "rbf_samples": ("--rbf-samples", _CURVES),
    "linear_method": ("--linear-method", ("invertible",)),
    "representation": ("--representation", ("class-translation",)),
}
_DEFAULT_RBF = (1.0, 0.5, 0.2)
_DEFAULT_RBF_SAMPLES = 2000


def _floats(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers; got {text!r}") from None
    if not values or not all(np.isfinite(values)):
        raise argparse.ArgumentTypeError(f"expected finite comma-separated numbers; got {text!r}")
    return values


def _positive_floats(text: str) -> list[float]:
    values = _floats(text)
    if min(values) <= 0:
        raise argparse.ArgumentTypeError(f"every value must be > 0; got {text!r}")
    return values


def _for(experiments: tuple[str, ...]) -> str:
    return ", ".join(experiments)


def add_robustness_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``robustness`` command on an ``argparse`` subparsers object; return its parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``ArgumentParser.add_subparsers()`` returned.

    Returns
    -------
    argparse.ArgumentParser
        The ``robustness`` parser (its ``handler`` is :func:`run_robustness`).

    Examples
    --------
    >>> import argparse
    >>> from pyckafast.cli.robustness import add_robustness_parser
    >>> parser = argparse.ArgumentParser(prog="pyckafast")
    >>> _ = add_robustness_parser(parser.add_subparsers())
    >>> args = parser.parse_args(["robustness", "outlier", "--out", "results", "--seeds", "3"])
    >>> args.experiment, args.seeds, args.magnitudes
    ('outlier', 3, None)
    """
    from .args import add_progress_options, positive_int

    p = subparsers.add_parser(
        "robustness", help="reproduce the CKA robustness experiments of Davari et al. (2023)",
        description="Run a robustness sweep; write <experiment>.json, then <experiment>.png, to "
                    "--out and print the mean over seeds as a table. Linear CKA is exact on all "
                    "points; RBF CKA (sigma = m x median distance) uses a random subsample of "
                    "--rbf-samples rows. An option that the experiment does not use is an error.",
    )
    p.add_argument("experiment", choices=EXPERIMENTS,
                   help="translation (Fig. 4a), invertible (Fig. 4b), outlier, class-translation "
                        "(Fig. 4c, scikit-learn digits)")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--seeds", type=positive_int, default=10,
                   help="number of seeds, 0..N-1 (default 10)")
    p.add_argument("--n-per-cube", type=positive_int, default=None, metavar="N",
                   help=f"{_for(_CUBES)}: points per cube (default 10000; outlier: 1000)")
    p.add_argument("--dim", type=positive_int, default=None, metavar="D",
                   help=f"{_for(_CUBES)}: dimension (default: translation 1000, invertible 500, "
                        "outlier 100)")
    p.add_argument("--magnitudes", type=_floats, default=None, metavar="C1,C2,...",
                   help=f"{_for(_CURVES)}: comma-separated c values (default: the paper's)")
    p.add_argument("--grid", type=_positive_floats, default=None, metavar="G1,G2,...",
                   help="invertible: comma-separated values used as both the means and the stds "
                        "of M's entries (default 1,5,10,25,50,100,500,1e3,5e3)")
    p.add_argument("--rbf", type=_positive_floats, default=None, metavar="M1,M2,...",
                   help=f"{_for(_CURVES)}: RBF bandwidth multipliers (default 1,0.5,0.2)")
    p.add_argument("--no-rbf", action="store_true",
                   help="linear CKA only (invertible always measures linear CKA only)")
    p.add_argument("--rbf-samples", type=non_negative_int, default=None, metavar="N",
                   help=f"{_for(_CURVES)}: rows used for RBF CKA (O(n^2 p) each); 0 = all rows "
                        f"(default {_DEFAULT_RBF_SAMPLES})")
    p.add_argument("--linear-method", choices=("gram", "engine"), default=None,
                   help="invertible: gram (default: exact Gram identity, O(p^3) per point) or "
                        "engine (materialise X M)")
    p.add_argument("--representation", choices=("pixels", "mlp"), default=None,
                   help="class-translation: pixels (default: digits pixels) or mlp (a small "
                        "MLP's hidden layer)")
    add_progress_options(p)
    p.set_defaults(handler=run_robustness)
    return p


def check_applicable(args: argparse.Namespace) -> None:
    """Raise CLIError for an option that ``args.experiment`` would ignore, or contradictory ones.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``robustness`` arguments.

    Raises
    ------
    pyckafast.cli.CLIError
        Naming the option and the experiments it applies to.

    Examples
    --------
    >>> import argparse
    >>> from pyckafast.cli.robustness import add_robustness_parser, check_applicable
    >>> parser = argparse.ArgumentParser(prog="pyckafast")
    >>> _ = add_robustness_parser(parser.add_subparsers())
    >>> check_applicable(parser.parse_args(["robustness", "translation", "--out", "d"]))
    >>> from pyckafast.cli import CLIError
    >>> try:
    ...     check_applicable(parser.parse_args(["robustness", "translation", "--out", "d",
    ...                                         "--grid", "1,5"]))
    ... except CLIError as exc:
    ...     print(exc)
    --grid applies to invertible only; the translation experiment does not use it.
    """
    from .files import CLIError

    for dest, (flag, experiments) in APPLIES_TO.items():
        value = getattr(args, dest)
        if value is not None and value is not False and args.experiment not in experiments:
            raise CLIError(f"{flag} applies to {_for(experiments)} only; the {args.experiment} "
                           "experiment does not use it.")
    if args.no_rbf:
        given = [flag for flag, value in (("--rbf", args.rbf), ("--rbf-samples", args.rbf_samples))
                 if value is not None]
        if given:
            raise CLIError(f"{given[0]} configures the RBF measures, which --no-rbf turns off: "
                           "give one or the other.")


def _measures(args):
    from ..robustness import linear_measure, rbf_measure

    measures = [linear_measure()]
    if not args.no_rbf:
        samples = _rbf_samples(args)
        measures += [rbf_measure(m, samples) for m in (args.rbf or _DEFAULT_RBF)]
    return measures


def _rbf_samples(args) -> int | None:
    samples = _DEFAULT_RBF_SAMPLES if args.rbf_samples is None else args.rbf_samples
    return None if samples == 0 else samples


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="pt", file=sys.stderr)


def run_robustness(args: argparse.Namespace) -> int:
    """Run the experiment named in ``args``; write the JSON, then the PNG; return the exit status.

    The results are saved before any plotting, so a missing matplotlib costs the figure only.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``robustness`` arguments.

    Returns
    -------
    int
        0, or 1 when the figure could not be written.

    Examples
    --------
    >>> import argparse, tempfile
    >>> from pyckafast.cli.robustness import add_robustness_parser
    >>> parser = argparse.ArgumentParser(prog="pyckafast")
    >>> _ = add_robustness_parser(parser.add_subparsers())
    >>> args = parser.parse_args(["robustness", "translation", "--out", tempfile.mkdtemp(),
    ...                           "--seeds", "1", "--n-per-cube", "20", "--dim", "3",
    ...                           "--magnitudes", "0,1", "--no-rbf"])
    >>> from pyckafast.cli.robustness import run_robustness
    >>> status = run_robustness(args)  # the PNG too where matplotlib is installed
    translation: mean over 1 seed(s); rows: c, columns: measures
    c \\ measure    theory  linear
    0              1.0000  1.0000
    1              0.9240  0.9240
    wrote ...translation.json...
    """
    from .args import progress_enabled

    check_applicable(args)
    os.makedirs(args.out, exist_ok=True)
    seeds = list(range(args.seeds))
    if args.experiment == "invertible":
        result = _run_invertible(args, seeds, progress_enabled(args))
    else:
        result = _run_curves(args, seeds, progress_enabled(args))
    js = os.path.join(args.out, f"{args.experiment}.json")
    result.save_json(js)
    print(summary_tables(result))
    print(f"wrote {js}")
    return _write_figure(result, args.experiment, args.out)


def _cube_options(args) -> dict:
    return {k: v for k, v in (("n_per_cube", args.n_per_cube), ("dim", args.dim)) if v is not None}


def _run_invertible(args, seeds: list[int], progress: bool):
    from ..robustness import sweeps

    grid = args.grid or list(sweeps.PAPER_GRID)
    bar = _progress_bar(len(seeds) * len(grid) ** 2, args.experiment, progress)
    try:
        return sweeps.invertible_sweep(grid, grid, seeds, linear_method=args.linear_method or "gram",
                                       progress=bar and bar.update, **_cube_options(args))
    finally:
        if bar is not None:
            bar.close()


def _run_curves(args, seeds: list[int], progress: bool):
    from ..robustness import sweeps

    run = {"translation": sweeps.translation_sweep, "outlier": sweeps.outlier_sweep,
           "class-translation": sweeps.class_translation_sweep}[args.experiment]
    if args.experiment == "class-translation":
        kw = {"representation": args.representation or "pixels"}
    else:
        kw = _cube_options(args)
    if args.magnitudes:
        kw["magnitudes"] = args.magnitudes
    n_mag = len(kw.get("magnitudes", run.__defaults__[0]))
    bar = _progress_bar(len(seeds) * n_mag, args.experiment, progress)
    try:
        result = run(seeds=seeds, measures=_measures(args), progress=bar and bar.update, **kw)
    finally:
        if bar is not None:
            bar.close()
    result.params["rbf_samples"] = None if args.no_rbf else _rbf_samples(args)
    return result


def format_table(row_name: str, rows, col_name: str, cols, values: np.ndarray) -> str:
    """A text table: one row per ``rows`` value, one column per ``cols`` value.

    Parameters
    ----------
    row_name : str
        What the rows are (the top-left cell says ``row \\ col``).
    rows : sequence
        The row values (numbers are printed with ``:g``).
    col_name : str
        What the columns are.
    cols : sequence
        The column values.
    values : numpy.ndarray, shape (len(rows), len(cols))
        The table's cells; nan is printed as "n/a".

    Returns
    -------
    str
        The table, one line per row after a header line.

    Examples
    --------
    >>> print(format_table("mean", [1, 10], "std", [1, 10], np.array([[0.5, 0.25], [0.125, np.nan]])))
    mean \\ std         1      10
    1             0.5000  0.2500
    10            0.1250     n/a
    """
    labels = [_label(r) for r in rows]
    heads = [_label(c) for c in cols]
    corner = f"{row_name} \\ {col_name}"
    first = max(len(corner), *(len(s) for s in labels)) + 2
    width = max(8, *(len(h) + 2 for h in heads))
    lines = [corner.ljust(first) + "".join(h.rjust(width) for h in heads)]
    for label, row in zip(labels, np.atleast_2d(values)):
        cells = ("n/a" if not np.isfinite(v) else f"{v:.4f}" for v in row)
        lines.append(label.ljust(first) + "".join(c.rjust(width) for c in cells))
    return "\n".join(lines)


def _label(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float, np.number)) else str(value)


def summary_tables(result) -> str:
    """The mean over seeds of a sweep as text tables.

    A 2-D sweep (invertible) gets one (mean x std) table per measure; a curve sweep one table
    with a row per c and a column per measure.

    Parameters
    ----------
    result : SweepResult
        A finished sweep.

    Returns
    -------
    str
        The tables, each after a line saying what its rows and columns are.

    Examples
    --------
    >>> from pyckafast.robustness import linear_measure, sweeps
    >>> from pyckafast.cli.robustness import summary_tables
    >>> result = sweeps.translation_sweep([0.0, 1.0], seeds=[0], n_per_cube=20, dim=3,
    ...                                   measures=[linear_measure()])
    >>> print(summary_tables(result))
    translation: mean over 1 seed(s); rows: c, columns: measures
    c \\ measure    theory  linear
    0              1.0000  1.0000
    1              0.9240  0.9240
    """
    seeds = len(result.axes["seed"])
    axes = [a for a in result.axes if a != "seed"]
    if len(axes) == 2:
        blocks = [f"{name}: CKA(X, XM), mean over {seeds} seed(s); rows: {axes[0]} of M's "
                  f"entries, columns: {axes[1]}\n"
                  + format_table(axes[0], result.axes[axes[0]], axes[1], result.axes[axes[1]],
                                 result.mean(name))
                  for name in result.values]
        return "\n\n".join(blocks)
    (axis,) = axes
    names = list(result.values)
    table = np.column_stack([result.mean(n) for n in names])
    return (f"{result.experiment}: mean over {seeds} seed(s); rows: {axis}, columns: measures\n"
            + format_table(axis, result.axes[axis], "measure", names, table))


def _write_figure(result, exp: str, out: str) -> int:
    """The PNG of a finished sweep; 1 (after saying why) when matplotlib is missing."""
    from .._core.optional import MissingDependency

    try:
        from ..robustness.plots import plot_curves, plot_heatmap, save_figure

        fig = plot_heatmap(result) if exp == "invertible" else plot_curves(result)
    except MissingDependency as exc:
        print(f"pyckafast: no figure written: {exc}", file=sys.stderr)
        return 1
    png = save_figure(fig, os.path.join(out, f"{exp}.png"))
    print(f"wrote {png}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: ``python -m pyckafast.cli.robustness robustness translation --out d``.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status (errors are one line on stderr, status 2).

    Examples
    --------
    >>> import tempfile
    >>> from pyckafast.cli.robustness import main
    >>> status = main(["robustness", "translation", "--out", tempfile.mkdtemp(), "--seeds", "1",
    ...                "--n-per-cube", "20", "--dim", "3", "--magnitudes", "0,1", "--no-rbf"])
    translation: mean over 1 seed(s); rows: c, columns: measures
    c \\ measure    theory  linear
    0              1.0000  1.0000
    1              0.9240  0.9240
    wrote ...translation.json...
    """
    from .files import CLIError

    parser = argparse.ArgumentParser(prog="pyckafast")
    add_robustness_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (CLIError, ValueError) as exc:
        print(f"pyckafast: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
