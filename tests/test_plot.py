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
