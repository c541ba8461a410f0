"""Declarative parameter specs for the public functions, checked before any data is touched.

Modelled on scikit-learn's ``validate_params``: each public function declares, per parameter, a
list of constraints (the value must satisfy at least one), attached by :func:`validate_params`
so tests can read it (``fn.parameter_spec``) and generate invalid values. Every violation raises
:class:`InvalidParameterError` with one template::

    The 'chunk_size' parameter of linear_cka must be a positive integer or None. Got True (bool) instead.

Booleans are never integers here (``chunk_size=True`` is an error), integral floats are not
integers (``tile=7.0`` is an error), and numbers must be finite.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, TypeVar

import numpy as np

__all__ = ["InvalidParameterError", "Constraint", "Interval", "StrOptions", "Boolean", "NoneOf",
           "Callables", "Strings", "PositivePair", "validate_params", "check_params", "positive_int",
           "optional_positive_int", "positive_real", "OPTIONAL", "describe", "BOOLEAN", "BACKEND",
           "CPU_BACKEND", "KERNEL", "PRECISION", "FORM", "ROWS", "SEED", "SIGMA", "PROGRESS",
           "Rule", "Ignored", "given", "is_not", "equals", "check_rules", "RBF_RULES",
           "KERNEL_RULES"]

F = TypeVar("F", bound=Callable[..., Any])


class InvalidParameterError(ValueError, TypeError):
    """A public function got a parameter value outside its spec (a ValueError and a TypeError,
    as both kinds of mistake, wrong type or wrong value, land here)."""


class Constraint(ABC):
    """One acceptable kind of value; ``str()`` is the phrase used in the error message."""

    @abstractmethod
    def is_satisfied_by(self, value: object) -> bool:
        """Whether ``value`` is of this kind."""


def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class Interval(Constraint):
    """A finite int (``kind=Integral``) or real (``kind=Real``) in [left, right]; None is an
    open end. ``closed`` says which ends belong to the interval: "both", "left", "right" or
    "neither"."""

    kind: type
    left: float | None
    right: float | None
    closed: str = "both"

    def is_satisfied_by(self, value: object) -> bool:
        if not (_is_int(value) if self.kind is Integral else _is_real(value)):
            return False
        v = float(value)  # type: ignore[arg-type]
        if not math.isfinite(v):
            return False
        if self.left is not None:
            if v < self.left or (v == self.left and self.closed in ("right", "neither")):
                return False
        if self.right is not None:
            if v > self.right or (v == self.right and self.closed in ("left", "neither")):
                return False
        return True

    def __str__(self) -> str:
        noun = "integer" if self.kind is Integral else "real number"
        if self in (positive_int(), positive_real()):
            return f"a positive {noun}"
        if self == Interval(self.kind, 0, None):
            return f"a non-negative {noun}"
        lo = "[" if self.left is not None and self.closed in ("both", "left") else "("
        hi = "]" if self.right is not None and self.closed in ("both", "right") else ")"
        left = "-inf" if self.left is None else f"{self.left:g}"
        right = "inf" if self.right is None else f"{self.right:g}"
        return f"{'an' if self.kind is Integral else 'a'} {noun} in the range {lo}{left}, {right}{hi}"


@dataclass(frozen=True)
class StrOptions(Constraint):
    """One of a fixed set of strings."""

    options: tuple[str, ...]

    def __init__(self, options: Iterable[str]) -> None:
        object.__setattr__(self, "options", tuple(options))

    def is_satisfied_by(self, value: object) -> bool:
        return isinstance(value, str) and value in self.options

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)


class Boolean(Constraint):
    """True or False (NumPy booleans too); 0, 1 and strings are not booleans."""

    def is_satisfied_by(self, value: object) -> bool:
        return isinstance(value, (bool, np.bool_))

    def __str__(self) -> str:
        return "a bool"


class NoneOf(Constraint):
    """The value None (named so that ``None`` itself stays the value)."""

    def is_satisfied_by(self, value: object) -> bool:
        return value is None

    def __str__(self) -> str:
        return "None"


class Strings(Constraint):
    def is_satisfied_by(self, value: object) -> bool:
        return isinstance(value, str)

    def __str__(self) -> str:
        return "a str"


class Callables(Constraint):
    def is_satisfied_by(self, value: object) -> bool:
        return callable(value)

    def __str__(self) -> str:
        return "a callable"


class PositivePair(Constraint):
    """A sequence of exactly two finite reals > 0 (e.g. (sigma_x, sigma_y))."""

    def is_satisfied_by(self, value: object) -> bool:
        return (isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, str)
                and len(value) == 2 and all(positive_real().is_satisfied_by(v) for v in value))

    def __str__(self) -> str:
        return "a pair of positive real numbers"


def positive_int() -> Interval:
    return Interval(Integral, 1, None)


def positive_real() -> Interval:
    return Interval(Real, 0, None, closed="neither")


OPTIONAL = NoneOf()


def optional_positive_int() -> list[Constraint]:
    return [positive_int(), OPTIONAL]


def describe(constraints: Sequence[Constraint]) -> str:
    """'a, b or c' for the constraints of one parameter."""
    words = [str(c) for c in constraints]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_params(owner: str, spec: Mapping[str, Sequence[Constraint]],
                 values: Mapping[str, object]) -> None:
    """Raise :class:`InvalidParameterError` for the first value in ``values`` that meets none of
    its constraints in ``spec``; names missing from ``spec`` are not checked."""
    for name, value in values.items():
        constraints = spec.get(name)
        if constraints is None or any(c.is_satisfied_by(value) for c in constraints):
            continue
        raise InvalidParameterError(
            f"The {name!r} parameter of {owner} must be {describe(constraints)}. "
            f"Got {_shown(value)} ({type(value).__name__}) instead."
        )


def validate_params(spec: Mapping[str, Sequence[Constraint]], *, owner: str | None = None,
                    rules: Sequence[Rule] = ()) -> Callable[[F], F]:
    """Decorator: check the arguments of every call against ``spec`` before the body runs, then
    the ``rules`` between arguments (an argument that the others make ignored or contradictory).

    The spec is kept on the function as ``parameter_spec``, the rules as ``parameter_rules`` (and
    the name used in messages as ``parameter_owner``), so tests can generate invalid values for
    every parameter and a contradictory call for every rule.
    """

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)
        named = set(spec) | {n for rule in rules for n in rule.names}
        unknown = named - set(signature.parameters)
        if unknown:  # a spec that names no parameter would silently check nothing
            raise TypeError(f"spec of {fn.__qualname__} names unknown parameters {sorted(unknown)}")
        name = owner or fn.__name__

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            check_params(name, spec, bound.arguments)
            if rules:
                bound.apply_defaults()
                check_rules(name, rules, bound.arguments, signature)
            return fn(*args, **kwargs)

        wrapper.parameter_spec = dict(spec)  # type: ignore[attr-defined]
        wrapper.parameter_rules = tuple(rules)  # type: ignore[attr-defined]
        wrapper.parameter_owner = name  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


# ---- rules between parameters: an argument the others make ignored or contradictory -----------
class Rule(ABC):
    """A condition on several arguments; ``names`` are the parameters it reads."""

    names: tuple[str, ...]

    @abstractmethod
    def violation(self, values: Mapping[str, object],
                  defaults: Mapping[str, object]) -> tuple[str, str] | None:
        """(parameter, what it must be) when ``values`` break the rule, else None."""


@dataclass(frozen=True)
class Condition:
    """A predicate on the (default-filled) arguments and its phrase in messages."""

    test: Callable[[Mapping[str, object]], bool]
    phrase: str
    names: tuple[str, ...]

    def __call__(self, values: Mapping[str, object]) -> bool:
        return self.test(values)

    def __or__(self, other: Condition) -> Condition:
        return Condition(lambda v: self(v) or other(v), f"{self.phrase} or {other.phrase}",
                         self.names + other.names)


def given(name: str) -> Condition:
    """``name`` is not None."""
    return Condition(lambda v: v[name] is not None, f"{name!r} is given", (name,))


def is_not(name: str, value: object) -> Condition:
    """``name`` differs from ``value`` (e.g. ``bandwidth`` is not "sampled")."""
    return Condition(lambda v: v[name] != value, f"{name}={value!r} is not set", (name,))


def equals(name: str, value: object) -> Condition:
    """``name`` equals ``value``."""
    return Condition(lambda v: v[name] == value, f"{name}={value!r}", (name,))


@dataclass(frozen=True)
class Ignored(Rule):
    """``param`` would be ignored (or contradict another argument) while ``when`` holds, so it
    must keep its default then; ``why`` says what sets the value instead."""

    param: str
    when: Condition
    why: str = ""

    @property
    def names(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.param, *self.when.names)

    def violation(self, values, defaults):
        default = defaults[self.param]
        value = values[self.param]
        # None says "not given" (numpy's convention for seeds): never a contradiction
        if not self.when(values) or value is None or _same(value, default):
            return None
        why = f" ({self.why})" if self.why else ""
        return self.param, f"left at its default {default!r} when {self.when.phrase}{why}"


def _same(value: object, default: object) -> bool:
    if value is default:
        return True
    try:
        return bool(value == default)
    except (TypeError, ValueError):  # arrays compare element-wise: not the (scalar) default
        return False


def check_rules(owner: str, rules: Sequence[Rule], values: Mapping[str, object],
                signature: inspect.Signature) -> None:
    """Raise :class:`InvalidParameterError`, in the one template, for the first broken rule."""
    defaults = {n: p.default for n, p in signature.parameters.items()}
    for rule in rules:
        broken = rule.violation(values, defaults)
        if broken is not None:
            name, expected = broken
            value = values[name]
            raise InvalidParameterError(
                f"The {name!r} parameter of {owner} must be {expected}. "
                f"Got {_shown(value)} ({type(value).__name__}) instead."
            )


# ---- the constraints the public functions share (each rule written once) ----------------------
def _backends(device: str | None = None) -> list[Constraint]:
    from .dispatch import BACKENDS  # the registry is the list of names

    names = [n for n, b in BACKENDS.items() if device is None or b.device == device]
    return [StrOptions(("auto", *names))]


BOOLEAN: list[Constraint] = [Boolean()]
BACKEND = _backends()
CPU_BACKEND = _backends("cpu")  # Dask workers run CPU backends
KERNEL: list[Constraint] = [StrOptions(("linear", "rbf"))]
PRECISION: list[Constraint] = [StrOptions(("highest", "tf32"))]
FORM: list[Constraint] = [StrOptions(("auto", "features", "samples", "tiles"))]
ROWS = optional_positive_int()  # chunk_size, tile: rows per chunk or tile, None for the default
SEED: list[Constraint] = [OPTIONAL, Interval(Integral, 0, None)]  # None: fresh OS entropy
SIGMA: list[Constraint] = [OPTIONAL, positive_real(), PositivePair()]
PROGRESS: list[Constraint] = [OPTIONAL, Boolean(), Callables()]

# An explicit sigma sets the bandwidth; threshold, bandwidth, n_pairs and seed choose it from the
# data, and n_pairs/seed only mean something to the sampled median.
RBF_RULES: tuple[Rule, ...] = (
    Ignored("threshold", given("sigma"), "sigma sets the bandwidth; threshold scales a median"),
    Ignored("bandwidth", given("sigma"), "sigma sets the bandwidth; bandwidth picks a median"),
    Ignored("n_pairs", given("sigma") | is_not("bandwidth", "sampled"),
            "n_pairs is the sample size of the sampled median"),
    Ignored("seed", given("sigma") | is_not("bandwidth", "sampled"),
            "seed draws the pairs of the sampled median"),
)
# cka()/hsic(): the options of the other kernel are errors, then the RBF rules.
_LINEAR_ONLY = ("chunk_size", "form", "precision")
_RBF_ONLY = ("sigma", "threshold", "bandwidth", "n_pairs", "seed", "tile")
KERNEL_RULES: tuple[Rule, ...] = (
    *(Ignored(name, equals("kernel", "rbf"), "a linear-kernel option") for name in _LINEAR_ONLY),
    *(Ignored(name, equals("kernel", "linear"), "an RBF-kernel option") for name in _RBF_ONLY),
    *RBF_RULES,
)
