"""The pager: how the address-space layer reaches the page tables, and what it counts.

``AddressSpace`` never writes a page-table entry itself: it asks a ``Pager`` to map, unmap or
re-protect one page, and to complete the TLB invalidations those changes need (``flush_tlb``,
once per operation, as Linux's ``mmu_gather`` / ``flush_tlb_range`` batch them). The pager counts
what a stack costs: leaf PTE writes, TLB shootdowns (an invalidation that had to reach more than
one CPU), frames held, page-table pages.

``HwPager`` is the pager of a bare machine: ``mmusim.hw.PageTables`` plus a bump-and-free-list
frame allocator, invalidating the TLBs of the CPUs (or TLBs) it is given. The kernel brings its
own pager.

TLB rules used (Intel SDM Vol. 3A 4.10.2.3, 4.10.4): a not-present entry is never cached, so
making a page present needs no invalidation (and the #PF already invalidated the faulting page on
the faulting CPU); clearing or changing a present entry needs ``invlpg`` on every CPU that may
cache it.

A page with no access (PROT_NONE) keeps its frame but its PTE is not present. Linux encodes such a
page as a non-present PTE with ``_PAGE_PROTNONE`` that still holds the frame number; here the pager
keeps the frame in its own table and the PTE is cleared (``PageTables`` writes present entries
only).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import attrs

from mmusim.hw import Cpu, PageTables, PagingMode, PhysMem, PteFlags, Tlb
from mmusim.runtime.defs import PAGE, MmError


@attrs.frozen
class PteRights:
    """The rights of a present user leaf: writable (R/W), user (U/S), executable (not XD)."""

    writable: bool
    user: bool
    exec: bool


def leaf_rights(pt: PageTables, va: int, nx: bool) -> PteRights | None:
    """The rights of ``pt``'s present leaf for ``va`` (None if not present); without ``nx`` (no
    XD bit in effect) every present page is executable."""
    found = pt.lookup(va)
    if found is None:
        return None
    e = found[2]
    return PteRights(
        writable=bool(e & PteFlags.RW),
        user=bool(e & PteFlags.US),
        exec=not (nx and e & PteFlags.NX),
    )


class Pager(Protocol):
    """What ``AddressSpace`` needs from the page tables. Counters are cumulative."""

    @property
    def pte_writes(self) -> int: ...
    @property
    def shootdowns(self) -> int: ...
    @property
    def frames(self) -> int:
        """Frames held for pages (page tables excluded)."""
        ...

    @property
    def table_pages(self) -> int:
        """Page-table pages allocated (0 if the pager cannot tell)."""
        ...

    @property
    def nx(self) -> bool:
        """Can a PTE forbid instruction fetches (XD with EFER.NXE)? If not, every present page
        is executable whatever was asked."""
        ...

    def map_page(self, va: int, writable: bool, user: bool, exec: bool) -> None:
        """Give the page a zeroed frame and a present PTE (a page with no rights at all: a frame
        and a not-present PTE)."""

    def unmap_page(self, va: int) -> None:
        """Clear the PTE and free the frame; the invalidation waits for ``flush_tlb``."""

    def protect_page(self, va: int, writable: bool, user: bool, exec: bool) -> None:
        """Rewrite the rights of a page that has a frame (all False: not present, frame kept)."""

    def flush_tlb(self) -> None:
        """Complete the pending invalidations (one shootdown if more than one CPU is reached)."""

    def lookup(self, va: int) -> PteRights | None:
        """The rights of the present leaf mapping ``va``, or None if not present."""

    def resident(self, va: int) -> bool:
        """Does the page hold a frame (present, or PROT_NONE with its frame kept)?"""


class TablePager:
    """The part of a ``Pager`` every page-table pager shares: the frames held per page, leaf
    entries written into each of ``_tables()`` (counted one write per table), invalidations
    collected until ``flush_tlb`` and sent to every TLB of ``_tlbs()`` (a shootdown when there is
    more than one). A subclass says where frames, tables and TLBs come from."""

    def __init__(self, mem: PhysMem, nx: bool) -> None:
        self.mem = mem
        self._nx = nx
        self._held: dict[int, int] = {}  # page -> frame, present or not
        self._pending: set[int] = set()
        self.pte_writes = 0
        self.shootdowns = 0
        self.invalidations = 0  # invlpg executed, summed over CPUs

    # -- what a subclass gives ---------------------------------------------------------------

    def _tables(self) -> Sequence[PageTables]:
        """Every set of page tables a user page goes into."""
        raise NotImplementedError

    def _lookup_tables(self) -> PageTables:
        """The tables ``lookup`` reads."""
        raise NotImplementedError

    def _tlbs(self) -> Sequence[Tlb]:
        raise NotImplementedError

    def _new_frame(self, va: int) -> int:
        """A free frame for page ``va`` (``MmError`` ENOMEM if there is none)."""
        raise NotImplementedError

    def _free_frame(self, frame: int) -> None:
        raise NotImplementedError

    # -- the Pager protocol --------------------------------------------------------------------

    @property
    def frames(self) -> int:
        return len(self._held)

    @property
    def nx(self) -> bool:
        return self._nx

    def _flags(self, writable: bool, user: bool, exec: bool) -> int:
        flags = PteFlags.P
        if writable:
            flags |= PteFlags.RW
        if user:
            flags |= PteFlags.US
        if not exec and self._nx:
            flags |= PteFlags.NX
        return int(flags)

    def map_page(self, va: int, writable: bool, user: bool, exec: bool) -> None:
        if va in self._held:
            raise ValueError(f"{type(self).__name__}.map_page: {va:#x} already holds a frame")
        frame = self._new_frame(va)
        self.mem.zero_frame(frame // PAGE)
        self._held[va] = frame
        if writable or user or exec:
            for pt in self._tables():
                pt.map(va, frame, self._flags(writable, user, exec))
                self.pte_writes += 1

    def unmap_page(self, va: int) -> None:
        frame = self._held.pop(va)
        for pt in self._tables():
            if pt.lookup(va) is not None:
                pt.unmap(va)
                self.pte_writes += 1
                self._pending.add(va)
        self._free_frame(frame)

    def protect_page(self, va: int, writable: bool, user: bool, exec: bool) -> None:
        frame = self._held[va]
        for pt in self._tables():
            present = pt.lookup(va) is not None
            if not (writable or user or exec):
                if present:
                    pt.unmap(va)
                    self.pte_writes += 1
                    self._pending.add(va)
                continue
            flags = self._flags(writable, user, exec)
            if present:
                pt.set_flags(va, flags)
                self._pending.add(va)
            else:
                pt.map(va, frame, flags)
            self.pte_writes += 1

    def flush_tlb(self) -> None:
        if not self._pending:
            return
        tlbs = self._tlbs()
        for tlb in tlbs:
            for va in sorted(self._pending):
                tlb.invlpg(va)
                self.invalidations += 1
        if len(tlbs) > 1:
            self.shootdowns += 1
        self._pending.clear()

    def lookup(self, va: int) -> PteRights | None:
        return leaf_rights(self._lookup_tables(), va, self._nx)

    def resident(self, va: int) -> bool:
        return va in self._held


class HwPager(TablePager):
    """A ``Pager`` on ``mmusim.hw.PageTables``.

    Frames for pages come from ``frames`` (an iterable of page-aligned physical addresses; by
    default every frame from 16 MiB up); freed frames are reused, lowest first. Page-table frames
    come from ``table_frames`` (default: from 1 MiB up). ``tlbs``: the CPUs (or bare TLBs) that
    may cache this address space's translations -- each ``flush_tlb`` invalidates the pending
    pages on all of them.
    """

    def __init__(
        self,
        mem: PhysMem,
        mode: PagingMode,
        *,
        tlbs: Sequence[Cpu | Tlb] = (),
        frames: Iterable[int] | None = None,
        table_frames: Iterable[int] | None = None,
        nxe: bool = True,
    ) -> None:
        super().__init__(mem, nxe and mode.has_nx)
        self.nxe = self._nx
        tables = iter(table_frames) if table_frames is not None else _counter(0x10_0000)
        self.pt = PageTables(mem, mode, lambda: next(tables), nxe=self.nxe)
        self._frames = iter(frames) if frames is not None else _counter(0x100_0000)
        self._free: list[int] = []
        self._tlb_list = [t.tlb if isinstance(t, Cpu) else t for t in tlbs]

    @property
    def table_pages(self) -> int:
        return len(self.pt.table_frames)

    @property
    def cr3(self) -> int:
        return self.pt.root

    def _tables(self) -> Sequence[PageTables]:
        return (self.pt,)

    def _lookup_tables(self) -> PageTables:
        return self.pt

    def _tlbs(self) -> Sequence[Tlb]:
        return self._tlb_list

    def _new_frame(self, va: int) -> int:
        if self._free:
            return heapq.heappop(self._free)
        try:
            return next(self._frames)
        except StopIteration:
            raise MmError("ENOMEM", f"HwPager.map_page({va:#x}): ENOMEM: out of frames") from None

    def _free_frame(self, frame: int) -> None:
        heapq.heappush(self._free, frame)

    def _check(self) -> None:
        """Page tables well formed; every present leaf is a page this pager holds, at its frame;
        no frame held twice; nothing left to invalidate between operations."""
        self.pt._check()
        held = set(self._held.values())
        assert len(held) == len(self._held), "HwPager: a frame held for two pages"
        assert not held & set(self._free), "HwPager: a held frame is on the free list"
        for va, entry, _size in self.pt.leaves():
            assert va in self._held, f"HwPager: {va:#x} present but not held"
            assert entry & ~int(PteFlags.NX) & ~0xFFF == self._held[va], f"HwPager: {va:#x}"
        assert not self._pending, f"HwPager: invalidations left pending: {sorted(self._pending)}"


def _counter(start: int) -> Iterator[int]:
    addr = start
    while True:
        yield addr
        addr += PAGE


__all__ = ["HwPager", "Pager", "PteRights", "TablePager", "leaf_rights"]
