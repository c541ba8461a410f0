"""Every ```python block of README.md runs as written, in order, in one shared namespace (as a
reader pasting them into one session would), in a scratch directory. A block whose optional
package is missing is skipped with the extra that brings it (and so are the blocks after it,
which may use its names)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, source) of every ```python block of ``text``."""
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in _BLOCK.finditer(text)]


def test_the_readme_has_python_blocks_and_the_parser_finds_them():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 8
    assert python_blocks("a\n```python\nx = 1\n```\n```bash\nls\n```\n") == [(3, "x = 1\n")]


def test_every_python_block_runs_in_order(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")  # the plotting blocks write PNGs, no display
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for line, source in python_blocks(README.read_text()):
        try:
            code = compile(source, f"README.md:{line}", "exec")
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)  # no example may warn
                exec(code, namespace)  # noqa: S102 - the README's own code
        except ModuleNotFoundError as exc:  # an optional extra, e.g. torch or distributed
            pytest.skip(f"README.md:{line} needs {exc.name} (an optional extra)")
        except Exception as exc:
            raise AssertionError(f"the README block at line {line} fails: "
                                 f"{type(exc).__name__}: {exc}") from exc
    assert (tmp_path / "fig4a.png").stat().st_size > 10_000
    assert (tmp_path / "run.npz").exists()


def test_the_readme_examples_mean_what_they_say():
    """Values the README states: the merged state equals the one-shot CKA, the explicit
    bandwidths are of the order of the distances (not the identity kernel's 1.0)."""
    import numpy as np

    import pyckafast

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 64)).astype(np.float32) + 1e3
    y = x @ rng.normal(size=(64, 32)).astype(np.float32) + 1.0
    a, b = x[:1000], y[:1000]
    explicit = pyckafast.rbf_cka(a, b, sigma=(10.0, 80.0))
    assert 0.05 < explicit < 0.99
    assert abs(explicit - pyckafast.rbf_cka(a, b)) < 0.2
    for side, sigma in ((a, 10.0), (b, 80.0)):
        d = np.sqrt(((side[:200, None, :].astype(np.float64) - side[None, :200]) ** 2).sum(-1))
        assert 0.5 < sigma / np.median(d[np.triu_indices(200, 1)]) < 1.5
    with pytest.warns(RuntimeWarning, match="numerically the identity"):
        assert pyckafast.rbf_cka(a, b, sigma=(2.0, 0.5)) == pytest.approx(1.0, abs=1e-6)
