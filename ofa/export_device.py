"""Export one device's subnets, each verified on the device before it ships (ofa/verify.py).

Every constraint's candidates (from the search record) and the uniform baselines are timed in
one session interleaved with the device's reference subnets; each constraint ships its most
accurate candidate (validation split) that meets the limit when measured, tightening and
searching again where none does; the uniform baselines that meet a constraint when measured
compete with the search's candidates (ofa/verify.py). Only when every constraint has one is
anything written: the device's folder is staged and swapped in, with `export.json` (what
shipped) and `verification.json` (every candidate measured, and why it was or was not chosen).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ofa import paths
from ofa.checkpoint import atomic_write_text, publish_dir, staging_dir
from ofa.config import Params
from ofa.contracts import ParetoRows, VerificationRows, validate_records
from ofa.data import load_dataset
from ofa.encoding import GeneLayout, to_genes
from ofa.errors import OFAError
from ofa.evaluate import evaluate_subnet
from ofa.export import constraint_dirname, export_choice
from ofa.latency import LatencyModel
from ofa.predictor import load_predictor
from ofa.report_inputs import VERIFICATION_FORMAT
from ofa.space import SearchSpace, SubnetConfig
from ofa.specialize import candidate_row, read_search, research
from ofa.verify import Target, regret, select_all, uniform_candidates
from ofa.verify_meter import DeviceMeter
from ofa.weights import load_supernet

def baseline_configs(space: SearchSpace) -> list[tuple[str, SubnetConfig]]:
    """Uniformly scaled subnets (same kernel/expand/depth everywhere) at every resolution."""
    return [(name, getattr(space, f"{name}_config")(r))
            for name in ("min", "mid", "max") for r in space.cfg.resolutions]


def _verify(params: Params, device: str, record: dict, meter: DeviceMeter, space: SearchSpace,
            baselines: list[tuple[str, SubnetConfig]]) -> list[tuple[dict, dict, list[dict]]]:
    """(search row, shipped candidate, every candidate measured) per constraint; raises
    before anything is written when a constraint cannot be met."""
    layout = GeneLayout.of(space)
    predictor = load_predictor(params, Path(params.predictor.weights_path))
    model = LatencyModel.load(paths.latency_table(params, device), space)
    genes = to_genes(space, [cfg for _, cfg in baselines])
    scores = predictor.predict_genes(genes)
    uniform = [candidate_row(space, model, g, s) | meter.timed[str(cfg)]
               | {"origin": f"uniform {n}"} for (n, cfg), g, s in zip(baselines, genes, scores)]
    targets = []
    for row in record["results"]:
        if not row.get("candidates"):
            raise OFAError(f"{paths.search_result(params, device)} lists no candidates for "
                           f"{row['constraint']}: rerun `ofa-cli search --device {device}`")
        found = row["candidates"]   # a candidate without `origin` is the search's (Target.judge)
        targets.append(Target(row, found + uniform_candidates(row, uniform, found),
                              lambda limit, row=row: research(
                                  params, space, layout, predictor, model, row["name"], limit)))
    picks = select_all(device, targets, meter.time, meter.val_acc, params.verify.tighten_rounds)
    return [(row, *pick) for row, pick in zip(record["results"], picks)]


def run_export(params: Params, device: str, checkpoint: Path) -> Path:
    """Verify, then export every constraint's subnet for the device; time the baselines."""
    params.device(device)
    record = read_search(params, device)
    net, _ = load_supernet(params, checkpoint)
    space = net.space
    data = load_dataset(params.data, params.space)
    meter = DeviceMeter(params, device, net, data)   # refuses a table without references
    baselines = baseline_configs(space)
    meter.time([c["config"] for row in record["results"] for c in row.get("candidates", [])]
               + [str(cfg) for _, cfg in baselines])   # one session: the same machine state
    picks = _verify(params, device, record, meter, space, baselines)

    folder = paths.export_dir(params, device)
    staged = staging_dir(folder)   # a failure part-way leaves the previous export whole
    try:
        chosen, verification = [], []
        for row, shipped, tried in picks:
            cfg = space.validate(SubnetConfig.parse(shipped["config"]))
            name = constraint_dirname(row["constraint"])
            rec = export_choice(net, cfg, staged / name, data, meter.settings,
                                extra={"device": device}, test_images=params.train.final_eval_images,
                                backend=params.train.eval_backend)
            lost = regret(shipped, tried)
            first_test = rec["test_acc"] if lost["first_choice"] == shipped["config"] else \
                evaluate_subnet(net, SubnetConfig.parse(lost["first_choice"]), data, meter.settings,
                                ("test",), params.train.final_eval_images, meter.inputs,
                                backend=params.train.eval_backend)["test_acc"]
            keep = {k: v for k, v in shipped.items() if k not in ("verdict", "candidates")}
            chosen.append(keep | {"constraint": row["constraint"], "test_acc": rec["test_acc"],
                                  "measured_latency_ms": shipped["raw_latency_ms"],
                                  "folder": str(folder / name)}
                          | lost | {"first_choice_test_acc": first_test})
            verification.append({"constraint": row["constraint"], "limit": row["limit"],
                                 "shipped": shipped["config"], **lost, "candidates": tried})
        base = [{"name": n, "config": str(c), "resolution": c.r,
                 "measured_latency_ms": meter.timed[str(c)]["raw_latency_ms"],
                 "verified_latency_ms": meter.timed[str(c)]["verified_latency_ms"]}
                for n, c in baselines]
        validate_records(chosen, ParetoRows, f"export of {device}")
        rows = [r for v in verification for r in v["candidates"]]
        validate_records(rows, VerificationRows, f"verification of {device}")
        drift = meter.sessions[0]
        atomic_write_text(staged / "export.json", json.dumps(
            {"device": device, "checkpoint": str(checkpoint), "chosen": chosen,
             "baselines": base, "drift": drift}, indent=2))
        atomic_write_text(staged / "verification.json", json.dumps(
            {"format": VERIFICATION_FORMAT, "device": device, "space": space.fingerprint(),
             "checkpoint": str(checkpoint), "drift_sessions": meter.sessions,
             "constraints": verification}, indent=2))
        publish_dir(staged, folder)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return folder / "export.json"
