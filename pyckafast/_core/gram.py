"""HSIC between every pair of representations of one minibatch, from one GEMM (math.md §4).

For each representation the m x m kernel matrix of the batch is centred once (double-centred
H K H for the biased estimator; U-centred for the unbiased one, Song et al. 2012 / Szekely-Rizzo:
with K^ = K minus its diagonal, row sums k and total s,
``U_ij = K^_ij - (k_i + k_j)/(m-2) + s/((m-1)(m-2))`` for i != j and ``U_ii = 0``, so that
``<U(K), U(L)> = m(m-3) HSIC_u(K, L)``), flattened, and the L x L matrix of HSIC values is
``G G'`` for the stacked flattened matrices G (L x m^2). Written for any array module ``xp``
(CuPy on the GPU, NumPy on the host), in float64: a batch is small, the Grams are not.
"""

from __future__ import annotations

import numpy as np

from .validation import min_samples

__all__ = ["hsic_matrix", "centred_gram"]


def centred_gram(xp, a, *, kernel: str, gamma: float | None, debiased: bool):
    """The centred m x m kernel matrix of the rows of ``a`` (float64)."""
    a = a.astype(np.float64)
    a = a - a.mean(axis=0)
    gram = a @ a.T
    if kernel == "rbf":
        sq = xp.diagonal(gram)
        d2 = xp.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
        gram = xp.exp(-float(gamma) * d2)
    m = gram.shape[0]
    if not debiased:
        row = gram.mean(axis=1)
        return gram - row[:, None] - row[None, :] + row.mean()
    gram = gram - xp.diag(xp.diagonal(gram))
    k = gram.sum(axis=1)
    u = gram - (k[:, None] + k[None, :]) / (m - 2) + k.sum() / ((m - 1) * (m - 2))
    return u - xp.diag(xp.diagonal(u))


def hsic_matrix(xp, reps, *, kernel: str = "linear", gammas=None, debiased: bool = True):
    """L x L HSIC values (biased: /(m-1)^2; unbiased: /(m(m-3))) of one batch's representations
    (arrays of xp with the same m rows); ``gammas`` gives the RBF gamma of each."""
    m = reps[0].shape[0]
    if any(r.shape[0] != m for r in reps):
        raise ValueError(f"every representation must have the batch's {m} rows; got "
                         f"{[r.shape[0] for r in reps]}.")
    need, why = min_samples(debiased)
    if m < need:
        raise ValueError(f"a batch needs at least {need} samples ({why}); got {m}.")
    if kernel == "rbf" and (gammas is None or len(gammas) != len(reps)):
        raise ValueError("kernel='rbf' needs one gamma per representation in gammas.")
    g = xp.stack([
        centred_gram(xp, r, kernel=kernel, gamma=None if gammas is None else gammas[i],
                     debiased=debiased).ravel()
        for i, r in enumerate(reps)
    ])
    scale = 1.0 / (m * (m - 3)) if debiased else 1.0 / (m - 1) ** 2
    return g @ g.T * scale
