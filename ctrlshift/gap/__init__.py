"""Embeddings -> modality-gap metrics, corrections, robustness and toy simulations (docs/methods.md section 2).

- :mod:`.metrics`: gap vector, L2M, L2I, RMG, variance along the gap, span orthogonality;
- :mod:`.corrections`: the projected gap shift, the mean shift, Liang et al.'s symmetric shift;
  fitted once, saved, applied to new embeddings;
- :mod:`.robustness`: prediction stability under noise, quantisation and template rewording;
- :mod:`.toy`: InfoNCE simulations of how the gap forms and freezes;
- :mod:`.job`: the gap job (:func:`run`), on any VLM backend and data source.

The functions of the first four take tensors and return tensors or floats: no model, no file, no
global state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run(config: Any = "gap-tiny-clip", out: str | Path = "gap", progress: bool = True, **overrides: Any):
    """Run the gap job and return a :class:`~ctrlshift.gap.job.GapRun` (report, curves, plots,
    zero-shot result files).

    ``config`` is a :class:`~ctrlshift.gap.job.GapConfig`, a preset name (``gap-tiny-clip``), a
    YAML path or a mapping; ``overrides`` are dotted keys with ``__`` for the dots, e.g.
    ``run("gap-tiny-clip", "gap", data__source="datasets/tiny")``.

    >>> result = ctrlshift.gap.run("gap-tiny-clip", "gap")           # doctest: +SKIP
    >>> print("\\n".join(result.summary_lines()))                      # doctest: +SKIP
    """
    from .._api import resolve_config
    from .job import GapConfig, run as run_job

    return run_job(resolve_config(GapConfig, config, overrides), out, progress)
