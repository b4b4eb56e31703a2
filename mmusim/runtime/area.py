"""One area of an address space: ``[start, end)`` with its protection and per-page state, and
the x86 rules that turn a protection into PTE rights and decide an access.

x86 access rules (Linux ``arch/x86/mm/fault.c`` ``access_error``): a write needs PROT_WRITE; a
fetch needs PROT_EXEC; a read needs any right (a present x86 page is readable).
"""

from __future__ import annotations

import attrs
from sortedcontainers import SortedSet

from mmusim.runtime.defs import PAGE, PAGE_MASK, Prot
from mmusim.runtime.pager import PteRights


def rights(prot: Prot) -> PteRights | None:
    """The PTE rights a user page of ``prot`` gets (None: not present)."""
    if prot == Prot.NONE:
        return None
    return PteRights(writable=bool(prot & Prot.WRITE), user=True, exec=bool(prot & Prot.EXEC))


def allows(prot: Prot, write: bool, exec: bool) -> bool:
    """Does ``prot`` allow the access (x86 ``access_error``, inverted)?"""
    if write:
        return bool(prot & Prot.WRITE)
    if exec:
        return bool(prot & Prot.EXEC)
    return prot != Prot.NONE


def _pages(start: int, end: int) -> range:
    return range(start, end, PAGE)


@attrs.define(eq=False)
class Area:
    """``[start, end)``, page-aligned, with its protection and per-page state.

    ``committed``: pages holding a frame (present, or not present under PROT_NONE). ``guards``:
    Linux ``MADV_GUARD_INSTALL`` markers. ``page_prot``: Haiku per-page protections (pages not in
    it have ``prot``). ``guard_size``: Haiku ``B_STACK_AREA`` guard, the first bytes of the area.
    ``fixed``/``serial``/``moved``: bookkeeping for the gap invariant (placed with MAP_FIXED; when
    created; when its start last moved down).
    """

    start: int
    end: int
    prot: Prot
    name: str = ""
    growsdown: bool = False
    noreserve: bool = False
    guard_size: int = 0
    committed: SortedSet = attrs.field(factory=SortedSet)
    guards: SortedSet = attrs.field(factory=SortedSet)
    page_prot: dict[int, Prot] = attrs.field(factory=dict)
    fixed: bool = False
    serial: int = 0
    moved: int = 0

    @property
    def pages(self) -> int:
        return (self.end - self.start) // PAGE

    def prot_at(self, page: int) -> Prot:
        return self.page_prot.get(page, self.prot)

    def in_guard(self, page: int) -> bool:
        return page < self.start + self.guard_size

    def accessible(self) -> bool:
        """Linux ``vma_is_accessible``: any of READ, WRITE, EXEC."""
        return self.prot != Prot.NONE

    @property
    def label(self) -> str:
        """``'name'``, or ``area 0x...-0x...`` for an unnamed one (for messages)."""
        return repr(self.name) if self.name else f"area {self.start:#x}-{self.end:#x}"

    def describe(self) -> str:
        flags = " growsdown" if self.growsdown else ""
        return f"{self.start:#x}-{self.end:#x} {self.prot.letters()}p {self.name}{flags}".rstrip()

    def split(self, at: int) -> tuple[Area, Area]:
        """Two areas ``[start, at)`` and ``[at, end)`` sharing this one's state."""
        assert self.start < at < self.end and not at & PAGE_MASK, (self.describe(), at)
        lo = attrs.evolve(
            self,
            end=at,
            committed=SortedSet(self.committed.irange(maximum=at, inclusive=(True, False))),
            guards=SortedSet(self.guards.irange(maximum=at, inclusive=(True, False))),
            page_prot={p: v for p, v in self.page_prot.items() if p < at},
            guard_size=min(self.guard_size, at - self.start),
        )
        hi = attrs.evolve(
            self,
            start=at,
            committed=SortedSet(self.committed.irange(minimum=at)),
            guards=SortedSet(self.guards.irange(minimum=at)),
            page_prot={p: v for p, v in self.page_prot.items() if p >= at},
            guard_size=max(0, self.start + self.guard_size - at),
        )
        return lo, hi

    def mergeable(self, other: Area, prot: Prot | None = None) -> bool:
        """Could ``other`` (above, adjacent) join this area, with ``prot`` for it if given?"""
        return (
            self.end == other.start
            and self.prot == (other.prot if prot is None else prot)
            and (self.growsdown, self.noreserve, self.name)
            == (other.growsdown, other.noreserve, other.name)
            and not (self.page_prot or other.page_prot or self.guard_size or other.guard_size)
        )

    def _check(self) -> None:
        assert self.start < self.end, f"empty area {self.describe()}"
        assert not (self.start | self.end) & PAGE_MASK, f"unaligned area {self.describe()}"
        for name, pages in (("committed", self.committed), ("guard", self.guards)):
            if pages:
                assert self.start <= pages[0] and pages[-1] < self.end, f"{name} page outside"
                assert not any(p & PAGE_MASK for p in pages), f"unaligned {name} page"
        assert not set(self.committed) & set(self.guards), "a guard-marked page is committed"
        assert all(self.start <= p < self.end for p in self.page_prot), "page_prot outside"
        assert 0 <= self.guard_size <= self.end - self.start and not self.guard_size & PAGE_MASK
        assert not self.committed or not self.in_guard(self.committed[0]), "guard committed"


__all__ = ["Area", "allows", "rights"]
