"""Datasets -> numbers: readers of the dataset format, classifier and VLM harness, probes.

Implemented so far: :mod:`.data`, the reader of ctrlshift datasets that every evaluation job uses.
"""
