"""Unit and property tests for the page-table builder ``mmusim.hw.PageTables``.

Expected entry values and addresses are computed by hand from the entry formats of the
Intel SDM (Vol. 3A §4.3-§4.5: table base + index x entry size; frame | flags | P, PS in large
leaves). Table frames come from ``helpers.frame_counter``, so the n-th table the builder takes is
known.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import (
    G1,
    K4,
    M2,
    M4,
    NX,
    PCD,
    PS,
    PTR,
    PWT,
    RW,
    US,
    A,
    D,
    G,
    P,
    frame_counter,
    leaf_frame,
)
from mmusim.hw import (
    MODE_32,
    MODE_IA32E,
    MODE_PAE,
    Access,
    ControlState,
    PageFault,
    PageTables,
    PagingMode,
    PhysMem,
    Translation,
    load_pdptes,
    translate,
)

MODE_NAMES = {MODE_IA32E: "ia32e", MODE_PAE: "pae", MODE_32: "32"}


def make(mode: PagingMode, **kw: int | bool) -> PageTables:
    """Empty tables of ``mode`` whose n-th table takes frame 0x1000 * n (the root 0x1000)."""
    return PageTables(PhysMem(), mode, frame_counter(), **kw)  # type: ignore[arg-type]


def u64(pt: PageTables, pa: int) -> int:
    return pt.mem.read_u64(pa)


def u32(pt: PageTables, pa: int) -> int:
    return pt.mem.read_u32(pa)


def tr(pt: PageTables, va: int, access: Access = Access.READ, cpl: int = 0, **flags: bool):
    ctl = ControlState.for_mode(MODE_NAMES[pt.mode], pt.root, nxe=True, pse=True, **flags)
    return translate(pt.mem, ctl, va, access, cpl)


def pa_of(pt: PageTables, va: int) -> int:
    res = tr(pt, va)
    assert isinstance(res, Translation), res
    return res.paddr


def absent(pt: PageTables, va: int) -> bool:
    res = tr(pt, va)
    return isinstance(res, PageFault) and res.error_code == 0 and res.reason == "not-present"


# -------------------------------------------------------------------------------------------------
# map: exact entries
# -------------------------------------------------------------------------------------------------


def test_ia32e_map_4k_entries() -> None:
    pt = make(MODE_IA32E)
    assert pt.root == 0x1000
    va = (0x0A5 << 39) | (0x1C3 << 30) | (0x077 << 21) | (0x1FE << 12)
    pt.map(va, 0x12_3456_7000, RW | NX)
    assert pt.table_frames == [0x1000, 0x2000, 0x3000, 0x4000]
    assert u64(pt, 0x1000 + 0x0A5 * 8) == 0x2000 | PTR
    assert u64(pt, 0x2000 + 0x1C3 * 8) == 0x3000 | PTR
    assert u64(pt, 0x3000 + 0x077 * 8) == 0x4000 | PTR
    assert u64(pt, 0x4000 + 0x1FE * 8) == 0x12_3456_7000 | RW | NX | P
    assert pa_of(pt, va + 0xABC) == 0x12_3456_7ABC
    # A second page in the same PT reuses the tables.
    pt.map(va + 0x1000, 0x5000, 0)
    assert pt.table_frames == [0x1000, 0x2000, 0x3000, 0x4000]
    assert u64(pt, 0x4000 + 0x1FF * 8) == 0x5000 | P
    pt._check()


def test_ia32e_map_2m_and_1g() -> None:
    pt = make(MODE_IA32E)
    pt.map(0x4000_0000 + 3 * M2, 0x80_0000, RW | G, M2)  # PML4[0] PDPT[1] PD[3]
    assert u64(pt, 0x3000 + 3 * 8) == 0x80_0000 | PS | RW | G | P
    assert pt.table_frames == [0x1000, 0x2000, 0x3000]
    assert pa_of(pt, 0x4000_0000 + 3 * M2 + 0x1_2345) == 0x81_2345
    pt.map(0x1_C000_0000, 0x40_0000_0000, US, G1)  # PDPT[7]
    assert u64(pt, 0x2000 + 7 * 8) == 0x40_0000_0000 | PS | US | P
    assert pa_of(pt, 0x1_C000_0000 + 0x3ABC_DEF0) == 0x40_3ABC_DEF0
    assert pt.table_frames == [0x1000, 0x2000, 0x3000]
    pt._check()


def test_ia32e_high_half() -> None:
    pt = make(MODE_IA32E)
    va = 0xFFFF_8000_0000_0000 | (5 << 12)
    pt.map(va, 0x9000, RW)
    assert u64(pt, 0x1000 + 256 * 8) == 0x2000 | PTR
    assert list(pt.leaves()) == [(va, 0x9000 | RW | P, K4)]
    assert pa_of(pt, va + 1) == 0x9001


def test_pae_map_4k_and_2m() -> None:
    pt = make(MODE_PAE)
    va = (3 << 30) | (0x11 << 21) | (0x22 << 12)
    pt.map(va, 0x12_3456_7000, RW | US | NX)
    assert u64(pt, 0x1000 + 3 * 8) == 0x2000 | P  # a PDPTE has only P (the rest is reserved)
    assert u64(pt, 0x2000 + 0x11 * 8) == 0x3000 | PTR
    assert u64(pt, 0x3000 + 0x22 * 8) == 0x12_3456_7000 | RW | US | NX | P
    ctl = ControlState.for_mode("pae", pt.root, nxe=True)
    assert load_pdptes(pt.mem, ctl) == (0, 0, 0, 0x2000 | P)
    assert pa_of(pt, va + 0x10) == 0x12_3456_7010
    pt.map(1 << 30, 0xFFE0_0000, RW, M2)  # PDPT[1] PD[0]
    assert u64(pt, 0x1000 + 8) == 0x4000 | P
    assert u64(pt, 0x4000) == 0xFFE0_0000 | PS | RW | P
    assert pa_of(pt, (1 << 30) + 0x1F_FFFF) == 0xFFFF_FFFF
    pt._check()


def test_32bit_map_4k_and_4m() -> None:
    pt = make(MODE_32)
    va = (0x2A5 << 22) | (0x1FE << 12)
    pt.map(va, 0x0123_4000, RW | US)
    assert u32(pt, 0x1000 + 0x2A5 * 4) == 0x2000 | PTR
    assert u32(pt, 0x2000 + 0x1FE * 4) == 0x0123_4000 | RW | US | P
    assert pa_of(pt, va + 0xFFF) == 0x0123_4FFF
    pt.map(0x0040_0000, 0x1240_0000, RW, M4)  # PD[1]
    assert u32(pt, 0x1000 + 4) == 0x1240_0000 | PS | RW | P
    assert pa_of(pt, 0x0040_0000 + 0x3F_FFFF) == 0x127F_FFFF
    pt._check()


def test_32bit_4m_above_4g_pse36() -> None:
    pt = make(MODE_32)
    pt.map(0x0080_0000, 0xA5_1240_0000, RW, M4)  # PD[2]
    # PA bits 39:32 = 0xA5 go to PDE bits 20:13.
    assert u32(pt, 0x1000 + 2 * 4) == 0x1240_0000 | (0xA5 << 13) | PS | RW | P
    assert pt.lookup(0x0080_0000) == (
        "PD",
        0x1000 + 8,
        0x1240_0000 | (0xA5 << 13) | PS | RW | P,
        M4,
    )
    assert pa_of(pt, 0x0080_0000 + 0x12_3456) == 0xA5_1252_3456
    pt._check()


@pytest.mark.parametrize(("m", "pa"), [(40, 1 << 40), (40, 1 << 41), (52, 1 << 40), (36, 1 << 36)])
def test_32bit_4m_frame_beyond_pse36_reach_raises(m: int, pa: int) -> None:
    # PSE-36 decodes PDE bits (min(M, 40) - 20):13 as PA bits (min(M, 40) - 1):32
    # (Intel SDM Vol. 3A §4.3).
    pt = make(MODE_32, maxphyaddr=m)
    with pytest.raises(ValueError):
        pt.map(0x40_0000, pa, RW, M4)
    assert list(pt.leaves()) == []
    last = (1 << min(m, 40)) - M4  # the last 4M frame in reach is fine
    pt.map(0x40_0000, last, RW, M4)
    pt._check()
    res = translate(pt.mem, ControlState.for_mode("32", pt.root, pse=True, maxphyaddr=m), 0x40_0000)
    assert isinstance(res, Translation) and res.paddr == last


def test_32bit_without_pse_has_no_4m() -> None:
    pt = make(MODE_32, pse=False)
    with pytest.raises(ValueError):
        pt.map(0x0040_0000, 0x0040_0000, RW, M4)


def test_32bit_4k_frame_above_4g_raises() -> None:
    pt = make(MODE_32)
    with pytest.raises(ValueError):
        pt.map(0x1000, 0x1_0000_0000, RW)


def test_frame_beyond_maxphyaddr_raises() -> None:
    pt = make(MODE_IA32E)
    with pytest.raises(ValueError):
        pt.map(0x1000, 1 << 40, RW)
    pt.map(0x1000, (1 << 40) - 0x1000, RW)
    pt36 = make(MODE_PAE, maxphyaddr=36)
    with pytest.raises(ValueError):
        pt36.map(0x1000, 1 << 36, RW)
    with pytest.raises(ValueError):
        pt36.map(0x20_0000, 1 << 36, RW, M2)


# -------------------------------------------------------------------------------------------------
# errors
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [MODE_IA32E, MODE_PAE, MODE_32], ids=lambda m: m.name)
def test_remap_raises(mode: PagingMode) -> None:
    pt = make(mode)
    pt.map(0x40_0000, 0x10_0000, RW)
    before = pt.mem.to_image()
    with pytest.raises(ValueError, match="remap"):
        pt.map(0x40_0000, 0x20_0000, RW)
    assert pt.mem.to_image() == before
    assert pa_of(pt, 0x40_0000) == 0x10_0000


def test_map_4k_inside_large_page_raises() -> None:
    pt = make(MODE_IA32E)
    pt.map(0x20_0000, 0x40_0000, RW, M2)
    with pytest.raises(ValueError):
        pt.map(0x20_1000, 0x9000, RW)
    pt.map(0x4000_0000, 0x4000_0000, RW, G1)
    with pytest.raises(ValueError):
        pt.map(0x4020_0000, 0x20_0000, RW, M2)
    # A large page over an existing page table is a remap too.
    pt.map(0x8000_0000, 0x9000, RW)
    with pytest.raises(ValueError):
        pt.map(0x8000_0000, 0x20_0000, RW, M2)


@pytest.mark.parametrize("mode", [MODE_IA32E, MODE_PAE, MODE_32], ids=lambda m: m.name)
def test_unmap_of_unmapped_raises(mode: PagingMode) -> None:
    pt = make(mode)
    with pytest.raises(ValueError, match="not mapped"):
        pt.unmap(0x40_0000)  # no table on the way
    pt.map(0x40_0000, 0x10_0000, RW)
    with pytest.raises(ValueError, match="not mapped"):
        pt.unmap(0x40_1000)  # table exists, entry absent
    with pytest.raises(ValueError):
        pt.set_flags(0x40_1000, RW)
    assert pt.unmap(0x40_0000) == 0x10_0000 | RW | P
    with pytest.raises(ValueError):
        pt.unmap(0x40_0000)


@pytest.mark.parametrize(
    ("mode", "va", "pa", "size"),
    [
        (MODE_IA32E, 0x1001, 0x2000, K4),  # unaligned VA
        (MODE_IA32E, 0x1000, 0x2800, K4),  # unaligned frame
        (MODE_IA32E, 0x30_1000, 0x40_0000, M2),
        (MODE_IA32E, 0x20_0000, 0x40_1000, M2),
        (MODE_IA32E, 0x4000_0000, 0x20_0000, G1),
        (MODE_IA32E, 0x2000_0000, 0x4000_0000, G1),
        (MODE_PAE, 0x1000, 0x2800, K4),
        (MODE_PAE, 0x30_0000, 0x40_0000, M2),
        (MODE_32, 0x40_1000, 0x40_0000, M4),
        (MODE_32, 0x40_0000, 0x60_0000, M4),
        # sizes a mode does not have
        (MODE_PAE, 0x4000_0000, 0x4000_0000, G1),
        (MODE_PAE, 0x40_0000, 0x40_0000, M4),
        (MODE_32, 0x20_0000, 0x20_0000, M2),
        (MODE_IA32E, 0x40_0000, 0x40_0000, M4),
        (MODE_IA32E, 0x2000, 0x2000, 0x2000),
        # addresses a mode cannot translate
        (MODE_IA32E, 0x0000_8000_0000_0000, 0x1000, K4),
        (MODE_PAE, 1 << 32, 0x1000, K4),
        (MODE_32, 1 << 32, 0x1000, K4),
    ],
)
def test_bad_map_raises(mode: PagingMode, va: int, pa: int, size: int) -> None:
    pt = make(mode)
    with pytest.raises(ValueError):
        pt.map(va, pa, RW, size)
    assert list(pt.leaves()) == []


def test_unaligned_unmap_and_ranges_raise() -> None:
    pt = make(MODE_IA32E)
    pt.map(0x20_0000, 0x40_0000, RW, M2)
    with pytest.raises(ValueError):
        pt.unmap(0x20_1000, M2)
    with pytest.raises(ValueError):
        pt.map_range(0x100_0000, 0x100_0000, 0x1800, RW)
    with pytest.raises(ValueError):
        pt.unmap_range(0x20_0000, 0x1000, M2)
    assert list(pt.leaves()) == [(0x20_0000, 0x40_0000 | PS | RW | P, M2)]


def test_allocator_contract() -> None:
    with pytest.raises(ValueError):
        PageTables(PhysMem(), MODE_IA32E, lambda: 0x1800)
    frames = iter([0x1000, 0x1_0000_0000])
    pt = PageTables(PhysMem(), MODE_32, lambda: next(frames))
    with pytest.raises(ValueError):
        pt.map(0x1000, 0x2000, RW)  # the page table would lie above 4 GiB
    frames64 = iter([0x1000, 0x1_0000_0000, 0x1_0000_1000, 0x1_0000_2000])
    pt64 = PageTables(PhysMem(), MODE_IA32E, lambda: next(frames64))
    pt64.map(0x1000, 0x2000, RW)  # fine in IA-32e
    assert pa_of(pt64, 0x1234) == 0x2234


def test_new_table_frames_are_zeroed() -> None:
    mem = PhysMem()
    mem.write(0x2000, b"\xff" * 4096)  # garbage in the frame the PDPT will get
    pt = PageTables(mem, MODE_IA32E, frame_counter())
    pt.map(0x1000, 0x9000, RW)
    assert mem.read(0x2008, 4088) == bytes(4088)
    assert list(pt.leaves()) == [(0x1000, 0x9000 | RW | P, K4)]
    pt._check()


# -------------------------------------------------------------------------------------------------
# unmap, ranges, set_flags, lookup, leaves
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "size", "va", "pa"),
    [
        (MODE_IA32E, K4, 0x7FFF_FFFF_E000, 0x5000),
        (MODE_IA32E, M2, 0x60_0000, 0x20_0000),
        (MODE_IA32E, G1, 0xFFFF_FFFF_C000_0000, 0x8000_0000),
        (MODE_PAE, K4, 0xFFFF_F000, 0x1_0000_0000),
        (MODE_PAE, M2, 0xFFE0_0000, 0x20_0000),
        (MODE_32, K4, 0xFFFF_F000, 0xFFFF_F000),
        (MODE_32, M4, 0xFFC0_0000, 0xFF_FFC0_0000),
    ],
)
def test_map_unmap_round_trip(mode: PagingMode, size: int, va: int, pa: int) -> None:
    pt = make(mode)
    pt.map(va, pa, RW, size)
    off = size - 1
    assert pa_of(pt, va + off) == pa + off
    entry = pt.lookup(va + off)
    assert entry is not None and entry[3] == size
    old = pt.unmap(va, size)
    assert old == entry[2]
    assert pt.lookup(va) is None
    assert absent(pt, va + off)
    assert list(pt.leaves()) == []
    pt._check()
    pt.map(va, pa, 0, size)  # the slot can be used again
    assert pa_of(pt, va) == pa


@pytest.mark.parametrize("mode", [MODE_IA32E, MODE_PAE, MODE_32], ids=lambda m: m.name)
def test_map_range_unmap_range(mode: PagingMode) -> None:
    pt = make(mode)
    va, pa = 0x3F_E000, 0x80_0000  # crosses a page-table boundary (2M in PAE/IA-32e)
    pt.map_range(va, pa, 5 * K4, RW)
    for i in range(5):
        assert pa_of(pt, va + i * K4 + 7) == pa + i * K4 + 7
    assert absent(pt, va - K4) and absent(pt, va + 5 * K4)
    assert [(v, s) for v, _, s in pt.leaves()] == [(va + i * K4, K4) for i in range(5)]
    pt._check()
    old = pt.unmap_range(va + K4, 3 * K4)
    assert old == [(pa + i * K4) | RW | A | P for i in range(1, 4)]  # A: set by the reads above
    assert [v for v, _, _ in pt.leaves()] == [va, va + 4 * K4]
    assert absent(pt, va + 2 * K4)
    pt._check()


def test_map_range_large() -> None:
    pt = make(MODE_IA32E)
    pt.map_range(0x4000_0000, 0x1_0000_0000, 4 * M2, RW, M2)
    assert [e for _, e, _ in pt.leaves()] == [
        (0x1_0000_0000 + i * M2) | PS | RW | P for i in range(4)
    ]
    assert pt.unmap_range(0x4020_0000, 2 * M2, M2) == [
        (0x1_0000_0000 + i * M2) | PS | RW | P for i in (1, 2)
    ]
    assert [v for v, _, _ in pt.leaves()] == [0x4000_0000, 0x4060_0000]


def test_set_flags() -> None:
    pt = make(MODE_IA32E)
    pt.map(0x1000, 0x12_3456_7000, RW | US)
    old = pt.set_flags(0x1000, NX | G)
    assert old == 0x12_3456_7000 | RW | US | P
    assert pt.lookup(0x1000) == ("PT", 0x4000 + 8, 0x12_3456_7000 | NX | G | P, K4)
    res = tr(pt, 0x1000, Access.WRITE)
    assert isinstance(res, PageFault) and res.error_code == 0x3
    pt.map(0x20_0000, 0x60_0000, RW, M2)
    pt.set_flags(0x20_0000, US, M2)
    assert u64(pt, 0x3000 + 8) == 0x60_0000 | PS | US | P
    res = tr(pt, 0x20_0000 + 0x1234, Access.READ, 3)
    assert isinstance(res, Translation) and res.paddr == 0x60_1234
    pt._check()


def test_set_flags_32bit_and_pae() -> None:
    pt = make(MODE_32)
    pt.map(0x40_0000, 0xA5_0000_0000, RW, M4)
    pt.set_flags(0x40_0000, US, M4)
    assert u32(pt, 0x1000 + 4) == (0xA5 << 13) | PS | US | P  # the PSE-36 bits are kept
    assert pa_of(pt, 0x40_0010) == 0xA5_0000_0010
    pt = make(MODE_PAE)
    pt.map(0x1000, 0x5000, RW | NX)
    pt.set_flags(0x1000, US)
    assert pt.lookup(0x1000) == ("PT", 0x3000 + 8, 0x5000 | US | P, K4)


def test_lookup() -> None:
    pt = make(MODE_IA32E)
    assert pt.lookup(0x1000) is None
    pt.map(0x1000, 0x7000, RW)
    assert pt.lookup(0x1FFF) == ("PT", 0x4000 + 1 * 8, 0x7000 | RW | P, K4)
    assert pt.lookup(0x2000) is None
    assert pt.lookup(0x20_0000) is None  # PD entry absent
    pt.map(0x4000_0000, 0x8000_0000, 0, G1)
    assert pt.lookup(0x7FFF_FFFF) == ("PDPT", 0x2000 + 8, 0x8000_0000 | PS | P, G1)
    before = pt.mem.to_image()
    pt.lookup(0x1000)
    assert pt.mem.to_image() == before  # no A/D updates


def test_lookup_32bit_pse_off_ignores_ps() -> None:
    pt = make(MODE_32, pse=False)
    pt.map(0x1000, 0x7000, RW)
    pde = 0x1000 + 0
    pt.mem.write_u32(pde, pt.mem.read_u32(pde) | PS)  # PS is ignored without CR4.PSE
    assert pt.lookup(0x1000) == ("PT", 0x2000 + 4, 0x7000 | RW | P, K4)
    assert [(v, s) for v, _, s in pt.leaves()] == [(0x1000, K4)]


def test_leaves_order_and_sign_extension() -> None:
    pt = make(MODE_IA32E)
    pt.map(0xFFFF_FFFF_FFFF_F000, 0x3000_0000, RW)
    pt.map(0x5000, 0x1000_0000, RW)
    pt.map(0xFFFF_8000_0020_0000, 0x20_0000, RW, M2)
    pt.map(0x7FFF_C000_0000, 0x4000_0000, RW, G1)
    assert [(v, s) for v, _, s in pt.leaves()] == [
        (0x5000, K4),
        (0x7FFF_C000_0000, G1),
        (0xFFFF_8000_0020_0000, M2),
        (0xFFFF_FFFF_FFFF_F000, K4),
    ]


# -------------------------------------------------------------------------------------------------
# _check on corrupted tables
# -------------------------------------------------------------------------------------------------


def built() -> PageTables:
    pt = make(MODE_IA32E)
    pt.map(0x1000, 0x10_0000, RW)
    pt.map(0x20_0000, 0x40_0000, RW, M2)
    pt._check()
    return pt


def test_check_fails_on_pointer_to_non_table() -> None:
    pt = built()
    pt.mem.write_u64(0x3000 + 5 * 8, 0x10_0000 | PTR)  # a PDE pointing at a data frame
    with pytest.raises(AssertionError, match="not a table"):
        pt._check()


@pytest.mark.parametrize(
    ("addr", "value"),
    [
        (0x4000 + 8, 0x10_0000 | RW | P | (1 << 45)),  # PTE, bits 51:40
        (0x3000 + 8, 0x40_0000 | PS | RW | P | (1 << 13)),  # 2M PDE, bits 20:13
        (0x1000, 0x2000 | PTR | PS),  # PML4E PS
        (0x2000, 0x3000 | PTR | (1 << 40)),  # PDPTE, bits 51:40
    ],
)
def test_check_fails_on_reserved_bit(addr: int, value: int) -> None:
    pt = built()
    pt.mem.write_u64(addr, value)
    with pytest.raises(AssertionError, match="reserved"):
        pt._check()


def test_check_fails_on_shared_table_and_unreachable() -> None:
    pt = built()
    pt.mem.write_u64(0x3000 + 9 * 8, 0x4000 | PTR)  # the PT referenced by two PDEs
    with pytest.raises(AssertionError, match="twice"):
        pt._check()
    pt = built()
    pt.mem.write_u64(0x3000, 0)  # the PT is no longer reachable
    with pytest.raises(AssertionError, match="not reachable"):
        pt._check()


def test_check_fails_32bit_and_pae() -> None:
    pt = make(MODE_32)
    pt.map(0x40_0000, 0x40_0000, RW, M4)
    pt._check()
    pt.mem.write_u32(0x1000 + 4, 0x40_0000 | (1 << 21) | PS | RW | P)
    with pytest.raises(AssertionError):
        pt._check()
    pt = make(MODE_PAE)
    pt.map(0x1000, 0x5000, RW)
    pt._check()
    pt.mem.write_u64(0x1000, 0x2000 | P | RW)  # R/W is reserved in a PDPTE
    with pytest.raises(AssertionError):
        pt._check()


# -------------------------------------------------------------------------------------------------
# Property: random non-overlapping mappings in each mode
# -------------------------------------------------------------------------------------------------

SIZES = {MODE_IA32E: (K4, M2, G1), MODE_PAE: (K4, M2), MODE_32: (K4, M4)}
FLAG_BITS = {
    MODE_IA32E: (RW, US, PWT, PCD, A, D, G, NX),
    MODE_PAE: (RW, US, PWT, PCD, A, D, G, NX),
    MODE_32: (RW, US, PWT, PCD, A, D, G),
}


def va_strategy(mode: PagingMode) -> st.SearchStrategy[int]:
    """Linear addresses clustered so that mappings share tables and often collide."""
    if mode is MODE_IA32E:
        top = st.sampled_from([0, 1, 255, 256, 511])
        return st.builds(
            lambda a, b, c, d: (
                (a << 39 | b << 30 | c << 21 | d << 12) | (0xFFFF_0000_0000_0000 if a >= 256 else 0)
            ),
            top,
            st.integers(0, 3) | st.just(511),
            st.integers(0, 3) | st.just(511),
            st.integers(0, 511),
        )
    if mode is MODE_PAE:
        return st.builds(
            lambda a, b, c: a << 30 | b << 21 | c << 12,
            st.integers(0, 3),
            st.integers(0, 3) | st.just(511),
            st.integers(0, 511),
        )
    return st.builds(
        lambda b, c: b << 22 | c << 12,
        st.integers(0, 3) | st.integers(1020, 1023),
        st.integers(0, 1023),
    )


@st.composite
def mapping_strategy(draw: st.DrawFn, mode: PagingMode) -> tuple[int, int, int, int, int, bool]:
    """(va, page size, frame, flags, offset, unmap it again?), va and frame aligned to the size.
    The frame number is drawn log-uniformly, so frames of every magnitude up to 2^40 (PSE-36
    frames above 4 GiB included) turn up; 32-bit 4K frames stay below 4 GiB."""
    size = draw(st.sampled_from(SIZES[mode]))
    va = draw(va_strategy(mode)) & ~(size - 1)
    shift = size.bit_length() - 1
    top = 32 if mode is MODE_32 and size == K4 else 40
    nbits = draw(st.integers(0, top - shift))
    frame = draw(st.integers(0, (1 << nbits) - 1)) << shift
    flags = sum(draw(st.sets(st.sampled_from(FLAG_BITS[mode]))))
    off = draw(st.integers(0, size - 1))
    return va, size, frame, flags, off, draw(st.booleans())


def overlaps(a: int, asize: int, b: int, bsize: int) -> bool:
    return a < b + bsize and b < a + asize


def check_tables(
    pt: PageTables, kept: list[tuple[int, int, int, int, int]], probes: list[int]
) -> None:
    mode = pt.mode
    pt._check()
    leaves = list(pt.leaves())
    assert [(v, s) for v, _, s in leaves] == sorted((va, size) for va, size, *_ in kept)
    by_va = {va: (size, frame, flags) for va, size, frame, flags, _ in kept}
    for v, e, s in leaves:
        size, frame, flags = by_va[v]
        assert leaf_frame(MODE_NAMES[mode], e, s) == frame
        # A may have been set by translate() in an earlier round; the builder never sets it.
        assert e & (0x1FF | NX) & ~A == (flags | P | (PS if s != K4 else 0)) & ~A
    for va, size, frame, _, off in kept:
        res = tr(pt, va + off)
        assert isinstance(res, Translation), (hex(va), res)
        assert res.paddr == frame + off
        assert res.page_size == size
    for probe in probes:
        if not any(overlaps(probe, 1, va, size) for va, size, *_ in kept):
            assert absent(pt, probe), hex(probe)


@pytest.mark.parametrize("mode", [MODE_IA32E, MODE_PAE, MODE_32], ids=lambda m: m.name)
def test_property_random_mappings(mode: PagingMode) -> None:
    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.lists(mapping_strategy(mode), min_size=1, max_size=12),
        st.lists(va_strategy(mode), max_size=8),
    )
    def prop(maps: list[tuple[int, int, int, int, int, bool]], probes: list[int]) -> None:
        pt = PageTables(PhysMem(), mode, frame_counter(), pse=True, nxe=True)
        kept: list[tuple[int, int, int, int, int]] = []
        drop: list[tuple[int, int]] = []
        for va, size, frame, flags, off, unmap in maps:
            if any(overlaps(va, size, k[0], k[1]) for k in kept):
                continue
            pt.map(va, frame, flags, size)
            kept.append((va, size, frame, flags, off))
            if unmap:
                drop.append((va, size))
        check_tables(pt, kept, probes + [va ^ 0x1000 for va, *_ in kept])
        for va, size in drop:
            entry = pt.unmap(va, size)
            assert entry & P
        kept = [k for k in kept if (k[0], k[1]) not in drop]
        check_tables(pt, kept, probes + [va for va, _ in drop])

    prop()


def _tables_bytes(pt: PageTables) -> dict[int, bytes]:
    return {f: pt.mem.read(f, K4) for f in pt.table_frames}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from([MODE_IA32E, MODE_PAE, MODE_32]),
    large=st.booleans(),
    first=st.integers(0, 3000),
    pages=st.integers(0, 1100),
    frame=st.integers(0, 1 << 20),
    taken=st.lists(st.integers(0, 1100), max_size=3),
    flags=st.sampled_from([0, RW, RW | US, US]),
    high=st.booleans(),
)
def test_map_range_is_map_page_by_page(
    mode: PagingMode, large: bool, first: int, pages: int, frame: int, taken: list[int],
    flags: int, high: bool,
) -> None:  # fmt: skip
    """``map_range`` walks once per leaf table: it must write the very bytes, and raise the very
    error after mapping the very pages, that ``map`` page by page does -- across leaf-table
    boundaries, over pages already mapped, and up to the end of the address space."""
    size = (M4 if mode is MODE_32 else M2) if large else K4
    top = (1 << 47) if mode is MODE_IA32E else (1 << 32)
    va = (top - (first + 1) * size) if high else first * size  # near the canonical / 4G end
    pa = frame * size % (1 << 36 if mode is not MODE_32 else 1 << 32)
    outcomes = []
    for bulk in (True, False):
        pt = make(mode)
        for i in taken:  # pages mapped before: a remap error at the first of them in range
            with contextlib.suppress(ValueError):
                pt.map(va + i * size, 0, 0, size)
        error = None
        try:
            if bulk:
                pt.map_range(va, pa, pages * size, flags, size)
            else:
                for i in range(pages):
                    pt.map(va + i * size, pa + i * size, flags, size)
        except ValueError as e:
            error = str(e)
        outcomes.append((error, _tables_bytes(pt), pt.table_frames))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("mode", [MODE_IA32E, MODE_PAE, MODE_32], ids=lambda m: m.name)
def test_clear_is_lookup_then_unmap(mode: PagingMode) -> None:
    """``clear`` (the kernel's arch_mem_unmap) answers and writes what ``lookup`` then
    ``unmap`` would, in one walk."""
    pt = make(mode)
    esize = mode.entry_size
    get = pt.mem.read_u64 if esize == 8 else pt.mem.read_u32
    put = pt.mem.write_u64 if esize == 8 else pt.mem.write_u32
    assert pt.clear(0x40_0000) == 0  # no table on the way
    assert pt.table_frames == [0x1000]  # and none was made
    pt.map(0x40_1000, 0x7000, RW)
    hit = pt.lookup(0x40_1000)
    assert hit is not None
    below = hit[1] - esize  # the entry of 0x40_0000, in the same table
    assert pt.clear(0x40_0000) == 0  # its table exists, its entry is not present
    put(below, 0x5000)  # a non-present entry with frame bits is left as it is
    assert pt.clear(0x40_0000) == 0 and get(below) == 0x5000
    assert pt.clear(0x40_1000) == 0x7000 | RW | P
    assert pt.lookup(0x40_1000) is None and get(hit[1]) == 0
    large = M4 if mode is MODE_32 else M2
    pt.map(0x80_0000, 0x80_0000, RW, large)
    with pytest.raises(ValueError, match="PageTables.unmap: .* lies in a large page"):
        pt.clear(0x80_1000)


@pytest.mark.parametrize("mode", [MODE_IA32E, MODE_PAE, MODE_32], ids=lambda m: m.name)
def test_restore_lays_down_the_tables_a_snapshot_saw(mode: PagingMode) -> None:
    """A boot copies the kernel image's tables (``snapshot`` once, ``restore`` at every later
    boot): the copy must be the very tables mapping gives, and be refused where it would not be."""
    made = make(mode)
    made.map_range(0x40_0000, 0x40_0000, 600 * K4, RW)  # two leaf tables and more
    made.map(0x7FF0_0000, 0x9000, 0)
    image = made.snapshot()
    copy = make(mode)
    copy.restore(image)
    assert copy.table_frames == made.table_frames
    assert _tables_bytes(copy) == _tables_bytes(made)
    for va in (0x40_0000, 0x40_0000 + 599 * K4, 0x7FF0_0000, 0x40_0000 + 600 * K4):
        assert copy.lookup(va) == made.lookup(va)
    copy.map(0x1000_0000, 0x5000, RW)  # the copy's tables are its own from here on
    assert made.lookup(0x1000_0000) is None
    with pytest.raises(ValueError, match="PageTables.restore: the tables are not empty"):
        copy.restore(image)
    other = MODE_PAE if mode is not MODE_PAE else MODE_IA32E
    with pytest.raises(ValueError, match="PageTables.restore: an image of other tables"):
        make(other).restore(image)
    frames = iter(range(0x1000, 0x100000, 0x2000))  # an allocator that gives other frames
    skewed = PageTables(PhysMem(), mode, lambda: next(frames))
    with pytest.raises(ValueError, match="the allocator gave frame 0x3000, the image has 0x2000"):
        skewed.restore(image)


@pytest.mark.parametrize("mode", [MODE_IA32E, MODE_PAE, MODE_32], ids=lambda m: m.name)
def test_digest_is_the_tables_bytes(mode: PagingMode) -> None:
    """``digest`` (what the explorer's fingerprint and the kernel's checks key on): the same
    bytes in the same frames give the same digest in any memory; any byte changed, an accessed
    bit included, gives another; while ``frozen`` it is computed once."""
    made = make(mode)
    made.map_range(0x40_0000, 0x40_0000, 600 * K4, RW)
    copy = make(mode)
    copy.restore(made.snapshot())
    assert copy.digest() == made.digest()
    before = made.digest()
    hit = made.lookup(0x40_1000)
    assert hit is not None
    put = made.mem.write_u64 if mode.entry_size == 8 else made.mem.write_u32
    put(hit[1], hit[2] | 0x20)  # the accessed bit, as a walk sets it
    assert made.digest() != before
    put(hit[1], hit[2])
    assert made.digest() == before
    assert make(MODE_PAE if mode is not MODE_PAE else MODE_32).digest() != make(mode).digest()
    with made.frozen():
        assert made.digest() == before
        put(hit[1], 0)  # not allowed while frozen: the digest stays the first one
        assert made.digest() == before
    assert made.digest() != before  # the block is over: the bytes are read again
