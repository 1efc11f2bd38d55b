"""SubnetConfig codecs, validation against the space, and seeded sampling/mutation/crossover."""

from __future__ import annotations

import random

import pytest

from ofa.errors import OFAError
from ofa.space import SearchSpace, SubnetConfig

SEEDS = list(range(8))


@pytest.mark.parametrize("seed", SEEDS)
def test_json_and_string_round_trip(space: SearchSpace, seed: int):
    cfg = space.sample(random.Random(seed))
    assert SubnetConfig.from_json(cfg.to_json()) == cfg
    assert SubnetConfig.parse(str(cfg)) == cfg
    assert SubnetConfig.parse(cfg.to_json()) == cfg
    assert space.validate(cfg) is cfg


def test_string_form_is_compact(space: SearchSpace):
    assert str(space.max_config(28)) == "r28-d4444-k" + "7" * 16 + "-e" + "6" * 16


@pytest.mark.parametrize("change, needle", [
    (lambda c: SubnetConfig((9,) + c.ks[1:], c.e, c.d, c.r), "kernel size 9"),
    (lambda c: SubnetConfig(c.ks, (5,) + c.e[1:], c.d, c.r), "expand ratio 5"),
    (lambda c: SubnetConfig(c.ks, c.e, (5,) + c.d[1:], c.r), "depth 5"),
    (lambda c: SubnetConfig(c.ks, c.e, c.d, 30), "resolution 30"),
    (lambda c: SubnetConfig(c.ks[:-1], c.e, c.d, c.r), "16 kernel and expand"),
    (lambda c: SubnetConfig(c.ks, c.e, c.d[:-1], c.r), "4 depths"),
])
def test_validation_names_the_problem(space: SearchSpace, change, needle: str):
    with pytest.raises(OFAError, match=needle):
        space.validate(change(space.mid_config()))


@pytest.mark.parametrize("text", ["r28-d44-k7", "{bad json", '{"ks": [3]}', "hello"])
def test_parse_refuses_garbage(text: str):
    with pytest.raises(OFAError):
        SubnetConfig.parse(text)


def test_sampling_is_seeded(space: SearchSpace):
    a = [space.sample(random.Random(1)) for _ in range(3)]
    b = [space.sample(random.Random(1)) for _ in range(3)]
    c = [space.sample(random.Random(2)) for _ in range(3)]
    assert a == b and a != c


def test_phase_choices_restrict_sampling(space: SearchSpace, params):
    ch = space.phase_choices(params.phase("depth1"))
    rng = random.Random(0)
    for _ in range(50):
        cfg = space.sample(rng, ch)
        assert set(cfg.e) == {6} and set(cfg.d) <= {3, 4} and cfg.r in ch.resolution


@pytest.mark.parametrize("seed", SEEDS)
def test_mutation_and_crossover_stay_in_space(space: SearchSpace, seed: int):
    rng = random.Random(seed)
    a, b = space.sample(rng), space.sample(rng)
    m = space.mutate(a, rng, prob=0.5)
    x = space.crossover(a, b, rng)
    space.validate(m)
    space.validate(x)
    assert m != a
    assert all(g in (ga, gb) for g, ga, gb in zip(x.ks + x.e + x.d, a.ks + a.e + a.d, b.ks + b.e + b.d))


def test_canonical_ignores_skipped_slots(space: SearchSpace):
    cfg = space.min_config()
    skipped = space.max_depth - 1  # the last slot of stage 0 is skipped at depth 2
    other = SubnetConfig(tuple(7 if i == skipped else k for i, k in enumerate(cfg.ks)), cfg.e, cfg.d, cfg.r)
    assert other != cfg and space.canonical(other) == space.canonical(cfg)


def test_fixed_points_are_valid(space: SearchSpace):
    for cfg in (space.min_config(), space.mid_config(), space.max_config()):
        space.validate(cfg)
    assert len(space.active_slots(space.min_config())) == 2 * space.n_stages
    assert len(space.active_slots(space.max_config())) == space.n_slots
