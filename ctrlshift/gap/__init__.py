"""Embeddings -> modality-gap metrics, corrections, robustness and toy simulations (METHODS.md 2).

- :mod:`.metrics`: gap vector, L2M, L2I, RMG, variance along the gap, span orthogonality;
- :mod:`.corrections`: the projected gap shift, the mean shift, Liang et al.'s symmetric shift;
  fitted once, saved, applied to new embeddings;
- :mod:`.robustness`: prediction stability under noise, quantisation and template rewording;
- :mod:`.toy`: InfoNCE simulations of how the gap forms and freezes.

Every function takes tensors and returns tensors or floats: no model, no file, no global state.
"""
