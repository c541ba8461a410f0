"""Render every figure the library writes, small and fast, into one folder to look at.

    python scripts/render_figures.py OUT_DIR

Heatmaps (small; 12 x 12 with long dotted module names; 30 x 30), robustness curves
(translation, outlier with RBF measures), the invertible grid and side-by-side CKA maps.
"""

from __future__ import annotations

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pyckafast.plot import cka_heatmap, robustness_curve  # noqa: E402
from pyckafast.robustness import (  # noqa: E402
    class_translation_sweep, invertible_sweep, linear_measure, outlier_sweep, rbf_measure,
    translation_sweep,
)
from pyckafast.robustness.sweeps import PAPER_GRID  # noqa: E402
from pyckafast.robustness.plots import plot_cka_maps, plot_curves, plot_heatmap, save_figure  # noqa: E402


def _maps(k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.exp(-np.abs(np.subtract.outer(np.arange(k), np.arange(k))) / 3.0)
    noisy = np.clip(base + 0.05 * rng.normal(size=(k, k)), 0, 1)
    return (noisy + noisy.T) / 2


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    ax = cka_heatmap(_maps(3), ["conv1", "layer1", "fc"], ["conv1", "layer1", "fc"])
    ax.figure.savefig(os.path.join(out, "heatmap_small.png"))
    long = [f"encoder.layers.{i}.attention.output.dense" for i in range(12)]
    ax = cka_heatmap(_maps(12), long, long, title="BERT-like encoder")
    ax.figure.savefig(os.path.join(out, "heatmap_12_long_names.png"))
    ax = cka_heatmap(_maps(30), xlabel="layer", ylabel="layer")
    ax.figure.savefig(os.path.join(out, "heatmap_30.png"))
    ax = robustness_curve([0, 0.25, 0.5, 0.75, 1.0],
                          {"linear": [1, 0.8, 0.6, 0.4, 0.2], "rbf 0.5": [1, 0.9, 0.8, 0.7, 0.6]},
                          baseline=1.0, xlabel="fraction of shifted points")
    ax.figure.savefig(os.path.join(out, "robustness_curve.png"))
    plt.close("all")

    measures = [linear_measure(), *(rbf_measure(m, 200) for m in (1.0, 0.5, 0.2))]
    t = translation_sweep([1, 5, 10, 20, 30, 50], [0, 1], n_per_cube=100, dim=20, measures=measures)
    save_figure(plot_curves(t), os.path.join(out, "translation.png"))
    o = outlier_sweep(list(np.geomspace(1, 1e4, 7)), [0, 1], n_per_cube=100, dim=10, measures=measures)
    save_figure(plot_curves(o), os.path.join(out, "outlier.png"))
    inv = invertible_sweep([1, 10, 100, 1000], [1, 10, 100, 1000], [0], n_per_cube=60, dim=8)
    save_figure(plot_heatmap(inv), os.path.join(out, "invertible.png"))
    paper = invertible_sweep(PAPER_GRID, PAPER_GRID, [0, 1], n_per_cube=60, dim=8)
    save_figure(plot_heatmap(paper), os.path.join(out, "invertible_paper_grid.png"))
    cls = class_translation_sweep([1, 10, 100, 1000, 5000], [0, 1], measures=measures[:2])
    save_figure(plot_curves(cls), os.path.join(out, "class_translation.png"))
    save_figure(plot_cka_maps({"before": _maps(8), "target": np.eye(8), "after": _maps(8, 1)},
                              title="CKA maps"), os.path.join(out, "cka_maps.png"))
    print("\n".join(sorted(os.listdir(out))))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "figures")
