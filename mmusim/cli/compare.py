"""``mmusim compare [--policy NAME ...] [--board B] [--json] [--svg FILE] [--no-timing]``: one
battery of attacks on every stack strategy, as a matrix (docs/compare.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mmusim.cli.common import COMMAND_HELP, fail, printable
from mmusim.compare import ATTACKS, POLICY_NAMES, compare
from mmusim.kconfig import boards
from mmusim.render.compare import render_compare_svg, render_compare_text
from mmusim.scenario.document import display_path

__all__ = ["add_compare_command", "cmd_compare"]


def add_compare_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "compare",
        help=COMMAND_HELP["compare"],
        description="Run one battery of attacks (" + ", ".join(a.name for a in ATTACKS) + ") on "
        "every stack strategy -- Zephyr's mapped stacks, its legacy guard, none, the runtime "
        "policies of Haiku, Linux, nanos and RethinkDB, Go's segmented and copying stacks -- each "
        "cell a fresh run of the simulated machine, and print what each strategy catches, whom "
        "it blames, whether the program went on, and what one stack costs. Exit 0; 2 for bad "
        "input.",
    )
    p.add_argument(
        "--policy",
        action="append",
        metavar="NAME",
        help=f"only this strategy (repeatable); one of: {', '.join(POLICY_NAMES)}",
    )
    p.add_argument("--board", default="qemu_x86_64", metavar="B",
                   help="the board whose Kconfig the kernel runs (default: qemu_x86_64)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the matrix as one JSON object")
    p.add_argument("--svg", type=Path, metavar="FILE", help="also draw the matrix as SVG to FILE")
    p.add_argument(
        "--no-timing",
        action="store_true",
        help="leave out create+destroy cycles per second, the only wall-clock figure: the "
        "same command then prints the same bytes",
    )
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    for name in args.policy or ():
        if name not in POLICY_NAMES:
            return fail(
                "compare", f"--policy: unknown strategy {printable(name)!r} (allowed: "
                f"{', '.join(POLICY_NAMES)})"
            )  # fmt: skip
    if args.board not in boards():
        return fail("compare", f"--board: unknown board {printable(args.board)!r} (allowed: "
                    f"{', '.join(boards())})")  # fmt: skip
    policies = list(dict.fromkeys(args.policy)) if args.policy else None
    result = compare(policies, args.board, timing=not args.no_timing)
    if args.svg is not None:
        try:
            args.svg.write_text(render_compare_svg(result), encoding="utf-8")
        except OSError as exc:
            return fail(
                "compare", f"--svg: cannot write {display_path(args.svg)!r}: {exc.strerror}"
            )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(render_compare_text(result), end="")
    return 0
