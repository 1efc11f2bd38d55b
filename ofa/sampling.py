"""How each training phase samples subnets: one named choice in params (`sampling.rule`).

The phases table says how long each phase trains and with which learning rate and which
choices progressive shrinking opens (kernel, then depth, then width); `sampling` says what the
shrinking phases draw from (`sampling.rule`):

- `progressive`: the paper's progressive shrinking, each phase within its own choices;
- `progressive_sandwich`: the same, with BigNAS's sandwich rule (every step's first two
  subnets are the phase's largest and smallest);
- `naive`: every dimension elastic from the first shrinking phase on (the paper's Fig. 4
  baseline), with the same phases, budgets and learning rates;
- `naive_sandwich`: naive with the sandwich rule.

Channels are importance-sorted before the first phase with elastic width; with
`sampling.channel_sort: nested`, also before a phase that opens narrower widths than its
predecessor, by the paper authors' nested re-sort, which keeps the predecessor's narrowest
width's channels as one set (`ElasticBlock.sort_channels`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from ofa.config import Params
from ofa.space import Choices, SearchSpace, SubnetConfig


@dataclass(frozen=True)
class PhasePlan:
    """What one phase's steps draw and how its starting weights are prepared."""

    choices: Choices
    sandwich: bool
    sort: Literal["none", "full", "nested"]
    keep_expand: int | None = None  # nested: the predecessor's narrowest expand ratio


def _choices(params: Params, space: SearchSpace, name: str) -> Choices:
    ph = params.phase(name)
    own = space.phase_choices(ph)
    if ph.init_from is None or ph.fixed is not None or not params.sampling.rule.startswith("naive"):
        return own
    full = space.full_choices()
    return Choices(full.kernel, full.expand, full.depth, own.resolution)


def phase_plan(params: Params, name: str) -> PhasePlan:
    """The phase's choices, sandwich rule and channel sort under `params.sampling`."""
    space = SearchSpace(params.space)
    ph = params.phase(name)
    choices = _choices(params, space, name)
    # the teacher and scratch phases never read `sampling` (their DVC stages do not declare it)
    sandwich = (ph.init_from is not None and ph.fixed is None and ph.subnets_per_step >= 2
                and params.sampling.rule.endswith("_sandwich"))
    sort, keep = "none", None
    if ph.init_from is not None and ph.fixed is None and len(choices.expand) > 1:
        before = _choices(params, space, ph.init_from).expand
        if len(before) == 1:
            sort = "full"
        elif min(choices.expand) < min(before) and params.sampling.channel_sort == "nested":
            sort, keep = "nested", min(before)
    return PhasePlan(choices, sandwich, sort, keep)


def step_configs(space: SearchSpace, rng: random.Random, choices: Choices, r: int, n: int,
                 sandwich: bool) -> list[SubnetConfig]:
    """The subnets of one step; the generator is consumed alike with or without the sandwich."""
    cfgs = [space.sample(rng, choices, r) for _ in range(n)]
    if sandwich and n >= 2:
        cfgs[0], cfgs[1] = space.largest(choices, r), space.smallest(choices, r)
    return cfgs


def epoch_draws(space: SearchSpace, rng: random.Random, choices: Choices, steps: int, n: int,
                sandwich: bool, fixed: SubnetConfig | None = None
                ) -> list[tuple[int, list[SubnetConfig]]]:
    """Every step's resolution and subnets for one epoch, drawn up front in the order a step
    draws them (resolution, then subnets), so that an image folder can decode each batch at
    its step's resolution; `fixed`: one subnet only (a from-scratch run)."""
    draws = []
    for _ in range(steps):
        r = rng.choice(choices.resolution)
        draws.append((r, [fixed] * n if fixed is not None else
                      step_configs(space, rng, choices, r, n, sandwich)))
    return draws
