"""Embeddings -> modality-gap metrics, corrections, robustness and toy simulations.

This part is not implemented yet (see the project's open issues); the package exists so that the
three parts stay visible at the top of ctrlshift.
"""
