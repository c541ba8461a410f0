"""pyckafast.plot: heatmaps and robustness curves render, label and annotate what they should."""

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pyckafast.plot import cka_heatmap, robustness_curve  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_heatmap_png_labels_annotations_colorbar(tmp_path):
    m = np.array([[1.0, 0.42, 0.1], [0.42, 1.0, np.nan]])
    ax = cka_heatmap(m, ["conv1", "fc"], ["conv1", "conv2", "fc"], title="A vs B")
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["1.00", "0.42", "0.10", "0.42", "1.00", "n/a"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["conv1", "fc"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv1", "conv2", "fc"]
    assert ax.figure.axes[-1].get_ylabel() == "CKA"  # the colorbar
    colours = {t.get_text(): t.get_color() for t in ax.texts}
    assert colours["1.00"] != colours["0.10"]  # light cell: dark text, dark cell: light text
    path = tmp_path / "heatmap.png"
    ax.figure.savefig(path, dpi=80)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_large_map_is_not_annotated_and_names_default():
    ax = cka_heatmap(np.random.default_rng(0).random((20, 20)))
    assert len(ax.texts) == 0
    assert ax.get_yticklabels()[3].get_text() == "3"


def test_heatmap_on_given_axes_and_errors():
    fig, ax = plt.subplots()
    assert cka_heatmap(np.eye(2), ax=ax) is ax
    with pytest.raises(ValueError, match="names_y must have one name per"):
        cka_heatmap(np.eye(2), ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="matrix must be 2-D"):
        cka_heatmap(np.ones(3))


def test_robustness_curve(tmp_path):
    ax = robustness_curve([0, 0.5, 1], {"linear": [1, 0.6, 0.2], "debiased": [1, 0.7, 0.3]},
                          baseline=1.0, xlabel="fraction of shifted points")
    assert [l.get_label() for l in ax.lines] == ["linear", "debiased", "_baseline"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [1, 0.6, 0.2])
    assert ax.get_xlabel() == "fraction of shifted points" and ax.get_legend() is not None
    single = robustness_curve([1, 2], [0.5, 0.4])
    assert single.get_legend() is None
    with pytest.raises(ValueError, match="curve 'CKA' has"):
        robustness_curve([1, 2, 3], [0.5, 0.4])
    ax.figure.savefig(tmp_path / "curve.png", dpi=80)


# ---- what a reader sees: pixel size, readable labels, distinguishable series ----

from matplotlib.colors import to_hex  # noqa: E402
from PIL import Image  # noqa: E402

from pyckafast.plot import series_style, shorten_name, shorten_names  # noqa: E402


def _png_size(fig, path):
    fig.savefig(path)  # default settings: what a user gets without choosing a dpi
    with Image.open(path) as png:
        return png.size


@pytest.mark.parametrize("k", [2, 3, 12, 30])
def test_heatmap_default_size_reads_well(tmp_path, k):
    ax = cka_heatmap(np.eye(k))
    width, height = _png_size(ax.figure, tmp_path / "h.png")
    assert width >= 1000 and height >= 600


def test_long_dotted_names_keep_their_informative_part():
    names = [f"encoder.layers.{i}.attention.output.dense" for i in range(12)]
    ax = cka_heatmap(np.eye(12), names, names)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == [str(i) for i in range(12)]
    assert ax.get_xlabel() == "model B layer (encoder.layers.*.attention.output.dense)"
    assert len(ax.texts) == 144  # 12 x 12: still annotated


def test_shortening_is_configurable_and_keeps_labels_distinct():
    names = ["resnet.layer1.0.conv1", "resnet.layer1.0.conv2", "resnet.layer4.1.downsample.0"]
    for max_len in (6, 10, 40):
        short, _ = shorten_names(names, max_len)
        assert len(set(short)) == 3
        assert all(len(s) <= max_len for s in short) or max_len < 8
    ax = cka_heatmap(np.eye(3), names, names, names_max_len=40)
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert shorten_name("backbone.stage3.block12.mlp.fc2", 14) == "\u2026mlp.fc2"
    assert shorten_name("averyveryverylongname", 8) == "\u2026ongname"
    with pytest.raises(ValueError, match="max_len"):
        shorten_name("abc", 1)


def test_colour_scale_options():
    ax = cka_heatmap(np.array([[0.9, 0.95], [0.95, 1.0]]), vmin=0.9, vmax=1.0, cmap="viridis",
                     cbar_label="debiased CKA")
    image = ax.images[0]
    assert (image.norm.vmin, image.norm.vmax, image.cmap.name) == (0.9, 1.0, "viridis")
    assert ax.figure.axes[-1].get_ylabel() == "debiased CKA"
    with pytest.raises(ValueError, match="vmin must be below vmax"):
        cka_heatmap(np.eye(2), vmin=1.0, vmax=1.0)


def test_annotations_only_while_readable():
    assert len(cka_heatmap(np.eye(12)).texts) == 144
    assert len(cka_heatmap(np.eye(13)).texts) == 0
    assert len(cka_heatmap(np.eye(13), annotate=True).texts) == 169


def test_series_styles_are_pairwise_distinct():
    styles = [series_style(i) for i in range(7)]
    for key in ("color", "marker"):
        assert len({str(s[key]) for s in styles}) == 7
    assert len({str(s["linestyle"]) for s in styles}) == 7


def test_robustness_curve_series_distinct_and_legend_outside(tmp_path):
    curves = {"linear": [1, 0.6, 0.2], "rbf 1": [1, 0.9, 0.8], "rbf 0.5": [1, 0.9, 0.8]}
    ax = robustness_curve([1, 10, 50], curves, xlabel="translation magnitude c")
    lines = ax.get_lines()
    assert len({to_hex(line.get_color()) for line in lines}) == 3
    assert len({line.get_marker() for line in lines}) == 3
    assert len({str(line.get_linestyle()) for line in lines}) == 3
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == list(curves)
    ax.figure.canvas.draw()
    box, axes_box = legend.get_window_extent(), ax.get_window_extent()
    assert box.x0 >= axes_box.x1  # to the right of the curves, never over them
    width, _ = _png_size(ax.figure, tmp_path / "c.png")
    assert width >= 1000


def test_significance_heatmap_marks_only_significant_cells():
    import pyckafast
    from pyckafast.plot import cka_test_heatmap, significance_marks

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    r = pyckafast.cka_matrix_test([x, rng.normal(size=(60, 2))], [x ** 3, rng.normal(size=(60, 2))])
    ax = cka_test_heatmap(r, ["a", "b"], ["c", "d"])
    texts = [t.get_text() for t in ax.texts]
    marks = significance_marks(r.pvalue).ravel()
    assert texts[0].endswith("***")
    assert all(t.endswith(m) for t, m in zip(texts, marks))
    assert significance_marks([[0.049, 0.0099], [0.5, np.nan]]).tolist() == [["*", "**"], ["", ""]]


def test_null_distribution_and_influence_plots():
    import pyckafast
    from pyckafast.plot import _pearson3_density, influence_plot, null_distribution

    z = np.linspace(-6, 12, 20001)
    for skew in (0.0, 0.5, 1.5):  # a density of mean 0 and variance 1
        f = _pearson3_density(z, skew)
        dz = z[1] - z[0]
        assert np.sum(f) * dz == pytest.approx(1.0, abs=1e-3)
        assert np.sum(z * f) * dz == pytest.approx(0.0, abs=1e-3)
        assert np.sum(z * z * f) * dz == pytest.approx(1.0, abs=2e-3)
    x = np.random.default_rng(1).normal(size=(40, 2))
    r = pyckafast.cka_test(x, x + np.random.default_rng(2).normal(size=(40, 2)))
    ax = null_distribution(r, values=np.random.default_rng(3).normal(r.null_mean, 0.01, 100))
    assert ax.lines[-1].get_xdata()[0] == r.cka
    y = x.copy()
    y[9] += 15
    ax = influence_plot(pyckafast.cka_influence(x, y), top=2)
    assert [t.get_text() for t in ax.texts][0] == "9"
