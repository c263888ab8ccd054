"""Generation speed: the reference decoding path against ctrlshift's, side by side in one process.

For each workload (real architectures at full size with random weights: throughput does not depend
on the weights), on the same device and the same latents, it times

  (a) the reference path: EDM's own Heun loop as NVlabs' ``generate.py`` / the Control+Shift
      reference code run it (float64 state, the network in float32, batch 100), or for DiT the
      diffusers ``DiTPipeline`` at its best batch in float16;
  (b) ctrlshift's decoder at its best settings (``--dtype``, ``--compile``, ``--channels-last``,
      the batch size), images out as uint8;
  (c) the whole ``generate`` job: latents, decoding, PNG encoding in threads, Parquet shards,
      checksums, manifest and card;

and prints images/s for each, the ratios b/a (``speedup``) and c/b (``job_over_decode``; the job
also runs at 2N images, so ``job_over_decode_marginal`` compares the per-image cost of the job
without its fixed start and finish: loading, the intensity estimates, manifest, card and grids,
and ``bytes_ratio_2n_over_n`` checks that bytes written grow linearly), the
model FLOPs per image and the fraction of the device's peak that (b) reaches (``mfu``, GPU only).
``--levers`` also times (b) with each speed lever alone. ``--quick`` runs small networks on the CPU
in under a minute and still prints every ratio (CI runs it as a smoke test). ``--json FILE``
writes the numbers.

    python scripts/bench_generate.py --quick
    python scripts/bench_generate.py --workloads edm-cifar10 edm-imagenet64 dit-xl2 --json bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctrlshift.generator.networks.edm import EDMPrecond, VPPrecond  # noqa: E402

# Peak dense tensor throughput (FLOP/s) of the accelerators these benchmarks target, bf16/fp16.
PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "4090": 165e12}

WORKLOADS = {
    # EDM's CIFAR-10 conditional DDPM++ (VP): 55.7M parameters, 50 Heun steps = 99 network calls.
    "edm-cifar10": dict(kind="edm", cls=VPPrecond, steps=50, kwargs=dict(
        img_resolution=32, img_channels=3, label_dim=10, model_type="SongUNet", embedding_type="positional",
        encoder_type="standard", decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1],
        model_channels=128, channel_mult=[2, 2, 2], dropout=0.13)),
    # EDM's ImageNet-64 conditional ADM: 296M parameters.
    "edm-imagenet64": dict(kind="edm", cls=EDMPrecond, steps=50, kwargs=dict(
        img_resolution=64, img_channels=3, label_dim=1000, model_type="DhariwalUNet", model_channels=192,
        channel_mult=[1, 2, 3, 4], num_blocks=3, attn_resolutions=[32, 16, 8], dropout=0.1)),
    "dit-xl2": dict(kind="dit", steps=50, guidance=4.0),
    # --quick: the same code paths on networks small enough for a CPU.
    "edm-quick": dict(kind="edm", cls=VPPrecond, steps=4, kwargs=dict(
        img_resolution=16, img_channels=3, label_dim=10, model_type="SongUNet", model_channels=32,
        channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8], dropout=0.0)),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(paths: dict, device, repeat: int, cold=()) -> tuple[dict, list[dict]]:
    """Seconds of each path's fastest run, and every round's seconds: one warm-up each (but those
    in ``cold``, which an earlier path warms), then ``repeat`` rounds in turn, every other round in
    the reverse order (a drift of the machine's speed then favours no path)."""
    for key, fn in paths.items():
        if key not in cold:
            fn()
    rounds = []
    for r in range(repeat):
        seconds = {}
        for key in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
            sync(device)
            t0 = time.perf_counter()
            paths[key]()
            sync(device)
            seconds[key] = time.perf_counter() - t0
        rounds.append(seconds)
    return {key: min(r[key] for r in rounds) for key in paths}, rounds


def timed(fn, device, repeat=1):
    """Seconds of the fastest of ``repeat`` runs after a warm-up (compilation, cudnn autotuning,
    allocator)."""
    return interleaved({"fn": fn}, device, repeat)[0]["fn"]


# -- EDM --------------------------------------------------------------------------------------

def karras(steps, net, sigma_end=1e-5):
    from ctrlshift.generator.samplers import karras_sigmas

    return karras_sigmas(steps, max(0.002, net.sigma_min), min(80.0, net.sigma_max), 7.0, sigma_end)


def reference_edm(net, z, labels, sigmas):
    """EDM's ``edm_sampler`` with no churn, as the reference code runs it: float64 state, the
    network in float32, the state copied to float32 and back at every call."""
    t_steps = torch.as_tensor(sigmas, dtype=torch.float64, device=z.device)
    x_next = z.to(torch.float64) * t_steps[0]
    n = len(t_steps) - 1
    for i in range(n):
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        x_cur = x_next.clone()
        denoised = net(x_cur.float(), t_cur.float().expand(len(z)), labels).to(torch.float64)
        d_cur = (x_cur - denoised) / t_cur
        x_next = x_cur + (t_next - t_cur) * d_cur
        if i < n - 1:
            denoised = net(x_next.float(), t_next.float().expand(len(z)), labels).to(torch.float64)
            d_prime = (x_next - denoised) / t_next
            x_next = x_cur + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
    return ((x_next / 2 + 0.5).clamp(0, 1) * 255).to(torch.uint8)


def edm_folder(net, kwargs, root: Path) -> Path:
    """The network as a ``ctrlshift convert`` folder: what the edm backend loads."""
    from ctrlshift.generator.networks.edm_pickle import save_converted

    return save_converted(net, type(net).__name__, kwargs, root, "random weights (benchmark)")


def flops_per_call(net, x, sigma, labels) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x, sigma, labels)
    return counter.get_total_flops() / len(x)


def bench_edm(name, spec, args, device, out):
    from ctrlshift.generator.decoders import DecoderConfig, RuntimeConfig, create_decoder
    from ctrlshift.generator.samplers import SamplerConfig

    torch.manual_seed(0)
    net = spec["cls"](**spec["kwargs"]).eval().requires_grad_(False).to(device)
    params = sum(p.numel() for p in net.parameters())
    steps = spec["steps"] if not args.steps else args.steps
    n = args.images
    k = spec["kwargs"]["label_dim"]
    shape = (spec["kwargs"]["img_channels"], spec["kwargs"]["img_resolution"], spec["kwargs"]["img_resolution"])
    z = torch.randn(n, *shape, generator=torch.Generator().manual_seed(1)).to(device)
    labels = torch.eye(k, device=device)[torch.arange(n, device=device) % k]
    sig = karras(steps, net)
    ref_bs = min(args.reference_batch, n)

    def run_reference():
        with torch.no_grad():
            for b in range(0, n, ref_bs):
                reference_edm(net, z[b:b + ref_bs], labels[b:b + ref_bs], sig)

    folder = edm_folder(net.cpu(), spec["kwargs"], out / f"{name}-net")
    net.to(device)

    def decoder(dtype, compile_, bs, channels_last=False, mode="default"):
        rt = RuntimeConfig(device=str(device), dtype=dtype, batch_size=bs, compile=compile_, compile_mode=mode)
        sampler = SamplerConfig(name="edm-heun", steps=steps, sigma_min=0.002, sigma_max=80.0, sigma_end=1e-5)
        dec = create_decoder(DecoderConfig(backend="edm", source=str(folder)), sampler, rt, "floor")
        if channels_last:
            dec.raw_net.to(memory_format=torch.channels_last)
        return dec

    def run_decoder(dec, bs):
        zz = z.reshape(n, -1)
        y = torch.arange(n) % k
        for b in range(0, n, bs):
            dec.decode(zz[b:b + bs], y[b:b + bs])

    best = dict(dtype=args.dtype, compile=args.compile, bs=args.batch, channels_last=args.channels_last)
    dec = decoder(best["dtype"], best["compile"], best["bs"], best["channels_last"])
    sizes = {}

    def job(key, images):
        def run():
            sizes[key] = bench_job(folder, shape, k, steps, images, best, device, out / f"{name}-{key}")[1:]
        return run

    # The paths take turns, each timed `repeat` times after a warm-up, and each keeps its fastest
    # round: a slow spell of a shared machine then hits every path alike.
    t, rounds = interleaved({"reference": run_reference, "decode": lambda: run_decoder(dec, best["bs"]),
                             "job": job("job", n), "job2": job("job2", 2 * n)}, device, args.repeat, cold=("job2",))
    # Decoding alone against the job, round by round: the median of the paired ratios shrugs off
    # a slow spell that hits one round (the ratio of fastest runs can pair a lucky run with a slow one).
    paired = statistics.median(r["decode"] / r["job"] for r in rounds)
    t_ref, t_dec, t_job, t_job2 = t["reference"], t["decode"], t["job"], t["job2"]
    share = SHARE.busy / SHARE.wall  # of the last job run (2N images)
    (bytes_written, shards), (bytes2, shards2) = sizes["job"], sizes["job2"]
    levers = {}
    if args.levers:
        gpu = device.type == "cuda"
        low = "bfloat16"
        for label, kw in [("fp32", dict(dtype="float32")),
                          ("fp32 batch/4", dict(dtype="float32", bs=max(1, best["bs"] // 4))),
                          ("fp32+channels_last", dict(dtype="float32", channels_last=True)),
                          ("fp32+compile", dict(dtype="float32", compile_=True)),
                          ("bf16", dict(dtype=low)),
                          ("bf16+channels_last", dict(dtype=low, channels_last=True)),
                          ("bf16+compile", dict(dtype=low, compile_=True)),
                          ("bf16+compile max-autotune", dict(dtype=low, compile_=True, mode="max-autotune")),
                          ("bf16+compile reduce-overhead (CUDA graphs)", dict(dtype=low, compile_=True,
                                                                              mode="reduce-overhead"))]:
            if not gpu and ("max-autotune" in label or "CUDA graphs" in label):
                continue  # GPU-only modes (on a CPU they add nothing but compile time)
            if "max-autotune" in label and not args.autotune:
                continue  # minutes of kernel search per shape: only with --autotune
            bs = kw.pop("bs", best["bs"])
            d = decoder(bs=bs, **{"compile_": False, **kw})
            levers[label] = n / timed(lambda d=d, bs=bs: run_decoder(d, bs), device, args.repeat)
            del d
    job_keys = {"job_seconds_n": t_job, "job_seconds_2n": t_job2, "fixed_seconds": 2 * t_job - t_job2,
                "job_over_decode_marginal": (t_dec / n) / max((t_job2 - t_job) / n, 1e-12),
                "bytes_n": bytes_written, "bytes_2n": bytes2, "bytes_ratio_2n_over_n": bytes2 / bytes_written,
                "shard_bytes_ratio_2n_over_n": shards2 / shards,
                "decoder_share_of_job": share, "job_over_decode_paired": paired,
                "rounds_seconds": rounds}
    x1 = z[:1].float()
    fl = flops_per_call(net, x1, torch.ones(1, device=device), labels[:1]) * (2 * steps - 1)
    return report(name, params, fl, n, t_ref, t_dec, t_job, device, best, levers, bytes_written,
                  {"reference_batch": ref_bs, "steps": steps, "network_calls_per_image": 2 * steps - 1, **job_keys})


class DecoderShare(logging.Handler):
    """The generate job logs its shard-writing wall time and the part of it spent decoding
    (waiting for the decoder's images), as the record's ``shard_writing``: the latest pair."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.wall = self.busy = None

    def emit(self, record):
        timing = getattr(record, "shard_writing", None)
        if timing is not None:
            self.wall, self.busy = timing["seconds"], timing["decoding_seconds"]


SHARE = DecoderShare()


def job_config(folder, shape, k, steps, n, runtime: dict) -> dict:
    """The generate config the benchmarks time: ``n`` test images of one config of the EDM network
    in ``folder``, one decoder batch per shard."""
    return {"name": "bench", "decoder": {"backend": "edm", "source": str(folder), "latent_shape": list(shape),
                                         "num_classes": k},
            "sampler": {"name": "edm-heun", "steps": steps, "sigma_min": 0.002, "sigma_max": 80.0, "sigma_end": 1e-5},
            "shifts": [{"family": "truncation", "values": [90], "train_value": 90}],
            "splits": {"train": {"size": 0}, "val": {"size": 0}, "test": {"size": n, "seed": 0}},
            "intensity": {"samples": 100}, "output": {"shard_size": runtime["batch_size"], "grid": 0, "quantize": "floor"},
            "runtime": runtime}


def bench_job(folder, shape, k, steps, n, best, device, root):
    """The whole generate job on one config of ``n`` test images; returns (seconds, bytes written,
    bytes of the shards alone)."""
    import ctrlshift

    shutil.rmtree(root, ignore_errors=True)
    cfg = job_config(folder, shape, k, steps, n, {"device": str(device), "dtype": best["dtype"],
                                                   "batch_size": best["bs"], "compile": best["compile"]})
    t0 = time.perf_counter()
    ctrlshift.generate(cfg, root, progress=False)
    sync(device)
    seconds = time.perf_counter() - t0
    written = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    shards = sum(p.stat().st_size for p in (root / "data").rglob("*.parquet"))
    return seconds, written, shards


# -- DiT ---------------------------------------------------------------------------------------

def bench_dit(name, spec, args, device, out):
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    from ctrlshift.generator.decoders import DecoderConfig, RuntimeConfig, create_decoder
    from ctrlshift.generator.samplers import SamplerConfig

    torch.manual_seed(0)
    tr = DiTTransformer2DModel(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
                               num_layers=28, sample_size=32, patch_size=2, num_embeds_ada_norm=1000)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=2, sample_size=256, scaling_factor=0.18215)
    root = out / f"{name}-pipe"
    DiTPipeline(tr, vae, DDIMScheduler(num_train_timesteps=1000, clip_sample=False)).save_pretrained(root)
    params = sum(p.numel() for p in tr.parameters())
    steps = spec["steps"] if not args.steps else args.steps
    n, g = args.images, spec["guidance"]
    pipe = DiTPipeline.from_pretrained(root, torch_dtype=torch.float16 if device.type == "cuda" else torch.float32)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    ref_bs = min(args.reference_batch, n)
    labels = [k % 1000 for k in range(n)]

    def run_reference():
        for b in range(0, n, ref_bs):
            pipe(class_labels=labels[b:b + ref_bs], guidance_scale=g, num_inference_steps=steps, output_type="np")

    t_ref = timed(run_reference, device)
    best = dict(dtype=args.dtype, compile=args.compile, bs=args.batch, channels_last=False)
    rt = RuntimeConfig(device=str(device), dtype=best["dtype"], batch_size=best["bs"], compile=best["compile"])
    dec = create_decoder(DecoderConfig(backend="diffusers-dit", source=str(root)),
                         SamplerConfig(name="ddim", steps=steps, guidance_scale=g), rt)
    z = torch.randn(n, 4 * 32 * 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor(labels)

    def run_decoder():
        for b in range(0, n, best["bs"]):
            dec.decode(z[b:b + best["bs"]], y[b:b + best["bs"]])

    t_dec = timed(run_decoder, device)
    x = torch.randn(2, 4, 32, 32, device=device, dtype=next(dec.transformer.parameters()).dtype)
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        dec.transformer(x, timestep=torch.tensor([500, 500], device=device), class_labels=torch.tensor([1, 1000],
                                                                                                       device=device))
    fl = counter.get_total_flops() / 2 * 2 * steps  # both halves of the guided batch, every step
    return report(name, params, fl, n, t_ref, t_dec, None, device, best, {}, None,
                  {"reference_batch": ref_bs, "steps": steps, "guidance": g})


# -- report ------------------------------------------------------------------------------------

def peak_flops(device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK.items() if k in name), None)


def report(name, params, flops, n, t_ref, t_dec, t_job, device, best, levers, bytes_written, extra):
    ips = {"reference": n / t_ref, "ctrlshift": n / t_dec}
    if t_job is not None:
        ips["job"] = n / t_job
    peak = peak_flops(device)
    row = {"workload": name, "params": params, "images": n, "img_per_s": ips,
           "speedup": ips["ctrlshift"] / ips["reference"],
           "job_over_decode": ips["job"] / ips["ctrlshift"] if "job" in ips else None,
           "flops_per_image": flops, "mfu": flops * ips["ctrlshift"] / peak if peak else None,
           "settings": best, "levers_img_per_s": levers, "bytes_written": bytes_written,
           "bytes_per_image": bytes_written / n if bytes_written else None, **extra}
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small networks on the CPU, under a minute")
    p.add_argument("--workloads", nargs="+", default=None, choices=sorted(WORKLOADS))
    p.add_argument("--images", type=int, default=None, help="images per path (default 400; --quick 128)")
    p.add_argument("--steps", type=int, default=None, help="solver steps (default: the workload's)")
    p.add_argument("--batch", type=int, default=None, help="ctrlshift's batch size (default 400; --quick 32)")
    p.add_argument("--reference-batch", type=int, default=100, help="the reference path's batch (100)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="ctrlshift's autocast dtype (default bfloat16 on a GPU, float32 on the CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile ctrlshift's network")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--levers", action="store_true", help="also time each speed lever alone")
    p.add_argument("--autotune", action="store_true", help="with --levers, also torch.compile max-autotune")
    p.add_argument("--repeat", type=int, default=None,
                   help="time each path this many times after a warm-up and keep the fastest (default 1; "
                        "--quick 3: a short run on a shared CPU is noisy)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    job_log = logging.getLogger("ctrlshift.generator.job")
    job_log.setLevel(logging.INFO)
    job_log.addHandler(SHARE)
    job_log.propagate = False
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if args.quick:
        args.workloads = args.workloads or ["edm-quick"]
        args.images = args.images or 128
        args.batch = args.batch or 32
        args.reference_batch = min(args.reference_batch, 8)
        args.repeat = args.repeat or 3
    args.repeat = args.repeat or 1
    args.workloads = args.workloads or ["edm-cifar10", "edm-imagenet64", "dit-xl2"]
    args.images = args.images or 400
    args.batch = args.batch or 400
    args.dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads:
            spec = WORKLOADS[name]
            bench = bench_edm if spec["kind"] == "edm" else bench_dit
            rows.append(bench(name, spec, args, device, Path(tmp)))
    result = {"benchmark": "generate", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
              platform.processor() or platform.machine(), "device_type": device.type,
              "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "quick": args.quick, "workloads": rows}
    print(f"device {result['device']} ({device.type}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'workload':<16} {'params':>8} {'ref img/s':>10} {'ctrl img/s':>10} {'job img/s':>10} "
          f"{'speedup b/a':>11} {'job/decode':>10} {'GFLOP/img':>10} {'MFU':>6}")
    for r in rows:
        ips = r["img_per_s"]
        job = f"{ips['job']:.2f}" if "job" in ips else "-"
        jd = f"{r['job_over_decode']:.3f}" if r["job_over_decode"] is not None else "-"
        mfu = f"{100 * r['mfu']:.0f}%" if r["mfu"] is not None else "-"
        print(f"{r['workload']:<16} {r['params'] / 1e6:7.1f}M {ips['reference']:10.2f} {ips['ctrlshift']:10.2f} "
              f"{job:>10} {r['speedup']:10.2f}x {jd:>10} {r['flops_per_image'] / 1e9:10.1f} {mfu:>6}")
        if "job_over_decode_marginal" in r:
            print(f"    job at N={r['images']}: {r['job_seconds_n']:.1f} s, at 2N: {r['job_seconds_2n']:.1f} s -> "
                  f"fixed {r['fixed_seconds']:.1f} s, per-image job/decode {r['job_over_decode_marginal']:.3f}, "
                  f"bytes 2N/N {r['bytes_ratio_2n_over_n']:.3f} (shards alone "
                  f"{r['shard_bytes_ratio_2n_over_n']:.3f}); job/decode paired by round (median of "
                  f"{len(r['rounds_seconds'])}) {r['job_over_decode_paired']:.3f}; the decoder busy {100 * r['decoder_share_of_job']:.1f}% "
                  "of the job's shard-writing time")
        for lever, v in r["levers_img_per_s"].items():
            print(f"    lever {lever:<20} {v:8.2f} img/s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
