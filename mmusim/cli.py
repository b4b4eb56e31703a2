"""The ``mmusim`` command.

Bad input never gives a traceback: it gives one line naming the argument and the problem, and exit
code 2 (``mmusim translate: error: --cr3: 0x90000 is outside the image (size 0x40000)``).
Faults of the simulated machine are results, not errors: ``translate`` exits 0 whether or not the
accesses fault.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from mmusim.config_cli import add_config_commands
from mmusim.examples import EXAMPLES
from mmusim.explore_cli import add_explore_commands
from mmusim.hw import MODE_IA32E, MODES, Access, ControlState, PhysMem, translate
from mmusim.map_cli import add_map_command
from mmusim.render.walk import render_walk, result_json, result_line
from mmusim.scenario import scenario_kernel
from mmusim.scenario_cli import add_scenario_commands

_ACCESS = {"r": Access.READ, "w": Access.WRITE, "x": Access.EXEC}


class UsageError(Exception):
    """Bad command-line input: ``argument`` names the option, ``message`` the problem."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_int(text: str) -> int:
    """Hex (``0x...``) or decimal, optionally with ``_`` separators; for argparse ``type=``."""
    try:
        value = int(text.replace("_", ""), 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"malformed number {text!r} (use hex like 0x1000 or decimal)"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _add_machine_options(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("memory image")
    src.add_argument("--image", type=Path, help="raw physical memory image (byte 0 = PA 0)")
    src.add_argument(
        "--example",
        choices=sorted(EXAMPLES),
        help="use a bundled example image (sets --mode, --cr3, --nxe/--pse)",
    )
    src.add_argument("--mode", choices=sorted(MODES), help="paging mode")
    src.add_argument("--cr3", type=parse_int, help="CR3: physical address of the root table")
    ctl = p.add_argument_group("access and control bits")
    ctl.add_argument("--access", choices="rwx", default="r", help="read, write or execute")
    ctl.add_argument("--cpl", type=int, choices=(0, 3), default=0, help="current privilege level")
    ctl.add_argument("--wp", action="store_true", help="CR0.WP: supervisor writes obey R/W")
    ctl.add_argument("--nxe", action="store_true", help="EFER.NXE: enable XD (PAE, ia32e)")
    ctl.add_argument("--smep", action="store_true", help="CR4.SMEP")
    ctl.add_argument("--smap", action="store_true", help="CR4.SMAP")
    ctl.add_argument("--ac", action="store_true", help="EFLAGS.AC (with SMAP)")
    ctl.add_argument("--pse", action="store_true", help="CR4.PSE: 4M pages (32-bit paging)")
    ctl.add_argument(
        "--maxphyaddr", type=parse_int, default=40, help="MAXPHYADDR, 32..52 (default 40)"
    )
    p.add_argument("--image-out", type=Path, help="write the image after the accesses (A/D bits)")
    p.add_argument("--json", action="store_true", help="one JSON object per access")


def _load_machine(args: argparse.Namespace) -> tuple[PhysMem, int, ControlState]:
    """Check the machine options against each other and the image; returns (mem, size, ctl)."""
    if args.example:
        ex = EXAMPLES[args.example]
        if args.image is not None:
            raise UsageError("--example", "give either --image or --example, not both")
        image = ex.load()
        args.mode = args.mode or ex.mode
        if args.mode != ex.mode:
            raise UsageError("--mode", f"example {ex.name!r} is in mode {ex.mode}")
        args.cr3 = ex.cr3 if args.cr3 is None else args.cr3
        args.nxe = args.nxe or ex.nxe
        args.pse = args.pse or ex.pse
    else:
        if args.image is None:
            raise UsageError("--image", "required (or use --example NAME)")
        try:
            image = args.image.read_bytes()
        except OSError as exc:
            raise UsageError(
                "--image", f"cannot read {str(args.image)!r}: {exc.strerror}"
            ) from None
        if args.mode is None:
            raise UsageError("--mode", "required (choose from 32, pae, ia32e)")
        if args.cr3 is None:
            raise UsageError("--cr3", "required (physical address of the root table)")
    size = len(image)
    if size < 4096:
        raise UsageError("--image", f"image is {size} bytes; it must hold at least one 4 KiB frame")
    if size % 4096:
        raise UsageError("--image", f"size {size} is not a multiple of 4096 (whole frames)")
    if not 32 <= args.maxphyaddr <= 52:
        raise UsageError("--maxphyaddr", f"{args.maxphyaddr} is outside 32..52")
    mode = MODES[args.mode]
    if args.pse and mode.name != "32":
        raise UsageError("--pse", f"CR4.PSE has no effect in {mode.title}; only with --mode 32")
    if args.nxe and not mode.has_nx:
        raise UsageError("--nxe", f"{mode.title} has no XD bit; use --mode pae or ia32e")
    if args.maxphyaddr != 40 and mode.name == "32":
        raise UsageError("--maxphyaddr", "32-bit paging fixes the PSE-36 width at 40 here")
    if args.ac and not args.smap:
        raise UsageError("--ac", "EFLAGS.AC only matters with --smap")
    cr3 = args.cr3
    if mode is MODE_IA32E and cr3 >> args.maxphyaddr:
        raise UsageError("--cr3", f"{cr3:#x} sets reserved bits above MAXPHYADDR {args.maxphyaddr}")
    if mode is not MODE_IA32E and cr3 >> 32:
        raise UsageError("--cr3", f"{cr3:#x} is wider than 32 bits ({mode.title})")
    ctl = ControlState.for_mode(
        mode.name,
        cr3=cr3,
        wp=args.wp,
        nxe=args.nxe,
        smep=args.smep,
        smap=args.smap,
        ac=args.ac,
        pse=args.pse,
        maxphyaddr=args.maxphyaddr,
    )
    root_size = 32 if mode.name == "pae" else 4096
    if ctl.root + root_size > size:
        raise UsageError("--cr3", f"{cr3:#x}: root table is outside the image (size {size:#x})")
    return PhysMem.from_image(image, limit=size), size, ctl


def _check_vaddr(va: int, ctl: ControlState) -> None:
    if ctl.mode is not MODE_IA32E and va >> 32:
        raise UsageError("VADDR", f"{va:#x} is not a 32-bit linear address ({ctl.mode.title})")
    if va >> 64:
        raise UsageError("VADDR", f"{va:#x} is wider than 64 bits")


def _write_image(args: argparse.Namespace, mem: PhysMem, size: int) -> None:
    if args.image_out is not None:
        try:
            args.image_out.write_bytes(mem.to_image(size))
        except OSError as exc:
            raise UsageError(
                "--image-out", f"cannot write {str(args.image_out)!r}: {exc.strerror}"
            ) from None


def cmd_translate(args: argparse.Namespace) -> int:
    mem, size, ctl = _load_machine(args)
    if not args.vaddr:
        raise UsageError("VADDR", "give at least one linear address")
    for va in args.vaddr:
        _check_vaddr(va, ctl)
    access = _ACCESS[args.access]
    for va in args.vaddr:
        res = translate(mem, ctl, va, access, args.cpl)  # a fresh walk: no TLB between accesses
        print(json.dumps(result_json(va, res)) if args.json else result_line(va, res))
    _write_image(args, mem, size)
    return 0


def cmd_walk(args: argparse.Namespace) -> int:
    mem, size, ctl = _load_machine(args)
    if args.vaddr is None:
        if not args.example:
            raise UsageError("VADDR", "give the linear address to walk")
        for what, va in EXAMPLES[args.example].addresses:
            res = translate(mem, ctl, va, _ACCESS[args.access], args.cpl)
            print(f"## {what}")
            print(render_walk(mem, ctl, va, _ACCESS[args.access], args.cpl, res), end="\n\n")
        _write_image(args, mem, size)
        return 0
    _check_vaddr(args.vaddr, ctl)
    access = _ACCESS[args.access]
    res = translate(mem, ctl, args.vaddr, access, args.cpl)
    if args.json:
        obj = result_json(args.vaddr, res)
        obj["entries"] = [
            {"level": lvl, "entry_addr": ea, "value": v}
            for lvl, ea, v in getattr(res, "entries", ())
        ]
        print(json.dumps(obj))
    else:
        print(render_walk(mem, ctl, args.vaddr, access, args.cpl, res))
    _write_image(args, mem, size)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mmusim",
        description="A laboratory for stack memory protection on paged x86.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser(
        "translate",
        help="translate linear addresses on a memory image (one fresh walk each)",
        description="Perform the accesses in order, each a fresh walk (no TLB between them), "
        "updating A/D bits. Exit code 0 whether or not the accesses fault.",
    )
    _add_machine_options(p)
    p.add_argument("vaddr", metavar="VADDR", nargs="*", type=parse_int, help="linear addresses")
    p.set_defaults(func=cmd_translate)
    p = sub.add_parser(
        "walk",
        help="show a page walk level by level",
        description="A readable walk: entry address, raw value, decoded flags and rights so far "
        "at each level, ending in the physical address or the fault with its error-code bits "
        "named. With --example and no VADDR, walks the example's interesting addresses.",
    )
    _add_machine_options(p)
    p.add_argument("vaddr", metavar="VADDR", nargs="?", type=parse_int, help="linear address")
    p.set_defaults(func=cmd_walk)
    add_config_commands(sub)
    add_scenario_commands(sub)
    add_map_command(sub, scenario_kernel)
    add_explore_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"mmusim {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `mmusim walk ... | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
