"""``KernelPager``: the address-space layer's ``Pager`` on a booted kernel (``mmusim.runtime``
``Process``): frames from the kernel's pool, entries in the kernel's page tables, invalidation on
every CPU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mmusim.hw import PageTables, Tlb
from mmusim.runtime.defs import MmError
from mmusim.runtime.pager import TablePager

if TYPE_CHECKING:
    from mmusim.kernel import Kernel

__all__ = ["KernelPager"]


class KernelPager(TablePager):
    """``Pager`` on a booted kernel: frames from the kernel's page-frame pool, leaf entries in every
    page table the kernel keeps (``Kernel.all_ptables``: its own and the memory domains'), user
    pages (U/S set), and invalidation on every CPU."""

    # DEVIATION(runtime-mm-atomic): the process's mmap, mprotect, munmap and demand faults are
    # single steps of the thread that makes them (no interleaving point inside), and their TLB
    # shootdown reaches every CPU at once, without an IPI; Linux takes the mmap lock and sends the
    # IPIs of flush_tlb_mm_range.

    def __init__(self, k: Kernel, window: tuple[int, int] | None = None) -> None:
        super().__init__(k.mem, bool(k.mode.has_nx))
        self.k = k
        if window is not None:
            self._preallocate(*window)
        self._tables0 = self._table_count()

    def _preallocate(self, lo: int, hi: int) -> None:
        """PAE: a CPU loads the four PDPT entries when CR3 is written and walks with those copies
        (Intel SDM 4.4.1), so a page directory made later for the window would stay invisible.
        Make the window's page directories now, in every table, and have every CPU reload CR3 --
        as Linux's PAE ``pgd_alloc`` preallocates its user PMDs (``preallocate_pmds``,
        ``arch/x86/mm/pgtable.c``) for the same reason. Other modes walk from memory: nothing
        to do."""
        if self.k.mode.name != "pae":
            return
        for pt in self.k.all_ptables():
            for va in range(lo, hi, 1 << 30):
                if pt.entry_for(va)[0] == "PDPT":  # no page directory there yet
                    pt.map(va, 0, 0)  # makes the PD (and a PT); the entry itself goes again
                    pt.unmap(va)
        for c in self.k.cpus:
            c.hw.write_cr3(c.hw.ctl.cr3)

    def _table_count(self) -> int:
        return sum(len(pt.table_frames) for pt in self.k.all_ptables())

    @property
    def table_pages(self) -> int:
        return self._table_count() - self._tables0

    def _tables(self) -> Sequence[PageTables]:
        return self.k.all_ptables()

    def _lookup_tables(self) -> PageTables:
        return self.k.pt

    def _tlbs(self) -> Sequence[Tlb]:
        return [c.hw.tlb for c in self.k.cpus]

    def _new_frame(self, va: int) -> int:
        frame = self.k.frames.alloc()
        if frame is None:
            raise MmError("ENOMEM", f"map_page({va:#x}): ENOMEM: no free page frame")
        return frame

    def _free_frame(self, frame: int) -> None:
        self.k.frames.free(frame)
