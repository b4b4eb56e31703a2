"""Scenario files: the Zephyr tests (and more) as TOML, loaded with precise errors, run on the
kernel with the invariants checked after every step, and judged against their expectations.

::

    from mmusim.scenario import load_scenario, run_scenario, bundled_scenarios
    result = run_scenario("scenarios/test_guard_page_front.toml")
    result.verdict      # "pass" | "fail" | "error"
    result.failures     # readable reasons, each naming the expectation's key and line

Format: docs/scenarios.md. Bad input raises ``ScenarioError``: ``FILE:LINE: key: problem``.
"""

from __future__ import annotations

from pathlib import Path

from mmusim.scenario.kernel import LoadKernel, run_steps, scenario_kernel, scenario_loader
from mmusim.scenario.load import Expr, ExprError, Locator, Scenario, ScenarioError, load_scenario
from mmusim.scenario.run import SCENARIO_SEED, ScenarioResult, fault_summary, run_scenario

__all__ = [
    "BUNDLED_DIR",
    "SCENARIO_SEED",
    "Expr",
    "ExprError",
    "Locator",
    "Scenario",
    "ScenarioError",
    "ScenarioResult",
    "bundled_scenarios",
    "fault_summary",
    "load_scenario",
    "run_scenario",
    "LoadKernel",
    "run_steps",
    "scenario_kernel",
    "scenario_loader",
]

BUNDLED_DIR: Path = Path(__file__).resolve().parent.parent / "scenarios"
"""The bundled scenarios (package data ``mmusim/scenarios``; a checkout links ``scenarios`` to it)."""


def bundled_scenarios() -> list[Path]:
    """The bundled scenario files, sorted by name."""
    return sorted(BUNDLED_DIR.glob("*.toml"))
