"""SubnetConfig codecs, validation against the space, and seeded sampling/mutation/crossover."""

from __future__ import annotations

import random

import pytest

from ofa.errors import OFAError
from ofa.space import SearchSpace, SubnetConfig

SEEDS = list(range(10))


def _fixed(space: SearchSpace) -> list[SubnetConfig]:
    return [space.min_config(), space.mid_config(), space.max_config()]


@pytest.mark.parametrize("seed", SEEDS)
def test_json_and_string_round_trip(space: SearchSpace, seed: int):
    cfg = space.sample(random.Random(seed))
    assert SubnetConfig.from_json(cfg.to_json()) == cfg
    assert SubnetConfig.from_dict(cfg.to_dict()) == cfg
    assert SubnetConfig.parse(str(cfg)) == cfg
    assert SubnetConfig.parse(cfg.to_json()) == cfg  # parse accepts JSON as well
    assert SubnetConfig.parse(f"  {cfg}\n") == cfg
    assert space.validate(cfg) is cfg


def test_fixed_points_round_trip(space: SearchSpace):
    for cfg in _fixed(space):
        assert SubnetConfig.parse(str(cfg)) == cfg
        assert SubnetConfig.parse(cfg.to_json()) == cfg


def test_string_form_is_compact(space: SearchSpace):
    assert str(space.max_config(28)) == "r28-d4444-k" + "7" * 16 + "-e" + "6" * 16
    cfg = SubnetConfig.parse("r20-d2342-k" + "3579" * 4 + "-e" + "3466" * 4)
    assert cfg.r == 20 and cfg.d == (2, 3, 4, 2) and cfg.ks[:4] == (3, 5, 7, 9)


@pytest.mark.parametrize("change, needle", [
    (lambda c: SubnetConfig((9,) + c.ks[1:], c.e, c.d, c.r), "kernel size 9"),
    (lambda c: SubnetConfig(c.ks, (5,) + c.e[1:], c.d, c.r), "expand ratio 5"),
    (lambda c: SubnetConfig(c.ks, c.e, (5,) + c.d[1:], c.r), "depth 5"),
    (lambda c: SubnetConfig(c.ks, c.e, c.d, 30), "resolution 30"),
    (lambda c: SubnetConfig(c.ks[:-1], c.e, c.d, c.r), "16 kernel and expand"),
    (lambda c: SubnetConfig(c.ks, c.e + (6,), c.d, c.r), "16 kernel and expand"),
    (lambda c: SubnetConfig(c.ks, c.e, c.d[:-1], c.r), "4 depths, got 3"),
], ids=["kernel9", "expand5", "depth5", "res30", "short-ks", "long-e", "short-d"])
def test_validation_names_the_problem(space: SearchSpace, change, needle: str):
    with pytest.raises(OFAError, match=needle):
        space.validate(change(space.mid_config()))


@pytest.mark.parametrize("text", ["r28-d44-k7", "{bad json", '{"ks": [3]}', "hello", "[1, 2]",
                                  '{"ks": 5, "e": [6], "d": [4], "r": 28}', "r28-dx-k7-e6"])
def test_parse_refuses_garbage(text: str):
    with pytest.raises(OFAError):
        SubnetConfig.parse(text)


def test_sampling_is_seeded(space: SearchSpace):
    def draw(seed: int) -> list[SubnetConfig]:
        rng = random.Random(seed)
        return [space.sample(rng) for _ in range(5)]

    a, b, c = draw(1), draw(1), draw(2)
    assert a == b
    assert a != c
    assert len(set(a)) == len(a)  # successive draws from one generator differ
    assert all(space.validate(cfg) for cfg in a + c)


def test_sample_fixed_resolution(space: SearchSpace):
    rng = random.Random(0)
    assert {space.sample(rng, r=24).r for _ in range(20)} == {24}


@pytest.mark.parametrize("phase", ["teacher", "kernel", "depth1", "depth2", "expand1", "expand2",
                                   "naive"])
def test_phase_choices_restrict_sampling(space: SearchSpace, params, phase: str):
    ph = params.phase(phase)
    ch = space.phase_choices(ph)
    assert ch.resolution == (params.space.resolutions if ph.elastic_resolution
                             else (max(params.space.resolutions),))
    rng = random.Random(0)
    seen_k, seen_e, seen_d = set(), set(), set()
    for _ in range(60):
        cfg = space.sample(rng, ch)
        space.validate(cfg)
        seen_k |= set(cfg.ks)
        seen_e |= set(cfg.e)
        seen_d |= set(cfg.d)
        assert cfg.r in ch.resolution
    # only allowed values, and (with 60 draws) every allowed value shows up
    assert seen_k == set(ph.kernel) and seen_e == set(ph.expand) and seen_d == set(ph.depth)


@pytest.mark.parametrize("seed", SEEDS)
def test_canonical_ignores_skipped_slots(space: SearchSpace, seed: int):
    rng = random.Random(seed)
    cfg = space.sample(rng)
    cfg = SubnetConfig(cfg.ks, cfg.e, (min(space.cfg.depth_choices),) + cfg.d[1:], cfg.r)
    active = set(space.active_slots(cfg))
    skipped = [i for i in range(space.n_slots) if i not in active]
    assert skipped  # stage 0 runs the minimum depth
    ks, e = list(cfg.ks), list(cfg.e)
    for i in skipped:
        ks[i] = max(space.cfg.kernel_choices) if ks[i] != max(space.cfg.kernel_choices) else min(space.cfg.kernel_choices)
        e[i] = max(space.cfg.expand_choices) if e[i] != max(space.cfg.expand_choices) else min(space.cfg.expand_choices)
    other = SubnetConfig(tuple(ks), tuple(e), cfg.d, cfg.r)
    assert other != cfg
    canon = space.canonical(cfg)
    assert space.canonical(other) == canon
    assert space.canonical(canon) == canon and space.validate(canon)
    # an active slot still matters
    i = min(active)
    ks[i] = min(space.cfg.kernel_choices) if ks[i] != min(space.cfg.kernel_choices) else max(space.cfg.kernel_choices)
    changed = SubnetConfig(tuple(ks), tuple(e), cfg.d, cfg.r)
    assert space.canonical(changed) != canon


def test_fixed_points_are_valid(space: SearchSpace, params):
    for cfg in _fixed(space):
        space.validate(cfg)
    mn, mid, mx = _fixed(space)
    assert set(mn.ks) == {min(params.space.kernel_choices)} and mn.r == min(params.space.resolutions)
    assert set(mx.e) == {max(params.space.expand_choices)} and mx.r == max(params.space.resolutions)
    assert set(mid.d) == {3} and mid.r == 28
    assert len(space.active_slots(mn)) == min(params.space.depth_choices) * space.n_stages
    assert len(space.active_slots(mx)) == space.n_slots
