"""Running a scenario: boot the kernel it configures, run it with the invariants checked after every
step, then hold the outcome against ``[expect]``.

The verdict is ``pass`` (every expectation holds), ``fail`` (one does not; or the kernel asserted
or an invariant broke when the scenario did not say ``expect.error``), or ``error`` (mmusim itself
raised something that is neither a kernel assertion nor an invariant violation: a bug to report).

The run is deterministic: the same file (and seed) gives the same log, faults, facts and step
count on every machine. The wall-clock time is measured for the report only; the model never sees
it.

Each fault is also placed (``in``): in the faulting thread's ``front_guard`` / ``rear_guard``, its
``stack`` buffer or ``stack_reserved`` area (privilege stack, reserved page), the ``legacy_guard``
page of an unmapped X86_STACK_PROTECTION stack, a k_mem_map region ``mapping.NAME`` or its
``mapping.NAME.guard_before`` / ``.guard_after``, or ``other``. The place is computed just after
the faulting step, before the abort that follows clears the thread's mapping.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from mmusim.kernel import Kernel, KernelAssert
from mmusim.kernel.geometry import PAGE
from mmusim.kernel.invariants import InvariantViolation, assert_invariants
from mmusim.scenario.document import display_path
from mmusim.scenario.load import (
    Expr,
    ExprError,
    FactExpect,
    FaultExpect,
    Scenario,
    load_scenario,
)

__all__ = ["ScenarioResult", "run_scenario", "fault_summary"]


class _Default:
    def __repr__(self) -> str:
        return "<the scenario's seed>"


SCENARIO_SEED: Any = _Default()
"""``run_scenario(seed=...)`` default: use the seed the scenario file gives (or none)."""


@attrs.frozen
class ScenarioResult:
    """The outcome of one run."""

    name: str
    path: str
    board: str
    seed: int | None
    verdict: str  # "pass", "fail" or "error"
    failures: tuple[str, ...]
    faults: tuple[dict[str, Any], ...]  # Kernel.faults entries, plus "in" (where CR2 was)
    log: tuple[str, ...]
    facts: dict[str, list[Any]]
    steps: int
    time_ms: float  # wall clock, for the report only
    error: str | None = None  # the assertion / invariant violation that stopped the run

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "board": self.board,
            "seed": self.seed,
            "verdict": self.verdict,
            "failures": list(self.failures),
            "faults": [dict(f) for f in self.faults],
            "error": self.error,
            "facts": {k: list(v) for k, v in self.facts.items()},
            "log": list(self.log),
            "steps": self.steps,
            "time_ms": round(self.time_ms, 3),
        }


def fault_summary(faults: Sequence[dict[str, Any]], limit: int = 2) -> str:
    """``0``, ``1: t reason 2``, ``3: a reason 0, b reason 0, ...``."""
    if not faults:
        return "0"
    shown = ", ".join(f"{f['thread']} reason {f['reason']}" for f in faults[:limit])
    more = ", ..." if len(faults) > limit else ""
    return f"{len(faults)}: {shown}{more}"


def run_scenario(scenario: str | Path | Scenario, *, seed: Any = SCENARIO_SEED) -> ScenarioResult:
    """Load (unless given a ``Scenario``) and run a scenario. ``seed``: an int for a seeded random
    schedule, None for round robin; by default the scenario's own ``seed`` (or round robin).
    Raises ``ScenarioError`` for a bad file; everything that happens in the run is in the result."""
    scn = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    use_seed: int | None = scn.seed if seed is SCENARIO_SEED else seed
    placed: list[dict[str, Any]] = []

    def check(k: Kernel) -> None:
        _place_new_faults(k, placed)
        assert_invariants(k)

    error: str | None = None
    internal: str | None = None
    k: Kernel | None = None
    start = time.perf_counter()
    try:
        k = scn.boot(check)
        k.run(seed=use_seed, max_steps=scn.max_steps)
    except InvariantViolation as e:
        error = f"invariant violated {e}"
    except KernelAssert as e:
        error = f"kernel assertion: {e}"
    except Exception as e:  # a bug in mmusim, not an outcome of the scenario
        internal = f"internal error: {type(e).__name__}: {e}"
    elapsed = (time.perf_counter() - start) * 1000.0
    if k is not None:
        _place_new_faults(k, placed)
    facts = {name: list(v) for name, v in k.facts.items()} if k is not None else {}
    log = tuple(k.log) if k is not None else ()
    failures = [] if internal is None else [internal]
    if internal is None:
        failures = _judge(scn, error, placed, facts, k)
    verdict = "error" if internal is not None else ("fail" if failures else "pass")
    return ScenarioResult(
        name=scn.name,
        path=display_path(scn.path),
        board=scn.board,
        seed=use_seed,
        verdict=verdict,
        failures=tuple(failures),
        faults=tuple(placed),
        log=log,
        facts=facts,
        steps=k.steps if k is not None else 0,
        time_ms=elapsed,
        error=error or internal,
    )


# -- where a fault was --------------------------------------------------------------------------


def _place_new_faults(k: Kernel, placed: list[dict[str, Any]]) -> None:
    while len(placed) < len(k.faults):
        f = dict(k.faults[len(placed)])
        f["in"] = _place(k, f.get("faulting", f["thread"]), f["cr2"])  # whose access faulted
        placed.append(f)


def _place(k: Kernel, thread: str, addr: int | None) -> str:
    if addr is None:
        return "other"
    t = k.threads.get(thread)
    if t is not None and t.stack is not None:
        m = t.stack_info.mapped
        if m.addr is not None:
            if m.addr - PAGE <= addr < m.addr:
                return "front_guard"
            if m.addr + m.sz <= addr < m.addr + m.sz + PAGE:
                return "rear_guard"
            lo, hi = m.addr, m.addr + m.sz
        else:
            lo, hi = t.stack.addr, t.stack.addr + t.stack.obj_len
            if k.geometry.legacy_guard and not k.mapped_stacks and lo <= addr < lo + PAGE:
                return "legacy_guard"
        if t.stack_info.start <= addr < t.stack_info.start + t.stack_info.size:
            return "stack"
        if lo <= addr < hi:
            return "stack_reserved"
    for name, r in k.mappings.items():
        if r.addr <= addr < r.addr + r.size:
            return f"mapping.{name}"
        for lo, hi in r.guard_ranges():
            if lo <= addr < hi:
                return f"mapping.{name}.guard_{'before' if hi <= r.addr else 'after'}"
    return "other"


# -- judging ------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:#x}" if abs(v) >= 0x10000 else str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return repr(v)


def _fault_text(f: dict[str, Any]) -> str:
    cr2 = _fmt(f["cr2"])
    return (
        f"{f['thread']} reason {f['reason']} on CPU {f['cpu']} (vector {f['vector']}, "
        f"cr2 {cr2} in {f['in']}, error code {f['error_code']:#x})"
    )


def _judge(
    scn: Scenario,
    error: str | None,
    faults: list[dict[str, Any]],
    facts: dict[str, list[Any]],
    k: Kernel | None,
) -> list[str]:
    ex = scn.expect
    out: list[str] = []
    if ex.error is not None:
        where = f"expect.error (line {ex.error_line})"
        if error is None:
            out.append(
                f"{where}: expected the run to stop on an error containing {ex.error!r}, "
                "but it completed"
            )
        elif ex.error not in error:
            out.append(f"{where}: expected an error containing {ex.error!r}, got: {error}")
    elif error is not None:
        out.append(f"run stopped: {error}")
    out += _judge_faults(ex.faults, ex.faults_line, faults, facts)
    for fe in ex.facts:
        problem = _judge_fact(fe, facts)
        if problem:
            out.append(f"{fe.key} (line {fe.line}): {problem}")
    for te in ex.threads:
        t = k.threads.get(te.thread) if k is not None else None
        if t is None:
            out.append(f"{te.key} (line {te.line}): thread {te.thread!r} was never created")
            continue
        if te.exit_reason is not None and t.exit_reason != te.exit_reason:
            out.append(
                f"{te.key} (line {te.line}): {te.thread} exit_reason is {t.exit_reason!r}, "
                f"expected {te.exit_reason!r}"
            )
        if te.dead is not None and t.dead != te.dead:
            out.append(
                f"{te.key} (line {te.line}): {te.thread} is {'' if t.dead else 'not '}dead, "
                f"expected {'' if te.dead else 'not '}dead"
            )
        if te.state is not None:
            assert k is not None
            state = k.fact(f"{te.thread}.state")
            if state != te.state:
                out.append(
                    f"{te.key} (line {te.line}): {te.thread} state is {state!r}, "
                    f"expected {te.state!r}"
                )
    log = "\n".join(k.log) if k is not None else ""
    for line, text in ex.log_contains:
        if text not in log:
            out.append(f"expect.log_contains (line {line}): the log has no {text!r}")
    for line, text in ex.log_not_contains:
        if text in log:
            out.append(f"expect.log_not_contains (line {line}): the log has {text!r}")
    return out


def _judge_faults(
    expected: Sequence[FaultExpect],
    line: int,
    faults: list[dict[str, Any]],
    facts: dict[str, list[Any]],
) -> list[str]:
    out: list[str] = []
    if len(expected) != len(faults):
        got = "; ".join(_fault_text(f) for f in faults) or "none"
        where = f"expect.faults (line {line})" if line else "expect.faults (absent: none expected)"
        return [f"{where}: expected {len(expected)} fault(s), got {len(faults)}: {got}"]
    for fe, f in zip(expected, faults, strict=True):
        wrong = []
        for key, want in (
            ("thread", fe.thread),
            ("reason", fe.reason),
            ("cpu", fe.cpu),
            ("vector", fe.vector),
            ("error_code", fe.error_code),
            ("in", fe.where),
        ):
            if want is not None and f[key] != want:
                wrong.append(f"{key} is {_fmt(f[key])}, expected {_fmt(want)}")
        if fe.cr2 is not None:
            want_cr2: Any = fe.cr2
            if isinstance(fe.cr2, Expr):
                try:
                    want_cr2 = fe.cr2.evaluate(facts)
                except ExprError as e:
                    wrong.append(f"cr2 {fe.cr2.text!r}: cannot evaluate: {e}")
                    want_cr2 = None
            if want_cr2 is not None and f["cr2"] != want_cr2:
                wrong.append(f"cr2 is {_fmt(f['cr2'])}, expected {_fmt(want_cr2)}")
        if wrong:
            out.append(f"{fe.key} (line {fe.line}): {'; '.join(wrong)} [{_fault_text(f)}]")
    return out


def _judge_fact(fe: FactExpect, facts: dict[str, list[Any]]) -> str | None:
    if fe.expr is not None:
        try:
            value = fe.expr.evaluate(facts)
        except ExprError as e:
            return f"{fe.expr.text!r}: cannot evaluate: {e}"
        if not value:
            shown = ", ".join(
                f"{n} = {_fmt(facts[n][-1] if len(facts[n]) == 1 else facts[n])}"
                for n in sorted(fe.expr.names)
                if n in facts
            )
            return f"{fe.expr.text!r} is false ({shown})"
        return None
    assert fe.fact is not None
    values = facts.get(fe.fact, [])
    name = fe.fact
    problems = []
    for check, want in fe.checks:
        if check == "count":
            if len(values) != want:
                problems.append(f"recorded {len(values)} time(s), expected {want}")
            continue
        if not values:
            problems.append(f"{check}: never recorded")
            continue
        if check == "equals" and values[-1] != want:
            problems.append(f"is {_fmt(values[-1])}, expected {_fmt(want)}")
        elif check == "not_equals" and values[-1] == want:
            problems.append(f"is {_fmt(values[-1])}, expected anything else")
        elif check == "all_equal" and any(v != values[0] for v in values):
            problems.append(f"values are not all equal: {_fmt(values)}")
        elif check == "all_distinct" and len(set(map(repr, values))) != len(values):
            problems.append(f"values are not all distinct: {_fmt(values)}")
        elif check == "none_null" and any(v is None for v in values):
            problems.append(f"has null values: {_fmt(values)}")
        elif check in ("increasing", "decreasing"):
            pairs = list(zip(values, values[1:], strict=False))
            if any(a is None or b is None for a, b in pairs) or not all(
                (a < b) if check == "increasing" else (a > b) for a, b in pairs
            ):
                problems.append(f"values are not strictly {check}: {_fmt(values)}")
    return f"fact {name!r}: {'; '.join(problems)}" if problems else None
