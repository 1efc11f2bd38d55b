"""Verified specialization: a constraint's subnet ships only once it has met its limit when
measured on the device.

The search proposes each constraint's K best distinct candidates (`pick_candidates`: the
predictor's best within the table's limit first, and some the table prices slightly over,
so that a table erring on the slow side does not lose the best one). The export stage
measures them (`DeviceMeter`: latency in rounds interleaved with reference subnets, whose
drift against the table's build divides out the machine's speed at that moment; validation
accuracy after BN recalibration in the runtime the subnet ships in) and `select_verified`
ships the most accurate one that meets the limit, searching again with the limit tightened
by the measured overshoot a bounded number of rounds, or fails naming what was reached.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ofa.errors import OFAError

Measure = Callable[[list[str]], dict[str, dict]]        # configs -> their measured figures
Research = Callable[[float], list[dict]]   # a tightened limit -> new candidates (never empty)


def pick_candidates(configs: list[str], scores: np.ndarray, cost: np.ndarray, limit: float,
                    k: int, over_margin: float) -> list[int]:
    """Indices of up to k distinct configs: the best-scoring ones within `limit` (the
    predictor's first choice first), with k // 2 of the places kept for the best ones priced
    in (limit, limit * (1 + over_margin)] where there are such (over_margin 0: none)."""
    order = [int(i) for i in np.argsort(-np.asarray(scores, float), kind="stable")]
    seen: set[str] = set()
    within, over = [], []
    for i in order:
        if configs[i] in seen:
            continue
        seen.add(configs[i])
        if cost[i] <= limit:
            within.append(i)
        elif cost[i] <= limit * (1 + over_margin):
            over.append(i)
    n_over = min(len(over), k // 2 if over_margin > 0 else 0)
    return within[:k - n_over] + over[:n_over] if within else over[:k]


def meets(row: dict) -> bool:
    """Whether a measured candidate meets its constraint: verified latency, or exact MACs."""
    if row["name"] == "flops_m":
        return row["macs"] / 1e6 <= row["limit"]
    return row["verified_latency_ms"] <= row["limit"]


def _fastest(rows: list[dict]) -> dict:
    return min(rows, key=lambda r: r["verified_latency_ms"])


def _tightened(rows: list[dict], limit: float, search_limit: float) -> float:
    """The next search limit: the limit divided by the overshoot measured (the candidates'
    median ratio of verified to predicted latency: one noisy timing does not decide), so that
    what the table prices under it measures under the limit; at least as tight as scaling the
    last search limit by the fastest candidate's overshoot."""
    overshoot = float(np.median([r["verified_latency_ms"] / r["predicted_latency_ms"]
                                 for r in rows]))
    return min(limit / overshoot, search_limit * limit / _fastest(rows)["verified_latency_ms"])


def select_verified(device: str, target: dict, candidates: list[dict], measure: Measure,
                    research: Research, rounds: int) -> tuple[dict, list[dict]]:
    """(the shipped candidate, every candidate measured with its verdict) for one constraint
    `target` (constraint, name, limit). Ships the highest measured validation accuracy among
    those that meet the limit; where none does, searches again (`research`) with the search
    limit tightened by the overshoot measured (`_tightened`), at most `rounds` times, then fails
    naming the device, the constraint, the best verified latency and the limit it would meet."""
    limit, search_limit = target["limit"], target["limit"]
    tried: list[dict] = []
    searches = 0
    for round_ in range(rounds + 1):
        if not candidates:
            break
        measured = measure([c["config"] for c in candidates])
        rows = [c | measured[c["config"]] | {"constraint": target["constraint"],
                                             "name": target["name"], "limit": limit,
                                             "search_limit": search_limit, "round": round_}
                for c in candidates]
        for r in rows:
            r["meets_limit"] = meets(r)
        tried += rows
        ok = [r for r in rows if r["meets_limit"]]
        if ok:
            best = max(ok, key=lambda r: (r["val_acc"], -r["verified_latency_ms"]))
            for r in tried:
                r["verdict"] = ("shipped" if r is best else "over the limit" if not r["meets_limit"]
                                else "less accurate than the shipped one")
            return best, tried
        if round_ == rounds:
            break
        search_limit = _tightened(rows, limit, search_limit)
        candidates = research(search_limit)
        searches += 1
    for r in tried:
        r["verdict"] = "over the limit"
    best = _fastest(tried) if tried else None
    reached = "no candidate" if best is None else (
        f"the fastest candidate measured {best['verified_latency_ms']:.4g} ms at the table's "
        f"speed ({best['config']}), so a limit of {best['verified_latency_ms']:.4g} ms or more "
        "would have been met")
    raise OFAError(f"{device}: no subnet met {target['constraint']} (<= {limit:g} ms) when "
                   f"measured, after {searches} tightened search(es): {reached}; nothing of "
                   f"{device}'s previous export was changed")


def regret(shipped: dict, tried: list[dict]) -> dict:
    """What the predictor alone would have shipped (its first choice, round 0's first
    candidate) against the shipped one: validation accuracy lost (the search regret, >= 0
    when the measured choice gained), and whether that first choice met the limit."""
    first = next((r for r in tried if r["round"] == 0), shipped)
    return {"first_choice": first["config"], "first_choice_val_acc": first["val_acc"],
            "first_choice_met_limit": first["meets_limit"],
            "regret": shipped["val_acc"] - first["val_acc"]}
