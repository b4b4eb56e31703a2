"""Explorer speed: the SMP abort race explored completely, each mutant caught, transitions/s.

    python benchmarks/bench_explore.py [--repeat R]

Targets from the issue: scenario 1 (two CPUs, two simultaneous self-aborts) explored completely
in at most 2 s; each mutant caught in at most 1 s; at least 50,000 transitions per second. The
script prints what it measures and whether each target is met; it asserts nothing.

"Raw interleavings" is the number of ways to interleave the CPUs' steps of one run of the
scenario without any reduction -- the multinomial (s_0 + s_1 + ...)! / (s_0! s_1! ...) for s_i
steps on CPU i -- an estimate of what a search without sleep sets or state merging would face.
"""

from __future__ import annotations

import argparse
import io
import math
import pickle
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

from mmusim.explore import Model, explore
from mmusim.explore.model import Action
from mmusim.mutants import MUTANTS, mutant_config_lines

ROOT = Path(__file__).resolve().parent.parent / "mmusim" / "scenarios" / "explore"
SCENARIO_1 = ROOT / "race_self_abort.toml"
FIX = "CONFIG_SIM_CLEANUP_WAITS_FOR_SWITCH=y"
# Mutants scenario 1 cannot show: the leak needs a thread aborted by another thread (scenario 2
# has one); the user privilege stack needs a user thread (Zephyr's user-mode guard test has one).
ELSEWHERE = {
    "abort-cleanup-leak": ROOT / "race_ipi_abort.toml",
    "user-priv-stack": ROOT.parent / "test_guard_page_front_user.toml",
}


def raw_interleavings(model: Model) -> int:
    k = model.reset()
    per_cpu: dict[int, int] = {}
    while True:
        acts: list[Action] = model.actions(k)
        if not acts:
            break
        a = acts[0]
        per_cpu[a[0]] = per_cpu.get(a[0], 0) + 1
        model.step(k, a)
    total = sum(per_cpu.values())
    out = math.factorial(total)
    for n in per_cpu.values():
        out //= math.factorial(n)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"bench_explore: Python {sys.version.split()[0]}, median of {args.repeat} runs\n")

    rows = []
    complete: list[Any] = []
    for label, extra, target in [
        ("scenario 1, Zephyr's kernel (finds the do_swap window)", (), None),
        ("scenario 1, cleanup waits for the switch (complete)", (FIX,), 2.0),
    ]:
        runs = [explore(Model(SCENARIO_1, extra)) for _ in range(args.repeat)]
        r = runs[0]
        if extra:
            complete.append(r)
        secs = statistics.median(x.stats.seconds for x in runs)
        raw = raw_interleavings(Model(SCENARIO_1, extra))
        rows.append((label, r.verdict, r.stats.states, r.stats.transitions, secs,
                     r.stats.transitions / secs, raw, target))  # fmt: skip
    for name in sorted(MUTANTS):
        extra = (FIX, *mutant_config_lines(name))
        path = ELSEWHERE.get(name, SCENARIO_1)
        runs = [explore(Model(path, extra)) for _ in range(args.repeat)]
        r = runs[0]
        secs = statistics.median(x.stats.seconds for x in runs)
        rows.append((f"mutant {name}", r.verdict, r.stats.states, r.stats.transitions, secs,
                     r.stats.transitions / secs, 0, 1.0))  # fmt: skip

    print(f"{'run':<56} {'verdict':<10} {'states':>7} {'trans':>7} {'time':>7} {'trans/s':>8}"
          f"  target")  # fmt: skip
    for label, verdict, states, trans, secs, rate, raw, target in rows:
        met = "" if target is None else ("met" if secs <= target else f"MISSED (<= {target:g} s)")
        print(f"{label:<56} {verdict:<10} {states:>7,} {trans:>7,} {secs:>6.2f}s {rate:>8,.0f}"
              f"  {met}")  # fmt: skip
        if raw:
            print(f"{'':<56} raw interleavings of one run: {raw:.3e}; states explored: {states:,}"
                  f" (reduction {raw / max(states, 1):.2e}x)")  # fmt: skip
    rates = [r[5] for r in rows]
    print(
        f"\ntransitions per second: median {statistics.median(rates):,.0f} "
        f"(target >= 50,000: {'met' if statistics.median(rates) >= 50_000 else 'MISSED'})"
    )
    limit(Model(SCENARIO_1, (FIX,)), complete[0])
    return 0


def limit(model: Model, r: Any) -> None:
    """The measured limit of this (stateless) search: what one kernel step and one reset (boot and
    the root prefix) cost with no checks and no fingerprints, and how much of the complete search
    is those alone -- its transitions, the steps it re-executes to get back to states, its boots."""
    steps = 0
    t = time.perf_counter()
    resets = 200
    for _ in range(resets):
        model.reset()
    reset_s = (time.perf_counter() - t) / resets
    spent = 0.0
    for _ in range(50):
        k = model.reset()
        t = time.perf_counter()
        while acts := model.actions(k):
            model.step(k, acts[-1])
            steps += 1
        spent += time.perf_counter() - t
    step_s = spent / steps
    work = (r.stats.transitions + r.stats.replayed) * step_s + r.stats.executions * reset_s
    print(f"\nmeasured limit: one kernel step {step_s * 1e6:.1f} us (no checks, no fingerprint), "
          f"so at most {1 / step_s:,.0f} transitions/s; one reset (boot + root prefix) "
          f"{reset_s * 1e3:.2f} ms")  # fmt: skip
    print(f"complete search with the fix: {r.stats.transitions:,} transitions + "
          f"{r.stats.replayed:,} steps re-executed + {r.stats.executions:,} resets = "
          f"{work:.2f} s of kernel work in {r.stats.seconds:.2f} s "
          f"({work / r.stats.seconds:.0%}); a search that kept its states would do only the "
          f"transitions: {r.stats.transitions * step_s:.2f} s of steps")  # fmt: skip
    copy_s = copy_cost(model)
    copies = r.stats.transitions - r.stats.states  # a copy for every child but a state's last
    print(f"copying states instead of re-executing them: pickle.loads of a state 30 steps in "
          f"{copy_s * 1e3:.2f} ms (a lower bound: its generators, functions and configuration "
          f"are shared, not copied), {reset_s / copy_s:.1f} times cheaper than a reset; about "
          f"{copies:,} copies = {copies * copy_s:.2f} s")  # fmt: skip


def copy_cost(model: Model) -> float:
    """Seconds to copy a kernel's state as it is (a graph of objects): ``pickle.loads`` of a
    kernel 30 steps past the root. What pickle cannot copy -- suspended generators, closures,
    the configuration -- is passed by reference, as a copy would have to rebuild or share it."""
    k = model.reset()
    for _ in range(30):
        acts = model.actions(k)
        if not acts:
            break
        model.step(k, acts[-1])
    shared: dict[int, object] = {}
    opaque = (types.GeneratorType, types.FunctionType, types.MethodType)

    class Saver(pickle.Pickler):
        def persistent_id(self, obj: object) -> int | None:
            if isinstance(obj, opaque) or obj is k.cfg:
                shared[id(obj)] = obj
                return id(obj)
            return None

    class Loader(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> object:
            return shared[pid]

    out = io.BytesIO()
    Saver(out, protocol=pickle.HIGHEST_PROTOCOL).dump(k)
    data = out.getvalue()
    n = 200
    t = time.perf_counter()
    for _ in range(n):
        Loader(io.BytesIO(data)).load()
    return (time.perf_counter() - t) / n


if __name__ == "__main__":
    sys.exit(main())
