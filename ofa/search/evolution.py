"""The paper's evolutionary search (the authors' EvolutionFinder), batched per generation.

The authors mutate, check and score subnets one at a time in Python. Here a generation's
candidate children are drawn in numpy at once, filtered by the constraints in one call per
constraint and scored in one predictor call, so 100 x 500 takes a fraction of a second.
Children equal to a subnet already in the population are not scored again (the predictor is
deterministic), and the population holds distinct subnets, so the parents stay diverse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ofa.config_specialize import SearchConfig
from ofa.encoding import GeneLayout, canonical_genes
from ofa.errors import OFAError

Batch = Callable[[np.ndarray], np.ndarray]

# The authors' code resamples the resolution with probability 0.5, every other gene with
# search.mutation_prob.
RESOLUTION_MUTATION_PROB = 0.5
PROBE_SUBNETS = 256  # random subnets (besides the minimal one) probed for a limit's reach


@dataclass(frozen=True)
class Constraint:
    """fn(genes) <= limit, e.g. predicted latency in ms or MMACs; fn maps (N, width) -> (N,).

    Every callable the search is given (constraints, score, objectives) sees canonical genes.
    """

    name: str
    fn: Batch
    limit: float


@dataclass(frozen=True)
class SearchResult:
    """The best subnet found; history[i] is the best score after generation i (0 = initial)."""

    genes: np.ndarray
    score: float
    values: dict[str, float]
    history: list[float] = field(default_factory=list)
    n_scored: int = 0  # distinct subnets scored (each exactly once)
    population: np.ndarray | None = None         # the final population (canonical genes)
    population_scores: np.ndarray | None = None  # and its scores: verified selection's candidates


def batch_values(fn: Batch, genes: np.ndarray, what: str) -> np.ndarray:
    """fn(genes) as float64 (N,), refusing a callable that returns another shape."""
    out = np.asarray(fn(genes), dtype=np.float64)
    if out.shape != (len(genes),):
        raise OFAError(f"search: {what} returned shape {out.shape} for {len(genes)} subnets; "
                       f"it must return one value per subnet")
    return out


def feasible(genes: np.ndarray, constraints: Sequence[Constraint]) -> np.ndarray:
    """Boolean (N,): which subnets meet every constraint (NaN values never do)."""
    ok = np.ones(len(genes), dtype=bool)
    for c in constraints:
        if len(genes):
            ok &= batch_values(c.fn, genes, f"constraint {c.name}") <= c.limit
    return ok


def smallest_genes(layout: GeneLayout) -> np.ndarray:
    """Every choice index 0 (smallest kernel, expand, depth, resolution): the cheapest subnet."""
    return np.zeros((1, layout.width), dtype=np.int64)


def random_genes(layout: GeneLayout, n: int, rng: np.random.Generator) -> np.ndarray:
    """n uniformly random gene rows."""
    return (rng.random((n, layout.width)) * layout.card).astype(np.int64)


def mutation_rates(layout: GeneLayout, prob: float,
                   resolution_prob: float = RESOLUTION_MUTATION_PROB
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per gene column: the flip probability p, and choices / p (maps u < p onto a choice).
    A search computes them once and passes them to every generation's `mutate`."""
    p = np.full(layout.width, prob)
    p[-1] = resolution_prob
    return p, layout.card / np.maximum(p, 1e-12)


def mutate(layout: GeneLayout, parents: np.ndarray, prob: float, rng: np.random.Generator,
           resolution_prob: float = RESOLUTION_MUTATION_PROB,
           u: np.ndarray | None = None,
           rates: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Resample each gene with probability `prob` (the resolution with `resolution_prob`).

    One uniform draw u per gene does both: u < p flips it, and u / p, uniform on [0, 1) given
    a flip, picks the new choice. `u` may be drawn by the caller (one draw for a batch), and
    `rates` computed once by `mutation_rates` with the same probabilities.
    """
    p, per_p = rates if rates is not None else mutation_rates(layout, prob, resolution_prob)
    u = rng.random(parents.shape) if u is None else u
    return np.where(u < p, (u * per_p).astype(np.int64), parents)


def crossover(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
              u: np.ndarray | None = None) -> np.ndarray:
    """Each gene from either parent with equal probability."""
    return np.where((rng.random(a.shape) if u is None else u) < 0.5, a, b)


def check_reachable(layout: GeneLayout, constraints: Sequence[Constraint],
                    rng: np.random.Generator) -> None:
    """Refuse a limit below every probed subnet, naming the smallest achievable value.

    The probe is the minimal subnet plus random ones, so a cost that is not monotone in the
    choice indices still gets an honest (sampled) smallest value.
    """
    probe = canonical_genes(layout, np.concatenate([smallest_genes(layout),
                                                    random_genes(layout, PROBE_SUBNETS, rng)]))
    for c in constraints:
        values = batch_values(c.fn, probe, f"constraint {c.name}")
        if not np.any(values <= c.limit):
            low = float(np.nanmin(values)) if np.isfinite(values).any() else float("nan")
            raise OFAError(f"search: constraint {c.name} <= {c.limit:g} is below the smallest "
                           f"subnet's {low:.4g}; choose a limit of at least that")


def sample_feasible(layout: GeneLayout, n: int, constraints: Sequence[Constraint],
                    rng: np.random.Generator, max_tries: int) -> np.ndarray:
    """Up to n distinct random subnets meeting every constraint (bounded rejection sampling).

    Under a tight limit fewer than n may turn up in max_tries rounds; evolution then grows the
    population from those (the minimal subnet is added when it is feasible).
    """
    if constraints:
        check_reachable(layout, constraints, rng)
    found: list[np.ndarray] = []
    have = 0
    for _ in range(max_tries):
        cand = random_genes(layout, max(n, 64), rng)
        cand = cand[feasible(canonical_genes(layout, cand), constraints)]
        found.append(cand)
        have += len(cand)
        if have >= n:
            break
    small = smallest_genes(layout)
    if have < n:
        found.append(small[feasible(small, constraints)])
    pool = np.concatenate(found)
    if not len(pool):
        names = ", ".join(f"{c.name} <= {c.limit:g}" for c in constraints)
        raise OFAError(f"search: no random subnet meets all constraints together ({names}) in "
                       f"{max_tries} tries (search.max_tries); relax one of them")
    _, first = np.unique(canonical_genes(layout, pool), axis=0, return_index=True)
    return pool[np.sort(first)[:n]]


def make_children(layout: GeneLayout, parents: np.ndarray, n_mut: int, n_cross: int,
                  constraints: Sequence[Constraint], cfg: SearchConfig,
                  rng: np.random.Generator, accept: float = 0.5,
                  rates: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """n_mut mutants and n_cross crossovers of random parents, all meeting the constraints.

    The authors' per-child rejection loop, batched: each try draws the missing children of
    both kinds at once, oversampled by the expected acceptance rate `accept`, and checks them
    in one call per constraint; at most max_tries tries. Returns (raw genes, canonical genes,
    the acceptance rate seen, to pass on to the next generation): mutants first.
    """
    need_m, need_c = n_mut, n_cross
    mutants: list[tuple[np.ndarray, np.ndarray]] = []   # (raw, canonical) accepted per try
    crossed: list[tuple[np.ndarray, np.ndarray]] = []
    drawn = kept = 0
    for _ in range(cfg.max_tries):
        over = 1.0 if not constraints else min(64.0, 1.6 / max(accept, 1e-3))
        pad = 2 if constraints else 0
        km = int(np.ceil(over * need_m)) + pad * (need_m > 0)
        kc = int(np.ceil(over * need_c)) + pad * (need_c > 0)
        pick = rng.integers(0, len(parents), km + 2 * kc)
        u = rng.random((km + kc, layout.width))   # one draw for both kinds
        first = parents[pick[:km + kc]]           # the mutated parent, or crossover parent a
        cand = np.concatenate([
            mutate(layout, first[:km], cfg.mutation_prob, rng, u=u[:km], rates=rates),
            crossover(first[km:], parents[pick[km + kc:]], rng, u=u[km:])])
        canon = canonical_genes(layout, cand)
        ok = feasible(canon, constraints)
        drawn, kept = drawn + len(ok), kept + int(ok.sum())
        accept = max(kept, 1) / drawn
        im = np.flatnonzero(ok[:km])[:need_m]
        ic = np.flatnonzero(ok[km:])[:need_c] + km
        if not mutants and len(im) == need_m and len(ic) == need_c:   # the usual single try
            pick = np.concatenate([im, ic])
            return cand[pick], canon[pick], accept
        need_m, need_c = need_m - len(im), need_c - len(ic)
        mutants.append((cand[im], canon[im]))
        crossed.append((cand[ic], canon[ic]))
        if not need_m and not need_c:
            parts = mutants + crossed
            return (np.concatenate([r for r, _ in parts]), np.concatenate([c for _, c in parts]),
                    accept)
    names = ", ".join(f"{c.name} <= {c.limit:g}" for c in constraints)
    missing = ", ".join(f"{v} {k}" for k, v in (("mutation", need_m), ("crossover", need_c)) if v)
    raise OFAError(f"search: still missing {missing} children after {cfg.max_tries} tries "
                   f"(search.max_tries): almost no subnet near the parents meets {names}; "
                   f"relax the constraint or raise search.max_tries")


def row_keys(genes: np.ndarray) -> list[bytes]:
    """One hashable key per gene row (choice indices are < 256), for caches and de-duplication."""
    rows = np.ascontiguousarray(genes, dtype=np.uint8)
    return rows.view(np.dtype((np.void, rows.shape[1]))).ravel().tolist()


def distinct(keys: list[bytes], skip: set[bytes] | frozenset[bytes] = frozenset()) -> np.ndarray:
    """Indices of the first occurrence of every key not in skip, in order."""
    seen = set(skip)
    out = []
    for i, k in enumerate(keys):
        if k not in seen:
            seen.add(k)
            out.append(i)
    return np.asarray(out, dtype=np.int64)


class ValueCache:
    """Values by subnet, so a subnet seen in any earlier generation is never evaluated again.

    The predictor is deterministic, so the search follows exactly the path it would without
    the cache; late generations mostly re-create known subnets, which is where it saves.
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], width: int) -> None:
        self.fn, self.index = fn, {}
        self.buf = np.empty((1024, width))

    def __len__(self) -> int:
        return len(self.index)

    def __call__(self, genes: np.ndarray, keys: list[bytes]) -> np.ndarray:
        """Values (N, width) of canonical genes; the unknown ones in one call of fn."""
        index = self.index
        fresh: dict[bytes, int] = {}   # each unknown subnet once, even if repeated in keys
        for i, k in enumerate(keys):
            if k not in index and k not in fresh:
                fresh[k] = i
        if fresh:
            n = len(index)
            need = n + len(fresh)
            if need > len(self.buf):
                grown = np.empty((max(need, 2 * len(self.buf)), self.buf.shape[1]))
                grown[:n] = self.buf[:n]
                self.buf = grown
            self.buf[n:need] = self.fn(genes[list(fresh.values())])
            index.update(zip(fresh, range(n, need)))
        return self.buf[list(map(index.__getitem__, keys))]


def score_columns(score: Batch) -> Callable[[np.ndarray], np.ndarray]:
    """score as an (N, 1) column, refusing wrong shapes and NaN/inf predictions."""
    def fn(genes: np.ndarray) -> np.ndarray:
        out = batch_values(score, genes, "score")
        if not np.isfinite(out).all():
            raise OFAError("search: the score function returned NaN or infinite values")
        return out[:, None]
    return fn


def evolve(layout: GeneLayout, score: Batch, constraints: Sequence[Constraint],
           cfg: SearchConfig, rng: np.random.Generator | None = None) -> SearchResult:
    """Highest-scoring subnet meeting every constraint (the authors' evolution, batched).

    Each generation: parents = the top parent_ratio x population distinct subnets; then
    population children, mutation_ratio of them mutants of a random parent, the rest crossovers
    of two; the next population is parents + the distinct new children. `score` must be
    deterministic (known subnets are not rescored). Seeded by cfg.seed unless rng is given.
    """
    rng = np.random.default_rng(cfg.seed) if rng is None else rng
    n_parents = max(1, int(round(cfg.population * cfg.parent_ratio)))
    n_mut = int(round(cfg.population * cfg.mutation_ratio))
    n_cross = cfg.population - n_mut
    cache = ValueCache(score_columns(score), 1)
    rates = mutation_rates(layout, cfg.mutation_prob)
    pop = sample_feasible(layout, cfg.population, constraints, rng, cfg.max_tries)
    canon = canonical_genes(layout, pop)
    keys = row_keys(canon)
    scores = cache(canon, keys)[:, 0]
    history = [float(scores.max())]
    accept = 0.5
    for _ in range(cfg.generations):
        order = np.argsort(-scores, kind="stable")[:n_parents]
        parents, parent_scores = pop[order], scores[order]
        parent_keys = [keys[i] for i in order]
        kids, canon, accept = make_children(layout, parents, n_mut, n_cross, constraints, cfg,
                                            rng, accept, rates)
        kid_keys = row_keys(canon)
        keep = distinct(kid_keys, frozenset(parent_keys))
        kid_keys = [kid_keys[i] for i in keep]
        pop = np.concatenate([parents, kids[keep]])
        scores = np.concatenate([parent_scores, cache(canon[keep], kid_keys)[:, 0]])
        keys = parent_keys + kid_keys
        history.append(max(history[-1], float(scores.max())))
    best = int(np.argmax(scores))
    genes = canonical_genes(layout, pop[best][None])[0]
    values = {c.name: float(batch_values(c.fn, genes[None], c.name)[0]) for c in constraints}
    return SearchResult(genes, float(scores[best]), values, history, len(cache),
                        canonical_genes(layout, pop), scores.copy())
