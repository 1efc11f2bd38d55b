"""Verified specialization: a constraint's subnet ships only once it has met its limit when
measured on the device.

The search proposes each constraint's K best distinct candidates (`pick_candidates`: the
predictor's best within the table's limit first, and some the table prices slightly over,
so that a table erring on the slow side does not lose the best one). The export stage
measures them (`DeviceMeter`: latency in rounds interleaved with reference subnets, whose
drift against the table's build divides out the machine's speed at that moment; validation
accuracy after BN recalibration in the runtime the subnet ships in, only for the candidates
that met the limit and the predictor's first choice: a candidate over it cannot ship, and
its validation pass was most of the export's time) and `select_verified` ships the most
accurate one that meets the limit, searching again with the limit tightened by the measured
overshoot a bounded number of rounds, or fails naming what was reached. The uniformly
scaled subnets (timed in the same session as the report's baselines) that meet a constraint
when measured compete too (`uniform_candidates`): what ships is never less accurate on the
validation split than a uniform subnet that also fits, however the predictor ranks them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from ofa.errors import OFAError

Measure = Callable[[list[str]], dict[str, dict]]        # configs -> their measured latency
Accuracy = Callable[[str], float]                    # a config -> its validation accuracy
Research = Callable[[float], list[dict]]   # a tightened limit -> new candidates (never empty)


def pick_candidates(configs: list[str], scores: np.ndarray, cost: np.ndarray, limit: float,
                    k: int, over_margin: float, under_margin: float = 0.0) -> list[int]:
    """Indices of up to k distinct configs, the predictor's first choice within `limit` first;
    then the best one priced within limit * (1 - under_margin) (the search's winners are the
    subnets the table underprices most, so one candidate keeps that margin); then max(1, k // 4)
    of the best priced in (limit, limit * (1 + over_margin)] (a table erring slow does not lose
    the best one); the rest the next best within the limit. Margins of 0 turn a tier off."""
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
    if not within:
        return over[:k]
    picked = within[:1]
    safe = [i for i in within[1:] if cost[i] <= limit * (1 - under_margin)]
    if under_margin > 0 and k >= 2 and cost[picked[0]] > limit * (1 - under_margin) and safe:
        picked.append(safe[0])
    if over_margin > 0 and k >= 3:
        picked += over[:max(1, k // 4)]
    picked += [i for i in within if i not in picked][:max(0, k - len(picked))]
    return picked[:k]


QUIET_DRIFT = 0.03   # references within 3% of the table's speed: a quiet machine


def judged_latency(row: dict) -> float:
    """The latency a candidate is judged by: its verified latency (median / drift); on a quiet
    machine (drift within QUIET_DRIFT of 1, mostly the references' own timing noise) the
    longer of it and the raw median, so that what ships there meets its limit both ways (a
    candidate 0.02% under by verified latency read 0.5% over by its raw median at drift 1.005:
    reports/RESULTS.md)."""
    verified, drift = row["verified_latency_ms"], row.get("drift")
    if drift is not None and abs(drift - 1) <= QUIET_DRIFT:
        return max(verified, row["raw_latency_ms"])
    return verified


def meets(row: dict) -> bool:
    """Whether a measured candidate meets its constraint: exact MACs, or `judged_latency`."""
    if row["name"] == "flops_m":
        return row["macs"] / 1e6 <= row["limit"]
    return judged_latency(row) <= row["limit"]


def _fastest(rows: list[dict]) -> dict:
    return min(rows, key=judged_latency)


def _tightened(rows: list[dict], limit: float, search_limit: float) -> float:
    """The next search limit: the limit divided by the overshoot measured (the candidates'
    median ratio of judged to predicted latency: one noisy timing does not decide), so that
    what the table prices under it measures under the limit; at least as tight as scaling the
    last search limit by the fastest candidate's overshoot."""
    overshoot = float(np.median([judged_latency(r) / r["predicted_latency_ms"] for r in rows]))
    return min(limit / overshoot, search_limit * limit / judged_latency(_fastest(rows)))


def uniform_candidates(spec: dict, uniform: list[dict], taken: list[dict]) -> list[dict]:
    """The uniform subnets (candidate rows with their measured latency and `origin`) that meet
    constraint `spec` when measured and are not among the search's candidates `taken`: round
    0's candidates after the search's own, so the predictor's first choice stays first (the
    search regret is measured against it)."""
    seen = {c["config"] for c in taken}
    return [u for u in uniform if u["config"] not in seen
            and meets(u | {"name": spec["name"], "limit": spec["limit"]})]


@dataclasses.dataclass
class Target:
    """One constraint under verification: what it asks (constraint, name, limit), the
    candidates to measure next and how to search again under a tighter limit."""
    spec: dict
    candidates: list[dict]
    research: Research
    search_limit: float = 0.0
    tried: list[dict] = dataclasses.field(default_factory=list)
    shipped: dict | None = None

    def judge(self, measured: dict[str, dict], accuracy: Accuracy, round_: int) -> list[dict]:
        """Record this round's candidates with their measurements; ship the most accurate
        one that meets the limit, if any. Validation accuracy is measured for those that meet
        it and for the predictor's first choice (the search regret needs it); it is None for
        the others."""
        judged = {"constraint": self.spec["constraint"], "name": self.spec["name"],
                  "limit": self.spec["limit"], "search_limit": self.search_limit, "round": round_}
        rows = [{"origin": "search"} | c | measured[c["config"]] | judged for c in self.candidates]
        for i, r in enumerate(rows):
            r["meets_limit"] = meets(r)
            first = round_ == 0 and i == 0
            r["val_acc"] = accuracy(r["config"]) if r["meets_limit"] or first else None
        self.tried += rows
        ok = [r for r in rows if r["meets_limit"]]
        if ok:
            self.shipped = max(ok, key=lambda r: (r["val_acc"], -r["verified_latency_ms"]))
        for r in self.tried:
            r["verdict"] = ("shipped" if r is self.shipped else "over the limit"
                            if not r["meets_limit"] else "less accurate than the shipped one")
        return rows


def select_all(device: str, targets: list[Target], measure: Measure, accuracy: Accuracy,
               rounds: int) -> list[tuple[dict, list[dict]]]:
    """(the shipped candidate, every candidate measured with its verdict) per target. Each
    round measures every pending target's candidates together (one timing session, the same
    machine state); a target ships the highest measured validation accuracy among those that
    meet its limit; the others search again (`Target.research`) with the search limit
    tightened by the overshoot measured (`_tightened`), at most `rounds` times, then the
    first unmet one fails naming the device, the constraint, the best verified latency and
    the limit it would meet."""
    for t in targets:
        t.search_limit = t.search_limit or t.spec["limit"]
    pending = [t for t in targets if t.candidates]
    for round_ in range(rounds + 1):
        if not pending:
            break
        measured = measure(list(dict.fromkeys(c["config"] for t in pending for c in t.candidates)))
        unmet = []
        for t in pending:
            rows = t.judge(measured, accuracy, round_)
            if t.shipped is None and round_ < rounds:
                t.search_limit = _tightened(rows, t.spec["limit"], t.search_limit)
                t.candidates = t.research(t.search_limit)
                unmet.append(t)
        pending = [t for t in unmet if t.candidates]
    for t in targets:
        if t.shipped is None:
            raise _unmet(device, t, rounds)
    return [(t.shipped, t.tried) for t in targets]


def _unmet(device: str, t: Target, rounds: int) -> OFAError:
    best = _fastest(t.tried) if t.tried else None
    searches = min(rounds, max((r["round"] for r in t.tried), default=0))
    reached = "no candidate" if best is None else (
        f"the fastest candidate measured {judged_latency(best):.4g} ms at the table's "
        f"speed ({best['config']}), so a limit of {judged_latency(best):.4g} ms or more "
        "would have been met")
    return OFAError(f"{device}: no subnet met {t.spec['constraint']} (<= {t.spec['limit']:g} ms) "
                    f"when measured, after {searches} tightened search(es): {reached}; nothing of "
                    f"{device}'s previous export was changed")


def select_verified(device: str, target: dict, candidates: list[dict], measure: Measure,
                    accuracy: Accuracy, research: Research, rounds: int
                    ) -> tuple[dict, list[dict]]:
    """`select_all` for one constraint `target` (constraint, name, limit)."""
    return select_all(device, [Target(target, candidates, research)], measure, accuracy,
                      rounds)[0]


def regret(shipped: dict, tried: list[dict]) -> dict:
    """What the predictor alone would have shipped (its first choice, round 0's first
    candidate) against the shipped one: validation accuracy lost (the search regret, >= 0
    when the measured choice gained), and whether that first choice met the limit."""
    first = next((r for r in tried if r["round"] == 0), shipped)
    return {"first_choice": first["config"], "first_choice_val_acc": first["val_acc"],
            "first_choice_met_limit": first["meets_limit"],
            "regret": shipped["val_acc"] - first["val_acc"]}
