"""``ctrlshift quickstart``: the whole pipeline offline on a CPU, in minutes.

1. generate the three paper families at several values with the embedded tiny MNIST generator;
2. train a small CNN (ResNet-20) and an MLP-Mixer on each family's base split;
3. evaluate them at every value;
4. write result files, a leaderboard and accuracy-against-intensity plots, and print the table.

It trades scale for speed against the paper presets: 16x16 one-channel digits instead of 32x32
CIFAR-10, 10 DDIM steps instead of 50 Heun steps, hundreds of images instead of 50,000, a few
epochs instead of hundreds.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .config import load_config

log = logging.getLogger(__name__)

SMOKE_GENERATE = ["splits.train.size=60", "splits.val.size=20", "splits.test.size=20", "sampler.steps=2",
                  "intensity.samples=200", "output.shard_size=50"]
SMOKE_EVALUATE = ["train.epochs=1", "models.0.kwargs.width=0.25", "models.1.kwargs.depth=1"]


def run(out: str | Path, smoke: bool = False, progress: bool = True) -> dict:
    from .evaluation.job import EvaluateConfig, evaluate
    from .evaluation.build import build
    from .generator.job import generate
    from .generator.spec import GenerateConfig

    out = Path(out)
    t0 = time.time()
    gen_cfg = load_config(GenerateConfig, "quickstart", SMOKE_GENERATE if smoke else [])
    data = out / "data" / gen_cfg.name
    log.info("1/3 generating %s with %s", data, gen_cfg.decoder.source)
    # The quickstart owns its folder: a run in the other mode (--smoke or not) is replaced, not refused;
    # an interrupted run of the same mode still resumes (shards with the same settings are kept).
    generate(gen_cfg, data, overwrite=True, progress=progress)
    t1 = time.time()
    eval_cfg = load_config(EvaluateConfig, "quickstart-evaluate", SMOKE_EVALUATE if smoke else [])
    log.info("2/3 training and evaluating %s", ", ".join(m.label or m.name for m in eval_cfg.models))
    evaluate(eval_cfg, data, out / "results", progress=progress, overwrite=True)
    t2 = time.time()
    log.info("3/3 building tables and plots")
    paths = build(out / "results")
    return {"data": str(data), "results": str(out / "results"), **paths,
            "seconds": {"generate": round(t1 - t0, 1), "evaluate": round(t2 - t1, 1), "total": round(time.time() - t0, 1)}}
