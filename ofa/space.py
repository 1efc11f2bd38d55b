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
from typing import Sequence

from ofa.config import PhaseConfig, SpaceConfig, to_dict
from ofa.errors import OFAError


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
        if not isinstance(data, dict) or set(data) != {"ks", "e", "d", "r"}:
            raise OFAError("a subnet config needs exactly the keys ks, e, d, r")
        try:
            return cls(tuple(int(v) for v in data["ks"]), tuple(int(v) for v in data["e"]),
                       tuple(int(v) for v in data["d"]), int(data["r"]))
        except (TypeError, ValueError):
            raise OFAError(f"subnet config values must be integers: {data}") from None

    @classmethod
    def from_json(cls, text: str) -> "SubnetConfig":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise OFAError(f"subnet config is not valid JSON: {exc}") from None

    def __str__(self) -> str:
        digits = "".join
        return (f"r{self.r}-d{digits(map(str, self.d))}-k{digits(map(str, self.ks))}"
                f"-e{digits(map(str, self.e))}")

    @classmethod
    def parse(cls, text: str) -> "SubnetConfig":
        """Accept the compact string form or JSON."""
        text = text.strip()
        if text.startswith("{"):
            return cls.from_json(text)
        parts = dict((p[:1], p[1:]) for p in text.split("-") if p)
        if set(parts) != {"r", "d", "k", "e"} or not all((v.isascii() and v.isdigit()) for v in parts.values()):
            raise OFAError(f"cannot parse subnet config {text!r}: expected 'r28-d4324-k...-e...' or JSON")
        return cls(tuple(map(int, parts["k"])), tuple(map(int, parts["e"])),
                   tuple(map(int, parts["d"])), int(parts["r"]))


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
