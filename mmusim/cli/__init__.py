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
    compare.py    mmusim compare           one battery of stack attacks on every strategy
    quiz.py       mmusim quiz              seeded problems with worked answers
    view.py       mmusim view              a run or a trace as an HTML page to step through
    common.py     one-line errors (``fail``, ``UsageError``, ``Parser``) and argument types

Bad input never gives a traceback: it gives one line naming the argument and the problem, and exit
code 2 (``mmusim translate: error: --cr3: 0x90000: root table is outside the image (size
0x40000)``). Faults of the simulated machine are results, not errors: ``translate`` exits 0
whether or not the accesses fault. A reader that closes the output early (``mmusim explore ... |
head``) cuts the output short but not the command: it finishes, and its exit code is kept. Ctrl-C
stops a command with one line, ``mmusim explore: interrupted``, and exit code 130; ``mmusim explore``
takes SIGTERM (a machine shutting down) the same way: ``terminated``, exit code 143.

``mmusim translate`` may be given thousands of addresses: ``main`` holds a long trailing run of
them back from argparse, which is slow per word, and converts them in one pass (the same values
and errors as argparse's; ``_hold_back_addresses``).

The subcommand modules are imported lazily (``COMMANDS``): ``mmusim walk`` imports only
``walk.py`` and what it needs, never the kernel, kconfiglib or hypothesis; ``mmusim --help``
imports none of them. The other subcommands are stubs that carry only their one-line help.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import TextIO, cast

from mmusim.cli.common import (
    COMMAND_HELP,
    ParseInts,
    Parser,
    PipeSafeStdout,
    Terminated,
    UsageError,
    VersionAction,
    fail,
)

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("mmusim.cli.translate", "add_translate_command", ("translate",)),
    ("mmusim.cli.walk", "add_walk_command", ("walk",)),
    ("mmusim.cli.config", "add_config_commands", ("config", "menuconfig")),
    ("mmusim.cli.run", "add_run_command", ("run",)),
    ("mmusim.cli.map", "add_scenario_map_command", ("map",)),
    ("mmusim.cli.explore", "add_explore_commands", ("explore", "replay")),
    ("mmusim.cli.compare", "add_compare_command", ("compare",)),
    ("mmusim.cli.quiz", "add_quiz_command", ("quiz",)),
    ("mmusim.cli.view", "add_view_command", ("view",)),
)
"""The subcommands in ``--help``'s order: (module, the function in it that adds them, their
names). Their one-line help is ``COMMAND_HELP``'s, so ``--help`` need not import the modules."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of the whole command, subcommands in the order ``--help`` lists them.

    With ``command``, only the module of that subcommand is imported and its parser built in
    full; the others are stubs with their help (enough for ``--help`` and for an unknown name).
    """
    parser = Parser(
        prog="mmusim",
        description="A laboratory for stack memory protection on paged x86.",
    )
    parser.add_argument("--version", action=VersionAction)
    # Not required=True: argparse would then report a missing command before an unknown option
    # (`mmusim --foo`); ``main`` checks both itself.
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    for module, adder, names in COMMANDS:
        if command is None or command in names:
            getattr(importlib.import_module(module), adder)(sub)
        else:
            for name in names:
                sub.add_parser(name, help=COMMAND_HELP[name])
    return parser


def _command_in(argv: Sequence[str]) -> str:
    """The subcommand ``argv`` names: its first word that is not an option (the top level's own
    options take no value), or "" for none."""
    return next((a for a in argv if not a.startswith("-")), "")


_ADDRESS_LISTS = frozenset({"translate"})
"""Subcommands whose last argument, ``VADDR`` (``ParseInts``, nargs "*"), may be a long list."""
_HOLD_BACK_MIN = 256


def _hold_back_addresses(command: str, argv: list[str]) -> tuple[list[str], list[str]]:
    """``mmusim translate`` with many addresses: (the words argparse parses, the addresses held
    back from it). argparse spends about 0.35 us on each word, once in the command's parser and
    once in the subcommand's, where converting an address costs 0.17 us: with 20,000 addresses,
    a tenth of the command's time.

    Held back: the trailing run of words that cannot be options (no leading "-"), but its first
    two. All options of ``translate`` take at most one value, so the second is a VADDR word (or an
    extra, which ``main`` sees) and argparse would have given the rest to VADDR with it."""
    if command not in _ADDRESS_LISTS:
        return argv, []
    start = len(argv)
    while start and not argv[start - 1].startswith("-"):
        start -= 1
    if len(argv) - start < _HOLD_BACK_MIN:
        return argv, []
    return argv[: start + 2], argv[start + 2 :]


def _took_last_word(args: argparse.Namespace, argv: list[str]) -> bool:
    """Did VADDR take the last word of ``argv``? (A check of ``_hold_back_addresses``' premise.)"""
    vaddr = getattr(args, "vaddr", None)
    try:
        return isinstance(vaddr, list) and vaddr[-1:] == ParseInts.convert(argv[-1:])
    except argparse.ArgumentTypeError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mmusim ARGV`` (default: ``sys.argv[1:]``); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_in(argv)
    parser = build_parser(command)
    argv, held = _hold_back_addresses(command, argv)
    args, unknown = parser.parse_known_args(argv)
    if held:  # as argparse would have: VADDR takes them after the last word it was given
        if unknown or not _took_last_word(args, argv):
            args, unknown = parser.parse_known_args(argv + held)  # argparse decides, as usual
        else:
            try:
                args.vaddr += ParseInts.convert(held)
            except argparse.ArgumentTypeError as exc:
                return fail(command, f"argument VADDR: {exc}")
    if unknown:  # named by the subcommand it was given to: `mmusim run: error: ...`
        prog = f"mmusim {args.command}" if args.command else "mmusim"
        parser.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(unknown)}\n")
    if args.command is None:
        parser.error("the following arguments are required: command (see mmusim --help)")
    out = PipeSafeStdout(sys.stdout)  # `mmusim explore ... | head`: keep the exit code
    sys.stdout = cast(TextIO, out)
    try:
        code = int(args.func(args))
        out.flush()
        return code
    except UsageError as exc:
        return fail(args.command, str(exc))
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's code for SIGINT, no traceback
        out.flush()
        print(f"mmusim {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:  # SIGTERM, where a command turned it into this (mmusim explore)
        out.flush()
        print(f"mmusim {args.command}: terminated", file=sys.stderr)
        return 143
    finally:
        sys.stdout = out.inner
