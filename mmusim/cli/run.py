"""``mmusim run``: run scenario files and report a verdict for each.

``run [SCENARIO|DIR ...] [--json] [--seed N]`` loads every scenario first (a directory means
every ``*.toml`` in it; no argument means the bundled scenarios), so a bad file stops the command
before anything runs: one line ``mmusim run: error: FILE:LINE: key: problem`` and exit code 2.
Then it runs them and prints a table -- scenario, verdict, faults, steps, time -- with the reasons
under each scenario that did not pass, and a summary line ``N passed, M failed``; with ``--json``
one JSON object per scenario instead. Exit code 0 if every scenario passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from mmusim.cli.common import COMMAND_HELP, UsageError, fail, parse_seed
from mmusim.cli.progress import add_progress_option, progress_wanted, scenario_progress
from mmusim.render.verdicts import render_table
from mmusim.scenario import (
    SCENARIO_SEED,
    ScenarioError,
    bundled_scenarios,
    load_scenario,
    run_scenario,
)

__all__ = ["add_run_command", "cmd_run", "collect_paths", "run_paths"]


def add_run_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``run`` subcommand."""
    p = subparsers.add_parser(
        "run",
        help=COMMAND_HELP["run"],
        description="Load each scenario (TOML, docs/scenarios.md), boot the kernel it "
        "configures, run it with the kernel invariants checked after every step, and check its "
        "expectations. A directory means every *.toml in it; no argument runs the bundled "
        "scenarios. Exit code 0 if all pass, 1 if any fails, 2 for a bad scenario file.",
    )
    p.add_argument(
        "scenarios",
        metavar="SCENARIO|DIR",
        nargs="*",
        type=Path,
        help="scenario files or directories of them",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per scenario")
    p.add_argument(
        "--log",
        action="store_true",
        help="print each scenario's console (Zephyr's fatal error log) under its row",
    )
    p.add_argument(
        "--no-time",
        action="store_true",
        help="leave out the time column, so the same run prints the same bytes",
    )
    p.add_argument(
        "--seed",
        type=parse_seed,
        default=None,
        help="run with this seeded random schedule instead of each scenario's own seed",
    )
    add_progress_option(p)
    p.set_defaults(func=cmd_run)


def collect_paths(paths: Sequence[Path]) -> list[Path]:
    """The scenario files ``paths`` name (directories expanded, sorted); the bundled ones if none.
    Raises ``UsageError`` for a path that is missing or a directory without scenarios."""
    if not paths:
        return bundled_scenarios()
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob("*.toml"))
            if not found:
                raise UsageError(str(p), "no *.toml scenario files in this directory")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise UsageError(str(p), "no such file or directory")
    return out


def run_paths(
    paths: Sequence[Path],
    *,
    as_json: bool = False,
    seed: int | None = None,
    show_log: bool = False,
    show_time: bool = True,
    show_progress: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """What ``mmusim run`` does; returns the exit code (0 all passed, 1 some did not, 2 bad input)."""
    out = out if out is not None else sys.stdout
    try:
        scenarios = [load_scenario(p) for p in collect_paths(paths)]
    except (ScenarioError, UsageError) as e:
        return fail("run", str(e), file=err)
    if not scenarios:
        return fail("run", "no scenarios to run", file=err)
    results = []
    with scenario_progress(show_progress and not as_json, len(scenarios)) as show:
        for scn in scenarios:
            show(scn.name)
            r = run_scenario(scn, seed=SCENARIO_SEED if seed is None else seed)
            results.append(r)
            if as_json:
                print(json.dumps(r.to_json()), file=out, flush=True)
    if not as_json:
        out.write(render_table(results, show_log=show_log, show_time=show_time))
    return 0 if all(r.passed for r in results) else 1


def cmd_run(args: argparse.Namespace) -> int:
    """``run_paths`` with the command's options."""
    return run_paths(
        args.scenarios,
        as_json=args.json,
        seed=args.seed,
        show_log=args.log,
        show_time=not args.no_time,
        show_progress=progress_wanted(args.json, args.no_progress),
    )
