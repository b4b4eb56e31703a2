"""Unit tests for the page walker ``mmusim.hw.walk.translate`` (Intel SDM Vol. 3A §4.3-§4.8).

The page tables here are written by hand, entry by entry, into a ``PhysMem``; the builder in
``mmusim.hw.pagetables`` is not used, so these tests do not depend on it. Every expected value
(error codes, physical addresses, entry values) is a literal or plain arithmetic on the layout
below, taken from the SDM's rules and from error codes observed on Unicorn 2.1.4 -- never
produced by the code under test. The entry bits come from ``helpers``, written out from the SDM.

Layout (one page, one path through the tables per mode)::

    mode    tables (top first)                      VA indexes (top first)     4K frame
    ia32e   PML4 0x1000, PDPT 0x2000, PD 0x3000,    0x0A5, 0x1C3, 0x077, 0x1FE  0x12_3456_7000
            PT 0x4000
    pae     PDPT 0x1000 (4 entries), PD 0x2000,     2, 0x077, 0x1FE             0x12_3456_7000
            PT 0x3000
    32      PD 0x1000, PT 0x2000                    0x2A5, 0x1FE                0x0123_4000
"""

from __future__ import annotations

import dataclasses

import pytest

from helpers import G1, K4, M2, M4, NX, PS, PTR, RW, US, A, D, G, P
from mmusim.hw import (
    GP_VECTOR,
    PF_VECTOR,
    Access,
    ControlState,
    GeneralProtection,
    PageFault,
    PhysMem,
    Result,
    Translation,
    load_pdptes,
    translate,
)

OFF = 0x5A5  # byte offset inside the 4K page

ACCESS = {"r": Access.READ, "w": Access.WRITE, "x": Access.EXEC}


@dataclasses.dataclass(frozen=True)
class Layout:
    tables: tuple[int, ...]
    idx: tuple[int, ...]
    shifts: tuple[int, ...]
    esize: int
    names: tuple[str, ...]
    frame4k: int


LAYOUTS = {
    "ia32e": Layout(
        (0x1000, 0x2000, 0x3000, 0x4000),
        (0x0A5, 0x1C3, 0x077, 0x1FE),
        (39, 30, 21, 12),
        8,
        ("PML4", "PDPT", "PD", "PT"),
        0x12_3456_7000,
    ),
    "pae": Layout(
        (0x1000, 0x2000, 0x3000),
        (2, 0x077, 0x1FE),
        (30, 21, 12),
        8,
        ("PDPT", "PD", "PT"),
        0x12_3456_7000,
    ),
    "32": Layout(
        (0x1000, 0x2000),
        (0x2A5, 0x1FE),
        (22, 12),
        4,
        ("PD", "PT"),
        0x0123_4000,
    ),
}

# Large-page frames (aligned to their size); 4M frame below 4 GiB for 32-bit paging.
FRAME_2M = 0x12_3440_0000
FRAME_1G = 0x12_4000_0000
FRAME_4M = 0x1240_0000
# Frames below 2^36, for MAXPHYADDR = 36 (the frames above have bit 36 set).
LOW_4K, LOW_2M, LOW_1G = 0x3456_7000, 0x3440_0000, 0xC000_0000


@dataclasses.dataclass
class Fx:
    """One hand-built path through the tables of ``mode``."""

    mode: str
    mem: PhysMem
    lay: Layout
    va: int
    addrs: list[int]  # entry address per level written, top first
    leaf_level: int
    page_size: int
    frame: int

    @property
    def pa(self) -> int:
        return self.frame | (self.va & (self.page_size - 1))

    def get(self, level: int) -> int:
        a = self.addrs[level]
        return self.mem.read_u32(a) if self.lay.esize == 4 else self.mem.read_u64(a)

    def set(self, level: int, value: int) -> None:
        a = self.addrs[level]
        if self.lay.esize == 4:
            self.mem.write_u32(a, value)
        else:
            self.mem.write_u64(a, value)

    def ctl(self, **flags: bool | int) -> ControlState:
        return ControlState.for_mode(self.mode, self.lay.tables[0], **flags)

    def run(self, access: str = "r", cpl: int = 0, va: int | None = None, **flags: bool | int):
        return translate(
            self.mem, self.ctl(**flags), self.va if va is None else va, ACCESS[access], cpl
        )


def build(
    mode: str,
    flags: list[int] | None = None,
    *,
    large: int | None = None,
    frame: int | None = None,
    high_half: bool = False,
) -> Fx:
    """Write one path. ``flags[i]`` are the bits of the entry at level i (address added here). If
    ``large`` is a level index, that entry is a PS=1 leaf and the walk ends there."""
    lay = LAYOUTS[mode]
    n = len(lay.tables)
    leaf = n - 1 if large is None else large
    if flags is None:
        flags = [P if (mode == "pae" and i == 0) else PTR for i in range(leaf + 1)]
    assert len(flags) == leaf + 1
    mem = PhysMem()
    idx = list(lay.idx)
    if high_half:
        idx[0] |= 0x100
    va = sum(i << s for i, s in zip(idx, lay.shifts, strict=True)) + OFF
    if high_half:
        va |= 0xFFFF_0000_0000_0000
    size = 1 << lay.shifts[leaf]
    if frame is None:
        frame = {K4: lay.frame4k, M2: FRAME_2M, M4: FRAME_4M, G1: FRAME_1G}[size]
    addrs = [lay.tables[i] + idx[i] * lay.esize for i in range(leaf + 1)]
    fx = Fx(mode, mem, lay, va, addrs, leaf, size, frame)
    for i in range(leaf + 1):
        if i < leaf:
            value = lay.tables[i + 1] | flags[i]
        elif large is not None:
            value = frame | PS | flags[i]
        else:
            value = frame | flags[i]
        fx.set(i, value)
    return fx


def outcome(fx: Fx, res: Result) -> str | int:
    """ "ok" (after checking the PA), "GP", or the #PF error code (after checking vector and CR2)."""
    if isinstance(res, Translation):
        assert res.paddr == fx.pa
        return "ok"
    if isinstance(res, PageFault):
        assert res.vector == PF_VECTOR == 14
        assert res.cr2 == fx.va
        return res.error_code
    assert isinstance(res, GeneralProtection)
    assert res.vector == GP_VECTOR == 13
    assert res.error_code == 0
    return "GP"


# -------------------------------------------------------------------------------------------------
# Access rights, every combination (Intel SDM Vol. 3A §4.6)
# -------------------------------------------------------------------------------------------------

ok = "ok"
ROWS = {  # name: (Ueff, Weff, XDeff)
    "S-RO-X": (0, 0, 0),
    "S-RW-X": (0, 1, 0),
    "S-RW-XD": (0, 1, 1),
    "U-RO-X": (1, 0, 0),
    "U-RW-X": (1, 1, 0),
    "U-RW-XD": (1, 1, 1),
}
COLS = [(0, "r"), (0, "w"), (0, "x"), (3, "r"), (3, "w"), (3, "x")]

# Columns: CPL0 r, w, x, CPL3 r, w, x.
BASE = {
    "S-RO-X": (ok, 0x3, ok, 0x5, 0x7, 0x15),
    "S-RW-X": (ok, ok, ok, 0x5, 0x7, 0x15),
    "S-RW-XD": (ok, ok, 0x11, 0x5, 0x7, 0x15),
    "U-RO-X": (ok, 0x3, ok, ok, 0x7, ok),
    "U-RW-X": (ok, ok, ok, ok, ok, ok),
    "U-RW-XD": (ok, ok, 0x11, ok, ok, 0x15),
}
WP0 = {
    **BASE,
    "S-RO-X": (ok, ok, ok, 0x5, 0x7, 0x15),
    "U-RO-X": (ok, ok, ok, ok, 0x7, ok),
}
SMEP = {
    **BASE,
    "U-RO-X": (ok, 0x3, 0x11, ok, 0x7, ok),
    "U-RW-X": (ok, ok, 0x11, ok, ok, ok),
    "U-RW-XD": (ok, ok, 0x11, ok, ok, 0x15),
}
SMAP_AC0 = {
    **BASE,
    "U-RO-X": (0x1, 0x3, ok, ok, 0x7, ok),
    "U-RW-X": (0x1, 0x3, ok, ok, ok, ok),
    "U-RW-XD": (0x1, 0x3, 0x11, ok, ok, 0x15),
}
SMAP_AC0_WP0 = {**SMAP_AC0, "S-RO-X": (ok, ok, ok, 0x5, 0x7, 0x15)}
NXE0 = {
    "S-RO-X": (ok, 0x3, ok, 0x5, 0x7, 0x5),
    "S-RW-X": (ok, ok, ok, 0x5, 0x7, 0x5),
    "S-RW-XD": (0x9, 0xB, 0x9, 0xD, 0xF, 0xD),
    "U-RO-X": (ok, 0x3, ok, ok, 0x7, ok),
    "U-RW-X": (ok, ok, ok, ok, ok, ok),
    "U-RW-XD": (0x9, 0xB, 0x9, 0xD, 0xF, 0xD),
}
NXE0_SMEP = {  # SMEP=1 brings I/D back for every fetch fault (Intel SDM Vol. 3A §4.7)
    "S-RO-X": (ok, 0x3, ok, 0x5, 0x7, 0x15),
    "S-RW-X": (ok, ok, ok, 0x5, 0x7, 0x15),
    "S-RW-XD": (0x9, 0xB, 0x19, 0xD, 0xF, 0x1D),
    "U-RO-X": (ok, 0x3, 0x11, ok, 0x7, ok),
    "U-RW-X": (ok, ok, 0x11, ok, ok, ok),
    "U-RW-XD": (0x9, 0xB, 0x19, 0xD, 0xF, 0x1D),
}
BIT32 = {  # 32-bit paging: no XD rows, no I/D without SMEP
    "S-RO-X": (ok, 0x3, ok, 0x5, 0x7, 0x5),
    "S-RW-X": (ok, ok, ok, 0x5, 0x7, 0x5),
    "U-RO-X": (ok, 0x3, ok, ok, 0x7, ok),
    "U-RW-X": (ok, ok, ok, ok, ok, ok),
}
BIT32_SMEP = {
    "S-RO-X": (ok, 0x3, ok, 0x5, 0x7, 0x15),
    "S-RW-X": (ok, ok, ok, 0x5, 0x7, 0x15),
    "U-RO-X": (ok, 0x3, 0x11, ok, 0x7, ok),
    "U-RW-X": (ok, ok, 0x11, ok, ok, ok),
}

BASE_FLAGS = {"nxe": True, "wp": True, "smep": False, "smap": False}
MODIFIERS: dict[str, tuple[dict[str, bool], dict[str, tuple[str | int, ...]]]] = {
    "baseline": ({}, BASE),
    "wp0": ({"wp": False}, WP0),
    "smep": ({"smep": True}, SMEP),
    "smap-ac0": ({"smap": True, "ac": False}, SMAP_AC0),
    "smap-ac1": ({"smap": True, "ac": True}, BASE),
    "smap-ac0-wp0": ({"smap": True, "wp": False}, SMAP_AC0_WP0),
    "smap-ac1-wp0": ({"smap": True, "ac": True, "wp": False}, WP0),
    "nxe0": ({"nxe": False}, NXE0),
    "nxe0-smep": ({"nxe": False, "smep": True}, NXE0_SMEP),
}


def rights_flags(mode: str, row: str, placement: str, large: int | None = None) -> list[int]:
    """Entry flags giving the effective rights of ``row``. "leaf": all rights in the leaf;
    "upper": each restriction in a different upper entry, the leaf permissive."""
    u, w, xd = ROWS[row]
    n = len(LAYOUTS[mode].tables) if large is None else large + 1
    flags = [P if (mode == "pae" and i == 0) else PTR for i in range(n)]
    if placement == "leaf":
        flags[-1] = P | (US if u else 0) | (RW if w else 0) | (NX if xd else 0)
        return flags
    # upper
    slots = {"ia32e": (0, 1, 2), "pae": (1, 1, 1), "32": (0, 0, 0)}[mode]
    if not u:
        flags[slots[0]] &= ~US
    if not w:
        flags[slots[1]] &= ~RW
    if xd:
        flags[slots[2]] |= NX
    return flags


def matrix_cases(tables: dict[str, tuple[str | int, ...]]) -> list[tuple]:
    """One (row, CPL, access, expected outcome) case per cell of ``tables``."""
    return [(row, cpl, acc, tables[row][c]) for row in tables for c, (cpl, acc) in enumerate(COLS)]


def run_matrix(
    mode: str, placement: str, table: dict[str, tuple[str | int, ...]], flags: dict[str, bool]
) -> dict[str, tuple[str | int, ...]]:
    """Every cell of ``table``'s rows, each on freshly built tables under control ``flags``: the
    outcomes laid out as ``table`` is, so that the two compare with one ``==``."""
    got = {}
    for row in table:
        cells = []
        for cpl, acc in COLS:
            fx = build(mode, rights_flags(mode, row, placement))
            cells.append(outcome(fx, fx.run(acc, cpl, **flags)))
        got[row] = tuple(cells)
    return got


@pytest.mark.parametrize("placement", ["leaf", "upper"])
@pytest.mark.parametrize(("row", "cpl", "acc", "expected"), matrix_cases(BASE))
def test_outcome_matrix_ia32e(
    row: str, cpl: int, acc: str, expected: str | int, placement: str
) -> None:
    fx = build("ia32e", rights_flags("ia32e", row, placement))
    assert outcome(fx, fx.run(acc, cpl, **BASE_FLAGS)) == expected


@pytest.mark.parametrize(("large", "size"), [(2, M2), (1, G1)], ids=["2M", "1G"])
@pytest.mark.parametrize(("row", "cpl", "acc", "expected"), matrix_cases(BASE))
def test_outcome_matrix_ia32e_large_leaf(
    row: str, cpl: int, acc: str, expected: str | int, large: int, size: int
) -> None:
    fx = build("ia32e", rights_flags("ia32e", row, "leaf", large=large), large=large)
    assert fx.page_size == size
    assert outcome(fx, fx.run(acc, cpl, **BASE_FLAGS)) == expected


@pytest.mark.parametrize("placement", ["leaf", "upper"])
@pytest.mark.parametrize("modifier", [m for m in MODIFIERS if m != "baseline"])
def test_outcome_matrix_modifiers_ia32e(modifier: str, placement: str) -> None:
    mod, table = MODIFIERS[modifier]
    assert run_matrix("ia32e", placement, table, {**BASE_FLAGS, **mod}) == table


@pytest.mark.parametrize("placement", ["leaf", "upper"])
@pytest.mark.parametrize(
    ("modifier", "flags", "table"),
    [
        ("baseline", {"nxe": True}, BASE),
        ("nxe0", {"nxe": False}, NXE0),
        ("wp0", {"nxe": True, "wp": False}, WP0),
        ("smep", {"nxe": True, "smep": True}, SMEP),
        ("smap-ac0", {"nxe": True, "smap": True}, SMAP_AC0),
    ],
)
def test_outcome_matrix_pae(modifier: str, flags: dict[str, bool], table: dict, placement: str):
    assert run_matrix("pae", placement, table, flags) == table


@pytest.mark.parametrize("placement", ["leaf", "upper"])
@pytest.mark.parametrize(
    ("modifier", "flags", "table"),
    [
        ("baseline", {}, BIT32),
        ("nxe-without-pae", {"nxe": True}, BIT32),  # EFER.NXE has no effect without PAE
        ("smep", {"smep": True}, BIT32_SMEP),
        (
            "wp0",
            {"wp": False},
            {
                **BIT32,
                "S-RO-X": (ok, ok, ok, 0x5, 0x7, 0x5),
                "U-RO-X": (ok, ok, ok, ok, 0x7, ok),
            },
        ),
    ],
)
def test_outcome_matrix_32bit(modifier: str, flags: dict[str, bool], table: dict, placement: str):
    assert run_matrix("32", placement, table, flags) == table


def test_32bit_bit63_does_not_exist() -> None:
    # 4-byte entries: there is no XD bit; a fetch from a user page at CPL3 always succeeds.
    fx = build("32", [PTR, P | US])
    assert outcome(fx, fx.run("x", 3, nxe=True)) == "ok"


# -------------------------------------------------------------------------------------------------
# Error codes observed on Unicorn 2.1.4 (every row; test_differential replays them)
# -------------------------------------------------------------------------------------------------


_F45 = {"nxe": True, "wp": True}  # the controls of most rows


@dataclasses.dataclass(frozen=True)
class Row45:
    """One observed case: the entries to ``build`` (flags per level), the access, its outcome."""

    name: str
    entries: tuple[int, ...]
    acc: str
    cpl: int
    expected: str | int
    mode: str = "ia32e"
    large: int | None = None
    ctl: dict[str, bool] = dataclasses.field(default_factory=lambda: _F45)


SUP_RW, SUP_RO = (PTR, PTR, PTR, P | RW), (PTR, PTR, PTR, P)
USER_RO, USER_RW = (PTR, PTR, PTR, P | US), (PTR, PTR, PTR, P | RW | US)
OBSERVED_45 = [
    Row45("sup-rw-read", SUP_RW, "r", 0, ok),
    Row45("sup-rw-write", SUP_RW, "w", 0, ok),
    Row45("sup-ro-write-cpl0", SUP_RO, "w", 0, 0x3),
    Row45("sup-read-cpl3", SUP_RW, "r", 3, 0x5),
    Row45("sup-ro-write-cpl3", SUP_RO, "w", 3, 0x7),
    Row45("user-ro-write-cpl3", USER_RO, "w", 3, 0x7),
    Row45("user-ro-write-cpl0", USER_RO, "w", 0, 0x3),
    Row45("pde-us0-above-user-pte", (PTR, PTR, P | RW, P | RW | US), "r", 3, 0x5),
    Row45("pte-p0-read-cpl0", (PTR, PTR, PTR, RW | US), "r", 0, 0x0),
    Row45("pte-p0-write-cpl3", (PTR, PTR, PTR, RW | US), "w", 3, 0x6),
    Row45("pml4e-p0-read", (RW | US, PTR, PTR, PTR), "r", 0, 0x0),
    Row45("xd-fetch-cpl0", (PTR, PTR, PTR, P | RW | NX), "x", 0, 0x11),
    Row45("pte-p0-fetch-cpl0", (PTR, PTR, PTR, 0), "x", 0, 0x10),
    Row45("user-fetch-cpl0-smep0", USER_RW, "x", 0, ok),
    Row45("pte-bit45", (PTR, PTR, PTR, P | RW | (1 << 45)), "r", 0, 0x9),
    Row45("pml4e-ps", (PTR | PS, PTR, PTR, P | RW), "r", 0, 0x9),
    Row45("2m-pde-bit13", (PTR, PTR, P | RW | (1 << 13)), "r", 0, 0x9, large=2),
    Row45("2m-read-cpl3", (PTR, PTR, P | US), "r", 3, ok, large=2),
    Row45("1g-read-cpl0", (PTR, P | RW), "r", 0, ok, large=1),
    Row45("wp0-sup-ro-write", SUP_RO, "w", 0, ok, ctl={**_F45, "wp": False}),
    Row45("wp0-user-ro-write-cpl3", USER_RO, "w", 3, 0x7, ctl={**_F45, "wp": False}),
    Row45("smep-user-fetch", USER_RW, "x", 0, 0x11, ctl={**_F45, "smep": True}),
    Row45("smap-ac0-read", USER_RW, "r", 0, 0x1, ctl={**_F45, "smap": True}),
    Row45("smap-ac0-write", USER_RW, "w", 0, 0x3, ctl={**_F45, "smap": True}),
    Row45("smap-ac1-read", USER_RW, "r", 0, ok, ctl={**_F45, "smap": True, "ac": True}),
    Row45("nxe0-xd-read", (PTR, PTR, PTR, P | RW | NX), "r", 0, 0x9, ctl={**_F45, "nxe": False}),
    Row45("nxe0-pte-p0-fetch", (PTR, PTR, PTR, 0), "x", 0, 0x0, ctl={**_F45, "nxe": False}),
    Row45("pae-user-xd-fetch-cpl3", (P, PTR, P | RW | US | NX), "x", 3, 0x15, mode="pae"),
    Row45("pae-sup-read-cpl3", (P, PTR, P | RW), "r", 3, 0x5, mode="pae"),
    Row45("32-user-ro-write-cpl3", (PTR, P | US), "w", 3, 0x7, mode="32", ctl={}),
    Row45(
        "32-pse-4m-bit21", (P | RW | (1 << 21),), "r", 0, 0x9, mode="32", large=0, ctl={"pse": True}
    ),
    Row45("32-not-present-fetch", (PTR, 0), "x", 0, 0x0, mode="32", ctl={}),
]


@pytest.mark.parametrize("row", OBSERVED_45, ids=lambda row: row.name)
def test_observed_error_codes(row: Row45) -> None:
    fx = build(row.mode, list(row.entries), large=row.large)
    assert outcome(fx, fx.run(row.acc, row.cpl, **row.ctl)) == row.expected


@pytest.mark.parametrize(
    "va", [0x0000_8000_0000_0000, 0xFFFF_7FFF_FFFF_F000, 1 << 63, 0x0001_0000_0000_0000]
)
@pytest.mark.parametrize("acc", ["r", "w", "x"])
def test_non_canonical_is_gp_vector_13(va: int, acc: str) -> None:
    fx = build("ia32e")
    before = fx.mem.to_image()
    res = fx.run(acc, 0, va=va, nxe=True)
    assert isinstance(res, GeneralProtection)
    assert res.vector == 13
    assert res.error_code == 0
    assert res.vaddr == va
    assert fx.mem.to_image() == before  # no walk, no A bits


def test_canonical_high_half_translates() -> None:
    fx = build("ia32e", high_half=True)
    assert fx.va >> 47 == 0x1FFFF
    assert fx.addrs[0] == 0x1000 + 0x1A5 * 8
    assert outcome(fx, fx.run("r", 0)) == "ok"


def test_32bit_modes_reject_wide_linear_addresses() -> None:
    for mode in ("32", "pae"):
        fx = build(mode)
        with pytest.raises(ValueError):
            fx.run("r", 0, va=1 << 32)


# -------------------------------------------------------------------------------------------------
# Order of checks: not present, then reserved bits, then rights (Intel SDM Vol. 3A §4.7)
# -------------------------------------------------------------------------------------------------


def test_not_present_below_restrictive_pde_is_p0() -> None:
    fx = build("ia32e", [PTR, PTR, P | RW, RW | US])  # PDE U/S=0, PTE P=0
    assert outcome(fx, fx.run("r", 3)) == 0x4
    fx = build("ia32e", [PTR, P | US, PTR, US])  # PDPTE R/W=0, PTE P=0
    assert outcome(fx, fx.run("w", 3)) == 0x6


def test_not_present_below_xd_pde_is_p0_with_id() -> None:
    fx = build("ia32e", [PTR, PTR, PTR | NX, 0])
    assert outcome(fx, fx.run("x", 0, nxe=True)) == 0x10


def test_reserved_bit_in_upper_entry_hides_not_present_below() -> None:
    fx = build("ia32e", [PTR | (1 << 45), PTR, PTR, 0])
    # The PDPT, PD and PT are all empty below too: the PML4E alone decides.
    fx.mem.write_u64(fx.addrs[1], 0)
    res = fx.run("r", 0)
    assert outcome(fx, res) == 0x9
    assert isinstance(res, PageFault) and res.level == "PML4" and res.reason == "reserved-bit"
    fx = build("ia32e", [PTR, PTR, PTR | (1 << 51), 0])  # reserved PDE, PTE P=0
    assert outcome(fx, fx.run("w", 3)) == 0xF


def test_reserved_bit_beats_protection() -> None:
    # CPL3 read of a supervisor page whose PTE also has a reserved bit: RSVD, not a rights fault.
    fx = build("ia32e", [PTR, PTR, PTR, P | (1 << 45)])
    res = fx.run("r", 3)
    assert outcome(fx, res) == 0xD
    assert isinstance(res, PageFault) and res.reason == "reserved-bit"


def test_not_present_upper_hides_reserved_below() -> None:
    fx = build("ia32e", [PTR, RW | US, PTR, P | (1 << 45)])  # PDPTE P=0
    res = fx.run("r", 0)
    assert outcome(fx, res) == 0x0
    assert isinstance(res, PageFault) and res.level == "PDPT" and res.reason == "not-present"


def test_reserved_bits_ignored_when_not_present() -> None:
    # P=0: every other bit is software's; a not-present fault, not RSVD.
    fx = build("ia32e", [PTR, PTR, PTR, ((1 << 51) | (1 << 7) | 0xFFE) & ~P])
    assert outcome(fx, fx.run("r", 0, nxe=False)) == 0x0


# -------------------------------------------------------------------------------------------------
# Reserved bits, per mode and level (Intel SDM Vol. 3A §4.3-§4.5, RSVD in §4.7)
# -------------------------------------------------------------------------------------------------

# (level index, bit, maxphyaddr, nxe, expected outcome) for the 4K path in IA-32e.
IA32E_4K_BITS = [
    (0, 7, 40, True, 0x9),  # PS in a PML4E is reserved
    (0, 40, 40, True, 0x9),
    (0, 45, 40, True, 0x9),
    (0, 51, 40, True, 0x9),
    (0, 52, 40, True, ok),  # 62:52 ignored (and not part of the table address)
    (0, 58, 40, True, ok),
    (0, 62, 40, True, ok),
    (0, 6, 40, True, ok),  # D/G bits of a table pointer are ignored
    (0, 8, 40, True, ok),
    (0, 11, 40, True, ok),
    (0, 63, 40, False, 0x9),  # XD reserved without NXE
    (0, 63, 40, True, ok),
    (1, 40, 40, True, 0x9),
    (1, 51, 40, True, 0x9),
    (1, 52, 40, True, ok),
    (1, 62, 40, True, ok),
    (1, 63, 40, False, 0x9),
    (2, 40, 40, True, 0x9),
    (2, 47, 40, True, 0x9),
    (2, 57, 40, True, ok),
    (2, 63, 40, False, 0x9),
    (3, 40, 40, True, 0x9),
    (3, 45, 40, True, 0x9),
    (3, 51, 40, True, 0x9),
    (3, 52, 40, True, ok),
    (3, 62, 40, True, ok),
    (3, 7, 40, True, ok),  # PAT in a PTE, not PS
    (3, 8, 40, True, ok),
    (3, 63, 40, False, 0x9),
    # MAXPHYADDR = 36: bits 51:36 reserved.
    (3, 36, 36, True, 0x9),
    (3, 39, 36, True, 0x9),
    (0, 36, 36, True, 0x9),
    (2, 38, 36, True, 0x9),
    (3, 35, 36, True, ok),  # a frame bit
    # MAXPHYADDR = 52: nothing below 52 is reserved.
    (3, 51, 52, True, ok),
    (3, 45, 52, True, ok),
    (3, 52, 52, True, ok),
    (0, 7, 52, True, 0x9),
]


@pytest.mark.parametrize(("level", "bit", "m", "nxe", "expected"), IA32E_4K_BITS)
def test_reserved_bits_ia32e_4k(level: int, bit: int, m: int, nxe: bool, expected) -> None:
    frame = LOW_4K if m < 40 else None
    flags = [PTR, PTR, PTR, P | RW]
    control = build("ia32e", flags, frame=frame)
    assert outcome(control, control.run("r", 0, maxphyaddr=m, nxe=nxe)) == "ok"
    flags[level] |= 1 << bit
    fx = build("ia32e", flags, frame=frame)
    if level == 3 and expected == ok and bit < 52 and bit not in (7, 8, 63):
        fx.frame |= 1 << bit  # a legal frame bit moves the PA
    res = fx.run("r", 0, maxphyaddr=m, nxe=nxe)
    assert outcome(fx, res) == expected
    if expected != ok:
        assert isinstance(res, PageFault)
        assert res.level == ("PML4", "PDPT", "PD", "PT")[level]
        assert res.reason == "reserved-bit"
        assert res.entry == fx.get(level)


def test_ia32e_maxphyaddr_52_upper_address_bit_is_an_address() -> None:
    # M=52: PML4E bit 51 is an address bit, so the PDPT is read at 2^51 + 0x2000 (empty): P=0.
    fx = build("ia32e", [PTR | (1 << 51), PTR, PTR, P | RW])
    res = fx.run("r", 0, maxphyaddr=52)
    assert outcome(fx, res) == 0x0
    assert isinstance(res, PageFault)
    assert res.level == "PDPT"
    assert res.entry_addr == (1 << 51) + 0x2000 + 0x1C3 * 8
    # M=40: the same bit is reserved.
    assert outcome(fx, fx.run("r", 0, maxphyaddr=40)) == 0x9


def test_ia32e_maxphyaddr_52_frame_bit() -> None:
    fx = build("ia32e", [PTR, PTR, PTR, P], frame=(1 << 51) | 0x7000)
    res = fx.run("r", 0, maxphyaddr=52)
    assert isinstance(res, Translation)
    assert res.paddr == (1 << 51) | 0x7000 | OFF


# 1G leaf (PDPTE with PS=1) and 2M leaf (PDE with PS=1).
LARGE_BITS = [
    # (large level, bit, maxphyaddr, expected, moves the PA?)
    (1, 13, 40, 0x9, False),
    (1, 17, 40, 0x9, False),
    (1, 21, 40, 0x9, False),
    (1, 29, 40, 0x9, False),
    (1, 12, 40, ok, False),  # PAT
    (1, 30, 40, ok, True),
    (1, 39, 40, ok, True),
    (1, 40, 40, 0x9, False),
    (1, 51, 40, 0x9, False),
    (1, 55, 40, ok, False),
    (1, 36, 36, 0x9, False),
    (2, 13, 40, 0x9, False),
    (2, 16, 40, 0x9, False),
    (2, 20, 40, 0x9, False),
    (2, 12, 40, ok, False),  # PAT, not a frame bit
    (2, 21, 40, ok, True),
    (2, 39, 40, ok, True),
    (2, 40, 40, 0x9, False),
    (2, 51, 40, 0x9, False),
    (2, 60, 40, ok, False),
    (2, 38, 36, 0x9, False),
    (2, 45, 52, ok, True),
]


@pytest.mark.parametrize(("large", "bit", "m", "expected", "moves"), LARGE_BITS)
def test_reserved_bits_ia32e_large(large: int, bit: int, m: int, expected, moves: bool) -> None:
    frame = (LOW_1G if large == 1 else LOW_2M) if m < 40 else None
    flags = [PTR] * large + [P | RW]
    control = build("ia32e", flags, large=large, frame=frame)
    assert outcome(control, control.run("r", 0, maxphyaddr=m)) == "ok"
    flags[large] |= 1 << bit
    fx = build("ia32e", flags, large=large, frame=frame)
    if moves:
        fx.frame |= 1 << bit
    res = fx.run("r", 0, maxphyaddr=m)
    assert outcome(fx, res) == expected
    if expected != ok:
        assert isinstance(res, PageFault) and res.level == ("PDPT", "PD")[large - 1]


def test_ia32e_1g_without_page1gb_is_reserved() -> None:
    fx = build("ia32e", [PTR, P | RW], large=1)
    assert outcome(fx, fx.run("r", 0)) == "ok"
    res = fx.run("r", 0, page1gb=False)
    assert outcome(fx, res) == 0x9
    assert isinstance(res, PageFault) and res.level == "PDPT"


def test_large_page_pat_bit_not_in_pa() -> None:
    fx = build("ia32e", [PTR, PTR, P | (1 << 12)], large=2)
    res = fx.run("r", 0)
    assert isinstance(res, Translation)
    assert res.paddr == FRAME_2M + ((0x1FE << 12) | OFF)
    assert res.page_size == M2


# PAE (M=40): 62:40 reserved in PDE/PTE; 2M PDE 20:13.
PAE_BITS = [
    (1, 40, 40, True, 0x9),
    (1, 52, 40, True, 0x9),  # ignored in IA-32e, reserved in PAE
    (1, 62, 40, True, 0x9),
    (1, 63, 40, False, 0x9),
    (1, 63, 40, True, ok),
    (1, 6, 40, True, ok),
    (1, 8, 40, True, ok),
    (2, 40, 40, True, 0x9),
    (2, 52, 40, True, 0x9),
    (2, 58, 40, True, 0x9),
    (2, 62, 40, True, 0x9),
    (2, 63, 40, False, 0x9),
    (2, 7, 40, True, ok),  # PAT
    (2, 36, 36, True, 0x9),
    (2, 51, 52, True, ok),
    (2, 62, 52, True, 0x9),
]


@pytest.mark.parametrize(("level", "bit", "m", "nxe", "expected"), PAE_BITS)
def test_reserved_bits_pae(level: int, bit: int, m: int, nxe: bool, expected) -> None:
    frame = LOW_4K if m < 40 else None
    flags = [P, PTR, P | RW]
    control = build("pae", flags, frame=frame)
    assert outcome(control, control.run("r", 0, maxphyaddr=m, nxe=nxe)) == "ok"
    flags[level] |= 1 << bit
    fx = build("pae", flags, frame=frame)
    if level == 2 and bit == 51:
        fx.frame |= 1 << 51
    res = fx.run("r", 0, maxphyaddr=m, nxe=nxe)
    assert outcome(fx, res) == expected
    if expected != ok:
        assert isinstance(res, PageFault) and res.level == ("PDPT", "PD", "PT")[level]


@pytest.mark.parametrize(
    ("bit", "expected", "moves"),
    [(13, 0x9, False), (20, 0x9, False), (12, ok, False), (21, ok, True), (40, 0x9, False),
     (52, 0x9, False), (62, 0x9, False)],
)  # fmt: skip
def test_reserved_bits_pae_2m(bit: int, expected, moves: bool) -> None:
    fx = build("pae", [P, P | RW | (1 << bit)], large=1)
    if moves:
        fx.frame |= 1 << bit
    assert outcome(fx, fx.run("r", 0, nxe=True)) == expected


def test_pae_ps_is_large_page_whatever_pse() -> None:
    fx = build("pae", [P, P | RW], large=1)
    for pse in (False, True):
        res = fx.run("r", 0, pse=pse)
        assert isinstance(res, Translation)
        assert res.page_size == M2
        assert res.paddr == FRAME_2M | (0x1FE << 12) | OFF


# 32-bit paging.


def test_32bit_pse0_ps_ignored() -> None:
    fx = build("32", [PTR | PS, P | RW])  # PDE says PS=1, but PSE=0: it points to the PT
    res = fx.run("r", 0, pse=False)
    assert outcome(fx, res) == "ok"
    assert isinstance(res, Translation) and res.page_size == K4
    assert [e[0] for e in res.entries] == ["PD", "PT"]


def test_32bit_pse0_no_reserved_bits_anywhere() -> None:
    fx = build("32", [PTR | 0xE00 | PS, P | RW | 0xFC0])  # every flag-area bit set
    assert outcome(fx, fx.run("r", 0, pse=False)) == "ok"


def test_32bit_pse1_4m_page() -> None:
    fx = build("32", [P | RW | US], large=0)
    res = fx.run("r", 3, pse=True)
    assert isinstance(res, Translation)
    assert res.page_size == M4
    assert res.paddr == FRAME_4M | (0x1FE << 12) | OFF
    assert len(res.entries) == 1


def test_32bit_pse36_decoding() -> None:
    # PDE bits 20:13 = 0xA5 -> PA bits 39:32 = 0xA5.
    fx = build("32", [P | RW | (0xA5 << 13)], large=0)
    fx.frame = 0xA5_0000_0000 | FRAME_4M
    res = fx.run("r", 0, pse=True)
    assert outcome(fx, res) == "ok"
    assert isinstance(res, Translation)
    assert res.paddr == 0xA5_1240_0000 | (0x1FE << 12) | OFF


@pytest.mark.parametrize(
    ("bits", "m", "expected", "pa_high"),
    [
        (1 << 21, 40, 0x9, 0),
        (1 << 21, 52, 0x9, 0),  # M capped at 40 for PSE-36
        (0xFF << 13, 40, ok, 0xFF),
        (0xFF << 13, 52, ok, 0xFF),
        (1 << 17, 36, 0x9, 0),  # 21:17 reserved at M=36
        (1 << 20, 36, 0x9, 0),
        (0xF << 13, 36, ok, 0xF),  # 16:13 -> PA 35:32
        (1 << 13, 32, 0x9, 0),  # 21:13 reserved at M=32
        (1 << 12, 40, ok, 0),  # PAT
    ],
)
def test_32bit_4m_reserved_and_pse36(bits: int, m: int, expected, pa_high: int) -> None:
    fx = build("32", [P | RW | bits], large=0)
    fx.frame = (pa_high << 32) | FRAME_4M
    assert outcome(fx, fx.run("r", 0, pse=True, maxphyaddr=m)) == expected


def test_32bit_pte_bit7_is_pat() -> None:
    fx = build("32", [PTR, P | RW | PS])
    assert outcome(fx, fx.run("r", 0, pse=True)) == "ok"


def test_32bit_4m_pde_bit21_with_pse0_is_table_address() -> None:
    # With PSE=0, PDE bit 21 is an address bit of the page table: the PT is read elsewhere.
    fx = build("32", [PTR | PS | (1 << 21), P | RW])
    res = fx.run("r", 0, pse=False)
    assert outcome(fx, res) == 0x0
    assert isinstance(res, PageFault)
    assert res.entry_addr == 0x2000 + (1 << 21) + 0x1FE * 4


# -------------------------------------------------------------------------------------------------
# PAE PDPTE registers (Intel SDM Vol. 3A §4.4.1)
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bit", [1, 2, 5, 6, 7, 8, 40, 52, 62, 63])
def test_pae_pdpte_reserved_bits_give_gp(bit: int) -> None:
    fx = build("pae", [P | (1 << bit), PTR, P | RW])
    ctl = fx.ctl(nxe=True)
    loaded = load_pdptes(fx.mem, ctl)
    assert isinstance(loaded, GeneralProtection)
    assert loaded.vector == 13 and loaded.error_code == 0
    for acc in "rwx":
        res = fx.run(acc, 0, nxe=True)
        assert isinstance(res, GeneralProtection)
        assert res.vector == 13


@pytest.mark.parametrize("bit", [3, 4, 9, 10, 11])
def test_pae_pdpte_pwt_pcd_and_ignored_bits_ok(bit: int) -> None:
    fx = build("pae", [P | (1 << bit), PTR, P | RW])
    assert not isinstance(load_pdptes(fx.mem, fx.ctl()), GeneralProtection)
    assert outcome(fx, fx.run("r", 0)) == "ok"


def test_pae_pdpte_reserved_bits_at_m36() -> None:
    fx = build("pae", [P | (1 << 36), PTR, P | RW])
    assert isinstance(load_pdptes(fx.mem, fx.ctl(maxphyaddr=36)), GeneralProtection)
    assert not isinstance(load_pdptes(fx.mem, fx.ctl(maxphyaddr=40)), GeneralProtection)


def test_pae_pdpte_gp_from_another_slot() -> None:
    # Any present PDPTE with a reserved bit fails the load, even one the access does not use.
    fx = build("pae")
    fx.mem.write_u64(0x1000 + 0 * 8, 0x5000 | P | RW)
    assert isinstance(fx.run("r", 0), GeneralProtection)
    # Not present: its other bits are ignored.
    fx.mem.write_u64(0x1000 + 0 * 8, 0xFFFF_FFFF_FFFF_FFFE)
    assert outcome(fx, fx.run("r", 0)) == "ok"


def test_pae_pdpte_not_present_is_pf() -> None:
    fx = build("pae", [RW | US | (1 << 7), PTR, P | RW])  # P=0 with reserved bits: no #GP
    ctl = fx.ctl(nxe=True)
    loaded = load_pdptes(fx.mem, ctl)
    assert isinstance(loaded, tuple)
    assert loaded[2] == 0x2000 | RW | US | (1 << 7)
    assert loaded[0] == loaded[1] == loaded[3] == 0
    res = fx.run("r", 0)
    assert outcome(fx, res) == 0x0
    assert isinstance(res, PageFault) and res.level == "PDPT" and res.reason == "not-present"
    assert outcome(fx, fx.run("w", 3)) == 0x6
    assert outcome(fx, fx.run("x", 0, nxe=True)) == 0x10


def test_pae_pdpt_is_32_byte_aligned_not_page_aligned() -> None:
    mem = PhysMem()
    mem.write_u64(0x1020 + 3 * 8, 0x2000 | P)  # PDPT at 0x1020
    mem.write_u64(0x2000 + 5 * 8, 0x3000 | PTR)
    mem.write_u64(0x3000 + 7 * 8, 0x9000 | P | RW)
    va = (3 << 30) | (5 << 21) | (7 << 12) | 0x123
    for cr3 in (0x1020, 0x1020 | 0x1F):  # CR3[4:0] ignored
        ctl = ControlState.for_mode("pae", cr3)
        loaded = load_pdptes(mem, ctl)
        assert loaded == (0, 0, 0, 0x2000 | P)
        res = translate(mem, ctl, va)
        assert isinstance(res, Translation) and res.paddr == 0x9123


def test_pae_walk_uses_registers_not_memory() -> None:
    fx = build("pae")
    ctl = fx.ctl()
    regs = load_pdptes(fx.mem, ctl)
    assert isinstance(regs, tuple)
    fx.set(0, 0)  # the PDPTE in memory is cleared after the load
    res = translate(fx.mem, ctl, fx.va, Access.READ, 0, regs)
    assert isinstance(res, Translation) and res.paddr == fx.pa
    # Without registers, translate loads them from memory (as at MOV to CR3): now not present.
    assert outcome(fx, translate(fx.mem, ctl, fx.va)) == 0x0
    # Registers that point elsewhere win over memory too.
    fx.set(0, 0x2000 | P)
    other = (0, 0, 0x7000 | P, 0)
    res = translate(fx.mem, ctl, fx.va, Access.READ, 0, other)
    assert isinstance(res, PageFault)
    assert res.level == "PD" and res.entry_addr == 0x7000 + 0x77 * 8


def test_pae_pdpte_gets_no_a_bit() -> None:
    fx = build("pae")
    before = fx.get(0)
    res = fx.run("w", 0)
    assert isinstance(res, Translation)
    assert fx.get(0) == before == 0x2000 | P
    assert fx.get(1) == 0x3000 | PTR | A
    assert fx.get(2) == fx.frame | PTR | A | D


# -------------------------------------------------------------------------------------------------
# Accessed and dirty flags (Intel SDM Vol. 3A §4.8)
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("acc", "leaf_d"),
    [("r", 0), ("w", D)],
    ids=["read-sets-a-everywhere-no-d", "write-sets-d-only-in-leaf"],
)
def test_ad_read_and_write(acc: str, leaf_d: int) -> None:
    fx = build("ia32e", [PTR, PTR, PTR, P | RW])
    res = fx.run(acc, 0)
    assert isinstance(res, Translation)
    assert [fx.get(i) for i in range(4)] == [
        0x2000 | PTR | A,
        0x3000 | PTR | A,
        0x4000 | PTR | A,
        fx.frame | P | RW | A | leaf_d,
    ]
    assert res.dirty is bool(leaf_d)


def test_ad_fetch_is_like_read() -> None:
    fx = build("ia32e", [PTR, PTR, PTR, P])
    assert isinstance(fx.run("x", 0, nxe=True), Translation)
    assert fx.get(3) == fx.frame | P | A


def test_ad_sticky() -> None:
    fx = build("ia32e", [PTR | A, PTR | A, PTR | A, P | RW | A | D])
    res = fx.run("r", 0)
    assert isinstance(res, Translation)
    assert fx.get(3) == fx.frame | P | RW | A | D  # a read never clears D
    assert res.dirty is True


@pytest.mark.parametrize(
    ("flags", "acc", "cpl", "stop", "reason"),
    [
        ([PTR, PTR, PTR, RW | US], "r", 0, 3, "not-present"),
        ([PTR, PTR, PTR, P | RW | (1 << 45)], "w", 0, 3, "reserved-bit"),
        ([PTR, PTR, PTR, P | RW], "r", 3, 3, "protection"),
        ([PTR, PTR, PTR, P], "w", 0, 3, "protection"),
        ([PTR, PTR, PTR | (1 << 13) | PS, None], "r", 0, 2, "reserved-bit"),
        ([PTR, PTR | (1 << 40), PTR, P | RW], "r", 0, 1, "reserved-bit"),
        ([PTR, US, PTR, P | RW], "r", 0, 1, "not-present"),
        ([PTR | PS, PTR, PTR, P | RW], "r", 0, 0, "reserved-bit"),
    ],
)
def test_ad_on_fault(flags: list, acc: str, cpl: int, stop: int, reason: str) -> None:
    """Table pointers above the stopping entry get A; the stopping entry and below are unchanged."""
    if flags[-1] is None:  # a 2M PDE with a reserved bit
        fx = build("ia32e", flags[:3], large=2)
        fx.set(2, FRAME_2M | P | RW | PS | (1 << 13))
    else:
        fx = build("ia32e", flags)
    before = [fx.get(i) for i in range(len(fx.addrs))]
    res = fx.run(acc, cpl)
    assert isinstance(res, PageFault) and res.reason == reason
    after = [fx.get(i) for i in range(len(fx.addrs))]
    for i in range(len(fx.addrs)):
        if i < stop:
            assert after[i] == before[i] | A, i
            assert not after[i] & D
        else:
            assert after[i] == before[i], i


def test_ad_2m_leaf_write_cpl3() -> None:
    fx = build("ia32e", [PTR, PTR, P | RW | US], large=2)
    res = fx.run("w", 3)
    assert isinstance(res, Translation)
    assert fx.get(2) == FRAME_2M | PS | P | RW | US | A | D
    assert fx.get(1) == 0x3000 | PTR | A


def test_ad_1g_leaf() -> None:
    fx = build("ia32e", [PTR, P | RW], large=1)
    assert isinstance(fx.run("r", 0), Translation)
    assert fx.get(1) == FRAME_1G | PS | P | RW | A
    assert isinstance(fx.run("w", 0), Translation)
    assert fx.get(1) == FRAME_1G | PS | P | RW | A | D


def test_ad_32bit() -> None:
    fx = build("32", [PTR, P | RW])
    assert isinstance(fx.run("w", 0), Translation)
    assert fx.get(0) == 0x2000 | PTR | A
    assert fx.get(1) == fx.frame | P | RW | A | D
    # Entries are 4 bytes: the neighbouring PTE is untouched.
    assert fx.mem.read_u32(fx.addrs[1] + 4) == 0
    fx4 = build("32", [P | RW], large=0)
    assert isinstance(fx4.run("w", 0, pse=True), Translation)
    assert fx4.get(0) == FRAME_4M | PS | P | RW | A | D


def test_ad_32bit_pde_gets_a_when_pte_not_present() -> None:
    fx = build("32", [PTR, RW])
    assert outcome(fx, fx.run("r", 0)) == 0x0
    assert fx.get(0) == 0x2000 | PTR | A
    assert fx.get(1) == fx.frame | RW


# -------------------------------------------------------------------------------------------------
# Result fields: entries, level, Translation attributes
# -------------------------------------------------------------------------------------------------


def test_translation_fields_4k() -> None:
    fx = build("ia32e", [PTR, PTR, PTR | G, P | RW | US | NX | G])
    before = [fx.get(i) for i in range(4)]
    res = fx.run("r", 3, nxe=True)
    assert isinstance(res, Translation)
    assert res.vaddr == fx.va
    assert res.paddr == 0x12_3456_7000 | OFF
    assert res.frame == 0x12_3456_7000
    assert res.page_size == 4096
    assert (res.user, res.writable, res.nx, res.global_, res.dirty) == (
        True,
        True,
        True,
        True,
        False,
    )
    assert res.entries == (
        ("PML4", 0x1000 + 0x0A5 * 8, before[0]),
        ("PDPT", 0x2000 + 0x1C3 * 8, before[1]),
        ("PD", 0x3000 + 0x077 * 8, before[2]),
        ("PT", 0x4000 + 0x1FE * 8, before[3]),
    )


def test_translation_g_in_table_pointer_is_not_global() -> None:
    fx = build("ia32e", [PTR | G, PTR | G, PTR | G, P | RW])
    res = fx.run("r", 0)
    assert isinstance(res, Translation) and res.global_ is False


def test_translation_combined_rights_over_levels() -> None:
    fx = build("ia32e", [P | US, PTR, PTR | NX, PTR])  # R/W=0 in PML4E, XD in PDE
    res = fx.run("r", 3, nxe=True)
    assert isinstance(res, Translation)
    assert (res.user, res.writable, res.nx) == (True, False, True)
    fx = build("ia32e", [PTR, P | RW, PTR, PTR])  # U/S=0 in the PDPTE
    res = fx.run("r", 0, nxe=True)
    assert isinstance(res, Translation)
    assert (res.user, res.writable, res.nx) == (False, True, False)


def test_translation_fields_2m_and_1g() -> None:
    fx = build("ia32e", [PTR, PTR, P | RW | G], large=2)
    before = [fx.get(i) for i in range(3)]
    res = fx.run("w", 0)
    assert isinstance(res, Translation)
    assert res.page_size == M2
    assert res.frame == FRAME_2M
    assert res.paddr == FRAME_2M + (0x1FE << 12) + OFF
    assert res.global_ is True and res.dirty is True
    assert [e[0] for e in res.entries] == ["PML4", "PDPT", "PD"]
    assert [e[2] for e in res.entries] == before
    fx = build("ia32e", [PTR, P], large=1)
    res = fx.run("r", 0)
    assert isinstance(res, Translation)
    assert res.page_size == G1
    assert res.paddr == FRAME_1G + (0x077 << 21) + (0x1FE << 12) + OFF
    assert [e[:2] for e in res.entries] == [
        ("PML4", 0x1000 + 0xA5 * 8),
        ("PDPT", 0x2000 + 0x1C3 * 8),
    ]


def test_fault_fields_not_present_at_pd() -> None:
    fx = build("ia32e", [PTR, PTR, 0x3000_0000 | RW, P | RW])  # PDE P=0 with junk
    res = fx.run("w", 3)
    assert isinstance(res, PageFault)
    assert res.vector == 14
    assert res.cr2 == fx.va
    assert res.error_code == 0x6
    assert int(res.flags) == 0x6
    assert res.reason == "not-present"
    assert res.level == "PD"
    assert res.entry_addr == 0x3000 + 0x077 * 8
    assert res.entry == 0x4000 | 0x3000_0000 | RW
    assert [e[0] for e in res.entries] == ["PML4", "PDPT", "PD"]
    assert res.entries[-1] == ("PD", res.entry_addr, res.entry)


def test_fault_fields_protection_levels() -> None:
    fx = build("ia32e", [PTR, PTR, PTR, P | RW])
    res = fx.run("r", 3)
    assert isinstance(res, PageFault)
    assert (res.reason, res.level, res.entry_addr) == ("protection", "PT", 0x4000 + 0x1FE * 8)
    assert len(res.entries) == 4
    fx = build("ia32e", [PTR, PTR, P], large=2)
    res = fx.run("w", 0)
    assert isinstance(res, PageFault)
    assert (res.reason, res.level, res.error_code) == ("protection", "PD", 0x3)
    assert res.entry == FRAME_2M | PS | P


def test_fault_fields_pae_and_32() -> None:
    fx = build("pae", [P, PTR, RW])
    res = fx.run("r", 0)
    assert isinstance(res, PageFault)
    assert res.entries[0] == ("PDPT", 0x1000 + 2 * 8, 0x2000 | P)
    assert (res.level, res.entry_addr) == ("PT", 0x3000 + 0x1FE * 8)
    fx = build("32", [PTR, P])
    res = fx.run("w", 3)
    assert isinstance(res, PageFault)
    assert res.entries == (
        ("PD", 0x1000 + 0x2A5 * 4, 0x2000 | PTR),
        ("PT", 0x2000 + 0x1FE * 4, fx.frame | P),
    )
    assert (res.level, res.reason, res.error_code) == ("PT", "protection", 0x7)


# -------------------------------------------------------------------------------------------------
# The I/D rule, in all three modes (Intel SDM Vol. 3A §4.7)
# -------------------------------------------------------------------------------------------------

ID_CASES = [
    # mode, nxe, smep, not-present fetch, RSVD fetch, protection fetch (CPL3 on a supervisor page)
    ("ia32e", False, False, 0x00, 0x09, 0x05),
    ("ia32e", True, False, 0x10, 0x19, 0x15),
    ("ia32e", False, True, 0x10, 0x19, 0x15),
    ("ia32e", True, True, 0x10, 0x19, 0x15),
    ("pae", False, False, 0x00, 0x09, 0x05),
    ("pae", True, False, 0x10, 0x19, 0x15),
    ("pae", False, True, 0x10, 0x19, 0x15),
    ("32", False, False, 0x00, 0x09, 0x05),
    ("32", True, False, 0x00, 0x09, 0x05),  # NXE without PAE: no I/D
    ("32", False, True, 0x10, 0x19, 0x15),
    ("32", True, True, 0x10, 0x19, 0x15),
]


@pytest.mark.parametrize(("mode", "nxe", "smep", "np", "rsvd", "prot"), ID_CASES)
def test_id_rule(mode: str, nxe: bool, smep: bool, np: int, rsvd: int, prot: int) -> None:
    n = len(LAYOUTS[mode].tables)
    top = [P] if mode == "pae" else []
    flags = {"nxe": nxe, "smep": smep, "pse": True}
    # not present
    fx = build(mode, top + [PTR] * (n - 1 - len(top)) + [RW])
    assert outcome(fx, fx.run("x", 0, **flags)) == np
    # reads and writes never have I/D
    assert outcome(fx, fx.run("r", 0, **flags)) == 0x0
    assert outcome(fx, fx.run("w", 3, **flags)) == 0x6
    # reserved bit
    if mode == "32":
        fx = build(mode, [P | RW | (1 << 21)], large=0)
    else:
        fx = build(mode, top + [PTR] * (n - 1 - len(top)) + [P | RW | (1 << 45)])
    assert outcome(fx, fx.run("x", 0, **flags)) == rsvd
    # protection
    fx = build(mode, top + [PTR] * (n - 1 - len(top)) + [P | RW])
    assert outcome(fx, fx.run("x", 3, **flags)) == prot
