"""The CKA robustness suite of Davari et al. (2023): sweeps, figures and manipulation.

Nothing here imports matplotlib, scikit-learn, torch or tqdm until a function needs it.
"""

from .classifier import LinearClassifier, as_classifier, digits_representation, fit_least_squares
from .manipulate import Manipulation, manipulate
from .measures import Measure, default_measures, linear_measure, rbf_measure
from .results import SweepResult
from .sweeps import (
    PAPER_C, PAPER_GRID, class_translation_sweep, invertible_sweep, outlier_sweep,
    subset_translation_sweep, translation_sweep,
)

__all__ = [
    "LinearClassifier", "Manipulation", "Measure", "PAPER_C", "PAPER_GRID", "SweepResult",
    "as_classifier", "class_translation_sweep", "default_measures", "digits_representation",
    "fit_least_squares", "invertible_sweep", "linear_measure", "manipulate", "outlier_sweep",
    "rbf_measure", "subset_translation_sweep", "translation_sweep",
]
