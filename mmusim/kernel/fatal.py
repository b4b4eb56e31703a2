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


# Page-fault error-code bits as Zephyr names them (arch/x86/include/x86_mmu.h).
PF_P, PF_WR, PF_US, PF_RSVD, PF_ID, PF_PK, PF_SGX = 1, 2, 4, 8, 16, 32, 1 << 15
# The entry bits dump_entry() names, in its order (MMU_* of x86_mmu.h; XD is bit 63).
_ENTRY_BITS = (
    ("RW", 1 << 1), ("US", 1 << 2), ("PWT", 1 << 3), ("PCD", 1 << 4),
    ("A", 1 << 5), ("D", 1 << 6), ("G", 1 << 8), ("XD", 1 << 63),
)  # fmt: skip


def dump_page_fault_lines(
    cr2: int, err: int, pentry: tuple[str, int] | None = None, *, wide: bool = True
) -> list[str]:
    """The lines ``dump_page_fault`` (``arch/x86/core/fatal.c``) logs for a #PF at ``cr2`` with
    error code ``err``, without their ``E: `` prefix, in its order::

        Page fault at address %p (error code 0x%lx)
        RSVD:  Reserved bits set in page tables
        else:  [!P: Linear address not present in page tables]
               Access violation: {user|supervisor} thread not allowed to {execute|write|read}
               [PK: Protection key disallowed | else SGX: SGX access control violation]

    then ``z_x86_dump_mmu_flags`` (``arch/x86/core/x86_mmu.c``, with ``CONFIG_X86_MMU``): where
    the walk for ``cr2`` stops, ``pentry`` = (level name, raw entry): ``PTE: not present``, or
    ``dump_entry``'s ``PTE: <page> -> <entry & level mask>: RW US ... XD`` (``wide``: 64-bit
    entries, ``PRI_ENTRY`` ``0x%016llx``; else ``0x%08x``). Note that a not-present fault prints
    the "Access violation" line too: only RSVD suppresses it."""
    lines = [f"Page fault at address {cr2:#x} (error code {err:#x})"]
    if err & PF_RSVD:
        lines.append("Reserved bits set in page tables")
    else:
        if not err & PF_P:
            lines.append("Linear address not present in page tables")
        who = "user" if err & PF_US else "supervisor"
        what = "execute" if err & PF_ID else "write" if err & PF_WR else "read"
        lines.append(f"Access violation: {who} thread not allowed to {what}")
        if err & PF_PK:
            lines.append("Protection key disallowed")
        elif err & PF_SGX:
            lines.append("SGX access control violation")
    if pentry is not None:
        level, entry = pentry
        if not entry & PF_P:  # MMU_P is bit 0, as PF_P
            lines.append(f"{level}E: not present")
        else:
            # paging_levels[].mask: PT 0x07FF..F000, upper levels 0x7FFF..F000; 32-bit 0xFFFFF000
            mask = (
                (0x07FF_FFFF_FFFF_F000 if level == "PT" else 0x7FFF_FFFF_FFFF_F000)
                if wide
                else 0xFFFF_F000
            )
            scope = {"PML4": 39, "PDPT": 30, "PD": 21 if wide else 22, "PT": 12}[level]
            page = cr2 & ~((1 << scope) - 1)
            bits = "".join(f"{name} " for name, bit in _ENTRY_BITS if entry & bit)
            value = f"{entry & mask:#018x}" if wide else f"{entry & mask:#010x}"
            lines.append(f"{level}E: {page:#x} -> {value}: {bits}")
    return lines


def dump_page_fault(k: Kernel, cr2: int, err: int) -> None:
    """``dump_page_fault`` (``arch/x86/core/fatal.c``, ``CONFIG_EXCEPTION_DEBUG``): log the #PF,
    with the entry of the kernel's page tables where the walk for ``cr2`` stops."""
    for line in dump_page_fault_lines(
        cr2, err, k.pt.entry_for(cr2), wide=k.word == 8 or k.mode.name == "pae"
    ):
        k.printk(f"E: {line}")
    # DEVIATION(fatal-log-no-registers): z_x86_fatal_error's dump_regs and call trace are not printed: mmusim has no general-purpose registers or frame pointers


def z_fatal_error(k: Kernel, t: KThread, reason: int) -> None:
    k.printk(f"E: >>> ZEPHYR FATAL ERROR {reason}: {REASONS[reason]} on CPU {k._cpu}")
    k.printk(f"E: Current thread: {k.thread_id(t):#x} ({t.name})")


def kernel_bug(k: Kernel, what: str, exc: BaseException) -> None:
    """A fault where the kernel cannot take one (e.g. while switching contexts): a kernel bug.
    Recorded, logged, and raised as a KernelAssert so no run passes silently."""
    k.printk(f"E: >>> ZEPHYR FATAL ERROR {K_ERR_KERNEL_PANIC}: {REASONS[4]} on CPU {k._cpu}")
    k.printk(f"E: {what}")
    raise KernelAssert(what) from exc
