"""Fatal errors: reason codes, Zephyr's fatal-error log, and leaving the faulting stack
(``kernel/fatal.c``, ``arch/x86/core/fatal.c``).

``fatal_fault`` records a fault, prints Zephyr's ``>>> ZEPHYR FATAL ERROR`` lines and moves the CPU
to its exception stack; the #PF handler (``mmusim.kernel.fault``) and ``switch_overflow`` -- a fault
while ``arch_switch`` saves the outgoing context (``mmusim.kernel.sched``) -- both end here.
``kernel_bug`` is a fault where the kernel cannot take one: a panic, raised as ``KernelAssert``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from mmusim.hw import Trap
from mmusim.kernel.cleanup import halt_thread
from mmusim.kernel.routines import KernelAssert
from mmusim.kernel.thread import KThread, ThreadState

if TYPE_CHECKING:
    from mmusim.kernel.boot import Kernel

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
    yield from halt_thread(k, old, ThreadState.DEAD)
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
