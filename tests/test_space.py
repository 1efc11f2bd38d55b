"""SubnetConfig codecs, validation against the space, and seeded sampling/mutation/crossover."""

from __future__ import annotations

import random
import re

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


@pytest.mark.parametrize("phase", ["teacher", "kernel", "depth1", "depth2", "expand1", "expand2"])
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


# -- strict readers: every hostile input is an OFAError naming the problem ------------------
K7, E6 = "7" * 16, "6" * 16
GOOD_STR = f"r28-d4444-k{K7}-e{E6}"
GOOD = {"ks": [7] * 16, "e": [6] * 16, "d": [4] * 4, "r": 28}


def _with(**changes) -> dict:
    return {**GOOD, **changes}


def _without(key: str) -> dict:
    return {k: v for k, v in GOOD.items() if k != key}


def _json(body: str) -> str:
    """GOOD as JSON text with `body` spliced in place of its r entry."""
    return '{"ks": %s, "e": %s, "d": %s, %s}' % (GOOD["ks"], GOOD["e"], GOOD["d"], body)


def test_hostile_inputs_start_from_accepted_ones(space: SearchSpace):
    """Each hostile input below is one change away from these, which are accepted and valid."""
    cfg = space.validate(SubnetConfig.from_dict(GOOD))
    assert SubnetConfig.parse(GOOD_STR) == cfg == space.max_config(28)
    assert SubnetConfig.from_json(_json('"r": 28')) == cfg
    assert SubnetConfig.parse(f" \t{_json(chr(34) + 'r' + chr(34) + ': 28')}\n") == cfg


DICT_CASES = [
    (_with(r=28.9), "key 'r': expected an integer, got 28.9 (float)"),
    (_with(r=28.0), "key 'r': expected an integer, got 28.0 (float)"),
    (_with(r=float("nan")), "key 'r': expected an integer, got nan (float)"),
    (_with(r=float("inf")), "key 'r': expected an integer, got inf (float)"),
    (_with(r=True), "key 'r': expected an integer, got True (bool)"),
    (_with(r=False), "key 'r': expected an integer, got False (bool)"),
    (_with(r="28"), "key 'r': expected an integer, got '28' (str)"),
    (_with(r=None), "key 'r': expected an integer, got None (NoneType)"),
    (_with(r=[28]), "key 'r': expected an integer, got [28] (list)"),
    (_with(r=-28), "key 'r': expected a non-negative integer, got -28"),
    (_with(ks=[7.5] + [7] * 15), "key 'ks' item 0: expected an integer, got 7.5 (float)"),
    (_with(ks=[7] * 15 + [7.0]), "key 'ks' item 15: expected an integer, got 7.0 (float)"),
    (_with(ks=K7), "key 'ks': expected a list of integers, got '7777777777777777' (str)"),
    (_with(ks=[True] * 16), "key 'ks' item 0: expected an integer, got True (bool)"),
    (_with(ks=[[7]] * 16), "key 'ks' item 0: expected an integer, got [7] (list)"),
    (_with(ks=["7"] * 16), "key 'ks' item 0: expected an integer, got '7' (str)"),
    (_with(ks=[]), "key 'ks': expected a non-empty list of integers, got []"),
    (_with(ks=tuple(GOOD["ks"])), "key 'ks': expected a list of integers"),
    (_with(ks=7), "key 'ks': expected a list of integers, got 7 (int)"),
    (_with(e=[-6] * 16), "key 'e' item 0: expected a non-negative integer, got -6"),
    (_with(e=[6] * 8 + [None] * 8), "key 'e' item 8: expected an integer, got None (NoneType)"),
    (_with(d=[10, 4, 4, 4]), "key 'd' item 0: expected a single digit 0-9"),
    (_with(d={"a": 4}), "key 'd': expected a list of integers, got {'a': 4} (dict)"),
    (_without("r"), "lacks the key(s) r (expected exactly ks, e, d, r)"),
    (_without("ks"), "lacks the key(s) ks (expected exactly ks, e, d, r)"),
    ({}, "lacks the key(s) ks, e, d, r"),
    (_with(x=1), "unexpected key(s) 'x' (expected exactly ks, e, d, r)"),
    (_with(k=GOOD["ks"]), "unexpected key(s) 'k'"),
    ({**_without("r"), "R": 28}, "unexpected key(s) 'R'"),
    ({**GOOD, 1: 2}, "unexpected key(s) 1"),
    ([1, 2], "must be a JSON object with the keys ks, e, d, r, got list [1, 2]"),
    (GOOD_STR, "must be a JSON object with the keys ks, e, d, r, got str"),
    (None, "must be a JSON object with the keys ks, e, d, r, got NoneType None"),
]

JSON_CASES = [
    (_json('"r": NaN'), "JSON is refused: NaN is not a number"),
    (_json('"r": Infinity'), "JSON is refused: Infinity is not a number"),
    (_json('"r": -Infinity'), "JSON is refused: -Infinity is not a number"),
    ('{"ks": [NaN], "e": [6], "d": [4], "r": 28}', "JSON is refused: NaN is not a number"),
    (_json('"r": 28, "r": 32'), "JSON is refused: key 'r' appears more than once"),
    (_json('"r": 28, "ks": [7]'), "JSON is refused: key 'ks' appears more than once"),
    (_json('"r": 28.9'), "key 'r': expected an integer, got 28.9 (float)"),
    (_json('"r": 28.0'), "key 'r': expected an integer, got 28.0 (float)"),
    (_json('"r": 28e0'), "key 'r': expected an integer, got 28.0 (float)"),
    (_json('"r": 1e400'), "key 'r': expected an integer, got inf (float)"),
    (_json('"r": true'), "key 'r': expected an integer, got True (bool)"),
    (_json('"r": null'), "key 'r': expected an integer, got None (NoneType)"),
    (_json('"r": "28"'), "key 'r': expected an integer, got '28' (str)"),
    (_json('"r": -28'), "key 'r': expected a non-negative integer, got -28"),
    (_json('"r": 028'), "is not valid JSON"),
    (_json('"r": ' + "9" * 5000), "is not valid JSON: Exceeds the limit"),
    ('{"ks": "7777", "e": [6], "d": [4], "r": 28}',
     "key 'ks': expected a list of integers, got '7777'"),
    ('{"ks": [[7]], "e": [6], "d": [4], "r": 28}', "key 'ks' item 0: expected an integer, got [7]"),
    ('{"ks": [7], "e": [6], "d": [4], "r": 28, "x": 0}', "unexpected key(s) 'x'"),
    ('{"ks": [7], "e": [6], "d": [4]}', "lacks the key(s) r"),
    (_json('"r": 28') + "{}", "is not valid JSON: Extra data"),
    ("{bad json", "is not valid JSON: Expecting property name"),
    ("", "is not valid JSON: Expecting value"),
    ("null", "must be a JSON object with the keys ks, e, d, r, got NoneType"),
    ("[1, 2]", "must be a JSON object with the keys ks, e, d, r, got list [1, 2]"),
    ("[" * 100_000, "is not valid JSON: maximum recursion depth"),
    (_json('"r": 28').encode(), "JSON must be text, got bytes"),
]

COMPACT = "cannot parse subnet config "
STR_CASES = [
    (f"r28-r32-d4444-k{K7}-e{E6}", "part r appears 2 times"),
    (f"{GOOD_STR}-r28", "part r appears 2 times"),
    (f"{GOOD_STR}-d4444", "part d appears 2 times"),
    (f"r28-d4444-k{K7}-k{K7}-e{E6}", "part k appears 2 times"),
    (f"d4444-r28-k{K7}-e{E6}", "parts are in the order d-r-k-e, not r-d-k-e"),
    (f"r28-d4444-e{E6}-k{K7}", "parts are in the order r-d-e-k, not r-d-k-e"),
    (f"r28-d4444-k{K7}", "missing part(s) e"),
    ("r28", "missing part(s) d, k, e"),
    (f"r28-d4444-k{K7}-e{E6}-x1", "unknown part 'x1'"),
    (f"R28-d4444-k{K7}-e{E6}", "unknown part 'R28'"),
    ("r28-banana", "unknown part 'banana'"),
    ("hello", "unknown part 'hello'"),
    ("", "it is empty"),
    (" \t\n ", "it is empty"),
    (f"-{GOOD_STR}", "it starts with '-'"),
    (f"{GOOD_STR}-", "it ends with '-'"),
    (f"r28--d4444-k{K7}-e{E6}", "it has '--'"),
    (f"r-28-d4444-k{K7}-e{E6}", "part r has no digits"),
    (f"r-d4444-k{K7}-e{E6}", "part r has no digits"),
    ("r28-d-k-e", "part d has no digits"),
    (f"r28-d4444-k{K7}-e", "part e has no digits"),
    (f"r28.9-d4444-k{K7}-e{E6}", "part r is '28.9', not ASCII digits 0-9"),
    (f"r28.0-d4444-k{K7}-e{E6}", "part r is '28.0', not ASCII digits 0-9"),
    (f"r+28-d4444-k{K7}-e{E6}", "part r is '+28', not ASCII digits 0-9"),
    (f"r1e3-d4444-k{K7}-e{E6}", "part r is '1e3', not ASCII digits 0-9"),
    (f"r\u0662\u0668-d4444-k{K7}-e{E6}", "part r is '\u0662\u0668', not ASCII digits 0-9"),
    (f"r28-d\uff14444-k{K7}-e{E6}", "part d is '\uff14444', not ASCII digits 0-9"),
    (f"r28-d4444-k{'7' * 15}\u00b2-e{E6}", "part k is '777777777777777\u00b2', not ASCII"),
    (f"r28 -d4444-k{K7}-e{E6}", "part r is '28 ', not ASCII digits 0-9"),
    (f"r 28-d4444-k{K7}-e{E6}", "part r is ' 28', not ASCII digits 0-9"),
    (f"{GOOD_STR}\x00", "part e is '6666666666666666\\x00', not ASCII digits 0-9"),
    (f"r28-d2_3-k{K7}-e{E6}", "part d is '2_3', not ASCII digits 0-9"),
    (GOOD_STR.replace("-", "_"), "part r is '28_d4444_k"),
    (f"r028-d4444-k{K7}-e{E6}", "resolution '028' has a leading zero"),
    (f"r{'9' * 5000}-d4444-k{K7}-e{E6}", "resolution has 5000 digits"),
]


def _ids(cases) -> list[str]:
    return [ascii(c[0])[:50] for c in cases]


def _refused(read, value, needle: str) -> str:
    with pytest.raises(OFAError, match=re.escape(needle)) as info:
        read(value)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300  # one line, even for huge input
    return message


@pytest.mark.parametrize("data, needle", DICT_CASES, ids=_ids(DICT_CASES))
def test_from_dict_is_strict(data, needle: str):
    assert _refused(SubnetConfig.from_dict, data, needle).startswith("subnet config ")


@pytest.mark.parametrize("text, needle", JSON_CASES, ids=_ids(JSON_CASES))
def test_from_json_is_strict(text, needle: str):
    assert _refused(SubnetConfig.from_json, text, needle).startswith("subnet config ")
    if isinstance(text, str) and text.startswith(("{", "[")):  # parse hands JSON to from_json
        assert _refused(SubnetConfig.parse, f"  {text}\n", needle).startswith("subnet config ")


@pytest.mark.parametrize("text, needle", STR_CASES, ids=_ids(STR_CASES))
def test_compact_string_is_strict(text: str, needle: str):
    assert _refused(SubnetConfig.parse, text, needle).startswith(COMPACT)


@pytest.mark.parametrize("value", [28, None, b"r28", ["r28"], 28.0], ids=ascii)
def test_parse_needs_text(value):
    _refused(SubnetConfig.parse, value, f"subnet config must be text, got {type(value).__name__}")


@pytest.mark.parametrize("seed", range(40))
def test_compact_string_round_trips_sampled_configs(space: SearchSpace, seed: int):
    rng = random.Random(seed)
    cfg = space.sample(rng)
    text = str(cfg)
    assert SubnetConfig.parse(text) == cfg and str(SubnetConfig.parse(text)) == text
    assert SubnetConfig.parse(f"\n {text} \t") == cfg  # whitespace around the whole is fine
    assert SubnetConfig.from_json(cfg.to_json()) == cfg == SubnetConfig.from_dict(cfg.to_dict())
    assert space.validate(SubnetConfig.parse(text)) == cfg
    # any resolution, multi-digit included (r128), and any single digits, parse back exactly
    other = SubnetConfig(tuple(rng.randrange(10) for _ in cfg.ks),
                         tuple(rng.randrange(10) for _ in cfg.e),
                         tuple(rng.randrange(10) for _ in cfg.d),
                         rng.choice([0, 7, 128, 224, 10 ** 6]))
    assert SubnetConfig.parse(str(other)) == other
    assert SubnetConfig.parse(other.to_json()) == other


def test_multi_digit_resolution_parses():
    cfg = SubnetConfig.parse(f"r128-d4444-k{K7}-e{E6}")
    assert cfg.r == 128 and cfg.d == (4, 4, 4, 4)
    assert SubnetConfig.parse("r0-d4-k7-e6") == SubnetConfig((7,), (6,), (4,), 0)


@pytest.mark.parametrize("seed", range(40))
def test_validate_refuses_any_value_outside_the_choices(space: SearchSpace, seed: int):
    """One entry of a sampled valid config set to a digit outside its choices (any slot, a
    skipped one included) parses, and validate refuses it, naming the value and the choices."""
    rng = random.Random(seed)
    cfg = space.sample(rng)
    c = space.cfg
    field, name, allowed = rng.choice([("ks", "kernel size", c.kernel_choices),
                                       ("e", "expand ratio", c.expand_choices),
                                       ("d", "depth", c.depth_choices)])
    values = list(getattr(cfg, field))
    i = rng.randrange(len(values))
    values[i] = rng.choice([v for v in range(10) if v not in allowed])
    bad = SubnetConfig.parse(str(SubnetConfig(**{**vars(cfg), field: tuple(values)})))
    with pytest.raises(OFAError, match=re.escape(f"{name} {values[i]} is outside the space "
                                                 f"(choices: {list(allowed)})")):
        space.validate(bad)
    r = rng.choice([v for v in (0, 1, 16, 27, 29, 64, 128, 224) if v not in c.resolutions])
    with pytest.raises(OFAError, match=re.escape(f"resolution {r} is outside the space")):
        space.validate(SubnetConfig.parse(str(SubnetConfig(cfg.ks, cfg.e, cfg.d, r))))


@pytest.mark.parametrize("text, needle", [
    (f"r28-d44444-k{K7}-e{E6}", "needs 4 depths, got 5"),
    ("r28-d4444-k7-e6", "needs 16 kernel and expand entries (4 stages x 4), got 1/1"),
    (f"r28-d4444-k{K7}7-e{E6}", "got 17/16"),
    (f"r28-d4444-k{K7}-e{E6[:-1]}", "got 16/15"),
], ids=["five-depths", "one-slot", "17-kernels", "15-expands"])
def test_validate_refuses_wrong_lengths(space: SearchSpace, text: str, needle: str):
    with pytest.raises(OFAError, match=re.escape(needle)):
        space.validate(SubnetConfig.parse(text))
