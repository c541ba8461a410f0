"""The typing aliases of the public signatures: in step with the runtime specs, and resolvable.

No type checker runs in CI; these checks need none: every public annotation must evaluate under
:func:`typing.get_type_hints` (a misspelt or missing name fails here), the option Literals must
list exactly what the parameter specs accept, and the package must stay marked as typed.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

import pyckafast
from pyckafast._core import bandwidth, dispatch, params, types

ROOT = Path(__file__).resolve().parents[1]


def _options(constraints) -> tuple[str, ...]:
    (only,) = [c for c in constraints if isinstance(c, params.StrOptions)]
    return only.options


@pytest.mark.parametrize("alias, accepted", [
    (types.Backend, _options(params.BACKEND)),
    (types.CPUBackend, _options(params.CPU_BACKEND)),
    (types.Precision, _options(params.PRECISION)),
    (types.Kernel, _options(params.KERNEL)),
    (types.Form, _options(params.FORM)),
    (types.Bandwidth, bandwidth.RULES),
])
def test_literal_lists_what_the_spec_accepts(alias, accepted):
    assert set(typing.get_args(alias)) == set(accepted)


def test_backend_names_are_the_registry():
    assert typing.get_args(types.Backend) == ("auto", *dispatch.BACKENDS)


def test_array_like_describes_the_inputs_without_importing_them():
    # Nested sequences and NumPy arrays are numpy's ArrayLike; device arrays are DLPack producers.
    class DeviceArray:
        def __dlpack__(self, *args, **kwargs):
            return None

        def __dlpack_device__(self):
            return (2, 0)

    assert isinstance(DeviceArray(), types.SupportsDLPack)
    assert not isinstance(np.zeros(2).tolist(), types.SupportsDLPack)
    assert types.SupportsDLPack in typing.get_args(types.ArrayLike)


def _public_objects():
    sys.path.insert(0, str(Path(__file__).parent))
    from test_numpydoc import public_callables
    from numpydoc.validate import Validator

    return [(name, Validator._load_obj(name)) for name in public_callables()]


def test_every_public_annotation_resolves():
    bad = []
    for name, obj in _public_objects():
        targets = [obj, obj.__init__] if inspect.isclass(obj) else [obj]
        for target in targets:
            try:
                typing.get_type_hints(target)
            except Exception as exc:  # noqa: BLE001 - report every kind of failure by name
                bad.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not bad, "\n".join(bad)


def test_front_door_is_typed():
    hints = typing.get_type_hints(pyckafast.linear_cka)
    assert hints["x"] == types.ArrayLike
    assert hints["backend"] == types.Backend
    assert hints["precision"] == types.Precision
    assert typing.get_type_hints(pyckafast.rbf_cka)["bandwidth"] == types.Bandwidth


def test_types_import_no_optional_package():
    code = ("import sys, pyckafast._core.types; "
            "bad = [m for m in ('cupy', 'torch', 'dask', 'jax') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_package_is_marked_typed():
    assert (ROOT / "pyckafast" / "py.typed").is_file()
    assert 'pyckafast = ["py.typed"]' in (ROOT / "pyproject.toml").read_text()
