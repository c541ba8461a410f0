"""The parts of :func:`pyckafast.torch.compare_models` (torch is imported inside functions only):

* ``layers``: which submodules are hooked (names, glob patterns, module types; wrappers unwrapped)
* ``capture``: forward hooks that flatten each layer's output once per batch, on its device
* ``plan``: which layers stream into one :class:`~pyckafast.CKAMapState` and which are cached
* ``cache``: the on-disk activation cache (one raw file per layer, read back as memmaps)
* ``sink``: where the batches go, and the CKA map made from the state and the cache
* ``layer_map``: plan, state, cache and sink fed layer outputs batch by batch, for the front ends
  with hooks of their own (``compat``, ``torchmetrics``)
* ``side_by_side``: two models' forward passes of one batch in two threads, each on half of
  torch's intra-op pool (compare_models and the compat layers)
"""
