"""Beyond the paper: NSGA-II returns the whole predicted accuracy/cost front in one run.

The paper runs one evolution per constraint; a deployment team usually wants the trade-off
curve first and a constraint second. Non-dominated sorting and crowding distance are
vectorized over the population, and every subnet is scored once, so the paper's budget
(100 x 500) stays around a second.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ofa.config_specialize import SearchConfig
from ofa.encoding import GeneLayout, canonical_genes
from ofa.search.evolution import (Batch, Constraint, ValueCache, batch_values, distinct,
                                  make_children, mutation_rates, row_keys, sample_feasible)
from ofa.errors import OFAError


def dominates(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) boolean matrix: row i of a dominates row j of b (all objectives minimized)."""
    le = np.ones((len(a), len(b)), dtype=bool)
    lt = np.zeros((len(a), len(b)), dtype=bool)
    for j in range(a.shape[1]):  # few objectives: 2-D comparisons beat a 3-D broadcast
        x, y = a[:, j, None], b[None, :, j]
        le &= x <= y
        lt |= x < y
    return le & lt


def non_dominated_ranks(obj: np.ndarray, enough: int | None = None) -> np.ndarray:
    """Front index of every row (0 = Pareto front), objectives minimized.

    With `enough`, peeling stops once that many rows are ranked; the rest get rank N (they
    would not survive selection anyway), which saves most of the work in NSGA-II.
    """
    n = len(obj)
    dom = dominates(obj, obj).astype(np.int32)
    count = dom.sum(axis=0)  # how many rows dominate each row
    ranks = np.full(n, n)
    remaining = np.ones(n, dtype=bool)
    for front in range(n):  # at most n fronts
        current = remaining & (count == 0)
        ranks[current] = front
        remaining &= ~current
        if not remaining.any() or (enough is not None and n - remaining.sum() >= enough):
            break
        count = count - current.astype(np.int32) @ dom
    return ranks


def crowding(obj: np.ndarray) -> np.ndarray:
    """Crowding distance within one front (boundary points get infinity)."""
    n, m = obj.shape
    if n <= 2:
        return np.full(n, np.inf)
    dist = np.zeros(n)
    for j in range(m):
        order = np.argsort(obj[:, j], kind="stable")
        span = obj[order[-1], j] - obj[order[0], j]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (obj[order[2:], j] - obj[order[:-2], j]) / span
    return dist


def rank_and_crowd(obj: np.ndarray, enough: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Front index and crowding distance (within its front) of every row."""
    ranks = non_dominated_ranks(obj, enough)
    crowd = np.zeros(len(obj))
    for front in np.unique(ranks[ranks < len(obj)]):
        idx = np.flatnonzero(ranks == front)
        crowd[idx] = crowding(obj[idx])
    return ranks, crowd


def select(obj: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The n survivors (by front, then crowding) with their ranks and crowding distances."""
    ranks, crowd = rank_and_crowd(obj, n)
    keep = np.lexsort((-crowd, ranks))[:n]  # lexsort is stable: ties keep population order
    return keep, ranks[keep], crowd[keep]


def tournament(ranks: np.ndarray, crowd: np.ndarray, n: int,
               rng: np.random.Generator) -> np.ndarray:
    """n binary tournaments: the lower front wins, then the larger crowding distance."""
    a, b = rng.integers(0, len(ranks), (2, n))
    a_wins = (ranks[a] < ranks[b]) | ((ranks[a] == ranks[b]) & (crowd[a] >= crowd[b]))
    return np.where(a_wins, a, b)


def nsga2(layout: GeneLayout, score: Batch, objectives: Sequence[Batch], cfg: SearchConfig,
          constraints: Sequence[Constraint] = (), rng: np.random.Generator | None = None
          ) -> list[tuple[np.ndarray, float, tuple[float, ...]]]:
    """The predicted Pareto front: maximize score, minimize every objective (e.g. latency).

    Returns (canonical genes, score, objective values) per front subnet, cheapest first by the
    first objective; every subnet meets the hard constraints. Same cfg/seed semantics as
    `evolve`: population and generations from cfg, children by mutation and crossover.
    """
    if not objectives:
        raise OFAError("search: NSGA-II needs at least one cost objective (e.g. latency)")
    rng = np.random.default_rng(cfg.seed) if rng is None else rng
    n = cfg.population
    n_mut = int(round(n * cfg.mutation_ratio))

    def evaluate(genes: np.ndarray) -> np.ndarray:
        cols = [-batch_values(score, genes, "score")]
        cols += [batch_values(f, genes, f"objective {i}") for i, f in enumerate(objectives)]
        out = np.stack(cols, axis=1)
        if not np.isfinite(out).all():
            raise OFAError("search: the score or an objective returned NaN or infinite values")
        return out

    cache = ValueCache(evaluate, 1 + len(objectives))
    pop = sample_feasible(layout, n, constraints, rng, cfg.max_tries)
    canon = canonical_genes(layout, pop)
    keys = row_keys(canon)
    obj = cache(canon, keys)
    ranks, crowd = rank_and_crowd(obj)
    accept, rates = 0.5, mutation_rates(layout, cfg.mutation_prob)
    for _ in range(cfg.generations):
        pool = pop[tournament(ranks, crowd, n, rng)]
        kids, kid_canon, accept = make_children(layout, pool, n_mut, n - n_mut, constraints, cfg,
                                                rng, accept, rates)
        kid_keys = row_keys(kid_canon)
        fresh = distinct(kid_keys, frozenset(keys))
        kid_keys = [kid_keys[i] for i in fresh]
        merged = np.concatenate([pop, kids[fresh]])
        merged_obj = np.concatenate([obj, cache(kid_canon[fresh], kid_keys)])
        keep, ranks, crowd = select(merged_obj, n)
        merged_keys = keys + kid_keys
        pop, obj, keys = merged[keep], merged_obj[keep], [merged_keys[i] for i in keep]
    front = np.flatnonzero(non_dominated_ranks(obj) == 0)
    front = front[np.lexsort((obj[front, 0], obj[front, 1]))]
    genes = canonical_genes(layout, pop[front])
    return [(g, float(-o[0]), tuple(float(v) for v in o[1:])) for g, o in zip(genes, obj[front])]
