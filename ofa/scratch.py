"""From-scratch baselines: one subnet trained alone from random initialisation with the recipe
and image budget of params `scratch:` (the default teacher phase's), at its own resolution
(optionally distilled from the teacher).

It is a phase of the one training loop (`PhaseConfig.fixed`: the supernet restricted to one
config, which keeps the fast CPU kernel), so it resumes after a kill like every phase and
writes its checkpoint and training report where the phases do; `reports/scratch/<name>.json`
adds its test top-1 and cost (wall time, images seen) for the comparison with the supernet.
"""

from __future__ import annotations

import dataclasses
import json

from ofa import paths
from ofa.checkpoint import atomic_write_text
from ofa.config import Params
from ofa.data import load_dataset
from ofa.evaluate import EvalSettings, evaluate_subnet
from ofa.space import SubnetConfig
from ofa.train import epoch_steps
from ofa.weights import load_for_inference


def scratch_name(cfg: SubnetConfig, distill: bool) -> str:
    """The run's name: its checkpoint, resume state and reports are named after it."""
    return f"scratch-{cfg}" + ("-kd" if distill else "")


def with_scratch_phase(params: Params, cfg: SubnetConfig, distill: bool) -> tuple[Params, str]:
    """`params` plus the phase that trains `cfg` alone: the teacher phase's settings with the
    epochs, images, learning rate and warm-up of `params.scratch` (its cosine decaying to 0,
    whatever the teacher's `lr_end`), no initialisation from
    another phase, its own resolution only, and (with `distill`) the teacher's soft labels at
    kd_ratio 1 as in the shrinking phases."""
    name = scratch_name(cfg, distill)
    rec = params.scratch
    phase = dataclasses.replace(
        params.phase("teacher"), epochs=rec.epochs, lr=rec.lr, lr_end=0.0,
        warmup_epochs=rec.warmup_epochs,
        images_per_epoch=rec.images_per_epoch, kernel=tuple(sorted(set(cfg.ks))),
        expand=tuple(sorted(set(cfg.e))), depth=tuple(sorted(set(cfg.d))), fixed=str(cfg),
        kd_ratio=1.0 if distill else 0.0, init_from=None, kd_from="teacher",
        elastic_resolution=False, subnets_per_step=1)
    return dataclasses.replace(params, phases={**params.phases, name: phase}), name


def write_scratch_report(params: Params, name: str) -> dict:
    """Validation and test top-1 of the trained subnet (BN recalibrated, as every evaluation)
    and what it cost: training seconds and images seen."""
    cfg = SubnetConfig.parse(params.phase(name).fixed)
    train = json.loads(paths.train_report(params, name).read_text())
    net = load_for_inference(params, paths.checkpoint(params, name), params.train.eval_backend)
    data = load_dataset(params.data, params.space)
    row = evaluate_subnet(net, cfg, data, EvalSettings.of(params), ("val", "test"),
                          params.train.final_eval_images, backend=params.train.eval_backend)
    ph = params.phase(name)
    steps = epoch_steps(ph, len(data.train), params.train.batch_size)
    summary = {"name": name, "config": str(cfg), "distilled": ph.kd_ratio > 0,
               "val_acc": row["val_acc"], "test_acc": row["test_acc"], "macs": row["macs"],
               "params": row["params"], "train_seconds": train["train_seconds"],
               "images_seen": ph.epochs * steps * params.train.batch_size,
               "data": params.data.fingerprint(),
               "checkpoint": str(paths.checkpoint(params, name))}
    out = paths.scratch_report(params, name)
    atomic_write_text(out, json.dumps(summary, indent=2))
    return summary | {"path": str(out)}

