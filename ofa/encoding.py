"""Subnet configs as integer gene arrays and as the paper's one-hot predictor features.

Search scores a whole population per generation, so configs also live as a numpy array of
choice indices, one row per subnet: kernel index per block slot, expand index per block slot,
depth index per stage, resolution index. `SubnetConfig` stays the type every file and report
uses; genes are the batched view of the same thing and convert both ways.

Features (the paper's encoding): one-hot kernel and one-hot expand per block slot, all zeros
for slots the depth skips, then a one-hot resolution. Depth is implied by the zero slots:
two subnets get the same features exactly when their canonical configs are equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np

from ofa.space import SearchSpace, SubnetConfig


@dataclass(frozen=True)
class GeneLayout:
    """Column ranges of a gene row and the choice tables the indices point into."""

    kernels: tuple[int, ...]
    expands: tuple[int, ...]
    depths: tuple[int, ...]
    resolutions: tuple[int, ...]
    n_stages: int
    max_depth: int

    @classmethod
    def of(cls, space: SearchSpace) -> "GeneLayout":
        c = space.cfg
        return cls(tuple(sorted(c.kernel_choices)), tuple(sorted(c.expand_choices)),
                   tuple(sorted(c.depth_choices)), tuple(sorted(c.resolutions)),
                   space.n_stages, space.max_depth)

    @property
    def n_slots(self) -> int:
        return self.n_stages * self.max_depth

    @property
    def width(self) -> int:
        return 2 * self.n_slots + self.n_stages + 1

    @property
    def n_features(self) -> int:
        return self.n_slots * (len(self.kernels) + len(self.expands)) + len(self.resolutions)

    def cardinalities(self) -> np.ndarray:
        """Number of choices of every gene column (for sampling and mutation)."""
        return self.card.copy()

    # Lookup tables built once per layout: the search calls the methods below ~2000 times.
    @cached_property
    def card(self) -> np.ndarray:
        """cardinalities(), shared and read-only."""
        out = np.array([len(self.kernels)] * self.n_slots + [len(self.expands)] * self.n_slots
                       + [len(self.depths)] * self.n_stages + [len(self.resolutions)])
        out.flags.writeable = False
        return out

    @cached_property
    def _runs(self) -> np.ndarray:
        # row i: which of a stage's slots depth choice i runs
        return np.arange(self.max_depth)[None, :] < np.asarray(self.depths)[:, None]

    @cached_property
    def _feature_cols(self) -> tuple[np.ndarray, np.ndarray]:
        """Gene columns that carry features (kernel, expand, resolution) and each one's first
        feature column."""
        s, nk, ne = self.n_slots, len(self.kernels), len(self.expands)
        cols = np.r_[np.arange(2 * s), self.width - 1]
        base = np.r_[np.arange(s) * nk, s * nk + np.arange(s) * ne, s * (nk + ne)]
        return cols, base

    # -- slices of a gene row ------------------------------------------------------------
    def k(self, genes: np.ndarray) -> np.ndarray:
        return genes[:, :self.n_slots]

    def e(self, genes: np.ndarray) -> np.ndarray:
        return genes[:, self.n_slots:2 * self.n_slots]

    def d(self, genes: np.ndarray) -> np.ndarray:
        return genes[:, 2 * self.n_slots:2 * self.n_slots + self.n_stages]

    def r(self, genes: np.ndarray) -> np.ndarray:
        return genes[:, -1]

    def active(self, genes: np.ndarray) -> np.ndarray:
        """Boolean (N, n_slots): which block slots each subnet runs (the first d per stage)."""
        return self._runs[self.d(genes)].reshape(len(genes), self.n_slots)

    def feature_index(self, genes: np.ndarray) -> np.ndarray:
        """(N, 2 * n_slots + 1): the one-hot feature column of each slot's kernel and expand
        and of the resolution; a skipped slot points at column n_features, a sink past the
        paper's features, so scattering ones needs no mask."""
        cols, base = self._feature_cols
        idx = genes[:, cols] + base
        off = ~self.active(genes)
        s = self.n_slots
        idx[:, :s][off] = self.n_features
        idx[:, s:2 * s][off] = self.n_features
        return idx


def to_genes(space: SearchSpace, configs: Sequence[SubnetConfig]) -> np.ndarray:
    lay = GeneLayout.of(space)
    rows = np.empty((len(configs), lay.width), dtype=np.int64)
    for i, cfg in enumerate(configs):
        space.validate(cfg)
        rows[i] = ([lay.kernels.index(k) for k in cfg.ks] + [lay.expands.index(e) for e in cfg.e]
                   + [lay.depths.index(d) for d in cfg.d] + [lay.resolutions.index(cfg.r)])
    return rows


def from_genes(space: SearchSpace, genes: np.ndarray) -> list[SubnetConfig]:
    lay = GeneLayout.of(space)
    genes = np.asarray(genes).reshape(-1, lay.width)
    ks, es, ds = (np.asarray(t) for t in (lay.kernels, lay.expands, lay.depths))
    res = np.asarray(lay.resolutions)
    return [SubnetConfig(tuple(int(v) for v in ks[lay.k(g[None])[0]]),
                         tuple(int(v) for v in es[lay.e(g[None])[0]]),
                         tuple(int(v) for v in ds[lay.d(g[None])[0]]), int(res[g[-1]]))
            for g in genes]


def canonical_genes(lay: GeneLayout, genes: np.ndarray) -> np.ndarray:
    """Skipped slots set to index 0, so equal subnets have equal rows (for de-duplication)."""
    out = np.array(genes, copy=True)
    on = lay.active(out)
    out[:, :lay.n_slots] *= on
    out[:, lay.n_slots:2 * lay.n_slots] *= on
    return out


def onehot_padded(lay: GeneLayout, genes: np.ndarray) -> np.ndarray:
    """encode() plus one all-sink column at the end (see feature_index): float32
    (N, n_features + 1). The predictor multiplies it by weights with a zero last row."""
    idx = lay.feature_index(np.asarray(genes))
    out = np.zeros((len(idx), lay.n_features + 1), np.float32)
    out[np.arange(len(idx))[:, None], idx] = 1.0
    return out


def encode(lay: GeneLayout, genes: np.ndarray) -> np.ndarray:
    """The paper's one-hot features, float32 (N, n_features); skipped slots are all zero."""
    return np.ascontiguousarray(onehot_padded(lay, genes)[:, :-1])
