"""diffusers' own schedulers as ctrlshift samplers, built from each model's scheduler config.

``sampler.name`` picks the scheduler; its config is the model's ``scheduler_config.json`` (so
``timestep_spacing``, ``steps_offset``, ``prediction_type``, ``clip_sample`` and the beta schedule
are the model's), with ``sampler.options`` on top (passed to ``from_config``). ``model`` keeps the
class the config names. Decoding is the plain diffusers loop::

    scheduler.set_timesteps(steps)
    x = z * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(net(scheduler.scale_model_input(x, t), t), t, x).prev_sample

A Control+Shift decoder must be a function of its latent, so stochastic schedulers (DDPM,
ancestral and SDE variants, LCM, TCD, DDIM with eta > 0, ...) are refused with one line that names
the deterministic ones. Flow-matching schedulers (``flow-euler``, ``flow-heun``) run on
flow-matching models only, and the others on variance-preserving models only.
"""

from __future__ import annotations

import copy
import json

import torch

from ..errors import ConfigError
from .samplers import SAMPLERS, Sampler, VPModel

# name: (diffusers class, config keys it fixes, what it is)
DETERMINISTIC = {
    "ddim": ("DDIMScheduler", {}, "DDIM, eta = 0"),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}, "DPM-Solver++ (multistep)"),
    "dpmsolver": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver"}, "DPM-Solver (multistep)"),
    "dpmsolver-singlestep": ("DPMSolverSinglestepScheduler", {}, "DPM-Solver (singlestep)"),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC (multistep)"),
    "deis": ("DEISMultistepScheduler", {}, "DEIS (multistep)"),
    "euler": ("EulerDiscreteScheduler", {}, "Euler (Karras et al.), no churn"),
    "heun": ("HeunDiscreteScheduler", {}, "Heun (Karras et al.), 2 network calls per step but the last"),
    "lms": ("LMSDiscreteScheduler", {}, "linear multistep"),
    "kdpm2": ("KDPM2DiscreteScheduler", {}, "DPM-Solver-2 (k-diffusion)"),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}, "PNDM (PLMS steps)"),
    "flow-euler": ("FlowMatchEulerDiscreteScheduler", {}, "flow matching, Euler (SD3, Flux, ...)"),
    "flow-heun": ("FlowMatchHeunDiscreteScheduler", {}, "flow matching, Heun"),
}
STOCHASTIC = {
    "ddpm": "DDPMScheduler", "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "kdpm2-ancestral": "KDPM2AncestralDiscreteScheduler", "dpmsolver-sde": "DPMSolverSDEScheduler",
    "sde-dpmsolver++": "DPMSolverMultistepScheduler (algorithm_type sde-dpmsolver++)", "lcm": "LCMScheduler", "tcd": "TCDScheduler",
}
STOCHASTIC_CLASSES = {
    "DDPMScheduler", "DDPMParallelScheduler", "DDPMWuerstchenScheduler", "EulerAncestralDiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler", "DPMSolverSDEScheduler", "LCMScheduler", "TCDScheduler",
    "ScoreSdeVeScheduler", "KarrasVeScheduler", "CMStochasticIterativeScheduler", "FlowMatchLCMScheduler",
    "LTXEulerAncestralRFScheduler", "RePaintScheduler", "SASolverScheduler", "SCMScheduler",
}
FLOW_CLASSES = {"FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"}


def deterministic_names() -> str:
    return ", ".join(["model", *DETERMINISTIC])


def stochastic_problem(class_name: str, config: dict) -> str | None:
    """Why a scheduler of this class and config is not a function of its latent, or None."""
    if class_name in STOCHASTIC_CLASSES:
        return f"{class_name} adds fresh noise at every step"
    if str(config.get("algorithm_type", "")).startswith("sde"):
        return f"{class_name} with algorithm_type {config['algorithm_type']!r} is an SDE solver"
    if config.get("stochastic_sampling"):
        return f"{class_name} with stochastic_sampling adds fresh noise"
    if float(config.get("eta", 0) or 0) > 0:
        return f"eta = {config['eta']} adds fresh noise"
    if float(config.get("s_churn", 0) or 0) > 0:
        return f"s_churn = {config['s_churn']} adds fresh noise"
    return None


def _jsonable(value):
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


class DiffusersScheduler(Sampler):
    """A diffusers scheduler named by ``sampler.name`` (see :data:`DETERMINISTIC`)."""

    runs_on = ("vp", "pipeline")
    class_name: str | None = None  # None: the class the model's config names
    fixed: dict = {}

    def __init__(self, cfg):
        super().__init__(cfg)
        problem = stochastic_problem(self.class_name or "", {**self.fixed, **cfg.options})
        if problem:
            raise ConfigError(f"sampler.options: {problem}; a Control+Shift decoder must be a function of its "
                              f"latent, so use a deterministic setting (sampler.name: {deterministic_names()})")

    def scheduler(self, model_config: dict | None = None):
        """A fresh scheduler from the model's config (None: the class defaults) with the options."""
        import diffusers

        model_config = dict(model_config or {})
        own = model_config.get("_class_name")
        name = self.class_name or own
        if name is None:
            raise ConfigError("sampler.name: 'model' needs the model's scheduler config, and this model has none; "
                              f"name a scheduler ({', '.join(DETERMINISTIC)})")
        cls = getattr(diffusers, name, None)
        if cls is None or not name.endswith("Scheduler"):
            raise ConfigError(f"sampler.name: the model's scheduler config names {name!r}, which this diffusers "
                              f"({diffusers.__version__}) does not have; name one of {', '.join(DETERMINISTIC)}")
        overrides = {**self.fixed, **self.cfg.options}
        problem = stochastic_problem(name, {**model_config, **overrides})
        if problem:
            raise ConfigError(f"sampler.name: {problem} ({self.cfg.name!r}{' on ' + repr(own) if own else ''}); a "
                              "Control+Shift decoder must be a function of its latent: set sampler.name to one of "
                              f"{deterministic_names()}")
        if own is not None and (name in FLOW_CLASSES) != (own in FLOW_CLASSES):
            kind = "flow-matching" if own in FLOW_CLASSES else "variance-preserving (diffusion)"
            able = [n for n, (c, _, _) in DETERMINISTIC.items() if (c in FLOW_CLASSES) == (own in FLOW_CLASSES)]
            raise ConfigError(f"sampler.name: {self.cfg.name!r} ({name}) cannot drive this {kind} model (its "
                              f"scheduler is {own}); use model or one of {', '.join(able)}")
        return cls.from_config(model_config, **overrides) if model_config else cls(**overrides)

    def timesteps(self, model_config: dict | None = None, device="cpu"):
        sched = self.scheduler(model_config)
        sched.set_timesteps(self.cfg.steps, device=device)
        return sched

    def network_calls(self, model_config: dict | None = None) -> int:
        try:
            return len(self.timesteps(model_config).timesteps)
        except ConfigError:
            return self.cfg.steps  # 'model' without a config: one call per step for most schedulers

    def run_vp(self, model: VPModel, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        sched = self.timesteps(model.scheduler_config, z.device)
        x = z.float() * sched.init_noise_sigma
        n = x.shape[0]
        for t in sched.timesteps:
            out = model.eps_model(sched.scale_model_input(x, t), t.expand(n), labels)
            x = sched.step(out.float(), t, x).prev_sample
        return x

    @staticmethod
    def settings_of(sched) -> dict:
        return _jsonable(dict(sched.config))

    def settings(self, model: VPModel | None = None) -> dict:
        config = model.scheduler_config if model is not None else None
        sched = self.timesteps(config)
        return {"name": self.cfg.name, "steps": self.cfg.steps, "scheduler": type(sched).__name__,
                "network_calls": len(sched.timesteps), "config": _jsonable(dict(sched.config)),
                "timesteps": _jsonable(sched.timesteps)}


def _register(name: str, class_name: str | None, fixed: dict, doc: str) -> None:
    cls = type(f"Scheduler_{name}", (DiffusersScheduler,), {"class_name": class_name, "fixed": copy.deepcopy(fixed),
                                                            "__doc__": doc})
    SAMPLERS.register(name)(cls)


class Refused(Sampler):
    """A stochastic scheduler: named so that choosing it gets a clear refusal, never a sampler."""

    class_name = ""
    refused = True
    runs_on = ("vp", "pipeline", "edm")  # so that every backend gives this refusal, not "decodes with"

    def __init__(self, cfg):
        raise ConfigError(f"sampler.name: {cfg.name!r} ({self.class_name}) adds fresh noise at every step; a "
                          "Control+Shift decoder must be a function of its latent, so use one of "
                          f"{deterministic_names()}")


_register("model", None, {}, "the scheduler class the model's own scheduler config names (if deterministic)")
for _name, (_cls, _fixed, _doc) in DETERMINISTIC.items():
    _register(_name, _cls, _fixed, f"diffusers {_cls}: {_doc}")
for _name, _cls in STOCHASTIC.items():
    SAMPLERS.register(_name)(type(f"Refused_{_name}", (Refused,), {
        "class_name": _cls, "__doc__": f"refused: diffusers {_cls} is stochastic"}))
