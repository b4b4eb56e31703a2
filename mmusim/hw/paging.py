"""Paging modes as data, entry flags and page-fault error-code bits (Intel SDM Vol. 3A ch. 4).

The three modes differ only in the tables below; one walk loop (``walk.translate``) serves them all.

How each mode splits a linear address::

    32-bit, 4K page              31      22 21      12 11       0
                                +----------+----------+----------+
                                | PD (10)  | PT (10)  | off (12) |     4M page (CR4.PSE=1, PDE.PS=1):
                                +----------+----------+----------+     PD index | offset (22)
    PAE, 4K page                 31 30 29    21 20    12 11      0
                                +-----+--------+--------+---------+
                                |PDPTE| PD (9) | PT (9) | off (12)|    2M page: PDPTE | PD | offset (21)
                                +-----+--------+--------+---------+
    IA-32e 4-level               63  48 47  39 38  30 29  21 20  12 11      0
                                +------+------+------+------+------+---------+
                                |=b47  | PML4 | PDPT |  PD  |  PT  | off (12)|  2M: PD leaf; 1G: PDPT leaf
                                +------+------+------+------+------+---------+

A ``WalkPlan`` is a mode resolved against the control bits that change the entry formats (EFER.NXE,
CR4.PSE, MAXPHYADDR, 1G-page support): for each level, which bits are reserved in a table pointer
and in a leaf, where the next table or the frame lies, and whether PS selects a large page there.
Plans are computed once per combination and cached.
"""

from __future__ import annotations

import enum
import functools

import attrs


class PteFlags(enum.IntFlag):
    """Bits of a paging-structure entry. Bit 7 is PS in a PDE/PDPTE but PAT in a PTE; bit 12 is
    PAT in a large-page leaf. D and G exist only in leaves. NX (the SDM's XD) is bit 63."""

    P = 1 << 0
    RW = 1 << 1
    US = 1 << 2
    PWT = 1 << 3
    PCD = 1 << 4
    A = 1 << 5
    D = 1 << 6
    PS = 1 << 7
    G = 1 << 8
    NX = 1 << 63


PAT_4K = 1 << 7  # PAT in a PTE (same bit as PS)
PAT_LARGE = 1 << 12  # PAT in a 2M/4M/1G leaf


class PfErrorCode(enum.IntFlag):
    """The #PF error code [SDM 4.7]. W/R, U/S and I/D describe the access, not the page."""

    P = 1 << 0  # 1: protection violation (or RSVD); 0: an entry with P=0
    W = 1 << 1  # the access was a write
    US = 1 << 2  # the access was a user-mode access (CPL 3)
    RSVD = 1 << 3  # a present entry had a reserved bit set
    ID = 1 << 4  # instruction fetch, with SMEP=1 or PAE+NXE
    PK = 1 << 5  # protection key (not modelled)


# The error-code bits by the short names the SDM's Figure 4-12 gives them.
PF_ERROR_BIT_NAMES: tuple[tuple[PfErrorCode, str], ...] = (
    (PfErrorCode.P, "P"),
    (PfErrorCode.W, "W/R"),
    (PfErrorCode.US, "U/S"),
    (PfErrorCode.RSVD, "RSVD"),
    (PfErrorCode.ID, "I/D"),
)


def error_code_names(code: int) -> str:
    """``0x5`` -> ``P U/S``: the set bits of a #PF error code by their SDM names."""
    names = [short for bit, short in PF_ERROR_BIT_NAMES if code & bit]
    return " ".join(names) if names else "none"


class Access(enum.IntEnum):
    """Kind of access. The values index the rights tables, so they are small integers."""

    READ = 0
    WRITE = 1
    EXEC = 2

    @property
    def letter(self) -> str:
        return "rwx"[self]


PF_VECTOR = 14
GP_VECTOR = 13
SS_VECTOR = 12
DF_VECTOR = 8


@attrs.frozen(slots=True)
class Level:
    """One level of a paging mode.

    ``large_size`` is the size of the page a PS=1 entry maps at this level, or 0 if PS is not a
    large-page bit here; ``ps_reserved`` marks levels where PS must be 0 (PML4E). ``register`` is
    True for PAE PDPTEs, which live in the four PDPTE registers: they carry no rights and no A bit,
    and their reserved bits give #GP at load rather than #PF.
    """

    name: str
    entry_name: str
    shift: int
    bits: int
    large_size: int = 0
    ps_reserved: bool = False
    register: bool = False


@attrs.frozen(slots=True)
class PagingMode:
    name: str
    title: str
    levels: tuple[Level, ...]
    entry_size: int
    va_bits: int
    canonical: bool  # IA-32e: bits 63:47 must equal bit 47
    has_nx: bool
    cr3_mask_low: int  # low bits of CR3 that hold the root address (below MAXPHYADDR)


MODE_32 = PagingMode(
    name="32",
    title="32-bit paging",
    levels=(
        Level("PD", "PDE", 22, 10, large_size=1 << 22),
        Level("PT", "PTE", 12, 10),
    ),
    entry_size=4,
    va_bits=32,
    canonical=False,
    has_nx=False,
    cr3_mask_low=0xFFFF_F000,
)

MODE_PAE = PagingMode(
    name="pae",
    title="PAE paging",
    levels=(
        Level("PDPT", "PDPTE", 30, 2, register=True),
        Level("PD", "PDE", 21, 9, large_size=1 << 21),
        Level("PT", "PTE", 12, 9),
    ),
    entry_size=8,
    va_bits=32,
    canonical=False,
    has_nx=True,
    cr3_mask_low=0xFFFF_FFE0,
)

MODE_IA32E = PagingMode(
    name="ia32e",
    title="4-level paging (IA-32e)",
    levels=(
        Level("PML4", "PML4E", 39, 9, ps_reserved=True),
        Level("PDPT", "PDPTE", 30, 9, large_size=1 << 30),
        Level("PD", "PDE", 21, 9, large_size=1 << 21),
        Level("PT", "PTE", 12, 9),
    ),
    entry_size=8,
    va_bits=48,
    canonical=True,
    has_nx=True,
    cr3_mask_low=~0xFFF,
)

MODES: dict[str, PagingMode] = {m.name: m for m in (MODE_32, MODE_PAE, MODE_IA32E)}


def bits(hi: int, lo: int) -> int:
    """Mask of bits hi..lo inclusive (SDM notation hi:lo)."""
    return ((1 << (hi + 1)) - 1) & ~((1 << lo) - 1) if hi >= lo else 0


def is_canonical(va: int) -> bool:
    """4-level paging: bits 63:47 all equal [SDM 3.3.7.1]."""
    top = va >> 47
    return top == 0 or top == 0x1FFFF


@attrs.frozen(slots=True)
class LevelPlan:
    """A level resolved against the control bits: masks used by the walk loop.

    ``table_rsvd`` / ``leaf_rsvd``: bits that must be 0 in a present table pointer / large leaf;
    ``addr_mask``: where the next table (or a 4K frame) lies; ``large_frame``: frame bits of a
    large leaf; ``large_size`` 0 means PS does not select a large page at this level (it may be
    ignored, or reserved -- then it is part of ``table_rsvd``); ``pse36``: 32-bit 4M PDE, whose
    bits 20:13 hold PA bits 39:32.
    """

    level: Level
    shift: int
    index_mask: int
    table_rsvd: int
    addr_mask: int
    large_size: int
    leaf_rsvd: int
    large_frame: int
    pse36: bool


@attrs.frozen(slots=True)
class WalkPlan:
    mode: PagingMode
    levels: tuple[LevelPlan, ...]
    nxe: bool
    pse: bool
    maxphyaddr: int


@functools.lru_cache(maxsize=64)
def walk_plan(mode: PagingMode, nxe: bool, pse: bool, maxphyaddr: int, page1gb: bool) -> WalkPlan:
    """Resolve ``mode`` into per-level masks (Intel SDM Vol. 3A §4.3-§4.5)."""
    m = maxphyaddr
    plans = []
    if mode is MODE_32:
        m36 = min(m, 40)
        large_rsvd = bits(21, m36 - 19) if pse else 0
        plans = [
            LevelPlan(
                mode.levels[0],
                22,
                0x3FF,
                0,
                0xFFFF_F000,
                (1 << 22) if pse else 0,
                large_rsvd,
                0xFFC0_0000,
                True,
            ),
            LevelPlan(mode.levels[1], 12, 0x3FF, 0, 0xFFFF_F000, 0, 0, 0, False),
        ]
        return WalkPlan(mode, tuple(plans), False, pse, m)

    # 64-bit entries. Above MAXPHYADDR: PAE reserves 62:M (and 63 without NXE); IA-32e reserves
    # 51:M (and 63 without NXE) while 62:52 are ignored.
    high = bits(62, m) if mode is MODE_PAE else bits(51, m)
    if not nxe:
        high |= int(PteFlags.NX)
    addr = bits(m - 1, 12)
    for lv in mode.levels:
        index_mask = (1 << lv.bits) - 1
        if lv.register:  # PAE PDPTE: 63:M, 8:5, 2:1 reserved (checked at register load)
            rsvd = bits(63, m) | bits(8, 5) | bits(2, 1)
            plans.append(LevelPlan(lv, lv.shift, index_mask, rsvd, addr, 0, 0, 0, False))
            continue
        table_rsvd = high
        large_size = lv.large_size
        if lv.ps_reserved or (large_size == 1 << 30 and not page1gb):
            table_rsvd |= int(PteFlags.PS)
            large_size = 0
        large_frame = bits(m - 1, large_size.bit_length() - 1) if large_size else 0
        leaf_rsvd = high | bits(large_size.bit_length() - 2, 13) if large_size else 0
        plans.append(
            LevelPlan(
                lv,
                lv.shift,
                index_mask,
                table_rsvd,
                addr,
                large_size,
                leaf_rsvd,
                large_frame,
                False,
            )
        )
    return WalkPlan(mode, tuple(plans), nxe, pse, m)
