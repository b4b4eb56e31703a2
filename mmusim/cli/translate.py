"""``mmusim translate``: linear addresses through the page tables of a memory image, one line each.

Each address is a fresh walk (no TLB between the accesses) that updates A/D bits in the image;
``--image-out`` saves the result. A fault is a result, printed like a translation: the exit code
is 0 whether or not the accesses fault. ``--json`` prints one JSON object per access.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mmusim.cli.common import COMMAND_HELP, UsageError
from mmusim.cli.machine import ACCESS, add_machine_command, check_vaddrs, load_machine, write_image
from mmusim.hw import translate
from mmusim.render.walk import result_json_line, result_line

__all__ = ["add_translate_command", "cmd_translate"]


def add_translate_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``translate`` subcommand."""
    add_machine_command(
        subparsers,
        "translate",
        cmd_translate,
        vaddr=("*", "linear addresses"),
        help=COMMAND_HELP["translate"],
        description="Perform the accesses in order, each a fresh walk (no TLB between them), "
        "updating A/D bits. Exit code 0 whether or not the accesses fault.",
    )


def cmd_translate(args: argparse.Namespace) -> int:
    """Translate every VADDR (all checked first); raises ``UsageError`` on bad input."""
    mem, size, ctl = load_machine(args)
    if not args.vaddr:
        raise UsageError("VADDR", "give at least one linear address")
    vaddrs: list[int] = args.vaddr
    check_vaddrs(vaddrs, ctl)
    access, cpl = ACCESS[args.access], args.cpl
    render = result_json_line if args.json else result_line
    write = sys.stdout.write
    # The hot loop of a long address list: a fresh walk per address (no TLB between accesses),
    # the lines written a batch at a time rather than one print each.
    for start in range(0, len(vaddrs), _BATCH):
        lines = [
            render(va, translate(mem, ctl, va, access, cpl))
            for va in vaddrs[start : start + _BATCH]
        ]
        lines.append("")
        write("\n".join(lines))
    write_image(args, mem, size)
    return 0


_BATCH = 4096
"""Lines rendered before they are written: one write each batch, and memory stays bounded."""
