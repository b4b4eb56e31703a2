"""Progress on long runs: a live status line on the terminal, in the spirit of TLC's progress lines.

``mmusim run`` over many scenarios, ``explore`` (the search, then the search for the minimal trace)
and ``explore --pct`` show how far they are: states, transitions, rate, depth, elapsed time. The
line is drawn by tqdm (the optional extra ``mmusim[progress]``) on standard error, rewritten in
place at most ten times a second, and erased when the command ends, so the report is what stays.

It is shown only when standard output and standard error are both terminals, never with
``--json``, never with ``--no-progress``, and not at all when tqdm is not installed: piped output,
files and the test suite's captured output are byte for byte what they would be without it.
Wall-clock time appears only here, never in the model or in the output a run is judged by.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TextIO

from mmusim._progress import StatusLine, available, isatty

__all__ = [
    "ExploreProgress",
    "add_progress_option",
    "progress_wanted",
    "scenario_progress",
    "search_progress",
]


class _SearchStats(Protocol):  # mmusim.explore.search.Stats, without importing the explorer
    states: int
    transitions: int
    executions: int
    depth: int
    max_depth: int
    queue: int


def add_progress_option(p: argparse.ArgumentParser) -> None:
    """``--no-progress``, for the commands that show progress."""
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress line (it is shown only when stdout and stderr are terminals, never "
        "with --json; needs the extra mmusim[progress])",
    )


def progress_wanted(as_json: bool, no_progress: bool, out: Any = None, err: Any = None) -> bool:
    """Whether to show progress: not asked away, not JSON, stdout and stderr both terminals, and
    tqdm installed (``pip install 'mmusim[progress]'``)."""
    if as_json or no_progress:
        return False
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    return isatty(out) and isatty(err) and available()


class ExploreProgress:
    """The status line of one search phase; ``update(stats)`` is called for every new state and
    redraws at most every ``REFRESH`` seconds. ``total`` (PCT: the number of runs) draws a bar."""

    def __init__(self, phase: str, stream: TextIO, total: int | None = None) -> None:
        self.phase = phase
        self.total = total
        self.line = StatusLine(stream, f"{phase}: starting", total=total)

    def update(self, stats: _SearchStats) -> None:
        if self.line.due():
            text = f"{self.phase}: {self.text(stats, self.line.elapsed())}"
            self.line.show(text, stats.executions if self.total else None)

    def text(self, stats: _SearchStats, secs: float) -> str:
        """The line without the phase and the elapsed time, e.g. ``1,234 states, 2,345
        transitions, 800 executions, depth 40 (max 121), 690 states/s``."""
        if self.total:  # PCT: runs, not distinct states
            return (f"run {stats.executions:,}/{self.total:,}, {stats.transitions:,} transitions, "
                    f"max depth {stats.max_depth}, {stats.transitions / secs:,.0f} transitions/s")  # fmt: skip
        parts = [f"{stats.states:,} states", f"{stats.transitions:,} transitions",
                 f"{stats.executions:,} executions", f"depth {stats.depth} (max {stats.max_depth})"]  # fmt: skip
        if stats.queue:
            parts.append(f"{stats.queue:,} on queue")
        parts.append(f"{stats.states / secs:,.0f} states/s")
        return ", ".join(parts)

    def close(self) -> None:
        self.line.close()


@contextmanager
def search_progress(
    enabled: bool, phase: str, total: int | None = None
) -> Iterator[Callable[[Any], None] | None]:
    """A status line for one search phase, erased on leaving: yields the search's
    ``on_progress`` callback (None when not ``enabled``)."""
    if not enabled:
        yield None
        return
    line = ExploreProgress(phase, sys.stderr, total)
    try:
        yield line.update
    finally:
        line.close()


@contextmanager
def scenario_progress(enabled: bool, total: int) -> Iterator[Any]:
    """``mmusim run``'s bar over its scenarios; yields ``show(name)``, called before each one."""
    if not enabled:
        yield lambda name: None
        return
    line = StatusLine(sys.stderr, f"run  0/{total}", total=total)
    done = -1

    def show(name: str) -> None:
        nonlocal done
        done += 1
        line.show(f"run  {done}/{total}  {name}", done)

    try:
        yield show
    finally:
        line.close()
