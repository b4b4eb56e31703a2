"""Counterexample traces: the JSON trace file, replay, and a Python snippet (the text report is
``mmusim.render.trace``).

A trace names each step by what it models -- CPU, thread, routine and label -- never by its position
alone, so a stored trace still replays after unrelated code changes, and ``replay`` refuses, saying
which step no longer fits, when the scenario or the kernel changed in a way that matters
(reference exploration.md, section 2, lesson 1).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mmusim.explore.model import Action, Model, StepInfo
from mmusim.explore.search import Result, Violation
from mmusim.kernel import Kernel

FORMAT = "mmusim-trace/1"
_KERNEL_DIR = Path(__file__).resolve().parent.parent / "kernel"


def code_fingerprint() -> str:
    """A hash of the kernel's source: recorded in traces, reported (not enforced) on replay."""
    h = hashlib.sha256()
    for path in sorted(_KERNEL_DIR.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def replay_steps(model: Model, steps: list[StepInfo] | tuple[StepInfo, ...]) -> Kernel:
    """Reset the model and perform ``steps``, checking each one's label against the kernel's.
    Raises ``ReplayMismatch`` naming the first step that no longer fits, and ``KernelAssert`` if
    a step makes the kernel assert (the last step of a "kernel assert" trace does)."""
    k = model.reset()
    for i, s in enumerate(steps, 1):
        a: Action = (s.cpu, s.kind)
        if a not in model.actions(k):
            raise ReplayMismatch(i, s, None)
        now = model.info(k, a)
        if now.key != s.key:
            raise ReplayMismatch(i, s, now)
        model.step(k, a)
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
        "scenario": str(scn.path),
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


def load_trace(path: str | Path) -> tuple[dict[str, Any], list[StepInfo]]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not an mmusim trace (format {FORMAT!r} expected)")
    steps = [
        StepInfo(s["cpu"], s["kind"], s["thread"], s["routine"], s["label"]) for s in data["steps"]
    ]
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
    return (
        "from mmusim.explore import Model\n"
        "from mmusim.explore.trace import replay_labels\n\n"
        f"model = Model({str(model.scenario.path)!r}{cfg})\n"
        f"k = replay_labels(model, [\n{rows},\n])\n"
        f"assert any({v.messages[0].split(':')[0]!r} in m for m in model.violations(k))\n"
    )


def replay_labels(model: Model, rows: list[tuple[int, str, str]]) -> Kernel:
    """Replay ``(cpu, kind, 'routine: label')`` rows (the snippet's form), checking each label."""
    steps = []
    for cpu, kind, text in rows:
        routine, _, label = text.partition(": ")
        thread = "-"
        steps.append(StepInfo(cpu, kind, thread, routine, label))
    return replay_steps(model, steps)
