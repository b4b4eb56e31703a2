"""Page-fault handling: Zephyr's classification of a #PF (``arch/x86/core/fatal.c``).

``z_x86_page_fault_handler``, in order:

1. ``dump_page_fault`` (``mmusim.kernel.fatal``): ``Page fault at address ... (error code ...)``;
   ``Reserved bits set in page tables`` if RSVD, else ``Linear address not present in page
   tables`` if P=0 and -- always -- ``Access violation: ... thread not allowed to ...``; then the
   entry where the walk stopped (``z_x86_dump_mmu_flags``: ``PTE: not present``, ...);
2. ``THREAD_STACK_INFO``: the stack pointer out of the current context's bounds -> reason 2,
   where out of bounds is ``addr <= start || addr + size > end`` (note ``<=``: an SP exactly at
   ``stack_info.start`` -- a full stack -- counts as overflow);
3. ``THREAD_STACK_MEM_MAPPED``: CR2 inside the *current* thread's front or rear guard -> reason 2;
4. otherwise reason 0 (``K_ERR_CPU_EXCEPTION``) -- also for a fault in another mapping's guard.

Delivery: on ia32 a #PF at CPL 0 is delivered on the faulting stack (no IST); if pushing the
exception frame faults too -- a push into a guard page -- the processor raises a double fault,
which Zephyr takes through a task gate on its own stack; ``df_handler_bottom`` then classifies by
the saved ESP alone. On x86_64 every exception uses the per-CPU exception stack (IST), so the #PF is
delivered normally. A fault at CPL 3 switches to the privilege stack and never escalates.

After the log, ``k_sys_fatal_error_handler`` returns (as the Zephyr tests' handlers do) and the
faulting thread is aborted -- a self-abort, whose stack unmap is therefore deferred.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from mmusim.hw import DF_VECTOR, PF_VECTOR, Trap
from mmusim.kernel.abort import k_thread_abort
from mmusim.kernel.fatal import (
    K_ERR_CPU_EXCEPTION,
    K_ERR_STACK_CHK_FAIL,
    dump_page_fault,
    fatal_fault,
    system_halt,
)
from mmusim.kernel.geometry import round_down
from mmusim.kernel.thread import KThread

if TYPE_CHECKING:
    from mmusim.kernel.boot import Kernel


def check_stack_bounds(k: Kernel, addr: int, size: int, cs_cpl: int) -> bool:
    """``z_x86_check_stack_bounds`` (``arch/x86/core/fatal.c``): True if ``[addr, addr+size)`` is
    out of the bounds of the context that faulted. Three cases, in the source's order:

    * ``_current == NULL || arch_is_in_isr()`` (``_cpu->nested != 0``: this CPU is running an
      interrupt handler): the CPU's interrupt stack, ``start =
      K_KERNEL_STACK_BUFFER(z_interrupt_stacks[cpu])`` (the object + ``K_KERNEL_STACK_RESERVED``),
      ``end = start + CONFIG_ISR_STACK_SIZE``;
    * ``USERSPACE``, ``(cs & 3) == 0`` and ``_current`` is a ``K_USER`` thread -- a system call:
      the privilege-elevation stack, ``[stack_info.start - CONFIG_PRIVILEGED_STACK_SIZE,
      stack_info.start)``;
    * else the thread's buffer: ``start = stack_info.start``, ``end =
      Z_STACK_PTR_ALIGN(stack_info.start + stack_info.size)`` -- ``ROUND_DOWN`` to
      ``ARCH_STACK_PTR_ALIGN`` (``include/zephyr/kernel/thread_stack.h``).

    Then ``(addr <= start) || (addr + size > end)``: an SP at ``start`` (a full stack) is out.
    mmusim's ``_current`` is never NULL (no early-boot code runs)."""
    c = k.cpu
    t = k.current
    if c.irq is not None:  # arch_is_in_isr(): an IPI handler is running on this CPU
        isr = k.boot_stacks[f"z_interrupt_stacks[{c.id}]"]
        start = isr.addr + k.geometry.kernel_reserved  # K_KERNEL_STACK_BUFFER
        end = start + int(k.cfg.get("ISR_STACK_SIZE", 2048))
    elif k.cfg.get("USERSPACE") and cs_cpl == 0 and t.is_user:
        # In a syscall. As in Zephyr, these bounds name the area below stack_info.start -- with
        # THREAD_STACK_MEM_MAPPED that is in the alias, while arch.psp (the stack a syscall runs
        # on) is in the original object: Zephyr's check calls any SP there out of bounds.
        priv = int(k.cfg.get("PRIVILEGED_STACK_SIZE", 0))
        start, end = t.stack_info.start - priv, t.stack_info.start
    else:
        start = t.stack_info.start
        end = round_down(t.stack_info.start + t.stack_info.size, k.geometry.ptr_align)
    return addr <= start or addr + size > end


def check_guard_page(k: Kernel, addr: int) -> bool:
    """``z_x86_check_guard_page``: is ``addr`` in the current thread's guard? Asked of the kernel's
    stack policy (``MappedStacks.is_stack_fault`` is Zephyr's test, NULL-page quirk included)."""
    return k.policy.is_stack_fault(k, k.current, addr)


def page_fault(k: Kernel, t: KThread, trap: Trap, sp: int) -> Generator[Any, None, None]:
    """Deliver and handle a #PF raised by an access of thread ``t``'s (its code, or the context
    switch saving its context); the handler judges and blames ``_current``, as Zephyr's does, and
    ends by aborting it. The two differ only inside x86_64's ``z_x86_switch``, where ``_current``
    is already the incoming thread: Zephyr then blames the wrong thread, and mmusim halts the
    system (``fatal.system_halt``; docs/kernel.md)."""
    c = k.cpu
    cpl = c.hw.cpl
    vector, cr2, code = trap.vector, trap.cr2, trap.error_code
    double = False
    if trap.vector == PF_VECTOR and cpl == 0 and not k.cfg.get("X86_64"):
        try:  # ia32: the processor pushes EFLAGS, CS, EIP, error code on the current stack
            c.hw.push(bytes(16))
            c.hw.sp += 16
        except Trap as second:
            double, vector, cr2 = True, DF_VECTOR, second.cr2
    if double:
        k.printk("E: Double Fault")
        reason = K_ERR_STACK_CHK_FAIL if check_stack_bounds(k, sp, 0, cpl) else K_ERR_CPU_EXCEPTION
    else:
        dump_page_fault(k, cr2 or 0, code)  # a #PF always sets CR2
        reason = K_ERR_CPU_EXCEPTION
        if (
            k.cfg.get("THREAD_STACK_INFO")
            and check_stack_bounds(k, sp, 0, cpl)
            or cr2 is not None
            and check_guard_page(k, cr2)
        ):
            reason = K_ERR_STACK_CHK_FAIL
    if t.escape is not None:  # the access that trapped left the stack object: judge the policy
        t.escape.outcome = reason
        t.escape = None
    blamed = k.current  # z_fatal_error(): "Current thread"
    fatal_fault(k, blamed, vector, cr2, 0 if double else code, reason, sp, faulting=t)
    if blamed is not t:
        # DEVIATION(switch-fault-halts): a fault inside z_x86_switch halts the system whatever
        # k_sys_fatal_error_handler does; a handler that returns would abort the incoming thread
        # from the exception stack while the outgoing one never publishes its switch handle.
        yield from system_halt(k, f"fatal error {reason} in z_x86_switch")
    yield from k_thread_abort(k, t)  # from the exception stack


# Zephyr's software-raised fatal errors enter through this vector (include/zephyr/arch/x86/arch.h).
Z_X86_OOPS_VECTOR = 32


def stack_check_fail(k: Kernel, t: KThread, what: str) -> Generator[Any, None, None]:
    """A software stack check failed on a stack nothing can grow (a checked prologue on a
    thread's own stack): ``z_except_reason(K_ERR_STACK_CHK_FAIL)``, as Zephyr's
    ``_StackCheckHandler`` raises it (``kernel/compiler_stack_protect.c``) -- on x86 the oops
    vector -- and the thread is aborted. No access was made: nothing below the stack was written."""
    # DEVIATION(checked-prologue-zephyr): Zephyr has no checked prologue; a failed check on a
    # thread's own stack is treated as its stack canary's failure is.
    k.printk(f"E: {t.name}: {what}")
    fatal_fault(k, t, Z_X86_OOPS_VECTOR, None, 0, K_ERR_STACK_CHK_FAIL, k.cpu.hw.sp)
    yield from k_thread_abort(k, t)
