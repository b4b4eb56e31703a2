"""Routines checked line by line against Zephyr's source: each test names the file and function it
follows, and failed before the model was brought in line with it.
"""

from __future__ import annotations

import pytest

from helpers import X86_64_SMP, boot_kernel
from mmusim.kconfig import load_config
from mmusim.kernel import K_FOREVER, Kernel, Op, StackObject, fault, mm, run
from mmusim.kernel.fatal import dump_page_fault_lines
from mmusim.kernel.geometry import PAGE
from mmusim.kernel.thread import K_USER

# -- arch/x86/core/fatal.c: dump_page_fault --------------------------------------------------------

NP = "Linear address not present in page tables"
RSVD = "Reserved bits set in page tables"


def av(who: str, what: str) -> str:
    return f"Access violation: {who} thread not allowed to {what}"


# dump_page_fault: the "Page fault at address" line; then "Reserved bits set in page tables" if
# PF_RSVD, else "Linear address not present in page tables" if !PF_P followed -- always -- by
# "Access violation: %s thread not allowed to %s" (user if PF_US; execute if PF_ID, else write if
# PF_WR, else read), then "Protection key disallowed" if PF_PK, else "SGX access control
# violation" if PF_SGX.
DUMP_PAGE_FAULT_CASES = [
    (0x0, [NP, av("supervisor", "read")]),
    (0x2, [NP, av("supervisor", "write")]),
    (0x4, [NP, av("user", "read")]),
    (0x6, [NP, av("user", "write")]),
    (0x10, [NP, av("supervisor", "execute")]),
    (0x12, [NP, av("supervisor", "execute")]),  # I/D wins over W/R
    (0x1, [av("supervisor", "read")]),
    (0x3, [av("supervisor", "write")]),
    (0x5, [av("user", "read")]),
    (0x7, [av("user", "write")]),
    (0x11, [av("supervisor", "execute")]),
    (0x15, [av("user", "execute")]),
    (0x9, [RSVD]),  # RSVD: no access-violation line at all
    (0xF, [RSVD]),
    (0x19, [RSVD]),
    (0x21, [av("supervisor", "read"), "Protection key disallowed"]),
    (0x8001, [av("supervisor", "read"), "SGX access control violation"]),
    (0x8021, [av("supervisor", "read"), "Protection key disallowed"]),  # PK, else SGX
    (0x8, [RSVD]),
]


@pytest.mark.parametrize(("code", "lines"), DUMP_PAGE_FAULT_CASES)
def test_dump_page_fault_lines_follow_zephyr(code: int, lines: list[str]) -> None:
    out = dump_page_fault_lines(0x8EF800, code)
    assert out == [f"Page fault at address 0x8ef800 (error code {code:#x})", *lines]


@pytest.mark.parametrize(
    ("pentry", "wide", "line"),
    [
        (("PT", 0), True, "PTE: not present"),
        (("PD", 0), True, "PDE: not present"),
        (("PML4", 0), True, "PML4E: not present"),
        (
            ("PT", 0x133000 | 0x63 | 1 << 63),
            True,
            "PTE: 0x8ef000 -> 0x0000000000133000: RW A D XD ",
        ),
        (("PT", 0x126000 | 0x1 | 1 << 63), True, "PTE: 0x8ef000 -> 0x0000000000126000: XD "),
        (("PT", 0x133000 | 0x7), False, "PTE: 0x8ef000 -> 0x00133000: RW US "),
    ],
)
def test_dump_mmu_flags_line(pentry: tuple[str, int], wide: bool, line: str) -> None:
    """z_x86_dump_mmu_flags (arch/x86/core/x86_mmu.c): "%sE: not present" with the level where
    the walk stopped, or dump_entry's "%sE: %p -> PRI_ENTRY: bits"."""
    out = dump_page_fault_lines(0x8EF800, 0x3, pentry, wide=wide)
    assert out[-1] == line


def test_kernel_fault_log_prints_access_violation_after_not_present() -> None:
    """A write into a mapped stack's front guard: not present, and the access-violation line."""
    k = boot_kernel(X86_64_SMP, (Op("touch", where="front_guard"),))
    k.run()
    assert k.log[:4] == [
        f"E: Page fault at address {k.faults[0]['cr2']:#x} (error code 0x2)",
        f"E: {NP}",
        f"E: {av('supervisor', 'write')}",
        "E: PTE: not present",
    ]


# -- arch/x86/core/x86_mmu.c: arch_mem_unmap -> range_map(OPTION_FLUSH) -> tlb_shootdown ----------


def tlb_ipis(main: tuple[Op, ...]) -> int:
    """TLB IPIs sent while main runs ``main`` (on two CPUs: one per tlb_shootdown)."""
    k = boot_kernel(X86_64_SMP, main, {"b": ()}, (StackObject("s", PAGE, False),))
    k.run()
    return k.ipis["tlb"]


def test_tlb_shootdowns_per_mapped_stack_follow_zephyr() -> None:
    create = (Op("create", target="t", stack="s", label="b", n=K_FOREVER),)
    # k_mem_map_phys_guard (kernel/mmu.c) calls arch_mem_unmap once for each guard page, and every
    # arch_mem_unmap is range_map_unlocked(..., OPTION_FLUSH | OPTION_CLEAR), whose range_map ends
    # in one tlb_shootdown() under CONFIG_SMP -- whether or not the guard page was ever mapped.
    # arch_mem_map passes no OPTION_FLUSH: no shootdown. So mapping t's stack costs 2.
    assert tlb_ipis(create) == 2
    # Aborting t, which is not running, unmaps its stack at once (post-fix do_thread_cleanup):
    # k_mem_unmap_phys_guard(addr, size, is_anon=false) skips the guards ("they should have been
    # unmapped") and makes ONE arch_mem_unmap(addr, size) call: one shootdown for the whole stack,
    # however many pages, i.e. one IPI to the one other CPU. Main then returns: its own unmap is
    # deferred in the cleanup slot, so nothing more.
    assert tlb_ipis((*create, Op("abort", target="t"))) == 2 + 1


def test_tlb_shootdowns_per_k_mem_map_follow_zephyr() -> None:
    mapped = (Op("k_mem_map", target="m", n=3 * PAGE),)
    assert tlb_ipis(mapped) == 2  # the two guard pages, as for a stack
    # k_mem_unmap -> k_mem_unmap_phys_guard(..., is_anon=true): VIRT_FOREACH page, arch_mem_unmap
    # (pos, CONFIG_MMU_PAGE_SIZE) then page_frame_free_locked -- one shootdown per page.
    assert tlb_ipis((*mapped, Op("k_mem_unmap", target="m"))) == 2 + 3


def test_a_shootdown_is_sent_even_when_nothing_was_present() -> None:
    """range_map calls tlb_shootdown() for OPTION_FLUSH unconditionally (x86_mmu.c)."""
    k = boot_kernel(X86_64_SMP)
    free = k.vm_base + k.vm_size - 64 * PAGE  # free virtual space: no PTE is present there
    assert k.pt.lookup(free) is None
    run(mm.arch_mem_unmap(k, free, 2 * PAGE))
    assert k.ipis["tlb"] == 1 and k.cpus[1].pending_ipis == ["tlb"]


# -- arch/x86/core/fatal.c: z_x86_check_stack_bounds ------------------------------------------------


def test_check_stack_bounds_thread_buffer_edges() -> None:
    """else-branch: start = stack_info.start, end = Z_STACK_PTR_ALIGN(start + size); out of bounds
    is ``addr <= start || addr + size > end``."""
    k = boot_kernel(X86_64_SMP)
    t = k.current
    start, end = t.stack_info.start, t.stack_info.start + t.stack_info.size
    assert fault.check_stack_bounds(k, start, 0, 0)  # <=: a full stack is an overflow
    assert not fault.check_stack_bounds(k, start + 1, 0, 0)
    assert not fault.check_stack_bounds(k, end, 0, 0)  # SP at the top: an empty stack
    assert fault.check_stack_bounds(k, end + 1, 0, 0)
    assert not fault.check_stack_bounds(k, end - 16, 16, 0)  # a frame that ends at the top
    assert fault.check_stack_bounds(k, end - 15, 16, 0)


def test_check_stack_bounds_rounds_the_top_down() -> None:
    """Z_STACK_PTR_ALIGN is ROUND_DOWN(ptr, ARCH_STACK_PTR_ALIGN) (kernel/thread_stack.h): with a
    buffer size that is not a multiple of 16 (x86_64), the last partial slot is out of bounds."""
    k = boot_kernel(X86_64_SMP)
    t = k.current
    t.stack_info.size += 8  # start + size is now 8 past a 16-byte boundary
    top = t.stack_info.start + t.stack_info.size
    assert fault.check_stack_bounds(k, top, 0, 0)  # rounded down: top - 8 is the end
    assert not fault.check_stack_bounds(k, top - 8, 0, 0)
    assert fault.check_stack_bounds(k, top - 7, 0, 0)


def test_check_stack_bounds_in_an_isr_uses_the_cpu_interrupt_stack() -> None:
    """arch_is_in_isr(): start = K_KERNEL_STACK_BUFFER(z_interrupt_stacks[cpu]) -- the object plus
    K_KERNEL_STACK_RESERVED -- and end = start + CONFIG_ISR_STACK_SIZE."""
    k = boot_kernel(X86_64_SMP)
    c = k.cpus[0]
    isr = k.boot_stacks["z_interrupt_stacks[0]"]
    start = isr.addr + k.geometry.kernel_reserved
    end = start + X86_64_SMP["ISR_STACK_SIZE"]
    t = k.current
    assert not fault.check_stack_bounds(k, t.stack_info.start + 64, 0, 0)  # the thread's stack
    c.irq = iter(())  # this CPU is now running an interrupt handler (nested != 0)
    assert fault.check_stack_bounds(k, t.stack_info.start + 64, 0, 0)  # not the ISR stack
    assert fault.check_stack_bounds(k, start, 0, 0)
    assert not fault.check_stack_bounds(k, start + 1, 0, 0)
    assert not fault.check_stack_bounds(k, end, 0, 0)
    assert fault.check_stack_bounds(k, end - 7, 8, 0)
    # The other CPU's interrupt stack is not this CPU's.
    other = k.boot_stacks["z_interrupt_stacks[1]"].addr + k.geometry.kernel_reserved
    assert fault.check_stack_bounds(k, other + 64, 0, 0)


def test_check_stack_bounds_in_a_syscall_uses_the_privilege_stack() -> None:
    """USERSPACE, (cs & 3) == 0 and K_USER: [stack_info.start - PRIVILEGED_STACK_SIZE, start)."""
    k = boot_kernel(X86_64_SMP)
    t = k.current
    t.options |= K_USER  # base.user_options
    start = t.stack_info.start
    priv = X86_64_SMP["PRIVILEGED_STACK_SIZE"]
    assert fault.check_stack_bounds(k, start - priv, 0, 0)
    assert not fault.check_stack_bounds(k, start - priv + 1, 0, 0)
    assert not fault.check_stack_bounds(k, start, 0, 0)
    assert fault.check_stack_bounds(k, start + 1, 0, 0)
    assert not fault.check_stack_bounds(k, start + 64, 0, 3)  # CPL 3: the user buffer


# -- kernel/thread.c: k_thread_state_str -------------------------------------------------------


def test_thread_state_names_are_k_thread_state_str() -> None:
    """Names of the set _THREAD_* bits, lowest first, joined by '+' (Z_STATE_STR_* of
    kernel/include/thread.h: dummy, pending, sleeping, dead, suspended, aborting, suspending,
    queued); a running thread (state 0 on SMP) is mmusim's "running"."""
    main = (
        Op("create", target="t", stack="s", label="b", n=K_FOREVER),
        Op("record", target="t.state", label="created"),
        Op("start", target="t"),  # t (prio 0, preemptible) is queued behind main
        Op("record", target="t.state", label="started"),
        Op("record", target="main.state", label="me"),
        Op("sleep", n=1),  # t runs: it sleeps for 100 ticks
        Op("record", target="t.state", label="asleep"),
        Op("abort", target="t"),
        Op("record", target="t.state", label="aborted"),
    )
    k = boot_kernel(X86_64_SMP, main, {"b": (Op("sleep", n=100),)},
                    (StackObject("s", PAGE, False),), MP_MAX_NUM_CPUS=1)  # fmt: skip
    k.run()
    assert {n: v[0] for n, v in k.facts.items()} == {
        "created": "sleeping",  # _THREAD_SLEEPING (bit 2), "prestart" in older trees
        "started": "queued",
        "me": "running",
        "asleep": "sleeping",
        "aborted": "sleeping+dead",  # halt_thread sets DEAD and leaves the sleeping bit
    }


# -- kernel/init.c, kernel/Kconfig: boot ------------------------------------------------------------


def test_boot_maps_main_then_the_idle_threads_with_zephyrs_default_sizes() -> None:
    """prepare_multithreading() sets up main, then z_init_cpu(0) idle 0; z_smp_init() the other
    CPUs' idle threads. Mapped stacks are allocated top-down, so main's alias is the highest.
    kernel/Kconfig: MAIN_STACK_SIZE 1024, IDLE_STACK_SIZE 256."""
    cfg = load_config("qemu_x86_64")
    assert cfg.MAIN_STACK_SIZE == 1024 and cfg.IDLE_STACK_SIZE == 256
    k = Kernel(cfg.values)
    addrs = [k.thread(n).stack_info.mapped.addr for n in ("main", "idle 00", "idle 01")]
    assert addrs == sorted(addrs, reverse=True) and None not in addrs
    assert k.boot_stacks["z_main_stack"].size == 1024
    assert k.boot_stacks["z_idle_stacks[0]"].size == 256
