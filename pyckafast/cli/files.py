"""The command line's input files: .npy arrays checked before any work, errors that name the file.

Every check here is about the file as a user sees it ("x.npy is not a .npy array", "row 17 holds
NaN"); the library's own checks speak of arguments (``x``, ``y``) instead, which the CLI's user
never typed. The scans (finiteness, variance) read the memory-mapped file chunk by chunk, so
they work for files of any size.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import warnings

import numpy as np

__all__ = ["CLIError", "check_regular_file", "check_zip_magic", "open_npy", "first_non_finite",
           "is_constant", "check_finite",
           "constant_files", "naming_bad_values", "warnings_as_lines"]

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"  # what np.savez writes
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"  # an archive without members
_NOT_REGULAR = {stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
                stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISSOCK: "a socket"}
_SCAN_ROWS = 65536  # rows per chunk of the scans: a few MB of a typical representation


class CLIError(Exception):
    """A user error that the CLI reports as one line on stderr (exit status 2).

    Examples
    --------
    >>> from pyckafast.cli import main
    >>> main(["cka", "missing_x.npy", "missing_y.npy"])  # "no such file" on stderr
    2
    """


def open_npy(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a .npy file of shape (n,) or (n, p) with real numbers, or raise CLIError.

    Parameters
    ----------
    path : str or os.PathLike
        The file, written by :func:`numpy.save`.

    Returns
    -------
    numpy.ndarray
        A read-only memory map (nothing is read into memory yet).

    Raises
    ------
    CLIError
        The file is missing, a directory, not a .npy array (text, pickle, .npz archive, garbage),
        truncated, or holds no real numbers, the wrong number of dimensions or no rows. The
        message names the file.

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
    >>> np.save(path, np.ones((5, 2)))
    >>> open_npy(path).shape
    (5, 2)
    >>> with open(path, "w") as fh:
    ...     _ = fh.write("1,2,3")
    >>> open_npy(path)
    Traceback (most recent call last):
    ...
    pyckafast.cli.files.CLIError: ...a.npy: not a .npy array (no NumPy header; it starts with b'1,2,3'); write arrays with numpy.save.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CLIError(f"{path}: no such file.")
    if os.path.isdir(path):
        raise CLIError(f"{path}: is a directory, expected a .npy file.")
    check_regular_file(path, "a .npy array")
    shape, dtype, data_offset = _read_header(path)
    if dtype.hasobject:
        raise CLIError(f"{path}: holds Python objects (dtype object), not numbers; save a numeric "
                       "array (e.g. a.astype(np.float32)).")
    if dtype.kind not in "biuf":
        raise CLIError(f"{path}: must hold real numbers (float, int or bool); got dtype {dtype}.")
    if len(shape) not in (1, 2):
        raise CLIError(
            f"{path}: must be 1-D or 2-D (n_samples, n_features); got shape {shape} "
            "(flatten each sample first, e.g. a.reshape(len(a), -1))."
        )
    if shape[0] == 0:
        raise CLIError(f"{path}: has no samples (shape {shape}).")
    expected = data_offset + int(np.prod(shape)) * dtype.itemsize
    actual = os.path.getsize(path)
    if actual < expected:
        raise CLIError(f"{path}: is truncated: its header promises shape {shape} of {dtype} "
                       f"({expected:,} bytes) but the file has {actual:,} bytes.")
    return np.load(path, mmap_mode="r", allow_pickle=False)


def check_regular_file(path: str, expected: str) -> None:
    """Raise CLIError unless ``path`` is a regular file: a device, FIFO or socket has no end
    (/dev/zero reads forever) or blocks on open until a writer comes (a FIFO), so it is refused
    before it is opened.

    Parameters
    ----------
    path : str
        An existing path.
    expected : str
        What the file should be, for the message ("a .npy array").

    Raises
    ------
    CLIError
        Naming the file and what it is.

    Examples
    --------
    >>> check_regular_file("/dev/zero", "a .npy array")
    Traceback (most recent call last):
    ...
    pyckafast.cli.files.CLIError: /dev/zero: not a .npy array (a character device, not a regular file).
    """
    mode = os.stat(path).st_mode
    for test, what in _NOT_REGULAR.items():
        if test(mode):
            raise CLIError(f"{path}: not {expected} ({what}, not a regular file).")


def check_zip_magic(path: str) -> None:
    """Raise CLIError unless the regular file ``path`` starts like a zip archive (np.savez):
    checked from its first bytes, before any reader looks for a directory at its end."""
    with open(path, "rb") as fh:
        head = fh.read(len(_ZIP_MAGIC))
    if head not in (_ZIP_MAGIC, _EMPTY_ZIP_MAGIC):
        kind = "a .npy array: give the directory of the .npy files" if head.startswith(
            _NPY_MAGIC[:4]) else f"it starts with {head!r}"
        raise CLIError(f"{path}: is neither a directory nor an .npz archive (np.savez; {kind}).")


def _read_header(path: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the data) from the .npy header, or CLIError saying what it is."""
    with open(path, "rb") as fh:
        head = fh.read(len(_NPY_MAGIC))
        if head.startswith(_ZIP_MAGIC):
            raise CLIError(f"{path}: is a .npz archive; expected a single .npy array (np.save). "
                           "`pyckafast map` reads .npz archives.")
        if head != _NPY_MAGIC:
            # Without this check np.load falls back to unpickling and complains about "pickled
            # data", which says nothing useful about a text or garbage file.
            fh.seek(0)
            start = fh.read(16)
            raise CLIError(f"{path}: not a .npy array (no NumPy header; it starts with {start!r}); "
                           "write arrays with numpy.save.")
        fh.seek(0)
        try:
            version = np.lib.format.read_magic(fh)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _fortran, dtype = read(fh)
        except (ValueError, OSError, SyntaxError, EOFError) as exc:
            raise CLIError(f"{path}: not a readable .npy array: its header is damaged ({exc}).") from None
        return tuple(shape), np.dtype(dtype), fh.tell()


def _row_chunks(a: np.ndarray):
    """(first row, 2-D float chunk) over the rows of a 1-D or 2-D array, a few MB at a time."""
    rows = a[:, None] if a.ndim == 1 else a
    for start in range(0, rows.shape[0], _SCAN_ROWS):
        yield start, np.asarray(rows[start:start + _SCAN_ROWS])


def first_non_finite(a: np.ndarray) -> tuple[int, int] | None:
    """Find the first NaN or +-Inf in ``a``, reading it chunk by chunk.

    Parameters
    ----------
    a : numpy.ndarray, shape (n,) or (n, p)
        A representation (a memory map is read a few MB at a time).

    Returns
    -------
    tuple of (int, int) or None
        (row, column) of the first non-finite value (1-D: column 0), None if all are finite.

    Examples
    --------
    >>> import numpy as np
    >>> first_non_finite(np.array([[1.0, 2.0], [3.0, np.inf]]))
    (1, 1)
    >>> first_non_finite(np.arange(4)) is None
    True
    """
    if a.dtype.kind != "f":
        return None  # integers and booleans are always finite
    for start, chunk in _row_chunks(a):
        bad = ~np.isfinite(chunk)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            return start + int(row), int(col)
    return None


def check_finite(a: np.ndarray, path: str) -> None:
    """Raise CLIError naming ``path``, the row and the column of the first NaN/Inf of ``a``.

    Parameters
    ----------
    a : numpy.ndarray, shape (n,) or (n, p)
        A representation.
    path : str
        Where it came from, for the message.

    Raises
    ------
    CLIError
        If ``a`` holds a NaN or an infinity.

    Examples
    --------
    >>> import numpy as np
    >>> check_finite(np.array([[1.0], [np.nan]]), "x.npy")
    Traceback (most recent call last):
    ...
    pyckafast.cli.files.CLIError: x.npy: row 1 (0-based), column 0 holds nan; CKA needs finite values.
    """
    where = first_non_finite(a)
    if where is not None:
        row, col = where
        value = a[row] if a.ndim == 1 else a[row, col]
        raise CLIError(f"{path}: row {row} (0-based), column {col} holds {float(value)}; "
                       "CKA needs finite values.")


def is_constant(a: np.ndarray) -> bool:
    """Tell whether every row of ``a`` equals the first one (zero variance: CKA is undefined).

    Parameters
    ----------
    a : numpy.ndarray, shape (n,) or (n, p)
        A representation; the scan stops at the first chunk with a differing row.

    Returns
    -------
    bool
        True for zero variance.

    Examples
    --------
    >>> import numpy as np
    >>> is_constant(np.ones((3, 2))), is_constant(np.eye(2))
    (True, False)
    """
    first = np.asarray(a[:1])
    return all(np.array_equal(chunk, np.broadcast_to(first.reshape(1, -1), chunk.shape))
               for _, chunk in _row_chunks(a))


def constant_files(arrays: dict[str, np.ndarray]) -> list[str]:
    """List the files whose arrays have zero variance.

    Parameters
    ----------
    arrays : dict of str to numpy.ndarray
        Path -> its array.

    Returns
    -------
    list of str
        The paths of the constant arrays, in the dict's order.
    """
    return [path for path, a in arrays.items() if is_constant(a)]


@contextlib.contextmanager
def naming_bad_values(arrays: dict[str, np.ndarray]):
    """Turn a library ValueError caused by a NaN/Inf into a CLIError naming the file and row.

    The library checks finiteness on the sums it accumulates anyway (free, but it can only name
    the argument and a range of rows); only when it fails does the CLI scan the files to find the
    exact place. Any other ValueError is passed on unchanged.

    Parameters
    ----------
    arrays : dict of str to numpy.ndarray
        Path -> its array, the inputs of the computation in the ``with`` block.

    Yields
    ------
    None
    """
    try:
        yield
    except ValueError:
        for path, a in arrays.items():
            check_finite(a, path)
        raise


@contextlib.contextmanager
def warnings_as_lines():
    """Show the library's warnings as ``pyckafast: warning: ...`` lines on stderr.

    Python's default display adds the library's file, line number and source line, which mean
    nothing to a command-line user; the message itself (e.g. a bandwidth that makes a kernel
    the identity) does. Each distinct message is shown once, after the block.

    Yields
    ------
    None
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for message in dict.fromkeys(str(w.message) for w in caught):
        print(f"pyckafast: warning: {message}", file=sys.stderr)
