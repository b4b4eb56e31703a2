"""Explore the SMP interleavings of a scenario on the real kernel (docs/explore.md)."""

from mmusim.explore.model import Action, Model, StepInfo
from mmusim.explore.search import Result, Stats, Violation, explore, minimal

__all__ = ["Action", "Model", "Result", "Stats", "StepInfo", "Violation", "explore", "minimal"]
