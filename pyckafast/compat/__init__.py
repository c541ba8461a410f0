"""Drop-in replacements for reference CKA implementations (change one import, keep the code).

* :mod:`pyckafast.compat.kornblith` — the functions of Kornblith et al.'s CKA colab
  (``gram_linear``, ``gram_rbf``, ``center_gram``, ``cka``, ``feature_space_linear_cka``).
* :mod:`pyckafast.compat.pytorch_cka` — pytorch-cka 1.1.3's ``cka`` module (``CKA``,
  ``compute_cka``, ``cka_from_features``, ``hsic``, ``hsic_cross``), exact over the whole dataset.
* :mod:`pyckafast.compat.torch_cka` — torch_cka 0.21's ``CKA`` class, exact by default.
* :mod:`pyckafast.compat.similarity` — ``register()`` pyckafast's measures in the
  similarity-repository registry.

The torchmetrics metrics are :mod:`pyckafast.torchmetrics`. docs/COMPAT.md lists every
behaviour that differs from the library replaced.
"""
