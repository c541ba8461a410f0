"""Drop-in replacements for reference CKA implementations (change one import, keep the code).

* :mod:`pyckafast.compat.kornblith` — the functions of Kornblith et al.'s CKA colab
  (``gram_linear``, ``gram_rbf``, ``center_gram``, ``cka``, ``feature_space_linear_cka``).
"""
