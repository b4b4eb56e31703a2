"""Memory domains: ``k_mem_domain_*`` (``kernel/mem_domain.c``) and x86's per-domain page tables
(``arch/x86/core/x86_mmu.c``, ``arch/x86/core/userspace.c``).

With ``CONFIG_USERSPACE`` every thread belongs to one memory domain: a set of partitions (memory
ranges with user permissions) plus the stacks of its user threads. ``k_mem_domain_default`` exists
from boot; a new thread inherits its creator's domain (``z_mem_domain_init_thread``, called from
``z_setup_new_thread``); ``k_mem_domain_add_thread`` moves a thread to another domain.

Two x86 implementations, chosen by ``CONFIG_X86_COMMON_PAGE_TABLE`` (default n)::

    per-domain tables (n)                            one common table (y; needs !SMP, as Zephyr)
    ---------------------------------------------    --------------------------------------------
    default domain: the kernel's tables              all threads: the kernel's tables
      (arch_mem_domain_init, no KPTI)                partitions and the user stack are granted
    other domains: a copy of the kernel's tables       in place on a context switch, for the
      (copy_page_table: every PTE reset to the         incoming user thread only, and taken
      permissions it was mapped with, reset_pte)       back from the previous one
    kernel mappings (range_map) go to every          (z_x86_swap_update_common_page_table:
      domain's tables and the kernel's               a cache of the domain and the stack
    partitions: apply_region in that domain's        range last applied)
      tables only (arch_mem_domain_partition_add)
    a user stack: U/S in its domain's tables only
      (set_stack_perms, from z_x86_current_stack_perms
      at user-mode entry; moved on migration by
      arch_mem_domain_thread_add)
    context switch: CR3 = incoming->arch.ptables
      (z_x86_swap_update_page_tables, from __resume)

So with per-domain tables a user thread can reach the stacks of the user threads of its own
domain, but not those of another domain; with the common table only its own stack (and its
domain's partitions) while it runs.

The engine calls ``z_x86_swap_update_page_tables`` whenever a CPU resumes a thread (boot installs
it as ``Engine.update_page_tables``). Zephyr's asserts and ``CHECKIF`` failures in these functions
are ``KernelAssert``s naming the function.

Lock: ``z_mem_domain_lock`` (rank 4, innermost: Zephyr takes it under ``_sched_spinlock`` in
``z_mem_domain_exit_thread``). ``x86_mmu_lock`` is not modelled: its critical sections are single
steps here.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any

import attrs

from mmusim.hw import PageTables, PteFlags
from mmusim.kernel.engine import PerCpu
from mmusim.kernel.geometry import PAGE
from mmusim.kernel.mm import kernel_invlpg, tlb_shootdown
from mmusim.kernel.routines import KernelAssert, Point, pte_write
from mmusim.kernel.spinlock import KSpinlock
from mmusim.kernel.stack import set_stack_perms
from mmusim.kernel.thread import K_USER, KThread, ThreadState

if TYPE_CHECKING:
    from mmusim.kernel.boot import Kernel

Routine = Generator[Any, None, None]

_RW, _US, _NX, _P = int(PteFlags.RW), int(PteFlags.US), int(PteFlags.NX), int(PteFlags.P)

# include/zephyr/arch/x86/mmustructs.h
K_MEM_PARTITION_ATTRS = {
    "P_RW_U_RW": _RW | _US | _NX,
    "P_RW_U_NA": _RW | _NX,
    "P_RO_U_RO": _US | _NX,
    "P_RO_U_NA": _NX,
    "P_RWX_U_RWX": _RW | _US,
    "P_RWX_U_NA": _RW,
    "P_RX_U_RX": _US,
    "P_RX_U_NA": 0,
}
DEFAULT = "default"  # k_mem_domain_default's name


@attrs.define(eq=False)
class KMemPartition:
    """``struct k_mem_partition``. ``stack``: the partition lies in that stack object, at
    ``offset`` (``start`` is then set at boot, when the object is placed)."""

    name: str
    size: int
    attr: int  # K_MEM_PARTITION_* (PTE bits RW, US, XD)
    start: int = 0
    stack: str = ""
    offset: int = 0

    @property
    def end(self) -> int:
        return self.start + self.size

    def describe(self) -> str:
        return f"{self.name} [{self.start:#x}, +{self.size:#x})"


@attrs.define(eq=False)
class KMemDomain:
    """``struct k_mem_domain``: partition slots (None: free, Zephyr's size 0), the threads in it
    (``mem_domain_q``), and ``arch.ptables`` (None with the common page table)."""

    name: str
    partitions: list[KMemPartition | None]
    ptables: PageTables | None = None
    threads: list[KThread] = attrs.field(factory=list)

    @property
    def num_partitions(self) -> int:
        return sum(p is not None for p in self.partitions)

    def live(self) -> list[KMemPartition]:
        return [p for p in self.partitions if p is not None]

    def _check(self) -> None:
        for t in self.threads:
            assert t.mem_domain is self, f"KMemDomain {self.name}: {t.name} is in another domain"
        parts = sorted(self.live(), key=lambda p: p.start)
        for a, b in zip(parts, parts[1:], strict=False):
            assert a.end <= b.start, f"KMemDomain {self.name}: {a.name} overlaps {b.name}"


@attrs.define(eq=False)
class MemDomains:
    """All memory-domain state of a kernel (``Kernel.md``; None without USERSPACE)."""

    common: bool  # CONFIG_X86_COMMON_PAGE_TABLE
    max_partitions: int  # arch_mem_domain_max_partitions_get(): CONFIG_MAX_DOMAIN_PARTITIONS
    pool_pages: int  # page_pool: INITIAL_PTABLE_PAGES * CONFIG_X86_MAX_ADDITIONAL_MEM_DOMAINS
    partitions: dict[str, KMemPartition]  # every partition a test defines, by name
    lock: KSpinlock = attrs.field(factory=lambda: KSpinlock("z_mem_domain_lock", 4))
    by_name: dict[str, KMemDomain] = attrs.field(factory=dict)  # initialised domains
    x86_domain_list: list[KMemDomain] = attrs.field(factory=list)  # those with their own tables
    # DEVIATION(orig-perms-in-a-dict): the permissions each page was mapped with are kept here by page number, not in ignored PTE bits (MMU_RW_ORIG, MMU_US_ORIG, MMU_XD_ORIG), so PTE values stay as before.
    perm_orig: dict[int, int] = attrs.field(factory=dict)
    # The common page table's cache (x86_mmu.c): what z_x86_swap_update_common_page_table applied.
    current_domain: KMemDomain | None = None
    current_stack: tuple[int, int] = (0, 0)  # (current_stack_start, current_stack_size)

    @property
    def default(self) -> KMemDomain:
        return self.by_name[DEFAULT]


def perm_mask(k: Kernel) -> int:
    """``K_MEM_PARTITION_PERM_MASK`` (no XD bit without NX)."""
    return _RW | _US | (_NX if k.mode.has_nx else 0)


# -- boot ---------------------------------------------------------------------------------------


def init_mem_domain_module(k: Kernel, partitions: Iterable[KMemPartition]) -> None:
    """``init_mem_domain_module`` (SYS_INIT, PRE_KERNEL_1): ``k_mem_domain_default`` with no
    partitions; its page tables are the kernel's. Resolves stack-relative partitions."""
    cfg = k.cfg
    if not cfg.get("USERSPACE"):
        return
    table_pages = (k.image["page tables"][1] - k.image["page tables"][0]) // PAGE
    k.md = MemDomains(
        common=bool(cfg.get("X86_COMMON_PAGE_TABLE")),
        max_partitions=int(cfg.get("MAX_DOMAIN_PARTITIONS", 16)),
        pool_pages=table_pages * int(cfg.get("X86_MAX_ADDITIONAL_MEM_DOMAINS", 3) or 0),
        partitions={},
    )
    for p in partitions:
        if p.stack:
            obj = k.stacks.get(p.stack)
            if obj is None:
                raise KernelAssert(f"K_MEM_PARTITION_DEFINE({p.name}): no stack {p.stack!r}")
            p.start = obj.addr + p.offset
        k.md.partitions[p.name] = p
    default = KMemDomain(DEFAULT, [None] * k.md.max_partitions)
    arch_mem_domain_init(k, default)
    k.md.by_name[DEFAULT] = default


# -- k_mem_domain_* (kernel/mem_domain.c) -------------------------------------------------------


def _md(k: Kernel, fn: str) -> MemDomains:
    if k.md is None:
        raise KernelAssert(f"{fn}: memory domains need CONFIG_USERSPACE")
    return k.md


def check_add_partition(k: Kernel, d: KMemDomain, part: KMemPartition, fn: str) -> None:
    """``check_add_partition``: not empty, no wraparound, no overlap with a partition of ``d``.
    (x86 does not select CONFIG_EXECUTE_XOR_WRITE.)"""
    top = 1 << (64 if k.mode.name == "ia32e" else 32)
    if part.size == 0:
        raise KernelAssert(f"{fn}: zero sized partition {part.name} with base {part.start:#x}")
    if part.start + part.size > top:
        raise KernelAssert(f"{fn}: invalid partition {part.name}, wraparound detected")
    for other in d.live():
        if part.end > other.start and other.end > part.start:
            raise KernelAssert(
                f"{fn}: partition {part.describe()} overlaps existing {other.describe()} "
                f"in domain {d.name}"
            )


def k_mem_domain_init(k: Kernel, name: str, parts: list[KMemPartition]) -> Routine:
    """``k_mem_domain_init(domain, num_parts, parts)``: a new domain named ``name``."""
    # DEVIATION(checkif-asserts): CHECKIF failures in k_mem_domain_* raise KernelAssert (as with CONFIG_ASSERT_ON_ERRORS) instead of returning -EINVAL/-ENOSPC/-ENOENT/-ENOMEM.
    fn = "k_mem_domain_init"
    md = _md(k, fn)
    if len(parts) > md.max_partitions:
        raise KernelAssert(
            f"{fn}: num_parts of {len(parts)} exceeds maximum allowable partitions "
            f"({md.max_partitions})"
        )
    yield from k.k_spin_lock(md.lock, fn)
    if name in md.by_name:
        raise KernelAssert(
            f"arch_mem_domain_init: arch_mem_domain_init({name}) called multiple times"
        )
    d = KMemDomain(name, [None] * md.max_partitions)
    # The copy reads every kernel PTE (res None: it may conflict with anything).
    yield Point(fn, f"arch_mem_domain_init({name}): copy the kernel's page tables")
    arch_mem_domain_init(k, d)
    md.by_name[name] = d
    for i, part in enumerate(parts):
        check_add_partition(k, d, part, fn)
        d.partitions[i] = part
        yield from arch_mem_domain_partition_add(k, d, i)
    yield from k.k_spin_unlock(md.lock, fn)


def k_mem_domain_add_partition(k: Kernel, name: str, part: KMemPartition) -> Routine:
    """``k_mem_domain_add_partition``: the first free slot; ``-ENOSPC`` if none."""
    fn = "k_mem_domain_add_partition"
    d = _domain(k, name, fn)
    check_add_partition(k, d, part, fn)
    md = _md(k, fn)
    yield from k.k_spin_lock(md.lock, fn)
    free = [i for i, p in enumerate(d.partitions) if p is None]
    if not free:
        raise KernelAssert(f"{fn}: no free partition slots available in domain {name}")
    d.partitions[free[0]] = part
    yield from arch_mem_domain_partition_add(k, d, free[0])
    yield from k.k_spin_unlock(md.lock, fn)


def k_mem_domain_remove_partition(k: Kernel, name: str, part: KMemPartition) -> Routine:
    """``k_mem_domain_remove_partition``: the slot with the same start and size; ``-ENOENT``
    if there is none."""
    fn = "k_mem_domain_remove_partition"
    d = _domain(k, name, fn)
    md = _md(k, fn)
    yield from k.k_spin_lock(md.lock, fn)
    slots = [
        i
        for i, p in enumerate(d.partitions)
        if p is not None and (p.start, p.size) == (part.start, part.size)
    ]
    if not slots:
        raise KernelAssert(f"{fn}: no matching partition found for {part.describe()} in {name}")
    yield from arch_mem_domain_partition_remove(k, d, slots[0])
    d.partitions[slots[0]] = None  # "A zero-sized partition denotes it's a free partition"
    yield from k.k_spin_unlock(md.lock, fn)


def k_mem_domain_add_thread(k: Kernel, name: str, t: KThread) -> Routine:
    """``k_mem_domain_add_thread``: if ``t`` is in another domain, remove it (it is not dead, so
    ``arch_mem_domain_thread_remove`` leaves its stack alone) and add it here."""
    fn = "k_mem_domain_add_thread"
    d = _domain(k, name, fn)
    md = _md(k, fn)
    # DEVIATION(add-thread-uncreated-asserts): Zephyr would unlink a never-initialised list node here; mmusim asserts.
    if t.mem_domain is None:
        raise KernelAssert(f"{fn}: thread {t.name!r} was never created")
    yield from k.k_spin_lock(md.lock, fn)
    if t.mem_domain is not d:
        yield from remove_thread_locked(k, t)
        yield from add_thread_locked(k, d, t)
    yield from k.k_spin_unlock(md.lock, fn)


def _domain(k: Kernel, name: str, fn: str) -> KMemDomain:
    d = _md(k, fn).by_name.get(name)
    if d is None:
        raise KernelAssert(f"{fn}: domain {name!r} is not initialised (k_mem_domain_init)")
    return d


def add_thread_locked(k: Kernel, d: KMemDomain, t: KThread) -> Routine:
    t.mem_domain = d
    d.threads.append(t)
    yield from arch_mem_domain_thread_add(k, t)


def remove_thread_locked(k: Kernel, t: KThread) -> Routine:
    d = t.mem_domain
    if d is not None and t in d.threads:
        d.threads.remove(t)
    yield from arch_mem_domain_thread_remove(k, t)


def z_mem_domain_init_thread(k: Kernel, t: KThread) -> Routine:
    """``z_mem_domain_init_thread`` (from ``z_setup_new_thread``): ``t`` inherits the domain of
    the creating thread (at boot: the dummy thread's, ``k_mem_domain_default``)."""
    if k.md is None:
        return
    # DEVIATION(domain-lock-no-step): z_mem_domain_init_thread/z_mem_domain_exit_thread do not step on z_mem_domain_lock, so creating and ending a thread keep their interleaving points.
    parent = k.current.mem_domain if k.current is not t else None
    t.ptables = None  # z_x86_userspace_prepare_thread: a new thread, not a migration
    if t.mem_domain is not None and t in t.mem_domain.threads:
        t.mem_domain.threads.remove(t)  # a thread object created again
    yield from add_thread_locked(k, parent or k.md.default, t)


def z_mem_domain_exit_thread(k: Kernel, t: KThread) -> Routine:
    """``z_mem_domain_exit_thread`` (from ``halt_thread``, ``_sched_spinlock`` held)."""
    if k.md is None:
        return
    yield from remove_thread_locked(k, t)


# -- the arch interface (arch/x86/core/x86_mmu.c) -----------------------------------------------


def arch_mem_domain_init(k: Kernel, d: KMemDomain) -> None:
    """``arch_mem_domain_init``: the default domain uses the kernel's tables (no KPTI); another
    domain gets a copy of them (``copy_page_table``) and joins ``x86_domain_list``. With the
    common page table there is nothing to do."""
    # DEVIATION(no-kpti): X86_KPTI is not modelled (Zephyr's default on CPUs open to Meltdown), so the default domain uses the kernel's own tables and CR3 changes only on a switch.
    md = k.md
    assert md is not None
    if md.common:
        return
    if d.name == DEFAULT:
        d.ptables = k.pt
        return
    d.ptables = copy_page_table(k, md)
    md.x86_domain_list.append(d)


def _pool_frame(k: Kernel, md: MemDomains) -> int:
    """``page_pool_get``: a zeroed page for page-table data (also the PAE top level, which
    Zephyr keeps in ``domain->arch.pdpt``)."""
    # DEVIATION(domain-pool-from-free-frames): page_pool pages are free page frames counted against the pool's size, not a pinned .noinit array, so the image layout and all addresses stay as without domains.
    if md.pool_pages <= 0:
        raise KernelAssert(
            "arch_mem_domain_init: page pool exhausted (-ENOMEM; raise "
            "CONFIG_X86_MAX_ADDITIONAL_MEM_DOMAINS)"
        )
    pa = k.frames.alloc()
    if pa is None:
        raise KernelAssert("page_pool_get: no free page frame for page tables")
    md.pool_pages -= 1
    return pa


def copy_page_table(k: Kernel, md: MemDomains) -> PageTables:
    """``copy_page_table(dst, z_x86_kernel_ptables, 0)``: every present leaf of the kernel's tables,
    its permissions reset to those it was mapped with (``reset_pte``)."""
    # DEVIATION(copy-present-leaves): only present leaf PTEs are copied and tables are made as needed; Zephyr copies every table whole, non-present entries included.
    pt = PageTables(
        k.mem, k.mode, lambda: _pool_frame(k, md), pse=k.mode.name == "32", nxe=k.mode.has_nx
    )
    mask = perm_mask(k)
    for va, entry, size in k.pt.leaves():
        flags = entry & ~k.pt_frame_mask & ~(_P | int(PteFlags.PS))
        orig = md.perm_orig.get(va >> 12)
        if orig is not None:
            flags = (flags & ~mask) | orig
        pt.map(va, entry & k.pt_frame_mask & ~(size - 1), flags, size)
    return pt


def region_map_update(
    k: Kernel, pt: PageTables, start: int, size: int, attr: int, reset: bool, fn: str
) -> Routine:
    """``region_map_update``: set (``apply_region``) or reset (``reset_region``) the permission
    bits of ``[start, start+size)`` in one set of tables; invlpg here, then a TLB shootdown.
    Pages not present are left alone (their permission bits would not make them present)."""
    # DEVIATION(partition-skips-unmapped): an unmapped page in a partition is skipped; Zephyr writes the permission bits into its zero PTE (no access results, but the PTE is no longer 0).
    # DEVIATION(invlpg-any-tables): the local invlpg is done for any tables, Zephyr's OPTION_FLUSH only when they are the ones in CR3 (an extra invalidation, never a missing one).
    md = k.md
    assert md is not None
    mask = perm_mask(k)
    lo = start - start % PAGE
    pages = [va for va in range(lo, start + size, PAGE) if pt.lookup(va) is not None]
    if not pages:
        return
    if reset:
        k.shootdowns_owed += 1  # other CPUs may cache the rights until the shootdown below
    for va in pages:
        yield Point(fn, f"{va:#x} {'reset' if reset else f'attr {attr:#x}'}", res=pte_write(va))
        hit = pt.lookup(va)
        assert hit is not None
        entry = hit[2]
        orig = md.perm_orig.setdefault(va >> 12, entry & mask)
        perm = orig if reset else attr & mask
        pt.set_flags(va, (entry & (0x1FF | _NX) & ~(_P | mask)) | perm)
        kernel_invlpg(k, va)
    yield from tlb_shootdown(k)
    if reset:
        k.shootdowns_owed -= 1


def arch_mem_domain_partition_add(k: Kernel, d: KMemDomain, i: int) -> Routine:
    """``arch_mem_domain_partition_add``: apply the partition's attributes in ``d``'s tables
    (common table: only if ``d`` is the domain applied now)."""
    md = k.md
    part = d.partitions[i]
    assert md is not None and part is not None
    if md.common:
        if d is md.current_domain:
            yield from region_map_update(k, k.pt, part.start, part.size, part.attr, False, _APPLY)
        return
    assert d.ptables is not None
    yield from region_map_update(k, d.ptables, part.start, part.size, part.attr, False, _APPLY)


_APPLY, _RESET = "apply_region", "reset_region"


def arch_mem_domain_partition_remove(k: Kernel, d: KMemDomain, i: int) -> Routine:
    """``arch_mem_domain_partition_remove``: reset the partition's pages in ``d``'s tables."""
    md = k.md
    part = d.partitions[i]
    assert md is not None and part is not None
    if md.common:
        if d is md.current_domain:
            yield from region_map_update(k, k.pt, part.start, part.size, 0, True, _RESET)
        return
    assert d.ptables is not None
    yield from region_map_update(k, d.ptables, part.start, part.size, 0, True, _RESET)


def arch_mem_domain_thread_add(k: Kernel, t: KThread) -> Routine:
    """``arch_mem_domain_thread_add``: point ``t`` at its domain's tables; a user thread that
    migrates takes its stack's user access along (granted in the new tables, reset in the old);
    a current thread loads the new tables at once. Nothing with the common table."""
    md = k.md
    d = t.mem_domain
    assert md is not None and d is not None
    if md.common:
        return
    old = t.ptables
    migrating = old is not None and t.options & K_USER
    if migrating:
        yield from set_stack_perms(k, t, user=True, ptables=d.ptables)
    t.ptables = d.ptables
    if migrating and old is not None and old is not d.ptables:
        yield from set_stack_perms(k, t, user=False, ptables=old)
    if t is k.current and d.ptables is not None and k.cpu.hw.ctl.cr3 != d.ptables.root:
        k.cpu.hw.write_cr3(d.ptables.root)


def arch_mem_domain_thread_remove(k: Kernel, t: KThread) -> Routine:
    """``arch_mem_domain_thread_remove``: only for a dead user thread: reset its stack's
    permissions in its domain's tables. Nothing with the common table (the next user thread
    switched in resets the stack, ``z_x86_swap_update_common_page_table``)."""
    md = k.md
    if md is None or md.common or not t.options & K_USER:
        return
    if not t.state & ThreadState.DEAD:
        return  # migrating: the forthcoming thread_add resets it
    yield from set_stack_perms(k, t, user=False, ptables=t.ptables)


def z_x86_current_stack_perms(k: Kernel, t: KThread) -> Routine:
    """``z_x86_current_stack_perms`` (from ``z_x86_userspace_enter``): grant ``t``'s stack buffer
    in its domain's tables (common table: run the switch logic for it)."""
    # DEVIATION(no-user-stack-erase): Zephyr first fills the stack buffer with 0xAA here; mmusim does not (CONFIG_INIT_STACKS fills it at creation).
    md = k.md
    if md is None:
        return
    if md.common:
        z_x86_swap_update_common_page_table(k, t)
        return
    yield from set_stack_perms(k, t, user=True, ptables=t.ptables)


def z_x86_swap_update_page_tables(k: Kernel, c: PerCpu, incoming: KThread) -> None:
    """``z_x86_swap_update_page_tables`` (``arch/x86/core/userspace.c``, called from ``__resume``
    in ``intel64/locore.S``): CPU ``c`` resumes ``incoming``; load its domain's tables into CR3 if
    they are not loaded (a CR3 write flushes the non-global TLB entries). Common table: apply
    ``incoming``'s domain and stack in place."""
    md = k.md
    if md is None:
        return
    if md.common:
        z_x86_swap_update_common_page_table(k, incoming)
        return
    pt = incoming.ptables
    if pt is None:
        raise KernelAssert(
            f"z_x86_swap_update_page_tables: NULL page tables for thread {incoming.name!r}"
        )
    if c.hw.ctl.cr3 != pt.root:
        c.hw.write_cr3(pt.root)


def z_x86_swap_update_common_page_table(k: Kernel, incoming: KThread) -> None:
    """``z_x86_swap_update_common_page_table``: for an incoming user thread, move the stack grant
    from the last user thread's stack to its own, and -- if its domain is not the one applied --
    reset the applied domain's partitions and apply its own. Runs inside the context switch (one
    CPU: the option needs !SMP), so it is one step."""
    md = k.md
    assert md is not None
    if not incoming.options & K_USER:
        return
    info = incoming.stack_info
    if (info.start, info.size) != md.current_stack:
        if md.current_stack[1]:
            _run_now(region_map_update(k, k.pt, *md.current_stack, 0, True, _RESET))
        _run_now(region_map_update(k, k.pt, info.start, info.size, _RW | _US | _NX, False, _APPLY))
        md.current_stack = (info.start, info.size)
    d = incoming.mem_domain
    if d is md.current_domain or d is None:
        return
    if md.current_domain is not None:
        for p in md.current_domain.live():
            _run_now(region_map_update(k, k.pt, p.start, p.size, 0, True, _RESET))
    for p in d.live():
        _run_now(region_map_update(k, k.pt, p.start, p.size, p.attr, False, _APPLY))
    md.current_domain = d


def _run_now(routine: Routine) -> None:
    for _ in routine:
        pass


__all__ = [
    "DEFAULT",
    "K_MEM_PARTITION_ATTRS",
    "KMemDomain",
    "KMemPartition",
    "MemDomains",
    "init_mem_domain_module",
    "k_mem_domain_add_partition",
    "k_mem_domain_add_thread",
    "k_mem_domain_init",
    "k_mem_domain_remove_partition",
    "z_mem_domain_exit_thread",
    "z_mem_domain_init_thread",
    "z_x86_current_stack_perms",
    "z_x86_swap_update_page_tables",
]
