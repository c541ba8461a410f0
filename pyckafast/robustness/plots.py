"""Figures of the robustness sweeps (matplotlib, imported lazily; the ``plot`` extra)."""

from __future__ import annotations

import os

import numpy as np

from .._core.optional import require
from .results import SweepResult

__all__ = ["plot_curves", "plot_heatmap", "plot_cka_maps", "save_figure", "measure_label",
           "X_LABELS"]

#: What c means in each experiment, for the x axis (the direction is a random unit vector).
X_LABELS = {
    "translation": "translation magnitude c (second cube moved by c \u00d7 unit vector)",
    "outlier": "outlier displacement c (one point moved by c \u00d7 unit vector)",
    "class-translation": "translation magnitude c (one class moved along a direction that "
                         "keeps it separable)",
}


def _pyplot():
    matplotlib = require("matplotlib", "pyckafast.robustness.plots")
    matplotlib.use("Agg", force=False)  # files only; never needs a display
    return require("matplotlib.pyplot", "pyckafast.robustness.plots")


def measure_label(name: str) -> str:
    """The legend text of a measure: "rbf 0.5" -> "RBF CKA, σ = 0.5 × median distance".

    Parameters
    ----------
    name : str
        A measure's name in a SweepResult ("linear", "rbf 0.5", ...).

    Returns
    -------
    str
        What it measures, in words (other names unchanged).

    Examples
    --------
    >>> measure_label("linear"), measure_label("rbf 0.2")
    ('linear CKA', 'RBF CKA, σ = 0.2 × median distance')
    """
    if name == "linear":
        return "linear CKA"
    if name.startswith("rbf "):
        return f"RBF CKA, \u03c3 = {name[4:]} \u00d7 median distance"
    return name


def _seeds(result: SweepResult) -> str:
    k = len(result.axes["seed"])
    return f"{k} seed" if k == 1 else f"{k} seeds"


def plot_curves(result: SweepResult, *, log_x: bool | None = None, title: str | None = None):
    """Plot the mean +- std over seeds of every measure against c.

    "theory" is dashed and "accuracy" on a twin axis.

    Each measure has its own colour, line style and hollow marker
    (:func:`pyckafast.plot.series_style`), so curves that coincide stay visible; the legend
    sits below the axes, outside the curves.

    Parameters
    ----------
    result : SweepResult
        A translation, outlier or class-translation sweep (axes "seed" and "c").
    log_x : bool, optional
        Logarithmic c axis; default when c spans more than a factor of 200.
    title : str, optional
        Default: the experiment and the number of seeds.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (legend below the axes); save it with :func:`save_figure`.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from pyckafast.robustness import SweepResult
    >>> from pyckafast.robustness.plots import plot_curves
    >>> r = SweepResult("translation", {"seed": np.arange(2), "c": np.array([1.0, 10.0])},
    ...                 values={"linear": np.array([[0.9, 0.5], [0.8, 0.4]])})
    >>> fig = plot_curves(r)
    >>> [line.get_label() for line in fig.axes[0].lines]
    ['linear CKA']
    >>> matplotlib.pyplot.close(fig)
    """
    plt = _pyplot()
    from ..plot import FIGURE_DPI, series_style

    c = result.axes["c"]
    fig, ax = plt.subplots(figsize=(7.0, 5.0), dpi=FIGURE_DPI, layout="constrained")
    measures = [n for n in result.values if n not in ("theory", "accuracy")]
    for index, name in enumerate(measures):
        mean, std = result.mean(name), result.std(name)
        style = series_style(index)
        ax.plot(c, mean, label=measure_label(name), zorder=3, **style)
        ax.fill_between(c, mean - std, mean + std, color=style["color"], alpha=0.15, linewidth=0)
    if "theory" in result.values:
        # Drawn thin and on top: it coincides with the measured linear CKA by construction.
        ax.plot(c, result.mean("theory"), color="black", ls=(0, (3, 3)), lw=1.1, zorder=4,
                label="linear CKA, closed form")
    if "limit" in result.per_seed and np.isfinite(result.per_seed["limit"]).any():
        ax.axhline(float(np.nanmean(result.per_seed["limit"])), color="0.45", ls=":", lw=1.4,
                   label="Theorem 1 limit (c \u2192 \u221e)")
    handles, labels = ax.get_legend_handles_labels()
    if "accuracy" in result.values:
        twin = ax.twinx()
        acc = twin.plot(c, 100 * result.mean("accuracy"), color="0.2", lw=2.2, alpha=0.6,
                        label="classifier accuracy (%, right axis)")
        twin.set_ylabel("held-out classifier accuracy (%)")
        twin.set_ylim(0, 100)
        handles, labels = handles + acc, labels + [acc[0].get_label()]
    if log_x if log_x is not None else (c.max() / max(c.min(), 1e-300) > 200):
        ax.set_xscale("log")
    ax.set_xlabel(X_LABELS.get(result.experiment, "manipulation magnitude c"))
    ax.set_ylabel("CKA(original, manipulated)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    fig.legend(handles, labels, loc="outside lower center", ncol=2, frameon=False, fontsize=9)
    ax.set_title(title or f"{result.experiment}: mean \u00b1 1 std over {_seeds(result)}")
    return fig


def plot_heatmap(result: SweepResult, name: str = "linear", *, title: str | None = None):
    """Draw the mean over seeds of ``name`` on the sweep's 2-D grid as a heatmap (Fig. 4b).

    Rows are the sweep's first axis after "seed" (the mean of the entries of M, growing upward),
    columns the second (their std); every cell is annotated.

    Parameters
    ----------
    result : SweepResult
        An invertible sweep (axes "seed", "mean", "std").
    name : str, default "linear"
        The measure to draw.
    title : str, optional
        Default: the experiment and the number of seeds.

    Returns
    -------
    matplotlib.figure.Figure
        The annotated heatmap with its colorbar.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from pyckafast.robustness import SweepResult
    >>> from pyckafast.robustness.plots import plot_heatmap
    >>> r = SweepResult("invertible", {"seed": np.arange(1), "mean": np.array([0.0, 1.0]),
    ...                                "std": np.array([1.0])},
    ...                 values={"linear": np.array([[[0.9], [0.3]]])})
    >>> fig = plot_heatmap(r)
    >>> [t.get_text() for t in fig.axes[0].texts]
    ['0.90', '0.30']
    >>> matplotlib.pyplot.close(fig)
    """
    plt = _pyplot()
    from ..plot import FIGURE_DPI, annotate_cells

    row_axis, col_axis = [a for a in result.axes if a != "seed"]
    rows, cols = result.axes[row_axis], result.axes[col_axis]
    grid = result.mean(name)
    width = min(max(2.6 + 0.62 * len(cols), 6.4), 14.0)
    height = min(max(1.8 + 0.5 * len(rows), 4.5), 12.0)
    fig, ax = plt.subplots(figsize=(width, height), dpi=FIGURE_DPI, layout="constrained")
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", cmap="viridis", vmin=0, vmax=1,
                      aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(cols)), [f"{s:g}" for s in cols])
    ax.set_yticks(range(len(rows)), [f"{m:g}" for m in rows])
    ax.set_xlabel(f"{col_axis} of the entries of M")
    ax.set_ylabel(f"{row_axis} of the entries of M")
    annotate_cells(ax, grid, image)
    fig.colorbar(image, ax=ax, label=f"{measure_label(name)} of X and XM")
    ax.set_title(title or f"invertible linear maps M: mean over {_seeds(result)}")
    return fig


def plot_cka_maps(maps: dict[str, np.ndarray], *, title: str | None = None,
                  cbar_label: str = "CKA"):
    """Draw layer x layer CKA maps side by side (e.g. before / target / after), one colour scale.

    Parameters
    ----------
    maps : dict of str to array_like
        Panel title -> square map; layer 0 at the bottom left.
    title : str, optional
        Figure title.
    cbar_label : str, default "CKA"
        What the maps hold (e.g. "debiased linear CKA").

    Returns
    -------
    matplotlib.figure.Figure
        One panel per map and a shared colorbar.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from pyckafast.robustness.plots import plot_cka_maps
    >>> fig = plot_cka_maps({"before": np.eye(3), "after": np.ones((3, 3))})
    >>> [ax.get_title() for ax in fig.axes[:2]]
    ['before', 'after']
    >>> matplotlib.pyplot.close(fig)
    """
    plt = _pyplot()
    from ..plot import FIGURE_DPI

    panel = 3.4
    fig, axes = plt.subplots(1, len(maps), figsize=(panel * len(maps) + 1.2, panel + 0.6),
                             dpi=FIGURE_DPI, layout="constrained", squeeze=False)
    for i, (ax, (name, m)) in enumerate(zip(axes[0], maps.items())):
        m = np.asarray(m, dtype=np.float64)
        image = ax.imshow(np.ma.masked_invalid(m), vmin=0, vmax=1, origin="lower",
                          cmap=plt.get_cmap("magma").with_extremes(bad="0.8"),
                          interpolation="nearest")
        step = max(1, max(m.shape) // 10)  # about ten ticks, however many layers
        ax.set_xticks(range(0, m.shape[1], step))
        ax.set_yticks(range(0, m.shape[0], step))
        ax.tick_params(labelsize=8)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("layer")
        if i == 0:
            ax.set_ylabel("layer")
    fig.colorbar(image, ax=list(axes[0]), shrink=0.85, label=cbar_label)
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig, path: str | os.PathLike) -> str:
    """Save ``fig`` as PNG at ``path`` at its own dpi, close it, and return the path.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure; closed afterwards.
    path : str or os.PathLike
        Where to write the PNG.

    Returns
    -------
    str
        The path, as a string.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import os, tempfile
    >>> import matplotlib.pyplot as plt
    >>> from pyckafast.robustness.plots import save_figure
    >>> path = save_figure(plt.figure(), os.path.join(tempfile.mkdtemp(), "fig.png"))
    >>> os.path.getsize(path) > 0
    True
    """
    fig.savefig(path, dpi="figure")
    _pyplot().close(fig)
    return os.fspath(path)
