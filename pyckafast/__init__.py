"""pyckafast: exact CKA and HSIC at scale, and the CKA robustness suite of Davari et al. (2023).

Every backend (NumPy, Numba, the C++ extension, CUDA through CuPy, Dask partitions) produces the
same small set of exact, mergeable terms; one backend-free module combines them into every
CKA/HSIC variant. ``import pyckafast`` never imports cupy, torch or dask.
"""

from ._core.dispatch import BackendUnavailable
from ._config import show_config
from ._core.threads import get_num_threads, set_num_threads, threads
from .cka_matrix import cka_matrix
from .cost import CostEstimate, estimate_cost
from .map_state import CKAMapState
from .rbf import cka, hsic, rbf_cka, rbf_hsic
from .linear import linear_cka, linear_hsic
from .minibatch import minibatch_cka
from .significance import CKATestResult, MatrixTestResult, cka_matrix_test, cka_test
from .influence import InfluenceResult, cka_influence
from . import robustness, theory, transforms
from .robustness import manipulate
from .streaming import LinearCKAState, stream_npy

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "CKAMapState",
    "CKATestResult",
    "CostEstimate",
    "InfluenceResult",
    "LinearCKAState",
    "MatrixTestResult",
    "cka",
    "cka_influence",
    "cka_matrix",
    "cka_matrix_test",
    "cka_test",
    "estimate_cost",
    "get_num_threads",
    "hsic",
    "linear_cka",
    "linear_hsic",
    "manipulate",
    "minibatch_cka",
    "rbf_cka",
    "rbf_hsic",
    "set_num_threads",
    "robustness",
    "show_config",
    "stream_npy",
    "theory",
    "threads",
    "transforms",
]
