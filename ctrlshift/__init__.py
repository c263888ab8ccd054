"""ctrlshift: benchmark datasets with distribution shifts of controlled intensity.

Three parts, each importable on its own:

- :mod:`ctrlshift.generator`: latents from shifted distributions -> any decoder -> sharded dataset;
- :mod:`ctrlshift.evaluation`: classifiers and VLMs trained and measured on those datasets;
- :mod:`ctrlshift.gap`: the modality gap of VLM embeddings, measured and corrected.
"""

__version__ = "0.1.0"
