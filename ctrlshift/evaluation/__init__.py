"""Datasets -> numbers: the harness that trains and evaluates models on ctrlshift datasets.

- :mod:`.train`: the accelerate training loop and on-device augmentation (:class:`Recipe`);
- :mod:`.metrics`, :mod:`.robustness`: per-split metrics, sweep summaries, flip intensity;
- :mod:`.sweep`: one model across one family's intensities (shared with zero-shot VLMs);
- :mod:`.job`: the evaluate job (sweeps, skip-if-exists);
- :mod:`.build`: result files -> CSV, leaderboard, plots;
- :mod:`.probes`: first-layer energy profiles and outlier features.

Its public functions are re-exported here; other parts use these, not the job modules.
The dataset reader and the model adapters it uses live in :mod:`ctrlshift.dataset` and
:mod:`ctrlshift.models`.
"""

from .metrics import classification_metrics
from .robustness import flip_intensities, flip_summary, mean_std, sweep_summary
from .sweep import sweep_metrics
from .train import AUGMENTS, Preprocess, Recipe, TrainConfig, predict, train_classifier

__all__ = ["AUGMENTS", "Preprocess", "Recipe", "TrainConfig", "classification_metrics", "flip_intensities",
           "flip_summary", "mean_std", "predict", "sweep_metrics", "sweep_summary", "train_classifier"]
