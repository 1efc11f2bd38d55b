"""Search: constraints always hold, results are seeded, known optima and fronts are found."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys

import numpy as np
import pytest

from ofa.config_specialize import SearchConfig
from ofa.encoding import GeneLayout, canonical_genes
from ofa.errors import OFAError
from ofa.search import Constraint, benchmark_search, evolve, nsga2
from ofa.search.evolution import ValueCache, mutate, row_keys
from ofa.search.nsga import dominates, non_dominated_ranks

SMALL = SearchConfig(population=24, generations=40, seed=0)
# two stages of at most two blocks: 32,400 distinct subnets, few enough to enumerate
TINY = GeneLayout(kernels=(3, 5, 7), expands=(3, 4, 6), depths=(1, 2),
                  resolutions=(20, 24, 28, 32), n_stages=2, max_depth=2)


@pytest.fixture(scope="module")
def layout(space) -> GeneLayout:
    return GeneLayout.of(space)


def linear(lay: GeneLayout, seed: int, base: float):
    """base + weighted choice indices per active slot, plus the resolution index: a model of
    both accuracy (more of everything is better) and cost (latency, MACs)."""
    wk, we = np.random.default_rng(seed).uniform(0.5, 2.0, (2, lay.n_slots))

    def fn(genes: np.ndarray) -> np.ndarray:
        per = (base + wk * lay.k(genes) + we * lay.e(genes)) * lay.active(genes)
        return per.sum(axis=1) + 2.0 * lay.r(genes)
    return fn


def score_of(lay: GeneLayout):
    return linear(lay, 1, 0.7)


def cost_of(lay: GeneLayout):
    return linear(lay, 2, 1.0)


def smallest_cost(lay: GeneLayout) -> float:
    return float(cost_of(lay)(np.zeros((1, lay.width), dtype=int))[0])


def largest_cost(lay: GeneLayout) -> float:
    return float(cost_of(lay)(lay.cardinalities()[None] - 1)[0])


def limit_at(lay: GeneLayout, frac: float) -> float:
    lo, hi = smallest_cost(lay), largest_cost(lay)
    return lo + frac * (hi - lo)


@pytest.fixture(scope="module")
def tiny_all() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct subnet of TINY with its score and cost (the brute-force answer)."""
    genes = np.array(list(itertools.product(*map(range, TINY.cardinalities()))))
    genes = np.unique(canonical_genes(TINY, genes), axis=0)
    return genes, score_of(TINY)(genes), cost_of(TINY)(genes)


def _nsga_front(lay, cfg, limit):
    """nsga2 on (score, cost) with cost also a hard limit, as evolve-like results."""
    cost = cost_of(lay)
    return nsga2(lay, score_of(lay), [cost], cfg, constraints=[Constraint("cost", cost, limit)])


# -- constraints hold ------------------------------------------------------------------------
@pytest.mark.parametrize("frac", [0.05, 0.3, 0.7])
def test_evolution_respects_the_constraint(layout, frac):
    cost, limit = cost_of(layout), limit_at(layout, frac)
    res = evolve(layout, score_of(layout), [Constraint("cost", cost, limit)], SMALL)
    assert cost(res.genes[None])[0] <= limit and res.values["cost"] <= limit
    assert np.array_equal(res.genes, canonical_genes(layout, res.genes[None])[0])
    assert res.score == pytest.approx(score_of(layout)(res.genes[None])[0])
    assert len(res.history) == SMALL.generations + 1
    assert res.history == sorted(res.history)  # elitism: the best never gets worse


def test_two_constraints_hold_together(layout):
    cost, score = cost_of(layout), score_of(layout)
    macs = lambda g: (layout.e(g) * layout.active(g)).sum(axis=1).astype(float)  # noqa: E731
    cons = [Constraint("cost", cost, limit_at(layout, 0.5)), Constraint("macs", macs, 6)]
    res = evolve(layout, score, cons, SMALL)
    assert all(c.fn(res.genes[None])[0] <= c.limit for c in cons)
    assert set(res.values) == {"cost", "macs"}


@pytest.mark.parametrize("frac", [0.1, 0.5])
def test_nsga2_front_is_feasible_and_non_dominated(layout, frac):
    cost, score, limit = cost_of(layout), score_of(layout), limit_at(layout, frac)
    front = _nsga_front(layout, SMALL, limit)
    assert len(front) >= 3
    genes = np.stack([g for g, _, _ in front])
    assert np.all(cost(genes) <= limit)
    obj = np.stack([-score(genes), cost(genes)], axis=1)
    assert not dominates(obj, obj).any()
    assert len(np.unique(genes, axis=0)) == len(front)
    for g, s, (c,) in front:
        assert s == pytest.approx(score(g[None])[0]) and c == pytest.approx(cost(g[None])[0])
    assert [c for _, _, (c,) in front] == sorted(c for _, _, (c,) in front)


# -- seeded ---------------------------------------------------------------------------------
def _run_evolve(lay, cfg):
    res = evolve(lay, score_of(lay), [Constraint("cost", cost_of(lay), limit_at(lay, 0.4))], cfg)
    return res.genes.tolist(), res.history


def _run_nsga(lay, cfg):
    return [(g.tolist(), s, o) for g, s, o in _nsga_front(lay, cfg, limit_at(lay, 0.6))]


@pytest.mark.parametrize("run", [_run_evolve, _run_nsga], ids=["evolve", "nsga2"])
def test_seeded_and_deterministic(layout, run):
    a, b = run(layout, SMALL), run(layout, SMALL)
    assert a == b
    assert run(layout, dataclasses.replace(SMALL, seed=1)) != a  # another seed explores differently


def test_explicit_generator_overrides_the_seed(layout):
    args = (layout, score_of(layout), [Constraint("cost", cost_of(layout), limit_at(layout, 0.4))])
    a = evolve(*args, SMALL, rng=np.random.default_rng(7))
    b = evolve(*args, dataclasses.replace(SMALL, seed=99), rng=np.random.default_rng(7))
    assert a.history == b.history


# -- quality ---------------------------------------------------------------------------------
@pytest.mark.parametrize("frac", [0.15, 0.4, 0.6, 0.85])
def test_evolution_finds_the_brute_force_optimum(tiny_all, frac):
    genes, scores, costs = tiny_all
    limit = limit_at(TINY, frac)
    res = evolve(TINY, score_of(TINY), [Constraint("cost", cost_of(TINY), limit)],
                 SearchConfig(population=100, generations=100, seed=0))
    assert res.score == pytest.approx(scores[costs <= limit].max(), abs=1e-9)


def test_nsga2_finds_the_brute_force_front(tiny_all):
    genes, scores, costs = tiny_all
    front = nsga2(TINY, score_of(TINY), [cost_of(TINY)], SearchConfig(population=100,
                                                                      generations=100, seed=0))
    # the exact 2-objective front by one sort (an all-pairs dominance matrix of 32,400 rows
    # would need gigabytes): by cost, then best score first; a row is on the front if it
    # beats every cheaper row's score
    order = np.lexsort((-scores, costs))
    best_before = np.maximum.accumulate(np.concatenate([[-np.inf], scores[order][:-1]]))
    true = order[scores[order] > best_before]
    gaps = np.array([scores[costs <= c + 1e-9].max() - s for _, s, (c,) in front])
    assert np.mean(gaps < 1e-9) >= 0.95 and len(front) >= 0.9 * len(true)


def test_unconstrained_finds_the_largest_subnet(layout):
    res = evolve(layout, score_of(layout), [], dataclasses.replace(SMALL, generations=150))
    assert res.genes.tolist() == (layout.cardinalities() - 1).tolist()


def test_search_beats_random_sampling(layout):
    cost, score, limit = cost_of(layout), score_of(layout), limit_at(layout, 0.4)
    res = evolve(layout, score, [Constraint("cost", cost, limit)], SMALL)
    rand = (np.random.default_rng(0).random((20000, layout.width))
            * layout.cardinalities()).astype(int)
    assert res.score >= score(rand[cost(rand) <= limit]).max()


def test_every_subnet_is_scored_once_in_one_call_per_generation(layout):
    calls: list[np.ndarray] = []

    def score(genes: np.ndarray) -> np.ndarray:
        calls.append(genes.copy())
        return score_of(layout)(genes)

    res = evolve(layout, score, [Constraint("cost", cost_of(layout), limit_at(layout, 0.5))], SMALL)
    seen = np.concatenate(calls)
    assert len(calls) <= SMALL.generations + 1
    assert len(np.unique(seen, axis=0)) == len(seen) == res.n_scored
    assert np.array_equal(seen, canonical_genes(layout, seen))  # callables see canonical genes


def test_value_cache_reuses_known_rows():
    calls = []
    cache = ValueCache(lambda g: calls.append(len(g)) or g[:, :1].astype(float), 1)
    g = np.array([[1, 2], [3, 4], [1, 2]])
    assert cache(g, row_keys(g))[:, 0].tolist() == [1, 3, 1]
    assert cache(g[::-1], row_keys(g[::-1]))[:, 0].tolist() == [1, 3, 1]
    assert calls == [2] and len(cache) == 2


def test_mutation_rates_follow_the_authors():
    g = np.zeros((20000, TINY.width), dtype=np.int64)
    changed = (mutate(TINY, g, 0.1, np.random.default_rng(0)) != g).mean(axis=0)
    card = TINY.cardinalities()
    # a resampled gene keeps its value with probability 1 / cardinality
    assert changed[:-1] == pytest.approx(0.1 * (1 - 1 / card[:-1]), abs=0.01)
    assert changed[-1] == pytest.approx(0.5 * (1 - 1 / card[-1]), abs=0.02)


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("search", ["evolve", "nsga2"])
def test_limit_below_the_smallest_subnet_names_the_value(layout, search):
    cost, smallest = cost_of(layout), smallest_cost(layout)
    bad = [Constraint("latency_ms", cost, smallest - 1)]
    with pytest.raises(OFAError, match=rf"latency_ms <= {smallest - 1:g} is below the smallest "
                                       rf"subnet's {smallest:.4g}"):
        if search == "evolve":
            evolve(layout, score_of(layout), bad, SMALL)
        else:
            nsga2(layout, score_of(layout), [cost], SMALL, constraints=bad)


def test_jointly_infeasible_constraints_are_bounded(layout):
    cost, mid = cost_of(layout), limit_at(layout, 0.5)
    cons = [Constraint("cost", cost, mid - 1), Constraint("neg_cost", lambda g: -cost(g), -mid)]
    with pytest.raises(OFAError, match=r"all constraints together.*search\.max_tries"):
        evolve(layout, score_of(layout), cons, dataclasses.replace(SMALL, max_tries=5))


def test_children_rejection_sampling_is_bounded(layout):
    # only the smallest subnet is feasible and every gene mutates: no mutant ever is
    cons = [Constraint("cost", cost_of(layout), smallest_cost(layout))]
    cfg = dataclasses.replace(SMALL, max_tries=5, mutation_prob=1.0)
    with pytest.raises(OFAError, match=r"mutation children after 5 tries \(search\.max_tries\)"):
        evolve(layout, score_of(layout), cons, cfg)


@pytest.mark.parametrize("bad", [lambda g: np.zeros(len(g) + 1), lambda g: np.full(len(g), np.nan)],
                         ids=["wrong_shape", "nan"])
def test_bad_score_functions_are_refused(layout, bad):
    with pytest.raises(OFAError, match="score"):
        evolve(layout, bad, [], SMALL)


def test_non_dominated_ranks_on_a_known_set():
    obj = np.array([[0, 3], [1, 1], [3, 0], [2, 2], [3, 3]], dtype=float)
    assert non_dominated_ranks(obj).tolist() == [0, 0, 0, 1, 2]
    assert non_dominated_ranks(obj, enough=3).tolist() == [0, 0, 0, 5, 5]


# -- benchmark and imports ---------------------------------------------------------------------
def test_benchmark_runs_both_variants(params):
    small = dataclasses.replace(params, search=dataclasses.replace(params.search, population=8,
                                                                   generations=3))
    out = benchmark_search(small, repeats=1, show=False)
    assert out["batched_s"] > 0 and out["per_subnet_s"] > 0 and out["n_scored"] >= 8


def test_search_does_not_import_torch():
    code = "import sys, ofa.search; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
