"""Bundled example memory images: a small teaching address space in each paging mode.

Each image is built here with the page-table builder, deterministically, and shipped as a raw file
in ``mmusim/data/`` (byte 0 = physical address 0) so that ``mmusim walk --example`` and the README's
quick start work on a fresh install. ``tests/test_examples.py`` rebuilds every image and compares
it byte for byte with the shipped file, so the two cannot drift apart.

The address space is the shape of a thread stack protected as Zephyr's mapped stacks protect it::

    VA          what               rights                              PA
    0x00100000  kernel text        supervisor, read-only, executable   0x10000
    0x00101000  kernel data        supervisor, read-write, NX          0x11000
    0x00200000  guard page         not present                         -
    0x00201000  thread stack       supervisor, read-write, NX          0x20000 (4 pages)
    0x00205000  guard page         not present                         -
    0x00300000  user page          user, read-write, NX                0x30000
    0x00400000  large page         supervisor, read-write, NX          0x0 (2M; 4M in 32-bit):
                                   a direct map of low physical memory, page tables included

NX exists only in PAE and IA-32e paging; in 32-bit paging those pages are executable.

The guards are simply absent PTEs: touching one is a not-present #PF, which is how an overflow
of the stack below it is caught.
"""

from __future__ import annotations

from importlib import resources

import attrs

from mmusim.hw import MODES, PageTables, PhysMem, PteFlags

IMAGE_SIZE = 0x4_0000  # 256 KiB: page tables from 0x1000, mapped pages from 0x10000
_NX = int(PteFlags.NX)
_RW = int(PteFlags.RW)
_US = int(PteFlags.US)


@attrs.frozen
class Example:
    name: str
    mode: str
    cr3: int
    pse: bool
    nxe: bool
    addresses: tuple[tuple[str, int], ...]  # (what, VA) worth walking

    @property
    def filename(self) -> str:
        return f"example-{self.mode}.img"

    def load(self) -> bytes:
        return resources.files("mmusim").joinpath("data", self.filename).read_bytes()


_ADDRESSES = (
    ("kernel text", 0x0010_0010),
    ("kernel data", 0x0010_1008),
    ("stack top", 0x0020_4FF8),
    ("guard below the stack", 0x0020_0FF8),
    ("guard above the stack", 0x0020_5000),
    ("user page", 0x0030_0100),
    ("large page (direct map of PA 0x56789)", 0x0045_6789),
)


def build(mode: str) -> tuple[bytes, int]:
    """Build the example image of ``mode``; returns (image, CR3)."""
    mem = PhysMem(IMAGE_SIZE)
    next_frame = [0x1000]

    def alloc() -> int:
        pa = next_frame[0]
        next_frame[0] += 0x1000
        return pa

    pt = PageTables(mem, MODES[mode], alloc)
    nx = _NX if mode != "32" else 0
    pt.map(0x0010_0000, 0x0001_0000, 0)  # kernel text: S, RO, X
    pt.map(0x0010_1000, 0x0001_1000, _RW | nx)  # kernel data: S, RW, NX
    pt.map_range(0x0020_1000, 0x0002_0000, 0x4000, _RW | nx)  # the stack between two guards
    pt.map(0x0030_0000, 0x0003_0000, _US | _RW | nx)  # user page
    large = 0x40_0000 if mode == "32" else 0x20_0000
    pt.map(0x0040_0000, 0x0, _RW | nx, page_size=large)  # direct map of low memory
    # Recognisable bytes in the mapped pages, so a reader can check a translation by hand.
    for va, pa in (
        (0x10_0000, 0x1_0000),
        (0x10_1000, 0x1_1000),
        (0x20_1000, 0x2_0000),
        (0x30_0000, 0x3_0000),
    ):
        mem.write(pa, f"VA {va:#x} -> PA {pa:#x}\0".encode())
    pt._check()
    return mem.to_image(IMAGE_SIZE), pt.root


EXAMPLES: dict[str, Example] = {
    m: Example(m, m, cr3=0x1000, pse=m == "32", nxe=m != "32", addresses=_ADDRESSES)
    for m in ("ia32e", "pae", "32")
}


def main() -> None:  # pragma: no cover - maintenance script: python -m mmusim.examples
    from pathlib import Path

    out = Path(__file__).parent / "data"
    out.mkdir(exist_ok=True)
    for ex in EXAMPLES.values():
        image, cr3 = build(ex.mode)
        assert cr3 == ex.cr3
        (out / ex.filename).write_bytes(image)
        print(f"wrote {out / ex.filename} ({len(image)} bytes, CR3={cr3:#x})")


if __name__ == "__main__":  # pragma: no cover
    main()
