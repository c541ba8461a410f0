"""Layer maps on Dask arrays against the in-memory map: one command, a markdown table.

    python bench/dask_map.py [--n 20000] [--chunk 4096]

Six layers of 16 to 768 features (narrow: the per-chunk moment tree) and one of 3,000 features
at n = 2,000 (wide: the tiled chunk-pair pass), symmetric, debiased. Columns: the in-memory
map, the Dask map on the threaded scheduler and on a 2-worker ``distributed.LocalCluster``
(processes), their largest difference from the in-memory map, and the load average.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _layers(n: int, widths, chunk: int, seed: int = 0) -> list:
    """Dask layers made on the workers (no data in the graph): a shared signal's images."""
    import dask.array as da

    rng = da.random.default_rng(seed)
    z = rng.normal(size=(n, 16), chunks=(chunk, -1))
    weights = np.random.default_rng(seed).normal(size=(16, max(widths)))
    return [da.tanh(z @ weights[:, :p]) + 0.1 * rng.normal(size=(n, p), chunks=(chunk, -1)) + 3.0
            for p in widths]


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=4096)
    args = parser.parse_args()

    import dask
    import distributed

    import pyckafast

    cases = {"narrow (6 layers, 16-768)": (args.n, (16, 64, 128, 256, 512, 768)),
             "wide (3 layers, 64-3000)": (2_000, (64, 512, 3000))}
    print(f"load average before: {os.getloadavg()[0]:.1f}\n")
    print("| map | n | in memory (s) | Dask threads (s) | Dask 2 workers (s) | max abs diff |")
    print("|---|---|---|---|---|---|")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        for name, (n, widths) in cases.items():
            lazy = _layers(n, widths, min(args.chunk, n // 3 + 1))
            xs = [np.asarray(a) for a in dask.compute(*lazy, scheduler="threads")]
            want, t_mem = _timed(lambda: pyckafast.cka_matrix(xs, debiased=True))
            with dask.config.set(scheduler="threads"):  # the layers held by this process
                held = dask.persist(*lazy)
                got_t, t_thr = _timed(lambda: pyckafast.cka_matrix(list(held), debiased=True))
            with distributed.Client(cluster) as client:  # the layers held by the workers
                held = client.persist(lazy)
                distributed.wait(held)
                got_c, t_clu = _timed(lambda: pyckafast.cka_matrix(held, debiased=True))
            diff = max(np.abs(got_t - want).max(), np.abs(got_c - want).max())
            print(f"| {name} | {n} | {t_mem:.2f} | {t_thr:.2f} | {t_clu:.2f} | {diff:.1e} |")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
