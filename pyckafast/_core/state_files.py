"""The state files of :class:`pyckafast.LinearCKAState` and :class:`pyckafast.CKAMapState`.

A state file is an .npz archive of plain arrays (``np.savez``). Reading one trusts nothing in
it: the archive is opened with :mod:`zipfile` and only the .npy *header* of each member is read
(name, dtype, shape) until the header fields (kind, format, ``debiased``, the layers' widths)
say which members the state must have and of which shapes; every member is checked against
that, and every declared size against the file's own size, before any data is read. So a
crafted file (a zip bomb, a header declaring a huge shape, thousands of layers, a flag holding a
string) answers a ValueError naming the field, having allocated about the file's size at most.
Pickles are never loaded.
"""

from __future__ import annotations

import math
import io
import os
import zipfile
from dataclasses import asdict, fields

import numpy as np

from .moments import Cross, CrossNorms, Moments, MomentSums, OwnNorms
from .terms import LinearTerms, RowNormTerms

__all__ = ["write", "read_linear", "write_linear", "map_arrays", "read_map"]

LINEAR_VERSIONS = (1, 2)  # 2 added the power-of-two scales; 1 holds unscaled terms
MAP_VERSION = 1
MAP_KIND = "CKAMapState"
# The data a state file declares may exceed its size by this factor (np.savez stores members
# uncompressed; savez_compressed of float64 moments rarely compresses more than this).
_INFLATION = 4
_SLACK = 1 << 16  # bytes: headers and the zip directory of tiny files
_MAX_HEADER = 10_000  # bytes of one .npy header (numpy's own default limit)


def write(path: str | os.PathLike, arrays: dict) -> None:
    with open(path, "wb") as f:  # np.savez(path) would append ".npz" to a bare name
        np.savez(f, **arrays)


def write_linear(path: str | os.PathLike, terms: LinearTerms, debiased: bool) -> None:
    arrays = {k: v for k, v in asdict(terms).items() if k != "norms"}
    if terms.norms is not None:
        arrays.update({f"norms_{k}": v for k, v in asdict(terms.norms).items()})
    write(path, {"format_version": LINEAR_VERSIONS[-1], "debiased": debiased, **arrays})


class _Archive:
    """The members of an .npz archive, their .npy headers read, their data not yet."""

    def __init__(self, path: str | os.PathLike | io.BytesIO, what: str, name: str | None = None):
        # a BytesIO: arrays held in memory (CKAMapState.from_arrays), checked as a file is
        self.name, self.what = name or os.fspath(path), what
        try:
            if isinstance(path, io.BytesIO):
                size, magic = path.getbuffer().nbytes, path.getvalue()[:6]
            else:
                size = os.path.getsize(path)
                with open(path, "rb") as f:
                    magic = f.read(6)
        except FileNotFoundError:
            raise FileNotFoundError(f"path: no such file: {self.name!r}") from None
        except OSError as exc:
            raise ValueError(f"{self.name!r} is not a {what} file ({exc}).") from None
        if magic == b"\x93NUMPY":
            raise ValueError(f"{self.name!r} holds a single .npy array, not a {what} file "
                             f"(an .npz archive written by {what}.save).")
        self.budget = _INFLATION * size + _SLACK
        try:
            self.zip = zipfile.ZipFile(path)
            members = self.zip.infolist()
        except (OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
            raise ValueError(f"{self.name!r} is not a {what} file (not an .npz archive: "
                             f"{exc}).") from None
        declared = 0
        for m in members:  # a zip bomb declares (or inflates to) far more than the file holds
            declared += m.file_size
            if declared > self.budget:
                raise ValueError(f"{self.name!r}: field {m.filename.removesuffix('.npy')!r} "
                                 f"declares {m.file_size} bytes; the members of a {what} file "
                                 f"of {size} bytes hold at most {self.budget}.")
        odd = [m.filename for m in members if not m.filename.endswith(".npy")]
        if odd:
            raise ValueError(f"{self.name!r} is not a {what} file: member {odd[0]!r} is not an "
                             ".npy array.")
        self.members = {m.filename[:-4]: m for m in members}
        self._headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}

    def header(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        """(shape, dtype) of a member, from its .npy header alone (read once)."""
        if key not in self._headers:
            self._headers[key] = self._header(key, self.members[key])
        return self._headers[key]

    def _header(self, key: str, member: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype]:
        try:
            with self.zip.open(member) as f:
                version = np.lib.format.read_magic(f)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                        np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read(f, max_header_size=_MAX_HEADER)
                data_bytes = member.file_size - f.tell()
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, SyntaxError) as exc:
            raise ValueError(f"{self.name!r}: field {key!r} is not a readable .npy array "
                             f"({exc}).") from None
        if fortran:
            raise ValueError(f"{self.name!r}: field {key!r} must be a C-order array; the file "
                             "holds a Fortran-order one.")
        if dtype.hasobject:  # refused by the checks of what each field holds (never read)
            return shape, dtype
        if math.prod(shape) * dtype.itemsize > data_bytes:
            raise ValueError(f"{self.name!r}: field {key!r} declares shape {shape} of {dtype}, "
                             f"more than the {data_bytes} bytes of data it holds.")
        return shape, dtype

    def check(self, expected: dict[str, tuple[tuple[int, ...], str]]) -> None:
        """Every expected member present with its shape and dtype kind, and no other (the
        names first: no header of an unexpected member is read)."""
        missing = [key for key in expected if key not in self.members]
        if missing:
            raise ValueError(f"{self.name!r}: the state file has no {missing[0]!r} field "
                             "(corrupt or from another program).")
        extra = [key for key in self.members if key not in expected]
        if extra:
            raise ValueError(f"{self.name!r}: unexpected field {extra[0]!r} in a {self.what} "
                             f"file (of {len(extra)} unexpected).")
        for key, (shape, kinds) in expected.items():
            have, dtype = self.header(key)
            if have != shape or dtype.kind not in kinds:
                raise ValueError(f"{self.name!r}: field {key!r} must be a{_KINDS[kinds]} array "
                                 f"of shape {shape}; the file holds {dtype} of shape {have}.")

    def array(self, key: str) -> np.ndarray:
        """The data of a member whose header was checked."""
        with self.zip.open(self.members[key]) as f:
            return np.lib.format.read_array(f, allow_pickle=False,
                                            max_header_size=_MAX_HEADER)

    def small(self, key: str, kinds: str, shape: tuple[int, ...] | None = ()) -> np.ndarray:
        """A header field: checked (0-d unless ``shape``; a 1-D of any length for None,
        bounded by the file's size), then read."""
        self.check_one(key, kinds, shape)
        return self.array(key)

    def check_one(self, key: str, kinds: str, shape) -> None:
        if key not in self.members:
            raise ValueError(f"{self.name!r}: the state file has no {key!r} field (corrupt or "
                             "from another program).")
        have, dtype = self.header(key)
        ok = len(have) == 1 if shape is None else have == shape
        if not ok or dtype.kind not in kinds:
            want = f"1-D{_KINDS[kinds]}" if shape is None else f"{_KINDS[kinds][1:]} {shape}"
            raise ValueError(f"{self.name!r}: field {key!r} must be a {want} array; the file "
                             f"holds {dtype} of shape {have}.")

    def flag(self, key: str) -> bool:
        """A boolean field: a 0-d bool, or a 0-d integer 0 or 1 (strings are refused)."""
        if key not in self.members:
            self.check_one(key, "b", ())
        have, dtype = self.header(key)
        value = self.array(key) if have == () and dtype.kind in "biu" else None
        if value is None or value not in (0, 1):
            raise ValueError(f"{self.name!r}: field {key!r} must be a boolean scalar (True/False "
                             f"or 0/1); the file holds {dtype} of shape {have}"
                             f"{'' if value is None else f' = {value!r}'}.")
        return bool(value)

    def real(self, key: str, shape: tuple[int, ...] = ()):
        """A checked real field as float64 (a float for 0-d), finite."""
        a = self.array(key)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{self.name!r}: field {key!r} holds NaN or Inf; the state is "
                             "corrupt.")
        return float(a) if a.ndim == 0 else np.asarray(a, dtype=np.float64)

    def close(self) -> None:
        self.zip.close()


_KINDS = {"fiu": " real", "iu": "n integer", "b": " boolean", "U": " string", "biu": " boolean"}


def _count(a: _Archive, key: str) -> int:
    n = a.real(key)
    if n != int(n) or n < 1:
        raise ValueError(f"{a.name!r}: {key} must be a positive integer; the file holds {n}.")
    return int(n)


def _scale(a: _Archive, key: str) -> float:
    value = a.real(key)
    if value <= 0 or math.frexp(value)[0] != 0.5:
        raise ValueError(f"{a.name!r}: {key} must be a positive power of two; the file holds "
                         f"{value!r}.")
    return value


# ---- LinearCKAState -------------------------------------------------------------------------
_NORM_FIELDS = [f.name for f in fields(RowNormTerms)]


def read_linear(path: str | os.PathLike) -> tuple[bool, LinearTerms]:
    """``debiased`` and the terms of a LinearCKAState file (format 1 or 2)."""
    a = _Archive(path, "LinearCKAState")
    try:
        if "format_version" not in a.members:
            raise ValueError(f"{a.name!r} is an .npz archive of {sorted(a.members)[:6]}, not a "
                             "LinearCKAState file (no format_version).")
        version = int(a.small("format_version", "iu"))
        if version not in LINEAR_VERSIONS:
            raise ValueError(f"{a.name!r}: state format {version} is not supported (expected "
                             f"one of {LINEAR_VERSIONS}).")
        debiased = a.flag("debiased")
        p1, p2 = (_width(a, key) for key in ("sum_x", "sum_y"))
        shapes = {"n": (), "eps": (), "shift_x": (p1,), "shift_y": (p2,), "sum_x": (p1,),
                  "sum_y": (p2,), "xx": (p1, p1), "yy": (p2, p2), "xy": (p1, p2)}
        if version == 2:
            shapes.update(scale_x=(), scale_y=())
        if debiased:
            vectors = {"qx": (p1,), "rx": (p1,), "qy": (p2,), "ry": (p2,)}
            shapes.update({f"norms_{k}": vectors.get(k, ()) for k in _NORM_FIELDS})
        a.check({"format_version": ((), "iu"), "debiased": ((), "biu"),
                 **{k: (s, "fiu") for k, s in shapes.items()}})
        plain = {k: a.real(k) for k in shapes if not k.startswith("norms_")}
        plain["n"] = _count(a, "n")
        for key in ("scale_x", "scale_y"):
            plain[key] = _scale(a, key) if version == 2 else 1.0
        norms = RowNormTerms(**{k: a.real(f"norms_{k}") for k in _NORM_FIELDS}) if debiased else None
        return debiased, LinearTerms(norms=norms, **plain)
    finally:
        a.close()


def _width(a: _Archive, key: str) -> int:
    a.check_one(key, "fiu", None)
    return a.header(key)[0][0]


# ---- CKAMapState ----------------------------------------------------------------------------
def map_arrays(sums: MomentSums) -> dict[str, np.ndarray]:
    """The arrays of a map state's sums (format 1: own{k}_*, cross{i}_{j}_*)."""
    out: dict[str, np.ndarray] = {"n": np.array(sums.n)}
    for k, m in enumerate(sums.own):
        out.update({f"own{k}_shift": m.shift, f"own{k}_scale": np.array(m.scale),
                    f"own{k}_eps": np.array(m.eps), f"own{k}_total": m.sum,
                    f"own{k}_gram": m.gram})
        if m.norms is not None:
            out.update({f"own{k}_sum_q": np.array(m.norms.sum_q),
                        f"own{k}_sum_qq": np.array(m.norms.sum_qq), f"own{k}_qb": m.norms.qx})
    for (i, j), c in sums.cross.items():
        out[f"cross{i}_{j}_xy"] = c.xy
        if c.norms is not None:
            out.update({f"cross{i}_{j}_rx": c.norms.rx, f"cross{i}_{j}_qy": c.norms.qy,
                        f"cross{i}_{j}_sum_qr": np.array(c.norms.sum_qr)})
    return out


def read_map(path: str | os.PathLike | io.BytesIO, name: str | None = None) -> dict:
    """The fields of a CKAMapState file (or an in-memory archive, called ``name`` in errors):
    debiased, symmetric, widths_a, widths_b, names_a, names_b, spread and sums (a
    :class:`MomentSums`)."""
    a = _Archive(path, MAP_KIND, name)
    try:
        kind = None
        if "kind" in a.members and a.header("kind")[0] == () and a.header("kind")[1].kind == "U":
            kind = str(a.array("kind"))
        if kind != MAP_KIND:
            raise ValueError(f"{a.name!r} is not a CKAMapState file (it holds "
                             f"{kind or 'a LinearCKAState or other archive'}).")
        version = int(a.small("format_version", "iu"))
        if version != MAP_VERSION:
            raise ValueError(f"{a.name!r}: CKAMapState format {version} is not supported "
                             f"(expected {MAP_VERSION}).")
        debiased, symmetric = a.flag("debiased"), a.flag("symmetric")
        widths = [_widths(a, key) for key in ("widths_a", "widths_b")]
        if symmetric and widths[0] != widths[1]:
            raise ValueError(f"{a.name!r}: a symmetric map must have widths_b == widths_a; the "
                             f"file holds {widths[0]} and {widths[1]}.")
        layers = widths[0] + ([] if symmetric else widths[1])
        la, lb = len(widths[0]), len(widths[1])
        npairs = la * (la - 1) // 2 if symmetric else la * lb
        need = (5 + 3 * debiased) * len(layers) + (1 + 3 * debiased) * npairs
        if need > len(a.members):  # before any pair list is built
            raise ValueError(f"{a.name!r}: fields 'widths_a' and 'widths_b' describe "
                             f"{len(layers)} layers and {npairs} pairs ({need} fields); the file "
                             f"holds {len(a.members)}.")
        pairs = ([(i, j) for i in range(la) for j in range(i + 1, la)] if symmetric else
                 [(i, la + j) for i in range(la) for j in range(lb)])
        a.check(_map_fields(a, layers, pairs, widths, debiased))
        names = [None if key not in a.members else [str(v) for v in a.array(key)]
                 for key in ("names_a", "names_b")]
        n = _count(a, "n")
        own = []
        for k in range(len(layers)):
            norms = None if not debiased else OwnNorms(
                a.real(f"own{k}_sum_q"), a.real(f"own{k}_sum_qq"), a.real(f"own{k}_qb"))
            own.append(Moments(n, a.real(f"own{k}_shift"), _scale(a, f"own{k}_scale"),
                               a.real(f"own{k}_eps"), a.real(f"own{k}_total"),
                               a.real(f"own{k}_gram"), norms))
        cross = {}
        for i, j in pairs:
            key = f"cross{i}_{j}"
            norms = None if not debiased else CrossNorms(
                a.real(f"{key}_sum_qr"), a.real(f"{key}_rx"), a.real(f"{key}_qy"))
            cross[i, j] = Cross(a.real(f"{key}_xy"), norms)
        spread = a.real("spread") if a.header("spread")[0] != (0,) else np.zeros(0)
        return {"debiased": debiased, "symmetric": symmetric, "widths_a": widths[0],
                "widths_b": widths[1], "names_a": names[0], "names_b": names[1],
                "spread": [float(s) for s in np.atleast_1d(spread)],
                "sums": MomentSums(own, cross)}
    finally:
        a.close()


def _widths(a: _Archive, key: str) -> list[int]:
    """A layer-width list, its length bounded by the members it implies (5 per layer at
    least) before anything is built from it."""
    a.check_one(key, "iu", None)
    count = a.header(key)[0][0]
    if count == 0 or 5 * count > len(a.members):
        raise ValueError(f"{a.name!r}: field {key!r} lists {count} layers; the file holds "
                         f"{len(a.members)} fields, not the at least {5 * count} they need.")
    w = a.array(key)
    if (w < 1).any():
        raise ValueError(f"{a.name!r}: field {key!r} must be a non-empty 1-D array of "
                         f"positive integers; the file holds {w.dtype} {w!r}.")
    return [int(v) for v in w]


def _map_fields(a: _Archive, layers, pairs, widths, debiased) -> dict:
    """The members a map file of these layers holds: name -> (shape, dtype kinds)."""
    out = {"format_version": ((), "iu"), "kind": ((), "U"), "debiased": ((), "biu"),
           "symmetric": ((), "biu"), "n": ((), "fiu"),
           "widths_a": ((len(widths[0]),), "iu"), "widths_b": ((len(widths[1]),), "iu"),
           "spread": ((a.header("spread") if "spread" in a.members else ((len(layers),),))[0],
                      "fiu")}
    if out["spread"][0] not in ((0,), (len(layers),)):
        out["spread"] = ((len(layers),), "fiu")
    for key, width in (("names_a", widths[0]), ("names_b", widths[1])):
        if key in a.members:
            out[key] = ((len(width),), "U")
    for k, p in enumerate(layers):
        out.update({f"own{k}_shift": ((p,), "fiu"), f"own{k}_scale": ((), "fiu"),
                    f"own{k}_eps": ((), "fiu"), f"own{k}_total": ((p,), "fiu"),
                    f"own{k}_gram": ((p, p), "fiu")})
        if debiased:
            out.update({f"own{k}_sum_q": ((), "fiu"), f"own{k}_sum_qq": ((), "fiu"),
                        f"own{k}_qb": ((p,), "fiu")})
    for i, j in pairs:
        out[f"cross{i}_{j}_xy"] = ((layers[i], layers[j]), "fiu")
        if debiased:
            out.update({f"cross{i}_{j}_rx": ((layers[i],), "fiu"),
                        f"cross{i}_{j}_qy": ((layers[j],), "fiu"),
                        f"cross{i}_{j}_sum_qr": ((), "fiu")})
    return out
