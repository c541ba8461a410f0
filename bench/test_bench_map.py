"""Layer x layer linear CKA maps of wide layers: the tiled map against the bare BLAS of its tiles.

L = 8 float32 layers of n samples and p = 4096 ... 16384 features (p > n: every pair goes through
the tiled sample-space map of :func:`pyckafast.cka_matrix`). Three measurements on the same data,
in one run:

* ``tile_floor``: the products the map cannot avoid: for every block pair a <= b of the upper
  triangle, every layer's Gram tile X_a X_b' (SYRK on the diagonal), BLAS in float32, with the
  map's tile, on data centred beforehand (the floor neither centres, nor converts, nor sums);
* ``tiled_map``: ``cka_matrix(layers)`` (all 28 pairs, one pass, each tile computed once);
* ``per_pair``: ``linear_cka(x_i, x_j, form="tiles")`` for each pair i < j (each pair's pass
  computes both layers' tiles again).

Run as a benchmark (``pytest bench/test_bench_map.py --benchmark-only``) or as a script that prints
the table with the machine's load (``python bench/test_bench_map.py [--n 4000] [--per-pair]``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc

import numpy as np
import pytest

import pyckafast
from pyckafast._cpu.tiled_map import map_tile_rows

N = 4000
WIDTHS = (4096, 4096, 6144, 8192, 8192, 12288, 16384, 16384)


def make_layers(n: int = N, widths=WIDTHS, seed: int = 0) -> list[np.ndarray]:
    """Related float32 layers with a column mean of 10 (a common 64-d signal plus noise)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 64), dtype=np.float32)
    layers = []
    for k, p in enumerate(widths):
        a = np.empty((n, p), np.float32)
        w = rng.standard_normal((64, p), dtype=np.float32)
        for lo in range(0, n, 1000):
            hi = min(n, lo + 1000)
            a[lo:hi] = z[lo:hi] @ w + (1 + k) * rng.standard_normal((hi - lo, p),
                                                                    dtype=np.float32) + 10.0
        layers.append(a)
    return layers


def tile_floor(centred: list[np.ndarray], tile: int) -> None:
    """Every layer's upper-triangle Gram tiles, nothing else."""
    n = centred[0].shape[0]
    for lo in range(0, n, tile):
        for lo_b in range(lo, n, tile):
            for a in centred:
                block = a[lo:lo + tile]
                block @ (block if lo_b == lo else a[lo_b:lo_b + tile]).T


def per_pair(layers: list[np.ndarray]) -> np.ndarray:
    out = np.eye(len(layers))
    for i in range(len(layers)):
        for j in range(i + 1, len(layers)):
            out[i, j] = out[j, i] = pyckafast.linear_cka(layers[i], layers[j], form="tiles")
    return out


def tiled_map(layers: list[np.ndarray]) -> np.ndarray:
    return pyckafast.cka_matrix(layers)


@pytest.fixture(scope="module")
def layers():
    return make_layers()


@pytest.mark.parametrize("method", ["tile_floor", "tiled_map", "per_pair"])
def test_wide_layer_map(benchmark, layers, method):
    tile = map_tile_rows([a.shape[1] for a in layers], 4)
    benchmark.group = f"cka_matrix L={len(layers)} n={N} p={WIDTHS[0]}..{WIDTHS[-1]} float32"
    benchmark.extra_info.update(method=method, n=N, widths=list(WIDTHS), tile=tile,
                                load=os.getloadavg()[0])
    if method == "tile_floor":
        centred = [a - a.mean(axis=0) for a in layers]  # outside the timing
        benchmark.pedantic(tile_floor, args=(centred, tile), rounds=1, iterations=1)
    else:
        fn = tiled_map if method == "tiled_map" else per_pair
        benchmark.pedantic(fn, args=(layers,), rounds=1, iterations=1)


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def _peak_mb(fn, *args) -> float:
    """Peak bytes allocated through NumPy while ``fn`` runs (beyond its inputs), in MiB."""
    tracemalloc.start()
    try:
        fn(*args)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=N)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every width")
    parser.add_argument("--repeat", type=int, default=2,
                        help="floor and map timed alternately this many times (best kept)")
    parser.add_argument("--per-pair", action="store_true", help="also time the per-pair passes")
    args = parser.parse_args(argv)
    widths = [max(64, int(p * args.scale)) for p in WIDTHS]
    layers = make_layers(args.n, widths)
    tile = map_tile_rows(widths, 4)
    centred = [a - a.mean(axis=0) for a in layers]
    data_mb = sum(a.nbytes for a in layers) / 2**20
    print(f"L = {len(widths)} float32 layers, n = {args.n}, p = {widths} ({data_mb:.0f} MiB), "
          f"tile = {tile}, threads = {pyckafast.get_num_threads()}")
    load = [os.getloadavg()[0]]
    floors, maps = [], []
    for _ in range(args.repeat):  # alternate, so that a change of load hits both
        floors.append(_timed(tile_floor, centred, tile)[0])
        t, m = _timed(tiled_map, layers)
        maps.append(t)
        load.append(os.getloadavg()[0])
    del centred
    t_floor = min(floors)
    rows = [("tile_floor (bare BLAS of the map's tiles)", floors),
            ("tiled_map (cka_matrix, one pass)", maps)]
    if args.per_pair:
        t_pairs, m_pairs = _timed(per_pair, layers)
        rows.append((f"per_pair ({len(widths) * (len(widths) - 1) // 2} linear_cka passes)",
                     [t_pairs]))
        load.append(os.getloadavg()[0])
        print(f"max |map - per-pair| = {np.abs(m - m_pairs).max():.2e}")
    print("| method | best | all runs | best / floor |\n|---|---|---|---|")
    for name, times in rows:
        runs = ", ".join(f"{t:.1f}" for t in times)
        print(f"| {name} | {min(times):.2f} s | {runs} | {min(times) / t_floor:.2f} |")
    print(f"peak memory of the map beyond its inputs: {_peak_mb(tiled_map, layers):.0f} MiB")
    print(f"1-minute load average at the start / after each round: "
          f"{' / '.join(f'{v:.1f}' for v in load)}")


if __name__ == "__main__":
    sys.exit(main())
