"""Device latency lookup tables: layers, timing backends, tables, prediction and checks.

See docs/latency_table.md for the table format (and how to register a table measured on a
device that cannot run this code)."""

from ofa.latency.check import check_table, device_rank_agreement, speed_drift
from ofa.latency.measure import end_to_end_ms
from ofa.latency.model import LatencyModel
from ofa.latency.table import build_table
from ofa.latency.table_io import import_table, read_table, write_layer_list

__all__ = ["LatencyModel", "build_table", "check_table", "device_rank_agreement", "end_to_end_ms",
           "import_table", "read_table", "speed_drift", "write_layer_list"]
