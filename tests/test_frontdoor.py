"""The front door of every public function: parameter specs and their one message template,
inputs prepared once (errors name the argument and the row), and the dispatch of Dask inputs."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import pyckafast
import pyckafast.dask
import pyckafast.torch
from pyckafast._core.params import InvalidParameterError

_X = np.random.default_rng(0).normal(size=(40, 3))
_Y = np.tanh(_X[:, :2])


def _public_calls():
    """(owner shown in messages, the decorated function, a call with valid data and ``**kw``)."""
    x, y = _X, _Y
    return [
        ("linear_cka", pyckafast.linear_cka, lambda **kw: pyckafast.linear_cka(x, y, **kw)),
        ("linear_hsic", pyckafast.linear_hsic, lambda **kw: pyckafast.linear_hsic(x, y, **kw)),
        ("rbf_cka", pyckafast.rbf_cka, lambda **kw: pyckafast.rbf_cka(x, y, **kw)),
        ("rbf_hsic", pyckafast.rbf_hsic, lambda **kw: pyckafast.rbf_hsic(x, y, **kw)),
        ("cka", pyckafast.cka, lambda **kw: pyckafast.cka(x, y, **kw)),
        ("hsic", pyckafast.hsic, lambda **kw: pyckafast.hsic(x, y, **kw)),
        ("cka_matrix", pyckafast.cka_matrix, lambda **kw: pyckafast.cka_matrix([x, y], **kw)),
        ("minibatch_cka", pyckafast.minibatch_cka,
         lambda **kw: pyckafast.minibatch_cka(x, y, **{"batch_size": 10, **kw})),
        ("LinearCKAState", pyckafast.LinearCKAState.__init__,
         lambda **kw: pyckafast.LinearCKAState(**kw)),
        # the spec is checked before the files are opened
        ("stream_npy", pyckafast.stream_npy,
         lambda **kw: pyckafast.stream_npy("missing_x.npy", "missing_y.npy", **kw)),
        ("pyckafast.dask.linear_cka", pyckafast.dask.linear_cka,
         lambda **kw: pyckafast.dask.linear_cka(x, y, **kw)),
        ("pyckafast.dask.linear_terms", pyckafast.dask.linear_terms,
         lambda **kw: pyckafast.dask.linear_terms(x, y, **kw)),
        ("pyckafast.dask.rbf_cka", pyckafast.dask.rbf_cka,
         lambda **kw: pyckafast.dask.rbf_cka(x, y, **kw)),
        # checked before torch is imported or a model runs
        ("compare_models", pyckafast.torch.compare_models,
         lambda **kw: pyckafast.torch.compare_models(None, None, [], ["0"], **kw)),
    ]


# Candidates for invalid values: each parameter gets those that satisfy none of its constraints.
_CANDIDATES = [True, False, 7.0, 0, -1, 1.5, "yes", None, math.nan, math.inf, (1.0,),
               (1.0, -2.0), object()]


def _invalid_cases():
    cases = []
    for owner, fn, call in _public_calls():
        for param, constraints in fn.parameter_spec.items():
            bad = [v for v in _CANDIDATES if not any(c.is_satisfied_by(v) for c in constraints)]
            assert bad, f"no invalid candidate for {owner}({param}=...)"
            cases += [pytest.param(owner, call, param, v, id=f"{owner}-{param}-{v!r}")
                      for v in bad]
    return cases


@pytest.mark.parametrize("owner, call, param, value", _invalid_cases())
def test_every_invalid_value_raises_the_template(owner, call, param, value):
    pattern = (rf"^The '{param}' parameter of {re.escape(owner)} must be .+\. "
               rf"Got .+ \({type(value).__name__}\) instead\.$")
    with pytest.raises(InvalidParameterError, match=pattern):
        call(**{param: value})


def test_every_public_function_has_a_spec():
    owners = {owner for owner, fn, _ in _public_calls() if getattr(fn, "parameter_spec", None)}
    assert owners == {owner for owner, _, _ in _public_calls()}
    assert pyckafast.linear_cka.parameter_owner == "linear_cka"


def test_the_template_exactly():
    with pytest.raises(InvalidParameterError) as info:
        pyckafast.linear_cka(_X, _Y, chunk_size=True)
    assert str(info.value) == ("The 'chunk_size' parameter of linear_cka must be a positive "
                               "integer or None. Got True (bool) instead.")
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


@pytest.mark.parametrize("call", [
    lambda: pyckafast.linear_cka(_X, _Y, chunk_size=7.0),
    lambda: pyckafast.rbf_cka(_X, _Y, tile=True),
    lambda: pyckafast.rbf_cka(_X, _Y, threshold=True),
    lambda: pyckafast.linear_cka(_X, _Y, debiased="yes"),
    lambda: pyckafast.minibatch_cka(_X, _Y, 10.0),
], ids=["float-int", "bool-tile", "bool-threshold", "str-bool", "float-batch"])
def test_bools_and_integral_floats_are_not_ints(call):
    with pytest.raises(InvalidParameterError):
        call()


@pytest.mark.parametrize("backend", ["numpy", "cpp", "cuda"])
def test_chunk_size_true_is_the_same_error_on_every_device(backend):
    """Before the front door: a bare TypeError on the CPU, a different message on the GPU."""
    with pytest.raises(InvalidParameterError, match="^The 'chunk_size' parameter of linear_cka"):
        pyckafast.linear_cka(_X, _Y, chunk_size=True, backend=backend)


def test_form_is_checked_on_the_gpu_path():
    """The GPU path used to return before ``form`` was looked at."""
    with pytest.raises(InvalidParameterError, match="^The 'form' parameter of linear_cka"):
        pyckafast.linear_cka(_X, _Y, form="gram", backend="cuda")


def _with_nan(a, row, col=1):
    a = a.copy()
    a[row, col] = np.nan
    return a


@pytest.mark.parametrize("kwargs", [{}, {"bandwidth": "offdiag"}, {"sigma": 1.0}])
def test_rbf_names_the_argument_and_row_of_a_nan(kwargs):
    with pytest.raises(ValueError, match=r"^x must contain only finite values; .* in row 17, column 1 \(NaN\)\.$"):
        pyckafast.rbf_cka(_with_nan(_X, 17), _Y, **kwargs)
    with pytest.raises(ValueError, match=r"^y must contain only finite values; .* in row 3, column \d \(NaN\)\.$"):
        pyckafast.rbf_hsic(_X, _with_nan(_Y, 3, 0), **kwargs)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_cka_matrix_names_the_representation_and_row_of_a_nan(kernel):
    with pytest.raises(ValueError, match=r"^xs\[1\] must contain only finite values; .* row 30, column 1 \(NaN\)\."):
        pyckafast.cka_matrix([_X, _with_nan(_Y, 30)], kernel=kernel)
    with pytest.raises(ValueError, match=r"^ys\[0\] must contain only finite values"):
        pyckafast.cka_matrix([_X], [_with_nan(_Y, 2)], kernel=kernel)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_minibatch_names_the_argument_and_global_row_of_a_nan(kernel):
    with pytest.raises(ValueError, match=r"^x must contain only finite values; .* in row 37, column 1 \(NaN\)\.$"):
        pyckafast.minibatch_cka(_with_nan(_X, 37), _Y, 10, kernel=kernel)


def test_the_minimum_n_is_checked_before_any_pass_over_pairs(monkeypatch):
    from pyckafast._core import bandwidth

    def no_pass(*args, **kwargs):
        raise AssertionError("a bandwidth pass ran before n was checked")

    monkeypatch.setattr(bandwidth, "median_sq_distance", no_pass)
    with pytest.raises(ValueError, match="at least 4 samples"):
        pyckafast.rbf_cka(_X[:3], _Y[:3], debiased=True)


def test_cka_matrix_input_errors_name_the_list_entries():
    with pytest.raises(TypeError, match=r"xs must be a non-empty list"):
        pyckafast.cka_matrix(_X)
    with pytest.raises(ValueError, match=r"xs\[0\] and xs\[1\] must have the same number"):
        pyckafast.cka_matrix([_X, _Y[:-1]])


# ---- Dask arrays through the top-level functions: the Dask producers, lazily ------------------
def _lazy_cases():
    return {
        "linear_cka": (pyckafast.linear_cka, {"debiased": True}),
        "linear_hsic": (pyckafast.linear_hsic, {}),
        "rbf_cka": (pyckafast.rbf_cka, {}),
        "rbf_hsic-sampled": (pyckafast.rbf_hsic, {"bandwidth": "sampled", "n_pairs": 500}),
        "cka-rbf-sigma": (pyckafast.cka, {"kernel": "rbf", "sigma": 1.5}),
    }


@pytest.mark.parametrize("case", list(_lazy_cases()))
@pytest.mark.parametrize("y_is_dask", [True, False], ids=["both-dask", "dask-and-numpy"])
def test_dask_inputs_stay_lazy_until_the_reduction(case, y_is_dask, monkeypatch):
    da = pytest.importorskip("dask.array")
    import dask
    from dask.local import get_sync

    fn, kwargs = _lazy_cases()[case]
    rng = np.random.default_rng(5)
    x = rng.normal(size=(130, 5))
    y = np.sin(x[:, :3]) + 0.2 * rng.normal(size=(130, 3))
    want = fn(x, y, **kwargs)

    graphs = []

    def counting_scheduler(dsk, keys, **options):
        graphs.append(keys)
        return get_sync(dsk, keys, **options)

    def no_asarray(self, *args, **kw):
        raise AssertionError("the Dask array was pulled into memory by np.asarray")

    monkeypatch.setattr(da.Array, "__array__", no_asarray)
    dx = da.from_array(x, chunks=40)
    dy = da.from_array(y, chunks=55) if y_is_dask else y
    with dask.config.set(scheduler=counting_scheduler):
        got = fn(dx, dy, **kwargs)
    assert graphs, "no Dask reduction ran"
    assert got == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_dask_nan_is_named_with_its_global_row():
    da = pytest.importorskip("dask.array")
    import dask

    x = _with_nan(np.vstack([_X, _X]), 57)
    with dask.config.set(scheduler="synchronous"), pytest.raises(
            ValueError, match=r"^x must contain only finite values; found NaN or Inf in row 57, column 1 \(NaN\)\.$"):
        pyckafast.linear_cka(da.from_array(x, chunks=50), np.vstack([_Y, _Y]))  # chunk [50, 80)


def test_streaming_state_takes_dask_batches():
    da = pytest.importorskip("dask.array")
    import dask

    state = pyckafast.LinearCKAState()
    with dask.config.set(scheduler="synchronous"):
        state.update(da.from_array(_X[:25], chunks=10), da.from_array(_Y[:25], chunks=10))
    state.update(_X[25:], _Y[25:])
    assert state.result(debiased=True) == pytest.approx(
        pyckafast.linear_cka(_X, _Y, debiased=True), rel=1e-12)


# ---- rules between arguments: ignored or contradictory options, in the same template ----------
_NON_DEFAULT = {"threshold": 0.5, "bandwidth": "offdiag", "n_pairs": 500, "seed": 3,
                "chunk_size": 10, "form": "features", "precision": "tf32", "sigma": 1.0,
                "tile": 16}
# Values the conditions of the rules read, to find a call where a rule applies.
_SETTINGS = {"sigma": [None, 1.0], "bandwidth": ["kornblith", "sampled"],
             "kernel": ["linear", "rbf"]}


def _rule_cases():
    """For every rule of every public function: a call where that rule is the first broken."""
    import inspect
    import itertools

    cases = []
    for owner, fn, call in _public_calls():
        defaults = {n: p.default for n, p in inspect.signature(fn).parameters.items()}
        rules = getattr(fn, "parameter_rules", ())
        read = [n for n in _SETTINGS if n in defaults]
        for rule in rules:
            for combo in itertools.product(*(_SETTINGS[n] for n in read)):
                kwargs = {n: v for n, v in zip(read, combo) if v != defaults[n]}
                kwargs[rule.param] = _NON_DEFAULT[rule.param]
                values = {**defaults, **kwargs}
                broken = [r for r in rules if r.violation(values, defaults) is not None]
                if broken and broken[0] is rule:
                    cases.append(pytest.param(owner, call, rule.param, kwargs,
                                              id=f"{owner}-{rule.param}-{sorted(kwargs)}"))
                    break
            else:
                raise AssertionError(f"no call of {owner} breaks the rule on {rule.param} first")
    return cases


@pytest.mark.parametrize("owner, call, param, kwargs", _rule_cases())
def test_every_ignored_or_contradictory_argument_raises_the_template(owner, call, param, kwargs):
    pattern = (rf"^The '{param}' parameter of {re.escape(owner)} must be left at its default .+ "
               rf"when .+\. Got .+ instead\.$")
    with pytest.raises(InvalidParameterError, match=pattern):
        call(**kwargs)


def test_the_rules_cover_the_issue_cases():
    owners = {owner: fn for owner, fn, _ in _public_calls()}
    ruled = {(owner, rule.param) for owner, fn in owners.items()
             for rule in getattr(fn, "parameter_rules", ())}
    for owner in ("rbf_cka", "rbf_hsic", "cka", "hsic", "pyckafast.dask.rbf_cka"):
        assert {(owner, p) for p in ("threshold", "bandwidth", "n_pairs", "seed")} <= ruled
    assert {("cka", "sigma"), ("cka", "chunk_size"), ("hsic", "form")} <= ruled


def test_the_rule_message_exactly():
    with pytest.raises(InvalidParameterError) as info:
        pyckafast.rbf_cka(_X, _Y, sigma=(2.0, 0.5), threshold=0.5)
    assert str(info.value) == (
        "The 'threshold' parameter of rbf_cka must be left at its default 1.0 when 'sigma' is "
        "given (sigma sets the bandwidth; threshold scales a median). Got 0.5 (float) instead.")
    with pytest.raises(InvalidParameterError, match="'n_pairs' parameter of rbf_cka .* "
                                                    "bandwidth='sampled' is not set"):
        pyckafast.rbf_cka(_X, _Y, n_pairs=1000)
    with pytest.raises(InvalidParameterError, match="'seed' parameter of rbf_hsic"):
        pyckafast.rbf_hsic(_X, _Y, bandwidth="offdiag", seed=1)
    with pytest.raises(InvalidParameterError, match="'sigma' parameter of cka .* kernel='linear'"):
        pyckafast.cka(_X, _Y, sigma=1.0)
    with pytest.raises(InvalidParameterError, match="'chunk_size' parameter of hsic .* kernel='rbf'"):
        pyckafast.hsic(_X, _Y, kernel="rbf", chunk_size=8)


def test_defaults_given_explicitly_and_meaningful_combinations_pass():
    want = pyckafast.rbf_cka(_X, _Y, sigma=1.5)
    assert pyckafast.rbf_cka(_X, _Y, sigma=1.5, threshold=1.0, bandwidth="kornblith") == want
    assert pyckafast.cka(_X, _Y, kernel="rbf", sigma=1.5, seed=0) == want
    sampled = pyckafast.rbf_cka(_X, _Y, bandwidth="sampled", n_pairs=300, seed=2, threshold=0.7)
    assert 0.0 < sampled < 1.0
    assert pyckafast.cka(_X, _Y, chunk_size=8, form="features") == pytest.approx(
        pyckafast.linear_cka(_X, _Y), rel=1e-12)
    assert pyckafast.hsic(_X, _Y, kernel="rbf", debiased=True, tile=16) == pytest.approx(
        pyckafast.rbf_hsic(_X, _Y, debiased=True), rel=1e-12)


def test_cka_and_hsic_have_explicit_keywords():
    import inspect

    for fn in (pyckafast.cka, pyckafast.hsic):
        kinds = {p.kind for p in inspect.signature(fn).parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds
        with pytest.raises(TypeError, match="unexpected keyword"):
            fn(_X, _Y, chunksize=10)


def test_seed_none_means_not_given():
    """issue 12: ``seed=None`` raised when the seed was unused. None is numpy's "no seed": no
    contradiction with a rule that does not sample, and fresh pairs with the sampled median."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 4))
    y = np.tanh(x)
    assert pyckafast.rbf_cka(x, y, seed=None) == pyckafast.rbf_cka(x, y)
    assert pyckafast.rbf_cka(x, y, sigma=2.0, seed=None) == pyckafast.rbf_cka(x, y, sigma=2.0)
    sampled = pyckafast.rbf_cka(x, y, bandwidth="sampled", n_pairs=2000, seed=None)
    assert 0.0 < sampled <= 1.0
    with pytest.raises(pyckafast._core.params.InvalidParameterError, match="'seed'"):
        pyckafast.rbf_cka(x, y, seed=1)  # a real seed the median rule would ignore
