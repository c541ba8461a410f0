"""Property tests (hypothesis): what CKA satisfies whatever the data, on every backend.

Properties, for linear and RBF CKA, biased and debiased, float64 and float32, on every CPU
backend (the ``target`` fixture) and on the emulated GPU engine (tests/gpu_emulation.py):

* agreement with the float64 n x n reference (tests/_reference.py) within the error bound below;
* bounds: biased CKA is in [0, 1] (HKH and HLH are positive semi-definite, and Cauchy-Schwarz);
  debiased CKA is in [-1, 1] (the unbiased HSIC is the inner product of U-centred matrices,
  Szekely & Rizzo 2014, so Cauchy-Schwarz bounds it; it can be negative);
* symmetry CKA(x, y) = CKA(y, x);
* invariance to an orthogonal transform, an isotropic scale, a translation and a permutation of
  the samples;
* chunking and merging: ``chunk_size``, RBF ``tile``, and LinearCKAState over any split of the
  samples merged in any order give the one-shot value;
* scale invariance from 1e-30 to 1e30 (float64, and float32, where all those values are normal).

Tolerances are forward error bounds of the computation in the input dtype, evaluated on the data
(``linear_bound``, ``rbf_bound``); nothing is tuned to the observed errors. With u the unit
roundoff of the dtype and gamma_m = m u / (1 - m u) the bound of a length-m dot product
(Higham, Accuracy and Stability, 3.1), m = n + p + 2 covers the GEMM of length n (chunks are
shorter), the rounding of the input itself (a transformed input is rounded once to the dtype) and
the rounded shift. Each property compares two computed values, so it allows twice the bound.

Translations are exact: the data are multiples of 2^-10 below 2^7 and the translations multiples
of 2^-10 below 2^12, so x + c is representable in float32 and the property sees only the
library's rounding, not the input's.

Hypothesis runs derandomized (``derandomize=True``, no example database), so CI sees the same
examples every run.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import pyckafast
import _reference as ref

# No shrinking: a failure is reported as drawn (shrinking an expected failure costs minutes).
PROPERTY = settings(max_examples=5, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
FEW = settings(PROPERTY, max_examples=3)

THRESHOLDS = (0.5, 1.0, 5.0)  # a narrow bandwidth (0.1) has its own test below
QUANTUM = 2.0 ** -10
U64 = np.finfo(np.float64).eps / 2

seeds = st.integers(0, 2 ** 32 - 1)
shapes = st.tuples(st.integers(8, 40), st.integers(1, 6), st.integers(1, 6))
kernels = st.sampled_from(("linear", *THRESHOLDS))
estimators = st.booleans()


# ---- data -------------------------------------------------------------------------------------

def make_data(seed: int, shape, kernel, dtype, mean: float = 0.0):
    """Correlated (x, y), multiples of 2^-10 (so exact translations exist), cast exactly to dtype."""
    n, p1, p2 = shape
    rng = np.random.default_rng(seed)
    gen = ref.correlated_linear if kernel == "linear" else ref.correlated_tanh
    x, y = gen(rng, n, p1, p2)
    x, y = (np.clip(np.round(a / QUANTUM), -2 ** 16, 2 ** 16) * QUANTUM + mean for a in (x, y))
    return x.astype(dtype), y.astype(dtype)


def cka(x, y, kernel, debiased, backend, **options) -> float:
    if kernel == "linear":
        return pyckafast.linear_cka(x, y, debiased=debiased, backend=backend, **options)
    return pyckafast.rbf_cka(x, y, threshold=kernel, debiased=debiased, backend=backend, **options)


def reference(x, y, kernel, debiased) -> float:
    if kernel == "linear":
        return ref.linear_cka_ref(x, y, debiased)
    return ref.rbf_cka_ref(x, y, threshold=kernel, debiased=debiased)


# ---- error bounds -----------------------------------------------------------------------------

def gamma(m: int, dtype) -> float:
    u = np.finfo(dtype).eps / 2
    return m * u / (1 - m * u)


def _self_norm2(k, debiased: bool) -> float:
    """|HKH|_F^2 (biased) or the U-centred n(n-3) HSIC_u(K, K) (debiased): the squared norm that
    divides the numerator of CKA."""
    n = len(k)
    return ref.hsic(k, k, debiased) * ((n - 1) ** 2 if not debiased else n * (n - 3))


def linear_bound(x, y, debiased: bool, dtype) -> float:
    """Forward error bound of linear CKA from dtype GEMMs (float64 accumulation).

    Every entry of X~'Y~ (and the row norms a_i, b_i) carries at most gamma_m |x_col| |y_col|,
    so each of the (at most three) terms of the numerator has an error below
    2 gamma_m S_x S_y with S = |X~|_F^2, and each denominator term below 2 gamma_m S^2. Divided by
    the exact denominator sqrt(D_x D_y) (D = the squared norm of the centred Gram):
    |dCKA| <= 6 gamma_m (S_x S_y / sqrt(D_x D_y) + |CKA| (S_x^2 / D_x + S_y^2 / D_y) / 2)
    (the debiased terms' factors n/(n-2) and 1/((n-1)(n-2)) keep 6 an upper bound for n >= 8,
    the smallest n drawn).
    """
    xc, yc = (ref.as_float64(a) - ref.as_float64(a).mean(0) for a in (x, y))
    n, p1, p2 = len(xc), xc.shape[1], yc.shape[1]
    g = gamma(n + p1 + p2 + 2, dtype)
    sx, sy = (xc * xc).sum(), (yc * yc).sum()
    dx, dy = _self_norm2(xc @ xc.T, debiased), _self_norm2(yc @ yc.T, debiased)
    value = abs(ref.linear_cka_ref(x, y, debiased))
    return 6 * g * (sx * sy / math.sqrt(dx * dy) + value * (sx * sx / dx + sy * sy / dy) / 2)


def _kernel_side(a, threshold: float, dtype):
    """(|dK|_F bound, K, K - c off the diagonal) for one side of an RBF CKA.

    Squared distances come from dtype GEMMs of centred rows: |dd_ij| <= gamma_(p+2)
    (|a_i| + |a_j|)^2; the median (so the bandwidth) moves by at most the largest of those
    relative to the median; exp adds 2 eps. dK_ij <= K_ij (g d_ij (dd_ij / d_ij + dmed / med)
    + 2 eps), g = 1 / (2 t^2 med), written without the division. The diagonal is exact (K_ii = 1).
    c is the mean off-diagonal entry: both estimators are unchanged by K -> K - c off the
    diagonal, and summing those small entries is what an accurate pass does.
    """
    a = ref.as_float64(a) - ref.as_float64(a).mean(0)
    d = ref.sq_distances(a)
    med = float(np.median(d))
    norms = np.sqrt((a * a).sum(1))
    dd = gamma(a.shape[1] + 2, dtype) * (norms[:, None] + norms[None, :]) ** 2
    np.fill_diagonal(dd, 0.0)
    g = 1 / (2 * threshold ** 2 * med)
    k = np.exp(-g * d)
    dk = k * (g * (dd + d * dd.max() / med) + 2 * np.finfo(dtype).eps)
    np.fill_diagonal(dk, 0.0)
    off = ~np.eye(len(k), dtype=bool)
    small = np.where(off, k - k[off].mean(), 0.0)
    return float(np.sqrt((dk * dk).sum())), k, small


def rbf_bound(x, y, threshold: float, debiased: bool, dtype) -> float:
    """Forward error bound of RBF CKA.

    CKA = <K~, L~> / (|K~| |L~|) with K~ = H K H (biased) or the U-centred K (debiased, norm
    N_K = sqrt(n(n-3) HSIC_u(K, K))). A perturbation D of K moves CKA by at most
    (1 + |CKA|) |D~| / N_K to first order (taken twice for the second order); the centring maps
    |D~| <= c |D|_F, c = 1 (H . H is a projection) or 1 + 3n/(n-2) (U-centring: the entry minus
    two row-mean terms and the grand mean). The float64 accumulation of the n^2 products of the
    small entries E = K - c_K, F = L - c_L adds c gamma64_(n^2) (sum |E F| + |E|^2 + |F|^2) /
    (N_K N_L), bounded that way because both estimators are invariant to the constant c.
    """
    (ek, k, e), (el, l, f) = _kernel_side(x, threshold, dtype), _kernel_side(y, threshold, dtype)
    n = len(k)
    nk, nl = math.sqrt(_self_norm2(k, debiased)), math.sqrt(_self_norm2(l, debiased))
    c = 1 + 3 * n / (n - 2) if debiased else 1
    value = abs(ref.cka_from_grams(k, l, debiased))
    sums = np.abs(e * f).sum() + (e * e).sum() + (f * f).sum()
    accumulate = c * gamma(n * n, np.float64) * sums / (nk * nl)
    return 2 * (1 + value) * c * (ek / nk + el / nl) + accumulate


def bound(x, y, kernel, debiased, dtype) -> float:
    if kernel == "linear":
        return linear_bound(x, y, debiased, dtype)
    return rbf_bound(x, y, kernel, debiased, dtype)


# ---- properties on every CPU backend ----------------------------------------------------------

@PROPERTY
@given(seed=seeds, shape=shapes, kernel=kernels, debiased=estimators,
       mean=st.sampled_from([0.0, 100.0, 4000.0]))
def test_reference_bounds_and_symmetry(target, dtype, seed, shape, kernel, debiased, mean):
    x, y = make_data(seed, shape, kernel, dtype, mean)
    tol = bound(x, y, kernel, debiased, dtype)
    value = cka(target.on(x), target.on(y), kernel, debiased, target.backend)
    assert abs(value - reference(x, y, kernel, debiased)) <= tol
    low = -1.0 if debiased else 0.0
    assert low - tol <= value <= 1.0 + tol
    swapped = cka(target.on(y), target.on(x), kernel, debiased, target.backend)
    assert abs(swapped - value) <= 2 * tol


def _orthogonal(rng, p: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(p, p)))
    return q * np.sign(np.diag(r))  # Haar-distributed


@PROPERTY
@given(seed=seeds, shape=shapes, kernel=kernels, debiased=estimators,
       scale=st.floats(1e-3, 1e3), shift=st.integers(-2 ** 22, 2 ** 22))
def test_invariances(target, dtype, seed, shape, kernel, debiased, scale, shift):
    x, y = make_data(seed, shape, kernel, dtype)
    tol = 2 * bound(x, y, kernel, debiased, dtype)
    rng = np.random.default_rng(seed)
    transformed = {
        "orthogonal": (x.astype(np.float64) @ _orthogonal(rng, x.shape[1])).astype(dtype),
        "isotropic scale": (x.astype(np.float64) * scale).astype(dtype),
        "translation": x + np.asarray(shift * QUANTUM, dtype),  # exact (see the module notes)
    }
    base = cka(target.on(x), target.on(y), kernel, debiased, target.backend)
    for name, tx in transformed.items():
        value = cka(target.on(tx), target.on(y), kernel, debiased, target.backend)
        assert abs(value - base) <= tol, name
    order = rng.permutation(len(x))
    permuted = cka(target.on(x[order]), target.on(y[order]), kernel, debiased, target.backend)
    assert abs(permuted - base) <= tol, "sample permutation"


@PROPERTY
@given(seed=seeds, shape=shapes, debiased=estimators, data=st.data())
def test_chunk_size_and_rbf_tile_do_not_matter(target, dtype, seed, shape, debiased, data):
    n = shape[0]
    size = data.draw(st.integers(1, n), label="chunk_size / tile")
    for kernel, option in (("linear", "chunk_size"), (1.0, "tile")):
        x, y = make_data(seed, shape, kernel, dtype, mean=100.0)
        one_shot = cka(target.on(x), target.on(y), kernel, debiased, target.backend)
        chunked = cka(target.on(x), target.on(y), kernel, debiased, target.backend,
                      **{option: size})
        assert abs(chunked - one_shot) <= 2 * bound(x, y, kernel, debiased, dtype), option


@PROPERTY
@given(seed=seeds, shape=shapes, data=st.data())
def test_streams_split_and_merged_in_any_order(target, dtype, seed, shape, data):
    """Batches of any sizes (down to one row) in any order, some added in place and some in
    their own states merged in any order, give the one-shot CKA (data at mean 1e3, so every
    batch's shift and the exact reshift of the merge matter)."""
    x, y = make_data(seed, shape, "linear", dtype, mean=1000.0)
    n = len(x)
    cuts = sorted(data.draw(st.sets(st.integers(1, n - 1), max_size=5), label="cuts"))
    parts = [(x[lo:hi], y[lo:hi]) for lo, hi in zip([0, *cuts], [*cuts, n])]
    order = data.draw(st.permutations(range(len(parts))), label="batch order")
    own_state = data.draw(st.lists(st.booleans(), min_size=len(parts), max_size=len(parts)),
                          label="batch in its own state")
    state = pyckafast.LinearCKAState(backend=target.backend)
    others = []
    for i in order:
        xb, yb = parts[i]
        if own_state[i]:
            others.append(pyckafast.LinearCKAState(backend=target.backend).update(
                target.on(xb), target.on(yb)))
        else:
            state.update(target.on(xb), target.on(yb))
    for other in data.draw(st.permutations(others), label="merge order"):
        state.merge(other)
    assert state.n == n
    for debiased in (False, True):
        one_shot = cka(target.on(x), target.on(y), "linear", debiased, target.backend)
        tol = 2 * linear_bound(x, y, debiased, dtype)
        assert abs(state.result(debiased=debiased) - one_shot) <= tol


@FEW
@given(seed=seeds, shape=shapes, debiased=estimators, data=st.data())
@pytest.mark.parametrize("kernel", ["linear", 1.0])
def test_scale_invariance_from_1e_minus_30_to_1e30(target, dtype, seed, shape, debiased,
                                                   data, kernel):
    x, y = make_data(seed, shape, kernel, dtype, mean=3.0)
    base = cka(target.on(x), target.on(y), kernel, debiased, target.backend)
    tol = 2 * bound(x, y, kernel, debiased, dtype)
    for exponent in (-30, -20, 20, 30):  # the ends and inner points of the range, always tried
        mantissa = data.draw(st.floats(1.0, 9.99), label=f"mantissa of 1e{exponent}")
        s = mantissa * 10.0 ** exponent
        sx, sy = (x.astype(np.float64) * s).astype(dtype), (y.astype(np.float64) * s).astype(dtype)
        value = cka(target.on(sx), target.on(sy), kernel, debiased, target.backend)
        assert abs(value - base) <= tol, f"scale {s:g}"


# ---- float32 beside a large mean, and torch half tensors (issue 22) -----------------------------

@FEW
@given(seed=seeds, shape=shapes, debiased=estimators,
       log_ratio=st.floats(0.0, 6.0), std=st.sampled_from([1e-3, 1.0, 1e3]))
def test_float32_with_a_mean_up_to_1e6_times_its_spread(target, seed, shape, debiased,
                                                        log_ratio, std):
    """float32 data with mean / std up to 1e6 (a few dozen distinct values per column at the
    top) are a layer with variance, on every route: the float64 CKA of the same float32 values,
    within the bound, and never nan with a "zero variance" warning."""
    n, p1, p2 = shape
    rng = np.random.default_rng(seed)
    x0, y0 = ref.correlated_linear(rng, n, p1, p2)
    y = y0.astype(np.float32)
    for ratio in (10.0 ** log_ratio, 1e6):  # the drawn ratio, and always the largest
        x = (x0 * std + std * ratio).astype(np.float32)
        tol = 2 * linear_bound(x, y, debiased, np.float32)
        want = ref.linear_cka_ref(x, y, debiased)
        state = pyckafast.LinearCKAState(backend=target.backend)
        for part in np.array_split(np.arange(n), 3):
            state.update(target.on(x[part]), target.on(y[part]))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = {"linear_cka": pyckafast.linear_cka(target.on(x), target.on(y),
                                                      debiased=debiased, backend=target.backend),
                   "LinearCKAState": state.result(debiased=debiased),
                   "CKAMapState": pyckafast.CKAMapState(backend=target.backend).update(
                       [target.on(x), target.on(y)]).result(debiased=debiased)[0, 1]}
        for name, value in got.items():
            assert abs(value - want) <= tol, (name, ratio, value, want, tol)


@FEW
@given(seed=seeds, shape=shapes, kernel=st.sampled_from(["linear", 1.0]), debiased=estimators,
       half=st.sampled_from(["bfloat16", "float16"]), mean=st.sampled_from([0.0, 100.0]))
def test_torch_half_tensors_give_their_float32_value(seed, shape, kernel, debiased, half, mean):
    """bfloat16 / float16 tensors are computed as their float32 values (NumPy has no bfloat16)."""
    torch = pytest.importorskip("torch")
    x, y = make_data(seed, shape, kernel, np.float32, mean)
    tx, ty = (torch.from_numpy(a).to(getattr(torch, half)) for a in (x, y))
    value = cka(tx, ty, kernel, debiased, "auto")
    assert value == pytest.approx(cka(tx.float(), ty.float(), kernel, debiased, "auto"),
                                  rel=1e-12, abs=1e-15)
    xf, yf = tx.float().numpy(), ty.float().numpy()
    assert abs(value - reference(xf, yf, kernel, debiased)) <= bound(xf, yf, kernel, debiased,
                                                                     np.float32)


# ---- narrow RBF bandwidths (issue 12: entries 2^m K - c) -------------------------------

@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
def test_narrow_bandwidth_matches_the_reference(target, dtype, debiased):
    """Threshold 0.1 (kernels close to the identity), fixed seeds. The bound is that of an
    accurate pass (sums of 2^m K - c, c near the typical entry), which every backend and dtype
    meets."""
    for seed in (0, 1):
        x, y = make_data(seed, (200, 16, 8), 0.1, dtype)
        value = cka(target.on(x), target.on(y), 0.1, debiased, target.backend)
        expected = reference(x, y, 0.1, debiased)
        assert abs(value - expected) <= rbf_bound(x, y, 0.1, debiased, dtype), f"seed {seed}"


# ---- the GPU producers on the emulated engine -------------------------------------------------

@pytest.fixture
def emulated_cuda(monkeypatch):
    """``backend="cuda"`` runs the real GPU drivers on tests/gpu_emulation.py's engine (its
    kernels are the C++ host twins of the CUDA kernels)."""
    pytest.importorskip("pyckafast._twins", reason="the emulated engine runs the C++ host twins")
    from gpu_emulation import install_emulated_cuda

    return install_emulated_cuda(monkeypatch).engine


@FEW
@given(seed=seeds, shape=shapes, kernel=st.sampled_from(["linear", 1.0]), debiased=estimators,
       data=st.data())
def test_emulated_gpu_agrees_and_ignores_chunking(emulated_cuda, dtype, seed, shape, kernel,
                                                  debiased, data):
    x, y = make_data(seed, shape, kernel, dtype, mean=100.0)
    tol = bound(x, y, kernel, debiased, dtype)
    value = cka(x, y, kernel, debiased, "cuda")
    assert abs(value - reference(x, y, kernel, debiased)) <= tol
    size = data.draw(st.integers(1, shape[0]), label="chunk_size / tile")
    option = "chunk_size" if kernel == "linear" else "tile"
    assert abs(cka(x, y, kernel, debiased, "cuda", **{option: size}) - value) <= 2 * tol
    order = np.random.default_rng(seed).permutation(shape[0])
    assert abs(cka(x[order], y[order], kernel, debiased, "cuda") - value) <= 2 * tol
    assert emulated_cuda.calls.get("moments" if kernel == "linear" else "rbf_pair", 0) > 0
