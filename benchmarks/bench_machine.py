"""State-machine steps per second of ``KernelMachine`` under the ``ci`` profile.

A state-machine step is one rule Hypothesis runs (create, abort, step a CPU, ...), with every kernel
invariant checked after each kernel step it causes. Target (issue 5): at least 1,000 per second.
Prints rules/s and kernel steps/s for Zephyr's mapped stacks (with the window fix), the legacy
guard and the lower-guard example policy, each a full ``ci`` run (100 examples, up to 50 steps).

    .venv/bin/python benchmarks/bench_machine.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from hypothesis import settings

import mmusim.testing.plugin  # noqa: F401  (registers the profiles)
from mmusim.testing import KernelMachine

sys.path.insert(0, str(Path(__file__).parent.parent / "docs" / "examples"))
import contextlib

from lower_guard import LowerGuardPolicy  # noqa: E402

COUNT = {"rules": 0, "examples": 0, "kernel_steps": 0}


class Counting(KernelMachine):
    """Counts rules (Hypothesis checks invariants once per example start and after each rule)."""

    def check_invariants(self, settings: Any, output: Any, *args: Any, **kwargs: Any) -> None:
        COUNT["rules"] += 1
        super().check_invariants(settings, output, *args, **kwargs)

    def teardown(self) -> None:
        COUNT["examples"] += 1
        super().teardown()
        COUNT["kernel_steps"] += self.kernel.steps


def bench(name: str, machine: type[KernelMachine]) -> float:
    for key in COUNT:
        COUNT[key] = 0
    t = time.perf_counter()
    machine.check(settings.get_profile("ci"))
    dt = time.perf_counter() - t
    rules = COUNT["rules"] - COUNT["examples"]  # minus the check before the first rule
    rate = rules / dt
    print(
        f"{name:28} {COUNT['examples']:4} examples {rules:6} rules {dt:6.2f} s  "
        f"{rate:7,.0f} rules/s  {COUNT['kernel_steps'] / dt:8,.0f} kernel steps/s"
    )
    return rate


def main() -> None:
    fix = ("CONFIG_SIM_CLEANUP_WAITS_FOR_SWITCH=y", "CONFIG_USERSPACE=y")
    rates = [
        bench("mapped (window fix)", Counting.configured(config=fix)),
        bench("mapped (Zephyr)", Counting.configured(config=("CONFIG_USERSPACE=y",))),
        bench("legacy guard", Counting.configured(config=("CONFIG_THREAD_STACK_MEM_MAPPED=n",))),
    ]
    # The lower-guard policy fails (that is the point): time to find and shrink its underflow.
    t = time.perf_counter()
    with contextlib.suppress(AssertionError):
        Counting.configured(policy=LowerGuardPolicy).check(settings.get_profile("ci"))
    print(f"{'lower-guard: find + shrink':28} {time.perf_counter() - t:6.2f} s")
    worst = min(rates)
    print(
        f"slowest: {worst:,.0f} rules/s (target >= 1,000): {'met' if worst >= 1000 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
