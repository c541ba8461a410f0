import json

import numpy as np
import pytest

import pyckafast
from pyckafast.robustness import (
    Measure, SweepResult, class_translation_sweep, invertible_sweep, linear_measure, outlier_sweep,
    rbf_measure, translation_sweep,
)
from pyckafast.robustness.measures import subsample_rows

from _reference import linear_cka_ref, rbf_cka_ref


def _brute_measure():
    return Measure("brute", linear_cka_ref)


def test_translation_sweep_matches_theory_and_brute():
    r = translation_sweep([0.5, 5.0, 50.0], [0, 1], n_per_cube=60, dim=8,
                          measures=[linear_measure(), _brute_measure()])
    assert r.shape == (2, 3) and set(r.values) == {"linear", "brute", "theory"}
    np.testing.assert_allclose(r.values["linear"], r.values["theory"], rtol=1e-10)
    np.testing.assert_allclose(r.values["brute"], r.values["theory"], rtol=1e-8)
    assert np.all(np.diff(r.values["linear"], axis=1) < 0)  # falls with c here
    assert np.all(r.values["linear"][:, -1] - r.per_seed["limit"] < 0.05)
    assert len(r.records()) == 2 * 3 * 3


def test_sweep_subsample_and_progress():
    calls = []
    seen = []
    m = Measure("rows", lambda x, y: (seen.append(x.shape[0]), 0.5)[1], max_samples=50)
    r = translation_sweep([1.0, 2.0], [3], n_per_cube=100, dim=4, measures=[m], theory_curve=False,
                          progress=calls.append)
    assert seen == [50, 50] and calls == [1, 1] and "theory" not in r.values
    idx = subsample_rows(200, 50, 3)
    assert len(np.unique(idx)) == 50 and subsample_rows(200, None, 3) is None
    np.testing.assert_array_equal(idx, subsample_rows(200, 50, 3))


def test_invertible_sweep_gram_equals_engine_and_brute():
    kw = dict(means=[1.0, 100.0], stds=[1.0, 50.0], seeds=[0], n_per_cube=40, dim=6)
    gram = invertible_sweep(**kw)
    engine = invertible_sweep(**kw, linear_method="engine", measures=[linear_measure(), _brute_measure()])
    assert gram.shape == (1, 2, 2)
    np.testing.assert_allclose(gram.values["linear"], engine.values["linear"], rtol=1e-10)
    np.testing.assert_allclose(gram.values["linear"], engine.values["brute"], rtol=1e-8)
    # large mean relative to std: XM is nearly rank one and CKA drops
    assert gram.values["linear"][0, 1, 0] < gram.values["linear"][0, 0, 1]
    with pytest.raises(ValueError, match="linear_method"):
        invertible_sweep(**kw, linear_method="fast")


def test_outlier_sweep_tends_to_limit():
    r = outlier_sweep([1.0, 1e2, 1e5], [0, 1], n_per_cube=50, dim=5, measures=[linear_measure()])
    np.testing.assert_allclose(r.values["linear"], r.values["theory"], rtol=1e-9)
    np.testing.assert_allclose(r.values["linear"][:, -1], r.per_seed["limit"], rtol=1e-3)
    assert np.all(r.per_seed["limit"] < 0.1)


def test_class_translation_keeps_accuracy_while_cka_collapses():
    pytest.importorskip("sklearn")
    r = class_translation_sweep([1.0, 100.0, 5000.0], [0, 1], measures=[linear_measure()])
    acc = r.values["accuracy"]
    assert np.all(acc == r.params["original_accuracy"]) and r.params["original_accuracy"] > 0.9
    assert np.all(r.values["linear"][:, -1] < 0.3)
    np.testing.assert_allclose(r.values["linear"], r.values["theory"], rtol=1e-9)


def test_result_json_roundtrip(tmp_path):
    r = SweepResult("x", {"seed": np.array([0, 1]), "c": np.array([1.0, 2.0])})
    r.new_values("m")[:] = [[0.1, np.nan], [0.3, 0.4]]
    r.save_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["values"]["m"] == [[0.1, None], [0.3, 0.4]]
    assert data["mean_over_seeds"]["m"] == pytest.approx([0.2, 0.4])


def test_plots_write_png(tmp_path):
    pytest.importorskip("matplotlib")
    from pyckafast.robustness.plots import plot_cka_maps, plot_curves, plot_heatmap, save_figure

    r = translation_sweep([1.0, 10.0], [0], n_per_cube=30, dim=4, measures=[linear_measure()])
    inv = invertible_sweep([1.0, 5.0], [1.0, 5.0], [0], n_per_cube=30, dim=4)
    for fig, name in ((plot_curves(r), "a"), (plot_heatmap(inv), "b"),
                      (plot_cka_maps({"x": np.eye(3), "y": np.ones((3, 3))}), "c")):
        path = save_figure(fig, tmp_path / f"{name}.png")
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_rbf_measure_calls_pyckafast_rbf_cka():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 5))
    y = x + 0.3 * rng.normal(size=x.shape)
    for mult in (1.0, 0.5, 0.2):
        assert rbf_measure(mult).fn(x, y) == pytest.approx(rbf_cka_ref(x, y, threshold=mult), rel=1e-6)
    r = translation_sweep([1.0, 20.0], [0], n_per_cube=60, dim=5)
    assert {"linear", "rbf 1", "rbf 0.5", "rbf 0.2", "theory"} <= set(r.values)
    assert np.all(np.isfinite(r.values["rbf 0.5"]))


@pytest.mark.parametrize("experiment, extra", [
    ("translation", ["--n-per-cube", "40", "--dim", "5", "--magnitudes", "1,10"]),
    ("invertible", ["--n-per-cube", "40", "--dim", "5", "--grid", "1,10"]),
    ("outlier", ["--n-per-cube", "40", "--dim", "5", "--magnitudes", "1,1000"]),
])
def test_cli_writes_png_and_json(tmp_path, experiment, extra, capsys):
    pytest.importorskip("matplotlib")
    from pyckafast.cli.robustness import main

    assert main(["robustness", experiment, "--out", str(tmp_path), "--seeds", "2", "--no-rbf",
                 "--no-progress", *extra]) == 0
    data = json.loads((tmp_path / f"{experiment}.json").read_text())
    assert data["experiment"] == experiment and len(data["axes"]["seed"]) == 2
    assert (tmp_path / f"{experiment}.png").read_bytes()[:4] == b"\x89PNG"
    assert "wrote" in capsys.readouterr().out


def test_cli_rejects_bad_arguments(tmp_path):
    from pyckafast.cli.robustness import main

    with pytest.raises(SystemExit):
        main(["robustness", "nonsense", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["robustness", "translation", "--out", str(tmp_path), "--magnitudes", "a,b"])


def _png_width(path):
    from PIL import Image

    with Image.open(path) as png:
        return png.size[0]


def test_curve_figure_series_legend_and_labels(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.colors import to_hex

    from pyckafast.robustness.plots import plot_curves, save_figure

    measures = [linear_measure(), rbf_measure(1.0, 40), rbf_measure(0.5, 40), rbf_measure(0.2, 40)]
    r = outlier_sweep([1.0, 100.0], [0, 1], n_per_cube=30, dim=4, measures=measures)
    fig = plot_curves(r)
    ax = fig.axes[0]
    measured = ax.get_lines()[:4]
    assert len({to_hex(line.get_color()) for line in measured}) == 4
    assert len({line.get_marker() for line in measured}) == 4
    assert len({str(line.get_linestyle()) for line in measured}) == 4
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[:2] == ["linear CKA", "RBF CKA, \u03c3 = 1 \u00d7 median distance"]
    assert len(texts) == 6  # four measures, the closed form, the Theorem 1 limit
    assert ax.get_xlabel().startswith("outlier displacement c")
    assert "2 seeds" in ax.get_title()
    fig.canvas.draw()
    assert legend.get_window_extent().y1 <= ax.get_window_extent().y0  # below the curves
    assert _png_width(save_figure(fig, tmp_path / "o.png")) >= 1000


def test_invertible_heatmap_annotates_every_cell(tmp_path):
    pytest.importorskip("matplotlib")
    from pyckafast.robustness.plots import plot_heatmap, save_figure

    inv = invertible_sweep([1.0, 10.0, 100.0], [1.0, 10.0], [0], n_per_cube=30, dim=4)
    fig = plot_heatmap(inv)
    ax = fig.axes[0]
    assert len(ax.texts) == 6
    assert ax.get_ylabel() == "mean of the entries of M" and ax.get_xlabel() == "std of the entries of M"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1", "10", "100"]
    assert "1 seed)" not in ax.get_title() and "1 seed" in ax.get_title()
    assert _png_width(save_figure(fig, tmp_path / "i.png")) >= 1000


def test_cka_maps_share_one_colour_scale_with_a_label():
    pytest.importorskip("matplotlib")
    from pyckafast.robustness.plots import plot_cka_maps

    fig = plot_cka_maps({"a": np.eye(20), "b": np.ones((20, 20))}, cbar_label="debiased CKA")
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2 and fig.axes[-1].get_ylabel() == "debiased CKA"
    assert len(panels[0].get_xticks()) <= 10  # 20 layers: every second one labelled
