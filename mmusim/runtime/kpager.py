"""``KernelPager``: the address-space layer's ``Pager`` on a booted kernel (``mmusim.runtime``
``Process``): frames from the kernel's pool, entries in the kernel's page tables, invalidation on
every CPU."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmusim.hw import PteFlags
from mmusim.runtime.defs import PAGE, MmError
from mmusim.runtime.pager import PteRights, leaf_rights

if TYPE_CHECKING:
    from mmusim.kernel import Kernel

__all__ = ["KernelPager"]


class KernelPager:
    """``Pager`` on a booted kernel: frames from the kernel's page-frame pool, leaf entries in every
    page table the kernel keeps (``Kernel.all_ptables``: its own and the memory domains'), user
    pages (U/S set), and invalidation on every CPU."""

    # DEVIATION(runtime-mm-atomic): the process's mmap, mprotect, munmap and demand faults are
    # single steps of the thread that makes them (no interleaving point inside), and their TLB
    # shootdown reaches every CPU at once, without an IPI; Linux takes the mmap lock and sends the
    # IPIs of flush_tlb_mm_range.

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self._held: dict[int, int] = {}  # page -> frame (present or not)
        self._pending: set[int] = set()
        self.pte_writes = 0
        self.shootdowns = 0
        self._tables0 = self._table_count()

    def _table_count(self) -> int:
        return sum(len(pt.table_frames) for pt in self.k.all_ptables())

    @property
    def frames(self) -> int:
        return len(self._held)

    @property
    def table_pages(self) -> int:
        return self._table_count() - self._tables0

    @property
    def nx(self) -> bool:
        return bool(self.k.mode.has_nx)

    def _flags(self, writable: bool, user: bool, exec: bool) -> int:
        flags = PteFlags.P | (PteFlags.RW if writable else 0) | (PteFlags.US if user else 0)
        if not exec and self.nx:
            flags |= PteFlags.NX
        return int(flags)

    def map_page(self, va: int, writable: bool, user: bool, exec: bool) -> None:
        frame = self.k.frames.alloc()
        if frame is None:
            raise MmError("ENOMEM", f"map_page({va:#x}): ENOMEM: no free page frame")
        self.k.mem.zero_frame(frame // PAGE)
        self._held[va] = frame
        if writable or user or exec:
            for pt in self.k.all_ptables():
                pt.map(va, frame, self._flags(writable, user, exec))
                self.pte_writes += 1

    def unmap_page(self, va: int) -> None:
        frame = self._held.pop(va)
        for pt in self.k.all_ptables():
            if pt.lookup(va) is not None:
                pt.unmap(va)
                self.pte_writes += 1
                self._pending.add(va)
        self.k.frames.free(frame)

    def protect_page(self, va: int, writable: bool, user: bool, exec: bool) -> None:
        frame = self._held[va]
        for pt in self.k.all_ptables():
            present = pt.lookup(va) is not None
            if not (writable or user or exec):
                if present:
                    pt.unmap(va)
                    self._pending.add(va)
                    self.pte_writes += 1
                continue
            if present:
                pt.set_flags(va, self._flags(writable, user, exec))
                self._pending.add(va)
            else:
                pt.map(va, frame, self._flags(writable, user, exec))
            self.pte_writes += 1

    def flush_tlb(self) -> None:
        if not self._pending:
            return
        for c in self.k.cpus:
            for va in sorted(self._pending):
                c.hw.tlb.invlpg(va)
        if len(self.k.cpus) > 1:
            self.shootdowns += 1
        self._pending.clear()

    def lookup(self, va: int) -> PteRights | None:
        return leaf_rights(self.k.pt, va, self.nx)

    def resident(self, va: int) -> bool:
        return va in self._held
