"""Hypothesis strategies for the MMU layer (``mmusim.hw``): paging modes, small random address
spaces built with ``PageTables``, and accesses aimed at the interesting places in them.

::

    from hypothesis import given, strategies as st
    from mmusim.testing.hw import accesses, page_tables

    @given(st.data())
    def test_walk(data):
        space = data.draw(page_tables(mode="ia32e"))
        access = data.draw(accesses(space))
        result = space.translate(access)         # Translation | PageFault | GeneralProtection

Every drawn value has a runnable repr, so a falsifying example can be pasted back into a test::

    AddressSpace.build(
        mode='pae',
        mappings=[
            PageMapping(va=0x40000000, pa=0x0, size=0x200000, flags='RW|US'),
            PageMapping(va=0x40200000, pa=0x7000, size=0x1000, flags='NX', present=False),
        ],
        wp=True, smep=False, smap=True, nxe=True, pse=True, pge=False,
    )
    MemoryAccess(va=0x401fffff, kind='write', cpl=3, ac=False)

The names avoid ``mmusim.hw.Access`` (the access-kind enum) and ``collections.abc.Mapping``:
this module's access is a ``MemoryAccess`` and a mapping is a ``PageMapping``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, get_args

import attrs
from hypothesis import strategies as st

from mmusim.hw import (
    FRAME_SIZE,
    MODE_IA32E,
    MODES,
    Access,
    ControlState,
    Cpu,
    PageTables,
    PagingMode,
    PhysMem,
    PteFlags,
    Result,
    translate,
)

__all__ = [
    "MODE_NAMES",
    "AccessKind",
    "AddressSpace",
    "MemoryAccess",
    "PageMapping",
    "accesses",
    "page_tables",
    "paging_modes",
]

MODE_NAMES: tuple[str, ...] = tuple(MODES)
"""The paging modes as mmusim names them: ``"32"`` (32-bit), ``"pae"``, ``"ia32e"`` (4-level)."""

AccessKind = Literal["read", "write", "fetch"]
_KINDS: tuple[AccessKind, ...] = get_args(AccessKind)
_HW_KIND: dict[str, Access] = {"read": Access.READ, "write": Access.WRITE, "fetch": Access.EXEC}

_K4 = FRAME_SIZE
_M2, _M4, _G1 = 1 << 21, 1 << 22, 1 << 30
_MASK64 = (1 << 64) - 1
_LOWER_END = 1 << 47  # end of the lower canonical half
_UPPER_START = _MASK64 + 1 - (1 << 47)  # start of the upper canonical half

#: Page sizes a leaf may have, per mode (4K first: the simplest, and what shrinking aims at).
_SIZES: dict[str, tuple[int, ...]] = {"32": (_K4, _M4), "pae": (_K4, _M2), "ia32e": (_K4, _M2, _G1)}
#: The largest page of each mode: window bases are aligned to it, so every page size fits.
_ALIGN: dict[str, int] = {"32": _M4, "pae": _M2, "ia32e": _G1}
#: Shifts of the table levels above the PT: a gap "to the next boundary" there starts a new table.
_TABLE_SHIFTS: dict[str, tuple[int, ...]] = {"32": (22,), "pae": (21, 30), "ia32e": (21, 30, 39)}
#: Physical reach of a leaf (MAXPHYADDR 40; 32-bit 4K frames below 4 GiB, 4M ones via PSE-36).
_PA_LIMIT: dict[tuple[str, int], int] = {("32", _K4): 1 << 32}
_PA_DEFAULT_LIMIT = 1 << 40

#: The flag bits a PageMapping may carry (P and PS are the builder's). NX only outside 32-bit.
_FLAG_NAMES: tuple[str, ...] = ("RW", "US", "PWT", "PCD", "A", "D", "G", "NX")
_ALLOWED_FLAGS = functools.reduce(lambda a, b: a | b, (int(PteFlags[n]) for n in _FLAG_NAMES))

#: Where build() takes page-table frames from: a counter from 4 KiB upwards (below 4 GiB).
_TABLE_BASE = 0x1000


def _flags_from(value: int | str) -> int:
    """Flags as an int, from an int or from names joined by ``|`` (``'RW|US|NX'``; ``''``: 0)."""
    if isinstance(value, str):
        flags = 0
        for name in (part.strip() for part in value.split("|")):
            if not name:
                continue
            if name not in _FLAG_NAMES:
                raise ValueError(
                    f"PageMapping: unknown flag {name!r} (allowed: {', '.join(_FLAG_NAMES)})"
                )
            flags |= int(PteFlags[name])
        return flags
    flags = int(value)
    if flags & ~_ALLOWED_FLAGS:
        raise ValueError(
            f"PageMapping: flags {flags:#x} outside {'|'.join(_FLAG_NAMES)} (P and PS are implied)"
        )
    return flags


def _flags_text(flags: int) -> str:
    return "|".join(n for n in _FLAG_NAMES if flags & int(PteFlags[n]))


@attrs.frozen(repr=False)
class PageMapping:
    """One leaf entry: ``size`` bytes of linear space at ``va`` onto the frame at ``pa``.

    ``flags`` are the entry's bits besides P and PS (an int, or names such as ``'RW|US|NX'``).
    ``present=False`` writes the same entry with P clear -- a page whose present bit was dropped,
    frame and flags left behind as software may leave them. Every walk through it must stop with
    a not-present fault whatever those stale bits say.
    """

    va: int
    pa: int
    size: int = _K4
    flags: int = attrs.field(default=0, converter=_flags_from)
    present: bool = True

    @property
    def end(self) -> int:
        """First linear address after the page."""
        return self.va + self.size

    def __contains__(self, va: object) -> bool:
        return isinstance(va, int) and self.va <= va < self.va + self.size

    def __repr__(self) -> str:
        tail = "" if self.present else ", present=False"
        return (
            f"PageMapping(va={self.va:#x}, pa={self.pa:#x}, size={self.size:#x},"
            f" flags={_flags_text(self.flags)!r}{tail})"
        )

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        _pretty(self, p)


@attrs.frozen(repr=False)
class MemoryAccess:
    """One explicit access: linear address, kind, CPL, and EFLAGS.AC (which SMAP consults)."""

    va: int
    kind: AccessKind = "read"
    cpl: int = 0
    ac: bool = False

    def __attrs_post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"MemoryAccess: kind {self.kind!r} not in {_KINDS}")
        if not 0 <= self.cpl <= 3:
            raise ValueError(f"MemoryAccess: CPL {self.cpl} outside 0..3")

    @property
    def hw_kind(self) -> Access:
        """The kind as ``mmusim.hw.Access`` (READ, WRITE, EXEC)."""
        return _HW_KIND[self.kind]

    def __repr__(self) -> str:
        return f"MemoryAccess(va={self.va:#x}, kind={self.kind!r}, cpl={self.cpl}, ac={self.ac})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        _pretty(self, p)


def _pretty(obj: object, p: Any) -> None:
    """Hypothesis's pretty printer would print an attrs class field by field; print our repr."""
    for i, line in enumerate(repr(obj).splitlines()):
        if i:
            p.break_()
        p.text(line)


def _frame_counter(start: int) -> Callable[[], int]:
    frames: Iterator[int] = iter(range(start, 1 << 32, _K4))
    return lambda: next(frames)


@attrs.frozen(eq=False, repr=False)
class AddressSpace:
    """A small address space: physical memory, its page tables and the control state to walk them.

    Build one with ``AddressSpace.build(mode, mappings, **controls)`` (what its repr prints) or
    draw one with ``page_tables()``. Frozen means the attributes are not reassigned; ``mem``
    itself changes, since a walk sets A and D bits as hardware does.

    ``tables`` is built with NXE and PSE on, so it accepts NX and 4M pages; ``ctl`` is what the
    CPU runs with. They always agree on PSE, so ``tables.lookup`` and ``translate`` see the same
    leaves; ``ctl.nxe`` may be off while entries carry NX, which the walker reports as a
    reserved-bit fault on a page ``lookup`` calls present.
    """

    mode: str
    mappings: tuple[PageMapping, ...]
    mem: PhysMem
    tables: PageTables
    ctl: ControlState

    @classmethod
    def build(
        cls,
        mode: str,
        mappings: Iterable[PageMapping],
        *,
        wp: bool = True,
        smep: bool = False,
        smap: bool = False,
        nxe: bool = True,
        pse: bool = True,
        pge: bool = False,
    ) -> AddressSpace:
        """Map ``mappings`` (in order) into fresh tables of ``mode`` (``"32"``, ``"pae"`` or
        ``"ia32e"``) and make the control state. Table frames are taken from 0x1000 upwards.

        Raises ValueError for an unknown mode, overlapping mappings, a page size the mode lacks,
        NX in 32-bit paging, a 4M page with ``pse=False``, or anything ``PageTables.map`` refuses.
        """
        if mode not in MODES:
            raise ValueError(
                f"AddressSpace.build: unknown mode {mode!r} (allowed: {', '.join(MODES)})"
            )
        maps = tuple(mappings)
        ordered = sorted(maps, key=lambda m: m.va)
        for a, b in zip(ordered, ordered[1:], strict=False):
            if a.end > b.va:
                raise ValueError(f"AddressSpace.build: {a!r} overlaps {b!r}")
        for m in maps:
            if m.size not in _SIZES[mode]:
                raise ValueError(f"AddressSpace.build: page size {m.size:#x} not in mode {mode}")
            if mode == "32" and m.flags & int(PteFlags.NX):
                raise ValueError(f"AddressSpace.build: NX in 32-bit paging: {m!r}")
            if mode == "32" and m.size != _K4 and m.present and not pse:
                raise ValueError(f"AddressSpace.build: a 4M page needs pse=True: {m!r}")
        mem = PhysMem()
        tables = PageTables(mem, MODES[mode], _frame_counter(_TABLE_BASE), pse=True, nxe=True)
        for m in maps:
            tables.map(m.va, m.pa, m.flags, m.size)
            if not m.present:
                found = tables.lookup(m.va)
                assert found is not None
                _, slot, entry, _ = found
                if tables.mode.entry_size == 8:
                    mem.write_u64(slot, entry & ~int(PteFlags.P))
                else:
                    mem.write_u32(slot, entry & ~int(PteFlags.P))
        ctl = ControlState.for_mode(
            mode, cr3=tables.root, wp=wp, smep=smep, smap=smap, nxe=nxe, pse=pse, pge=pge
        )
        return cls(mode, maps, mem, tables, ctl)

    # -- using it ---------------------------------------------------------------------------

    def translate(self, access: MemoryAccess) -> Result:
        """Walk the tables for ``access`` (its CPL, and its AC bit in place of ``ctl.ac``)."""
        ctl = self.ctl if self.ctl.ac == access.ac else attrs.evolve(self.ctl, ac=access.ac)
        return translate(self.mem, ctl, access.va, access.hw_kind, access.cpl)

    def cpu(self, cpu_id: int = 0) -> Cpu:
        """A fresh CPU (empty TLB, CPL 0) running on these tables with ``ctl``."""
        return Cpu(self.mem, self.ctl, cpu_id=cpu_id)

    def mapping_at(self, va: int) -> PageMapping | None:
        """The mapping (present or not) whose page holds ``va``, or None."""
        for m in self.mappings:
            if va in m:
                return m
        return None

    def _check(self) -> None:
        """The builder's invariants (``PageTables._check``) and ``PhysMem._check``."""
        self.tables._check()
        self.mem._check()

    # -- repr -------------------------------------------------------------------------------

    def __repr__(self) -> str:
        c = self.ctl
        controls = f"wp={c.wp}, smep={c.smep}, smap={c.smap}, nxe={c.nxe}, pse={c.pse}, pge={c.pge}"
        if len(self.mappings) <= 1:
            maps = repr(list(self.mappings))
            return f"AddressSpace.build(mode={self.mode!r}, mappings={maps}, {controls})"
        body = "".join(f"        {m!r},\n" for m in self.mappings)
        return (
            f"AddressSpace.build(\n    mode={self.mode!r},\n    mappings=[\n{body}    ],\n"
            f"    {controls},\n)"
        )

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        _pretty(self, p)


# -- strategies -------------------------------------------------------------------------------


def paging_modes() -> st.SearchStrategy[str]:
    """The paging modes by mmusim's names, ``"32"``, ``"pae"``, ``"ia32e"`` (shrinks to ``"32"``)."""
    return st.sampled_from(MODE_NAMES)


def _flags(mode: str) -> st.SearchStrategy[int]:
    """Leaf flags: a random subset (shrinking empties it: supervisor, read-only, executable)."""
    names = [n for n in _FLAG_NAMES if n != "NX" or mode != "32"]
    return st.lists(st.sampled_from(names), unique=True, max_size=len(names)).map(
        lambda chosen: _flags_from("|".join(chosen))
    )


# A page spec before layout: (gap before it, page size, frame index, flags, present).
_Spec = tuple[int, int, int, int, bool]


@st.composite
def _page_spec(draw: st.DrawFn, mode: str, large_pages: bool, holes: bool) -> _Spec:
    # The gap before the page: mostly none (adjacent pages with different rights, so accesses
    # near the boundary matter), a few 4K pages (a guard-like hole), or a jump to the next
    # boundary of a table level (a negative number: minus the shift), which starts new tables.
    gaps = (0, 0, 0, 0, 1, 2, 3, *(-s for s in _TABLE_SHIFTS[mode]))
    gap = draw(st.sampled_from(gaps))
    sizes = _SIZES[mode] if large_pages else (_K4,)
    size = draw(st.sampled_from((sizes[0],) * 3 + sizes[1:]))  # 4K: 3 to 1 per large size
    reach = _PA_LIMIT.get((mode, size), _PA_DEFAULT_LIMIT)
    frame = draw(st.integers(0, reach // size - 1))
    flags = draw(_flags(mode))
    present = draw(st.sampled_from((True, True, True, False))) if holes else True
    return gap, size, frame, flags, present


def _window_bases(mode: str) -> st.SearchStrategy[tuple[int, int]]:
    """(base, end of its half of the address space): low, anywhere, or near the top of a half
    (in IA-32e also just below the canonical hole and in the upper half)."""
    a = _ALIGN[mode]
    if mode != "ia32e":
        top = 1 << 32
        return st.one_of(
            st.just(0),
            st.integers(0, top // a - 1).map(lambda k: k * a),
            st.integers(1, 8).map(lambda k: top - k * a),
        ).map(lambda base: (base, top))
    lower, upper = _LOWER_END, _MASK64 + 1
    return st.one_of(
        st.just((0, lower)),
        st.integers(0, lower // a - 1).map(lambda k: (k * a, lower)),
        st.integers(1, 8).map(lambda k: (lower - k * a, lower)),
        st.integers(0, lower // a - 1).map(lambda k: (_UPPER_START + k * a, upper)),
        st.integers(1, 8).map(lambda k: (upper - k * a, upper)),
    )


def _align_up(x: int, a: int) -> int:
    return (x + a - 1) & ~(a - 1)


@st.composite
def _address_spaces(
    draw: st.DrawFn, mode: str | None, max_mappings: int, large_pages: bool, holes: bool
) -> AddressSpace:
    name = draw(paging_modes()) if mode is None else mode
    specs = draw(st.lists(_page_spec(name, large_pages, holes), min_size=1, max_size=max_mappings))
    base, end = draw(_window_bases(name))
    cursor = base
    mappings: list[PageMapping] = []
    for i, (gap, size, frame, flags, present) in enumerate(specs):
        if i and gap > 0:
            cursor += gap * _K4
        elif i and gap < 0:
            cursor = _align_up(cursor + 1, 1 << -gap)
        va = _align_up(cursor, size)
        if va + size > end:
            break  # the window ran out of address space: keep what fits
        mappings.append(PageMapping(va, frame * size, size, flags, present))
        cursor = va + size
    wp, smep, smap, pge = (draw(st.booleans()) for _ in range(4))
    nxe = False if name == "32" else draw(st.sampled_from((True, True, True, False)))
    large_present = any(m.size != _K4 and m.present for m in mappings)
    pse = True if name == "32" and large_present else draw(st.booleans())
    return AddressSpace.build(
        name, mappings, wp=wp, smep=smep, smap=smap, nxe=nxe, pse=pse, pge=pge
    )


def page_tables(
    mode: str | PagingMode | None = None,
    *,
    max_mappings: int = 8,
    large_pages: bool = True,
    holes: bool = True,
) -> st.SearchStrategy[AddressSpace]:
    """Small random address spaces (``AddressSpace``) in ``mode`` (a name such as ``"pae"``, or a
    ``PagingMode``), or in any mode if None.

    Up to ``max_mappings`` leaves are laid out upwards from a window base (address 0, anywhere,
    near the top of the 32-bit space or of either canonical half): mostly adjacent, sometimes
    after a small guard-like gap or after a jump to the next table boundary, so pages with
    different rights sit side by side and several tables get built. Each leaf is 4K or a large
    page of the mode (4M, 2M, 1G; ``large_pages=False``: 4K only) with random RW, US, NX, G, A,
    D, PWT, PCD bits, onto a random frame up to MAXPHYADDR 40 (4M pages use PSE-36). About one
    in four is a non-present entry with stale bits (``holes=False``: none). The control state
    draws CR0.WP, CR4.SMEP/SMAP/PGE/PSE and EFER.NXE (mostly on; sometimes off while entries
    carry NX). Shrinks towards fewer, adjacent, present, 4K, flagless pages at low addresses.
    """
    name = mode.name if isinstance(mode, PagingMode) else mode
    if name is not None and name not in MODES:
        raise ValueError(f"page_tables: unknown mode {name!r} (allowed: {', '.join(MODES)})")
    if max_mappings < 1:
        raise ValueError(f"page_tables: max_mappings must be at least 1, not {max_mappings}")
    return _address_spaces(name, max_mappings, large_pages, holes)


def _va_mask(space: AddressSpace) -> int:
    return _MASK64 if space.ctl.mode is MODE_IA32E else 0xFFFF_FFFF


def _inside(m: PageMapping) -> st.SearchStrategy[int]:
    """An address in ``m``: first or last byte, either side of a 4K boundary, or anywhere."""
    pages = m.size // _K4
    return st.one_of(
        st.sampled_from((m.va, m.end - 1)),
        st.integers(0, pages - 1).flatmap(
            lambda k: st.sampled_from((m.va + k * _K4, m.va + k * _K4 + _K4 - 1))
        ),
        st.integers(m.va, m.end - 1),
    )


def _around(m: PageMapping, mask: int) -> st.SearchStrategy[int]:
    """Just outside ``m``: the last byte of the page below, or the first of the page above."""
    return st.sampled_from(
        ((m.va - 1) & mask, m.end & mask, (m.va - _K4) & mask, (m.end + _K4 - 1) & mask)
    )


def _anywhere(space: AddressSpace) -> st.SearchStrategy[int]:
    """Any linear address the mode can walk; in IA-32e, half of them canonical (either half)
    and half not (the hole's first and last byte, or anywhere in it), which give #GP."""
    if space.ctl.mode is not MODE_IA32E:
        return st.integers(0, 0xFFFF_FFFF)
    return st.one_of(
        st.integers(0, _LOWER_END - 1),
        st.integers(_UPPER_START, _MASK64),
        st.sampled_from((_LOWER_END, _UPPER_START - 1)),
        st.integers(_LOWER_END, _UPPER_START - 1),
    )


def _addresses(space: AddressSpace) -> st.SearchStrategy[int]:
    mask = _va_mask(space)
    if not space.mappings:
        return _anywhere(space)
    pick = st.sampled_from(space.mappings)
    inside = pick.flatmap(_inside)
    # one_of picks a branch uniformly: three in five addresses fall inside a mapping
    return st.one_of(
        inside, inside, inside, pick.flatmap(lambda m: _around(m, mask)), _anywhere(space)
    )


def accesses(
    space: AddressSpace,
    *,
    kinds: Iterable[AccessKind] = _KINDS,
    cpls: Iterable[int] = (0, 3),
) -> st.SearchStrategy[MemoryAccess]:
    """Accesses (``MemoryAccess``) to make in ``space``.

    The address is mostly inside one of its mappings (first or last byte, either side of a 4K
    boundary inside a large page, or anywhere), next to one (the byte below or above it, or the
    page beyond: a guard-like hole, a neighbour with other rights, or unmapped space), and
    sometimes anywhere at all (in IA-32e also non-canonical). The kind is drawn from ``kinds``,
    the CPL from ``cpls`` (default 0 and 3), and EFLAGS.AC at random.
    """
    kinds_t = tuple(kinds)
    cpls_t = tuple(cpls)
    if not kinds_t or any(k not in _KINDS for k in kinds_t):
        raise ValueError(f"accesses: kinds must be a non-empty subset of {_KINDS}")
    if not cpls_t or any(not 0 <= c <= 3 for c in cpls_t):
        raise ValueError("accesses: cpls must be a non-empty subset of 0..3")
    return st.builds(
        MemoryAccess,
        va=_addresses(space),
        kind=st.sampled_from(kinds_t),
        cpl=st.sampled_from(cpls_t),
        ac=st.booleans(),
    )
