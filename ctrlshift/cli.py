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

from .errors import CtrlshiftError

log = logging.getLogger("ctrlshift")

OVERRIDES_HELP = "dotted overrides applied after the YAML, e.g. sampler.steps=18 splits.test.size=100"


def _setup_logging(verbose: bool) -> None:
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
    level = logging.DEBUG if verbose else logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s" if not verbose else "%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)
    for noisy in ("diffusers", "accelerate", "urllib3", "PIL", "matplotlib", "datasets", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _config_keys_epilog() -> str:
    from .config import field_help
    from .generator.spec import GenerateConfig

    rows = field_help(GenerateConfig)
    width = max(len(k) for k, _, _ in rows)
    lines = ["config keys (YAML or key=value):"]
    for key, tp, help_ in rows:
        lines.append(f"  {key:<{width}}  {help_ or tp}")
    lines.append("  shifts.N.family / values / train_value / params / classes / name   (a list of shifts)")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ctrlshift",
        description="Benchmark datasets with distribution shifts of controlled intensity, "
                    "from any decoder-based generative model.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent("""\
            examples:
              ctrlshift generate tiny --out data/tiny
              ctrlshift generate cifar10-edm-overlap --dry-run
              accelerate launch -m ctrlshift generate cifar10-edm-overlap --out data/c10-overlap
              ctrlshift latents tiny --family overlap --value 20 --split test --indices 0:8 --out z.npz
              ctrlshift export data/tiny --format imagefolder --out data/tiny-folders
              ctrlshift list families
            """))
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="job", required=True, metavar="JOB")

    g = sub.add_parser("generate", help="decode shifted latents into a sharded dataset",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Generate a Control+Shift dataset. CONFIG is a YAML file or a preset "
                                   "name (ctrlshift list presets). Reruns resume: complete, verified shards "
                                   "are kept.",
                       epilog=_config_keys_epilog())
    g.add_argument("config", metavar="CONFIG")
    g.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    g.add_argument("--out", help="output folder (default: datasets/<name>)")
    g.add_argument("--dry-run", action="store_true", help="print the plan (configs, shards, images, decoder calls) and stop")
    g.add_argument("--overwrite", action="store_true", help="replace shards made with other settings")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")

    lat = sub.add_parser("latents", help="write the latents and labels of any samples (.npy/.npz)",
                         description="Draw the latents of samples A..B-1 of a split exactly as `generate` "
                                     "does, without loading a checkpoint (the config must set "
                                     "decoder.latent_shape and decoder.num_classes).")
    lat.add_argument("config", metavar="CONFIG")
    lat.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    lat.add_argument("--family", required=True, help="shift entry (its name, or its family)")
    lat.add_argument("--value", required=True, type=float, help="control value")
    lat.add_argument("--split", required=True, choices=["train", "val", "test"])
    lat.add_argument("--indices", required=True, metavar="A:B", help="sample indices A..B-1")
    lat.add_argument("--out", required=True, help="FILE.npy (latents) or FILE.npz (latents, labels, seeds, indices)")

    ex = sub.add_parser("export", help="export a dataset to another layout")
    ex.add_argument("dataset", metavar="DIR")
    ex.add_argument("--format", choices=["imagefolder"], default="imagefolder",
                    help="imagefolder: OUT/<config>/<split>/<class>/<index>.png")
    ex.add_argument("--out", required=True)
    ex.add_argument("--no-progress", action="store_true")

    ls = sub.add_parser("list", help="list registered components or presets")
    ls.add_argument("what", choices=["families", "decoders", "samplers", "presets"])
    ls.add_argument("pattern", nargs="?", default="*", help="wildcard, e.g. 'over*'")
    return p


def _cmd_generate(args) -> int:
    from .config import load_config
    from .generator.job import build_plan, describe_plan, generate, make_families
    from .generator.spec import GenerateConfig

    cfg = load_config(GenerateConfig, args.config, args.overrides)
    out = args.out or os.path.join("datasets", cfg.name)
    if args.dry_run:
        families = make_families(cfg, cfg.decoder.latent_shape) if cfg.decoder.latent_shape else None
        print(describe_plan(cfg, build_plan(cfg), families))
        print(f"output: {out}")
        return 0
    manifest = generate(cfg, out, overwrite=args.overwrite, progress=not args.no_progress)
    if manifest is not None:
        images = sum(s["rows"] for s in manifest["shards"])
        log.info("dataset: %s (%d configs, %d images)\n  card: %s/README.md\n  grids: %s/grids/",
                 out, len(manifest["configs"]), images, out, out)
    return 0


def _cmd_latents(args) -> int:
    from .config import load_config
    from .errors import ConfigError
    from .generator.job import write_latents
    from .generator.spec import GenerateConfig

    cfg = load_config(GenerateConfig, args.config, args.overrides)
    try:
        a, b = (int(x) for x in args.indices.split(":"))
    except ValueError:
        raise ConfigError(f"--indices: {args.indices!r} is not A:B with integers A < B") from None
    path = write_latents(cfg, args.family, args.value, args.split, a, b, args.out)
    log.info("wrote %s", path)
    return 0


def _cmd_export(args) -> int:
    from .generator.export import export_imagefolder

    export_imagefolder(args.dataset, args.out, progress=not args.no_progress)
    return 0


def _cmd_list(args) -> int:
    if args.what == "families":
        from .generator.shifts import FAMILIES as reg
    elif args.what == "decoders":
        from .generator.decoders import list_decoders

        print("\n".join(list_decoders(args.pattern)))
        return 0
    elif args.what == "samplers":
        from .generator.samplers import SAMPLERS as reg
    else:
        import fnmatch

        from .config import list_presets

        print("\n".join(n for n in list_presets() if fnmatch.fnmatch(n, args.pattern)))
        return 0
    print("\n".join(reg.list(args.pattern)))
    return 0


COMMANDS = {"generate": _cmd_generate, "latents": _cmd_latents, "export": _cmd_export, "list": _cmd_list}


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
        return COMMANDS[args.job](args)
    except CtrlshiftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
