"""Serve the flows as Prefect deployments; `new-devices` runs on the cron from params.yaml.

Needs a long-lived Prefect API (`prefect server start`); `ofa-cli deploy` calls `serve`.
"""

from __future__ import annotations

from flows.shrink import evaluate_flow, progressive_shrinking
from flows.specialize import (export_flow, new_devices, predictor_flow, search_flow,
                              specialize_device)
from ofa.config import load_params


def build_deployments(params_path: str = "params.yaml", preset: str | None = None) -> list:
    """The deployments, with `new-devices` scheduled (built, not yet served)."""
    params = load_params(params_path, preset)
    common = {"params_path": params_path, "preset": preset}
    return [
        new_devices.to_deployment(name="new-devices", cron=params.orchestration.new_devices_cron,
                                  parameters=common),
        specialize_device.to_deployment(name="specialize-device", parameters=common),
        predictor_flow.to_deployment(name="predictor", parameters=common),
        progressive_shrinking.to_deployment(name="progressive-shrinking", parameters=common),
        evaluate_flow.to_deployment(name="evaluate", parameters=common),
        search_flow.to_deployment(name="search", parameters=common),
        export_flow.to_deployment(name="export", parameters=common),
    ]


def serve_deployments(params_path: str = "params.yaml", preset: str | None = None) -> None:
    from prefect import serve

    serve(*build_deployments(params_path, preset))
