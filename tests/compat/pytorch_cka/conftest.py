"""pytorch-cka 1.1.3's own tests, run against pyckafast.compat.pytorch_cka.

The test files are pytorch-cka's (MIT license, copyright (c) 2025 Suhyeon; LICENSE beside this
file) with only their import lines changed. Tests that encode a defect of pytorch-cka, or a
property of its minibatch estimate that the exact full-dataset computation does not share, are
marked here as strict xfails with the reason (docs/COMPAT.md lists them): they must keep
failing, so a change that reintroduces the old behaviour is noticed.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="pytorch-cka's tests need torch (pyckafast[torch])")

# test node id (file::class::test) -> why it fails against the exact implementation
EXPECTED_FAILURES = {
    "test_cka_extended.py::TestCompare::test_small_batch_raises_error":
        "minibatch-estimate specific: pytorch-cka needs > 3 samples per batch for its per-batch "
        "unbiased HSIC; the exact full-dataset CKA streams batches of any size",
    "test_cka_extended.py::TestComputeCkaMatrix::test_zero_denominator_handling":
        "pytorch-cka reports CKA = 0 when HSIC(x, x) HSIC(y, y) = 0; CKA is undefined there and "
        "pyckafast gives nan (with a RuntimeWarning) instead of a value that reads as "
        "'dissimilar'",
    "test_cka_from_features.py::TestCkaFromFeatures::test_values_in_range":
        "pytorch-cka clamps CKA to [0, 1]; debiased CKA of independent data is near 0 and "
        "negative about half the time, and clamping hides that (and biases averages upward)",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        key = "::".join([item.path.name, *item.nodeid.split("::")[1:]])
        reason = EXPECTED_FAILURES.get(key)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))


@pytest.fixture(autouse=True)
def _seeded_torch():
    """pytorch-cka's tests draw unseeded data and models. Its clamping to [0, 1] hides the sign
    of CKA values near 0; the exact debiased values keep it, so a test asserting >= 0 on random
    models would pass or fail by chance. Each test runs from one fixed seed, so each outcome
    is reproducible (and a strict xfail above is a deterministic failure)."""
    import torch

    torch.manual_seed(0)
