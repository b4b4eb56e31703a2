"""A scenario's kernel stopped at a step, to look at rather than to judge.

``scenario_kernel(path, step)`` loads a scenario file, boots the kernel it configures and runs it
-- all of it (``step`` None), or ``step`` engine steps -- and returns the kernel, for
``mmusim map`` and for Python (``memory_map(scenario_kernel(path, 40))``).
``scenario_loader(build)`` does the same for any function that boots a kernel, and
``run_steps(k, n)`` stops a kernel you built yourself after ``n`` steps. All run with
``Kernel.run``'s schedule (round robin, or the scenario's seed), so stopping at step N shows
exactly where the full run passes after N steps.

These kernels run without the invariant checks (``run_scenario`` applies them), so a scenario that
reproduces a bug -- a leaked stack mapping, say -- can be looked at after the bug happened. The
checks do not change the run, only stop it. A kernel assertion during the run is raised again with
the step it happened in, and the ``--step`` of ``mmusim map`` that shows the state just before it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mmusim.kernel import Kernel, KernelAssert
from mmusim.scenario.load import load_scenario

__all__ = ["LoadKernel", "RunAssert", "run_steps", "scenario_kernel", "scenario_loader"]

LoadKernel = Callable[[str, int | None], Kernel]
"""``load_kernel(path, step)``: the kernel of scenario ``path`` after ``step`` engine steps (None:
after the whole run), as ``scenario_kernel`` and ``scenario_loader`` make them."""


def run_steps(k: Kernel, n: int, *, seed: int | None = None) -> int:
    """Perform up to ``n`` engine steps (``k.do``) choosing actions as ``Kernel.run(seed=seed)``
    does -- round robin over the CPUs with an interrupt before a step on the same CPU, or the
    seeded random choice; sleepers woken by a clock jump when nothing can run -- and stop early if
    the system goes quiescent. Returns the steps taken. On a fresh kernel these are exactly the
    first ``n`` steps ``k.run(seed=seed)`` takes."""
    return k.run(seed=seed, steps=n, max_steps=k.steps + n + 1, check_deadlock=False)


def _run_to(k: Kernel, step: int | None, seed: int | None, max_steps: int | None = None) -> None:
    """Run ``k`` to the end or to ``step``; a kernel assertion says which step to stop at instead."""
    try:
        if step is not None:
            run_steps(k, step, seed=seed)
        elif max_steps is None:
            k.run(seed=seed)
        else:
            k.run(seed=seed, max_steps=max_steps)
    except KernelAssert as exc:
        before = f"--step {k.steps - 1} maps the state just before it"
        raise RunAssert(f"{str(exc).strip()} (in step {k.steps}; {before})") from exc


class RunAssert(KernelAssert):
    """The kernel asserted while running the scenario (not while booting it): an outcome of the
    scenario, which ``mmusim map`` reports as its verdict. The message names the step."""


def scenario_kernel(path: str | Path, step: int | None) -> Kernel:
    """The kernel of scenario file ``path`` after ``step`` engine steps (None: the whole run, with
    the scenario's seed and step limit). Raises ``ScenarioError`` for a bad file."""
    scn = load_scenario(path)
    k = scn.boot()
    _run_to(k, step, scn.seed, scn.max_steps)
    return k


def scenario_loader(build: Callable[[str], Kernel], *, seed: int | None = None) -> LoadKernel:
    """A ``load_kernel`` from ``build(path)``, which returns a booted, not yet run, kernel:
    ``step`` None runs it to the end (``k.run(seed=seed)``), else ``run_steps(k, step, seed)``."""

    def load_kernel(path: str, step: int | None) -> Kernel:
        k = build(path)
        _run_to(k, step, seed)
        return k

    return load_kernel
