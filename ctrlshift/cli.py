"""``ctrlshift <job> ...``: the command line. Every job is ``main(argv)`` so tests can call it.

Bad input prints one line, ``error: ...``, naming the key, file or value and what is expected, and
exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from pathlib import Path

from .errors import CtrlshiftError

log = logging.getLogger("ctrlshift")

def overrides_help(example: str) -> str:
    return f"dotted overrides applied after the YAML, e.g. {example}"


def _setup_logging(verbose: bool) -> None:
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
    level = logging.DEBUG if verbose else logging.INFO if rank == 0 else logging.WARNING
    # Other libraries (open_clip logs to the root logger) stay at WARNING unless --verbose.
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(message)s" if not verbose else "%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)
    logging.getLogger("ctrlshift").setLevel(level)


class Parser(argparse.ArgumentParser):
    """An argument parser whose epilog (the config keys, which need the config classes and so
    torch) is built only when help is printed: ``ctrlshift --help`` stays fast."""

    def __init__(self, *args, keys: tuple[str, ...] = (), **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.keys = keys

    def format_help(self) -> str:
        if self.keys and not getattr(self, "_keys_added", False):
            self.epilog = "\n\n".join(filter(None, [_keys_epilog(k) for k in self.keys] + [self.epilog]))
            self._keys_added = True
        return super().format_help()


LIST_KEYS = {"generate": "  shifts.N.family / values / train_value / params / classes / name   (a list of shifts)",
             "evaluate": "  models.N.name / label / kwargs / pretrained / state_dict / train   (a list of models)",
             "probe-first-layer": "  models.N.name / label / kwargs   (a list of models)",
             "probe-outliers": "  models.N.name / label / kwargs   (a list of models)"}


def _keys_epilog(job: str) -> str:
    from . import config_class
    from .config import field_help

    if job == "toy":
        from .gap.toy import ToyConfig as cls
    else:
        cls = config_class(job)
    rows = field_help(cls)
    width = max(len(k) for k, *_ in rows)
    title = {"toy": "keys of `gap toy`"}.get(job, f"{job} config keys")
    lines = [f"{title} (YAML or key=value; default in brackets):"]
    for key, tp, help_, default in rows:
        lines.append(f"  {key:<{width}}  {help_ or tp} [{default}]")
    if job in LIST_KEYS:
        lines.append(LIST_KEYS[job])
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="ctrlshift",
        description="Benchmark datasets with distribution shifts of controlled intensity, "
                    "from any decoder-based generative model.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent("""\
            examples:
              ctrlshift quickstart --out quickstart
              ctrlshift generate tiny --out data/tiny
              ctrlshift generate cifar10-edm-overlap --dry-run
              accelerate launch -m ctrlshift generate cifar10-edm-overlap --out data/c10-overlap
              ctrlshift latents tiny --family overlap --value 20 --split test --indices 0:8 --out z.npz
              ctrlshift export data/tiny --format imagefolder --out data/tiny-folders
              ctrlshift evaluate quickstart-evaluate --data data/tiny --out results
              ctrlshift build results
              ctrlshift list families
              ctrlshift --plugin my_family generate my-config.yaml --dry-run
            """))
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (it registers families, decoders, samplers, models, ...); repeatable")
    sub = p.add_subparsers(dest="job", required=True, metavar="JOB", parser_class=Parser)

    g = sub.add_parser("generate", help="decode shifted latents into a sharded dataset",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Generate a Control+Shift dataset. CONFIG is a YAML file or a preset "
                                   "name (ctrlshift list presets). Reruns resume: complete, verified shards "
                                   "are kept.",
                       keys=("generate",))
    g.add_argument("config", metavar="CONFIG")
    g.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=overrides_help("sampler.steps=18 splits.test.size=100"))
    g.add_argument("--out", help="output folder (default: datasets/<name>)")
    g.add_argument("--dry-run", action="store_true", help="print the plan (configs, shards, images, decoder calls) and stop")
    g.add_argument("--overwrite", action="store_true", help="replace shards made with other settings")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")

    lat = sub.add_parser("latents", help="write the latents and labels of any samples (.npy/.npz)",
                         description="Draw the latents of samples A..B-1 of a split exactly as `generate` "
                                     "does, without loading a checkpoint (the config must set "
                                     "decoder.latent_shape and decoder.num_classes).",
                         keys=("generate",))
    lat.add_argument("config", metavar="CONFIG")
    lat.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=overrides_help("splits.test.seed=7"))
    lat.add_argument("--family", required=True, help="shift entry (its name, or its family)")
    lat.add_argument("--value", required=True, type=float, help="control value")
    lat.add_argument("--split", required=True, choices=["train", "val", "test"])
    lat.add_argument("--indices", required=True, metavar="A:B", help="sample indices A..B-1")
    lat.add_argument("--out", required=True, help="FILE.npy (latents) or FILE.npz (latents, labels, seeds, indices)")

    ck = sub.add_parser("check", help="verify a dataset: every shard's checksum and rows, stray files, the card",
                        description="Verify a whole dataset folder and report every problem (exit 1 if any): "
                                    "shards missing, damaged or unreadable, row counts, files under data/ that "
                                    "the manifest does not list, the card, the dataset hash.")
    ck.add_argument("dataset", metavar="DIR")

    pb = sub.add_parser("publish", help="upload a checked dataset to the Hugging Face Hub (--dry-run: the plan)",
                        description="Check the dataset folder, then upload it to a Hub dataset repository with "
                                    "huggingface_hub: one commit per config, then the card, manifest and grids; a "
                                    "rerun resumes. .ctrlshift/ stays local. Needs a token (hf auth login or "
                                    "HF_TOKEN) and the network, except with --dry-run.")
    pb.add_argument("dataset", metavar="DIR")
    pb.add_argument("--repo", required=True, metavar="OWNER/NAME")
    pb.add_argument("--private", action="store_true")
    pb.add_argument("--revision", default=None, help="branch to push to (created when missing)")
    pb.add_argument("--dry-run", action="store_true", help="print the files, sizes and card front matter; no network")

    ex = sub.add_parser("export", help="export a dataset to another layout",
                        description="Write every image of a ctrlshift dataset (verified shards) in another layout: "
                                    "imagefolder gives OUT/<config>/<split>/<class>/<index>.png for torchvision's "
                                    "ImageFolder, class folders numbered so their order is the label order.")
    ex.add_argument("dataset", metavar="DIR")
    ex.add_argument("--format", choices=["imagefolder"], default="imagefolder",
                    help="imagefolder: OUT/<config>/<split>/<class>/<index>.png")
    ex.add_argument("--out", required=True)
    ex.add_argument("--no-progress", action="store_true")

    cv = sub.add_parser("convert", help="convert a released EDM .pkl to safetensors + JSON (no pickled code runs)",
                        description="Read a released NVlabs EDM checkpoint (path or URL) with ctrlshift's safe "
                                    "reader (the code the pickle carries is never run; any global outside an EDM "
                                    "network is refused), rebuild the network with ctrlshift's own EDM modules and "
                                    "write OUT/config.json and OUT/model.safetensors. Use OUT as decoder.source of the "
                                    "edm backend: it loads with no pickle at all.")
    cv.add_argument("kind", choices=["edm"])
    cv.add_argument("pickle", metavar="PKL", help="an EDM .pkl file or URL")
    cv.add_argument("--out", required=True, metavar="DIR")
    cv.add_argument("--key", default="ema", help="entry of the pickle that holds the network (default: ema)")

    q = sub.add_parser("quickstart", help="generate, train, evaluate, tabulate and plot on the embedded model (CPU, minutes)",
                       description="The whole pipeline offline: the three paper families from the embedded tiny "
                                   "MNIST generator, a ResNet-20 and an MLP-Mixer trained on each base value and "
                                   "tested at every value, then a leaderboard and plots.")
    q.add_argument("--out", default="quickstart", help="output folder (default: ./quickstart)")
    q.add_argument("--smoke", action="store_true", help="a seconds-long version for tests")
    q.add_argument("--no-progress", action="store_true")

    ev = sub.add_parser("evaluate", help="train classifiers on base values and test them at every value",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Sweep models x augmentations x training sizes x seeds over a ctrlshift "
                                    "dataset. One result file per (run, family); existing files are skipped, "
                                    "interrupted trainings resume from their checkpoint.",
                        keys=("evaluate",))
    ev.add_argument("config", metavar="CONFIG")
    ev.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=overrides_help("train.epochs=5 seeds=[0,1,2]"))
    ev.add_argument("--data", required=True, help="a dataset folder written by `ctrlshift generate`")
    ev.add_argument("--out", default="results", help="results folder (default: ./results)")
    ev.add_argument("--overwrite", action="store_true",
                    help="redo runs whose result or checkpoint was made with other settings")
    ev.add_argument("--no-progress", action="store_true")

    cs = sub.add_parser("consistency", help="label validity: the share of each config's images a reference "
                                             "classifier still labels as their class",
                        description="Train a reference classifier on each family's base value (or load yours: "
                                    "reference.name=pkg.mod:Net reference.state_dict=W reference.train=false), label "
                                    "every test image at every value, and record the share that still shows its "
                                    "class: DIR/consistency.json, label_consistency in the manifest and the card. "
                                    "evaluate then reports it beside accuracy; consistent_only=true tests on the "
                                    "consistent images alone.", keys=("consistency",))
    cs.add_argument("dataset", metavar="DIR")
    cs.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=overrides_help("train.epochs=5"))
    cs.add_argument("--config", default=None, help="a YAML file of consistency keys (default: the defaults below)")
    cs.add_argument("--no-progress", action="store_true")

    vf = sub.add_parser("verify", help="re-evaluate a result's saved model on its dataset and record the verdict",
                        description="Rebuild the model a result file describes, load the weights saved beside it, "
                                    "check the dataset hash, measure every metric again and compare (accuracy within "
                                    "one image, nll and ece within 1e-4). The verdict goes into the result's "
                                    "`verified` field; build marks verified rows. Exit 1 when it does not verify.")
    vf.add_argument("result", metavar="RESULT.json")
    vf.add_argument("--data", required=True, help="the dataset folder the result was measured on")
    vf.add_argument("--device", default="auto")

    b = sub.add_parser("build", help="merge result files into CSV, a Markdown leaderboard and plots",
                       description="Read every ctrlshift-result/1 file under RESULTS_DIR (classifiers and zero-shot "
                                   "VLMs alike) and write results.csv, leaderboard.md (mean ± std over seeds per "
                                   "family) and plots/ (accuracy against intensity).")
    b.add_argument("results", metavar="RESULTS_DIR")
    b.add_argument("--out", help="where to write (default: RESULTS_DIR)")
    b.add_argument("--no-plots", action="store_true")
    b.add_argument("--html", action="store_true",
                   help="also write leaderboard/index.html: sortable tables and plots, self-contained")

    pr = sub.add_parser("probe", help="analysis probes: first-layer energy profiles, outlier features",
                        description="first-layer: train models (true and random labels) through the harness and "
                                    "compare their first-layer energy profiles in the patch-PCA basis with the "
                                    "linear-CNN formula. outliers: activation kurtosis per feature dimension, "
                                    "privileged directions of the linear head, and a pruning curve.",
                        keys=("probe-first-layer", "probe-outliers"))
    pr.add_argument("probe", choices=["first-layer", "outliers"])
    pr.add_argument("config", metavar="CONFIG", help="YAML or preset (probe-first-layer, probe-outliers)")
    pr.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=overrides_help("train.epochs=2 seeds=[0]"))
    pr.add_argument("--out", default="probes", help="output folder (default: ./probes)")
    pr.add_argument("--no-progress", action="store_true")

    gp = sub.add_parser("gap", help="modality gap of a VLM: metrics, corrections, robustness (or `gap toy`)",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Measure the modality gap of a VLM's embeddings, fit the projected gap shift "
                                    "(and the mean and Liang baselines), and report robustness to noise, "
                                    "quantisation and template rewording over alpha, with clean accuracy beside it. "
                                    "`ctrlshift gap toy [key=value ...]` runs the InfoNCE toy simulation instead.",
                        epilog="examples:\n  ctrlshift gap gap-tiny-clip --out gap\n"
                               "  ctrlshift gap gap-tiny-clip data.source=datasets/tiny --out gap-tiny\n"
                               "  ctrlshift gap toy n=4 dim=8 temperature=0.05 lr=0.05 --out toy",
                        keys=("gap", "toy"))
    gp.add_argument("config", metavar="CONFIG", help="YAML, preset (gap-tiny-clip), or `toy`")
    gp.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                    help=overrides_help("correction.alphas=[0,1] data.source=datasets/tiny (toy: n=4 dim=8)"))
    gp.add_argument("--out", default="gap", help="output folder (default: ./gap)")
    gp.add_argument("--no-progress", action="store_true")

    ls = sub.add_parser("list", help="list registered components or presets")
    ls.add_argument("what", choices=sorted(LISTINGS))
    ls.add_argument("pattern", nargs="?", default="*", help="wildcard, e.g. 'over*'")
    return p


def _cmd_generate(args) -> int:
    from . import generate, load_config
    from .generator.job import build_plan, describe_plan, make_families

    cfg = load_config("generate", args.config, args.overrides)
    out = args.out or os.path.join("datasets", cfg.name)
    if args.dry_run:
        families = make_families(cfg, cfg.decoder.latent_shape) if cfg.decoder.latent_shape else None
        print(describe_plan(cfg, build_plan(cfg), families))
        print(f"output: {out}")
        return 0
    ds = generate(cfg, out, overwrite=args.overwrite, progress=not args.no_progress)
    if ds is not None:
        log.info("%s\n  card: %s/README.md\n  grids: %s/grids/", ds.summary_line(), out, out)
    return 0


def _cmd_evaluate(args) -> int:
    from . import evaluate, load_config

    cfg = load_config("evaluate", args.config, args.overrides)
    paths = evaluate(cfg, args.data, args.out, progress=not args.no_progress, overwrite=args.overwrite)
    log.info("%d result files under %s; merge them with `ctrlshift build %s`", len(paths), args.out, args.out)
    return 0


def _cmd_build(args) -> int:
    from . import build

    written = build(args.results, args.out, plots=not args.no_plots, html=args.html)
    print((Path(written["markdown"])).read_text())
    log.info("wrote %s, %s and %d plot files%s", written["csv"], written["markdown"], len(written["plots"]),
             f"; the page: {written['html']}" if "html" in written else "")
    return 0


def _cmd_probe(args) -> int:
    from . import load_config
    from .evaluation.probes import job

    cfg = load_config(f"probe-{args.probe}", args.config, args.overrides)
    run = job.run_first_layer if args.probe == "first-layer" else job.run_outliers
    report = run(cfg, args.out, progress=not args.no_progress)
    print("\n".join(report.summary_lines()))
    log.info("wrote %s and plots %s", args.out, ", ".join(p for p in report.plots if p.endswith(".png")))
    return 0


def _cmd_gap(args) -> int:
    out = Path(args.out)
    if args.config == "toy":
        from .gap.toy import run_toy

        result = run_toy(args.overrides, out, progress=not args.no_progress)
        print("\n".join(result.summary_lines()))
        log.info("wrote %s/toy.json and %s", out, ", ".join(result.plots))
        return 0
    from . import gap, load_config

    result = gap.run(load_config("gap", args.config, args.overrides), out, progress=not args.no_progress)
    print("\n".join(result.summary_lines()))
    log.info("wrote %s (gap_metrics.json, robustness.json, corrections/, %s)", out,
             ", ".join(Path(p).name for p in result.plots))
    return 0


def _cmd_quickstart(args) -> int:
    from . import quickstart

    info = quickstart(args.out, smoke=args.smoke, progress=not args.no_progress)
    print(Path(info["markdown"]).read_text())
    sec = info["seconds"]
    print(f"done in {sec['total']:.0f}s (generate {sec['generate']:.0f}s, train + evaluate {sec['evaluate']:.0f}s)")
    print(f"  dataset:     {info['data']}  (grids: {info['data']}/grids/)")
    print(f"  results:     {info['results']}  (one JSON per run)")
    print(f"  table:       {info['csv']}")
    print(f"  leaderboard: {info['markdown']}")
    pngs = [p for p in info["plots"] if p.endswith(".png")]
    print(f"  plots:       {', '.join(pngs)}")
    return 0


def _cmd_latents(args) -> int:
    from . import load_config
    from .errors import ConfigError
    from .generator.job import write_latents

    cfg = load_config("generate", args.config, args.overrides)
    try:
        a, b = (int(x) for x in args.indices.split(":"))
    except ValueError:
        raise ConfigError(f"--indices: {args.indices!r} is not A:B with integers A < B") from None
    path = write_latents(cfg, args.family, args.value, args.split, a, b, args.out)
    log.info("wrote %s", path)
    return 0


def _cmd_consistency(args) -> int:
    from . import load_config
    from .evaluation.consistency import run

    cfg = load_config("consistency", args.config, args.overrides)
    result = run(args.dataset, cfg, progress=not args.no_progress)
    for name, r in result.items():
        print(f"{name:<28} label consistency {100 * r['share']:5.1f}% of {r['n']} test images")
    return 0


def _cmd_publish(args) -> int:
    from .dataset.publish import publish

    print(publish(args.dataset, args.repo, args.private, args.revision, args.dry_run))
    return 0


def _cmd_verify(args) -> int:
    from .evaluation.verify import verify

    r = verify(args.result, args.data, args.device)
    v = r.verified
    if v["ok"]:
        print(f"verified: {args.result}: every metric of {len(r.metrics)} configs reproduced on {args.data}")
        return 0
    print(f"not verified: {args.result}: {v['first_difference']}", file=sys.stderr)
    return 1


def _cmd_check(args) -> int:
    from .dataset.check import report

    status, lines = report(args.dataset)
    print("\n".join(lines), file=sys.stdout if status == 0 else sys.stderr)
    return status


def _cmd_export(args) -> int:
    from .dataset.export import export_imagefolder

    export_imagefolder(args.dataset, args.out, progress=not args.no_progress)
    return 0


def _cmd_convert(args) -> int:
    from .generator.decoders.edm import fetch
    from .generator.networks.edm_pickle import convert

    path = fetch(args.pickle)
    out = convert(path.read_bytes(), Path(args.out), str(path), args.key)
    print(f"wrote {out / 'config.json'} and {out / 'model.safetensors'}; use decoder.backend=edm decoder.source={out}")
    return 0


def _list_presets(pattern: str) -> list[str]:
    """Presets grouped by the job they configure, each with its description."""
    import fnmatch

    from . import CONFIGS, preset_index

    index = {n: v for n, v in preset_index().items() if fnmatch.fnmatch(n, pattern)}
    width = max((len(n) for n in index), default=0)
    lines = []
    for kind in [*CONFIGS, "?"]:
        names = [n for n, (k, _) in index.items() if k == kind]
        if names:
            lines.append(f"{kind}:" if kind != "?" else "other:")
            lines += [f"  {n:<{width}}  {index[n][1]}" for n in names]
    return lines


def _registry(spec: str, describe: bool = False):
    """A lister from ``module:REGISTRY``: the module is imported only when that listing is asked for;
    ``describe`` adds the first line of each entry's docstring."""
    def lister(pattern: str) -> list[str]:
        import importlib

        module, _, attr = spec.partition(":")
        registry = getattr(importlib.import_module(module), attr)
        names = registry.list(pattern)
        if not describe:
            return names
        width = max((len(n) for n in names), default=0)
        docs = [((registry.get(n).__doc__ or "").strip().splitlines() or [""])[0] for n in names]
        return [f"{n:<{width}}  {d}".rstrip() for n, d in zip(names, docs)]

    return lister


def _list_models(pattern: str) -> list[str]:
    from .models import list_models

    return list_models(pattern)


LISTINGS = {
    "families": _registry("ctrlshift.generator.shifts:FAMILIES"),
    "decoders": _registry("ctrlshift.generator.decoders:DECODERS", describe=True),
    "samplers": _registry("ctrlshift.generator.samplers:SAMPLERS", describe=True),
    "models": _list_models,
    "vlm-backends": _registry("ctrlshift.models.vlm:VLM_BACKENDS"),
    "data-sources": _registry("ctrlshift.dataset.sources:SOURCES"),
    "presets": _list_presets,
}


def _cmd_list(args) -> int:
    print("\n".join(LISTINGS[args.what](args.pattern)))
    return 0


COMMANDS = {"convert": _cmd_convert, "generate": _cmd_generate, "latents": _cmd_latents, "check": _cmd_check, "export": _cmd_export,
            "consistency": _cmd_consistency, "publish": _cmd_publish, "verify": _cmd_verify,
            "evaluate": _cmd_evaluate,
            "build": _cmd_build, "quickstart": _cmd_quickstart, "probe": _cmd_probe, "gap": _cmd_gap,
            "list": _cmd_list}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also follow options: argparse leaves those over.
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _setup_logging(args.verbose)
    try:
        from . import plugins

        plugins.load_entry_points()
        plugins.load(args.plugin, "--plugin")
        return COMMANDS[args.job](args)
    except CtrlshiftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a folder that cannot be written, a full disk, a path that is a file
        log.debug("traceback", exc_info=True)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}; check the path and its permissions (run with -v for the "
              "traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
