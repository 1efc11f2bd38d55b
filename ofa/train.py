"""One training loop for every phase (teacher, shrinking phases, from-scratch baselines).

Each step samples `subnets_per_step` subnets from the phase's plan (ofa.sampling) at one sampled
resolution, accumulates their gradients and takes one optimizer step; the loss is
label-smoothed cross-entropy plus kd_ratio x soft cross-entropy against the full network (the
teacher phase's weights, or with `kd_from: largest` the step's own largest subnet, trained on
the labels alone). Sampling is seeded per (phase, epoch), so every DDP rank draws the same
subnets and a resumed run continues exactly where an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ofa import paths
from ofa.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from ofa.config import Params, PhaseConfig, to_dict
from ofa.data import Dataset, augment, batches, load_dataset, to_input
from ofa.distributed import DistContext, all_sum, average_buffers, barrier, torch_threads
from ofa.errors import OFAError
from ofa.evaluate import EvalSettings, evaluate_subnet
from ofa.nn.supernet import OFAMobileNetV3
from ofa.progress import make_progress
from ofa.sampling import epoch_draws, phase_plan
from ofa.seeding import derive_seed, torch_seed
from ofa.space import Choices, SearchSpace, SubnetConfig
from ofa.weights import load_supernet, load_weights


@dataclass(frozen=True)
class PhaseResult:
    checkpoint: Path
    report: Path
    history: list[dict]
    model: OFAMobileNetV3  # this rank's trained weights (identical on every DDP rank)


def lr_at(step: int, total: int, warmup: int, base: float, end: float = 0.0) -> float:
    """Linear warm-up to `base`, then cosine decay from `base` to `end`."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return end + 0.5 * (base - end) * (1 + math.cos(math.pi * progress))


def epoch_steps(phase: PhaseConfig, n_train: int, batch_size: int) -> int:
    """Optimizer steps per epoch: `images_per_epoch` (0 = the whole training split), in full
    batches."""
    return min(phase.images_per_epoch or n_train, n_train) // batch_size


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    return torch.sum(-target_probs * F.log_softmax(logits, dim=1), dim=1).mean()


def build_optimizer(model: nn.Module, params: Params, lr: float) -> torch.optim.Optimizer:
    """SGD Nesterov; no weight decay on BN parameters and biases (1-d tensors)."""
    tc = params.train
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": tc.weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=lr, momentum=tc.momentum, nesterov=tc.nesterov)


def fingerprint(params: Params, phase: str) -> str:
    relevant = {"data": to_dict(params.data), "space": to_dict(params.space),
                "train": to_dict(params.train), "phase": to_dict(params.phase(phase)),
                "plan": to_dict(phase_plan(params, phase))}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def _starting_point(params: Params, phase: str, net: OFAMobileNetV3,
                    opt: torch.optim.Optimizer, log) -> tuple[int, list[dict]]:
    """Resume from the phase's own last complete epoch, else start from `init_from`."""
    rpath = paths.resume_state(params, phase)
    if rpath.is_file():
        try:
            payload = load_checkpoint(rpath)
        except OFAError as exc:
            payload = None
            why = str(exc)
        else:
            why = "its params (data, space, train or the phase) differ from params.yaml"
        if payload is not None and payload["meta"].get("fingerprint") == fingerprint(params, phase):
            load_weights(net, payload["model"], rpath)
            load_weights(opt, payload.get("optimizer", {}), rpath)
            log(f"resuming phase {phase} after epoch {payload['meta']['epoch']}")
            return int(payload["meta"]["epoch"]), list(payload["meta"]["history"])
        rpath.unlink(missing_ok=True)
        log(f"discarded the resume point {rpath} ({why}); starting phase {phase} afresh")
    ph = params.phase(phase)
    if ph.init_from is not None:
        src = paths.checkpoint(params, ph.init_from)
        if not src.is_file():
            raise OFAError(f"phase {phase} starts from {src}, which does not exist yet: "
                           f"run `ofa-cli train --phase {ph.init_from}` first")
        load_weights(net, load_checkpoint(src, to_dict(params.space))["model"], src)
        plan = phase_plan(params, phase)
        if plan.sort != "none":
            net.sort_channels(plan.keep_expand)
    return 0, []


def train_phase(params: Params, phase: str, ctx: DistContext = DistContext(),
                data: Dataset | None = None, show_progress: bool = True) -> PhaseResult:
    """Train one phase (resuming its last complete epoch); the caller's global RNG is untouched."""
    with torch_seed(derive_seed(params.train.seed, phase, "init"), ctx.device), \
            warnings.catch_warnings():
        # channels_last (C,1,k,k) and (O,I,1,1) weights get gradients whose strides differ
        # only on size-1 dimensions (the same memory layout); DDP warns and copies them
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view")
        return _train_phase(params, phase, ctx, data, show_progress)


def _train_phase(params: Params, phase: str, ctx: DistContext, data: Dataset | None,
                 show_progress: bool) -> PhaseResult:
    ph = params.phase(phase)
    tc = params.train
    log = print if ctx.is_main else (lambda *_: None)
    data = data or load_dataset(params.data, params.space)
    space = SearchSpace(params.space)
    net = OFAMobileNetV3(space)
    opt = build_optimizer(net, params, ph.lr)
    start_epoch, history = _starting_point(params, phase, net, opt, log)
    teacher = None
    if ph.kd_ratio > 0 and ph.kd_from == "teacher":
        teacher, _ = load_supernet(params, _teacher_path(params, phase))
        teacher.eval().requires_grad_(False)
    fmt = torch.channels_last if tc.channels_last else torch.contiguous_format
    net = net.to(ctx.device, memory_format=fmt)
    if teacher is not None:
        teacher = teacher.to(ctx.device, memory_format=fmt)
    model: nn.Module = net
    if ctx.world > 1:
        model = nn.parallel.DistributedDataParallel(net, find_unused_parameters=True)
    plan = phase_plan(params, phase)
    choices = plan.choices
    fixed = space.fixed_config(ph)
    if tc.batch_size % ctx.world:
        raise OFAError(f"params: train.batch_size: {tc.batch_size} is not divisible by the "
                       f"{ctx.world} DDP processes")
    per_rank = tc.batch_size // ctx.world
    steps = epoch_steps(ph, len(data.train), tc.batch_size)
    if steps == 0:
        raise OFAError(f"phase {phase}: fewer images per epoch than one batch ({tc.batch_size})")
    total, warmup = ph.epochs * steps, int(ph.warmup_epochs * steps)
    settings = EvalSettings.of(params)
    report = paths.train_report(params, phase)
    with make_progress(show_progress and ctx.is_main) as bar:
        for epoch in range(start_epoch, ph.epochs):
            net.train()
            torch.manual_seed(derive_seed(tc.seed, phase, epoch, "torch", ctx.rank))
            arch_rng = random.Random(derive_seed(tc.seed, phase, epoch, "arch"))
            data_gen = torch.Generator().manual_seed(derive_seed(tc.seed, phase, epoch, "data"))
            aug_gen = torch.Generator().manual_seed(derive_seed(tc.seed, phase, epoch, "aug", ctx.rank))
            task = bar.add_task(f"{phase} {epoch + 1}/{ph.epochs}", total=steps, info="")
            sums = [0.0, 0.0, 0.0]  # loss, correct, samples
            t0 = time.perf_counter()
            draws = epoch_draws(space, arch_rng, choices, steps, ph.subnets_per_step,
                                plan.sandwich, fixed)
            for i, (x, y) in enumerate(batches(data.train, per_rank, generator=data_gen,
                                               limit=steps * tc.batch_size, rank=ctx.rank,
                                               world=ctx.world, drop_last=True,
                                               sizes=[r for r, _ in draws])):
                lr = lr_at(epoch * steps + i, total, warmup, ph.lr, ph.lr_end)
                for group in opt.param_groups:
                    group["lr"] = lr
                r, cfgs = draws[i]
                if params.data.augment_batches:  # a folder's batches come augmented
                    x = augment(x, aug_gen)
                x = to_input(x, r, data.mean, data.std, tc.channels_last)
                x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
                soft = None
                if teacher is not None:
                    with torch.no_grad():
                        soft = F.softmax(teacher(x, space.max_config(r)), dim=1)
                opt.zero_grad(set_to_none=True)
                for j, cfg in enumerate(cfgs):
                    # DDP averages gradients once per step, after the last subnet's backward
                    with _accumulating(model, last=j == len(cfgs) - 1):
                        out = model(x, cfg)
                        loss = F.cross_entropy(out, y, label_smoothing=tc.label_smoothing)
                        if soft is not None:
                            loss = loss + ph.kd_ratio * soft_cross_entropy(out, soft)
                        elif j == 0 and ph.kd_ratio > 0 and ph.kd_from == "largest":
                            soft = F.softmax(out.detach(), dim=1)  # in-place: the largest teaches
                        value = loss.item()
                        if not math.isfinite(value):
                            raise _diverged(phase, epoch, i, steps, cfg, value)
                        loss.backward()
                    sums[0] += value * len(y)
                    sums[1] += float((out.argmax(1) == y).sum())
                    sums[2] += len(y)
                opt.step()
                ips = (i + 1) * tc.batch_size / (time.perf_counter() - t0)
                bar.update(task, advance=1, info=f"loss {sums[0] / sums[2]:.3f} "
                           f"acc {sums[1] / sums[2]:.3f} {ips:.0f} img/s lr {lr:.4f}")
            seconds = time.perf_counter() - t0
            loss_sum, correct, seen = all_sum(sums, ctx)
            average_buffers(net, ctx)
            row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                   "images_per_s": steps * tc.batch_size / seconds, "seconds": seconds,
                   "lr_end": lr}
            if ctx.is_main:  # the other ranks wait at the barrier: rank 0 takes every thread
                bar.update(task, info="validating the largest and smallest subnet (BN recalibrated)")
                if not show_progress:
                    log(f"{phase} epoch {epoch + 1}: trained in {seconds:.0f} s; validating")
                t_eval = time.perf_counter()
                with torch_threads(tc.threads or torch.get_num_threads()):
                    row.update(_epoch_eval(net, space, choices, data, settings, tc.eval_images,
                                           fixed))
                row["eval_seconds"] = time.perf_counter() - t_eval
                history.append(row)
                if not _finite_weights(net):
                    raise _diverged(phase, epoch, steps - 1, steps, cfgs[-1], math.nan)
                meta = _meta(params, phase, epoch + 1, history, ctx.world)
                save_checkpoint(paths.resume_state(params, phase), net.state_dict(), meta,
                                opt.state_dict())
                _write_report(report, phase, history, complete=False)
                log(f"{phase} epoch {epoch + 1}: " + ", ".join(
                    f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float)))
            barrier(ctx)
    final = paths.checkpoint(params, phase)
    if ctx.is_main:
        meta = _meta(params, phase, ph.epochs, history, ctx.world) | {"complete": True}
        save_checkpoint(final, net.state_dict(), meta)
        _write_report(report, phase, history, complete=True)
        resume = paths.resume_state(params, phase)
        resume.unlink(missing_ok=True)
        try:
            resume.parent.rmdir()  # only if no other phase is mid-run
        except OSError:
            pass
    barrier(ctx)
    return PhaseResult(final, report, history, net)


def _accumulating(model: nn.Module, last: bool) -> AbstractContextManager:
    """DDP's no_sync for every subnet of a step but the last (torch >= 2.4 syncs parameters
    used by any of them, even with find_unused_parameters)."""
    if last or not isinstance(model, nn.parallel.DistributedDataParallel):
        return nullcontext()
    return model.no_sync()


def _finite_weights(net: nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in net.state_dict().values()
               if t.is_floating_point())


def _diverged(phase: str, epoch: int, step: int, steps: int, cfg: SubnetConfig,
              value: float) -> OFAError:
    """Training stops rather than checkpoint a diverged state; the last resume point (after
    the `epoch` epochs completed) stays."""
    kept = f"its resume point after epoch {epoch} is kept" if epoch else "nothing was written"
    return OFAError(f"phase {phase}: training diverged (loss {value}) at epoch {epoch + 1}, step "
                    f"{step + 1} of {steps}, subnet {cfg}; no checkpoint was saved from this state "
                    f"({kept}); lower phases.{phase}.lr or check the data")


def _teacher_path(params: Params, phase: str) -> Path:
    path = paths.checkpoint(params, "teacher")
    if phase == "teacher" or not path.is_file():
        raise OFAError(f"phase {phase} distils from {path}, which does not exist yet: "
                       "run `ofa-cli train --phase teacher` first")
    return path


def _epoch_eval(net: OFAMobileNetV3, space: SearchSpace, choices: Choices, data: Dataset,
                settings: EvalSettings, limit: int, fixed: SubnetConfig | None = None) -> dict:
    """Validation top-1 of the phase's largest and smallest subnets (BN recalibrated); of its
    one subnet for a from-scratch phase."""
    big = fixed or space.largest(choices, max(choices.resolution))
    small = fixed or space.smallest(choices, min(choices.resolution))
    out = {"val_acc_max": evaluate_subnet(net, big, data, settings, limit=limit)["val_acc"]}
    if small != big:
        out["val_acc_min"] = evaluate_subnet(net, small, data, settings, limit=limit)["val_acc"]
    net.train()
    return out


def _meta(params: Params, phase: str, epoch: int, history: list[dict], world: int) -> dict:
    return {"phase": phase, "epoch": epoch, "world": world, "space": to_dict(params.space),
            "phase_config": to_dict(params.phase(phase)), "fingerprint": fingerprint(params, phase),
            "history": history, "complete": False}


def _write_report(path: Path, phase: str, history: list[dict], complete: bool) -> None:
    last = history[-1] if history else {}
    summary = {"phase": phase, "complete": complete, "epochs": len(history),
               "train_seconds": sum(h["seconds"] for h in history), **{
                   k: v for k, v in last.items() if k.startswith("val_acc")}, "history": history}
    atomic_write_text(path, json.dumps(summary, indent=2))
    keys = list(history[0]) if history else []
    csv = ",".join(keys) + "\n" + "".join(
        ",".join(str(h.get(k, "")) for k in keys) + "\n" for h in history)
    atomic_write_text(path.with_suffix(".csv"), csv)
