"""A latency table as dense arrays: predicted latency, MACs and params of whole populations.

Search scores a population of gene rows per generation (hundreds of times), so a prediction
is one numpy gather: [slot, kernel idx, expand idx, resolution idx] for the elastic blocks,
[resolution idx] for the stem and head, plus one per-network overhead term.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ofa.encoding import GeneLayout, to_genes
from ofa.errors import OFAError
from ofa.latency.layers import LayerSpec, head_layer, layer_cost, slot_layer, stem_layer
from ofa.latency.table_io import read_table
from ofa.space import SearchSpace, SubnetConfig


class LatencyModel:
    """latency(subnet) = stem[r] + head[r] + sum of active slots' [slot, k, e, r] + overhead_ms.

    MACs and params are the same sums over the analytic per-layer costs (no overhead)."""

    def __init__(self, space: SearchSpace, medians: dict[str, float],
                 overhead_ms: float = 0.0) -> None:
        self.space, self.layout = space, GeneLayout.of(space)
        self.overhead_ms = float(overhead_ms)
        self.meta: dict = {}   # the table's metadata, when loaded from a file
        lay = self.layout
        n_k, n_e, n_r = len(lay.kernels), len(lay.expands), len(lay.resolutions)
        # [quantity, slot, k, e, r] with quantity = ms, MACs, params
        self._slots = np.zeros((3, lay.n_slots, n_k, n_e, n_r))
        self._fixed = np.zeros((3, n_r))

        def entry(spec: LayerSpec) -> np.ndarray:
            if spec.key not in medians:
                raise OFAError(f"the latency table lacks the layer {spec.key}; rebuild it with "
                               "`ofa-cli latency` for this search space")
            return np.array([medians[spec.key], *layer_cost(space, spec)], dtype=float)

        for ri, r in enumerate(lay.resolutions):
            self._fixed[:, ri] = entry(stem_layer(space, r)) + entry(head_layer(space, r))
            for slot in range(lay.n_slots):
                for ki, k in enumerate(lay.kernels):
                    for ei, e in enumerate(lay.expands):
                        self._slots[:, slot, ki, ei, ri] = entry(slot_layer(space, slot, k, e, r))
        # flat [slot*k*e*r] views for a single fancy-index gather per call
        self._flat = self._slots.reshape(3, -1)
        self._strides = np.array([n_k * n_e * n_r, n_e * n_r, n_r, 1])

    @classmethod
    def load(cls, path: Path, space: SearchSpace) -> "LatencyModel":
        """The model of a table file; refuses missing/corrupt files and other search spaces."""
        df, meta = read_table(path, space=space)
        model = cls(space, dict(zip(df["key"].astype(str), df["median_ms"].astype(float))),
                    float(meta.get("overhead_ms", 0.0)))
        model.meta = meta
        return model

    def _sums(self, genes: np.ndarray, quantity: slice | int) -> np.ndarray:
        lay = self.layout
        genes = np.asarray(genes, dtype=np.int64).reshape(-1, lay.width)
        r = lay.r(genes)
        idx = (np.arange(lay.n_slots)[None, :] * self._strides[0] + lay.k(genes) * self._strides[1]
               + lay.e(genes) * self._strides[2] + r[:, None])
        per = self._flat[quantity][..., idx]                  # (..., N, n_slots)
        return (per * lay.active(genes)).sum(axis=-1) + self._fixed[quantity][..., r]

    def layer_sum_genes(self, genes: np.ndarray) -> np.ndarray:
        """The plain sum of the table's entries (ms), without the per-network overhead."""
        return self._sums(genes, 0)

    def predict_genes(self, genes: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) of each gene row."""
        return self._sums(genes, 0) + self.overhead_ms

    def macs_genes(self, genes: np.ndarray) -> np.ndarray:
        """MACs of one image through each gene row's subnet (as count_macs counts them)."""
        return self._sums(genes, 1)

    def params_genes(self, genes: np.ndarray) -> np.ndarray:
        """Parameters of each gene row's exported subnet (as count_params counts them)."""
        return self._sums(genes, 2)

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        return self.predict_genes(to_genes(self.space, configs))
