"""The machine options ``mmusim translate`` and ``mmusim walk`` share, and the machine they describe.

Both commands work on a raw physical memory image (byte 0 = physical address 0) or a bundled
example (``--example``, which also sets the mode, CR3 and control bits). ``load_machine`` checks
the options against each other and against the image before anything is walked, raising
``UsageError`` naming the option: ``--cr3: 0x90000: root table is outside the image (size
0x40000)``. Faults of the simulated machine are results, not errors.
"""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmusim.cli.common import ParseInts, UsageError, parse_int
from mmusim.examples import EXAMPLES
from mmusim.hw import MODE_IA32E, MODES, Access, ControlState, PagingMode, PhysMem

__all__ = [
    "ACCESS",
    "add_machine_command",
    "check_vaddr",
    "check_vaddrs",
    "load_machine",
    "write_image",
]

ACCESS = {"r": Access.READ, "w": Access.WRITE, "x": Access.EXEC}
"""``--access`` letter -> the access the walk checks."""


def add_machine_command(
    subparsers: argparse._SubParsersAction[Any],
    name: str,
    func: Callable[[argparse.Namespace], int],
    *,
    vaddr: tuple[str, str],
    help: str,
    description: str,
) -> None:
    """Add subcommand ``name``: the machine options, then ``VADDR`` arguments (``vaddr``: their
    nargs and help), run by ``func``."""
    p = subparsers.add_parser(name, help=help, description=description)
    _add_machine_options(p)
    nargs, help_ = vaddr
    p.add_argument("vaddr", metavar="VADDR", nargs=nargs, action=ParseInts, help=help_)
    p.set_defaults(func=func)


def _add_machine_options(p: argparse.ArgumentParser) -> None:
    """The options that describe the machine: image, paging mode, CR3, access and control bits."""
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
    ctl.add_argument("--access", choices=tuple(ACCESS), default="r", help="read, write or execute")
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


def load_machine(args: argparse.Namespace) -> tuple[PhysMem, int, ControlState]:
    """Check the machine options against each other and the image; returns (mem, size, ctl).

    An ``--image`` is checked by its size (``os.stat``) before a byte of it is read, then mapped
    rather than read (``PhysMem.from_file``): a walk reads only the frames it visits."""
    size = _image_size(args)
    if size < 4096:
        raise UsageError("--image", f"image is {size} bytes; it must hold at least one 4 KiB frame")
    if size % 4096:
        raise UsageError("--image", f"size {size} is not a multiple of 4096 (whole frames)")
    mode = _checked_mode(args)
    if size > 1 << args.maxphyaddr:
        raise UsageError(
            "--image",
            f"size {size:#x} is larger than the physical address space of MAXPHYADDR "
            f"{args.maxphyaddr} (at most {1 << args.maxphyaddr:#x} bytes)",
        )
    ctl = ControlState.for_mode(
        mode.name,
        cr3=args.cr3,
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
        raise UsageError(
            "--cr3", f"{args.cr3:#x}: root table is outside the image (size {size:#x})"
        )
    if args.example:
        return PhysMem.from_image(EXAMPLES[args.example].load(), limit=size), size, ctl
    try:
        return PhysMem.from_file(args.image, limit=size), size, ctl
    except (OSError, ValueError) as exc:  # ValueError: mmap refused the file
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise UsageError("--image", f"cannot read {str(args.image)!r}: {reason}") from None


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def _image_size(args: argparse.Namespace) -> int:
    """The size of ``--image`` or ``--example``, nothing read yet; an example also fills in its
    mode, CR3, NXE and PSE, and the image needs ``--mode`` and ``--cr3`` given. The image must be
    a regular file: a device or a FIFO has no size to check and may never end."""
    if args.example:
        ex = EXAMPLES[args.example]
        if args.image is not None:
            raise UsageError("--example", "give either --image or --example, not both")
        args.mode = args.mode or ex.mode
        if args.mode != ex.mode:
            raise UsageError("--mode", f"example {ex.name!r} is in mode {ex.mode}")
        args.cr3 = ex.cr3 if args.cr3 is None else args.cr3
        args.nxe = args.nxe or ex.nxe
        args.pse = args.pse or ex.pse
        return len(ex.load())
    if args.image is None:
        raise UsageError("--image", "required (or use --example NAME)")
    try:
        st = os.stat(args.image)
    except OSError as exc:
        raise UsageError("--image", f"cannot read {str(args.image)!r}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _FILE_KINDS if test(st.st_mode)), "not a plain file")
        raise UsageError("--image", f"{str(args.image)!r} is {kind}; give a raw memory image file")
    if args.mode is None:
        raise UsageError("--mode", "required (choose from 32, pae, ia32e)")
    if args.cr3 is None:
        raise UsageError("--cr3", "required (physical address of the root table)")
    return st.st_size


def _checked_mode(args: argparse.Namespace) -> PagingMode:
    """The paging mode, once MAXPHYADDR, the control bits and CR3 are checked to make sense in it."""
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
    return mode


def check_vaddr(va: int, ctl: ControlState) -> None:
    """A linear address must fit the paging mode (32 bits, or 64 in IA-32e)."""
    if ctl.mode is not MODE_IA32E and va >> 32:
        raise UsageError("VADDR", f"{va:#x} is not a 32-bit linear address ({ctl.mode.title})")
    if va >> 64:
        raise UsageError("VADDR", f"{va:#x} is wider than 64 bits")


def check_vaddrs(vas: list[int], ctl: ControlState) -> None:
    """``check_vaddr`` on each of ``vas``, the first bad one raising; one pass when all fit."""
    width = 64 if ctl.mode is MODE_IA32E else 32
    if vas and max(vas) >> width:
        for va in vas:
            check_vaddr(va, ctl)


def write_image(args: argparse.Namespace, mem: PhysMem, size: int) -> None:
    """Write the image after the accesses (A/D bits set) to ``--image-out``, if given."""
    if args.image_out is not None:
        try:
            args.image_out.write_bytes(mem.to_image(size))
        except OSError as exc:
            raise UsageError(
                "--image-out", f"cannot write {str(args.image_out)!r}: {exc.strerror}"
            ) from None
