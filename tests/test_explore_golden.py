"""The explorer visits the states it visited when the golden file was recorded (issue 15).

``tests/data/explore_golden.json`` holds what the depth-first search found on every bundled race
scenario -- as it is, with the what-if fix, and with the fix plus each mutant: the verdict, the
distinct states, the transitions, whether the search was complete, and the violation with its
schedule (the file says when and by which search it was recorded). Today's ``explore`` must give
the same, case for case (about a minute in all;
five cases are complete searches of 6,000-7,500 states). ``python tests/test_explore_golden.py``
records the file again, for a change that is meant to change what the search visits.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from mmusim.explore import Model, explore
from mmusim.mutants import MUTANTS, mutant_config_lines
from mmusim.scenario import BUNDLED_DIR

GOLDEN = Path(__file__).resolve().parent / "data" / "explore_golden.json"
FIX = ("CONFIG_SIM_CLEANUP_WAITS_FOR_SWITCH=y",)
RACES = ("race_self_abort", "race_ipi_abort", "race_abort_blocked", "race_stale_tlb", "race_reuse")


def cases() -> list[tuple[str, tuple[str, ...], int | None]]:
    out = []
    for name in RACES:
        bound = 2 if name == "race_reuse" else None
        out.append((f"{name}/", (), bound))
        out.append((f"{name}/fix", FIX, bound))
        out += [(f"{name}/{m}", FIX + tuple(mutant_config_lines(m)), bound) for m in MUTANTS]
    return out


def result_of(name: str, extra: tuple[str, ...], bound: int | None) -> list[Any]:
    race = name.split("/")[0]
    r = explore(Model(BUNDLED_DIR / "explore" / f"{race}.toml", extra), max_preemptions=bound)
    v = r.violation
    return [r.verdict, r.stats.states, r.stats.transitions, r.complete,
            None if v is None else [v.kind, list(v.messages), [list(a) for a in v.schedule]]]  # fmt: skip


@pytest.mark.parametrize(("name", "extra", "bound"), cases(), ids=[c[0] for c in cases()])
def test_the_search_visits_what_it_visited_before(
    name: str, extra: tuple[str, ...], bound: int | None
) -> None:
    golden = json.loads(GOLDEN.read_text())["cases"][name]
    assert result_of(name, extra, bound) == golden


if __name__ == "__main__":
    doc = json.loads(GOLDEN.read_text())
    doc["cases"] = {name: result_of(name, extra, bound) for name, extra, bound in cases()}
    GOLDEN.write_text(json.dumps(doc, indent=0, sort_keys=True))
    print(f"wrote {GOLDEN}", file=sys.stderr)
