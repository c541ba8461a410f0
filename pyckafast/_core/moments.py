"""Float64 moments per representation and cross moments per pair: the one streaming state.

A representation's rows are presented in a *frame*, ``b = row * scale - shift`` (``scale`` a
power of two, ``shift`` near the mean): :class:`Moments` holds n, the frame, the column sums and
the Gram of b, and for debiased CKA the row-norm sums (q = |b|^2: sum q, sum q^2, sum q b).
:class:`Cross` holds what one pair (a, b) adds: a'b and the debiased cross terms (sum q r,
sum r a, sum q b, with q and r the two sides' squared row norms), in the frames of its two
:class:`Moments`. Changing a frame is exact algebra (``reshift``, ``rescale``), so parts made in
any frames merge; :func:`pair_terms` is the pair view (:class:`LinearTerms`, which moves and
merges through the same algebra) that :mod:`pyckafast._core.combine` consumes. :class:`MomentSums` is one state: a
:class:`Moments` per layer, a :class:`Cross` per held pair (a symmetric map holds i < j only),
so a layer's own moments are made and merged once whatever the number of pairs it is in.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

__all__ = ["RowNormTerms", "LinearTerms", "OwnNorms", "Moments", "CrossNorms", "Cross",
           "MomentSums", "pair_terms", "split"]

Pair = tuple[int, int]


@dataclass(frozen=True)
class RowNormTerms:
    """Weighted moments of the shifted squared row norms q_i = |x_i|^2, r_i = |y_i|^2.

    They are what debiased (unbiased-HSIC) linear CKA needs beyond the biased moments.
    """

    sum_q: float
    sum_r: float
    sum_qq: float
    sum_rr: float
    sum_qr: float
    qx: np.ndarray  # sum_i q_i x_i, shape (p1,)
    rx: np.ndarray  # sum_i r_i x_i, shape (p1,)
    qy: np.ndarray  # sum_i q_i y_i, shape (p2,)
    ry: np.ndarray  # sum_i r_i y_i, shape (p2,)

    def __add__(self, other: RowNormTerms) -> RowNormTerms:
        return RowNormTerms(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@dataclass(frozen=True)
class LinearTerms:
    """Float64 moments of the rows of x and y, each shifted by ``shift_x`` / ``shift_y``.

    ``eps`` is the machine epsilon of the least precise input seen; it sets the threshold below
    which a representation counts as having zero variance.
    """

    n: int
    shift_x: np.ndarray
    shift_y: np.ndarray
    sum_x: np.ndarray
    sum_y: np.ndarray
    xx: np.ndarray
    yy: np.ndarray
    xy: np.ndarray
    norms: RowNormTerms | None
    eps: float
    # Powers of two the rows were multiplied by before the shift (rows = x * scale_x - shift_x):
    # data of extreme magnitude are brought near 1 so that no product overflows or underflows.
    # Exact, and CKA does not change; HSIC values are scaled back in ``_core.combine``.
    scale_x: float = 1.0
    scale_y: float = 1.0

    def _sums(self) -> MomentSums:
        ma, mb, cross = split(self)
        return MomentSums([ma, mb], {(0, 1): cross})

    def _in_frames(self, x: tuple[np.ndarray, float], y: tuple[np.ndarray, float]) -> LinearTerms:
        return self._sums().in_frames([x, y]).pair(0, 1)

    def rescale(self, scale_x: float, scale_y: float) -> LinearTerms:
        """The same terms for rows multiplied by other powers of two (exact, barring
        over/underflow of terms far below the others)."""
        fx, fy = scale_x / self.scale_x, scale_y / self.scale_y
        if fx == 1.0 and fy == 1.0:
            return self
        return self._in_frames((self.shift_x * fx, scale_x), (self.shift_y * fy, scale_y))

    def reshift(self, shift_x: np.ndarray, shift_y: np.ndarray) -> LinearTerms:
        """The same terms expressed for rows shifted by new vectors (exact algebra)."""
        return self._in_frames((np.array(shift_x, dtype=np.float64), self.scale_x),
                               (np.array(shift_y, dtype=np.float64), self.scale_y))

    def centred(self) -> LinearTerms:
        """The terms of the centred rows (shift = column means): sum_x = sum_y = 0 up to rounding."""
        return self.reshift(self.shift_x + self.sum_x / self.n, self.shift_y + self.sum_y / self.n)

    def merge(self, other: LinearTerms) -> LinearTerms:
        """Terms of the union of both sample sets (:meth:`MomentSums.merge`: in the shift of
        the one with more samples, so a stream settles on the shift of its bulk, not of its
        first batch)."""
        if self.sum_x.shape != other.sum_x.shape or self.sum_y.shape != other.sum_y.shape:
            raise ValueError(
                "cannot merge terms of different widths: "
                f"x has {self.sum_x.size} vs {other.sum_x.size} features, "
                f"y has {self.sum_y.size} vs {other.sum_y.size}."
            )
        if (self.norms is None) != (other.norms is None):
            raise ValueError("cannot merge terms with and without the debiased row-norm terms.")
        sums = self._sums().copy()  # merged in place: the frozen terms keep their arrays
        sums.merge(other._sums())
        return sums.pair(0, 1)




@dataclass
class OwnNorms:
    """Debiased row-norm sums of one representation (q_k = |b_k|^2)."""

    sum_q: float
    sum_qq: float
    qx: np.ndarray  # sum_k q_k b_k, shape (p,)


@dataclass
class Moments:
    """Float64 moments of n rows of one representation in the frame ``row * scale - shift``.

    ``eps`` is the machine epsilon of the least precise input seen (the zero-variance
    threshold of :mod:`pyckafast._core.combine`).
    """

    n: int
    shift: np.ndarray
    scale: float
    eps: float
    sum: np.ndarray
    gram: np.ndarray
    norms: OwnNorms | None

    @classmethod
    def zeros(cls, shift: np.ndarray, scale: float, eps: float, debiased: bool) -> Moments:
        p = shift.size
        return cls(0, shift, scale, eps, np.zeros(p), np.zeros((p, p)),
                   OwnNorms(0.0, 0.0, np.zeros(p)) if debiased else None)

    @property
    def nbytes(self) -> int:
        extra = 0 if self.norms is None else self.norms.qx.nbytes
        return self.shift.nbytes + self.sum.nbytes + self.gram.nbytes + extra

    def rescale(self, scale: float) -> Moments:
        """The moments of the rows multiplied by another power of two (exact)."""
        f = scale / self.scale
        if f == 1.0:
            return self
        t = self.norms
        norms = None if t is None else OwnNorms(t.sum_q * f**2, t.sum_qq * f**4, t.qx * f**3)
        return replace(self, shift=self.shift * f, scale=scale, sum=self.sum * f,
                       gram=self.gram * f**2, norms=norms)

    def reshift(self, shift: np.ndarray) -> Moments:
        """The moments of the rows shifted by another vector (b' = b + d, d = old - new)."""
        d = self.shift - shift
        n, s = self.n, self.sum
        norms = None
        if self.norms is not None:
            t, c, st, g_d = self.norms, float(d @ d), float(d @ s), self.gram @ d
            norms = OwnNorms(
                sum_q=t.sum_q + 2 * st + n * c,
                sum_qq=(t.sum_qq + 4 * float(d @ t.qx) + 2 * c * t.sum_q + 4 * float(d @ g_d)
                        + 4 * c * st + n * c * c),
                qx=t.qx + t.sum_q * d + 2 * g_d + 2 * st * d + c * s + n * c * d)
        sd = np.outer(s, d)
        return replace(self, shift=np.array(shift, dtype=np.float64), sum=s + n * d,
                       gram=self.gram + sd + sd.T + n * np.outer(d, d), norms=norms)

    def in_frame(self, shift: np.ndarray, scale: float) -> Moments:
        m = self.rescale(scale)
        return m if np.array_equal(m.shift, shift) else m.reshift(shift)

    def add(self, other: Moments) -> None:
        """Add moments of the same frame in place."""
        self.n += other.n
        self.eps = max(self.eps, other.eps)
        self.sum += other.sum
        self.gram += other.gram
        if self.norms is not None:
            self.norms.sum_q += other.norms.sum_q
            self.norms.sum_qq += other.norms.sum_qq
            self.norms.qx += other.norms.qx

    def copy(self) -> Moments:
        t = self.norms
        return replace(self, shift=self.shift.copy(), sum=self.sum.copy(), gram=self.gram.copy(),
                       norms=None if t is None else OwnNorms(t.sum_q, t.sum_qq, t.qx.copy()))


@dataclass
class CrossNorms:
    """Debiased cross row-norm sums of one pair (q of side a, r of side b)."""

    sum_qr: float
    rx: np.ndarray  # sum_k r_k a_k, shape (pa,)
    qy: np.ndarray  # sum_k q_k b_k, shape (pb,)


@dataclass
class Cross:
    """What one pair (a, b) adds to its two sides' :class:`Moments`: a'b and the debiased
    cross terms, in the frames of those moments."""

    xy: np.ndarray
    norms: CrossNorms | None

    @classmethod
    def zeros(cls, pa: int, pb: int, debiased: bool) -> Cross:
        return cls(np.zeros((pa, pb)),
                   CrossNorms(0.0, np.zeros(pa), np.zeros(pb)) if debiased else None)

    @property
    def nbytes(self) -> int:
        t = self.norms
        return self.xy.nbytes + (0 if t is None else t.rx.nbytes + t.qy.nbytes)

    def in_frame(self, ma: Moments, mb: Moments, a: tuple[np.ndarray, float],
                 b: tuple[np.ndarray, float]) -> Cross:
        """The cross moments in the frames ``a`` and ``b`` ((shift, scale) each), from those of
        ``ma`` and ``mb`` (this pair's two sides, in their frames)."""
        fa, fb = a[1] / ma.scale, b[1] / mb.scale
        out, t = self, self.norms
        if fa != 1.0 or fb != 1.0:
            out = Cross(self.xy * (fa * fb), None if t is None else CrossNorms(
                t.sum_qr * fa**2 * fb**2, t.rx * fb**2 * fa, t.qy * fa**2 * fb))
            ma, mb = ma.rescale(a[1]), mb.rescale(b[1])
        if np.array_equal(ma.shift, a[0]) and np.array_equal(mb.shift, b[0]):
            return out
        return out._reshift(ma, mb, ma.shift - a[0], mb.shift - b[0])

    def _reshift(self, ma: Moments, mb: Moments, dx: np.ndarray, dy: np.ndarray) -> Cross:
        # a' = a + dx, b' = b + dy; q' = q + 2 dx.a + c, r' = r + 2 dy.b + e
        n, sx, sy = ma.n, ma.sum, mb.sum
        xy = self.xy + np.outer(sx, dy) + np.outer(dx, sy) + n * np.outer(dx, dy)
        t = self.norms
        if t is None:
            return Cross(xy, None)
        c, e = float(dx @ dx), float(dy @ dy)
        st, su = float(dx @ sx), float(dy @ sy)
        sum_q, sum_r = ma.norms.sum_q, mb.norms.sum_q
        xy_dy, yx_dx = self.xy @ dy, self.xy.T @ dx
        sum_qr = (t.sum_qr + 2 * float(dy @ t.qy) + e * sum_q + 2 * float(dx @ t.rx)
                  + 4 * float(dx @ xy_dy) + 2 * e * st + c * sum_r + 2 * c * su + n * c * e)
        return Cross(xy, CrossNorms(
            sum_qr, rx=t.rx + sum_r * dx + 2 * xy_dy + 2 * su * dx + e * sx + n * e * dx,
            qy=t.qy + sum_q * dy + 2 * yx_dx + 2 * st * dy + c * sy + n * c * dy))

    def add(self, other: Cross) -> None:
        """Add cross moments of the same frames in place."""
        self.xy += other.xy
        if self.norms is not None:
            self.norms.sum_qr += other.norms.sum_qr
            self.norms.rx += other.norms.rx
            self.norms.qy += other.norms.qy

    def copy(self) -> Cross:
        t = self.norms
        return Cross(self.xy.copy(),
                     None if t is None else CrossNorms(t.sum_qr, t.rx.copy(), t.qy.copy()))


def pair_terms(ma: Moments, mb: Moments, cross: Cross) -> LinearTerms:
    """The linear terms of the pair (a, b): the view :mod:`pyckafast._core.combine` reads."""
    norms = None
    if cross.norms is not None:
        a, b, c = ma.norms, mb.norms, cross.norms
        norms = RowNormTerms(sum_q=a.sum_q, sum_r=b.sum_q, sum_qq=a.sum_qq, sum_rr=b.sum_qq,
                             sum_qr=c.sum_qr, qx=a.qx, rx=c.rx, qy=c.qy, ry=b.qx)
    return LinearTerms(n=ma.n, shift_x=ma.shift, shift_y=mb.shift, sum_x=ma.sum, sum_y=mb.sum,
                       xx=ma.gram, yy=mb.gram, xy=cross.xy, norms=norms,
                       eps=max(ma.eps, mb.eps), scale_x=ma.scale, scale_y=mb.scale)


def split(t: LinearTerms) -> tuple[Moments, Moments, Cross]:
    """The two sides' moments and the cross moments of pair terms (the inverse of
    :func:`pair_terms`)."""
    u = t.norms
    ma = Moments(t.n, t.shift_x, t.scale_x, t.eps, t.sum_x, t.xx,
                 None if u is None else OwnNorms(u.sum_q, u.sum_qq, u.qx))
    mb = Moments(t.n, t.shift_y, t.scale_y, t.eps, t.sum_y, t.yy,
                 None if u is None else OwnNorms(u.sum_r, u.sum_rr, u.ry))
    return ma, mb, Cross(t.xy, None if u is None else CrossNorms(u.sum_qr, u.rx, u.qy))


class MomentSums:
    """One state's sums: :class:`Moments` per layer, :class:`Cross` per held pair (i, j)."""

    def __init__(self, own: list[Moments], cross: dict[Pair, Cross]):
        self.own, self.cross = own, cross

    @classmethod
    def zeros(cls, frames: list[tuple[np.ndarray, float]], eps: list[float],
              pairs: list[Pair], debiased: bool) -> MomentSums:
        own = [Moments.zeros(shift, scale, e, debiased) for (shift, scale), e in zip(frames, eps)]
        return cls(own, {(i, j): Cross.zeros(frames[i][0].size, frames[j][0].size, debiased)
                         for i, j in pairs})

    @property
    def n(self) -> int:
        return self.own[0].n

    @property
    def frames(self) -> list[tuple[np.ndarray, float]]:
        return [(m.shift, m.scale) for m in self.own]

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for m in self.own) + sum(c.nbytes for c in self.cross.values())

    def pair(self, i: int, j: int) -> LinearTerms:
        return pair_terms(self.own[i], self.own[j], self.cross[i, j])

    def in_frames(self, frames: list[tuple[np.ndarray, float]]) -> MomentSums:
        """The same sums in other frames (exact); crosses read the old own moments."""
        cross = {(i, j): c.in_frame(self.own[i], self.own[j], frames[i], frames[j])
                 for (i, j), c in self.cross.items()}
        return MomentSums([m.in_frame(*f) for m, f in zip(self.own, frames)], cross)

    def add(self, other: MomentSums) -> None:
        """Add sums of the same frames in place."""
        for mine, theirs in zip(self.own, other.own):
            mine.add(theirs)
        for pair, c in self.cross.items():
            c.add(other.cross[pair])

    def merge(self, other: MomentSums) -> None:
        """Add sums of other frames (exact), in place: per layer the frame of the side with
        more rows (so a stream settles on its bulk's shift) at the smaller scale (the larger
        data: rescaling toward it cannot overflow)."""
        bulk = self if self.n >= other.n else other
        frames = []
        for mine, theirs, big in zip(self.own, other.own, bulk.own):
            scale = min(mine.scale, theirs.scale)
            frames.append((big.shift * (scale / big.scale), scale))
        if not all(m.scale == f and np.array_equal(m.shift, s)
                   for m, (s, f) in zip(self.own, frames)):
            moved = self.in_frames(frames)
            self.own, self.cross = moved.own, moved.cross
        self.add(other.in_frames(frames))

    def copy(self) -> MomentSums:
        return MomentSums([m.copy() for m in self.own],
                          {pair: c.copy() for pair, c in self.cross.items()})

    def finite(self) -> bool:
        """Whether every sum is finite (float64 sums of finite data can still overflow).

        O(p) per layer: a Gram is finite when its diagonal is (|G_ij| <= sqrt(G_ii G_jj)), and
        a pair's cross products are bounded by its two sides' diagonals alike; the column sums
        and row-norm sums are checked themselves.
        """
        vectors = [a for m in self.own for a in (m.sum, np.diagonal(m.gram))]
        scalars = [v for m in self.own if m.norms is not None
                   for v in (m.norms.sum_q, m.norms.sum_qq)]
        vectors += [m.norms.qx for m in self.own if m.norms is not None]
        vectors += [a for c in self.cross.values() if c.norms is not None
                    for a in (c.norms.rx, c.norms.qy)]
        scalars += [c.norms.sum_qr for c in self.cross.values() if c.norms is not None]
        return bool(np.isfinite(scalars).all() and all(np.isfinite(a).all() for a in vectors))


def self_cross(m: Moments) -> Cross:
    """The cross moments of a layer with itself (its HSIC(x, x) through :func:`pair_terms`)."""
    t = m.norms
    return Cross(m.gram, None if t is None else CrossNorms(t.sum_qq, t.qx, t.qx))
