"""The activation cache: the flattened outputs of the layers too wide for a p x p state,
appended batch by batch to one raw file per layer, read back by row range while the batches
still arrive (:meth:`ActivationCache.read`) or as read-only memmaps once writing is done.

Files live in a fresh directory (under ``cache_dir`` or the system's temporary directory),
removed when the comparison ends unless ``keep_cache=True``; a kept directory holds
``manifest.json`` (layer -> file, shape, dtype) to read them again with ``numpy.memmap``.

On every error path the directory and its files are removed (unless kept): a full disk
(ENOSPC) raises again when a file with buffered rows is closed, so closing never stops the
removal. Where torch's intra-op threads leave a core free, writes run on one background thread
(in order), so the batch loop does not wait on the disk; ``seconds`` counts the time spent
writing, flushing and reading (the report's "disk"; with the writer thread, mostly hidden behind
the loop's work).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time

import numpy as np

__all__ = ["ActivationCache", "MemoryCache", "check_disk"]

# Writes in flight at most (each holds its batch of one layer's rows).
_PENDING = 16


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
        self.seconds = 0.0
        self.paths = {key: os.path.join(self.directory, f"{i:03d}-{key[0]}-{_safe(key[1])}.raw")
                      for i, key in enumerate(keys)}
        self.files: dict = {}
        self.readers: dict = {}
        self.unflushed: set = set()  # layers with rows written since their last flush
        self.executor = None
        self.pending: list = []  # writes in flight, oldest first
        self.background = _spare_core()
        self.shapes: dict = {key: None for key in keys}
        self.dtypes: dict = {}
        try:
            for key, path in self.paths.items():
                self.files[key] = open(path, "wb")
        except BaseException:  # e.g. too many open files: nothing may stay behind
            self.close()
            raise

    def write(self, key: tuple[str, str], rows: np.ndarray) -> None:
        """Append a batch of rows (a C-contiguous (batch, p) array) of one layer."""
        n, p = rows.shape
        shape = self.shapes[key]
        if shape is None:
            self.dtypes[key] = rows.dtype
        elif rows.dtype != self.dtypes[key] or p != shape[1]:
            raise ValueError(f"layer {key[1]!r} of {key[0]} gave {p} features of {rows.dtype} in "
                             f"a later batch; its first batch had {shape[1]} of {self.dtypes[key]}.")
        data = memoryview(np.ascontiguousarray(rows)).cast("B")  # holds the rows until written
        if self.background:
            self._settle(_PENDING)  # a failed earlier write raises here; few batches in flight
            self.pending.append(self._writer().submit(self._write, key, data))
        else:
            self._write(key, data)
        self.unflushed.add(key)
        self.shapes[key] = (n + (shape[0] if shape else 0), p)

    def _writer(self):
        """The one thread that writes: a write waits on the disk (page allocation, writeback)
        more than on a core, so the batch loop goes on meanwhile; one thread keeps each file's
        rows in order."""
        if self.executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self.executor = ThreadPoolExecutor(1, thread_name_prefix="pyckafast-cache")
        return self.executor

    def _write(self, key, data) -> None:
        start = time.perf_counter()
        try:
            self.files[key].write(data)
        finally:
            self.seconds += time.perf_counter() - start

    def _settle(self, keep: int = 0) -> None:
        """Wait until at most ``keep`` writes are in flight; re-raise the first that failed."""
        while len(self.pending) > keep:
            self.pending.pop(0).result()

    def read(self, key: tuple[str, str], start: int, out: np.ndarray) -> np.ndarray:
        """Rows [start, start + len(out)) of one layer, as written so far, into ``out`` (a
        C-contiguous array of the layer's dtype and width): the reads of the tiled pass that
        runs while the batches arrive."""
        began = time.perf_counter()
        try:
            self._settle()
            if key in self.unflushed:
                self.files[key].flush()
                self.unflushed.discard(key)
            if key not in self.readers:
                self.readers[key] = os.open(self.paths[key], os.O_RDONLY)
            view = memoryview(out.reshape(-1)).cast("B")
            offset = start * out.shape[1] * out.itemsize
            done = 0
            while done < len(view):  # a short read is not the end of a regular file's rows
                got = os.preadv(self.readers[key], [view[done:]], offset + done)
                if got == 0:
                    raise OSError(f"the activation cache file of layer {key[1]!r} of {key[0]} "
                                  f"ended at byte {offset + done} of {self.paths[key]}; rows "
                                  f"{start}..{start + len(out) - 1} were written to it.")
                done += got
        finally:
            self.seconds += time.perf_counter() - began
        return out

    def nbytes(self, key: tuple[str, str]) -> int:
        """Bytes on disk of one layer's file."""
        n, p = self.shapes[key] or (0, 0)
        return n * p * (self.dtypes[key].itemsize if key in self.dtypes else 0)

    def finish(self) -> None:
        """Close the files once the last batch is written (a full disk raises here, where the
        last buffered rows go out), and write the manifest of a kept cache."""
        start = time.perf_counter()
        try:
            self._settle()
            for f in self.files.values():
                f.close()
            self.unflushed.clear()
        finally:
            self.seconds += time.perf_counter() - start
        if self.keep:
            self._write_manifest()

    def arrays(self) -> dict:
        """Read-only memmaps of every layer's rows (call once, after the last write)."""
        self.finish()
        return {key: np.memmap(path, dtype=self.dtypes[key], mode="r", shape=self.shapes[key])
                for key, path in self.paths.items()}

    def _write_manifest(self) -> None:
        manifest = [{"model": side, "layer": layer, "file": os.path.basename(self.paths[(side, layer)]),
                     "shape": list(self.shapes[(side, layer)] or (0, 0)),
                     "dtype": str(self.dtypes.get((side, layer), "float32"))}
                    for side, layer in self.paths]
        with open(os.path.join(self.directory, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1)

    def close(self) -> None:
        """Close the files and remove the directory (unless kept). Runs on every path out of a
        comparison, errors included: a file that fails to close (its buffered rows hit a full
        disk again) is still closed and the directory still removed."""
        if self.executor is not None:  # no write may run while the files close
            self.executor.shutdown(wait=True)
            self.executor = None
        self.pending.clear()  # their errors: the error being handled, or a later one
        for fd in self.readers.values():
            _quietly(os.close, fd)
        self.readers.clear()
        for f in self.files.values():
            # A file whose buffered rows fail to go out (ENOSPC again) raises from close() but
            # is closed all the same (its descriptor too): the rows are being discarded anyway.
            _quietly(f.close)
        if not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __exit__(self, kind, error, tb) -> bool:
        """For ``ExitStack.push``: close, and on an error of a kept cache say where it is."""
        self.close()
        if error is not None and self.keep:
            _add_note(error, f"The activation cache is kept in {self.directory} "
                             "(keep_cache=True); remove it when done.")
        return False


class MemoryCache:
    """The activation cache held in RAM, for a comparison whose cached rows fit the memory
    available (:func:`pyckafast.torch.compare_models` decides, before the first write): the
    interface of :class:`ActivationCache` without files. Writing 1.5 GB of rows to files in the
    loop made the forward passes 1.6x slower (page-cache writeback on the same cores) and cost
    5 s of the ResNet job's 25 s.

    Parameters
    ----------
    keys : list of (side, layer name)
        The cached layers.
    rows : int
        The rows expected (arrays grow if more come).
    """

    directory = None
    paths: dict = {}
    seconds = 0.0

    def __init__(self, keys: list[tuple[str, str]], rows: int):
        self.rows = rows
        self.data: dict = {key: None for key in keys}
        self.shapes: dict = {key: None for key in keys}

    def write(self, key: tuple[str, str], rows: np.ndarray) -> None:
        """Append a batch of rows (a (batch, p) array) of one layer."""
        n, p = rows.shape
        have, data = self.shapes[key], self.data[key]
        if data is None:
            data = self.data[key] = np.empty((max(self.rows, n), p), rows.dtype)
        elif rows.dtype != data.dtype or p != data.shape[1]:
            raise ValueError(f"layer {key[1]!r} of {key[0]} gave {p} features of {rows.dtype} in "
                             f"a later batch; its first batch had {data.shape[1]} of {data.dtype}.")
        start = have[0] if have else 0
        if start + n > len(data):  # more rows than the loader's length promised
            data = self.data[key] = np.concatenate([data[:start], np.empty_like(data[:start + n])])
        data[start:start + n] = rows
        self.shapes[key] = (start + n, p)

    def read(self, key: tuple[str, str], start: int, out: np.ndarray) -> np.ndarray:
        """Rows [start, start + len(out)) of one layer into ``out``."""
        out[...] = self.data[key][start:start + len(out)]
        return out

    def nbytes(self, key: tuple[str, str]) -> int:
        """Bytes held of one layer's rows."""
        n, p = self.shapes[key] or (0, 0)
        return n * p * self.data[key].itemsize if n else 0

    def finish(self) -> None:
        """Nothing to flush."""

    def arrays(self) -> dict:
        """Read-only views of every layer's rows."""
        views = {}
        for key, data in self.data.items():
            view = data[:self.shapes[key][0]]
            view.flags.writeable = False
            views[key] = view
        return views

    def close(self) -> None:
        """Let the rows go."""
        self.data = {key: None for key in self.data}

    def __exit__(self, kind, error, tb) -> bool:
        self.close()
        return False


def _spare_core() -> bool:
    """Whether a core is left beside torch's intra-op threads for the writer thread (else the
    writes run in the loop: a thread on top of torch's would slow its parallel regions)."""
    from .._core.threads import available_cores

    try:
        import torch
    except ImportError:
        return available_cores() > 1
    return available_cores() > torch.get_num_threads()


def _quietly(fn, *args) -> bool:
    """Call ``fn``; False (and nothing raised) if it raised an OSError."""
    try:
        fn(*args)
    except OSError:
        return False
    return True


def _add_note(error: BaseException, note: str) -> None:
    if hasattr(error, "add_note"):  # Python >= 3.11
        error.add_note(note)
    elif isinstance(error, OSError) and error.strerror:
        error.strerror = f"{error.strerror}. {note}"


def check_disk(directory, needed: int) -> None:
    """Raise a clear error before the pass if ``directory``'s disk cannot hold ``needed`` bytes."""
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise OSError(f"the activation cache needs about {needed / 2**30:.3g} GiB in {directory}, "
                      f"whose disk has {free / 2**30:.3g} GiB free; pass cache_dir= on a larger "
                      "disk, compare fewer or narrower layers, or raise max_state_bytes.")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80] or "root"
