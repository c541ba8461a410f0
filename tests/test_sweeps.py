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
    from pyckafast.robustness_cli import main

    assert main(["robustness", experiment, "--out", str(tmp_path), "--seeds", "2", "--no-rbf",
                 "--no-progress", *extra]) == 0
    data = json.loads((tmp_path / f"{experiment}.json").read_text())
    assert data["experiment"] == experiment and len(data["axes"]["seed"]) == 2
    assert (tmp_path / f"{experiment}.png").read_bytes()[:4] == b"\x89PNG"
    assert "wrote" in capsys.readouterr().out


def test_cli_rejects_bad_arguments(tmp_path):
    from pyckafast.robustness_cli import main

    with pytest.raises(SystemExit):
        main(["robustness", "nonsense", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["robustness", "translation", "--out", str(tmp_path), "--magnitudes", "a,b"])
