"""CPU emulation of precision="tf32" for linear CKA (no GPU needed): how far from float64?

TF32 tensor cores round each GEMM input to a 10-bit mantissa (round to nearest) and accumulate
in float32. This script applies exactly that to the shifted chunks the CUDA backend feeds to
cuBLAS (column sums and row norms stay exact, as in the kernels), builds the same LinearTerms and
compares the CKA with the float64 reference. Run: python bench/tf32_emulation.py
"""

from __future__ import annotations

import numpy as np

import pyckafast
from pyckafast._core import combine as _combine
from pyckafast._core.terms import LinearTerms


def to_tf32(a: np.ndarray) -> np.ndarray:
    """Round float32 values to TF32 (10 explicit mantissa bits), round-half-to-even."""
    bits = a.astype(np.float32).view(np.uint32)
    lsb = (bits >> 13) & 1
    rounded = (bits + 0x0FFF + lsb) & np.uint32(0xFFFFE000)
    return rounded.view(np.float32)


def tf32_cka(x: np.ndarray, y: np.ndarray, debiased: bool, rows: int = 65536) -> float:
    sx, sy = x[:rows].mean(0).astype(np.float32), y[:rows].mean(0).astype(np.float32)
    bx, by = x - sx, y - sy  # the kernel's shift, in float32
    tx, ty = to_tf32(bx), to_tf32(by)
    xx = np.zeros((x.shape[1],) * 2)
    yy = np.zeros((y.shape[1],) * 2)
    xy = np.zeros((x.shape[1], y.shape[1]))
    for lo in range(0, len(x), rows):  # float32 accumulation inside a chunk, float64 across
        cx, cy = tx[lo:lo + rows], ty[lo:lo + rows]
        xx += cx.T @ cx
        yy += cy.T @ cy
        xy += cx.T @ cy
    q = (bx.astype(float) ** 2).sum(1)
    r = (by.astype(float) ** 2).sum(1)
    bx64, by64 = bx.astype(float), by.astype(float)
    from pyckafast._core.terms import RowNormTerms

    norms = RowNormTerms(q.sum(), r.sum(), q @ q, r @ r, q @ r, q @ bx64, r @ bx64, q @ by64, r @ by64)
    terms = LinearTerms(n=len(x), shift_x=sx.astype(float), shift_y=sy.astype(float),
                        sum_x=bx64.sum(0), sum_y=by64.sum(0), xx=xx, yy=yy, xy=xy, norms=norms,
                        eps=float(np.finfo(np.float32).eps))
    return _combine.cka_from_hsic(_combine.linear_hsic(terms, debiased))


def cases(rng):
    n, p = 50_000, 256
    z = rng.normal(size=(n, p)).astype(np.float32)
    w = rng.normal(size=(p, p)).astype(np.float32) / np.sqrt(p)
    relu = np.maximum(z @ w + 1.0, 0).astype(np.float32)
    yield "gaussian, y = xW + noise", z, (z @ w + rng.normal(size=(n, p))).astype(np.float32)
    yield "ReLU activations (mean ~1.1)", relu, np.maximum(relu @ w + 0.5, 0).astype(np.float32)
    yield "large mean (+100)", z + 100, (z @ w + 100 + 0.1 * rng.normal(size=(n, p))).astype(np.float32)
    yield "near-identical (CKA ~ 1)", z, (z + 1e-3 * rng.normal(size=(n, p))).astype(np.float32)
    yield "unrelated (CKA ~ 0)", z, rng.normal(size=(n, p)).astype(np.float32)


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'case':32} {'debiased':8} {'CKA float64':>14} {'|tf32 - f64|':>13}")
    for name, x, y in cases(rng):
        for debiased in (False, True):
            ref = pyckafast.linear_cka(x.astype(float), y.astype(float), debiased=debiased,
                                       backend="numpy", form="features")
            err = abs(tf32_cka(x, y, debiased) - ref)
            print(f"{name:32} {str(debiased):8} {ref:14.8f} {err:13.2e}")


if __name__ == "__main__":
    main()
