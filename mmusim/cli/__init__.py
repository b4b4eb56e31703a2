"""The ``mmusim`` command: ``main`` parses the command line and runs one subcommand.

Each subcommand (or family sharing options) has its module here, with an ``add_..._command(s)``
that adds it to the parser and sets ``func``, which ``main`` calls with the parsed arguments::

    translate.py  mmusim translate         addresses through the page tables of a memory image
    walk.py       mmusim walk              one page walk, level by level
    machine.py    (their shared options)   the memory image, paging mode, CR3 and control bits
    config.py     mmusim config|menuconfig the resolved Kconfig configuration of a board
    run.py        mmusim run               scenario files run and judged, a verdict table
    map.py        mmusim map               the kernel address space of a scenario
    explore.py    mmusim explore|replay    every SMP interleaving of a scenario; saved traces
    common.py     one-line errors (``fail``, ``UsageError``, ``Parser``) and argument types

Bad input never gives a traceback: it gives one line naming the argument and the problem, and exit
code 2 (``mmusim translate: error: --cr3: 0x90000: root table is outside the image (size
0x40000)``). Faults of the simulated machine are results, not errors: ``translate`` exits 0
whether or not the accesses fault.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mmusim.cli.common import Parser, UsageError, VersionAction, fail
from mmusim.cli.config import add_config_commands
from mmusim.cli.explore import add_explore_commands
from mmusim.cli.map import add_map_command
from mmusim.cli.run import add_run_command
from mmusim.cli.translate import add_translate_command
from mmusim.cli.walk import add_walk_command
from mmusim.scenario import scenario_kernel

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command, subcommands in the order ``--help`` lists them."""
    parser = Parser(
        prog="mmusim",
        description="A laboratory for stack memory protection on paged x86.",
    )
    parser.add_argument("--version", action=VersionAction)
    # Not required=True: argparse would then report a missing command before an unknown option
    # (`mmusim --foo`); ``main`` checks both itself.
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    add_translate_command(sub)
    add_walk_command(sub)
    add_config_commands(sub)
    add_run_command(sub)
    add_map_command(sub, scenario_kernel)
    add_explore_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mmusim ARGV`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named by the subcommand it was given to: `mmusim run: error: ...`
        prog = f"mmusim {args.command}" if args.command else "mmusim"
        parser.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(unknown)}\n")
    if args.command is None:
        parser.error("the following arguments are required: command (see mmusim --help)")
    try:
        return int(args.func(args))
    except UsageError as exc:
        return fail(args.command, str(exc))
    except BrokenPipeError:  # e.g. `mmusim walk ... | head`
        return 0
