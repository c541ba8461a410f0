"""``pyckafast map``: a layer x layer CKA map of saved representations, as JSON and a heatmap PNG.

The input is a directory of .npy files (one representation per file, all with the same rows,
taken in natural name order: ``layer2`` before ``layer10``) or one .npz archive (one array per
key, in the archive's order). The map is :func:`pyckafast.cka_matrix` of them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import zipfile

import numpy as np

from .files import (CLIError, check_regular_file, check_zip_magic, is_constant,
                         naming_bad_values, open_npy, warnings_as_lines)

__all__ = ["add_map_parser", "run_map", "map_of", "load_representations", "natural_key",
           "format_matrix"]

DEFAULT_NAMES_MAX_LEN = 24
# Beyond this many layers the text table would wrap on a terminal; the JSON and PNG hold it all.
_TABLE_MAX_LAYERS = 12


def add_map_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``map`` command on an ``argparse`` subparsers object; return its parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``ArgumentParser.add_subparsers()`` returned.

    Returns
    -------
    argparse.ArgumentParser
        The ``map`` parser (its ``handler`` is :func:`run_map`).

    Examples
    --------
    >>> import argparse
    >>> from pyckafast.cli.map import add_map_parser, run_map
    >>> parser = argparse.ArgumentParser(prog="pyckafast")
    >>> p = add_map_parser(parser.add_subparsers())
    >>> args = parser.parse_args(["map", "layers.npz", "--kernel", "rbf"])
    >>> args.source, args.kernel, args.debiased, args.handler is run_map
    ('layers.npz', 'rbf', False, True)
    """
    from .args import positive_float, positive_int

    p = subparsers.add_parser(
        "map", help="layer x layer CKA map of a directory of .npy files or an .npz archive",
        description="CKA between every pair of representations of the same samples: a directory "
                    "of .npy files (one layer each, natural name order) or one .npz archive (one "
                    "array per key). Prints the map; --out writes map.json and map.png.",
    )
    p.add_argument("source", help="directory of .npy files, or an .npz archive")
    p.add_argument("--kernel", choices=("linear", "rbf"), default="linear",
                   help="kernel: linear (default) or rbf (Gaussian, sigma from the median rule)")
    p.add_argument("--debiased", action="store_true",
                   help="debiased CKA from the unbiased HSIC (Song et al. 2012); default: biased")
    p.add_argument("--threshold", type=positive_float, default=None, metavar="T",
                   help="rbf kernel only: sigma = T x sqrt(median squared distance) (default 1.0)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write map.json (names, matrix, options) and map.png (heatmap) here; "
                        "created if missing")
    p.add_argument("--names-max-len", type=positive_int, default=DEFAULT_NAMES_MAX_LEN,
                   metavar="N", help="shorten layer names in the table and the figure to N >= 2 "
                                     "characters, keeping the informative tail (default "
                                     f"{DEFAULT_NAMES_MAX_LEN}); map.json keeps the full names")
    p.set_defaults(handler=run_map)
    return p


def natural_key(name: str) -> list:
    """Sort key that orders digit runs by value: "layer2" < "layer10".

    Parameters
    ----------
    name : str
        A file name.

    Returns
    -------
    list
        Its text and integer parts, alternating.

    Examples
    --------
    >>> sorted(["layer10", "layer2", "layer1"], key=natural_key)
    ['layer1', 'layer2', 'layer10']
    """
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def load_representations(source: str) -> tuple[list[str], list[np.ndarray], list[str]]:
    """(names, arrays, origins) of the representations in a directory of .npy files or an .npz.

    Parameters
    ----------
    source : str
        A directory (its ``*.npy`` files, natural name order) or an ``.npz`` archive.

    Returns
    -------
    names : list of str
        File names without ``.npy``, or the archive's keys.
    arrays : list of numpy.ndarray
        Memory-mapped for .npy files; loaded for an archive.
    origins : list of str
        Where each array came from, for error messages ("dir/a.npy", "maps.npz:a").

    Raises
    ------
    CLIError
        Missing source, no representations, a bad file, or different numbers of rows.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from pyckafast.cli.map import load_representations
    >>> folder = tempfile.mkdtemp()
    >>> x = np.random.default_rng(0).normal(size=(10, 3))
    >>> for name in ("layer10", "layer2"):
    ...     np.save(os.path.join(folder, name + ".npy"), x)
    >>> names, arrays, origins = load_representations(folder)
    >>> names, arrays[0].shape, os.path.basename(origins[1])
    (['layer2', 'layer10'], (10, 3), 'layer10.npy')
    """
    if os.path.isdir(source):
        names, arrays, origins = _from_directory(source)
    elif os.path.exists(source):
        names, arrays, origins = _from_npz(source)
    else:
        raise CLIError(f"{source}: no such file or directory.")
    _check_same_rows(arrays, origins)
    return names, arrays, origins


def _from_directory(directory: str):
    files = sorted((f for f in os.listdir(directory) if f.endswith(".npy")), key=natural_key)
    if len(files) < 1:
        raise CLIError(f"{directory}: holds no .npy files (one representation per file expected).")
    origins = [os.path.join(directory, f) for f in files]
    return [f[:-len(".npy")] for f in files], [open_npy(o) for o in origins], origins


def _from_npz(path: str):
    # /dev/zero, a FIFO: refused before reading (they have no end, or block on open)
    check_regular_file(path, "a directory or an .npz archive")
    check_zip_magic(path)
    if not zipfile.is_zipfile(path):
        raise CLIError(f"{path}: is neither a directory nor an .npz archive (np.savez).")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise CLIError(f"{path}: not a readable .npz archive ({exc}).") from None
    if not arrays:
        raise CLIError(f"{path}: the archive holds no arrays.")
    origins = [f"{path}:{key}" for key in arrays]
    for origin, a in zip(origins, arrays.values()):
        _check_array(a, origin)
    return list(arrays), list(arrays.values()), origins


def _check_array(a: np.ndarray, origin: str) -> None:
    if a.dtype.kind not in "biuf":
        raise CLIError(f"{origin}: must hold real numbers (float, int or bool); got dtype {a.dtype}.")
    if a.ndim not in (1, 2):
        raise CLIError(f"{origin}: must be 1-D or 2-D (n_samples, n_features); got shape {a.shape} "
                       "(flatten each sample first, e.g. a.reshape(len(a), -1)).")
    if a.shape[0] == 0:
        raise CLIError(f"{origin}: has no samples (shape {a.shape}).")


def _check_same_rows(arrays: list[np.ndarray], origins: list[str]) -> None:
    n = arrays[0].shape[0]
    for origin, a in zip(origins, arrays):
        if a.shape[0] != n:
            raise CLIError(f"every representation needs the same number of samples (rows); "
                           f"{origin} has {a.shape[0]}, {origins[0]} has {n}.")


def run_map(args: argparse.Namespace) -> int:
    """Compute the map of ``args.source``; print it; write map.json and map.png to ``args.out``.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``map`` arguments.

    Returns
    -------
    int
        0, or 1 when a layer has zero variance (its row and column are undefined) or the figure
        could not be written (matplotlib missing).

    Raises
    ------
    CLIError
        A bad option combination or bad input files (the message names them).

    Examples
    --------
    >>> import argparse, os, tempfile
    >>> import numpy as np
    >>> from pyckafast.cli.map import add_map_parser
    >>> path = os.path.join(tempfile.mkdtemp(), "layers.npz")
    >>> x = np.random.default_rng(0).normal(size=(50, 4))
    >>> np.savez(path, a=x, b=2 * x)
    >>> parser = argparse.ArgumentParser(prog="pyckafast")
    >>> _ = add_map_parser(parser.add_subparsers())
    >>> args = parser.parse_args(["map", path])
    >>> args.handler(args)
              [0]     [1]
    [0] a  1.0000  1.0000
    [1] b  1.0000  1.0000
    0
    """
    if args.kernel == "linear" and args.threshold is not None:
        raise CLIError("--threshold applies to --kernel rbf only (the linear kernel has no bandwidth).")
    if args.names_max_len < 2:
        raise CLIError(f"--names-max-len must be at least 2 (room for an ellipsis and one "
                       f"character); got {args.names_max_len}.")
    names, arrays, origins = load_representations(args.source)
    if args.out is not None:  # before the map is computed: a bad folder fails at once
        _make_out_dir(args.out)
    matrix = map_of(arrays, origins, args)
    # As `pyckafast cka`: valid inputs with an undefined result (a layer without variance)
    # exit 1, after the rest of the map is printed and written.
    status = 1 if np.isnan(matrix).any() else 0
    if len(names) <= _TABLE_MAX_LAYERS:
        print(_table(matrix, names, args.names_max_len))
    if args.out is None:
        return status
    json_path = os.path.join(args.out, "map.json")
    _writing(json_path, lambda: _write_json(json_path, names, matrix, origins,
                                            arrays[0].shape[0], args))
    print(f"wrote {json_path}")
    png_path = os.path.join(args.out, "map.png")
    return max(status, _writing(png_path, lambda: _write_png(png_path, matrix, names, args)))


def _make_out_dir(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"--out {path}: cannot create the folder ({exc.strerror or exc}).") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise CLIError(f"--out {path}: the folder is not writable.")


def _writing(path: str, write):
    """``write()``, with an OSError (disk full, permissions) as a CLIError naming the file."""
    try:
        return write()
    except OSError as exc:
        raise CLIError(f"{path}: cannot write ({exc.strerror or exc}).") from None


def map_of(arrays: list[np.ndarray], origins: list[str], args: argparse.Namespace) -> np.ndarray:
    """Compute the CKA map, with nan rows and columns for representations without variance.

    :func:`pyckafast.cka_matrix` runs on the representations with variance; each one without
    gets one stderr line naming its file.

    A constant layer has no CKA with anything, and with the RBF kernel its median bandwidth
    would be 0 and stop the whole map; leaving it out keeps every other pair.

    Parameters
    ----------
    arrays : list of numpy.ndarray
        The representations, same number of rows.
    origins : list of str
        Their files, for the messages.
    args : argparse.Namespace
        ``kernel``, ``debiased`` and ``threshold``.

    Returns
    -------
    numpy.ndarray, shape (len(arrays), len(arrays))
        The symmetric map.

    Examples
    --------
    >>> import argparse
    >>> import numpy as np
    >>> from pyckafast.cli.map import map_of
    >>> x = np.random.default_rng(0).normal(size=(50, 4))
    >>> args = argparse.Namespace(kernel="linear", debiased=False, threshold=None)
    >>> np.round(map_of([x, 2 * x], ["a.npy", "b.npy"], args), 6)
    array([[1., 1.],
           [1., 1.]])
    """
    from .. import cka_matrix

    varying = [i for i, a in enumerate(arrays) if not is_constant(a)]
    for i in sorted(set(range(len(arrays))) - set(varying)):
        print(f"pyckafast: warning: {origins[i]} has zero variance: its row and column of the map "
              "are undefined (null in map.json, grey in map.png).", file=sys.stderr)
    matrix = np.full((len(arrays), len(arrays)), np.nan)
    if not varying:
        return matrix
    chosen = [arrays[i] for i in varying]
    with naming_bad_values({origins[i]: arrays[i] for i in varying}), warnings_as_lines():
        bandwidth = {"threshold": args.threshold or 1.0} if args.kernel == "rbf" else {}
        part = cka_matrix(chosen, kernel=args.kernel, debiased=args.debiased, **bandwidth)
    matrix[np.ix_(varying, varying)] = part
    return matrix


def _table(matrix: np.ndarray, names: list[str], max_len: int) -> str:
    """The map as text with the same shortened names as the figure."""
    from ..plot import shorten_names  # pure Python: no matplotlib needed

    short, pattern = shorten_names(names, max_len)
    heading = f"layers: {pattern}\n" if pattern else ""
    return heading + format_matrix(matrix, short)


def format_matrix(matrix: np.ndarray, names: list[str], width: int = 8) -> str:
    """The map as a text table: a header of column numbers, one row per layer with its name.

    Parameters
    ----------
    matrix : numpy.ndarray, shape (k, k)
        The map (nan printed as "n/a").
    names : list of str
        The layers' names.
    width : int, default 8
        Characters per value column.

    Returns
    -------
    str
        A header line, then one line per layer.

    Examples
    --------
    >>> print(format_matrix(np.array([[1.0, 0.5], [0.5, 1.0]]), ["conv", "fc"]))
                 [0]     [1]
    [0] conv  1.0000  0.5000
    [1] fc    0.5000  1.0000
    """
    labels = [f"[{i}] {name}" for i, name in enumerate(names)]
    pad = max(len(s) for s in labels)
    header = " " * pad + "".join(f"{f'[{j}]':>{width}}" for j in range(matrix.shape[1]))
    rows = [label.ljust(pad) + "".join(f"{_cell(v):>{width}}" for v in row)
            for label, row in zip(labels, matrix)]
    return "\n".join([header, *rows])


def _cell(v: float) -> str:
    return "n/a" if np.isnan(v) else f"{v:.4f}"


def _write_json(path: str, names, matrix, origins, n: int, args) -> None:
    document = {
        "names": list(names), "files": list(origins), "n": int(n),
        "matrix": np.where(np.isfinite(matrix), matrix, None).tolist(),
        "options": {"kernel": args.kernel, "debiased": args.debiased,
                    "threshold": (args.threshold or 1.0) if args.kernel == "rbf" else None,
                    "bandwidth": "kornblith" if args.kernel == "rbf" else None},
    }
    with open(path, "w") as fh:
        json.dump(document, fh, indent=1)


def _write_png(path: str, matrix, names, args) -> int:
    from .._core.optional import MissingDependency, require

    try:
        matplotlib = require("matplotlib", "pyckafast map --out (the heatmap)")
        matplotlib.use("Agg", force=False)  # files only; never needs a display
        from ..plot import cka_heatmap
    except MissingDependency as exc:
        print(f"pyckafast: no figure written: {exc}", file=sys.stderr)
        return 1
    estimator = "debiased" if args.debiased else "biased"
    ax = cka_heatmap(matrix, names, names, names_max_len=args.names_max_len,
                     xlabel="layer", ylabel="layer",
                     title=f"{args.kernel} CKA ({estimator}), {os.path.basename(args.source)}",
                     cbar_label=f"{args.kernel} CKA")
    ax.figure.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(ax.figure)
    print(f"wrote {path}")
    return 0
