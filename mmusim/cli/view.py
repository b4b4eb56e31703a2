"""``mmusim view SCENARIO|TRACE [--out FILE.html]``: a run to step through in a web browser.

A scenario file runs as ``mmusim run`` runs it (its schedule); a trace of ``mmusim explore
--trace`` replays as ``mmusim replay`` replays it (each step's label checked), then the CPU its
violation names runs on alone for a few steps. Either way every step is recorded
(``mmusim.render.view``) and written as one self-contained HTML page (``mmusim.render.view_html``):
no network, works from ``file://`` (docs/view.md).

The input is a trace if its name ends in ``.json`` or its first character is ``{``; anything else
is read as a scenario. A kernel assertion, a fault or an invariant violation in the run is what the
page shows, not an error: exit code 0 once the page is written. Bad input -- no such file, a
trace that is not one or no longer replays, a scenario with an error, an output that cannot be
written -- is one line and exit code 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmusim.cli.common import COMMAND_HELP, fail, one_line, parse_step_count
from mmusim.cli.explore import check_writable, replay_scenario
from mmusim.explore.trace import ReplayMismatch, TraceError, load_trace
from mmusim.kconfig import ConfigError
from mmusim.kernel import KernelAssert
from mmusim.render.view import DEFAULT_MAX_STEPS, Recording, record_scenario, record_trace
from mmusim.render.view_html import render_html
from mmusim.scenario import ScenarioError
from mmusim.scenario.document import display_path

__all__ = ["add_view_command", "cmd_view"]


def add_view_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``view`` subcommand."""
    p = subparsers.add_parser(
        "view",
        help=COMMAND_HELP["view"],
        description="Record a scenario run (mmusim run's schedule) or an explorer trace (replayed "
        "and checked as mmusim replay does) step by step and write one self-contained HTML page "
        "to step through it: per step the CPUs, threads, locks, the cleanup slot, each CPU's TLB "
        "(stale entries marked), the memory map with its guards, the invariants, the console, "
        "and for a fault or a stale translation the page walk. Keys: arrows or j/k step, n/p "
        "jump to the next/previous event, Home/End. Exit code 0: the page is written; 2: bad "
        "input.",
    )
    p.add_argument("input", metavar="SCENARIO|TRACE", type=Path,
                   help="a scenario file (.toml) or a trace of mmusim explore --trace (.json)")  # fmt: skip
    p.add_argument("--out", type=Path, metavar="FILE.html",
                   help="where to write the page (default: the input's name with .html, in the "
                   "current directory)")  # fmt: skip
    p.add_argument("--scenario", type=Path, metavar="FILE",
                   help="for a trace: the scenario file to replay it on (default: the one the "
                   "trace names); its sha256 must be the trace's")  # fmt: skip
    p.add_argument("--max-steps", type=parse_step_count, default=DEFAULT_MAX_STEPS, metavar="N",
                   help=f"for a scenario: record at most N steps (default {DEFAULT_MAX_STEPS:,})")  # fmt: skip
    p.set_defaults(func=cmd_view)


def is_trace(path: Path) -> bool:
    """A trace: a ``.json`` name, or a file whose first non-blank character is ``{``."""
    if path.suffix.lower() == ".json":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    return head.lstrip()[:1] == b"{"


def cmd_view(args: argparse.Namespace) -> int:
    """Record the input and write the page; exit 0, or 2 with one line on bad input."""
    src: Path = args.input
    out: Path = args.out if args.out is not None else Path(src.stem + ".html")
    try:
        if not src.exists():
            raise ValueError(f"{display_path(src)}: no such file")
        if src.is_dir():
            raise ValueError(f"{display_path(src)}: is a directory (give a scenario or trace file)")
        if args.max_steps < 1:
            raise ValueError(f"--max-steps: {args.max_steps} is out of range (at least 1)")
        check_writable(out, "--out")
        if args.scenario is not None and not is_trace(src):
            raise ValueError("--scenario: only for a trace (the input is read as a scenario)")
        rec = _record(args, src)
    except (ValueError, ScenarioError, ConfigError) as exc:
        return fail("view", one_line(exc))
    except ReplayMismatch as exc:
        return fail("view", f"{display_path(src)}: {exc}")
    except KernelAssert as exc:  # the kernel does not boot
        return fail("view", f"{display_path(src)}: the kernel does not boot: {one_line(exc)}")
    except OSError as exc:
        return fail("view", f"{display_path(src)}: cannot read: {exc.strerror or exc}")
    try:
        out.write_text(render_html(rec), encoding="utf-8")
    except OSError as exc:
        return fail("view", f"--out: cannot write {display_path(out)!r}: {exc.strerror or exc}")
    events = sum(1 for s in rec.steps for e in s["events"] if e["kind"] != "end")
    print(f"wrote {display_path(out)}: {len(rec.steps) - 1:,} steps, {events} with an event; "
          f"{rec.meta['verdict']}")  # fmt: skip
    for note in rec.meta["notes"]:
        print(f"note: {note}")
    return 0


def _record(args: argparse.Namespace, src: Path) -> Recording:
    if is_trace(src):
        try:
            loaded = load_trace(src)
        except TraceError as exc:
            raise ValueError(str(exc)) from None
        scenario = replay_scenario(src, loaded[0], args.scenario)
        return record_trace(src, scenario, loaded=loaded)
    return record_scenario(src, max_steps=args.max_steps)
