"""pyckafast.compat.similarity.register against a minimal registry with similarity-repository's
register/make semantics (the real package cannot be installed here: docs/COMPAT.md)."""

from __future__ import annotations

import types

import numpy as np
import pytest

import pyckafast
from pyckafast.compat.similarity import register


def _fake_registry():
    """similarity-repository 0.0.1's registry in miniature: ``register`` refuses a taken id
    without ``override``; a measure registered with ``function=True`` is made into the function
    itself; a dict is stored as it is."""
    reg = types.SimpleNamespace(registry={})

    def register_(id, obj=None, function=False, interface=None, preprocessing=None,
                  postprocessing=None, override=False):
        assert override or id not in reg.registry, f"{id} already registered."
        if isinstance(obj, dict):
            reg.registry[id] = obj
        else:
            assert not function or callable(obj)
            reg.registry[id] = (lambda: obj) if function else obj

    def make(id, *args, **kwargs):
        obj = reg.registry[id]
        return obj if isinstance(obj, dict) else obj(*args, **kwargs)

    reg.register, reg.make = register_, make
    return reg


def test_measures_are_made_and_give_pyckafast_values():
    reg = _fake_registry()
    ids = register(reg)
    assert set(ids) == {"measure.pyckafast", "measure.pyckafast.cka",
                        "measure.pyckafast.cka-debiased", "measure.pyckafast.rbf-cka"}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = np.tanh(x @ rng.normal(size=(5, 3)))
    assert reg.make("measure.pyckafast.cka")(x, y) == pyckafast.linear_cka(x, y)
    assert reg.make("measure.pyckafast.cka-debiased")(x, y) == pyckafast.linear_cka(x, y, debiased=True)
    assert reg.make("measure.pyckafast.rbf-cka")(x, y) == pyckafast.rbf_cka(x, y)
    assert isinstance(reg.make("measure.pyckafast"), dict)
    x3 = x.reshape(6, 10, 5)  # (a, b, p) inputs are reshaped like the registry's reshape2d
    assert reg.make("measure.pyckafast.cka")(x3, x3 * 2) == pytest.approx(1.0, abs=1e-12)


def test_registering_twice_needs_override():
    reg = _fake_registry()
    register(reg)
    with pytest.raises(AssertionError, match="already registered"):
        register(reg)
    register(reg, override=True)


def test_default_registry_is_the_similarity_package():
    try:
        import similarity  # noqa: F401
    except ModuleNotFoundError:
        from pyckafast._core.optional import MissingDependency

        with pytest.raises(MissingDependency, match="similarity"):
            register()
    else:
        pytest.skip("similarity-repository is installed here; the fake registry covers it")
