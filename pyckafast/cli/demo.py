"""``pyckafast demo``: exact CKA of 10^6 float32 samples beside the code people use today.

Four comparisons on generated ReLU-like float32 activations (mean 1e3, spread about 1):

1. full-sample linear CKA: pyckafast (one pass) against Kornblith et al.'s
   ``feature_space_linear_cka`` as users copy it from the reference colab, on float64 copies and
   on the float32 data as given (time and value), and against the naive n x n Gram method on a
   subsample (with its O(n^2) extrapolation);
2. the uncentred one-pass float32 formula ``X'Y - n mu nu'`` (what not to do);
3. minibatch CKA (Nguyen et al. 2021) as the popular torch libraries compute it (torch_cka 0.21's
   ``CKA._HSIC``, pytorch-cka's ``hsic``: Song et al.'s unbiased HSIC of the *uncentred* Grams
   K = XX', L = YY' in float32), written out in NumPy here, against the exact value of the same
   estimator (:func:`pyckafast.minibatch_cka`).

Only the core dependencies (NumPy, Numba) are used: no torch, no peer library is imported.
"""

from __future__ import annotations


import numpy as np

from .bench import _positive, _timed
from .._core import dispatch
from ..linear import linear_cka
from ..minibatch import minibatch_cka

__all__ = ["add_demo_parser", "run_demo", "demo_data", "kornblith_feature_space_linear_cka",
           "naive_gram_cka", "raw_float32_cka", "uncentred_float32_minibatch_cka"]

# ReLU-like activations: a mean far larger than the spread, what float32 shortcuts get wrong.
DEMO_OFFSET = 1e3


def add_demo_parser(sub) -> None:
    """Register ``pyckafast demo`` on the CLI's subparsers (``cli.build_parser`` calls this)."""
    p = sub.add_parser("demo", help="exact CKA of 10^6 float32 samples beside Kornblith's code, "
                                     "the n x n method and the float32 minibatch formula")
    p.add_argument("--n", type=int, default=1_000_000, help="samples (default 1e6)")
    p.add_argument("--p", type=int, default=64, help="features per representation (default 64)")
    p.add_argument("--naive-n", type=int, default=3000,
                   help="subsample on which the naive n x n Gram method is timed (default 3000)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="minibatch CKA: samples per batch (default 256)")
    p.add_argument("--batches", type=int, default=32,
                   help="minibatch CKA: batches, taken from the first rows (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data (default 0)")
    p.set_defaults(handler=run_demo)


def demo_data(n: int, p: int, seed: int = 0, offset: float = DEMO_OFFSET):
    """Two correlated float32 representations (n, p): x = z + offset and
    y = relu(z W) + noise / 2 + offset, z standard normal, generated in chunks."""
    rng = np.random.default_rng(seed)
    mix = (rng.normal(size=(p, p)) / np.sqrt(p)).astype(np.float32)
    x, y = np.empty((n, p), np.float32), np.empty((n, p), np.float32)
    for lo in range(0, n, 1 << 16):
        hi = min(lo + (1 << 16), n)
        z = rng.standard_normal((hi - lo, p), dtype=np.float32)
        x[lo:hi] = z + np.float32(offset)
        noise = rng.standard_normal((hi - lo, p), dtype=np.float32)
        y[lo:hi] = np.maximum(z @ mix, 0) + 0.5 * noise + np.float32(offset)
    return x, y


def kornblith_feature_space_linear_cka(features_x, features_y):
    """Kornblith et al. (2019)'s reference ``feature_space_linear_cka`` (debiased=False), as
    users copy it from the colab: centre, three GEMMs in the input dtype, Frobenius norms."""
    features_x = features_x - np.mean(features_x, 0, keepdims=True)
    features_y = features_y - np.mean(features_y, 0, keepdims=True)

    dot_product_similarity = np.linalg.norm(features_x.T.dot(features_y)) ** 2
    normalization_x = np.linalg.norm(features_x.T.dot(features_x))
    normalization_y = np.linalg.norm(features_y.T.dot(features_y))
    return float(dot_product_similarity / (normalization_x * normalization_y))


def naive_gram_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Textbook CKA through two centred n x n float64 Gram matrices (Kornblith's colab)."""
    from ..compat.kornblith import center_gram

    k = center_gram(x.astype(np.float64) @ x.T.astype(np.float64))
    l = center_gram(y.astype(np.float64) @ y.T.astype(np.float64))
    return float(np.vdot(k, l) / (np.linalg.norm(k) * np.linalg.norm(l)))


def raw_float32_cka(x: np.ndarray, y: np.ndarray) -> float:
    """The one-pass formula ``X'Y - n mu nu'`` on raw float32 data, unshifted (what not to do)."""
    n = np.float32(x.shape[0])
    mx, my = x.mean(axis=0), y.mean(axis=0)

    def cov(a, ma, b, mb):
        return a.T @ b - n * np.outer(ma, mb)

    with np.errstate(over="ignore", invalid="ignore"):  # its overflow is part of the lesson
        cxy, cxx, cyy = cov(x, mx, y, my), cov(x, mx, x, mx), cov(y, my, y, my)
        return float(np.sum(cxy * cxy) / np.sqrt(np.sum(cxx * cxx) * np.sum(cyy * cyy)))


def _uncentred_hsic_float32(k: np.ndarray, l: np.ndarray) -> np.float32:
    """torch_cka 0.21 ``CKA._HSIC`` / pytorch-cka ``hsic`` in float32: Song et al.'s unbiased
    HSIC of Grams with zeroed diagonals, straight from the uncentred Grams (trace(KL) written as
    the elementwise sum, L being symmetric, instead of an n^3 matmul)."""
    n = k.shape[0]
    ones = np.ones((n, 1), np.float32)
    result = np.sum(k * l, dtype=np.float32)
    result += (ones.T @ k @ ones @ ones.T @ l @ ones).item() / ((n - 1) * (n - 2))
    result -= (ones.T @ k @ l @ ones).item() * 2 / (n - 2)
    return np.float32(result / (n * (n - 3)))


def uncentred_float32_minibatch_cka(x: np.ndarray, y: np.ndarray,
                                    batch_size: int) -> tuple[float, np.ndarray]:
    """Minibatch CKA (Nguyen et al. 2021) the way torch_cka and pytorch-cka compute it: per batch
    K = XX', L = YY' in float32 with zeroed diagonals, unbiased HSICs summed over the batches,
    then normalised. Consecutive batches, the remainder left out (as ``minibatch_cka(seed=None)``).
    Returns the CKA (nan when a summed self-HSIC came out negative) and the three HSIC sums."""
    sums = np.zeros(3, np.float32)
    for lo in range(0, len(x) - batch_size + 1, batch_size):
        xb, yb = x[lo:lo + batch_size], y[lo:lo + batch_size]
        k, l = xb @ xb.T, yb @ yb.T
        np.fill_diagonal(k, 0)
        np.fill_diagonal(l, 0)
        sums += [_uncentred_hsic_float32(k, l), _uncentred_hsic_float32(k, k),
                 _uncentred_hsic_float32(l, l)]
    with np.errstate(invalid="ignore"):  # a negative self-HSIC: sqrt gives nan, as in torch
        return float(sums[0] / (np.sqrt(sums[1]) * np.sqrt(sums[2]))), sums


def run_demo(args) -> int:
    """Run the demo with the parsed ``args``; print the comparisons; return 0."""
    n, p = _positive(args.n, "--n"), _positive(args.p, "--p")
    m, b = _positive(args.naive_n, "--naive-n"), _positive(args.batch_size, "--batch-size")
    batches = _positive(args.batches, "--batches")
    x, y = demo_data(n, p, args.seed)
    print(f"pyckafast demo: linear CKA of two correlated float32 representations, n = {n:,}, "
          f"p = {p}, ReLU-like: mean offset {DEMO_OFFSET:g}, spread about 1")
    _full_sample(x, y, min(m, n))
    _minibatch(x, y, b, batches)
    return 0


def _full_sample(x: np.ndarray, y: np.ndarray, m: int) -> None:
    n, p = x.shape
    backend = dispatch.resolve("auto", "linear_moments", "cpu").__name__.rsplit("._", 1)[-1]
    print("\nFull-sample CKA (Kornblith et al. 2019); |diff| against Kornblith's code in float64:")
    exact, t_exact = _timed(linear_cka, x, y)
    ref64, t_ref64 = _timed(kornblith_feature_space_linear_cka, x.astype(np.float64),
                            y.astype(np.float64))
    _row(f"pyckafast.linear_cka (one pass, {backend})", exact,
         f"|diff| {abs(exact - ref64):.1e}  {t_exact:6.2f} s, state {8 * 3 * p * p / 1e6:.2f} MB")
    _row("Kornblith feature_space_linear_cka, float64", ref64,
         f"(reference)    {t_ref64:6.2f} s, {_bytes(4 * 8 * n * p)} of float64 copies")
    k32, t_k32 = _timed(kornblith_feature_space_linear_cka, x, y)
    _row("Kornblith feature_space_linear_cka, float32", k32,
         f"|diff| {abs(k32 - ref64):.1e}  {t_k32:6.2f} s, {_bytes(2 * 4 * n * p)} of centred copies")
    naive, t_naive = _timed(naive_gram_cka, x[:m], y[:m])
    same = linear_cka(x[:m], y[:m])
    _row(f"naive n x n Grams on the first {m:,} samples", naive,
         f"{t_naive:6.2f} s (pyckafast on them: {same:.10f}, |diff| {abs(same - naive):.1e})")
    print(f"    at n = {n:,}: ~{_duration(t_naive * (n / m) ** 2)} (O(n^2) extrapolation) and "
          f"{_bytes(2 * 8 * n * n)} for the two float64 Grams")
    raw = raw_float32_cka(x, y)
    _row("raw float32 formula X'Y - n mu nu'", raw,
         f"|diff| {abs(raw - ref64):.1e}  (why pyckafast shifts every chunk and sums in float64)")


def _minibatch(x: np.ndarray, y: np.ndarray, b: int, batches: int) -> None:
    rows = min(b * batches, len(x) - len(x) % b)
    if rows < b or b < 4:
        print(f"\n(minibatch comparison skipped: needs a batch size >= 4 and n >= {b})")
        return
    xs, ys = x[:rows], y[:rows]
    print(f"\nMinibatch CKA (Nguyen et al. 2021, unbiased HSIC), {rows // b} batches of {b} "
          f"(the first {rows:,} samples):")
    exact, t_exact = _timed(minibatch_cka, xs, ys, batch_size=b, seed=None)
    _row("pyckafast.minibatch_cka (exact)", exact, f"{t_exact:6.2f} s")
    p = x.shape[1]
    # The same samples moved to mean 10 (exact in float32: Sterbenz), and as given (mean 1e3).
    # CKA is translation invariant: the exact value is the one above for both.
    for offset in (10.0, DEMO_OFFSET):
        shift = np.float32(DEMO_OFFSET - offset)
        (theirs, sums), t_theirs = _timed(uncentred_float32_minibatch_cka, xs - shift, ys - shift, b)
        _row(f"torch_cka / pytorch-cka formula, mean {offset:g}", theirs,
             f"|diff| {abs(theirs - exact):.1e}  {t_theirs:6.2f} s")
        if not np.isfinite(theirs):
            print(f"    (its summed self-HSICs are {sums[1]:.3g} and {sums[2]:.3g}: a self-HSIC is "
                  "never negative, nan is the square root of one that came out so)")
    print(f"  (their float32 Grams K = XX' hold entries near p x mean^2 = {p * DEMO_OFFSET ** 2:.1g}, "
          f"rounded by units, while the centred signal per entry is about sqrt(p) = {p ** 0.5:.2g})")


def _row(label: str, value: float, rest: str) -> None:
    print(f"  {label:<46} CKA = {value:<13.10f} {rest}")


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def _bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"
