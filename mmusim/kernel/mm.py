"""Kernel memory management: page frames, ``arch_mem_map``/``arch_mem_unmap``, and Zephyr's
``k_mem_map``, ``k_mem_unmap``, ``k_mem_map_phys_guard``, ``k_mem_unmap_phys_guard`` and bare maps.

The order of operations follows ``kernel/mmu.c``::

    k_mem_map_phys_guard(phys, size, flags, is_anon):      k_mem_unmap_phys_guard(addr, size, is_anon):
      reject USER|UNINIT, size % PAGE, size == 0             lock z_mm_lock
      lock z_mm_lock                                         front or rear guard mapped? -> silent bail
      dst = virt_region_alloc(size + 2*PAGE)                 anon: per page, arch_mem_unmap(pos, PAGE)
      arch_mem_unmap(dst, PAGE); arch_mem_unmap(rear, PAGE)    and free its frame; else arch_mem_unmap(addr, size)
      dst += PAGE; arch_mem_map(dst, phys, size, flags)      virt_region_free(addr - PAGE, size + 2*PAGE)
      unlock; zero unless UNINIT                             unlock

``arch_mem_unmap`` (``arch/x86/core/x86_mmu.c``) clears each PTE of its range -- present or not
-- and invalidates it locally (``invlpg``), then, on SMP with ``SIM_TLB_SHOOTDOWN=y``, sends one
TLB IPI to every other CPU (``tlb_shootdown``, once per call). ``arch_mem_map`` neither flushes
nor shoots down. So a guarded mapping costs two shootdowns when it is made (one per guard page),
and when it is torn down one (physical memory: a stack) or one per page (anonymous memory,
``k_mem_unmap``). Zephyr does not wait for the other CPUs to flush ("This is not synchronous");
mmusim counts the outstanding shootdowns so the invariants can tell a stale entry that a pending
IPI will remove from one that nothing will.

Every PTE write, invalidation and IPI is an interleaving point. Lock: ``z_mm_lock`` (rank 3).

With memory domains (``mmusim.kernel.domain``) a kernel mapping goes to every domain's page tables
as well as the kernel's, as ``range_map`` loops over ``x86_domain_list``: ``Kernel.all_ptables()``.

Mutants (``mmusim/mutants.py``, marked ``# MUTANT`` below): ``GUARD_OFF_BY_ONE`` maps a stack one
page too low (over its front guard; the unmap frees what was allocated), ``GUARD_RW`` maps a
stack's front guard read-write, ``NO_INVLPG`` skips the local ``invlpg`` in ``arch_mem_unmap``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from mmusim.hw import PteFlags
from mmusim.kernel.engine import Region
from mmusim.kernel.geometry import PAGE
from mmusim.kernel.routines import LOCAL, KernelAssert, Point, pte_write, writes

if TYPE_CHECKING:
    from mmusim.kernel.boot import Kernel

# Flags of include/zephyr/kernel/mm.h (values as read there; the bit numbers are UNVERIFIED and
# only matter inside mmusim).
K_MEM_CACHE_WB = 0
K_MEM_PERM_RW = 1 << 3
K_MEM_PERM_EXEC = 1 << 4
K_MEM_PERM_USER = 1 << 5
K_MEM_MAP_UNINIT = 1 << 16

_RW = int(PteFlags.RW)
_US = int(PteFlags.US)
_NX = int(PteFlags.NX)

Routine = Generator[Point, None, None]


class FrameAllocator:
    """Free physical page frames (``k_mem_page_frame``): a LIFO free list, like Zephyr's.

    ``alloc`` and ``free`` are O(1); the lowest frames are handed out first after boot. The list
    is kept as the frames never handed out (``[_next, end)``, taken lowest first) under a stack of
    the frames given back (``_freed``, the last one on top, the next handed out): the same order
    as one list, without building a list of every frame at each boot.
    """

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        self._next = start  # the frames [_next, end) have never been handed out
        self._freed: list[int] = []  # handed out and given back, in the order given back
        self._is_freed: set[int] = set()

    def alloc(self) -> int | None:
        if self._freed:
            pa = self._freed.pop()
            self._is_freed.discard(pa)
            return pa
        if self._next >= self.end:
            return None
        pa = self._next
        self._next += PAGE
        return pa

    def free(self, pa: int) -> None:
        if self.is_free(pa) or not self.start <= pa < self.end or pa % PAGE:
            raise KernelAssert(f"free_page_frame: {pa:#x} is not an allocated page frame")
        self._freed.append(pa)
        self._is_freed.add(pa)

    def is_free(self, pa: int) -> bool:
        return pa in self._is_freed or (self._next <= pa < self.end and not pa % PAGE)

    def free_count(self) -> int:
        return len(self._freed) + (self.end - self._next) // PAGE

    def order(self) -> tuple[int, tuple[int, ...]]:
        """What decides the frames future ``alloc`` calls return, in that order: the explorer's
        fingerprint must tell apart two states whose free lists hold the same frames in another
        order (two stacks freed in either order), since the next stack gets another frame."""
        return self._next, tuple(self._freed)

    def _check(self) -> None:
        assert len(self._freed) == len(self._is_freed), "FrameAllocator: duplicate free frame"
        assert all(self.start <= pa < self._next for pa in self._freed), (
            "FrameAllocator: a given-back frame was never handed out"
        )


def k_mem_free_get(k: Kernel) -> int:
    """``k_mem_free_get``: bytes of free physical memory (free page frames)."""
    return k.frames.free_count() * PAGE


def pte_flags(k: Kernel, flags: int) -> int:
    out = 0
    if flags & K_MEM_PERM_RW:
        out |= _RW
    if flags & K_MEM_PERM_USER:
        out |= _US
    if k.mode.has_nx and not flags & K_MEM_PERM_EXEC:
        out |= _NX
    return out


def kernel_invlpg(k: Kernel, va: int) -> None:
    """INVLPG as the kernel executes it (CPL 0, whatever the interrupted thread's CPL)."""
    hw = k.cpu.hw
    saved, hw.cpl = hw.cpl, 0
    try:
        hw.invlpg(va)
    finally:
        hw.cpl = saved


def arch_mem_map(k: Kernel, va: int, pa: int, size: int, pte: int) -> Routine:
    """Map ``[va, va+size)`` to ``pa`` in every set of page tables (``range_map``)."""
    # DEVIATION(range-map-per-page): each page is written in every domain's tables at one interleaving point; Zephyr's range_map does the whole range per set of tables (domains first, then the kernel's), under x86_mmu_lock.
    for off in range(0, size, PAGE):
        yield Point(
            "arch_mem_map", f"write PTE {va + off:#x} -> {pa + off:#x}", res=pte_write(va + off)
        )
        for pt in k.all_ptables():
            pt.clear(va + off)  # a present entry is replaced
            pt.map(va + off, pa + off, pte)
        if k.md is not None:  # a new mapping: its permissions are the original ones (MASK_ALL)
            k.md.perm_orig.pop((va + off) >> 12, None)


def arch_mem_unmap(k: Kernel, va: int, size: int) -> Routine:
    """``arch_mem_unmap`` (``arch/x86/core/x86_mmu.c``): ``range_map_unlocked(addr, 0, size, 0, 0,
    OPTION_FLUSH | OPTION_CLEAR)``. ``range_map_ptables`` calls ``page_map_set`` for every page:
    the PTE is set to 0 -- whatever it held, so a guard page that was never mapped is cleared too
    -- and, with ``OPTION_FLUSH``, ``tlb_flush_page`` (``invlpg``) runs for it. Then ``range_map``
    ends with one ``tlb_shootdown()`` (``#ifdef CONFIG_SMP``, ``OPTION_FLUSH``): one broadcast
    TLB IPI per call, however many pages, whether or not any was present."""
    for off in range(0, size, PAGE):
        yield Point("arch_mem_unmap", f"clear PTE {va + off:#x}", res=pte_write(va + off))
        for pt in k.all_ptables():
            pt.clear(va + off)  # a non-present entry is 0 already: writing 0 changes nothing
        if k.md is not None:
            k.md.perm_orig.pop((va + off) >> 12, None)
        if k.mutant_no_invlpg:  # MUTANT (SIM_MUTANT_NO_INVLPG): this CPU keeps its stale entry
            continue
        yield Point("arch_mem_unmap", f"invlpg {va + off:#x}", res=LOCAL)
        kernel_invlpg(k, va + off)
    yield from tlb_shootdown(k)
    # DEVIATION(x86-mmu-lock): range_map_unlocked also takes x86_mmu_lock around the update;
    # mmusim's callers all hold z_mm_lock, which serialises the same updates: not modelled.


def tlb_shootdown(k: Kernel) -> Routine:
    """``tlb_shootdown`` (``arch/x86/core/x86_mmu.c``): ``z_loapic_ipi(0, LOAPIC_ICR_IPI_OTHERS,
    CONFIG_TLB_IPI_VECTOR)`` -- one IPI to every other CPU, not waited for ("This is not
    synchronous and the actual flush takes place some short time after this exits"). The handler,
    ``z_x86_tlb_ipi``, reloads CR3: a flush of every non-global entry."""
    if k.ncpus == 1 or not k.shootdown:
        return
    others = [c.id for c in k.cpus if c.id != k._cpu]
    yield Point(
        "tlb_shootdown", "send TLB IPI to the other CPUs", res=writes(*[("ipi", i) for i in others])
    )
    for c in k.cpus:
        if c.id != k._cpu:
            k.send_ipi(c.id, "tlb")


def arch_page_phys_get(k: Kernel, va: int) -> int | None:
    hit = k.pt.lookup(va)
    if hit is None:
        return None
    _level, _ea, entry, size = hit
    return (entry & k.pt_frame_mask) | (va & (size - 1))


def k_mem_map_phys_guard(
    k: Kernel, phys: int, size: int, flags: int, is_anon: bool, *, kind: str, owner: str
) -> Generator[Point, None, int | None]:
    """Map ``size`` bytes between two guard pages; returns the usable address or None (NULL)."""
    addr: int | None = yield from map_phys_guarded(
        k, phys, size, flags, is_anon, kind=kind, owner=owner
    )
    return addr


def map_phys_guarded(
    k: Kernel,
    phys: int,
    size: int,
    flags: int,
    is_anon: bool,
    *,
    kind: str,
    owner: str,
    front: int = 1,
    rear: int = 1,
    fn: str = "k_mem_map_phys_guard",
) -> Generator[Point, None, int | None]:
    """``k_mem_map_phys_guard`` with ``front`` guard pages below the region and ``rear`` above it
    (Zephyr: one of each). Stack policies (``mmusim.kernel.policy``) build on it; returns the
    usable address or None (NULL)."""
    if flags & K_MEM_PERM_USER and flags & K_MEM_MAP_UNINIT:
        k.printk(f"E: {fn}: user-accessible mappings must be zeroed")
        return None
    if size % PAGE or size == 0:
        k.printk(f"E: {fn}: unaligned size {size}" if size else f"E: {fn}: size 0")
        return None
    total = size + (front + rear) * PAGE
    yield from k.k_spin_lock(k.mm_lock, fn)
    yield Point(fn, f"virt_region_alloc({total:#x})", res=LOCAL)  # under z_mm_lock
    region = virt_region_alloc(k, total)
    if region is None:
        yield from k.k_spin_unlock(k.mm_lock, fn)
        return None
    if front:
        yield from arch_mem_unmap(k, region, front * PAGE)
    if rear:
        yield from arch_mem_unmap(k, region + front * PAGE + size, rear * PAGE)
    dst = region + front * PAGE
    if front and kind == "stack" and k.mutant_guard_off_by_one:
        dst -= PAGE  # MUTANT (SIM_MUTANT_GUARD_OFF_BY_ONE): the stack covers its front guard
    pte = pte_flags(k, flags)
    frames: list[int] = []
    if is_anon:
        for off in range(0, size, PAGE):
            yield Point(fn, "allocate a page frame", res=LOCAL)
            pa = k.frames.alloc()
            if pa is None:  # out of memory: undo (Zephyr leaked here until PR #115581)
                yield from arch_mem_unmap(k, dst, off)
                for f in frames:
                    k.frames.free(f)
                k.vm.free(region, total)
                yield from k.k_spin_unlock(k.mm_lock, fn)
                return None
            frames.append(pa)
            yield from arch_mem_map(k, dst + off, pa, PAGE, pte)
    else:
        yield from arch_mem_map(k, dst, phys, size, pte)
        if front and kind == "stack" and k.mutant_guard_rw and phys >= PAGE:
            # MUTANT (SIM_MUTANT_GUARD_RW): the front guard maps the page below the object, RW.
            yield from arch_mem_map(k, dst - PAGE, phys - PAGE, PAGE, pte)
    k.regions[dst] = Region(
        dst, size, kind, owner, (front, rear), frames[0] if is_anon else phys,
        bool(flags & K_MEM_PERM_USER),
    )  # fmt: skip
    yield from k.k_spin_unlock(k.mm_lock, fn)
    if not flags & K_MEM_MAP_UNINIT:
        for pa in frames if is_anon else range(phys, phys + size, PAGE):
            k.mem.write(pa, bytes(PAGE))
    return dst


def k_mem_unmap_phys_guard(k: Kernel, addr: int, size: int, is_anon: bool) -> Routine:
    yield from unmap_phys_guarded(k, addr, size, is_anon)


def unmap_phys_guarded(
    k: Kernel,
    addr: int,
    size: int,
    is_anon: bool,
    *,
    front: int = 1,
    rear: int = 1,
    fn: str = "k_mem_unmap_phys_guard",
) -> Routine:
    """Undo ``map_phys_guarded`` with the same ``front``/``rear`` guard counts."""
    lo, hi = addr - front * PAGE, addr + size + rear * PAGE
    if addr < front * PAGE:
        raise KernelAssert(f"{fn}: address {addr:#x} has no room for a front guard")
    if not (k.vm_base <= lo and hi <= k.vm_base + k.vm_size):
        raise KernelAssert(f"{fn}: [{addr:#x}, +{size:#x}) is not a kernel virtual region")
    yield from k.k_spin_lock(k.mm_lock, fn)
    yield Point(fn, "check the guard pages are unmapped", res=LOCAL)
    guards = (*range(lo, addr, PAGE), *range(addr + size, hi, PAGE))
    if any(arch_page_phys_get(k, g) is not None for g in guards):
        # Zephyr: `if (ret == 0) { __ASSERT(ret == 0, ...); goto out; }` -- the assertion can never
        # fire, so a bad call is a silent no-op (mmusim's reading of ``kernel/mmu.c``).
        yield from k.k_spin_unlock(k.mm_lock, fn)
        return
    if is_anon:
        # kernel/mmu.c: VIRT_FOREACH(addr, size, pos) { arch_page_phys_get(pos, &phys); ...
        # arch_mem_unmap(pos, CONFIG_MMU_PAGE_SIZE); page_frame_free_locked(pf); } -- one
        # arch_mem_unmap, hence one TLB shootdown, per page.
        for off in range(0, size, PAGE):
            pa = arch_page_phys_get(k, addr + off)
            if pa is None:  # Zephyr: __ASSERT(ret == 0, "%s: cannot unmap an unmapped address")
                raise KernelAssert(f"{fn}: cannot unmap an unmapped address {addr + off:#x}")
            yield from arch_mem_unmap(k, addr + off, PAGE)
            yield Point(fn, f"free page frame {pa:#x}", res=LOCAL)
            k.frames.free(pa)
    else:
        # "we don't have to unmap the guard pages, as they should have been unmapped": one
        # arch_mem_unmap of [addr, addr + size), one shootdown.
        yield from arch_mem_unmap(k, addr, size)
    r = k.regions.get(addr)
    if front and k.mutant_guard_off_by_one and r is not None and r.kind == "stack":
        lo, hi = lo + PAGE, hi + PAGE  # MUTANT (SIM_MUTANT_GUARD_OFF_BY_ONE): what was allocated
    yield Point(fn, f"virt_region_free({lo:#x}, {hi - lo:#x})", res=LOCAL)
    k.vm.free(lo, hi - lo)
    k.regions.pop(addr, None)
    yield from k.k_spin_unlock(k.mm_lock, fn)


def k_mem_map(k: Kernel, size: int, flags: int, name: str) -> Generator[Point, None, int | None]:
    """``k_mem_map``: anonymous, zeroed memory between two guard pages."""
    addr: int | None = yield from k_mem_map_phys_guard(
        k, 0, size, flags, True, kind="anon", owner=name
    )
    return addr


def k_mem_unmap(k: Kernel, addr: int, size: int) -> Routine:
    yield from k_mem_unmap_phys_guard(k, addr, size, True)


def k_mem_map_phys_bare(
    k: Kernel, phys: int, size: int, flags: int, name: str
) -> Generator[Point, None, int]:
    """A bare mapping of physical memory: no guard pages (``k_mem_map_phys_bare``, kernel/mmu.c).

    It cannot fail to the caller: when ``virt_region_alloc`` returns NULL ("insufficient virtual
    address space"), it jumps to ``fail:`` -- "running out of virtual address space ... is an
    unrecoverable situation" -- logs ``memory mapping 0x%lx (size %zu, flags 0x%x) failed`` and
    calls ``k_panic()`` (reason 4, ``K_ERR_KERNEL_PANIC``), still holding ``z_mm_lock``. mmusim
    prints those lines and stops the run with a ``KernelAssert`` naming the function."""
    fn = "k_mem_map_phys_bare"
    if size % PAGE or size == 0 or phys % PAGE:
        raise KernelAssert(f"{fn}: unaligned address or size ({phys:#x}, {size:#x})")
    yield from k.k_spin_lock(k.mm_lock, fn)
    yield Point(fn, f"virt_region_alloc({size:#x})", res=LOCAL)
    dst = virt_region_alloc(k, size)
    if dst is None:
        k.printk(f"E: memory mapping {phys:#x} (size {size}, flags {flags:#x}) failed")
        k.printk(f"E: >>> ZEPHYR FATAL ERROR 4: Kernel panic on CPU {k._cpu}")
        raise KernelAssert(f"{fn}: memory mapping {phys:#x} (size {size}) failed: k_panic()")
    yield from arch_mem_map(k, dst, phys, size, pte_flags(k, flags))
    k.regions[dst] = Region(dst, size, "bare", name, (0, 0), phys, bool(flags & K_MEM_PERM_USER))
    yield from k.k_spin_unlock(k.mm_lock, fn)
    return dst


def virt_region_alloc(k: Kernel, size: int) -> int | None:
    """``virt_region_alloc(size, CONFIG_MMU_PAGE_SIZE)`` (kernel/mmu.c), which logs when the
    bitmap has no room. Call with ``z_mm_lock`` held."""
    addr = k.vm.alloc(size, PAGE)
    if addr is None:
        k.printk(f"E: insufficient virtual address space (requested {size})")
    return addr


def k_mem_unmap_phys_bare(k: Kernel, addr: int, size: int) -> Routine:
    fn = "k_mem_unmap_phys_bare"
    yield from k.k_spin_lock(k.mm_lock, fn)
    yield from arch_mem_unmap(k, addr, size)
    yield Point(fn, f"virt_region_free({addr:#x}, {size:#x})", res=LOCAL)
    k.vm.free(addr, size)
    k.regions.pop(addr, None)
    yield from k.k_spin_unlock(k.mm_lock, fn)
