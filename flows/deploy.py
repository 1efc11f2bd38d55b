"""Serve the flows as Prefect deployments; `new-devices` runs on the cron from params.yaml.

Needs a long-lived Prefect API (`prefect server start`); `ofa-cli deploy` calls `serve`, whose
schedules Prefect pauses when the serving process stops (README: running it as a service).
"""

from __future__ import annotations

from flows.shrink import evaluate_flow, progressive_shrinking
from flows.specialize import (export_flow, new_devices, predictor_flow, search_flow,
                              specialize_device)
from ofa.config import load_params


def build_deployments(params_path: str = "params.yaml",
                      interval_seconds: float | None = None) -> list:
    """The deployments (built, not yet served): `new-devices` on the params' cron, or every
    `interval_seconds` instead (the scheduler test uses seconds, cron's unit is a minute)."""
    params = load_params(params_path)
    common = {"params_path": params_path}
    when = ({"interval": interval_seconds} if interval_seconds is not None
            else {"cron": params.orchestration.new_devices_cron})
    return [
        new_devices.to_deployment(name="new-devices", parameters=common, **when),
        specialize_device.to_deployment(name="specialize-device", parameters=common),
        predictor_flow.to_deployment(name="predictor", parameters=common),
        progressive_shrinking.to_deployment(name="progressive-shrinking", parameters=common),
        evaluate_flow.to_deployment(name="evaluate", parameters=common),
        search_flow.to_deployment(name="search", parameters=common),
        export_flow.to_deployment(name="export", parameters=common),
    ]


def serve_deployments(params_path: str = "params.yaml",
                      interval_seconds: float | None = None) -> None:
    """Serve until interrupted; one flow run at a time (they share the machine's cores)."""
    from prefect import serve

    serve(*build_deployments(params_path, interval_seconds), limit=1)
