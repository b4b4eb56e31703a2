"""Kernel-wide invariants as plain functions.

The numbers in the docstrings below refer to this list of what mapped stacks must keep (after
Zephyr's ``kernel/thread.c``, ``kernel/mmu.c``, ``kernel/sched.c`` and
``include/zephyr/arch/x86/thread_stack.h``). Items without a ``check_*`` here are kept where named.

1. Geometry: a live mapping is page-aligned, ``K_*_STACK_LEN`` long, and holds ``stack_info``.
2. Guards: the pages just below and above a mapping are not present, and no two mappings share one.
3. Alias: every mapped stack page translates to the stack object's memory (phys == its address).
4. Virtual space: allocated pages == the boot reservation + every live mapping, guards included.
5. Cleanup slot: at most one pending stack, read and written only under ``thread_cleanup_lock``.
6. No self-unmap: a stack is not unmapped while a CPU still executes on it.
7. Release: an aborted thread's stack is unmapped, or parked in the slot until the next cleanup.
8. Reuse: ``k_thread_create`` drains the slot before it maps a stack for the thread parked there
   (``k_thread_abort_cleanup_check_reuse``, ``mmusim.kernel.cleanup``).
9. ``k_thread_stack_space_get`` is -EINVAL exactly when ``mapped.addr`` is NULL.
10. Fault classification follows ``z_x86_page_fault_handler`` (``mmusim.kernel.fault``).
11. User rights: guards and privilege stacks are never user-accessible, nor a dead thread's stack.
12. Configuration: mapped stacks need identity-mapped RAM (the Kconfig loader, ``mmusim.kconfig``).
13. Lock order: ``_sched_spinlock`` -> ``thread_cleanup_lock`` -> ``z_mm_lock`` (``KSpinlock``).
14. Suspending a thread never runs the cleanup; only its death does (``mmusim.kernel.cleanup``).

Each ``check_*`` returns a list of violations (strings, empty when the invariant holds), so callers
can report all of them at once; ``check_all`` runs every check and ``assert_invariants`` raises
``InvariantViolation`` listing them. Unit tests, the scenario runner (after every step) and the
explorer all call these same functions.

Some invariants only hold between kernel operations, not in the middle of one (a mapping's PTEs are
written one by one inside ``z_mm_lock``); those checks skip a mapping while ``z_mm_lock`` is held,
and say so. Every check is a function of the state alone. ``QUIESCENT_CHECKS`` (``check_quiescent``) judge a finished run: no stack leaked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mmusim.hw import PageTables, PteFlags
from mmusim.kernel.fatal import REASONS
from mmusim.kernel.geometry import PAGE
from mmusim.kernel.isolation import (
    check_cr3,
    check_domain_tables,
    check_domain_tables_full,
    domain_name,
    domain_tables,
    user_ok,
)
from mmusim.kernel.routines import Point
from mmusim.kernel.stack import k_thread_stack_space_get
from mmusim.kernel.thread import EINVAL

if TYPE_CHECKING:
    from mmusim.kernel.boot import Kernel


_RW = int(PteFlags.RW)
_US = int(PteFlags.US)


class InvariantViolation(AssertionError):
    """One or more kernel invariants do not hold."""


def check_geometry(k: Kernel) -> list[str]:
    """(1) Every live mapped stack: page-aligned, ``K_*_STACK_LEN`` long, ``start``/``size`` inside;
    and every live thread got at least the stack it asked for (``stack_info.size`` >= the
    requested size)."""
    out: list[str] = []
    for t in k.threads.values():
        if (
            t.stack is not None
            and t.stack_ready
            and not t.dead
            and t.stack_info.size < t.stack.size
        ):
            out.append(
                f"geometry: {t.name}: stack_info.size {t.stack_info.size:#x} < the requested "
                f"stack size {t.stack.size:#x}"
            )
        m = t.stack_info.mapped
        if m.addr is None or t.stack is None or not t.stack_ready:
            continue  # (while k_thread_create re-creates it, stack_info is the old one)
        info = t.stack_info
        user_capable = t.stack.user_capable and k.geometry.userspace
        if m.addr % PAGE or m.sz % PAGE:
            out.append(f"geometry: {t.name}: mapped {m.addr:#x}+{m.sz:#x} not page-aligned")
        if m.sz != k.geometry.obj_len(t.stack.size, user_capable):
            out.append(f"geometry: {t.name}: mapped.sz {m.sz:#x} != K_*_STACK_LEN")
        if info.start != m.addr + k.geometry.reserved(user_capable):
            out.append(f"geometry: {t.name}: stack_info.start {info.start:#x} != mapped + reserved")
        if info.start + info.size != m.addr + m.sz:
            out.append(f"geometry: {t.name}: start + size != mapped.addr + mapped.sz")
        if info.delta % k.geometry.ptr_align:
            out.append(f"geometry: {t.name}: delta {info.delta} not pointer-aligned")
    return out


# What the checks that walk page tables found, by everything they read: the tables' bytes
# (``PageTables.digest``) and the check's other inputs, all in the key. A pure memo, shared by
# every kernel: a run checks every step, and most steps write no PTE; the explorer checks
# thousands of states, from as many boots, whose tables hold the same bytes. Hashing the tables
# (a memcmp a frame when they are known) costs microseconds; walking every guard page and every
# stack page at every step made a run that maps a thousand regions quadratic.
_FOUND: dict[tuple[object, ...], tuple[Any, ...]] = {}
_FOUND_MAX = 4096


def _found(key: tuple[object, ...], look: Callable[[], list[Any]]) -> list[Any]:
    """``look()``, or what it gave for ``key`` before."""
    kept = _FOUND.get(key)
    if kept is None:
        if len(_FOUND) >= _FOUND_MAX:
            _FOUND.clear()
        kept = _FOUND[key] = tuple(look())
    return list(kept)


def check_guards(k: Kernel) -> list[str]:
    """(2) The guard pages of every guarded mapping are not present, and guards are not shared.
    A function of the page tables and the regions' guards (``_found``)."""
    guards = tuple((r.owner, g) for r in k.regions.values() for g in r.guard_ranges())

    def look() -> list[str]:
        out: list[str] = []
        seen: dict[int, str] = {}
        for owner, (lo, hi) in guards:
            for g in range(lo, hi, PAGE):
                if k.pt.lookup(g) is not None:
                    out.append(f"guards: {owner}: guard page {g:#x} is present")
                if g in seen:
                    out.append(f"guards: guard page {g:#x} shared by {seen[g]} and {owner}")
                seen[g] = owner
        return out

    return _found(("guards", k.pt.digest(), guards), look)


def check_regions(k: Kernel) -> list[str]:
    """(2, 4) Every mapping's virtual region -- guards included -- is allocated in the VM
    allocator and overlaps no other mapping's: no page is handed out twice, and no guard lies in
    free virtual space where a later mapping could make it present. Every live thread's stack
    mapping (``stack_info.mapped``) is a live mapping of its own, of that size (two mappings at
    one address would otherwise show as one). Skipped inside ``z_mm_lock``."""
    out: list[str] = []
    if k.mm_lock.holder is not None:
        return out
    for t in k.threads.values():
        m = t.stack_info.mapped
        if m.addr is None or not t.stack_ready or t.dead:
            continue
        r = k.regions.get(m.addr)
        if r is None or r.owner != t.name or r.size != m.sz:
            held = "no mapping" if r is None else f"{r.owner}'s {r.kind} mapping of {r.size:#x}"
            out.append(
                f"regions: {t.name}: its stack mapping {m.addr:#x}+{m.sz:#x} is not a live "
                f"mapping of its own ({held} there)"
            )
    spans = sorted((r.extent, r.owner) for r in k.regions.values())
    for ((lo, hi), owner), ((lo2, _hi2), owner2) in zip(spans, spans[1:], strict=False):
        if lo2 < hi:
            out.append(
                f"regions: {owner} [{lo:#x}, {hi:#x}) overlaps {owner2} (from {lo2:#x}): "
                "virtual pages handed out twice"
            )
    for (lo, hi), owner in spans:
        for va in (lo, hi - PAGE):
            if not k.vm.is_allocated(va):
                out.append(f"regions: {owner}: page {va:#x} of its region is free virtual space")
    return out


def check_alias(k: Kernel) -> list[str]:
    """(3) Every page of a mapped stack translates to the stack object's memory (phys == the
    object's physical address + offset); the object's own mapping stays present."""
    if k.mm_lock.holder is not None:
        return []  # a mapping may be half written inside z_mm_lock
    stacks = tuple((r.owner, r.addr, r.size, r.phys) for r in k.regions.values()
                   if r.kind == "stack" and r.phys is not None)  # fmt: skip
    mask, offset = k.pt_frame_mask, k.virt_offset

    def look() -> list[str]:
        out: list[str] = []
        for owner, addr, size, phys in stacks:
            for off in range(0, size, PAGE):
                hit = k.pt.lookup(addr + off)
                if hit is None:
                    out.append(f"alias: {owner}: stack page {addr + off:#x} not mapped")
                elif hit[2] & mask != phys + off:
                    out.append(f"alias: {owner}: {addr + off:#x} maps {hit[2] & mask:#x}")
            if k.pt.lookup(phys + offset) is None:
                out.append(f"alias: {owner}: the object's own mapping {phys:#x} is gone")
        return out

    return _found(("alias", k.pt.digest(), mask, offset, stacks), look)


def check_vm_conservation(k: Kernel) -> list[str]:
    """(4) Allocated virtual pages == boot reservation + every live mapping (guards included)."""
    if k.mm_lock.holder is not None:
        return []  # between virt_region_alloc and the bookkeeping
    expected = k.vm_reserved_pages + sum(
        r.size // PAGE + sum(r.guard_pages) for r in k.regions.values()
    )
    if k.vm.allocated_pages != expected:
        return [f"vm: {k.vm.allocated_pages} virtual pages allocated, expected {expected}"]
    return []


def check_cleanup_slot(k: Kernel) -> list[str]:
    """(5) At most one pending stack; a pending thread is dead with its mapping stashed."""
    out: list[str] = []
    slot = k.cleanup
    if slot.thread is not None:
        if k.cleanup_lock.holder is None and not (
            slot.thread.dead or slot.thread.state & slot.thread.state.ABORTING
        ):
            out.append(f"cleanup: pending thread {slot.thread.name} is not dead")
        if slot.thread.stack_info.mapped.addr is not None and k.cleanup_lock.holder is None:
            out.append(f"cleanup: pending thread {slot.thread.name} still has mapped.addr")
    if (
        slot.stack_addr is not None
        and k.cleanup_lock.holder is None
        and slot.stack_addr not in k.regions
    ):
        out.append(f"cleanup: stashed stack {slot.stack_addr:#x} is not a live mapping")
    return out


_SLOT = ("slot",)  # the footprint resource of the cleanup slot (mmusim.kernel.abort.SLOT)


def check_slot_locked(k: Kernel) -> list[str]:
    """(5) Every CPU about to read or write the cleanup slot (its next step's footprint names the
    slot: ``thread_to_cleanup``, the stash, a pending thread's ``mapped``) holds
    ``thread_cleanup_lock``."""
    out: list[str] = []
    for c in k.cpus:
        p = c.irq_pending if c.irq is not None else c.ctx.pending
        if not isinstance(p, Point) or p.res is None:
            continue
        if _SLOT not in p.res[0] and _SLOT not in p.res[1]:
            continue
        if k.cleanup_lock not in c.held:
            holder = k.cleanup_lock.holder
            held = "free" if holder is None else f"held by CPU {holder}"
            out.append(
                f"slot-lock: CPU {c.id} is about to access the cleanup slot ({p}) without "
                f"thread_cleanup_lock ({held})"
            )
    return out


def check_no_lost_stack(k: Kernel) -> list[str]:
    """(5, 7) A stack handed to the cleanup slot is unmapped, or still in the slot: a mapped stack
    whose owner is dead and has given it up (``mapped.addr`` NULL, i.e. deferred) must be the one
    stashed. Otherwise the slot lost it -- overwritten or cleared before it was drained -- and
    nothing will ever unmap it. Skipped while ``z_mm_lock`` is held (an unmap in progress)."""
    out: list[str] = []
    if k.mm_lock.holder is not None:
        return out
    for r in k.regions.values():
        if r.kind != "stack" or r.addr == k.cleanup.stack_addr:
            continue
        t = k.threads.get(r.owner)
        if t is not None and t.dead and t.stack_info.mapped.addr is None:
            pending = k.cleanup.thread.name if k.cleanup.thread is not None else "NULL"
            out.append(
                f"slot-lost: {t.name} deferred its stack {r.addr:#x} but the slot holds "
                f"{pending} (stash {_hex(k.cleanup.stack_addr)}): it is never unmapped"
            )
    return out


def _hex(v: int | None) -> str:
    return "NULL" if v is None else f"{v:#x}"


def check_no_leaked_stack(k: Kernel) -> list[str]:
    """(7) Once quiescent (nothing left to run, nobody sleeping; else it reports nothing), every
    mapped stack belongs to a live thread that runs on it or is the one stack parked in the cleanup
    slot: a dead thread's stack was unmapped (or is pending), and no mapping is orphaned. Catches
    the #119098 leak and a slot overwritten before it was drained."""
    if not k.mapped_stacks or not k.quiescent():
        return []
    out: list[str] = []
    for r in k.regions.values():
        if r.kind != "stack" or r.addr == k.cleanup.stack_addr:
            continue
        t = k.threads.get(r.owner)
        if t is None:
            out.append(f"leak: stack mapping {r.addr:#x} of unknown thread {r.owner!r}")
        elif t.dead:
            out.append(f"leak: {t.name} is dead but its stack {r.addr:#x} is still mapped")
        elif t.stack_info.mapped.addr != r.addr:
            out.append(
                f"leak: stack mapping {r.addr:#x} of {t.name} is neither its stack nor pending"
            )
    return out


def check_no_self_unmap(k: Kernel) -> list[str]:
    """(6) No CPU executes on a stack whose pages are unmapped (its SP's page must be present).
    Judged while SP is inside the stack as it was placed (``KThread.stack_extent``): an SP that an
    overflow moved below it (``sub sp, frame`` before the access that faults) is not an unmap."""
    out: list[str] = []
    for c in k.cpus:
        t = c.running_on
        if t is None or c.irq is not None:
            continue
        lo, hi = t.stack_extent
        if not lo <= c.hw.sp <= hi:
            continue
        # The data in use is [SP, top): SP's own page must be mapped -- unless SP is a page-aligned,
        # empty stack top, whose page is the rear guard; then the page below is the one in use.
        sp = c.hw.sp
        page = sp & ~(PAGE - 1)
        if k.pt.lookup(page) is None and sp % PAGE == 0:
            page -= PAGE
        if k.pt.lookup(page) is None:
            out.append(
                f"self-unmap: CPU {c.id} runs {t.name} on its stack at {c.hw.sp:#x}, "
                f"but page {page:#x} is not mapped"
            )
    return out


def check_no_stale_stack_tlb(k: Kernel) -> list[str]:
    """No CPU runs on its stack through a stale TLB entry -- one the page tables no longer back (the
    page was unmapped, or mapped again to another frame) -- unless a TLB shootdown is on its way to
    that CPU. Judged for the pages at SP and just below it, the ones a
    push or pop uses; skipped while ``z_mm_lock`` is held (an unmap sends its shootdown last).
    Catches ``SIM_TLB_SHOOTDOWN=n``: the stale entry is used, silently, instead of faulting."""
    out: list[str] = []
    if k.mm_lock.holder is not None:
        return out
    for c in k.cpus:
        t = c.running_on
        if t is None or c.irq is not None or "tlb" in c.pending_ipis:
            continue
        sp = c.hw.sp
        for page in sorted({sp & ~(PAGE - 1), (sp - 1) & ~(PAGE - 1)}):
            e = c.hw.tlb.peek(page)  # not Tlb.lookup: that would count a hit
            if e is None:
                continue
            hit = k.pt.lookup(page)
            frame = None if hit is None else hit[2] & k.pt_frame_mask & ~(hit[3] - 1)
            if frame != e.frame:
                now = "not mapped" if frame is None else f"maps {frame:#x}"
                out.append(
                    f"stale-tlb: CPU {c.id} runs {t.name} on its stack at {sp:#x} through a stale "
                    f"TLB entry {page:#x} -> {e.frame:#x} (the page tables: {now}); no TLB "
                    "shootdown pending"
                )
    return out


def check_space_query(k: Kernel) -> list[str]:
    """(9) ``k_thread_stack_space_get`` is -EINVAL exactly when ``mapped.addr`` is NULL."""
    out: list[str] = []
    if not k.mapped_stacks:
        return out
    for t in k.threads.values():
        if not t.generation:
            continue
        res = k_thread_stack_space_get(k, t)
        if (res == -EINVAL) != (t.stack_info.mapped.addr is None):
            out.append(
                f"space: {t.name}: stack_space_get {res} vs mapped.addr {t.stack_info.mapped.addr}"
            )
    return out


def check_locks(k: Kernel) -> list[str]:
    """Every spinlock has at most one holder, and each CPU's held list matches the holders."""
    out: list[str] = []
    locks = [k.sched_lock, k.cleanup_lock, k.mm_lock] + ([k.md.lock] if k.md else [])
    for lock in locks:
        holders = [c.id for c in k.cpus if lock in c.held]
        if len(holders) > 1:
            out.append(f"locks: {lock.name} held by CPUs {holders}")
        if (holders[0] if holders else None) != lock.holder:
            out.append(f"locks: {lock.name}.holder={lock.holder} but held by {holders}")
    return out


def check_user_perms(k: Kernel) -> list[str]:
    """(11) Guards and privilege stacks are never user-accessible; a dead thread's stack is not.
    With memory domains, in every set of page tables: a user-accessible page of a stack or of a
    partition is one the tables' domain grants -- a live user thread of that domain runs on it,
    or a partition of that domain with user access holds it (common table: the stack and the
    domain last applied on a switch) -- or a ``K_MEM_PERM_USER`` mapping."""
    out: list[str] = []
    md = k.md
    tables = [(k.pt, None)] if md is None else domain_tables(k)
    pages: dict[int, str] = {}  # candidate page -> what it is, for messages
    for t in k.threads.values():
        m = t.stack_info.mapped
        if m.addr is not None and t.generation:
            pages.update((va, t.name) for va in range(m.addr, m.addr + m.sz, PAGE))
    if md is not None:
        for p in md.partitions.values():
            lo = p.start - p.start % PAGE
            pages.update((va, f"partition {p.name}") for va in range(lo, p.end, PAGE))
    candidates = tuple(pages.items())
    for pt, d in tables:

        def look(pt: PageTables = pt) -> list[tuple[int, str]]:  # the user-accessible ones
            return [(va, what) for va, what in candidates
                    if (hit := pt.lookup(va)) is not None and hit[2] & _US]  # fmt: skip

        for va, what in _found(("user", pt.digest(), candidates), look):
            if user_ok(k, d, va):
                continue
            where = f" in the page tables of domain {domain_name(d)}" if len(tables) > 1 else ""
            out.append(f"user: {what}: page {va:#x} is user-accessible{where}")
    return out


def check_frames(k: Kernel) -> list[str]:
    """No present PTE of an anonymous mapping maps a free page frame."""
    out: list[str] = []
    if k.mm_lock.holder is not None:
        return out
    for r in k.regions.values():
        if r.kind != "anon":
            continue
        for off in range(0, r.size, PAGE):
            hit = k.pt.lookup(r.addr + off)
            if hit is not None and k.frames.is_free(hit[2] & k.pt_frame_mask):
                out.append(f"frames: {r.owner}: {r.addr + off:#x} maps a free frame")
    return out


def check_policy_guards(k: Kernel) -> list[str]:
    """Every live thread's guards, as its stack policy states them (``StackPolicy.guards``), fault
    on a write: each page is not present or read-only. Skipped inside ``z_mm_lock``."""
    if k.mm_lock.holder is not None:
        return []
    spans = tuple((t.name, lo, hi) for t in k.threads.values()
                  if t.stack_ready and not t.dead and t.stack is not None
                  for lo, hi in k.policy.guards(k, t))  # fmt: skip
    name = k.policy.name

    def look() -> list[str]:
        out: list[str] = []
        for thread, lo, hi in spans:
            for va in range(lo - lo % PAGE, hi, PAGE):
                hit = k.pt.lookup(va)
                if hit is not None and hit[2] & _RW:
                    out.append(
                        f"policy-guards: {thread}: guard page {va:#x} ({name}) is mapped writable"
                    )
        return out

    return _found(("policy-guards", k.pt.digest(), name, spans), look)


def check_stack_escapes(k: Kernel) -> list[str]:
    """The stack policy keeps its promise (``StackPolicy.catches``): every stack access that left
    its thread's stack object by less than a page, in a direction the policy catches, faulted and
    was reported as a stack overflow (``K_ERR_STACK_CHK_FAIL``)."""
    out: list[str] = []
    catches = k.policy.catches
    for e in k.escapes:
        if e.outcome is None or e.outcome == 2 or e.kind not in catches:
            continue
        if e.outcome == "silent":
            how = "went through silently"
        else:
            how = f"was reported as reason {e.outcome} ({REASONS.get(int(e.outcome), '?')})"
        out.append(
            f"escape: {e.thread}: stack {e.kind} at {e.addr:#x} ({e.what}) {how}, not as a "
            f"stack overflow -- policy {k.policy.name!r} promises to catch {e.kind}s"
        )
    return out


def check_tlb_coherent(k: Kernel) -> list[str]:
    """No CPU's TLB holds a translation in the mapping area (above ``K_MEM_VM_FREE_START``) that
    the page tables no longer grant -- page gone, another frame, or rights taken away -- unless a
    TLB shootdown is on its way to that CPU. The unmapping CPU itself must have ``invlpg``-ed.
    Skipped inside ``z_mm_lock`` (an unmap invalidates, then shoots down, after the PTE writes) and
    while a CPU takes rights away (``set_stack_perms``) and owes the shootdown."""
    out: list[str] = []
    if k.mm_lock.holder is not None or k.shootdowns_owed:
        return out
    floor = k.image_end_virt >> 12
    for c in k.cpus:
        if c.shootdowns_pending:
            continue
        for e, why in k.stale_tlb_entries(c):
            if e.page >> 12 < floor:
                continue
            if why == "not mapped":
                out.append(f"tlb: CPU {c.id} caches {e.describe()}, but the page is not mapped")
            elif why == "fewer rights":
                out.append(f"tlb: CPU {c.id} caches {e.describe()}: more rights than the PTE")
            else:
                out.append(f"tlb: CPU {c.id} caches {e.describe()}, the tables {why}")
    return out


def check_fault_attribution(k: Kernel) -> list[str]:
    """Every fatal error names the thread whose access faulted as ``Current thread``. Zephyr's
    handlers blame ``_current``; inside x86_64's ``z_x86_switch`` that is already the incoming
    thread, so a fault saving the outgoing context (a full stack, or -- the SMP abort race -- a
    stack unmapped under the switch) is reported against the wrong thread, and the system halts."""
    out = []
    for f in k.faults:
        if f["faulting"] != f["thread"]:
            reason = f"ZEPHYR FATAL ERROR {f['reason']}: {REASONS[f['reason']]}"
            out.append(
                f"misattributed-fault: CPU {f['cpu']} reports {reason} for {f['thread']} "
                f"(_current), but the access that faulted at {f['cr2']:#x} was "
                f"{f['faulting']}'s, in z_x86_switch; the system halted"
            )
    return out


CHECKS: tuple[Callable[[Kernel], list[str]], ...] = (
    check_geometry,
    check_guards,
    check_regions,
    check_policy_guards,
    check_stack_escapes,
    check_tlb_coherent,
    check_alias,
    check_vm_conservation,
    check_cleanup_slot,
    check_slot_locked,
    check_no_lost_stack,
    check_no_self_unmap,
    check_no_stale_stack_tlb,
    check_space_query,
    check_locks,
    check_user_perms,
    check_frames,
    check_fault_attribution,
    check_domain_tables,
    check_cr3,
)

INVARIANT_NAMES: tuple[str, ...] = (
    "geometry", "guards", "regions", "policy-guards", "escape", "tlb", "alias", "vm", "cleanup",
    "slot-lock", "slot-lost", "self-unmap", "stale-tlb", "space", "locks", "user", "frames",
    "misattributed-fault", "domains", "cr3", "leak", "runtime",
)  # fmt: skip
"""The names the checks' messages start with (``name: ...``): what ``mmusim explore --ignore``
takes."""

QUIESCENT_CHECKS: tuple[Callable[[Kernel], list[str]], ...] = (
    check_no_leaked_stack,
    check_domain_tables_full,
)
"""Checks of a finished run, not of every step: call ``check_quiescent`` on a quiescent kernel.
Not in ``CHECKS`` because the #119098 leak (``SIM_ABORT_CLEANUP_LEAK``) is reproduced on purpose
by scenarios and tests that still check every step."""


def check_all(k: Kernel) -> list[str]:
    out: list[str] = []
    with contextlib.ExitStack() as frozen:
        for pt in k.all_ptables():  # the checks only read: each page is walked once
            frozen.enter_context(pt.frozen())
        for check in CHECKS:
            out.extend(check(k))
        for check in k.extension_checks:  # a layer above the kernel (mmusim.runtime)
            out.extend(check(k))
    return out


def check_quiescent(k: Kernel) -> list[str]:
    """``check_all`` plus ``QUIESCENT_CHECKS`` (which only judge a quiescent kernel)."""
    out = check_all(k)
    for check in QUIESCENT_CHECKS:
        out.extend(check(k))
    return out


def assert_invariants(k: Kernel) -> None:
    """Raise ``InvariantViolation`` listing every violated invariant (use as ``Kernel(check=...)``)."""
    problems = check_all(k)
    if problems:
        raise InvariantViolation(f"after step {k.steps}:\n  " + "\n  ".join(problems))
