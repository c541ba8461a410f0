"""Figures: CKA heatmaps of layer x layer maps, and CKA robustness curves (matplotlib, optional).

matplotlib is imported when a function is called (``pip install pyckafast[plot]``). Each
function draws on ``ax`` (or a new figure) and returns the axes; save with
``ax.figure.savefig("cka.png", dpi=150)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ._core.optional import require

__all__ = ["cka_heatmap", "robustness_curve"]

# Annotate every cell with its value up to this many cells; beyond, numbers become unreadable.
_ANNOTATE_MAX_CELLS = 144


def cka_heatmap(
    matrix, names_x: Sequence[str] | None = None, names_y: Sequence[str] | None = None, ax=None,
    *, title: str | None = None, xlabel: str = "model B layer", ylabel: str = "model A layer",
    annotate: bool | None = None, vmin: float = 0.0, vmax: float = 1.0, cmap: str = "magma",
):
    """Heatmap of a CKA map: row i = ``names_x[i]``, column j = ``names_y[j]``.

    Values are annotated in each cell when the map is small (``annotate=None``: at most 144
    cells), with text colour chosen against the cell's brightness; nan cells (undefined CKA)
    are grey. A colorbar labelled "CKA" is added.

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
    names_x = _names(names_x, m.shape[0], "names_x")
    names_y = _names(names_y, m.shape[1], "names_y")
    if ax is None:
        w, h = 1.2 + 0.55 * m.shape[1], 0.9 + 0.5 * m.shape[0]
        _, ax = plt.subplots(figsize=(min(max(w, 4.0), 16.0), min(max(h, 3.0), 14.0)),
                             layout="constrained")
    colormap = plt.get_cmap(cmap).with_extremes(bad="0.8")
    image = ax.imshow(np.ma.masked_invalid(m), cmap=colormap, vmin=vmin, vmax=vmax,
                      aspect="auto", interpolation="nearest")
    ax.figure.colorbar(image, ax=ax, label="CKA", fraction=0.046, pad=0.04)
    ax.set_xticks(range(m.shape[1]), names_y, rotation=45 if m.shape[1] > 4 else 0,
                  ha="right" if m.shape[1] > 4 else "center")
    ax.set_yticks(range(m.shape[0]), names_x)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if annotate if annotate is not None else m.size <= _ANNOTATE_MAX_CELLS:
        _annotate(ax, m, image)
    return ax


def _annotate(ax, m: np.ndarray, image) -> None:
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            v = m[i, j]
            if np.isnan(v):
                ax.text(j, i, "n/a", ha="center", va="center", color="black", fontsize=8)
                continue
            r, g, b, _ = image.cmap(image.norm(v))
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")


def _names(names, count: int, what: str) -> list[str]:
    if names is None:
        return [str(i) for i in range(count)]
    names = [str(n) for n in names]
    if len(names) != count:
        raise ValueError(f"{what} must have one name per row/column ({count}); got {len(names)}.")
    return names


def robustness_curve(
    x, curves: Mapping[str, Sequence[float]] | Sequence[float], ax=None, *,
    xlabel: str = "manipulation strength", ylabel: str = "CKA", title: str | None = None,
    baseline: float | None = None, ylim: tuple[float, float] | None = (0.0, 1.05),
):
    """CKA against a manipulation parameter (Davari et al. 2023), one line per named curve.

    ``curves`` is a sequence of values (one curve) or a mapping label -> values; ``baseline``
    draws a dashed horizontal reference (e.g. the unmanipulated CKA).

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
        _, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
    for label, values in curves.items():
        ys = np.asarray(values, dtype=np.float64)
        if ys.shape != xs.shape:
            raise ValueError(f"curve {label!r} has {ys.shape} values; x has shape {xs.shape}.")
        ax.plot(xs, ys, marker="o", markersize=4, label=str(label))
    if baseline is not None:
        ax.axhline(baseline, color="0.4", linestyle="--", linewidth=1, label="_baseline")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    return ax
