"""Fatal errors: reason codes, Zephyr's fatal-error log, and leaving the faulting stack
(``kernel/fatal.c``, ``arch/x86/core/fatal.c``).

``fatal_fault`` records a fault, prints Zephyr's ``>>> ZEPHYR FATAL ERROR`` lines and moves the CPU
to its exception stack; the #PF handler (``mmusim.kernel.fault``) ends here, also for a fault while
the context switch saves the outgoing context (``mmusim.kernel.sched``). ``system_halt`` is
``k_sys_fatal_error_handler``'s default, ``Halting system``.
``kernel_bug`` is a fault where the kernel cannot take one: a panic, raised as ``KernelAssert``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from mmusim.kernel.routines import Condition, KernelAssert, Point
from mmusim.kernel.thread import KThread

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


def system_halt(k: Kernel, why: str) -> Generator[Any, None, None]:
    """``k_sys_fatal_error_handler``'s default: ``Halting system`` -- ``arch_system_halt()`` stops
    every CPU for good (``kernel/fatal.c``). The engine takes no further action."""
    k.printk("E: Halting system")
    k.halted = why
    k.cpu.running_on = None
    yield Point("arch_system_halt", "halted", wait=Condition("never: the system halted", _never))
    raise AssertionError("arch_system_halt returned")  # pragma: no cover


def _never() -> bool:
    return False


def fatal_fault(
    k: Kernel,
    t: KThread,
    vector: int,
    cr2: int | None,
    code: int,
    reason: int,
    sp: int,
    *,
    faulting: KThread | None = None,
) -> None:
    """Record the fault, print Zephyr's fatal-error lines for thread ``t`` (``_current``), and
    leave the faulting stack: the handler runs in exception context -- x86_64 on its IST exception
    stack, ia32 (#DF) on the double-fault task's stack; mmusim uses the CPU's interrupt stack for
    both (docs/kernel.md). ``faulting``: the thread whose access faulted, if not ``t``."""
    c = k.cpu
    k.faults.append(
        {
            "thread": t.name,
            "faulting": (faulting or t).name,
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
    # DEVIATION(exception-stack): the handler runs on the CPU's interrupt stack, for x86_64's IST
    # exception stack and ia32's double-fault task stack alike.
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
