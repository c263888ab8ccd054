"""Datasets -> numbers.

- :mod:`.data`: readers of ctrlshift datasets (and ImageFolder, MNIST-5k) into uint8 tensors;
- :mod:`.models`: the classifier zoo (32px architectures, any timm model);
- :mod:`.train`: the accelerate training loop and on-device augmentation;
- :mod:`.metrics`, :mod:`.robustness`: per-split metrics, sweep summaries, flip intensity;
- :mod:`.results`: result files and the ``build`` step (CSV, leaderboard, plots);
- :mod:`.job`: the evaluate job (sweeps, skip-if-exists);
- :mod:`.vlm`: VLM adapters (open_clip, transformers) and zero-shot classification;
- :mod:`.probes`: first-layer energy profiles and outlier features.
"""
