"""The activation cache: the flattened outputs of the layers too wide for a p x p state,
appended batch by batch to one raw file per layer and read back as read-only memmaps.

Files live in a fresh directory (under ``cache_dir`` or the system's temporary directory),
removed when the comparison ends unless ``keep_cache=True``; a kept directory holds
``manifest.json`` (layer -> file, shape, dtype) to read them again with ``numpy.memmap``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile

import numpy as np

__all__ = ["ActivationCache", "check_disk"]


class ActivationCache:
    """Append-only per-layer files of float rows; ``arrays()`` maps them once writing is done.

    Parameters
    ----------
    keys : list of (side, layer name)
        The cached layers (side: "model_a" or "model_b").
    cache_dir : str or path-like, optional
        Where the cache directory is made (default: the system's temporary directory).
    keep : bool
        Leave the files (and a manifest) in place after :meth:`close`.
    """

    def __init__(self, keys: list[tuple[str, str]], cache_dir=None, keep: bool = False):
        if cache_dir is not None:
            os.makedirs(cache_dir, exist_ok=True)
        self.directory = tempfile.mkdtemp(prefix="pyckafast-activations-", dir=cache_dir)
        self.keep = keep
        self.paths = {key: os.path.join(self.directory, f"{i:03d}-{key[0]}-{_safe(key[1])}.raw")
                      for i, key in enumerate(keys)}
        self.files = {key: open(path, "wb") for key, path in self.paths.items()}
        self.shapes: dict = {key: None for key in keys}
        self.dtypes: dict = {}

    def write(self, key: tuple[str, str], rows: np.ndarray) -> None:
        """Append a batch of rows (a C-contiguous (batch, p) array) of one layer."""
        n, p = rows.shape
        shape = self.shapes[key]
        if shape is None:
            self.dtypes[key] = rows.dtype
        elif rows.dtype != self.dtypes[key] or p != shape[1]:
            raise ValueError(f"layer {key[1]!r} of {key[0]} gave {p} features of {rows.dtype} in "
                             f"a later batch; its first batch had {shape[1]} of {self.dtypes[key]}.")
        self.files[key].write(memoryview(np.ascontiguousarray(rows)).cast("B"))
        self.shapes[key] = (n + (shape[0] if shape else 0), p)

    def nbytes(self, key: tuple[str, str]) -> int:
        """Bytes on disk of one layer's file."""
        n, p = self.shapes[key] or (0, 0)
        return n * p * (self.dtypes[key].itemsize if key in self.dtypes else 0)

    def arrays(self) -> dict:
        """Read-only memmaps of every layer's rows (call once, after the last write)."""
        for f in self.files.values():
            f.close()
        if self.keep:
            self._write_manifest()
        return {key: np.memmap(path, dtype=self.dtypes[key], mode="r", shape=self.shapes[key])
                for key, path in self.paths.items()}

    def _write_manifest(self) -> None:
        manifest = [{"model": side, "layer": layer, "file": os.path.basename(self.paths[(side, layer)]),
                     "shape": list(self.shapes[(side, layer)]), "dtype": str(self.dtypes[(side, layer)])}
                    for side, layer in self.paths]
        with open(os.path.join(self.directory, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1)

    def close(self) -> None:
        """Close the files and remove the directory (unless kept)."""
        for f in self.files.values():
            f.close()
        if not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)


def check_disk(directory, needed: int) -> None:
    """Raise a clear error before the pass if ``directory``'s disk cannot hold ``needed`` bytes."""
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise OSError(f"the activation cache needs about {needed / 2**30:.3g} GiB in {directory}, "
                      f"whose disk has {free / 2**30:.3g} GiB free; pass cache_dir= on a larger "
                      "disk, compare fewer or narrower layers, or raise max_state_bytes.")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80] or "root"
