"""A thread's stack: ``setup_thread_stack``, user access to it, ``k_thread_stack_space_get``.

``setup_thread_stack`` (``kernel/thread.c``), with S
the stack size (the mapping itself is the stack policy's, ``mmusim.kernel.policy``; this is
Zephyr's)::

    obj = K_THREAD_STACK_LEN(S) (user-capable) or K_KERNEL_STACK_LEN(S); rsv = the reserved part
    M = k_mem_map_phys_guard(stack, obj, RW | UNINIT, false)   # mapped stacks only; else M = stack
    stack_info.start = M + rsv; stack_info.size = obj - rsv; initial SP = M + obj - delta
    stack_info.mapped = {M, obj}

``delta`` (TLS, local data, random offset) is 0 in mmusim: none of those features is modelled.
The stack object's address is passed as the physical address, which is right only because the
kernel image is identity-mapped -- the reason ``qemu_x86_atom_virt`` turns mapped stacks off.
mmusim maps ``stack.addr - virt_offset`` instead, so the alias is correct on every board.

User threads (``K_USER``): ``set_stack_perms`` gives the pages of ``[stack_info.start, start +
size)`` U/S=1 in one set of page tables -- the thread's memory domain's, when it enters user mode
-- and takes it back when it dies, before the cleanup hook runs (``mmusim.kernel.domain``).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from mmusim.hw import PageTables, PteFlags
from mmusim.kernel.geometry import PAGE
from mmusim.kernel.mm import kernel_invlpg, tlb_shootdown
from mmusim.kernel.routines import KernelAssert, Point, pte_write
from mmusim.kernel.thread import EINVAL, ENOTSUP, KThread, StackInfo, StackObject

if TYPE_CHECKING:
    from mmusim.kernel.boot import Kernel

Routine = Generator[Any, None, None]
_RW = int(PteFlags.RW)
_US = int(PteFlags.US)
_NX = int(PteFlags.NX)
STACK_FILL = 0xAA  # CONFIG_INIT_STACKS


def setup_thread_stack(k: Kernel, t: KThread, stack: StackObject, size: int) -> Routine:
    """Place the stack through the kernel's stack policy (``mmusim.kernel.policy``), then derive
    ``stack_info`` from the mapping and Zephyr's geometry macros."""
    geo = k.geometry
    user_capable = stack.user_capable and geo.userspace
    obj = geo.obj_len(size, user_capable)
    rsv = geo.reserved(user_capable)
    # DEVIATION(alias-phys-address): the alias maps stack_obj - virt_offset; Zephyr passes the
    # object's virtual address as the physical one (right only when identity-mapped).
    # DEVIATION(stack-delta-zero): stack_info.delta is 0: no TLS, local data or random offset.
    phys = stack.addr - k.virt_offset
    mapped = yield from k.policy.map_stack(k, t, stack, obj)
    if k.policy.remaps and mapped.addr is None:
        raise KernelAssert(
            f"setup_thread_stack: __ASSERT_NO_MSG(stack_mapped != 0) failed for {t.name!r} "
            "(kernel virtual space exhausted)"
        )
    m = mapped.addr if mapped.addr is not None else stack.addr
    t.stack_extent = (m, m + (mapped.sz or obj))
    t.stack_info = StackInfo(m + rsv, (mapped.sz or obj) - rsv, 0, mapped)
    if k.cfg.get("INIT_STACKS"):
        k.mem.write(phys + rsv, bytes([STACK_FILL]) * (t.stack_info.size))
    arch_new_thread(k, t, t.stack_info.start + t.stack_info.size)


# ia32's initial frame (arch/x86/core/ia32/thread.c, struct _x86_initial_frame): the seven words
# arch_swap pops or reads -- return value, EBP, EBX, ESI, EDI, thread_entry, EFLAGS -- then entry,
# p1, p2, p3 for z_thread_entry. The first arch_swap return leaves ESP 20 bytes below stack_ptr.
IA32_INITIAL_FRAME = 44
# x86_64's (arch/x86/core/intel64/thread.c, struct x86_initial_frame): a zeroed return address.
X86_64_INITIAL_FRAME = 8


def arch_new_thread(k: Kernel, t: KThread, stack_ptr: int) -> None:
    """``arch_new_thread``: write the initial frame below ``stack_ptr`` (through the stack's
    physical memory; mmusim's frame words are zeros) and set the saved stack pointer to it
    (``Z_STACK_PTR_TO_FRAME``)."""
    frame = X86_64_INITIAL_FRAME if k.use_switch else IA32_INITIAL_FRAME
    t.sp = stack_ptr - frame
    assert t.stack is not None
    phys = t.stack.addr - k.virt_offset + (t.sp - t.stack_extent[0])
    k.mem.write(phys, bytes(frame))


def set_stack_perms(
    k: Kernel, t: KThread, user: bool, ptables: PageTables | None = None
) -> Routine:
    """``set_stack_perms`` (``arch/x86/core/x86_mmu.c``): give (or take back) user access to
    ``[stack_info.start, start + size)`` in ``ptables`` (default: the kernel's)."""
    pt = k.pt if ptables is None else ptables
    nx = _NX if k.mode.has_nx else 0
    flags = _RW | nx | (_US if user else 0)
    start, end = t.stack_info.start, t.stack_info.start + t.stack_info.size
    if k.mutant_user_priv_stack:  # MUTANT (SIM_MUTANT_USER_PRIV_STACK): privilege stack too
        assert t.stack is not None
        start = t.stack_info.mapped.addr or t.stack.addr
    changed = False
    for va in range(start - start % PAGE, end, PAGE):
        hit = pt.lookup(va)
        if hit is None:
            continue
        yield Point(
            "set_stack_perms", f"{va:#x} {'user' if user else 'supervisor'} RW", res=pte_write(va)
        )
        if not user and not changed:
            k.shootdowns_owed += 1  # other CPUs may cache the rights until the shootdown below
        if k.md is not None:  # reset_pte restores what the page was mapped with
            k.md.perm_orig.setdefault(va >> 12, hit[2] & (_RW | _US | nx))
        pt.set_flags(va, flags)
        kernel_invlpg(k, va)
        changed = True
    # DEVIATION(no-shootdown-on-grant): granting user access sends no TLB IPI; Zephyr's region_map_update sends one on SMP for every change (a TLB never holds more rights than the PTE, so none is needed).
    if changed and not user:  # taking rights away: other CPUs may cache them
        yield from tlb_shootdown(k)
        k.shootdowns_owed -= 1


def k_thread_stack_space_get(k: Kernel, t: KThread) -> int:
    """Unused stack bytes, or a negative errno: -EINVAL once the stack is no longer mapped
    (``stack_info.mapped.addr == NULL``), -ENOTSUP without CONFIG_INIT_STACKS."""
    if k.mapped_stacks and t.stack_info.mapped.addr is None:
        return -EINVAL
    if not k.cfg.get("INIT_STACKS"):
        return -ENOTSUP
    assert t.stack is not None
    rsv = t.stack_info.start - (t.stack_info.mapped.addr or t.stack.addr)
    data = k.mem.read(t.stack.addr - k.virt_offset + rsv, t.stack_info.size)
    unused = 0
    for b in data:
        if b != STACK_FILL:
            break
        unused += 1
    return unused
