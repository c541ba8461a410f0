"""Argument types and shared options of the command line: positive numbers, the sigma list,
the progress flags, the kernel-option rules, and the error of an undefined result. Every
command module imports them from here (none imports the package's ``__init__``)."""

from __future__ import annotations

import argparse
import math
import sys

from .files import CLIError

__all__ = ["BANDWIDTH_RULES", "UndefinedResult", "parse_sigma", "sigma_arg", "positive_int",
           "positive_float", "non_negative_int", "add_progress_options", "progress_enabled", "check_kernel_options"]

BANDWIDTH_RULES = ("kornblith", "offdiag", "sampled")


class UndefinedResult(CLIError):
    """Valid inputs whose CKA is undefined (zero variance): one line on stderr, exit status 1.

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> from pyckafast.cli import main
    >>> d = tempfile.mkdtemp()
    >>> np.save(os.path.join(d, "x.npy"), np.ones((5, 2))); np.save(os.path.join(d, "y.npy"), np.eye(5))
    >>> main(["cka", os.path.join(d, "x.npy"), os.path.join(d, "y.npy")])  # message on stderr
    1
    """


def parse_sigma(text: str) -> tuple[float, ...]:
    """Parse ``--sigma``: ``"2"`` -> (2.0,), ``"2,0.5"`` -> (2.0, 0.5).

    Parameters
    ----------
    text : str
        One bandwidth, or two separated by a comma (sigma_x, sigma_y).

    Returns
    -------
    tuple of float
        One or two finite numbers > 0.

    Raises
    ------
    ValueError
        Not numbers, more than two, or a value that is not finite and > 0.

    Examples
    --------
    >>> parse_sigma("2,0.5")
    (2.0, 0.5)
    """
    parts = [t.strip() for t in text.split(",")]
    try:
        values = tuple(float(t) for t in parts)
    except ValueError:
        raise ValueError(f"expected a number or two comma-separated numbers; got {text!r}") from None
    if len(values) not in (1, 2):
        raise ValueError(f"expected one bandwidth or two (SX,SY); got {len(values)} in {text!r}")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"bandwidths must be finite numbers > 0; got {text!r}")
    return values


def sigma_arg(text: str) -> tuple[float, ...]:
    """Parse ``--sigma`` for argparse: :func:`parse_sigma` raising argparse's error type.

    Parameters
    ----------
    text : str
        The option's value.

    Returns
    -------
    tuple of float
        One or two bandwidths.

    Raises
    ------
    argparse.ArgumentTypeError
        With :func:`parse_sigma`'s message.

    Examples
    --------
    >>> from pyckafast.cli import sigma_arg
    >>> sigma_arg("0.5")
    (0.5,)
    >>> sigma_arg("-1")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: bandwidths must be finite numbers > 0; got '-1'
    """
    try:
        return parse_sigma(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    """Parse a count that must be >= 1 (argparse ``type=``).

    Parameters
    ----------
    text : str
        The option's value.

    Returns
    -------
    int
        The count.

    Raises
    ------
    argparse.ArgumentTypeError
        Not an integer, or below 1.

    Examples
    --------
    >>> from pyckafast.cli import positive_int
    >>> positive_int("8")
    8
    >>> positive_int("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a positive integer; got 0
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
    return value


def positive_float(text: str) -> float:
    """Parse a multiplier that must be finite and > 0 (argparse ``type=``).

    Parameters
    ----------
    text : str
        The option's value.

    Returns
    -------
    float
        The multiplier.

    Raises
    ------
    argparse.ArgumentTypeError
        Not a number, not finite, or not > 0.

    Examples
    --------
    >>> from pyckafast.cli import positive_float
    >>> positive_float("0.5")
    0.5
    >>> positive_float("inf")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a finite number > 0; got 'inf'
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0; got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0; got {text!r}")
    return value


def add_progress_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--progress`` / ``--no-progress``; neither: a bar only when stderr is a terminal.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        A subcommand's parser; the choice lands in ``args.progress`` (None, True or False).

    Examples
    --------
    >>> import argparse
    >>> from pyckafast.cli import add_progress_options
    >>> parser = argparse.ArgumentParser()
    >>> add_progress_options(parser)
    >>> parser.parse_args([]).progress, parser.parse_args(["--no-progress"]).progress
    (None, False)
    """
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--progress", dest="progress", action="store_true", default=None,
                       help="draw a progress bar on stderr (default: only when stderr is a terminal)")
    group.add_argument("--no-progress", dest="progress", action="store_false",
                       help="never draw a progress bar")


def progress_enabled(args: argparse.Namespace) -> bool:
    """Decide whether to draw a progress bar.

    Parameters
    ----------
    args : argparse.Namespace
        With ``progress`` from :func:`add_progress_options`.

    Returns
    -------
    bool
        The user's --progress/--no-progress, else whether stderr is a terminal.

    Examples
    --------
    >>> import argparse
    >>> from pyckafast.cli import progress_enabled
    >>> progress_enabled(argparse.Namespace(progress=True))
    True
    """
    if args.progress is not None:
        return args.progress
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def check_kernel_options(args: argparse.Namespace) -> None:
    """Reject options the chosen kernel would ignore, and contradictory bandwidth options.

    Parameters
    ----------
    args : argparse.Namespace
        With ``kernel``, ``sigma``, ``threshold``, ``bandwidth`` and optionally ``chunk_size``.

    Raises
    ------
    CLIError
        Naming the option and the kernel it applies to.

    Examples
    --------
    >>> import argparse
    >>> from pyckafast.cli import check_kernel_options
    >>> args = argparse.Namespace(kernel="linear", sigma=(1.0,), threshold=None, bandwidth=None)
    >>> check_kernel_options(args)
    Traceback (most recent call last):
    ...
    pyckafast.cli.files.CLIError: --sigma applies to --kernel rbf only (the linear kernel has no bandwidth).
    """
    rbf_only = [flag for flag, value in (("--sigma", args.sigma), ("--threshold", args.threshold),
                                          ("--bandwidth", args.bandwidth)) if value is not None]
    if args.kernel == "linear" and rbf_only:
        raise CLIError(f"{rbf_only[0]} applies to --kernel rbf only (the linear kernel has no "
                       "bandwidth).")
    if args.kernel == "rbf" and getattr(args, "chunk_size", None) is not None:
        raise CLIError("--chunk-size applies to --kernel linear only (the RBF pass is tiled).")
    if args.sigma is not None and len(rbf_only) > 1:
        raise CLIError(f"--sigma sets the bandwidth; {rbf_only[1]} chooses it from the data: "
                       "give one or the other.")


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0 (seeds, sample counts).

    Examples
    --------
    >>> non_negative_int("0")
    0
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {value}")
    return value
