"""The search space and the one subnet-config type every step shares.

A `SubnetConfig` names a subnet: kernel size and expand ratio for every block slot
(stages x max depth, entries of skipped blocks kept but ignored), depth per stage, and input
resolution. It round-trips through JSON and a compact string such as
``r28-d4324-k7537...-e6436...``.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import NoReturn, Sequence

from ofa.config import PhaseConfig, SpaceConfig, to_dict
from ofa.errors import OFAError


_KEYS = ("ks", "e", "d", "r")          # the JSON/dict form: exactly these keys
_PARTS = ("r", "d", "k", "e")          # the compact form: exactly these parts, in this order
_FORM = "r<resolution>-d<depths>-k<kernels>-e<expands> or JSON"


def _show(value: object, limit: int = 40) -> str:
    """A value for a one-line message: its repr, cut short if long."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _integer(value: object, where: str, digit: bool) -> int:
    """An exact, non-negative Python int (never bool, float or str); a single digit 0-9 where
    the compact string writes one digit per slot."""
    if type(value) is not int:
        raise OFAError(f"subnet config {where}: expected an integer, got {_show(value)} "
                       f"({type(value).__name__})")
    if value < 0:
        raise OFAError(f"subnet config {where}: expected a non-negative integer, got {value}")
    if digit and value > 9:
        raise OFAError(f"subnet config {where}: expected a single digit 0-9 (the compact form "
                       f"writes one digit per slot), got {value}")
    return value


class _Refused(Exception):
    """Raised from inside json.loads hooks; turned into an OFAError by from_json."""


def _no_constants(name: str):
    raise _Refused(f"{name} is not a number a subnet config can hold")


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise _Refused(f"key {_show(key)} appears more than once")
        seen[key] = value
    return seen


@dataclass(frozen=True)
class SubnetConfig:
    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    r: int

    def to_dict(self) -> dict:
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d), "r": self.r}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> "SubnetConfig":
        """Strict: exactly the keys ks, e, d, r; ks/e/d non-empty lists of single digits, r a
        non-negative int (exact ints only: no bool, float or str). The space's choices are
        checked by `SearchSpace.validate`."""
        if not isinstance(data, dict):
            raise OFAError(f"subnet config must be a JSON object with the keys ks, e, d, r, "
                           f"got {type(data).__name__} {_show(data)}")
        missing = [k for k in _KEYS if k not in data]
        extra = [k for k in data if k not in _KEYS]
        if extra:
            raise OFAError(f"subnet config has unexpected key(s) {', '.join(map(_show, extra))} "
                           f"(expected exactly ks, e, d, r)")
        if missing:
            raise OFAError(f"subnet config lacks the key(s) {', '.join(missing)} "
                           f"(expected exactly ks, e, d, r)")
        lists = {}
        for key in ("ks", "e", "d"):
            values = data[key]
            if type(values) is not list:
                raise OFAError(f"subnet config key {key!r}: expected a list of integers, got "
                               f"{_show(values)} ({type(values).__name__})")
            if not values:
                raise OFAError(f"subnet config key {key!r}: expected a non-empty list of integers, "
                               f"got []")
            lists[key] = tuple(_integer(v, f"key {key!r} item {i}", digit=True)
                               for i, v in enumerate(values))
        return cls(lists["ks"], lists["e"], lists["d"], _integer(data["r"], "key 'r'", digit=False))

    @classmethod
    def from_json(cls, text: str) -> "SubnetConfig":
        """Strict JSON: no NaN/Infinity, no duplicate keys, then `from_dict`."""
        if not isinstance(text, str):
            raise OFAError(f"subnet config JSON must be text, got {type(text).__name__}")
        try:
            data = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_no_duplicates)
        except _Refused as exc:
            raise OFAError(f"subnet config JSON is refused: {exc}") from None
        except json.JSONDecodeError as exc:
            raise OFAError(f"subnet config is not valid JSON: {exc}") from None
        except (ValueError, RecursionError) as exc:  # too many digits; nesting too deep
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:80]
            raise OFAError(f"subnet config is not valid JSON: {first}") from None
        return cls.from_dict(data)

    def __str__(self) -> str:
        digits = "".join
        return (f"r{self.r}-d{digits(map(str, self.d))}-k{digits(map(str, self.ks))}"
                f"-e{digits(map(str, self.e))}")

    @classmethod
    def parse(cls, text: str) -> "SubnetConfig":
        """Accept the compact string form, exactly as `str()` writes it, or JSON (`from_json`).

        Only whitespace around the whole text is ignored. The compact form is the four parts r,
        d, k, e, each once and in that order, joined by single dashes, each a letter followed by
        ASCII digits: r a resolution without leading zeros, d/k/e one digit per stage/slot."""
        if not isinstance(text, str):
            raise OFAError(f"subnet config must be text, got {type(text).__name__} {_show(text)}")
        s = text.strip()
        if s.startswith(("{", "[")):
            return cls.from_json(s)

        def refuse(why: str) -> NoReturn:
            raise OFAError(f"cannot parse subnet config {_show(s, 80)}: {why}; expected {_FORM}")

        if not s:
            refuse("it is empty")
        pieces = s.split("-")
        if pieces[0] == "":
            refuse("it starts with '-'")
        if pieces[-1] == "":
            refuse("it ends with '-'")
        if "" in pieces:
            refuse("it has '--' (an empty part)")
        for p in pieces:
            tag, v = p[0], p[1:]
            if tag not in _PARTS:
                refuse(f"unknown part {_show(p)} (parts start with r, d, k or e)")
            if not v:
                refuse(f"part {tag} has no digits")
            if not all("0" <= c <= "9" for c in v):
                refuse(f"part {tag} is {_show(v)}, not ASCII digits 0-9")
        tags = [p[0] for p in pieces]
        for tag in _PARTS:
            if tags.count(tag) > 1:
                refuse(f"part {tag} appears {tags.count(tag)} times")
        missing = [t for t in _PARTS if t not in tags]
        if missing:
            refuse(f"missing part(s) {', '.join(missing)}")
        if tuple(tags) != _PARTS:
            refuse(f"parts are in the order {'-'.join(tags)}, not r-d-k-e")
        body = {p[0]: p[1:] for p in pieces}
        if len(body["r"]) > 1 and body["r"][0] == "0":
            refuse(f"resolution {body['r']!r} has a leading zero")
        try:
            r = int(body["r"])
        except ValueError:  # past Python's limit on digits in one int
            refuse(f"resolution has {len(body['r'])} digits")
        return cls(tuple(map(int, body["k"])), tuple(map(int, body["e"])),
                   tuple(map(int, body["d"])), r)


@dataclass(frozen=True)
class Choices:
    """The values a training phase may sample (a subset of the space's)."""

    kernel: tuple[int, ...]
    expand: tuple[int, ...]
    depth: tuple[int, ...]
    resolution: tuple[int, ...]


class SearchSpace:
    """Stage table plus sampling, mutation and crossover, all through explicit generators."""

    def __init__(self, cfg: SpaceConfig) -> None:
        self.cfg = cfg
        self.n_stages = len(cfg.stages)
        self.max_depth = max(cfg.depth_choices)
        self.n_slots = self.n_stages * self.max_depth

    def fingerprint(self) -> str:
        """Identifies the space in artifacts (predictor, latency tables) so a mismatch is refused."""
        text = json.dumps(to_dict(self.cfg), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # -- fixed points of the space -------------------------------------------------------
    def full_choices(self) -> Choices:
        c = self.cfg
        return Choices(c.kernel_choices, c.expand_choices, c.depth_choices, c.resolutions)

    def phase_choices(self, phase: PhaseConfig) -> Choices:
        if phase.fixed is not None:
            cfg = self.fixed_config(phase)
            return Choices(tuple(sorted(set(cfg.ks))), tuple(sorted(set(cfg.e))),
                           tuple(sorted(set(cfg.d))), (cfg.r,))
        res = self.cfg.resolutions if phase.elastic_resolution else (max(self.cfg.resolutions),)
        return Choices(phase.kernel, phase.expand, phase.depth, res)

    def fixed_config(self, phase: PhaseConfig) -> SubnetConfig | None:
        """The one subnet a from-scratch phase trains (None for a supernet phase)."""
        return None if phase.fixed is None else self.validate(SubnetConfig.parse(phase.fixed))

    def uniform(self, k: int, e: int, d: int, r: int) -> SubnetConfig:
        return SubnetConfig((k,) * self.n_slots, (e,) * self.n_slots, (d,) * self.n_stages, r)

    def largest(self, ch: Choices, r: int) -> SubnetConfig:
        return self.uniform(max(ch.kernel), max(ch.expand), max(ch.depth), r)

    def smallest(self, ch: Choices, r: int) -> SubnetConfig:
        return self.uniform(min(ch.kernel), min(ch.expand), min(ch.depth), r)

    def max_config(self, r: int | None = None) -> SubnetConfig:
        c = self.cfg
        return self.uniform(max(c.kernel_choices), max(c.expand_choices), max(c.depth_choices),
                            r or max(c.resolutions))

    def min_config(self, r: int | None = None) -> SubnetConfig:
        c = self.cfg
        return self.uniform(min(c.kernel_choices), min(c.expand_choices), min(c.depth_choices),
                            r or min(c.resolutions))

    def mid_config(self, r: int | None = None) -> SubnetConfig:
        c = self.cfg

        def mid(v: Sequence[int]) -> int:
            return sorted(v)[len(v) // 2]

        return self.uniform(mid(c.kernel_choices), mid(c.expand_choices), mid(c.depth_choices),
                            r or mid(c.resolutions))

    # -- validation ----------------------------------------------------------------------
    def validate(self, cfg: SubnetConfig) -> SubnetConfig:
        c = self.cfg
        if len(cfg.ks) != self.n_slots or len(cfg.e) != self.n_slots:
            raise OFAError(f"subnet config needs {self.n_slots} kernel and expand entries "
                           f"({self.n_stages} stages x {self.max_depth}), got {len(cfg.ks)}/{len(cfg.e)}")
        if len(cfg.d) != self.n_stages:
            raise OFAError(f"subnet config needs {self.n_stages} depths, got {len(cfg.d)}")
        for name, values, allowed in (("kernel size", cfg.ks, c.kernel_choices),
                                      ("expand ratio", cfg.e, c.expand_choices),
                                      ("depth", cfg.d, c.depth_choices)):
            bad = sorted(set(values) - set(allowed))
            if bad:
                raise OFAError(f"{name} {bad[0]} is outside the space (choices: {list(allowed)})")
        if cfg.r not in c.resolutions:
            raise OFAError(f"resolution {cfg.r} is outside the space (choices: {list(c.resolutions)})")
        return cfg

    def active_slots(self, cfg: SubnetConfig) -> list[int]:
        """Indices of the block slots a config runs: the first d of every stage."""
        return [s * self.max_depth + i for s in range(self.n_stages) for i in range(cfg.d[s])]

    def canonical(self, cfg: SubnetConfig) -> SubnetConfig:
        """Equal subnets get equal configs: skipped slots are set to the smallest choice."""
        active = set(self.active_slots(cfg))
        k0, e0 = min(self.cfg.kernel_choices), min(self.cfg.expand_choices)
        ks = tuple(k if i in active else k0 for i, k in enumerate(cfg.ks))
        e = tuple(x if i in active else e0 for i, x in enumerate(cfg.e))
        return SubnetConfig(ks, e, cfg.d, cfg.r)

    # -- randomness ----------------------------------------------------------------------
    def sample(self, rng: random.Random, choices: Choices | None = None,
               r: int | None = None) -> SubnetConfig:
        ch = choices or self.full_choices()
        return SubnetConfig(
            tuple(rng.choice(ch.kernel) for _ in range(self.n_slots)),
            tuple(rng.choice(ch.expand) for _ in range(self.n_slots)),
            tuple(rng.choice(ch.depth) for _ in range(self.n_stages)),
            r if r is not None else rng.choice(ch.resolution),
        )
