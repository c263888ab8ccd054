"""ctrlshift: benchmark datasets with distribution shifts of controlled intensity.

Three parts, siblings on one ground floor:

- :mod:`ctrlshift.generator`: latents from shifted distributions -> any decoder -> sharded dataset;
- :mod:`ctrlshift.evaluation`: classifiers (and zero-shot VLMs) trained and measured on those datasets;
- :mod:`ctrlshift.gap`: the modality gap of VLM embeddings, measured and corrected (``ctrlshift.gap.run``);
- the ground floor: :mod:`ctrlshift.dataset` (format, reader, data sources), :mod:`ctrlshift.models`
  (classifier zoo, VLM adapters), :mod:`ctrlshift.results` (the result schema), and config,
  registries, plugins, provenance, files.

The Python API (the CLI is a thin layer over it)::

    import ctrlshift

    ds = ctrlshift.generate("tiny", "datasets/tiny", splits__test__size=20)    # -> ctrlshift.Dataset
    paths = ctrlshift.evaluate("quickstart-evaluate", "datasets/tiny", "results", train__epochs=1)
    tables = ctrlshift.build("results")                                       # CSV, leaderboard, plots

Configs are preset names, YAML paths, mappings, or the config dataclasses themselves
(:func:`load_config`); keyword overrides are dotted keys with ``__`` for the dots.
Importing ``ctrlshift`` is cheap: each part is imported when first used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from .dataset import Dataset

__all__ = ["Dataset", "benchmark", "build", "evaluate", "generate", "load_config", "quickstart"]


def load_config(kind: str | type, source: Any = None, overrides: Any = ()) -> Any:
    """A validated job config: component defaults <- ``source`` <- ``overrides``.

    ``kind`` is ``"generate"``, ``"evaluate"``, ``"gap"``, ``"probe-first-layer"``,
    ``"probe-outliers"`` or a config dataclass; ``source`` a preset name (``ctrlshift list
    presets``), a YAML path or a mapping; ``overrides`` ``key=value`` strings or a ``{dotted.key:
    value}`` mapping. Bad input raises :class:`ctrlshift.errors.ConfigError` naming the key.

    >>> cfg = ctrlshift.load_config("generate", "tiny", ["sampler.steps=4"])   # doctest: +SKIP
    >>> cfg.sampler.steps                                                      # doctest: +SKIP
    4
    """
    from .config import load_config as load
    from .errors import ConfigError

    cls = config_class(kind) if isinstance(kind, str) else kind
    try:
        return load(cls, source, overrides)
    except ConfigError as exc:
        if isinstance(kind, str) and isinstance(source, str) and str(exc).startswith("unknown key"):
            _other_kind(kind, source)
        raise


def _other_kind(kind: str, source: str) -> None:
    """If ``source`` is a preset of another job, say so (instead of its first unknown key)."""
    from .config import PRESET_DIR
    from .errors import ConfigError

    if not (PRESET_DIR / f"{source}.yaml").is_file():
        return
    presets = preset_index()
    other = presets.get(source, ("?", ""))[0]
    if other not in ("?", kind):
        mine = [n for n, (k, _) in presets.items() if k == kind]
        article = "an" if kind[0] in "aeiou" else "a"
        raise ConfigError(f"config {source!r} is a {other} preset, not {article} {kind} one; {kind} presets: "
                          f"{', '.join(mine) or 'none'} (ctrlshift list presets)") from None


def preset_index() -> dict[str, tuple[str, str]]:
    """preset name -> (the job it configures, its first comment line), by loading each preset."""
    from .config import PRESET_DIR, list_presets
    from .config import load_config as load
    from .errors import ConfigError

    out = {}
    for name in list_presets():
        lines = (PRESET_DIR / f"{name}.yaml").read_text().splitlines()
        about = lines[0].lstrip("# ").strip() if lines and lines[0].startswith("#") else ""
        job = "?"
        for kind in CONFIGS:
            try:
                load(config_class(kind), name)
            except ConfigError:
                continue
            job = kind
            break
        out[name] = (job, about)
    return out


CONFIGS = {"generate": "ctrlshift.generator.spec:GenerateConfig",
           "evaluate": "ctrlshift.evaluation.job:EvaluateConfig",
           "gap": "ctrlshift.gap.job:GapConfig",
           "probe-first-layer": "ctrlshift.evaluation.probes.job:FirstLayerConfig",
           "probe-outliers": "ctrlshift.evaluation.probes.job:OutliersConfig",
           "consistency": "ctrlshift.evaluation.consistency:ConsistencyConfig"}


def config_class(kind: str) -> type:
    """The config dataclass of a job by name (see :func:`load_config`)."""
    import importlib

    from .errors import ConfigError

    if kind not in CONFIGS:
        raise ConfigError(f"config kind {kind!r}: expected one of {', '.join(CONFIGS)}")
    module, _, attr = CONFIGS[kind].partition(":")
    return getattr(importlib.import_module(module), attr)


def generate(config: Any, out: str | Path | None = None, *, overwrite: bool = False, progress: bool = True,
             **overrides: Any) -> "Dataset | None":
    """Generate a Control+Shift dataset into ``out`` (default ``datasets/<name>``) and open it.

    ``config``: a preset name (``tiny``), YAML path, mapping or ``GenerateConfig``. Reruns resume:
    complete, verified shards are kept. Under ``accelerate launch`` every rank calls this; rank 0
    gets the :class:`Dataset`, the others ``None``.

    >>> ds = ctrlshift.generate("tiny", "datasets/tiny", sampler__steps=4)   # doctest: +SKIP
    >>> sorted(ds.families())                                                 # doctest: +SKIP
    ['extend', 'overlap', 'truncation']
    """
    from ._api import resolve_config
    from .dataset import Dataset
    from .generator.job import generate as run
    from .generator.spec import GenerateConfig

    cfg = resolve_config(GenerateConfig, config, overrides)
    out = Path(out) if out is not None else Path("datasets") / cfg.name
    manifest = run(cfg, out, overwrite=overwrite, progress=progress)
    return Dataset(out, manifest) if manifest is not None else None


def evaluate(config: Any, data: str | Path, out: str | Path = "results", *, overwrite: bool = False,
             progress: bool = True, **overrides: Any) -> list[Path]:
    """Train each model on every family's base value of dataset ``data``, test it at every value,
    and write one result file per run under ``out``. Returns their paths. A run whose result exists
    with the same settings is skipped; with other settings it is refused unless ``overwrite``.

    >>> paths = ctrlshift.evaluate("quickstart-evaluate", "datasets/tiny", "results",
    ...                            train__epochs=1)                           # doctest: +SKIP
    """
    from ._api import resolve_config
    from .evaluation.job import EvaluateConfig, evaluate as run

    return run(resolve_config(EvaluateConfig, config, overrides), data, out, progress=progress, overwrite=overwrite)


def benchmark(model: Any, dataset: Any, preprocess: Any = None, **kwargs: Any) -> list:
    """Evaluate your own trained classifier (any ``torch.nn.Module`` giving logits) at every
    intensity of a ctrlshift dataset, with no training: one result record per family, written as
    result files with ``out=``. See :func:`ctrlshift.evaluation.benchmark.benchmark` for the options
    (``name``, ``out``, ``families``, ``labels``, ``batch_size``, ``device``).

    >>> records = ctrlshift.benchmark(net, "datasets/tiny", out="results")      # doctest: +SKIP
    """
    from .evaluation.benchmark import benchmark as run

    return run(model, dataset, preprocess, **kwargs)


def build(results: str | Path, out: str | Path | None = None, plots: bool = True, html: bool = False) -> dict:
    """Merge the result files under ``results`` into ``results.csv``, ``leaderboard.md`` and plots
    (in ``out``, default: ``results``), and with ``html`` a static page ``leaderboard/index.html``;
    returns the paths written."""
    from .evaluation.build import build as run

    return run(results, out, plots=plots, html=html)


def quickstart(out: str | Path = "quickstart", smoke: bool = False, progress: bool = True) -> dict:
    """The whole pipeline offline on the embedded tiny model: generate, train, evaluate, tabulate,
    plot (a few minutes on a CPU; ``smoke=True`` for seconds). Returns where everything went."""
    from ._quickstart import run

    return run(out, smoke=smoke, progress=progress)


def __getattr__(name: str) -> Any:
    import importlib

    if name == "Dataset":
        from .dataset import Dataset

        return Dataset
    if name in ("dataset", "models", "generator", "evaluation", "gap", "results"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'ctrlshift' has no attribute {name!r}")
