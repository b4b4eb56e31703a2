"""The memory-domain invariants (``mmusim.kernel.domain``), used by ``mmusim.kernel.invariants``.

* ``check_domain_tables``: every domain's page tables map the kernel's mappings (each page of every
  mapping and its guards) as the kernel's tables do -- ``range_map`` writes them all;
  ``check_domain_tables_full`` compares every leaf, once quiescent.
* ``check_cr3``: each CPU walks the page tables of the thread it executes.
* ``user_ok``: whether a page may be user-accessible in one domain's tables -- the rule
  ``invariants.check_user_perms`` applies to every set of tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmusim.hw import PageTables, PteFlags
from mmusim.kernel.geometry import PAGE

if TYPE_CHECKING:
    from mmusim.kernel.boot import Kernel
    from mmusim.kernel.domain import KMemDomain
    from mmusim.kernel.engine import Region

_US = int(PteFlags.US)


def domain_name(d: KMemDomain | None) -> str:
    return "default" if d is None else d.name


def domain_tables(k: Kernel) -> list[tuple[PageTables, KMemDomain | None]]:
    """Each set of page tables with its domain (None: the kernel's, the default domain's)."""
    md = k.md
    assert md is not None
    return [(k.pt, None), *((d.ptables, d) for d in md.x86_domain_list if d.ptables)]


def user_ok(k: Kernel, d: KMemDomain | None, va: int) -> bool:
    """May page ``va`` be user-accessible in domain ``d``'s tables (None: the kernel's)?"""
    md = k.md
    r = region_at(k, va)
    if r is not None and r.user:
        return True  # K_MEM_PERM_USER: mapped user-accessible in every domain
    if md is not None and md.common:
        lo, size = md.current_stack
        parts = md.current_domain.live() if md.current_domain else []
        return lo - lo % PAGE <= va < lo + size or any(
            p.start - p.start % PAGE <= va < p.end and p.attr & _US for p in parts
        )
    dom = d if d is not None else (md.default if md is not None else None)
    if dom is not None and any(
        p.start - p.start % PAGE <= va < p.end and p.attr & _US for p in dom.live()
    ):
        return True
    for t in k.threads.values():  # t.mem_domain, not dom.threads: halt_thread leaves the list first
        # k_mem_domain_add_thread moves a stack's access between two domains' tables under
        # z_mem_domain_lock: while it is held, either may have it.
        if (
            dom is not None
            and t.mem_domain is not dom
            and md is not None
            and md.lock.holder is None
        ):
            continue
        lo, hi = t.stack_info.start, t.stack_info.start + t.stack_info.size
        dead = t.dead and k.sched_lock.holder is None  # halt_thread resets them under the lock
        if t.is_user and not dead and lo <= va < hi and t.stack_info.mapped.addr is not None:
            return True
        if t.is_user and not dead and lo <= va < hi and not k.mapped_stacks:
            return True
    return False


def region_at(k: Kernel, va: int) -> Region | None:
    for r in k.regions.values():
        if r.addr <= va < r.addr + r.size:
            return r
    return None


def check_domain_tables(k: Kernel) -> list[str]:
    """Every memory domain's page tables map the kernel's mappings as the kernel's tables do
    (``range_map`` writes them all): each page of every mapping and its guards is present in all
    of them or in none, to the same frame. Skipped inside ``z_mm_lock``."""
    out: list[str] = []
    if k.md is None or not k.md.x86_domain_list or k.mm_lock.holder is not None:
        return out
    for r in k.regions.values():
        lo, hi = r.extent
        for va in range(lo, hi, PAGE):
            want = frame_of(k, k.pt, va)
            for d in k.md.x86_domain_list:
                assert d.ptables is not None
                got = frame_of(k, d.ptables, va)
                if got != want:
                    out.append(
                        f"domains: {r.owner}: page {va:#x} maps {got and hex(got)} in domain {d.name}'s "
                        f"tables, {want and hex(want)} in the kernel's"
                    )
    return out


def check_domain_tables_full(k: Kernel) -> list[str]:
    """Once quiescent: every domain's tables have the kernel's leaves, all of them, to the same
    frames (only permission bits may differ)."""
    out: list[str] = []
    if k.md is None:
        return out
    mask = k.pt_frame_mask
    want = {va: e & mask & ~(sz - 1) for va, e, sz in k.pt.leaves()}
    for d in k.md.x86_domain_list:
        assert d.ptables is not None
        got = {va: e & mask & ~(sz - 1) for va, e, sz in d.ptables.leaves()}
        for va in sorted(set(want) ^ set(got)):
            out.append(
                f"domains: {va:#x} is mapped in only one of domain {d.name}'s and the kernel's"
            )
        for va in sorted(set(want) & set(got)):
            if want[va] != got[va]:
                out.append(
                    f"domains: {va:#x} maps {got[va]:#x} in {d.name}, {want[va]:#x} in the kernel"
                )
    return out


def frame_of(k: Kernel, pt: PageTables, va: int) -> int | None:
    hit = pt.lookup(va)
    return None if hit is None else hit[2] & k.pt_frame_mask & ~(hit[3] - 1)


def check_cr3(k: Kernel) -> list[str]:
    """Each CPU runs on the page tables of the thread it executes (``z_x86_swap_update_page_tables``):
    CR3 is that thread's domain's tables (the kernel's with the common table). Not judged while a
    CPU is switching threads (``_current`` already the incoming one): a thread moved to another
    domain there keeps the old tables until ``__resume`` loads the next thread's."""
    out: list[str] = []
    md = k.md
    for c in k.cpus:
        t = c.ctx
        if t is not c.current:
            continue
        want = k.pt if md is None or md.common or t.ptables is None else t.ptables
        if c.hw.ctl.cr3 != want.root:
            out.append(
                f"cr3: CPU {c.id} runs {t.name} with CR3 {c.hw.ctl.cr3:#x}, not its domain's "
                f"tables {want.root:#x}"
            )
    return out
