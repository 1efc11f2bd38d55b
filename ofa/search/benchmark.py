"""How long one search with the paper's settings takes: batched vs one subnet at a time.

Both runs score with the accuracy predictor's own code (`Predictor.predict_genes`) on an MLP
of the configured shape (3 x 400 over the one-hot features, random weights) and a
dense latency lookup [slot, kernel, expand, resolution]. The reference is the authors'
EvolutionFinder loop: every child mutated or crossed, checked and scored on its own.
"""

from __future__ import annotations

import time
from statistics import median
from typing import Sequence

import numpy as np

from ofa.config import Params
from ofa.config_specialize import SearchConfig
from ofa.encoding import GeneLayout
from ofa.errors import OFAError
from ofa.search.evolution import (Batch, Constraint, crossover, evolve, feasible, mutate,
                                  random_genes)
from ofa.space import SearchSpace


def mlp_score(space: SearchSpace, hidden: int = 400, layers: int = 3, seed: int = 0) -> Batch:
    """The accuracy predictor's scoring path (`Predictor.predict_genes`) with an MLP of the
    given shape and random weights."""
    import torch  # here, with the predictor: the search itself runs without torch

    from ofa.predictor.model import AccuracyMLP, Predictor

    layout = GeneLayout.of(space)
    g = torch.Generator().manual_seed(seed)
    net = AccuracyMLP(layout.n_features, hidden, layers, 0.9)
    with torch.no_grad():
        for lin in (m for m in net.body if isinstance(m, torch.nn.Linear)):
            lin.weight.normal_(0.0, (2 / lin.in_features) ** 0.5, generator=g)
            if lin.bias is not None:
                lin.bias.normal_(0.0, 0.01, generator=g)
    return Predictor(net.eval(), layout, space).predict_genes


def lut_latency(layout: GeneLayout, seed: int = 0) -> Batch:
    """A latency table [slot, k_idx, e_idx, r_idx] summed over the active slots."""
    rng = np.random.default_rng(seed)
    shape = (layout.n_slots, len(layout.kernels), len(layout.expands), len(layout.resolutions))
    # bigger kernels, expands and resolutions cost more, as on real hardware
    table = np.sort(np.sort(np.sort(rng.uniform(0.05, 0.5, shape), axis=1), axis=2), axis=3)
    slots = np.arange(layout.n_slots)[None, :]

    def latency(genes: np.ndarray) -> np.ndarray:
        per = table[slots, layout.k(genes), layout.e(genes), layout.r(genes)[:, None]]
        return (per * layout.active(genes)).sum(axis=1)

    return latency


def evolve_per_subnet(layout: GeneLayout, score: Batch, constraints: Sequence[Constraint],
                      cfg: SearchConfig, rng: np.random.Generator | None = None) -> float:
    """The authors' EvolutionFinder loop, one subnet at a time (the reference; best score)."""
    rng = np.random.default_rng(cfg.seed) if rng is None else rng
    n_parents = max(1, int(round(cfg.population * cfg.parent_ratio)))
    n_mut = int(round(cfg.population * cfg.mutation_ratio))

    def feasible_one(make) -> np.ndarray:
        for _ in range(cfg.max_tries):
            child = make()
            if feasible(child, constraints)[0]:
                return child
        raise OFAError(f"search: no feasible subnet in {cfg.max_tries} tries")

    population = []
    for _ in range(cfg.population):
        g = feasible_one(lambda: random_genes(layout, 1, rng))
        population.append((float(score(g)[0]), g))
    for _ in range(cfg.generations):
        parents = sorted(population, key=lambda t: -t[0])[:n_parents]
        population = list(parents)
        for j in range(cfg.population):
            if j < n_mut:
                p = parents[rng.integers(n_parents)][1]
                child = feasible_one(lambda: mutate(layout, p, cfg.mutation_prob, rng))
            else:
                a, b = (parents[i][1] for i in rng.integers(0, n_parents, 2))
                child = feasible_one(lambda: crossover(a, b, rng))
            population.append((float(score(child)[0]), child))
    return max(s for s, _ in population)


def benchmark_search(params: Params, repeats: int = 3, show: bool = True,
                     per_subnet: bool = True) -> dict:
    """Median seconds of one `evolve` with params.search (100 x 500 by default, on
    search.threads torch threads), and of the one-subnet-at-a-time reference (run once),
    under half the largest subnet's latency."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(params.search.threads)   # as the search stage runs
    try:
        layout = GeneLayout.of(SearchSpace(params.space))
        score = mlp_score(SearchSpace(params.space), params.predictor.hidden,
                          params.predictor.layers)
        latency = lut_latency(layout)
        limit = 0.5 * float(latency(layout.cardinalities()[None] - 1)[0])
        constraints = [Constraint("latency_ms", latency, limit)]
        times, res = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            res = evolve(layout, score, constraints, params.search)
            times.append(time.perf_counter() - t0)
        assert res is not None
        out = {"batched_s": median(times), "batched_best": res.score, "n_scored": res.n_scored}
        if per_subnet:
            t0 = time.perf_counter()
            out["per_subnet_best"] = evolve_per_subnet(layout, score, constraints, params.search)
            out["per_subnet_s"] = time.perf_counter() - t0
            out["speedup"] = out["per_subnet_s"] / out["batched_s"]
    finally:
        torch.set_num_threads(threads)
    if show:
        sc = params.search
        line = (f"search (population {sc.population}, {sc.generations} generations, "
                f"{layout.n_slots} block slots): batched {out['batched_s']:.3f} s "
                f"(median of {repeats}, {out['n_scored']} distinct subnets scored)")
        if per_subnet:
            line += (f", one subnet at a time {out['per_subnet_s']:.3f} s "
                     f"({out['speedup']:.1f}x slower)")
        print(line)
    return out
