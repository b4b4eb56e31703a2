"""Page-fault handling: Zephyr's classification, reason codes and fatal log (``arch/x86/core/fatal.c``).

``z_x86_page_fault_handler`` (reference zephyr-mapped-stacks.md section 3.1), in order:

1. dump the fault (``Page fault at address ... (error code ...)``);
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

from mmusim.hw import PF_VECTOR, PfErrorCode, Trap
from mmusim.hw.paging import DF_VECTOR
from mmusim.kernel import abort
from mmusim.kernel.core import KernelAssert
from mmusim.kernel.geometry import round_up
from mmusim.kernel.thread import KThread, ThreadState

if TYPE_CHECKING:
    from mmusim.kernel.kernel import Kernel

K_ERR_CPU_EXCEPTION = 0
K_ERR_SPURIOUS_IRQ = 1
K_ERR_STACK_CHK_FAIL = 2
K_ERR_KERNEL_OOPS = 3
K_ERR_KERNEL_PANIC = 4
REASONS = {
    0: "CPU exception",
    1: "Unhandled interrupt",
    2: "Stack overflow",
    3: "Kernel oops",
    4: "Kernel panic",
}


def check_stack_bounds(k: Kernel, addr: int, size: int, cs_cpl: int) -> bool:
    """``z_x86_check_stack_bounds``: True if ``[addr, addr+size)`` is out of the current bounds."""
    t = k.current
    if t.is_user and cs_cpl == 0 and k.cfg.get("USERSPACE"):
        priv = int(k.cfg.get("PRIVILEGED_STACK_SIZE", 0))
        start, end = t.stack_info.start - priv, t.stack_info.start  # in a syscall
    else:
        start = t.stack_info.start
        end = round_up(t.stack_info.start + t.stack_info.size, k.geometry.ptr_align)
    return addr <= start or addr + size > end


def check_guard_page(k: Kernel, addr: int) -> bool:
    """``z_x86_check_guard_page``: is ``addr`` in the current thread's guard? Asked of the kernel's
    stack policy (``MappedStacks.is_stack_fault`` is Zephyr's test, NULL-page quirk included)."""
    return k.policy.is_stack_fault(k, k.current, addr)


def page_fault(k: Kernel, t: KThread, trap: Trap, sp: int) -> Generator[Any, None, None]:
    """Deliver and handle a #PF raised by thread ``t``'s code; ends by aborting ``t``."""
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
        k.printk(f"E: Page fault at address {cr2:#x} (error code {code:#x})")
        if not code & PfErrorCode.P:
            k.printk("E: Linear address not present in page tables")
        else:
            who = "user" if code & PfErrorCode.US else "supervisor"
            what = (
                "execute" if code & PfErrorCode.ID else "write" if code & PfErrorCode.W else "read"
            )
            k.printk(f"E: Access violation: {who} thread not allowed to {what}")
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
    fatal_fault(k, t, vector, cr2, 0 if double else code, reason, sp)
    yield from abort.k_thread_abort(k, t)  # from the exception stack


def switch_overflow(k: Kernel, old: KThread, trap: Trap) -> Generator[Any, None, None]:
    """``arch_switch`` faulted saving ``old``'s context on its own stack: the stack was full (an
    SP at ``stack_info.start`` already counts as overflowed). The fault is taken in exception
    context (the IST on x86_64, the #DF task on ia32; mmusim: this CPU's interrupt stack) and is a
    fatal stack overflow of ``old`` -- mmusim attributes it to ``old``, although ``_current`` is
    already the incoming thread (a documented choice, docs/kernel.md). ``old`` is halted there, its
    stack unmapped at once (the CPU no longer runs on it), and its switch handle published so
    joiners go on; the switch to the incoming thread then completes."""
    c = k.cpu
    k.printk(f"E: Page fault at address {trap.cr2:#x} (error code {trap.error_code:#x})")
    fatal_fault(k, old, trap.vector, trap.cr2, trap.error_code, K_ERR_STACK_CHK_FAIL, c.hw.sp)
    old.exit_reason += " (saving its context)"
    yield from k.k_spin_lock(k.sched_lock, "z_x86_switch_fault")
    yield from abort.halt_thread(k, old, ThreadState.DEAD)
    yield from k.k_spin_unlock(k.sched_lock, "z_x86_switch_fault")
    old.sp = c.hw.sp
    old.switch_handle = old.sp


def fatal_fault(
    k: Kernel, t: KThread, vector: int, cr2: int | None, code: int, reason: int, sp: int
) -> None:
    """Record the fault, print Zephyr's fatal-error lines, and leave the faulting stack: the
    handler runs in exception context -- x86_64 on its IST exception stack, ia32 (#DF) on the
    double-fault task's stack; mmusim uses the CPU's interrupt stack for both (docs/kernel.md)."""
    c = k.cpu
    k.faults.append(
        {
            "thread": t.name,
            "cpu": c.id,
            "vector": vector,
            "cr2": cr2,
            "error_code": code,
            "reason": reason,
            "sp": sp,
            "tick": k.clock,
        }
    )
    z_fatal_error(k, t, reason)
    t.exit_reason = f"fatal: {REASONS[reason]}"
    c.hw.cpl = 0
    c.hw.sp = c.isr_stack
    c.running_on = None


def z_fatal_error(k: Kernel, t: KThread, reason: int) -> None:
    k.printk(f"E: >>> ZEPHYR FATAL ERROR {reason}: {REASONS[reason]} on CPU {k._cpu}")
    k.printk(f"E: Current thread: {k.thread_id(t):#x} ({t.name})")


def kernel_bug(k: Kernel, what: str, exc: BaseException) -> None:
    """A fault where the kernel cannot take one (e.g. while switching contexts): a kernel bug.
    Recorded, logged, and raised as a KernelAssert so no run passes silently."""
    k.printk(f"E: >>> ZEPHYR FATAL ERROR {K_ERR_KERNEL_PANIC}: {REASONS[4]} on CPU {k._cpu}")
    k.printk(f"E: {what}")
    raise KernelAssert(what) from exc
