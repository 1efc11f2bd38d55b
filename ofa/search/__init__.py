"""Search for the best subnet under a device's constraints (see evolution.py, nsga.py)."""

from ofa.search.benchmark import benchmark_search
from ofa.search.evolution import Constraint, SearchResult, evolve
from ofa.search.nsga import nsga2

__all__ = ["Constraint", "SearchResult", "benchmark_search", "evolve", "nsga2"]
