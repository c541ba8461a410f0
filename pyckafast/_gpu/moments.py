"""The device feed of the moment state: each layer's own moments once per batch, on the GPU.

Every layer of the batch is brought to the device once (CuPy arrays stay where they are),
shifted by its batch mean rounded to the input dtype, and reduced to its own float64 moments
(column sums, the Gram from one SYRK-shaped GEMM in the input dtype, the debiased row-norm
sums); each held pair adds its cross GEMM and cross row-norm sums from the same shifted rows.
Only the float64 moments cross to the host. (A state of one pair uses the pair producer
``linear_terms`` instead: staged chunks, out-of-memory retries.)
"""

from __future__ import annotations

import numpy as np

from .._core.inputs import Samples, check_finite_sums
from .._core.moments import Cross, CrossNorms, Moments, MomentSums, OwnNorms, Pair

__all__ = ["layer_sums"]


def _host(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)  # CuPy's copy to the host


def layer_sums(ops, reps: list[Samples], pairs: list[Pair], debiased: bool, *,
               start: int = 0) -> MomentSums:
    """The batch's float64 moments, each layer in the frame of its batch mean (scale 1)."""
    xp = ops.array_module()
    own, rows, qs = [], [], []
    for s in reps:
        a = ops.device_array(s)
        mean = a.mean(axis=0, dtype=np.float64).astype(a.dtype)
        b = a - xp.nan_to_num(mean, nan=0.0, posinf=0.0, neginf=0.0)
        total = _host(b.sum(axis=0, dtype=np.float64))
        check_finite_sums(total, s.name, start, start + s.n)
        q = norms = None
        if debiased:
            q = (b * b).sum(axis=1, dtype=np.float64)
            norms = OwnNorms(float(q.sum()), float(q @ q), _host(q @ b))
        gram = _host((b.T @ b).astype(np.float64))
        shift = np.nan_to_num(_host(mean).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        own.append(Moments(s.n, shift, 1.0, float(np.finfo(a.dtype).eps), total, gram, norms))
        rows.append(b)
        qs.append(q)
    cross = {}
    for i, j in pairs:
        bi, bj, q, r = rows[i], rows[j], qs[i], qs[j]
        norms = None if q is None else CrossNorms(float(q @ r), _host(r @ bi), _host(q @ bj))
        cross[i, j] = Cross(_host((bi.T @ bj).astype(np.float64)), norms)
    return MomentSums(own, cross)
