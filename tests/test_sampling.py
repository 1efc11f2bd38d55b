"""The sampling switch (`sampling.rule`, ofa/sampling.py): what each phase's steps draw, as the
training loop really draws it, and the paper authors' nested channel re-sort."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from conftest import tiny_params
from ofa.config import SamplingConfig, load_params
from ofa.nn.supernet import OFAMobileNetV3
from ofa.sampling import phase_plan
from ofa.space import SearchSpace, SubnetConfig

RULES = ("progressive", "progressive_sandwich", "naive", "naive_sandwich")


def _with(params, rule: str, channel_sort: str = "nested"):
    """params under this rule (distilled from the teacher where the rule has no sandwich: the
    in-place distillation of the default recipe needs one)."""
    phases = params.phases if rule.endswith("_sandwich") else {
        name: dataclasses.replace(ph, kd_from="teacher") for name, ph in params.phases.items()}
    return dataclasses.replace(params, phases=phases, sampling=SamplingConfig(rule, channel_sort))


@pytest.mark.parametrize("rule", RULES)
def test_plans_follow_the_rule(params, rule: str):
    p = _with(params, rule)
    space = SearchSpace(p.space)
    full = space.full_choices()
    teacher = phase_plan(p, "teacher")
    assert (teacher.choices.expand, teacher.sandwich, teacher.sort) == ((6,), False, "none")
    for name in p.shrinking_order()[1:]:
        plan, ph = phase_plan(p, name), p.phase(name)
        if rule.startswith("naive"):
            assert (plan.choices.kernel, plan.choices.expand, plan.choices.depth) == \
                (full.kernel, full.expand, full.depth)
        else:
            assert (plan.choices.kernel, plan.choices.expand, plan.choices.depth) == \
                (ph.kernel, ph.expand, ph.depth)
        assert plan.sandwich == (rule.endswith("sandwich") and ph.subnets_per_step >= 2)
    sorts = {n: (phase_plan(p, n).sort, phase_plan(p, n).keep_expand) for n in p.phases}
    if rule.startswith("naive"):  # every width from the first shrinking phase on
        assert sorts["kernel"] == ("full", None)
        assert all(v == ("none", None) for n, v in sorts.items() if n != "kernel")
    else:
        assert sorts["expand1"] == ("full", None) and sorts["expand2"] == ("nested", 4)
        assert all(v == ("none", None) for n, v in sorts.items() if n not in ("expand1", "expand2"))
    once = _with(params, rule, "once")
    assert all(phase_plan(once, n).sort != "nested" for n in p.phases)


def _recorded_steps(monkeypatch, params, phase: str) -> list[list[SubnetConfig]]:
    """The subnets each training step of `phase` runs, seen at the supernet's forward."""
    from ofa import train as train_mod

    calls: list[SubnetConfig] = []
    real = OFAMobileNetV3.forward

    def spy(self, x, cfg):
        if self.training and torch.is_grad_enabled():
            calls.append(cfg)
        return real(self, x, cfg)

    monkeypatch.setattr(OFAMobileNetV3, "forward", spy)
    try:
        train_mod.train_phase(params, phase, show_progress=False)
    finally:
        monkeypatch.setattr(OFAMobileNetV3, "forward", real)
    n = params.phase(phase).subnets_per_step
    return [calls[i:i + n] for i in range(0, len(calls), n)]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """teacher -> kernel trained for real on a few batches, shared by the rule tests."""
    from ofa.train import train_phase

    tmp = tmp_path_factory.mktemp("sampling")
    tiny_params(tmp, depth1={"images_per_epoch": 256, "subnets_per_step": 4})
    params = load_params(tmp / "params.yaml")
    for name in ("teacher", "kernel"):
        train_phase(params, name, show_progress=False)
    return params


@pytest.mark.parametrize("rule", RULES)
def test_each_rule_builds_the_expected_steps(chain, monkeypatch, rule: str):
    params = _with(chain, rule)
    space = SearchSpace(params.space)
    steps = _recorded_steps(monkeypatch, params, "depth1")
    ph = params.phase("depth1")
    assert len(steps) == ph.images_per_epoch // params.train.batch_size
    assert all(len(s) == ph.subnets_per_step and len({c.r for c in s}) == 1 for s in steps)
    drawn = [c for s in steps for c in s]
    depths = {d for c in drawn for d in c.d}
    expands = {c.e[i] for c in drawn for i in space.active_slots(c)}
    if rule.startswith("naive"):
        assert expands == set(space.cfg.expand_choices) and depths == set(space.cfg.depth_choices)
    else:
        assert expands == set(ph.expand) and depths == set(ph.depth)
    ch = phase_plan(params, "depth1").choices
    sandwiched = [s[0] == space.largest(ch, s[0].r) and s[1] == space.smallest(ch, s[0].r)
                  for s in steps]
    assert all(sandwiched) if rule.endswith("sandwich") else not any(sandwiched)


def test_the_nested_resort_keeps_the_narrower_widths_channel_set(supernet, space):
    """Before a second width phase: the channels of the previous narrowest width (e=4) keep
    their set and only reorder inside it (the paper authors' re-sort), and the full network
    computes the same function; a full re-sort would have changed that set."""
    supernet.eval()
    full = space.max_config(28)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, space.cfg.in_channels, 28, 28, generator=gen)
    with torch.no_grad():
        for block in supernet.blocks:  # importance that disagrees with the current order
            block.project.weight.mul_(torch.rand(block.project.weight.shape[1], generator=gen)
                                      .view(1, -1, 1, 1) + 0.1)
        before = supernet(x, full)
        keeps = [b.mid_channels(4) for b in supernet.blocks]
        sets = [{tuple(r.tolist()) for r in b.expand.weight[:k].flatten(1)}
                for b, k in zip(supernet.blocks, keeps)]
        full_sorted = OFAMobileNetV3(space)
        full_sorted.load_state_dict(supernet.state_dict())
        full_sorted.sort_channels()
        supernet.sort_channels(keep_expand=4)
        torch.testing.assert_close(supernet(x, full), before, rtol=1e-4, atol=1e-4)
    changed_by_full = 0
    for block, other, keep, kept in zip(supernet.blocks, full_sorted.blocks, keeps, sets):
        assert {tuple(r.tolist()) for r in block.expand.weight[:keep].flatten(1)} == kept
        importance = block.project.weight.abs().sum(dim=(0, 2, 3))
        assert torch.all(importance[:keep - 1] >= importance[1:keep])
        assert torch.all(importance[keep:-1] >= importance[keep + 1:])
        changed_by_full += {tuple(r.tolist()) for r in other.expand.weight[:keep].flatten(1)} != kept
    assert changed_by_full > 0


def test_in_place_distillation_needs_a_sandwich_rule(tmp_path: Path):
    from ofa.errors import OFAError

    tiny_params(tmp_path, kernel={"kd_from": "teacher"})   # the default distils in place
    raw = (tmp_path / "params.yaml").read_text().replace("rule: naive_sandwich",
                                                         "rule: progressive")
    (tmp_path / "params.yaml").write_text(raw)
    with pytest.raises(OFAError, match="phases.depth1.kd_from: 'largest' needs"):
        load_params(tmp_path / "params.yaml")


def test_sampling_is_part_of_the_resume_fingerprint(params):
    from ofa.train import fingerprint

    prints = {fingerprint(_with(params, r), "expand1") for r in RULES}
    assert len(prints) == len(RULES)
    assert len({fingerprint(_with(params, r), "teacher") for r in RULES}) == 1
