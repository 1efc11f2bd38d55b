"""Measuring candidates on the device for verified specialization (ofa/verify.py).

Latency: the candidates and a few reference subnets (the first of the table's calibration
subnets, whose latency at the table's build is recorded in it) are timed in the same
interleaved rounds; the references' median ratio now / then is the machine's drift, and a
candidate's verified latency is its median divided by it (its latency at the table's speed).
Accuracy: validation top-1 after BN recalibration, in the runtime the subnet ships in
(`train.eval_backend`); the test split is only ever reported, never used to choose.
"""

from __future__ import annotations

import numpy as np

from ofa import paths
from ofa.config import Params
from ofa.errors import OFAError
from ofa.evaluate import EvalSettings, InputCache, evaluate_subnet
from ofa.latency.check import calibration_record, subnet_items
from ofa.latency.measure import make_runners, time_interleaved, torch_threads
from ofa.latency.model import LatencyModel
from ofa.space import SearchSpace, SubnetConfig


def reference_subnets(params: Params, device: str) -> tuple[list[SubnetConfig], np.ndarray]:
    """(the device's reference subnets, their latency at the table's build), or one OFAError
    when its table does not record them (a table measured elsewhere cannot be verified here)."""
    space = SearchSpace(params.space)
    model = LatencyModel.load(paths.latency_table(params, device), space)
    cal, then = calibration_record(params, model)
    n = params.verify.reference_subnets
    if params.device(device).table is not None or len(cal) < n:
        raise OFAError(f"devices.{device}: its latency table {paths.latency_table(params, device)} "
                       f"records {len(cal)} calibration subnets timed at its build, and "
                       f"verification needs verify.reference_subnets = {n} of them to measure "
                       "the machine's drift; rebuild the table here (`ofa-cli latency --device "
                       f"{device}`); a table measured on another machine cannot be verified here")
    return cal[:n], then[:n]


class DeviceMeter:
    """One device's export measurements: timing sessions (`time`, the `Measure`) and cached
    validation accuracy (`val_acc`, the `Accuracy`)."""

    def __init__(self, params: Params, device: str, supernet, data) -> None:
        self.params, self.device, self.net, self.data = params, device, supernet, data
        self.space = SearchSpace(params.space)
        self.refs, self.then = reference_subnets(params, device)
        self.settings = EvalSettings.of(params)
        self.inputs = InputCache(data, self.settings)
        self.timed: dict[str, dict] = {}
        self.acc: dict[str, float] = {}
        self.sessions: list[float] = []   # each timing session's drift

    def time(self, configs: list[str]) -> dict[str, dict]:
        """One interleaved session over the configs not timed yet and the references; every
        config's raw median, p90 and verified (drift-divided) latency in ms."""
        todo = [c for c in dict.fromkeys(configs) if c not in self.timed]
        if todo:
            dev, lat = self.params.device(self.device), self.params.latency
            cfgs = [self.space.validate(SubnetConfig.parse(c)) for c in todo]
            # one seeded random-weight supernet for candidates and references alike (building
            # one per candidate was a third of a smoke session)
            items = subnet_items(self.params, self.device, cfgs + list(self.refs), lat.seed)
            with torch_threads(dev.threads):
                ms = time_interleaved(make_runners(items, dev), lat.warmup,
                                      self.params.verify.rounds, seed=lat.seed + 200 + len(self.sessions),
                                      min_seconds=lat.min_seconds)
            drift = float(np.median(np.median(ms[len(cfgs):], axis=1) / self.then))
            self.sessions.append(drift)
            for c, row in zip(todo, ms[:len(cfgs)]):
                raw = float(np.median(row))
                self.timed[c] = {"raw_latency_ms": raw, "p90_latency_ms": float(np.percentile(row, 90)),
                                 "drift": drift, "verified_latency_ms": raw / drift}
        return {c: self.timed[c] for c in configs}

    def val_acc(self, config: str) -> float:
        if config not in self.acc:
            cfg = self.space.validate(SubnetConfig.parse(config))
            row = evaluate_subnet(self.net, cfg, self.data, self.settings, ("val",),
                                  self.params.verify.val_images, self.inputs,
                                  backend=self.params.train.eval_backend)
            self.acc[config] = float(row["val_acc"])
        return self.acc[config]
