"""Counterexample traces: the JSON trace file, replay, and a Python snippet (the text report is
``mmusim.render.trace``).

A trace names each step by what it models -- CPU, thread, routine and label -- never by its position
alone, so a stored trace still replays after unrelated code changes, and ``replay`` refuses, saying
which step no longer fits, when the scenario or the kernel changed in a way that matters
(a schedule stored by position breaks when a scheduling point is removed, as Shuttle's did:
awslabs/shuttle#155).
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmusim._text import TooLarge, not_utf8, read_text
from mmusim.explore.model import Action, Model, StepInfo
from mmusim.explore.search import Result, Violation
from mmusim.kernel import Kernel
from mmusim.kernel.invariants import INVARIANT_NAMES

FORMAT = "mmusim-trace/1"
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


@functools.cache
def code_fingerprint(packages: tuple[str, ...] = ("kernel",)) -> str:
    """A hash of the source of ``mmusim``'s ``packages`` (default: the kernel's, recorded in
    traces and reported, not enforced, on replay; checkpoints hash more). Computed once a run."""
    h = hashlib.sha256()
    for package in packages:
        for path in sorted((_PACKAGE_DIR / package).glob("*.py")):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def replay_steps(
    model: Model,
    steps: list[StepInfo] | tuple[StepInfo, ...],
    *,
    k: Kernel | None = None,
    before: Callable[[Kernel, Action, StepInfo], object] | None = None,
    after: Callable[[Kernel], object] | None = None,
) -> Kernel:
    """Reset the model (or start from ``k``, a kernel at the exploration root) and perform
    ``steps``, checking each one's label against the kernel's; ``before(k, action, info)`` and
    ``after(k)`` are called around each step (``mmusim view`` records with them). Raises
    ``ReplayMismatch`` naming the first step that no longer fits, and ``KernelAssert`` if a step
    makes the kernel assert (the last step of a "kernel assert" trace does)."""
    if k is None:
        k = model.reset()
    for i, s in enumerate(steps, 1):
        a: Action = (s.cpu, s.kind)
        if a not in model.actions(k):
            raise ReplayMismatch(i, s, None)
        now = model.info(k, a)
        if now.key != s.key:
            raise ReplayMismatch(i, s, now)
        if before is not None:
            before(k, a, now)
        model.step(k, a)
        if after is not None:
            after(k)
    return k


class ReplayMismatch(Exception):
    def __init__(self, index: int, expected: StepInfo, found: StepInfo | None) -> None:
        where = f"CPU {expected.cpu} {expected.kind} '{expected.routine}: {expected.label}'"
        got = (
            "that action is not enabled"
            if found is None
            else f"the kernel is at '{found.routine}: {found.label}'"
        )
        super().__init__(
            f"step {index} of the trace expects {where}, but {got}: the scenario or the kernel "
            "changed since the trace was recorded"
        )


def to_json(model: Model, result: Result) -> dict[str, Any]:
    v = result.violation
    st = result.stats
    scn = model.scenario
    return {
        "format": FORMAT,
        "scenario": str(Path(scn.path).resolve()),  # replay finds it from any directory
        "scenario_sha256": hashlib.sha256(Path(scn.path).read_bytes()).hexdigest(),
        "config": list(model.extra_config),
        "ignore": list(model.ignore),
        "model": code_fingerprint(),
        "root_prefix": [list(a) for a in model.prefix],
        "verdict": result.verdict,
        "stats": {
            "states": st.states,
            "transitions": st.transitions,
            "executions": st.executions,
            "max_depth": st.max_depth,
            "seconds": round(st.seconds, 3),
        },
        "violation": None
        if v is None
        else {"kind": v.kind, "messages": list(v.messages), "preemptions": v.preemptions},
        "steps": []
        if v is None
        else [
            {
                "cpu": s.cpu,
                "kind": s.kind,
                "thread": s.thread,
                "routine": s.routine,
                "label": s.label,
            }
            for s in v.steps
        ],
    }


class TraceError(ValueError):
    """A trace file that cannot be read or does not have the form ``to_json`` writes; the message
    names the file, the field (``steps[3].cpu``) and what is wrong."""


VIOLATION_KINDS = (
    "invariant", "invariant at the end", "kernel assert", "deadlock", "step bound",
)  # fmt: skip
STEP_KINDS = ("step", "irq", "evict", "tick")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    names = {int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "an object"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _check(where: str, value: Any, kind: type, what: str) -> Any:
    """``value`` if it is a ``kind`` (a bool is not an integer); else a ``TraceError`` message."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TraceError(f"{where}: expected {what}, got {_type_name(value)}")
    return value


def _field(obj: dict[str, Any], where: str, name: str, kind: type, what: str,
           default: Any = ...) -> Any:  # fmt: skip
    path = f"{where}.{name}" if where else name
    if name not in obj:
        if default is not ...:
            return default
        raise TraceError(f"{path}: missing (expected {what})")
    return _check(path, obj[name], kind, what)


def _strings(obj: dict[str, Any], name: str) -> list[str]:
    items = _field(obj, "", name, list, "a list of strings", [])
    for i, x in enumerate(items):
        _check(f"{name}[{i}]", x, str, "a string")
    return list(items)


def validate_trace(data: Any) -> list[StepInfo]:
    """Check that ``data`` has the form of a trace (``to_json``); return its steps. Raises
    ``TraceError`` naming the first field that is wrong (without the file name)."""
    _check("the trace", data, dict, "an object")
    if data.get("format") != FORMAT:
        raise TraceError(f"format: not an mmusim trace ({FORMAT!r} expected)")
    _field(data, "", "scenario", str, "a string (the scenario file)")
    _field(data, "", "scenario_sha256", str, "a string (a sha256 hex digest)", None)
    _field(data, "", "model", str, "a string", None)
    _strings(data, "config")
    for i, name in enumerate(_strings(data, "ignore")):
        if name not in INVARIANT_NAMES:
            raise TraceError(f"ignore[{i}]: {name!r} is not an invariant; allowed: "
                             f"{', '.join(INVARIANT_NAMES)}")  # fmt: skip
    v = data.get("violation")
    if v is not None:
        _check("violation", v, dict, "an object or null")
        kind = _field(v, "violation", "kind", str, "a string")
        if kind not in VIOLATION_KINDS:
            raise TraceError(f"violation.kind: {kind!r} is not one of {', '.join(VIOLATION_KINDS)}")
        for i, m in enumerate(_field(v, "violation", "messages", list, "a list of strings", [])):
            _check(f"violation.messages[{i}]", m, str, "a string")
        pre = _field(v, "violation", "preemptions", int, "an integer", 0)
        if pre < 0:
            raise TraceError(f"violation.preemptions: {pre} is negative (an integer >= 0)")
    steps = []
    for i, s in enumerate(_field(data, "", "steps", list, "a list of steps")):
        where = f"steps[{i}]"
        _check(where, s, dict, "an object")
        cpu = _field(s, where, "cpu", int, "an integer")
        kind = _field(s, where, "kind", str, "a string")
        if kind not in STEP_KINDS:
            raise TraceError(f"{where}.kind: {kind!r} is not one of {', '.join(STEP_KINDS)}")
        if cpu < -1 or (cpu == -1) != (kind == "tick"):
            allowed = "-1 for a tick" if kind == "tick" else "a CPU number >= 0"
            raise TraceError(f"{where}.cpu: {cpu} is out of range ({allowed})")
        thread, routine, label = (_field(s, where, n, str, "a string")
                                  for n in ("thread", "routine", "label"))  # fmt: skip
        steps.append(StepInfo(cpu, kind, thread, routine, label))
    return steps


MAX_TRACE_BYTES = 1 << 30
"""A trace file larger than this (1 GiB; a trace to the default max_steps of 2,000,000 steps has
about 400 MB) is refused unread."""


def load_trace(path: str | Path) -> tuple[dict[str, Any], list[StepInfo]]:
    """Read and check a trace file; raises ``TraceError`` (a ``ValueError``) whose message starts
    with the file name: ``t.json: steps[3].cpu: expected an integer, got a string``."""
    try:
        text = read_text(path, MAX_TRACE_BYTES)
    except TooLarge as e:
        raise TraceError(f"{path}: cannot read: {e}") from None
    except OSError as e:
        raise TraceError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        line, reason = not_utf8(e)
        raise TraceError(f"{path}:{line}: not a trace: {reason}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TraceError(f"{path}: not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise TraceError(f"{path}: not a trace: the JSON is nested too deeply") from None
    except ValueError:  # an integer longer than int() reads: not a JSONDecodeError
        limit = sys.get_int_max_str_digits()
        raise TraceError(f"{path}: not a trace: a number of more than {limit} digits") from None
    try:
        steps = validate_trace(data)
    except TraceError as e:
        raise TraceError(f"{path}: {e}") from None
    return data, steps


def snippet(model: Model, v: Violation) -> str:
    """A Python snippet that replays the counterexample, for a regression test."""
    rows = ",\n".join(f"    ({s.cpu}, {s.kind!r}, {s.routine + ': ' + s.label!r})" for s in v.steps)
    cfg = f", extra_config={list(model.extra_config)!r}" if model.extra_config else ""
    cfg += f", ignore={list(model.ignore)!r}" if model.ignore else ""
    if v.kind == "kernel assert":  # the last step raises: the kernel asserts
        rows = rows.replace("\n    (", "\n        (").replace("    (", "        (", 1)
        return (
            "import pytest\n\n"
            "from mmusim.explore import Model\n"
            "from mmusim.explore.trace import replay_labels\n"
            "from mmusim.kernel import KernelAssert\n\n"
            f"model = Model({str(model.scenario.path)!r}{cfg})\n"
            "with pytest.raises(KernelAssert):\n"
            f"    replay_labels(model, [\n{rows},\n    ])\n"
        )
    check = "end_violations" if v.kind == "invariant at the end" else "violations"
    return (
        "from mmusim.explore import Model\n"
        "from mmusim.explore.trace import replay_labels\n\n"
        f"model = Model({str(model.scenario.path)!r}{cfg})\n"
        f"k = replay_labels(model, [\n{rows},\n])\n"
        f"assert any({v.messages[0].split(':')[0]!r} in m for m in model.{check}(k))\n"
    )


def replay_labels(model: Model, rows: list[tuple[int, str, str]]) -> Kernel:
    """Replay ``(cpu, kind, 'routine: label')`` rows (the snippet's form), checking each label."""
    steps = []
    for cpu, kind, text in rows:
        routine, _, label = text.partition(": ")
        thread = "-"
        steps.append(StepInfo(cpu, kind, thread, routine, label))
    return replay_steps(model, steps)
