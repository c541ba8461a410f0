"""Figures of the robustness sweeps (matplotlib, imported lazily; the ``plot`` extra)."""

from __future__ import annotations

import os

import numpy as np

from .._core.optional import require
from .results import SweepResult

__all__ = ["plot_curves", "plot_heatmap", "plot_cka_maps", "save_figure"]


def _pyplot():
    matplotlib = require("matplotlib", "pyckafast.robustness.plots")
    matplotlib.use("Agg", force=False)  # files only; never needs a display
    return require("matplotlib.pyplot", "pyckafast.robustness.plots")


def plot_curves(result: SweepResult, *, log_x: bool | None = None, title: str | None = None):
    """Mean +- std over seeds of every measure against c; "theory" dashed; "accuracy" on a twin axis.

    Returns the matplotlib Figure.
    """
    plt = _pyplot()
    c = result.axes["c"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name in result.values:
        if name in ("theory", "accuracy"):
            continue
        mean, std = result.mean(name), result.std(name)
        ax.plot(c, mean, marker="o", ms=3, label=name)
        ax.fill_between(c, mean - std, mean + std, alpha=0.2)
    if "theory" in result.values:
        ax.plot(c, result.mean("theory"), "k--", lw=1.2, label="linear (closed form)")
    if "limit" in result.per_seed:
        ax.axhline(float(np.nanmean(result.per_seed["limit"])), color="grey", ls=":", lw=1.2,
                   label="Theorem 1 limit")
    if "accuracy" in result.values:
        twin = ax.twinx()
        twin.plot(c, 100 * result.mean("accuracy"), color="tab:red", lw=2, label="accuracy (%)")
        twin.set_ylabel("classifier accuracy (%)", color="tab:red")
        twin.set_ylim(0, 100)
        twin.legend(loc="center right", fontsize=8)
    if log_x if log_x is not None else (c.max() / max(c.min(), 1e-300) > 200):
        ax.set_xscale("log")
    ax.set_xlabel("translation magnitude c")
    ax.set_ylabel("CKA with the original")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title or f"{result.experiment} ({len(result.axes['seed'])} seeds)")
    fig.tight_layout()
    return fig


def plot_heatmap(result: SweepResult, name: str = "linear", *, title: str | None = None):
    """Heatmap of the mean over seeds of ``name`` on the (mean, std) grid (Fig. 4b)."""
    plt = _pyplot()
    means, stds = result.axes["mean"], result.axes["std"]
    grid = result.mean(name)
    fig, ax = plt.subplots(figsize=(6.4, 5.4), dpi=120)
    im = ax.imshow(grid, origin="lower", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(stds)), [f"{s:g}" for s in stds], rotation=45)
    ax.set_yticks(range(len(means)), [f"{m:g}" for m in means])
    ax.set_xlabel("std of M entries")
    ax.set_ylabel("mean of M entries")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                color="white" if v < 0.6 else "black")
    fig.colorbar(im, ax=ax, label=f"{name} CKA(X, XM)")
    ax.set_title(title or f"invertible linear maps ({len(result.axes['seed'])} seeds)")
    fig.tight_layout()
    return fig


def plot_cka_maps(maps: dict[str, np.ndarray], *, title: str | None = None):
    """Layer x layer CKA maps side by side (e.g. before / target / after)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(maps), figsize=(3.6 * len(maps), 3.6), dpi=120)
    for i, (ax, (name, m)) in enumerate(zip(np.atleast_1d(axes), maps.items())):
        im = ax.imshow(np.asarray(m), vmin=0, vmax=1, cmap="magma", origin="lower")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("layer")
        if i == 0:
            ax.set_ylabel("layer")
    fig.colorbar(im, ax=list(np.atleast_1d(axes)), shrink=0.8, label="debiased linear CKA")
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig, path: str | os.PathLike) -> str:
    """Save ``fig`` as PNG at ``path``, close it, return the path."""
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return os.fspath(path)
