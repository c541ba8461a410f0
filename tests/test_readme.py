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
    explicit = pyckafast.rbf_cka(a, b, sigma=(10.0, 60.0))
    assert 0.05 < explicit < 0.99
    assert abs(explicit - pyckafast.rbf_cka(a, b)) < 0.2
    for side, sigma in ((a, 10.0), (b, 60.0)):
        d = np.sqrt(((side[:200, None, :].astype(np.float64) - side[None, :200]) ** 2).sum(-1))
        assert 0.5 < sigma / np.median(d[np.triu_indices(200, 1)]) < 1.5
    with pytest.warns(RuntimeWarning, match="numerically the identity"):
        assert pyckafast.rbf_cka(a, b, sigma=(2.0, 0.5)) == pytest.approx(1.0, abs=1e-6)


def _bash_blocks(text: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^```bash\n(.*?)^```", text, re.S | re.M)]


def test_ci_runs_exactly_the_readme_test_command_and_the_cpu_variant_matches():
    text = README.read_text()
    commands = [c for c in _bash_blocks(text) if c.endswith("&& pytest")]
    plain = [c for c in commands if "--index-url" not in c]
    cpu = [c for c in commands if "download.pytorch.org/whl/cpu" in c]
    assert len(plain) == 1 and len(cpu) == 1
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    assert plain[0] in ci  # the same line, not a paraphrase
    # The CPU variant only puts the CPU wheel of the pinned torch first.
    head, tail = plain[0].split(" && pip install ", 1)
    pin = re.search(r'"torch==[0-9.]+"', plain[0]).group(0)
    assert cpu[0] == (f"{head} && pip install -q {pin} --index-url "
                      f"https://download.pytorch.org/whl/cpu && pip install {tail}")


def test_the_readme_names_every_extra_that_exists():
    import tomllib

    extras = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    text = README.read_text()
    for name in ("plot", "torch", "dask", "cli", "all", "cuda12", "cuda13", "test"):
        assert name in extras and f"[{name}]" in text, name
