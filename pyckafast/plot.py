"""Figures: CKA heatmaps of layer x layer maps, and CKA robustness curves (matplotlib, optional).

matplotlib is imported when a function is called (``pip install pyckafast[plot]``). Each
function draws on ``ax`` (or a new figure sized and with a dpi that read well when saved as
is: at least 1000 pixels wide) and returns the axes; save with ``ax.figure.savefig("cka.png")``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ._core.optional import require
from ._core.types import ArrayLike

__all__ = ["cka_heatmap", "robustness_curve", "shorten_name", "shorten_names", "series_style",
           "annotate_cells", "legend_outside", "FIGURE_DPI", "significance_marks",
           "cka_test_heatmap", "null_distribution", "influence_plot", "SIGNIFICANCE_MARKS"]

#: dpi of the figures this module creates: a 6.4 inch wide figure is 1024 pixels wide.
FIGURE_DPI = 160
# Annotate every cell with its value up to this many cells (12 x 12); beyond, numbers crowd out.
_ANNOTATE_MAX_CELLS = 144
_ELLIPSIS = "\u2026"
# Approximate width of one tick-label character at the default 10 pt font, in inches.
_CHAR_INCHES = 0.075

# Okabe & Ito's colour-blind-safe qualitative palette (blue first: the linear measure), each
# paired with its own line style and marker so that overlapping curves stay distinguishable
# in grey-scale print too.
_PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")
_LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (8, 2)))
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def series_style(index: int) -> dict:
    """Colour, line style and marker of the ``index``-th series of a line plot.

    Markers are hollow and grow with ``index`` so that series lying on top of one another
    (e.g. RBF bandwidths that all give CKA = 1) still show every marker.

    Parameters
    ----------
    index : int
        0 for the first series.

    Returns
    -------
    dict
        Keyword arguments for ``Axes.plot``.

    Examples
    --------
    >>> series_style(0)["color"] != series_style(1)["color"]
    True
    """
    k = index % len(_PALETTE)
    return {"color": _PALETTE[k], "linestyle": _LINESTYLES[k], "marker": _MARKERS[k],
            "markersize": 4.5 + 1.5 * k, "markerfacecolor": "none", "markeredgewidth": 1.3,
            "linewidth": 1.8}


def shorten_name(name: str, max_len: int) -> str:
    """``name`` in at most ``max_len`` characters, keeping its informative tail.

    Dotted module names lose whole leading components (``encoder.layer.11.output`` ->
    ``…11.output``); when whole components would fill less than half of the budget (or one
    component alone is too long), the last ``max_len - 1`` characters are kept instead.

    Parameters
    ----------
    name : str
        A layer name.
    max_len : int
        The most characters of the result (at least 2).

    Returns
    -------
    str
        The name itself if short enough, else an ellipsis and its tail.

    Examples
    --------
    >>> shorten_name("encoder.layers.11.attention.output.dense", 20)
    '…output.dense'
    >>> shorten_name("layer2.0.downsample.0", 12)
    '…ownsample.0'
    >>> shorten_name("fc", 20)
    'fc'
    """
    if max_len < 2:
        raise ValueError(f"max_len must be at least 2; got {max_len}.")
    if len(name) <= max_len:
        return name
    parts = name.split(".")
    tail = parts[-1]
    for part in reversed(parts[:-1]):
        if len(part) + 1 + len(tail) + 1 > max_len:
            break
        tail = f"{part}.{tail}"
    if len(tail) + 1 > max_len or len(tail) < max_len // 2:
        # One component too long, or whole components that leave most of the budget unused
        # ("…0" for "layer2.0.downsample.0"): the last characters say more.
        tail = name[-(max_len - 1):]
    return _ELLIPSIS + tail


def _head_and_tail(name: str, max_len: int) -> str:
    """``first.…last`` within ``max_len``: what tells apart names that differ in the middle.

    The first dotted component is kept whole when it leaves room for a tail (``0.…output.dense``);
    otherwise the first and last characters.
    """
    head, _, rest = name.partition(".")
    room = max_len - len(head) - 1
    if rest and room >= 4:
        return f"{head}.{shorten_name(rest, room)}"
    keep = max_len - 1
    return name[:keep // 2] + _ELLIPSIS + name[len(name) - (keep - keep // 2):]


def _common_prefix(names: Sequence[str]) -> str:
    """The leading dotted components shared by every name (never a whole name), with its dot."""
    common = []
    for parts in zip(*(n.split(".")[:-1] for n in names)):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return ".".join(common) + "." if common else ""


def _common_suffix(names: Sequence[str]) -> str:
    """The trailing dotted components shared by every name (never a whole name), with its dot."""
    reversed_prefix = _common_prefix([".".join(reversed(n.split("."))) for n in names])
    return "." + ".".join(reversed(reversed_prefix[:-1].split("."))) if reversed_prefix else ""


def shorten_names(names: Sequence[str], max_len: int) -> tuple[list[str], str]:
    """Shorten a list of layer names to at most ``max_len`` characters each, keeping them distinct.

    Only when a name is too long: the dotted prefix shared by all names is removed, then (if still
    too long) the shared dotted suffix; the pattern of what was removed is returned for the axis
    label (``encoder.layers.*.output``). Each name then keeps its informative tail
    (:func:`shorten_name`); names that would then coincide keep their head and tail instead,
    and if even those coincide, the whole name.

    Parameters
    ----------
    names : sequence of str
        The layer names of one axis.
    max_len : int
        The most characters of a label (at least 2).

    Returns
    -------
    short : list of str
        The labels to draw.
    pattern : str
        ``prefix*suffix`` of the removed common parts, "" if none.

    Examples
    --------
    >>> shorten_names([f"encoder.layers.{i}.attention.output.dense" for i in (0, 11)], 16)
    (['0', '11'], 'encoder.layers.*.attention.output.dense')
    >>> shorten_names(["features.0.conv", "features.1.conv.weight"], 14)
    (['0.conv', '1.conv.weight'], 'features.*')
    """
    names = [str(n) for n in names]
    if all(len(n) <= max_len for n in names):
        return names, ""
    prefix = _common_prefix(names) if len(names) > 1 else ""
    rest = [n[len(prefix):] for n in names]
    suffix = ""
    if len(names) > 1 and any(len(n) > max_len for n in rest):
        suffix = _common_suffix(rest)
        rest = [n[:len(n) - len(suffix)] for n in rest]
    short = [shorten_name(n, max_len) for n in rest]
    short = _where_repeated(short, rest, lambda n: _head_and_tail(n, max_len))
    # Two identical labels would mislead; a label over budget only crowds. Keep those in full.
    short = _where_repeated(short, rest, lambda n: n)
    return short, f"{prefix}*{suffix}" if prefix or suffix else ""


def _where_repeated(short: list[str], full: list[str], replace) -> list[str]:
    """``replace(full name)`` for the labels that occur more than once, the others unchanged."""
    counts = {s: short.count(s) for s in short}
    return [replace(n) if counts[s] > 1 else s for n, s in zip(full, short)]


def _with_pattern(label: str, pattern: str) -> str:
    return f"{label} ({pattern})" if pattern and label else label


def _heatmap_figure(plt, shape: tuple[int, int], label_x: int, label_y: int):
    """A new figure sized for the map: cells of 0.18 to 0.55 in, room for the tick labels."""
    rows, cols = shape
    cell = min(max(8.0 / max(rows, cols), 0.18), 0.55)
    rotate = _rotate_x_labels(label_x, cell)
    left = 0.8 + _CHAR_INCHES * label_y
    bottom = 0.8 + _CHAR_INCHES * label_x * (0.72 if rotate else 0.0)
    width = min(max(left + cols * cell + 1.4, 6.4), 16.0)
    height = min(max(bottom + rows * cell + 0.7, 4.0), 14.0)
    fig, ax = plt.subplots(figsize=(width, height), dpi=FIGURE_DPI, layout="constrained")
    return ax


def _rotate_x_labels(label_x: int, cell_inches: float) -> bool:
    """Tilt the column names only when the longest would not fit under its cell."""
    return label_x * _CHAR_INCHES > 0.9 * cell_inches


def _cell_width(ax, cols: int) -> float:
    return ax.figure.get_size_inches()[0] * ax.get_position().width / cols


def cka_heatmap(
    matrix: ArrayLike, names_x: Sequence[str] | None = None, names_y: Sequence[str] | None = None, ax=None,
    *, title: str | None = None, xlabel: str = "model B layer", ylabel: str = "model A layer",
    annotate: bool | None = None, vmin: float = 0.0, vmax: float = 1.0, cmap: str = "magma",
    cbar_label: str = "CKA", names_max_len: int = 24,
):
    """Draw a heatmap of a CKA map: row i = ``names_x[i]``, column j = ``names_y[j]``.

    Parameters
    ----------
    matrix : array_like, shape (len(names_x), len(names_y))
        CKA values; nan cells (undefined CKA) are drawn grey and annotated "n/a".
    names_x, names_y : sequence of str, optional
        Row and column names (default: 0, 1, ...). Names longer than ``names_max_len`` are
        shortened (:func:`shorten_names`); the parts common to all go into the axis label.
    ax : matplotlib.axes.Axes, optional
        Draw here; default: a new figure of at least 1024 pixels width at its ``FIGURE_DPI``.
    title, xlabel, ylabel : str
        Texts of the axes.
    annotate : bool, optional
        Write each value in its cell; default when the map has at most 144 cells (12 x 12),
        with the text colour chosen against the cell's brightness.
    vmin, vmax : float, default 0.0 and 1.0
        The colour scale's range (e.g. narrow it to see differences among values near 1).
    cmap : str, default "magma"
        A matplotlib colormap name.
    cbar_label : str, default "CKA"
        Label of the colorbar (e.g. "debiased linear CKA").
    names_max_len : int, default 24
        Longest tick label, in characters.

    Returns
    -------
    matplotlib.axes.Axes
        The heatmap's axes (the colorbar is the figure's last axes).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from pyckafast.plot import cka_heatmap
    >>> ax = cka_heatmap([[1.0, 0.4], [0.4, 1.0]], ["conv1", "fc"], ["conv1", "fc"])
    >>> [t.get_text() for t in ax.texts]
    ['1.00', '0.40', '0.40', '1.00']
    """
    plt = require("matplotlib.pyplot", "pyckafast.plot")

    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"matrix must be 2-D (layers_x, layers_y); got shape {m.shape}.")
    if not vmin < vmax:
        raise ValueError(f"vmin must be below vmax; got vmin={vmin}, vmax={vmax}.")
    rows, pattern_x = shorten_names(_names(names_x, m.shape[0], "names_x"), names_max_len)
    cols, pattern_y = shorten_names(_names(names_y, m.shape[1], "names_y"), names_max_len)
    label_x, label_y = max(map(len, cols)), max(map(len, rows))
    if ax is None:
        ax = _heatmap_figure(plt, m.shape, label_x, label_y)
    colormap = plt.get_cmap(cmap).with_extremes(bad="0.8")
    image = ax.imshow(np.ma.masked_invalid(m), cmap=colormap, vmin=vmin, vmax=vmax,
                      aspect="auto", interpolation="nearest")
    ax.figure.colorbar(image, ax=ax, label=cbar_label, fraction=0.046, pad=0.04)
    rotate = _rotate_x_labels(label_x, _cell_width(ax, m.shape[1]))
    ax.set_xticks(range(m.shape[1]), cols, rotation=45 if rotate else 0,
                  ha="right" if rotate else "center", rotation_mode="anchor" if rotate else "default")
    ax.set_yticks(range(m.shape[0]), rows)
    ax.set_xlabel(_with_pattern(xlabel, pattern_y))
    ax.set_ylabel(_with_pattern(ylabel, pattern_x))
    if title:
        ax.set_title(title)
    if annotate if annotate is not None else m.size <= _ANNOTATE_MAX_CELLS:
        annotate_cells(ax, m, image)
    return ax


def annotate_cells(ax, m: np.ndarray, image, fmt: str = "{:.2f}") -> None:
    """Write each value of ``m`` in its cell, dark on light cells and light on dark ones.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The axes holding ``image``.
    m : numpy.ndarray, 2-D
        The values drawn by ``image`` (nan: "n/a").
    image : matplotlib.image.AxesImage
        Its colormap and norm decide each text's colour.
    fmt : str, default "{:.2f}"
        Format of a value.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt, numpy as np
    >>> from pyckafast.plot import annotate_cells
    >>> fig, ax = plt.subplots()
    >>> m = np.array([[0.0, 1.0], [np.nan, 0.5]])
    >>> annotate_cells(ax, m, ax.imshow(m, vmin=0, vmax=1), fmt="{:.1f}")
    >>> [t.get_text() for t in ax.texts]
    ['0.0', '1.0', 'n/a', '0.5']
    >>> plt.close(fig)
    """
    fontsize = 9 if max(m.shape) <= 8 else 7.5
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            v = m[i, j]
            if np.isnan(v):
                ax.text(j, i, "n/a", ha="center", va="center", color="black", fontsize=fontsize)
                continue
            r, g, b, _ = image.cmap(image.norm(v))
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=fontsize,
                    color="white" if dark else "black")


def _names(names, count: int, what: str) -> list[str]:
    if names is None:
        return [str(i) for i in range(count)]
    names = [str(n) for n in names]
    if len(names) != count:
        raise ValueError(f"{what} must have one name per row/column ({count}); got {len(names)}.")
    return names


def legend_outside(ax, handles=None, labels=None, **kwargs):
    """Place a legend to the right of the axes, where it can never hide a curve.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The axes whose curves the legend explains.
    handles, labels : list, optional
        Default: those of ``ax``.
    **kwargs
        Passed to ``Axes.legend``.

    Returns
    -------
    matplotlib.legend.Legend
        The legend, anchored just right of the axes.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> from pyckafast.plot import legend_outside
    >>> fig, ax = plt.subplots()
    >>> _ = ax.plot([0, 1], [0, 1], label="linear")
    >>> [t.get_text() for t in legend_outside(ax).get_texts()]
    ['linear']
    >>> plt.close(fig)
    """
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    options = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0,
               "frameon": False, **kwargs}
    return ax.legend(handles, labels, **options)


def robustness_curve(
    x: ArrayLike, curves: Mapping[str, Sequence[float]] | Sequence[float], ax=None, *,
    xlabel: str = "manipulation strength", ylabel: str = "CKA", title: str | None = None,
    baseline: float | None = None, ylim: tuple[float, float] | None = (0.0, 1.05),
):
    """Plot CKA against a manipulation parameter (Davari et al. 2023), one line per curve.

    Parameters
    ----------
    x : array_like
        The manipulation parameter of each point.
    curves : mapping of str to sequence of float, or sequence of float
        Label -> values (one per x), or the values of a single curve.
    ax : matplotlib.axes.Axes, optional
        Draw here; default: a new figure (1024 pixels wide).
    xlabel, ylabel, title : str
        Texts of the axes; say what the parameter measures, with its unit.
    baseline : float, optional
        A dashed grey horizontal reference (e.g. the unmanipulated CKA).
    ylim : (float, float) or None, default (0.0, 1.05)
        Range of the CKA axis; None lets matplotlib choose.

    Returns
    -------
    matplotlib.axes.Axes
        Each curve has its own colour, line style and marker; with several curves a legend
        sits to the right of the axes.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from pyckafast.plot import robustness_curve
    >>> ax = robustness_curve([0, 1, 2], {"linear": [1.0, 0.7, 0.2], "rbf": [1.0, 0.9, 0.6]})
    >>> [line.get_label() for line in ax.lines]
    ['linear', 'rbf']
    """
    plt = require("matplotlib.pyplot", "pyckafast.plot")

    xs = np.asarray(x, dtype=np.float64)
    if not isinstance(curves, Mapping):
        curves = {"CKA": curves}
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.0), dpi=FIGURE_DPI, layout="constrained")
    for index, (label, values) in enumerate(curves.items()):
        ys = np.asarray(values, dtype=np.float64)
        if ys.shape != xs.shape:
            raise ValueError(f"curve {label!r} has {ys.shape} values; x has shape {xs.shape}.")
        ax.plot(xs, ys, label=str(label), **series_style(index))
    if baseline is not None:
        ax.axhline(baseline, color="0.4", linestyle="--", linewidth=1, label="_baseline")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        legend_outside(ax)
    if title:
        ax.set_title(title)
    return ax


# --- significance and influence ----------------------------------------------------------------

#: p-value thresholds of the significance marks and their symbols.
SIGNIFICANCE_MARKS = ((0.001, "***"), (0.01, "**"), (0.05, "*"))


def significance_marks(pvalue: ArrayLike) -> np.ndarray:
    """The mark of each p-value: "***" below 0.001, "**" below 0.01, "*" below 0.05, else "".

    Parameters
    ----------
    pvalue : array_like
        The p-values (nan: no mark).

    Returns
    -------
    numpy.ndarray of str
        The marks, in the shape of ``pvalue``.

    Examples
    --------
    >>> from pyckafast.plot import significance_marks
    >>> significance_marks([0.2, 0.04, 0.0001]).tolist()
    ['', '*', '***']
    """
    p = np.asarray(pvalue, dtype=np.float64)
    out = np.full(p.shape, "", dtype=object)
    for threshold, mark in reversed(SIGNIFICANCE_MARKS):
        out[p < threshold] = mark
    return out.astype(str)


def cka_test_heatmap(result, names_x: Sequence[str] | None = None,
                     names_y: Sequence[str] | None = None, ax=None, **heatmap_options):
    """Draw the CKA heatmap of :func:`pyckafast.cka_matrix_test` with significance marks.

    Each cell shows its CKA and the mark of its p-value (see :func:`significance_marks`).

    Parameters
    ----------
    result : MatrixTestResult
        With ``.cka`` and ``.pvalue`` of shape (L, M).
    names_x, names_y : sequence of str, optional
        Row and column names, as :func:`cka_heatmap`.
    ax : matplotlib.axes.Axes, optional
        Draw here; default: a new figure.
    **heatmap_options
        Any other option of :func:`cka_heatmap` (``annotate`` is decided here).

    Returns
    -------
    matplotlib.axes.Axes
        The heatmap's axes.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> import pyckafast
    >>> from pyckafast.plot import cka_test_heatmap
    >>> x = np.random.default_rng(0).normal(size=(60, 3))
    >>> r = pyckafast.cka_matrix_test([x, x ** 3, np.random.default_rng(1).normal(size=(60, 2))])
    >>> ax = cka_test_heatmap(r)
    >>> ax.texts[0].get_text()
    '1.00\\n***'
    """
    heatmap_options.pop("annotate", None)
    ax = cka_heatmap(result.cka, names_x, names_y, ax, annotate=False, **heatmap_options)
    m = np.asarray(result.cka, dtype=np.float64)
    marks = significance_marks(result.pvalue)
    image = ax.get_images()[0]
    fontsize = 9 if max(m.shape) <= 8 else 7
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if np.isnan(m[i, j]):
                text, dark = "n/a", False
            else:
                r, g, b, _ = image.cmap(image.norm(m[i, j]))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                text = f"{m[i, j]:.2f}\n{marks[i, j]}" if marks[i, j] else f"{m[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                    color="white" if dark else "black")
    return ax


def null_distribution(result, ax=None, *, values: ArrayLike | None = None,
                      title: str | None = None):
    """Draw the permutation null law of CKA and the observed value.

    Parameters
    ----------
    result : CKATestResult
        From :func:`pyckafast.cka_test`; its null moments define the drawn density (Pearson
        type III with the exact skewness, or the fitted gamma / normal law it used).
    ax : matplotlib.axes.Axes, optional
        Draw here; default: a new figure.
    values : array_like, optional
        Permuted CKA values to draw as a histogram beside the density.
    title : str, optional
        Title of the axes (default: the p-value and how it was obtained).

    Returns
    -------
    matplotlib.axes.Axes
        The axes.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> import pyckafast
    >>> from pyckafast.plot import null_distribution
    >>> x = np.random.default_rng(0).normal(size=(80, 3))
    >>> ax = null_distribution(pyckafast.cka_test(x, x[::-1] + x))
    >>> len(ax.lines) >= 2
    True
    """
    plt = require("matplotlib.pyplot", "pyckafast.plot")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.6), dpi=FIGURE_DPI, layout="constrained")
    mean, sd = result.null_mean, float(np.sqrt(result.null_var))
    skew = _drawn_skew(result)
    lo = min(mean - 4 * sd, result.cka - sd)
    hi = max(mean + 5 * sd, result.cka + sd)
    if values is not None:
        v = np.asarray(values, dtype=np.float64)
        ax.hist(v, bins=50, density=True, color=_PALETTE[5], alpha=0.5, label="permutations")
        lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
    grid = np.linspace(lo, hi, 400)
    if sd > 0:
        ax.plot(grid, _pearson3_density((grid - mean) / sd, skew) / sd, color=_PALETTE[0],
                label=f"null ({result.approximation})")
    ax.axvline(result.cka, color=_PALETTE[1], linestyle="--", label=f"observed {result.cka:.3g}")
    ax.set_xlabel("CKA")
    ax.set_ylabel("density")
    ax.set_title(title if title is not None else
                 f"p = {result.pvalue:.3g} ({result.method}, z = {result.zscore:.3g})")
    ax.legend(frameon=False)
    return ax


def _drawn_skew(result) -> float:
    if np.isfinite(result.null_skew):
        return float(result.null_skew)
    if result.approximation == "gamma2" and result.null_mean > 0:
        return 2 * float(np.sqrt(result.null_var)) / result.null_mean
    return 0.0


def _pearson3_density(z: np.ndarray, skew: float) -> np.ndarray:
    """Density of the standardized Pearson type III law (normal for |skew| < 1e-6)."""
    import math

    if abs(skew) < 1e-6:
        return np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    k = 4.0 / skew ** 2
    g = k + np.sign(skew) * z * math.sqrt(k)
    out = np.zeros_like(z)
    pos = g > 0
    out[pos] = np.exp((k - 1) * np.log(g[pos]) - g[pos] - math.lgamma(k)) * math.sqrt(k)
    return out


def influence_plot(result, ax=None, *, top: int = 5, title: str | None = None):
    """Draw the leave-one-out change of CKA of every sample, the top ones labelled.

    Parameters
    ----------
    result : InfluenceResult
        From :func:`pyckafast.cka_influence`.
    ax : matplotlib.axes.Axes, optional
        Draw here; default: a new figure.
    top : int, default 5
        How many of the most influential samples to label with their index.
    title : str, optional
        Title of the axes (default: CKA and its jackknife standard error).

    Returns
    -------
    matplotlib.axes.Axes
        The axes.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> import pyckafast
    >>> from pyckafast.plot import influence_plot
    >>> x = np.random.default_rng(0).normal(size=(50, 2))
    >>> y = x.copy(); y[4] += 20
    >>> ax = influence_plot(pyckafast.cka_influence(x, y), top=1)
    >>> ax.texts[0].get_text()
    '4'
    """
    plt = require("matplotlib.pyplot", "pyckafast.plot")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.6), dpi=FIGURE_DPI, layout="constrained")
    delta = np.asarray(result.delta)
    ax.scatter(np.arange(delta.size), delta, s=6, color=_PALETTE[0], linewidths=0)
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    if top:
        for i, d in zip(*result.top(top)):
            ax.annotate(str(int(i)), (int(i), float(d)), textcoords="offset points",
                        xytext=(3, 3), fontsize=8, color=_PALETTE[1])
    ax.set_xlabel("sample")
    ax.set_ylabel("CKA without the sample - CKA")
    ax.set_title(title if title is not None else
                 f"CKA = {result.cka:.4g}, jackknife se = {result.se:.2g}")
    return ax
