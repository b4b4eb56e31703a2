"""The verdict table of ``mmusim run``: one row per scenario run, then a summary line.

::

    scenario               verdict  faults         steps   time
    ---------------------  -------  -------------  -----  -----
    test_guard_page_front  pass     1: t reason 2     88  17 ms
    wrong_expectation      fail     1: t reason 2     65   7 ms
        expect.faults[0] (line 19): reason is 2, expected 0 [t reason 2 on CPU 0 (...)]
    1 passed, 1 failed

Under each scenario that did not pass come its reasons (``ScenarioResult.failures``); with
``show_log``, under every scenario its console (Zephyr's fatal error log). The time column is the
only one that changes from run to run; ``show_time=False`` leaves it out, so the same runs print
the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmusim.scenario import ScenarioResult, fault_summary

__all__ = ["render_table"]


def render_table(
    results: Sequence[ScenarioResult], *, show_log: bool = False, show_time: bool = True
) -> str:
    """The report: a row per scenario, the reasons under each one that did not pass (and its
    console with ``show_log``), a summary. ``show_time=False`` leaves out the only column that
    changes from run to run."""
    head: tuple[str, ...] = ("scenario", "verdict", "faults", "steps", "time")
    rows: list[tuple[str, ...]] = [
        (r.name, r.verdict, fault_summary(r.faults), str(r.steps), f"{r.time_ms:.0f} ms")
        for r in results
    ]
    right: tuple[bool, ...] = (False, False, False, True, True)
    if not show_time:
        head, right = head[:-1], right[:-1]
        rows = [row[:-1] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(head), line(["-" * w for w in widths])]
    for r, row in zip(results, rows, strict=True):
        out.append(line(row))
        for failure in r.failures:
            out.append(f"    {failure}")
        if show_log:
            out.extend(f"    | {line}" for line in r.log)
    passed = sum(r.verdict == "pass" for r in results)
    failed = sum(r.verdict == "fail" for r in results)
    errors = sum(r.verdict == "error" for r in results)
    summary = f"{passed} passed, {failed} failed"
    if errors:
        summary += f", {errors} error{'s' if errors != 1 else ''}"
    out.append(summary)
    return "\n".join(out) + "\n"
