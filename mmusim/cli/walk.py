"""``mmusim walk``: one page walk shown level by level (docs/cli.md).

Each line is one entry: its physical address, raw value, its bits named as that level defines
them, where it leads and the rights combined so far; the walk ends in the physical address or the
fault, with its error-code bits named. With ``--example`` and no VADDR, it walks each of the
example's interesting addresses under a ``## what`` heading. ``--json`` adds the entries to the
JSON object of ``mmusim translate``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from mmusim.cli.common import COMMAND_HELP, UsageError
from mmusim.cli.machine import ACCESS, add_machine_command, check_vaddr, load_machine, write_image
from mmusim.examples import EXAMPLES
from mmusim.hw import Result, translate
from mmusim.render.walk import render_walk, result_json

__all__ = ["add_walk_command", "cmd_walk"]


def add_walk_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``walk`` subcommand."""
    add_machine_command(
        subparsers,
        "walk",
        cmd_walk,
        vaddr=("?", "linear address"),
        help=COMMAND_HELP["walk"],
        description="A readable walk: entry address, raw value, decoded flags and rights so far "
        "at each level, ending in the physical address or the fault with its error-code bits "
        "named. With --example and no VADDR, walks the example's interesting addresses.",
    )


def cmd_walk(args: argparse.Namespace) -> int:
    """Walk VADDR (or the example's addresses); raises ``UsageError`` on bad input."""
    mem, size, ctl = load_machine(args)
    access = ACCESS[args.access]
    if args.vaddr is None:
        if not args.example:
            raise UsageError("VADDR", "give the linear address to walk")
        for what, va in EXAMPLES[args.example].addresses:
            res = translate(mem, ctl, va, access, args.cpl)
            print(f"## {what}")
            print(render_walk(mem, ctl, va, access, args.cpl, res), end="\n\n")
    else:
        check_vaddr(args.vaddr, ctl)
        res = translate(mem, ctl, args.vaddr, access, args.cpl)
        if args.json:
            print(json.dumps(_walk_json(args.vaddr, res)))
        else:
            print(render_walk(mem, ctl, args.vaddr, access, args.cpl, res))
    write_image(args, mem, size)
    return 0


def _walk_json(va: int, res: Result) -> dict[str, Any]:
    """``translate --json``'s object for ``va``, plus the entries the walk read."""
    obj = result_json(va, res)
    obj["entries"] = [
        {"level": lvl, "entry_addr": ea, "value": v} for lvl, ea, v in getattr(res, "entries", ())
    ]
    return obj
