"""The tiny RTOS: Zephyr's memory-mapped thread stacks on the simulated machine.

Policy over ``mmusim.hw`` (which it uses only through its public API), with Zephyr's names:
``k_thread_create``, ``k_thread_abort``, ``k_mem_map_phys_guard``, ``stack_info.mapped.addr``.
See docs/kernel.md. Import what you need from here (``from mmusim.kernel import Kernel, Op``):
this package is the kernel's public API, for scenarios, policy authors and test writers.

The modules, lowest first. Each imports only modules above it in this list (and ``mmusim.hw``);
a module lower down may name ``Kernel`` in annotations only (``if TYPE_CHECKING:``).
``tests/test_layout.py`` fails on any import cycle::

    routines    how kernel code is written: generators that yield a Point before each shared
                access; footprints; run(); KernelAssert
    spinlock    struct k_spinlock, with Zephyr's validation and a lock order
    thread      struct k_thread: states, stack_info, stack objects; body ops (Op)
    geometry    stack object sizes: K_KERNEL_STACK_LEN, K_THREAD_STACK_LEN, reserved areas
    bitarray    sys_bitarray (one bit per page) as a segment tree: first fit in O(log N)
    vmregion    virt_region_alloc / virt_region_free over the kernel's virtual window
    runqueue    the ready queue and the sleepers
    engine      Engine: the kernel's state (struct _cpu, regions, the cleanup slot) and the
                loop that steps CPUs through routines; IPI delivery
    mm          page frames, arch_mem_map/unmap, TLB shootdown, k_mem_map, k_mem_map_phys_guard
    policy      stack policies: where a stack lives and what guards it
    stack       a thread's stack: setup_thread_stack, user access, k_thread_stack_space_get
    domain      memory domains: k_mem_domain_*, per-domain page tables, the CR3 switch
    cleanup     how a thread ends: halt_thread and the deferred stack cleanup
    fatal       fatal errors: reason codes, Zephyr's log, halting the system
    sched       next_up, z_thread_halt, z_swap and each architecture's context switch
                (z_x86_switch, arch_swap), the IPI handler, idle, k_sleep, k_yield
    lifecycle   k_thread_create, start, join, suspend, resume
    abort       k_thread_abort
    fault       page faults: Zephyr's classification, delivery
    facts       named facts of a state (what scenarios record and expect)
    body        thread bodies, run on their real stacks through the MMU
    isolation   the memory-domain invariants: every domain's tables, CR3, user access
    invariants  kernel-wide invariants, as functions
    boot        boot(), and Kernel: an Engine booted from a configuration
"""

from mmusim.kernel.boot import Kernel
from mmusim.kernel.domain import K_MEM_PARTITION_ATTRS, KMemDomain, KMemPartition
from mmusim.kernel.engine import Engine, PerCpu, Region
from mmusim.kernel.facts import fact, thread_state_name
from mmusim.kernel.fatal import K_ERR_CPU_EXCEPTION, K_ERR_STACK_CHK_FAIL, REASONS
from mmusim.kernel.geometry import PAGE, StackGeometry
from mmusim.kernel.invariants import (
    CHECKS,
    QUIESCENT_CHECKS,
    InvariantViolation,
    assert_invariants,
    check_all,
    check_quiescent,
)
from mmusim.kernel.mm import (
    K_MEM_MAP_UNINIT,
    K_MEM_PERM_EXEC,
    K_MEM_PERM_RW,
    K_MEM_PERM_USER,
    map_phys_guarded,
    unmap_phys_guarded,
)
from mmusim.kernel.policy import (
    LegacyGuard,
    MappedStacks,
    NoProtection,
    StackEscape,
    StackPolicy,
)
from mmusim.kernel.routines import Footprint, KernelAssert, Point, run
from mmusim.kernel.spinlock import KSpinlock
from mmusim.kernel.thread import (
    K_ESSENTIAL,
    K_FOREVER,
    K_NO_WAIT,
    K_USER,
    KThread,
    MappedInfo,
    Op,
    StackInfo,
    StackObject,
    ThreadState,
)

__all__ = [
    "CHECKS",
    "K_ERR_CPU_EXCEPTION",
    "K_ERR_STACK_CHK_FAIL",
    "K_ESSENTIAL",
    "K_FOREVER",
    "K_MEM_PARTITION_ATTRS",
    "K_MEM_MAP_UNINIT",
    "K_MEM_PERM_EXEC",
    "K_MEM_PERM_RW",
    "K_MEM_PERM_USER",
    "K_NO_WAIT",
    "K_USER",
    "PAGE",
    "QUIESCENT_CHECKS",
    "REASONS",
    "Engine",
    "Footprint",
    "InvariantViolation",
    "KMemDomain",
    "KMemPartition",
    "KSpinlock",
    "KThread",
    "Kernel",
    "KernelAssert",
    "LegacyGuard",
    "MappedInfo",
    "MappedStacks",
    "NoProtection",
    "Op",
    "PerCpu",
    "Point",
    "Region",
    "StackEscape",
    "StackGeometry",
    "StackInfo",
    "StackObject",
    "StackPolicy",
    "ThreadState",
    "assert_invariants",
    "check_all",
    "check_quiescent",
    "fact",
    "map_phys_guarded",
    "run",
    "thread_state_name",
    "unmap_phys_guarded",
]
