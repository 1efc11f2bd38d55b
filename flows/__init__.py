"""Prefect flows: scheduling, retries and gates around the steps in `ofa/` (no step logic here)."""
