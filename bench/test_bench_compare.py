"""compare_models on a small ResNet-18 (CIFAR) map: the exact full-dataset map against the
forward passes alone (the floor: no comparison can run without them), pytest-benchmark::

    pytest bench/test_bench_compare.py --benchmark-only

The full-size run (n = 10,000, the first block's 65,536 features, torch_cka beside it) is
``python bench/resnet_map.py``; its figures are in bench/README.md.
"""

import pytest

torch = pytest.importorskip("torch")

from resnet_map import LAYERS, loader, models  # noqa: E402

from pyckafast.torch import compare_models  # noqa: E402

N, BATCH = 500, 250


@pytest.fixture(scope="module")
def setup():
    a, b = models()
    return a, b, list(loader(N, BATCH))


def forward_floor(a, b, batches):
    with torch.no_grad():
        for (x,) in batches:
            a(x), b(x)


def test_forward_floor(benchmark, setup):
    a, b, batches = setup
    benchmark.pedantic(forward_floor, args=(a, b, batches), rounds=2, iterations=1)


@pytest.mark.parametrize("route", ["default", "all_cached"])
def test_compare_models_resnet18(benchmark, setup, route, tmp_path):
    a, b, batches = setup
    budget = {"default": None, "all_cached": 1}[route]
    m, _, _, report = benchmark.pedantic(
        compare_models, args=(a, b, batches, LAYERS),
        kwargs={"report": True, "max_state_bytes": budget, "cache_dir": tmp_path},
        rounds=2, iterations=1)
    benchmark.extra_info["cache_MB"] = round(sum(r["cache_bytes"] for r in report) / 2**20, 1)
    benchmark.extra_info["state_MB"] = round(sum(r["state_bytes"] for r in report) / 2**20, 1)
    assert m.shape == (len(LAYERS), len(LAYERS))
