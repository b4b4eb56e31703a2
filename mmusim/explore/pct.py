"""Random searches for scenarios too large to exhaust: PCT, and the random walk.

PCT: probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010) over the real kernel.

For scenarios too large to exhaust. Each run gives the n scheduling entities -- here the CPUs --
random distinct priorities above d, picks d-1 change points uniformly among the k steps of a run,
always runs the highest-priority CPU that has an enabled action, and at the i-th change point
lowers the running CPU's priority to i. One run finds a bug of depth d with probability at least
1/(n*k^(d-1)); ``k`` is measured (the longest run seen), and the bound is printed with it.

The random walk (TLC's simulation mode) takes, at every step of a run, one of the enabled actions
uniformly at random. Both count the distinct states their runs cover (``Stats.states``, by the
explorer's fingerprint), so a user can compare what a random search saw with what the complete
search visits; the invariants are checked once per distinct state.

All randomness comes from ``random.Random(seed)``; a run is replayable from its recorded schedule.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

from mmusim.explore.model import Action, Model, StepInfo, step_bound_message
from mmusim.explore.search import Result, Stats, Violation, assert_message, root_result
from mmusim.kernel import KernelAssert


def pct(model: Model, *, depth: int, runs: int, seed: int,
        on_progress: Callable[[Stats], None] | None = None,
        seen: set[bytes] | None = None) -> Result:  # fmt: skip
    """``runs`` PCT runs of depth ``depth``; each run is bounded by the scenario's max_steps (a run
    that reaches it is a "step bound" violation). ``seen`` collects the fingerprints covered."""
    if depth < 1 or runs < 1:
        raise ValueError("pct: depth and runs must be at least 1")
    rng = random.Random(seed)
    n = model.ncpus
    d = depth

    def make_run(k_steps: int) -> tuple[Choose, AfterStep]:
        prio = rng.sample(range(d, d + n), n)  # distinct priorities above the change-point ones
        changes = sorted(rng.sample(range(1, max(k_steps, d) + 1), d - 1)) if d > 1 else []

        def choose(acts: list[Action]) -> Action:
            return max(acts, key=lambda x: (prio[x[0]] if x[0] >= 0 else -1, x[1] == "irq"))

        def after(a: Action, step: int) -> None:
            if a[0] >= 0:
                for i, c in enumerate(changes):
                    if c == step:
                        prio[a[0]] = d - 1 - i  # below every initial priority

        return choose, after

    return _runs(model, runs, make_run, on_progress, seen, measure=True)


def random_walk(model: Model, *, runs: int, seed: int,
                on_progress: Callable[[Stats], None] | None = None,
                seen: set[bytes] | None = None) -> Result:  # fmt: skip
    """``runs`` random walks: at each step one enabled action, uniformly at random. ``seen``
    collects the fingerprints covered."""
    if runs < 1:
        raise ValueError("random_walk: runs must be at least 1")
    rng = random.Random(seed)

    def make_run(k_steps: int) -> tuple[Choose, AfterStep]:
        return rng.choice, _nothing

    return _runs(model, runs, make_run, on_progress, seen)


Choose = Callable[[list[Action]], Action]
AfterStep = Callable[[Action, int], None]


def _nothing(a: Action, step: int) -> None:
    return None


def _runs(model: Model, runs: int, make_run: Callable[[int], tuple[Choose, AfterStep]],
          on_progress: Callable[[Stats], None] | None, seen: set[bytes] | None,
          measure: bool = False) -> Result:  # fmt: skip
    """Run ``runs`` executions, each choosing its actions by a fresh ``make_run(k)``; stop at the
    first violation. ``k``: with ``measure``, the length of the default run (PCT's k), measured
    once after the root; else 0."""
    t0 = time.perf_counter()
    early = root_result(model, t0, None)
    if early is not None:
        return early
    stats = Stats()
    k_steps = _default_length(model) if measure else 0
    if seen is None:
        seen = set()
    for _ in range(runs):
        choose, after = make_run(k_steps)
        v = _one_run(model, stats, seen, choose, after)
        if on_progress is not None:
            on_progress(stats)
        if v is not None:
            stats.seconds = time.perf_counter() - t0
            return Result(v, stats, False, None)
    stats.seconds = time.perf_counter() - t0
    return Result(None, stats, False, None)


def bound(n: int, k: int, d: int) -> float:
    """The per-run lower bound on finding a depth-d bug: 1/(n*k^(d-1)); 0.0 when it is below the
    smallest float (the division is of integers, so a large ``k ** (d - 1)`` cannot overflow)."""
    denominator: int = n * k ** (d - 1)
    return 1 / denominator


def bound_text(n: int, k: int, d: int) -> str:
    """``bound(n, k, d)`` to three significant digits, in scientific form when it is too small
    for a float (``1.21e-460``): the exponent comes from logarithms of the integers."""
    value = bound(n, k, d)
    if value > 0.0:
        return f"{value:.3g}"
    exp10 = -(math.log10(n) + (d - 1) * math.log10(k))
    e = math.floor(exp10)
    mantissa = 10 ** (exp10 - e)
    if f"{mantissa:.3g}" == "10":  # rounding up to the next power of ten
        mantissa, e = 1.0, e + 1
    return f"{mantissa:.3g}e{e:+d}"


def _default_length(model: Model) -> int:
    k = model.reset()
    steps = 0
    while True:
        acts = model.actions(k)
        if not acts or k.steps >= model.max_steps:
            return max(steps, 1)
        try:
            model.step(k, acts[0])
        except KernelAssert:  # a broken kernel: the run ends here
            return max(steps, 1)
        steps += 1


def _one_run(
    model: Model, stats: Stats, seen: set[bytes], choose: Choose, after: AfterStep
) -> Violation | None:
    k = model.reset()
    stats.executions += 1
    infos: list[StepInfo] = []
    schedule: list[Action] = []
    step = 0
    last: int | None = None
    pre = 0
    while True:
        fp = model.fingerprint(k)
        if fp not in seen:  # a state seen before held the invariants (or the runs had stopped)
            seen.add(fp)
            stats.states = len(seen)
            problems = model.violations(k)
            if problems:
                return Violation("invariant", tuple(problems), tuple(schedule), tuple(infos), pre)
        acts = model.actions(k)
        if not acts:
            try:
                k.check_deadlock()
            except KernelAssert as e:
                return Violation("deadlock", (str(e),), tuple(schedule), tuple(infos), pre)
            end = model.end_violations(k)
            if end:
                return Violation(
                    "invariant at the end", tuple(end), tuple(schedule), tuple(infos), pre
                )
            break
        if k.steps >= model.max_steps:
            v = step_bound_message(model.max_steps)
            return Violation("step bound", (v,), tuple(schedule), tuple(infos), pre)
        a = choose(acts)
        if last is not None and a[0] >= 0 and a[0] != last and any(x[0] == last for x in acts):
            pre += 1
        info = model.info(k, a)
        try:
            model.step(k, a)
        except KernelAssert as e:
            infos.append(info)
            schedule.append(a)
            return Violation(
                "kernel assert", (assert_message(e),), tuple(schedule), tuple(infos), pre
            )
        infos.append(info)
        schedule.append(a)
        stats.transitions += 1
        step += 1
        stats.depth = step
        if a[0] >= 0:
            last = a[0]
        after(a, step)
    stats.max_depth = max(stats.max_depth, step)
    return None
