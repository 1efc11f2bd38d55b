"""Specialize for one device: search under its constraints (with the candidates that export
verifies, ofa/export_device.py), and the report over every device.

The steps here wire the pieces together (predictor, latency table, evolution, export); each
is one function of params and paths that the CLI, the DVC stages and the Prefect flows call.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ofa import paths
from ofa.checkpoint import atomic_write_text
from ofa.config import Params
from ofa.contracts import SearchResults, validate_records
from ofa.encoding import GeneLayout, from_genes, to_genes
from ofa.errors import OFAError
from ofa.latency import LatencyModel, device_rank_agreement
from ofa.latency.measure import torch_threads
from ofa.metrics import headline_text
from ofa.predictor import load_predictor, read_dataset
from ofa.report import load_device_report, write_report
from ofa.report_inputs import (NO_EXPORTS, read_evaluation, read_json, read_scratch_runs,
                               read_verification)
from ofa.search.evolution import Constraint, batch_values, evolve, feasible
from ofa.search.nsga import nsga2
from ofa.space import SearchSpace
from ofa.verify import pick_candidates

SEARCH_FORMAT = "ofa-search/1"


def latency_limits(params: Params, device: str, model, layout) -> list[float]:
    """The device's latency limits in ms, in `ConstraintsConfig.specs` order: `latency_ms` as
    given, each `latency_frac` resolved between its fastest and slowest subnet as its table
    predicts (4 digits)."""

    return [limit for kind, _, limit in _limits(params, device, model, layout)
            if kind == "latency_ms"]


def _limits(params: Params, device: str, model, layout) -> list[tuple[str, str, float]]:
    """(kind, spec, limit) per constraint: the kind evaluated (latency_ms or flops_m), the
    constraint as the user wrote it (`latency_frac=0.15`: stable keys for reports and folders)
    and the resolved limit."""

    wanted = params.constraints_of(device).specs()
    lo = hi = 0.0
    if any(kind == "latency_frac" for kind, _ in wanted):
        ends = np.stack([np.zeros(layout.width, dtype=np.int64), layout.cardinalities() - 1])
        lo, hi = (float(v) for v in model.predict_genes(ends))
    out = []
    for kind, value in wanted:
        spec = f"{kind}={value:g}"
        if kind == "latency_frac":
            out.append(("latency_ms", spec, float(f"{lo + value * (hi - lo):.4g}")))
        else:
            out.append((kind, spec, float(value)))
    return out


def _constraints(params: Params, device: str, model, layout) -> list[tuple[str, Constraint]]:
    cost = {"latency_ms": model.predict_genes, "flops_m": lambda g: model.macs_genes(g) / 1e6}
    return [(spec, Constraint(kind, cost[kind], limit))
            for kind, spec, limit in _limits(params, device, model, layout)]


def run_search(params: Params, device: str, pareto: bool = True) -> Path:
    """Best predicted subnet per constraint (regularized evolution) plus the NSGA-II front."""

    params.device(device)
    space = SearchSpace(params.space)
    layout = GeneLayout.of(space)
    predictor = load_predictor(params, Path(params.predictor.weights_path))
    model = LatencyModel.load(paths.latency_table(params, device), space)
    with torch_threads(params.search.threads):
        results, front = _search_all(params, device, space, layout, predictor, model, pareto)
    validate_records(results, SearchResults, f"search results of {device}")
    out = paths.search_result(params, device)
    atomic_write_text(out, json.dumps({"format": SEARCH_FORMAT, "device": device,
                                       "space": space.fingerprint(), "results": results,
                                       "pareto_front": front}, indent=2))
    return out


def _search_all(params: Params, device: str, space: SearchSpace, layout, predictor, model,
                pareto: bool) -> tuple[list[dict], list[dict]]:
    """One evolution per constraint, then each constraint takes the best predicted subnet
    among everything found that meets it (so a looser limit never gets a worse pick), and
    the NSGA-II front over (accuracy, latency)."""
    constraints = _constraints(params, device, model, layout)
    found = [evolve(layout, predictor.predict_genes, [c], params.search) for _, c in constraints]
    front = nsga2(layout, predictor.predict_genes, [model.predict_genes], params.search) \
        if pareto else []
    pool = np.stack([r.genes for r in found] + [np.asarray(g) for g, _, _ in front])
    scores = np.array([r.score for r in found] + [s for _, s, _ in front], dtype=np.float64)
    # the candidates of verified selection also come from every evolution's final population
    pool = np.concatenate([pool] + [r.population for r in found])
    scores = np.concatenate([scores] + [r.population_scores for r in found])
    results = []
    for spec, c in constraints:
        ok = np.flatnonzero(feasible(pool, [c]))
        best = ok[np.argmax(scores[ok])]  # never empty: the constraint's own evolution is in
        results.append({"constraint": spec, "name": c.name, "limit": c.limit}
                       | candidate_row(space, model, pool[best], scores[best])
                       | {"candidates": candidates(params, space, model, pool, scores, c)})
    rows = [{"config": str(from_genes(space, np.asarray(g)[None])[0]),
             "predicted_acc": float(score), "predicted_latency_ms": float(objs[0])}
            for g, score, objs in front]
    return results, sorted(rows, key=lambda r: r["predicted_latency_ms"])


def candidate_row(space: SearchSpace, model, genes: np.ndarray, score: float) -> dict:
    """One subnet as the search records it: config, predicted accuracy and latency, costs."""
    g = np.asarray(genes)[None, :]
    return {"config": str(from_genes(space, g)[0]), "predicted_acc": float(score),
            "predicted_latency_ms": float(model.predict_genes(g)[0]),
            "macs": int(model.macs_genes(g)[0]), "params": int(model.params_genes(g)[0])}


def candidates(params: Params, space: SearchSpace, model, pool: np.ndarray,
               scores: np.ndarray, c: Constraint) -> list[dict]:
    """The constraint's K best distinct candidates for verified selection (ofa.verify):
    within the limit; for latency (which the table only predicts) also one priced
    verify.under_margin under it and some priced up to verify.over_margin over it."""
    v, timed = params.verify, c.name == "latency_ms"
    configs = [str(x) for x in from_genes(space, pool)]
    idx = pick_candidates(configs, scores, batch_values(c.fn, pool, c.name), c.limit,
                          v.candidates, v.over_margin if timed else 0.0,
                          v.under_margin if timed else 0.0)
    return [candidate_row(space, model, pool[i], scores[i]) for i in idx]


def research(params: Params, space: SearchSpace, layout, predictor, model, name: str,
             limit: float) -> list[dict]:
    """Candidates of one evolution under a tightened limit (verified selection's next round),
    the limit never below the smallest subnet's predicted cost: at worst the smallest subnet
    is what gets measured next."""
    cost = {"latency_ms": model.predict_genes, "flops_m": lambda g: model.macs_genes(g) / 1e6}
    floor = float(cost[name](np.zeros((1, layout.width), dtype=np.int64))[0])
    c = Constraint(name, cost[name], max(limit, floor))
    with torch_threads(params.search.threads):
        found = evolve(layout, predictor.predict_genes, [c], params.search)
    return candidates(params, space, model, found.population, found.population_scores, c)


def read_search(params: Params, device: str) -> dict:
    path = paths.search_result(params, device)
    if not path.is_file():
        raise OFAError(f"{path} does not exist: run `ofa-cli search --device {device}` first")
    record = read_json(path, "search result")
    if not isinstance(record, dict) or record.get("format") != SEARCH_FORMAT:
        raise OFAError(f"{path} is not a search result ({SEARCH_FORMAT})")
    if record.get("space") != SearchSpace(params.space).fingerprint():
        raise OFAError(f"{path} was searched in another search space; rerun the search")

    validate_records(record.get("results") or [], SearchResults, f"search result {path}")
    if not record.get("results"):
        raise OFAError(f"search result {path} holds no chosen subnets")
    return record


def run_report(params: Params, devices: list[str] | None = None,
               evaluate_json: Path = Path("reports/evaluate.json"),
               out_dir: Path = Path("reports")) -> list:
    """Pareto report over every device that has exported subnets (or the given ones)."""

    names = devices or [d for d in params.devices if paths.export_record(params, d).is_file()]
    for d in names:
        params.device(d)
    if not names:   # the step's main input first, before the evaluation it adds
        raise OFAError(NO_EXPORTS)
    evaluation = read_evaluation(evaluate_json)
    alone = read_scratch_runs(params)
    reports = [load_device_report(paths.export_record(params, d), evaluate_json,
                                  _sampled(params, d), alone, read_verification(params, d))
               for d in names]
    metrics = headline_text(evaluation, reports)
    write_report(reports, out_dir, _rank_agreement(params, names),
                 also={out_dir / "metrics.json": lambda p: p.write_text(metrics)})
    return reports


def _rank_agreement(params: Params, names: list[str]) -> dict[str, float]:
    """Kendall tau of the devices' table latencies (and MACs) over 500 random subnets."""

    have = [d for d in names if paths.latency_table(params, d).is_file()]
    return device_rank_agreement(params, have, macs=True) if have else {}


def _sampled(params: Params, device: str) -> list[dict]:
    """The accuracy dataset's subnets with their predicted latency on the device (plot cloud)."""


    path = Path(params.predictor.dataset_path)
    if not path.is_file() or not paths.latency_table(params, device).is_file():
        return []
    space = SearchSpace(params.space)
    df, configs = read_dataset(params, path)
    genes = to_genes(space, configs)
    lat = LatencyModel.load(paths.latency_table(params, device), space).predict_genes(genes)
    return [{"accuracy": float(a), "latency_ms": float(t)} for a, t in zip(df["accuracy"], lat)]
