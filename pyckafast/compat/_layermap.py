"""The exact layer x layer CKA map that the compat front ends accumulate batch by batch.

The front ends keep their own hooks and names; what happens to each batch is
:class:`pyckafast._torch.layer_map.LayerMap`, the routing of :func:`pyckafast.torch.
compare_models`: ``_torch/plan.plan_map`` decides per layer under one budget, narrow layers
stream into one :class:`pyckafast.CKAMapState`, wide ones (convolutional outputs of tens of
thousands of features) go to the on-disk activation cache and their pairs come from one tiled
sample-space pass (``_torch/sink.LinearMapSink``). Every route gives the same exact values.
"""

from __future__ import annotations

from .._torch import layer_map as _layer_map

__all__ = ["LayerMap", "STATE_BUDGET"]

#: Budget (bytes of float64 moments) of the streamed state; None: ``_torch/plan.default_budget``
#: of the memory available, as ``compare_models``.
STATE_BUDGET: int | None = None


class LayerMap(_layer_map.LayerMap):
    """:class:`pyckafast._torch.layer_map.LayerMap` with the compat front ends' budget.

    Parameters
    ----------
    debiased : bool
        The estimator of :meth:`result`: unbiased HSIC (Song et al. 2012), or biased HSIC.
    backend : str
        Backend of the per-batch terms, as in :class:`pyckafast.CKAMapState`.
    state_budget : int, optional
        Budget of the streamed state in bytes (default :data:`STATE_BUDGET`).
    """

    def __init__(self, *, debiased: bool, backend: str = "auto",
                 state_budget: int | None = None):
        super().__init__(debiased=debiased, backend=backend,
                         max_state_bytes=STATE_BUDGET if state_budget is None else state_budget)
