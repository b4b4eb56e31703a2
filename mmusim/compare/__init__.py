"""``mmusim compare``: the same attacks on every stack strategy, side by side (docs/compare.md).

Public API:

* ``compare(policies=None, board="qemu_x86_64", *, timing=True)`` -- the whole matrix as data:
  ``{"board", "stack_size", "attacks": [{"name", "what"}], "policies": [{"name", "system",
  "what", "attacks": {ATTACK: cell}, "costs": {...}}]}``;
* ``run_cell(policy, attack, board)`` -- one cell (``mmusim.compare.attacks``);
* ``policy_costs(name, size)`` -- one stack's costs (``mmusim.compare.costs``);
* ``POLICY_NAMES``, ``ATTACKS`` -- the stable names, in the matrix's order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mmusim.compare.attacks import (
    ATTACKS,
    POLICIES,
    POLICY_NAMES,
    STACK_SIZE,
    Attack,
    PolicyInfo,
    attack_ops,
    policy_unavailable,
    run_cell,
)
from mmusim.compare.costs import policy_costs
from mmusim.kernel import KernelAssert

__all__ = [
    "ATTACKS",
    "POLICIES",
    "POLICY_NAMES",
    "STACK_SIZE",
    "Attack",
    "PolicyInfo",
    "attack_ops",
    "compare",
    "policy_costs",
    "run_cell",
]

GROWTH_KEYS = ("splits", "copies", "bytes_copied")


def _cell_or_error(policy: str, attack: str, board: str) -> dict[str, Any]:
    """``run_cell``; a kernel assertion in the run is the cell's verdict ("error"), not a crash."""
    try:
        return run_cell(policy, attack, board)
    except KernelAssert as e:
        return {"caught": False, "attributed_to": None, "attribution_right": None,
                "reason": None, "recovered": False, "label": "error",
                "outcome": f"error: the run stopped on a kernel assertion: {e}"}  # fmt: skip


def compare(
    policies: Sequence[str] | None = None,
    board: str = "qemu_x86_64",
    *,
    timing: bool = True,
    on_policy: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every attack of ``ATTACKS`` on each of ``policies`` (default: all, in ``POLICY_NAMES``
    order) on ``board``, with each policy's costs. ``timing=False`` leaves out the only
    wall-clock figure (``cycles_per_second``: None), so the same call gives the same data.
    Growable stacks (Go) add their ``splits``, ``copies`` and ``bytes_copied`` over the whole
    battery to their costs. ``on_policy(name)`` is called as each policy starts."""
    names = list(POLICY_NAMES if policies is None else policies)
    unknown = [n for n in names if n not in POLICY_NAMES]
    if unknown:
        raise ValueError(f"unknown policy {unknown[0]!r} (known: {', '.join(POLICY_NAMES)})")
    rows = []
    for info in POLICIES:
        if info.name not in names:
            continue
        if on_policy is not None:
            on_policy(info.name)
        row: dict[str, Any] = {"name": info.name, "system": info.system, "what": info.what}
        why = policy_unavailable(info, board)
        if why:
            row.update(unavailable=why, attacks={}, costs={})
            rows.append(row)
            continue
        cells = {a.name: _cell_or_error(info.name, a.name, board) for a in ATTACKS}
        costs = policy_costs(info.name, STACK_SIZE, cycles=200 if timing else 1, board=board)
        if not timing:
            costs["cycles_per_second"] = None
        if info.family == "go":
            for key in GROWTH_KEYS:
                costs[key] = sum(int(c.get(key) or 0) for c in cells.values())
        row.update(attacks=cells, costs=costs)
        rows.append(row)
    return {
        "board": board,
        "stack_size": STACK_SIZE,
        "attacks": [{"name": a.name, "what": a.what} for a in ATTACKS],
        "policies": rows,
    }
