"""Kept so code written against the earlier docs keeps working (``from mmusim.map_cli import
run_steps, scenario_kernel``); new code imports these from ``mmusim.scenario`` (running a
scenario's kernel to a step) and ``mmusim.cli.map`` (the ``map`` subcommand)."""

from mmusim.cli.map import MapInputError, add_map_command
from mmusim.scenario import LoadKernel, run_steps, scenario_kernel, scenario_loader

__all__ = [
    "LoadKernel",
    "MapInputError",
    "add_map_command",
    "run_steps",
    "scenario_kernel",
    "scenario_loader",
]
