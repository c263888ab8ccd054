"""The generate job: config -> plan -> shards on disk, spread over processes by accelerate.

Shards are the unit of work. The plan lists them in a fixed order and rank ``r`` of ``N`` takes
shards ``r, r+N, ...``; each shard's latents are a pure function of (split seed, index, family,
value), so the dataset does not depend on the number of processes. Rank 0 holds the folder's lock,
shows progress, and writes the manifest, card and grids once every rank has finished.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from ..config import to_dict
from ..dataset import ConfigInfo, card, iter_rows
from ..dataset import format as fmt
from ..dataset.croissant import write_croissant
from ..errors import ConfigError, CtrlshiftError
from ..device import resolve_device
from ..files import atomic_save_npy, atomic_save_npz, atomic_write_json, atomic_write_text, clean_temporaries
from ..provenance import stable_hash, stamp
from .decoders import (Decoder, DecoderOutputError, check_images, create_decoder, dataset_class_names,
                       dataset_num_classes)
from .samplers import SAMPLERS
from .shifts import (ShiftFamily, Targets, create_family, draw_labels, draw_noise, outside_fraction, sample_seed,
                     total_variation, typical_box)
from .spec import GenerateConfig, ShiftSpec

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class ConfigPlan:
    name: str
    spec: ShiftSpec
    value: float
    splits: dict[str, dict]  # split -> {"num_examples", "seed"}


@dataclass
class Plan:
    configs: list[ConfigPlan]
    tasks: list[fmt.ShardTask]

    @property
    def images(self) -> int:
        return sum(t.rows for t in self.tasks)


def _fingerprint(cfg: GenerateConfig, spec: ShiftSpec, split: str) -> str:
    """Everything that determines the bytes of a shard of this family and split. The batch size is
    among them: a network's kernels may round a sample differently in batches of other sizes."""
    s = dataclasses.asdict(spec)
    s.pop("values")
    return stable_hash({"decoder": to_dict(cfg.decoder), "sampler": to_dict(cfg.sampler), "spec": s,
                        "labels": cfg.labels, "targets": to_dict(cfg.targets),
                        "split": to_dict(getattr(cfg.splits, split)), "shard_size": cfg.output.shard_size,
                        "dtype": cfg.runtime.dtype, "batch_size": cfg.runtime.batch_size})


def build_plan(cfg: GenerateConfig) -> Plan:
    configs, tasks = [], []
    for spec in cfg.shifts:
        values = list(spec.values)
        if spec.train_value not in values:
            values.insert(0, spec.train_value)
        for value in values:
            splits = {}
            for split in SPLITS:
                at_base = value == spec.train_value
                wanted = split == "test" and value in spec.values or split != "test" and at_base
                s = getattr(cfg.splits, split)
                if wanted and s.size > 0:
                    splits[split] = {"num_examples": s.size, "seed": s.seed}
            if not splits:
                continue
            name = fmt.config_name(spec.prefix, value)
            configs.append(ConfigPlan(name, spec, value, splits))
            for split, info in splits.items():
                n, size = info["num_examples"], cfg.output.shard_size
                count = math.ceil(n / size)
                fp = _fingerprint(cfg, spec, split)
                for k in range(count):
                    tasks.append(fmt.ShardTask(name, spec.prefix, spec.family, float(value), split,
                                                  info["seed"], k, count, k * size, min(n, (k + 1) * size), fp))
    return Plan(configs, tasks)


def make_families(cfg: GenerateConfig, latent_shape) -> dict[str, ShiftFamily]:
    dim = int(np.prod(latent_shape))
    targets = Targets(dim, cfg.targets.mode, cfg.targets.seed)
    return {spec.prefix: create_family(spec.family, dim, targets, spec.params, spec.train_value, f"shifts.{k}.params")
            for k, spec in enumerate(cfg.shifts)}


def sample_latents(cfg: GenerateConfig, family: ShiftFamily, spec: ShiftSpec, value: float, split_seed: int,
                   indices, num_classes: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Latents ``[N, d]``, dataset labels and noise seeds of samples ``indices`` of a split."""
    seeds = [sample_seed(split_seed, i) for i in indices]
    eps = draw_noise(seeds, family.dim)
    labels = draw_labels(split_seed, indices, num_classes, cfg.labels)
    return family.latents(eps, labels, value, spec.classes), labels, seeds


def describe_plan(cfg: GenerateConfig, plan: Plan, families: dict[str, ShiftFamily] | None = None) -> str:
    """The plan as text (``--dry-run``): configs, shards, images and decoder calls."""
    bs = cfg.runtime.batch_size
    per_batch = SAMPLERS.create(cfg.sampler.name, cfg.sampler).network_calls()
    if cfg.sampler.guidance_scale > 1:  # conditional and unconditional halves of one doubled batch
        per_batch *= 2
    batches = sum(math.ceil(t.rows / bs) for t in plan.tasks)
    lines = [f"dataset {cfg.name!r}: {len(plan.configs)} configs, {len(plan.tasks)} shards, "
             f"{plan.images} images",
             f"decoder {cfg.decoder.backend} {cfg.decoder.source!r}; sampler {cfg.sampler.name} "
             f"{cfg.sampler.steps} steps -> {per_batch} network calls per batch of {bs}, "
             f"{batches * per_batch} calls in all"]
    if families is None:
        lines.append("(set decoder.latent_shape to see the latent shape and the intensity of each config)")
    else:
        fam = next(iter(families.values()))
        lines.append(f"latent shape {list(cfg.decoder.latent_shape)} (dimension d = {fam.dim}); images "
                     f"quantized by {cfg.output.quantize}")
    lines.append(f"{'config':<28} {'family':<16} {'value':>8} {'axis':>10} {'intensity':>10}  splits")
    for c in plan.configs:
        fam = families[c.spec.prefix] if families else None
        axis = f"{fam.axis(c.value):>10.4g}" if fam else f"{'?':>10}"
        name = fam.axis_name if fam else ""
        splits = ", ".join(f"{s} {v['num_examples']}" for s, v in c.splits.items())
        lines.append(f"{c.name:<28} {c.spec.family:<16} {fmt.format_value(c.value):>8} "
                     f"{name:>10} {axis}  {splits}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------


def _state(cfg: GenerateConfig):
    from accelerate import PartialState

    # `auto` on a machine without CUDA is the CPU: every rank must then join the gloo group.
    return PartialState(cpu=resolve_device(cfg.runtime.device, "runtime.device").type == "cpu")


def _rank0_prepare(cfg: GenerateConfig, root: Path, overwrite: bool):
    """Lock the folder, clean an interrupted run's temporaries, refuse (or with ``overwrite``
    clear) anything another config left, and save the resolved config for reruns."""
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--out: {str(root)!r} is a file; give a folder")
    root.mkdir(parents=True, exist_ok=True)
    lock = fmt.folder_lock(root)
    lock.acquire()
    try:
        removed = clean_temporaries(root)
        if removed:
            log.info("removed %d temporary files of an interrupted run", removed)
        _claim_folder(root, build_plan(cfg), overwrite)
        atomic_write_text(root / fmt.STATE_DIR / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    except BaseException:
        lock.release()
        raise
    return lock


def _foreign_files(root: Path, plan: Plan) -> list[str]:
    """Shards and shard records in ``root`` that this plan would not write."""
    shards = {t.rel_path for t in plan.tasks}
    records = {fmt.record_path(root, t).name for t in plan.tasks}
    state = root / fmt.STATE_DIR / "shards"
    old_records = sorted(str(p.relative_to(root)) for p in state.glob("*") if p.name not in records)
    return [rel for rel in fmt.files_under_data(root) if rel not in shards] + old_records


def _claim_folder(root: Path, plan: Plan, overwrite: bool) -> None:
    """A folder holds one dataset: what another config wrote there (other shard names, or the same
    names with other settings) is refused, or removed with ``overwrite``."""
    foreign = _foreign_files(root, plan)
    stale = [t.rel_path for t in plan.tasks if fmt.record_fingerprint(root, t) not in (None, t.fingerprint)]
    if not (foreign or stale):
        return
    if not overwrite:
        if stale:
            raise CtrlshiftError(f"{root / stale[0]}: made with other settings than this config ({len(stale)} shards; "
                                 f"and {len(foreign)} files it would not write); use another --out, or --overwrite to "
                                 "replace them")
        raise CtrlshiftError(f"{root / foreign[0]}: not written by this config ({len(foreign)} such files: a folder "
                             "made with other settings, or files added by hand); remove them, use another --out, "
                             "or --overwrite to remove them")
    for rel in foreign:
        (root / rel).unlink()
    (root / "manifest.json").unlink(missing_ok=True)
    log.warning("%s: --overwrite: removed %d files of another config; %d shards will be written again",
                root, len(foreign), len(stale))


def generate(cfg: GenerateConfig, out: str | Path, overwrite: bool = False, progress: bool = True) -> dict | None:
    """Run the job; returns the manifest on rank 0 (None on other ranks)."""
    from accelerate.utils import broadcast_object_list

    root = Path(out)
    state = _state(cfg)
    lock, error = None, None
    created = state.is_main_process and not root.exists()
    if state.is_main_process:
        try:
            lock = _rank0_prepare(cfg, root, overwrite)
        except CtrlshiftError as exc:
            error = str(exc)
    if state.num_processes > 1:
        box = [error]
        broadcast_object_list(box, from_process=0)
        error = box[0]
    if error:
        raise CtrlshiftError(error)
    try:
        return _generate(cfg, root, state, overwrite, progress)
    except BaseException:
        if created:
            _remove_if_unused(root)
        raise
    finally:
        if lock is not None:
            lock.release()


def _remove_if_unused(root: Path) -> None:
    """A run that failed before writing any shard into a folder it created leaves no folder."""
    state = {fmt.STATE_DIR + "/lock", fmt.STATE_DIR + "/config.yaml"}
    if all(str(p.relative_to(root)) in state for p in root.rglob("*") if p.is_file()):
        shutil.rmtree(root, ignore_errors=True)


def _generate(cfg: GenerateConfig, root: Path, state, overwrite: bool, progress: bool) -> dict | None:
    if cfg.runtime.device == "auto":
        cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, device=str(state.device)))
    decoder = create_decoder(cfg.decoder, cfg.sampler, cfg.runtime, cfg.output.quantize)
    num_classes = dataset_num_classes(decoder, cfg.decoder)
    class_names = dataset_class_names(decoder, cfg.decoder)
    for k, spec in enumerate(cfg.shifts):
        bad = [c for c in spec.classes or [] if not 0 <= c < num_classes]
        if bad:
            raise ConfigError(f"shifts.{k}.classes: {bad} are not dataset classes (0..{num_classes - 1})")
    families = make_families(cfg, decoder.latent_shape)
    plan = build_plan(cfg)
    mine = plan.tasks[state.process_index::state.num_processes]

    pending = []
    for task in mine:  # rank 0 has refused other settings already (or, with --overwrite, they are redone)
        status = fmt.shard_status(root, task)
        if status == "damaged":
            log.warning("%s: checksum or record does not verify; writing it again", task.rel_path)
        if status != "done":
            pending.append(task)
    skipped = len(mine) - len(pending)
    if skipped:
        who = f"rank {state.process_index}: " if state.num_processes > 1 else ""
        log.info("%s%d of %d shards already complete and verified", who, skipped, len(mine))

    _write_shards(cfg, root, decoder, families, pending, class_names, num_classes, state, progress)
    state.wait_for_everyone()
    manifest = None
    if state.is_main_process:
        manifest = _finish(cfg, root, plan, decoder, families, class_names, state.num_processes)
    state.wait_for_everyone()
    return manifest


def _write_shards(cfg, root, decoder: Decoder, families, tasks, class_names, num_classes, state, progress):
    from tqdm.auto import tqdm

    total = sum(t.rows for t in tasks)
    desc = "generate" if state.num_processes == 1 else f"generate (rank 0 of {state.num_processes})"
    bar = tqdm(total=total, unit="img", desc=desc,
               disable=not (progress and state.is_main_process), dynamic_ncols=True)
    specs = {s.prefix: s for s in cfg.shifts}
    model_classes = torch.tensor(cfg.decoder.classes) if cfg.decoder.classes is not None else None
    bs = cfg.runtime.batch_size
    writes: list[Future] = []
    t0, busy = time.perf_counter(), 0.0
    with ThreadPoolExecutor(cfg.runtime.encode_workers) as encoders, ThreadPoolExecutor(1) as shard_writer:
        for task in tasks:
            spec, family = specs[task.prefix], families[task.prefix]
            indices = range(task.start, task.stop)
            z, labels, seeds = sample_latents(cfg, family, spec, task.value, task.split_seed, indices, num_classes)
            model_labels = model_classes[labels] if model_classes is not None else labels
            pngs: list[Future] = []
            for b in range(0, task.rows, bs):
                t1 = time.perf_counter()
                images = _decode_batch(decoder, z[b:b + bs], model_labels[b:b + bs], f"batch {b // bs} of "
                                       f"{task.config}/{task.split} shard {task.shard}").cpu().numpy()
                busy += time.perf_counter() - t1  # on a GPU, .cpu() waits for the decoder's work
                pngs.append(encoders.submit(fmt.encode_png, images))
                bar.update(min(bs, task.rows - b))
            intensity = family.axis(task.value)
            columns = {"label": labels.tolist(), "model_label": model_labels.tolist(), "index": list(indices),
                       "seed": seeds, "family": [spec.family] * task.rows, "value": [task.value] * task.rows,
                       "intensity": [intensity] * task.rows}
            writes.append(shard_writer.submit(_store, root, task, class_names, columns, pngs, state.process_index))
            while len(writes) > 2:  # bound the memory held by shards in flight
                writes.pop(0).result()
        for f in writes:
            f.result()
    bar.close()
    if tasks:
        who = f"rank {state.process_index}: " if state.num_processes > 1 else ""
        wall = time.perf_counter() - t0
        # The decoder's share of the wall time: near 100% when encoding and writing keep up beside it.
        log.info("%s%d images in %.1fs, decoding %.1fs of it (%.0f%%)", who, total, wall, busy, 100 * busy / wall,
                 extra={"shard_writing": {"images": total, "seconds": wall, "decoding_seconds": busy}})


def _decode_batch(decoder: Decoder, z: torch.Tensor, labels: torch.Tensor, where: str) -> torch.Tensor:
    """Decode one batch and hold the decoder to its contract; a failure names the batch and shard
    (nothing of that shard is written)."""
    try:
        images = decoder.decode(z, labels)
    except CtrlshiftError as exc:
        raise type(exc)(f"{exc} (in {where})") from None
    except Exception as exc:
        log.debug("decoder traceback", exc_info=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CtrlshiftError(f"decoder {decoder.cfg.backend!r} failed in {where}: {type(exc).__name__}: {first}; "
                             "run with -v for the traceback") from None
    problem = check_images(images, len(z))
    if problem:
        raise DecoderOutputError(f"decoder {decoder.cfg.backend!r} {problem} in {where}")
    return images


def _store(root, task, class_names, columns, pngs, rank):
    columns["png"] = [b for f in pngs for b in f.result()]
    return fmt.write_shard(root, task, class_names, columns, rank)


def paired_pixel_distances(root: Path, plan: Plan) -> dict[str, float | None]:
    """Per config, the mean absolute pixel difference (grey levels / 255) between each test image
    and the image of the same index at its family's base value: the same noise seed, decoded
    before and after the shift. None where the family has no base-value test split to pair with.
    Each base split is decoded once for its whole family."""
    def has_test(c) -> bool:
        return bool(c.splits.get("test", {}).get("num_examples"))

    def images(name) -> dict[int, np.ndarray]:
        return {r["index"]: fmt.decode_png(r["image"]).astype(np.int16)
                for r in iter_rows(root, name, "test", ["image", "index"])}

    out: dict[str, float | None] = {}
    for prefix in dict.fromkeys(c.spec.prefix for c in plan.configs):
        family = [c for c in plan.configs if c.spec.prefix == prefix]
        base = next((c for c in family if c.value == c.spec.train_value and has_test(c)), None)
        base_images = images(base.name) if base is not None else {}
        for c in family:
            if base is None or not has_test(c):
                out[c.name] = None
            elif c.name == base.name:
                out[c.name] = 0.0
            else:
                shifted = images(c.name)
                common = sorted(set(base_images) & set(shifted))
                out[c.name] = (sum(float(np.abs(base_images[i] - shifted[i]).mean()) for i in common)
                               / len(common) / 255.0) if common else None
    return out


def _finish(cfg: GenerateConfig, root: Path, plan: Plan, decoder: Decoder, families, class_names,
            num_processes: int) -> dict:
    foreign = _foreign_files(root, plan)
    if foreign:
        raise CtrlshiftError(f"{root / foreign[0]}: not part of this dataset ({len(foreign)} such files); remove "
                             "them, or rerun with --overwrite, before the manifest and card are written")
    records = []
    for task in plan.tasks:
        status = fmt.shard_status(root, task)
        if status != "done":
            raise CtrlshiftError(f"{root / task.rel_path}: {status} after the run; rerun the same command to finish it")
        records.append(fmt.read_record(root, task))
    records.sort(key=lambda r: r["path"])
    configs = {}
    boxes = {}  # one training typical set per family, shared by its values
    pixels = paired_pixel_distances(root, plan)
    for c in plan.configs:
        fam = families[c.spec.prefix]
        if c.spec.prefix not in boxes:
            boxes[c.spec.prefix] = typical_box(fam, cfg.intensity.samples, cfg.intensity.alpha)
        frac = outside_fraction(fam, c.value, cfg.intensity.samples, cfg.intensity.alpha, box=boxes[c.spec.prefix])
        if c.spec.classes is not None and c.value != fam.train_value:
            frac *= len(c.spec.classes) / len(class_names)
        tv = total_variation(fam, c.value, cfg.intensity.samples)
        if c.spec.classes is not None and c.value != fam.train_value:
            tv *= len(c.spec.classes) / len(class_names)  # a mixture: only those classes' latents move
        info = ConfigInfo(
            family=c.spec.family, prefix=c.spec.prefix, value=c.value, train_value=fam.train_value,
            axis=fam.axis_name, axis_unit=fam.axis_unit, intensity=fam.axis(c.value), outside_fraction=frac,
            shifted_classes=c.spec.classes, family_params=dataclasses.asdict(fam.params), splits=c.splits,
            centre_angle=fam.centre_angle(c.value) if hasattr(fam, "centre_angle") else None,
            total_variation=tv, pixel_distance=pixels[c.name])
        configs[c.name] = info.to_json()
    dataset_hash = stable_hash([(r["path"], r["sha256"]) for r in records])
    manifest = {
        "format": fmt.FORMAT,
        "name": cfg.name,
        **stamp(),
        "config": to_dict(cfg),
        "generator": decoder.identity(),
        "class_names": class_names,
        "num_classes": len(class_names),
        "latent_shape": list(decoder.latent_shape),
        "configs": configs,
        "card": {"pretty_name": cfg.output.card.pretty_name or cfg.name, "license": cfg.output.card.license,
                 "description": cfg.output.card.description},
        "dataset_hash": dataset_hash,
        "num_processes": num_processes,
        "cpu_threads": torch.get_num_threads(),  # intra-op threads of rank 0: see docs/dataset-format.md
        "shards": records,
    }
    # Run-specific settings do not belong in the dataset's identity.
    manifest["config"]["runtime"].pop("device", None)
    atomic_write_json(root / "manifest.json", manifest)
    grids = card.write_grids(root, manifest, cfg.output.grid) if cfg.output.grid else []
    for old in (root / "grids").glob("*.png") if (root / "grids").is_dir() else []:
        if f"grids/{old.name}" not in grids:  # a grid of another config that once lived here
            old.unlink()
    card.write_card(root, manifest)  # after the grids, which it shows
    write_croissant(root, manifest, card.CITATION)
    log.info("wrote %s: %d configs, %d shards", root, len(configs), len(records))
    return manifest


def write_latents(cfg: GenerateConfig, prefix: str, value: float, split: str, start: int, stop: int,
                  out: str | Path) -> Path:
    """Latents (and labels, seeds) of samples ``start..stop-1`` without loading any checkpoint:
    the latent shape comes from ``decoder.latent_shape`` and the class count from
    ``decoder.num_classes`` (or ``decoder.classes``)."""
    if cfg.decoder.latent_shape is None:
        raise ConfigError("decoder.latent_shape: needed to draw latents without loading the model; "
                          "set it in the config, e.g. decoder.latent_shape=[3,32,32]")
    k = len(cfg.decoder.classes) if cfg.decoder.classes is not None else cfg.decoder.num_classes
    if k is None:
        raise ConfigError("decoder.num_classes: needed to draw labels without loading the model; set it in the config")
    specs = {s.prefix: s for s in cfg.shifts}
    if prefix not in specs:
        raise ConfigError(f"--family: {prefix!r} is not in the config; it has {', '.join(specs)}")
    split_cfg = getattr(cfg.splits, split)
    if not 0 <= start < stop <= max(split_cfg.size, stop) or stop > split_cfg.size:
        raise ConfigError(f"--indices: {start}:{stop} is outside the {split} split of {split_cfg.size} samples")
    spec = specs[prefix]
    family = make_families(cfg, cfg.decoder.latent_shape)[prefix]
    family.check_value(value, "--value")
    z, labels, seeds = sample_latents(cfg, family, spec, value, split_cfg.seed, range(start, stop), k)
    z = z.reshape(-1, *cfg.decoder.latent_shape).numpy()
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out: {str(out)!r} is a folder; give FILE.npy or FILE.npz")
    if out.suffix == ".npz":
        atomic_save_npz(out, latents=z, labels=labels.numpy(), seeds=np.asarray(seeds, dtype=np.int64),
                        indices=np.arange(start, stop))
    elif out.suffix == ".npy":
        atomic_save_npy(out, z)
    else:
        raise ConfigError(f"--out: {str(out)!r} must end in .npy (latents) or .npz (latents, labels, seeds, indices)")
    return out
