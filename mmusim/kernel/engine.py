"""The engine: the kernel's state, and the loop that steps the CPUs through kernel routines.

``Engine`` holds what Zephyr keeps in ``struct z_kernel`` and each ``struct _cpu`` -- CPUs, threads,
locks, the ready queue, the deferred-cleanup slot, the kernel mappings, the tick clock, the console
-- and drives the routines (``mmusim.kernel.routines``): every thread has a generator (its Python
frames are its "kernel stack"); each CPU runs its current thread's generator, or an interrupt
handler's, one interleaving ``Point`` at a time. ``do(action)`` performs one step; ``run()`` steps
CPUs in a deterministic round-robin order, or in a seeded random order (``seed=``), until the
system is quiescent. Threads sleeping on the tick clock wake when nothing else can run (the clock
jumps to the first wake-up). ``mmusim.kernel.boot`` builds a ``Kernel`` -- an ``Engine``, booted.

Interrupts: an IPI is delivered through the handler boot installs in ``ipi_handler``, as Zephyr's
``arch_smp_init()`` (``arch/x86/core/intel64/smp.c``) puts ``z_sched_ipi`` and ``z_x86_tlb_ipi``
into ``x86_irq_funcs``. mmusim has one handler for all its IPI kinds (``sched.z_x86_ipi``), where
Zephyr has a vector each. The engine itself only starts and ends handlers, and switches threads
when a handler says so.

The kernel never uses the wall clock or global randomness.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from sortedcontainers import SortedKeyList

from mmusim.hw import Cpu, PageTables, PagingMode, PhysMem, PteFlags, TlbEntry, Trap
from mmusim.kernel import runqueue
from mmusim.kernel.geometry import PAGE, ConfigValues, StackGeometry
from mmusim.kernel.routines import KernelAssert, Point, writes
from mmusim.kernel.spinlock import KSpinlock
from mmusim.kernel.thread import KThread, Op, Request, StackObject, ThreadState

if TYPE_CHECKING:
    from mmusim.kernel.boot import Kernel
    from mmusim.kernel.domain import MemDomains
    from mmusim.kernel.mm import FrameAllocator
    from mmusim.kernel.policy import StackEscape, StackPolicy
    from mmusim.kernel.vmregion import VirtRegionAllocator

_RW = int(PteFlags.RW)
_US = int(PteFlags.US)
IpiHandler = Callable[["Kernel", "PerCpu", list[str]], Generator[Any, None, None]]
# The #PF vector's handler (fault.page_fault): (kernel, thread whose access faulted, trap, SP).
FaultHandler = Callable[["Kernel", KThread, Trap, int], Generator[Any, None, None]]
PageTableSwitch = Callable[["Kernel", "PerCpu", KThread], None]
# k_mem_page_fault's place (kernel/mmu.c): asked first about a #PF of a thread body's access;
# True means "resolved, retry the access" (see Engine.mem_page_fault).
MemPageFault = Callable[["Kernel", KThread, Trap], Generator[Any, None, bool]]


# Stacks a layer above the kernel manages itself (Engine.stack_runtime; mmusim.runtime's Go
# stacks): what the thread's current stack is, and what a checked prologue does on it.
class StackRuntime(Protocol):
    def current_stack(self, k: Kernel, t: KThread) -> tuple[int, int] | None:
        """``[lo, hi)`` of the stack ``t`` runs on, if the layer gave it one; else None."""

    def needs_morestack(self, k: Kernel, t: KThread, sp: int, frame: int) -> bool | None:
        """A checked prologue's verdict on the layer's stack (None: not one of its stacks)."""

    def morestack(
        self, k: Kernel, t: KThread, frame: int, callee: Callable[[], Generator[Any, None, None]]
    ) -> Generator[Any, None, bool]:
        """Make room for ``frame`` and run ``callee`` (the function from its frame on) there;
        False when the stack is not the layer's (the kernel then fails the check)."""


# An op kind a layer above the kernel adds to thread bodies (Engine.extension_ops).
ExtensionOp = Callable[["Kernel", KThread, Op], Generator[Any, None, None]]
SWITCHED_OUT = "switched out"  # KThread.pending while its generator sits at `yield SwitchOut`


@attrs.frozen
class SwitchOut:
    """Yielded by ``arch_switch`` after the outgoing context is saved: the CPU now runs ``new``."""

    new: KThread


@attrs.frozen
class IrqExit:
    """Yielded by an interrupt handler when it returns; ``new`` is the thread to resume (or None:
    resume the interrupted one)."""

    new: KThread | None


@attrs.define(eq=False)
class PerCpu:
    """``struct _cpu``: what belongs to one CPU. Private to that CPU, except ``pending_ipis``
    (written by the sender) and ``current`` (read by other CPUs under ``_sched_spinlock``)."""

    id: int
    hw: Cpu
    idle: KThread
    current: KThread  # Zephyr's _current: changes inside do_swap, before the switch completes
    ctx: KThread  # whose code this CPU executes: changes only when arch_switch completes
    isr_stack: int = 0  # top of this CPU's interrupt stack
    held: list[KSpinlock] = attrs.field(factory=list)
    pending_ipis: list[str] = attrs.field(factory=list)
    shootdowns_pending: int = 0  # TLB IPIs sent to this CPU whose flush has not happened yet
    irq: Generator[Any, None, Any] | None = None
    irq_pending: Any = None  # the Point the interrupt handler is suspended at (Any: or IrqExit)
    irq_thread: KThread | None = None  # the thread the interrupt interrupted
    running_on: KThread | None = None  # whose stack the CPU executes on (thread or None: ISR)


@attrs.define
class Region:
    """A kernel virtual mapping (for invariants and ``mmusim map``)."""

    addr: int  # first byte of the usable region (after the front guard, if any)
    size: int
    kind: str  # "stack", "anon", "bare"
    owner: str  # thread name or mapping name
    guard_pages: tuple[int, int]  # (front, rear) guard pages: (1, 1) for k_mem_map, (0, 0) bare
    phys: int | None = None  # first physical frame (stacks, bare maps)
    user: bool = False

    @property
    def guards(self) -> bool:
        return any(self.guard_pages)

    def guard_ranges(self) -> list[tuple[int, int]]:
        """The guard pages as ``[lo, hi)`` ranges: below the region, then above it."""
        front, rear = self.guard_pages
        out = []
        if front:
            out.append((self.addr - front * PAGE, self.addr))
        if rear:
            out.append((self.addr + self.size, self.addr + self.size + rear * PAGE))
        return out

    @property
    def extent(self) -> tuple[int, int]:
        """The virtual region allocated for it, guards included."""
        front, rear = self.guard_pages
        return self.addr - front * PAGE, self.addr + self.size + rear * PAGE


@attrs.define
class CleanupSlot:
    """The deferred-cleanup slot of ``kernel/thread.c`` -- one for the whole system.
    Guarded by ``thread_cleanup_lock``."""

    thread: KThread | None = None  # thread_to_cleanup
    stack_addr: int | None = None  # thread_cleanup_stack_addr
    stack_sz: int = 0  # thread_cleanup_stack_sz


class Engine:
    """The state of a kernel on a simulated SMP x86 machine, and the loop that steps its CPUs.
    ``mmusim.kernel.boot.Kernel`` is an Engine that boots itself; use that."""

    # Set by boot.boot():
    mem: PhysMem
    pt: PageTables
    cpus: list[PerCpu]
    frames: FrameAllocator
    vm: VirtRegionAllocator
    mode: PagingMode
    word: int  # bytes per stack word: 8 (x86_64) or 4 (ia32)
    pt_frame_mask: int
    virt_offset: int  # kernel virtual address = physical address + virt_offset
    sram_base: int
    sram_size: int
    vm_base: int
    vm_size: int
    image: dict[str, tuple[int, int]]  # section -> (physical start, end)
    image_end_virt: int  # K_MEM_VM_FREE_START
    boot_stacks: dict[str, StackObject]
    vm_reserved_pages: (
        int  # virtual pages reserved at boot (the kernel image, DEMAND_PAGING's page)
    )
    ipi_handler: IpiHandler  # the IPI vector's handler (sched.z_x86_ipi), installed at boot
    page_fault_handler: FaultHandler  # the #PF vector's handler (fault.page_fault), likewise
    # Called when a CPU resumes a thread, before it runs (domain.z_x86_swap_update_page_tables,
    # which Zephyr's __resume calls), installed at boot.
    update_page_tables: PageTableSwitch
    md: MemDomains | None  # memory domains (mmusim.kernel.domain); None without USERSPACE
    # Asked first about a page fault of a thread body's access, before Zephyr's classification:
    # z_x86_page_fault_handler (arch/x86/core/fatal.c) calls k_mem_page_fault(virt) there under
    # CONFIG_DEMAND_PAGING and returns -- the access is retried -- when it resolves the fault.
    # None (the default): no such layer. A user-space runtime (mmusim.runtime) installs its
    # demand faults and signal delivery here.
    mem_page_fault: MemPageFault | None
    # Op kinds added by a layer above the kernel (mmusim.runtime): kind -> routine(k, t, op).
    extension_ops: dict[str, ExtensionOp]
    # Invariants of such a layer, run by invariants.check_all after the kernel's own: each
    # returns its violations as "name: what" lines.
    extension_checks: list[Callable[[Kernel], list[str]]]
    # The state of such a layer, for the explorer's fingerprint: each returns (plain data, the
    # suspended generators the layer drives itself -- e.g. coroutines -- whose frames count).
    extension_state: list[Callable[[Kernel], tuple[Any, list[Generator[Any, Any, Any]]]]]
    # Such a layer's stacks (Go's): see StackRuntime. None: every stack is a thread's own.
    stack_runtime: StackRuntime | None
    # The prologue the thread bodies were compiled with, where a call does not say
    # (mmusim.hw.prologue.PROLOGUES): a build flag, as -fstack-clash-protection is.
    prologue: str

    def __init__(
        self,
        cfg: ConfigValues,
        *,
        policy: StackPolicy,
        stacks: tuple[StackObject, ...] = (),
        bodies: Mapping[str, tuple[Op, ...]] | None = None,
        check: Callable[[Kernel], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.geometry = StackGeometry.from_config(cfg)
        self.mapped_stacks = bool(cfg.get("THREAD_STACK_MEM_MAPPED"))
        self.policy = policy  # where stacks live (mmusim.kernel.policy)
        self.escapes: list[StackEscape] = []  # stack accesses that left their object (policy.py)
        self.mailboxes: dict[str, deque[Request]] = {}  # requests for "serve" ops (body.py)
        self.leak_bug = bool(cfg.get("SIM_ABORT_CLEANUP_LEAK"))
        # Mutants for the explorer (mmusim/mutants.py): deliberately broken kernels.
        self.mutant_no_cleanup_lock = bool(cfg.get("SIM_MUTANT_NO_CLEANUP_LOCK"))
        self.mutant_defer_no_drain = bool(cfg.get("SIM_MUTANT_DEFER_NO_DRAIN"))
        self.mutant_self_unmap = bool(cfg.get("SIM_MUTANT_SELF_UNMAP"))
        self.mutant_guard_off_by_one = bool(cfg.get("SIM_MUTANT_GUARD_OFF_BY_ONE"))  # mm.py
        self.mutant_guard_rw = bool(cfg.get("SIM_MUTANT_GUARD_RW"))  # mm.py
        self.mutant_stack_size_unrounded = bool(cfg.get("SIM_MUTANT_STACK_SIZE_UNROUNDED"))
        self.mutant_user_priv_stack = bool(cfg.get("SIM_MUTANT_USER_PRIV_STACK"))  # stack.py
        self.mutant_no_invlpg = bool(cfg.get("SIM_MUTANT_NO_INVLPG"))  # mm.py
        self.mutant_va_double_alloc = bool(cfg.get("SIM_MUTANT_VA_DOUBLE_ALLOC"))  # vmregion.py
        self.drain_waits = bool(cfg.get("SIM_CLEANUP_WAITS_FOR_SWITCH"))
        self.shootdown = bool(cfg.get("SIM_TLB_SHOOTDOWN", True))
        self.ncpus = int(cfg.get("MP_MAX_NUM_CPUS", 1) or 1) if cfg.get("SMP") else 1
        self.smp = bool(cfg.get("SMP"))
        # arch_switch (x86_64 selects USE_SWITCH), else arch_swap (ia32)
        self.use_switch = bool(cfg.get("USE_SWITCH") or cfg.get("X86_64"))
        # SIM_TLB_EVICTION: a CPU may drop a stale TLB entry at any step (an "evict" action).
        self.tlb_eviction = bool(cfg.get("SIM_TLB_EVICTION"))
        self.halted: str | None = None  # why the system halted (arch_system_halt), if it did
        self.sched_lock = KSpinlock("_sched_spinlock", 1)
        self.cleanup_lock = KSpinlock("thread_cleanup_lock", 2)
        self.mm_lock = KSpinlock("z_mm_lock", 3)
        self.cleanup = CleanupSlot()
        self.threads: dict[str, KThread] = {}
        self.stacks: dict[str, StackObject] = {s.name: s for s in stacks}
        self.stack_users: dict[str, KThread] = {}  # stack object -> the thread created on it last
        self.bodies: dict[str, tuple[Op, ...]] = dict(bodies or {})
        self.regions: dict[int, Region] = {}  # by usable address
        self.mappings: dict[str, Region] = {}  # k_mem_map regions by name
        self.ready: SortedKeyList = SortedKeyList(key=lambda t: (t.prio, t.queue_seq))
        self.sleepers: SortedKeyList = SortedKeyList(key=lambda t: (t.wake_tick, t.queue_seq))
        self._seq = 0
        self.clock = 0  # ticks
        self.log: list[str] = []  # the console: fatal errors and the like, in Zephyr's format
        self.faults: list[dict[str, Any]] = []
        self.facts: dict[str, list[Any]] = {}
        self.steps = 0
        self.shootdowns_owed = 0  # CPUs between taking rights away in a PTE and the shootdown
        self.ipis: dict[str, int] = {"sched": 0, "tlb": 0, "mbox": 0}  # IPIs sent, by kind
        self.check = check
        self._cpu = 0
        self.md = None
        self.mem_page_fault = None
        self.extension_ops = {}
        self.extension_checks = []
        self.extension_state = []
        self.stack_runtime = None
        self.prologue = "unprobed"

    # -- the CPU a routine runs on -------------------------------------------------------

    @property
    def cpu(self) -> PerCpu:
        """``_current_cpu``: the CPU executing the routine being stepped."""
        return self.cpus[self._cpu]

    @property
    def current(self) -> KThread:
        """``_current``."""
        return self.cpus[self._cpu].current

    @property
    def pending_shootdowns(self) -> int:
        """TLB shootdown IPIs sent whose flush has not happened yet, on all CPUs."""
        return sum(c.shootdowns_pending for c in self.cpus)

    def all_ptables(self) -> list[PageTables]:
        """Every set of page tables a kernel mapping goes to (``range_map``): each domain's with
        tables of its own (``x86_domain_list``), then the kernel's."""
        if self.md is None or not self.md.x86_domain_list:
            return [self.pt]
        return [*(d.ptables for d in self.md.x86_domain_list if d.ptables), self.pt]

    def ptables_at(self, cr3: int) -> PageTables:
        """The page tables rooted at ``cr3`` (a CPU's CR3)."""
        for pt in self.all_ptables():
            if pt.root == cr3:
                return pt
        raise KernelAssert(f"ptables_at: CR3 {cr3:#x} is no kernel or domain page table")

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- spinlocks ------------------------------------------------------------------------

    def k_spin_lock(self, lock: KSpinlock, routine: str) -> Generator[Point, None, None]:
        yield Point(
            routine, f"k_spin_lock({lock.name})", wait=lock, res=writes(("lock", lock.name))
        )
        lock.acquire(self._cpu, self.cpu.held)

    def k_spin_unlock(self, lock: KSpinlock, routine: str) -> Generator[Point, None, None]:
        yield Point(routine, f"k_spin_unlock({lock.name})", res=writes(("lock", lock.name)))
        lock.release(self._cpu, self.cpu.held)

    # -- logging --------------------------------------------------------------------------

    def printk(self, line: str) -> None:
        self.log.append(line)

    def record(self, name: str, value: Any) -> None:
        self.facts.setdefault(name, []).append(value)

    # -- the engine -----------------------------------------------------------------------

    def actions(self) -> list[tuple[int, str]]:
        """Enabled actions: (cpu, "irq") to take a pending interrupt, (cpu, "step") to go on, and
        with ``SIM_TLB_EVICTION`` (cpu, "evict") to drop the CPU's stale TLB entries. None once
        the system has halted."""
        out: list[tuple[int, str]] = []
        if self.halted is not None:
            return out
        for c in self.cpus:
            # Interrupts are masked while a spinlock is held and through do_swap until the switch
            # completes (ctx != current in between): only then can a pending IPI be taken.
            if c.pending_ipis and not c.held and c.irq is None and c.ctx is c.current:
                out.append((c.id, "irq"))
            point = c.irq_pending if c.irq is not None else c.ctx.pending
            if point is not None and point.enabled():
                out.append((c.id, "step"))
            if self.tlb_eviction and self.stale_tlb_pages(c):
                out.append((c.id, "evict"))
        return out

    def stale_tlb_entries(self, c: PerCpu) -> list[tuple[TlbEntry, str]]:
        """CPU ``c``'s TLB entries that the page tables no longer back, each with why: the page
        is ``"not mapped"``, mapped to another frame (``"maps 0x..."``), or with ``"fewer
        rights"`` (write or user access taken away), judged against the tables in the CPU's CR3.
        In the order the TLB cached them."""
        out = []
        pt = self.ptables_at(c.hw.ctl.cr3)  # the tables this CPU walks
        for e in c.hw.tlb.cached():  # not Tlb.lookup: that would count a hit
            hit = pt.lookup(e.page)
            if hit is None:
                out.append((e, "not mapped"))
                continue
            entry = hit[2]
            frame = entry & self.pt_frame_mask & ~(hit[3] - 1)
            if frame != e.frame:
                out.append((e, f"maps {frame:#x}"))
            elif (e.writable and not entry & _RW) or (e.user and not entry & _US):
                out.append((e, "fewer rights"))
        return out

    def stale_tlb_pages(self, c: PerCpu) -> list[int]:
        """The linear pages of CPU ``c``'s stale TLB entries (``stale_tlb_entries``), ascending."""
        return sorted(e.page for e, _ in self.stale_tlb_entries(c))

    def evict(self, c: PerCpu) -> list[int]:
        """Drop CPU ``c``'s stale TLB entries, as the processor may at any time (Intel SDM Vol. 3A
        §4.10.4.1: the TLB may drop any entry); returns the pages dropped."""
        pages = self.stale_tlb_pages(c)
        for page in pages:
            c.hw.tlb.invlpg(page)
        return pages

    def do(self, action: tuple[int, str]) -> None:
        """Perform one action (see ``actions``), then run the invariant check if one is set."""
        cpu_id, kind = action
        self._cpu = cpu_id
        c = self.cpus[cpu_id]
        self.steps += 1
        if kind == "irq":
            self._enter_irq(c)
        elif kind == "evict":
            self.evict(c)
        elif c.irq is not None:
            self._resume_irq(c)
        else:
            self._resume_thread(c)
        if self.check is not None:
            self.check(self)  # type: ignore[arg-type]  # an Engine is always a Kernel

    def _resume_thread(self, c: PerCpu) -> None:
        t = c.ctx
        gen = t.gen
        assert gen is not None
        out = gen.send(None)
        self._settle(c, t, out)

    def _settle(self, c: PerCpu, t: KThread, out: Any) -> None:
        """Record where thread ``t`` stopped; follow a context switch to the next thread."""
        while isinstance(out, SwitchOut):
            t.pending = SWITCHED_OUT
            new = out.new
            c.ctx = new
            t, out = new, self._switched_in(c, new)
        t.pending = out

    def _resume_irq(self, c: PerCpu) -> None:
        assert c.irq is not None
        try:
            c.irq_pending = c.irq.send(None)
        except StopIteration:
            raise AssertionError("interrupt handler returned without IrqExit") from None
        if isinstance(c.irq_pending, IrqExit):
            self._exit_irq(c, c.irq_pending.new)

    def _enter_irq(self, c: PerCpu) -> None:
        """Deliver this CPU's pending IPIs: start the handler (x86_64 takes IRQs on the IST
        interrupt stack, so the interrupted thread's stack is not touched)."""
        kinds, c.pending_ipis = c.pending_ipis, []
        c.irq_thread = c.ctx
        # DEVIATION(ipi-one-handler): one handler for every IPI kind, taken together; Zephyr has a
        # vector each (z_sched_ipi, z_x86_tlb_ipi).
        c.irq = self.ipi_handler(self, c, kinds)  # type: ignore[arg-type]  # self is a Kernel
        c.irq_pending = next(c.irq)

    def _exit_irq(self, c: PerCpu, new: KThread | None) -> None:
        """The handler returned: resume the interrupted thread, or switch to ``new`` if the
        handler halted the interrupted one."""
        c.irq = None
        c.irq_pending = None
        interrupted = c.irq_thread
        c.irq_thread = None
        if new is None or new is interrupted:
            # Zephyr's z_x86_tlb_ipi reloads CR3 with _current's tables: a thread moved to
            # another domain while it ran here switches tables now.
            # DEVIATION(cr3-on-irq-exit): CR3 is reloaded for the resumed thread on return from
            # any IPI; Zephyr reloads it in z_x86_tlb_ipi only.
            if interrupted is not None:
                self.update_page_tables(self, c, interrupted)  # type: ignore[arg-type]
            return
        assert interrupted is not None and interrupted.state & (
            ThreadState.DEAD | ThreadState.SUSPENDED
        ), "exit_irq: switching away from a running thread"
        interrupted.sp = c.hw.sp  # its context was saved at interrupt entry
        interrupted.resume_cpl = c.hw.cpl
        interrupted.switch_handle = interrupted.sp
        if interrupted.dead:
            interrupted.pending = None
            interrupted.gen = None  # a dead thread never runs again
        c.running_on = None
        c.ctx = new
        new.pending = self._switched_in(c, new)

    def _switched_in(self, c: PerCpu, new: KThread) -> Any:
        """CPU ``c`` switched to ``new``: the point ``new`` waits at. First ``new``'s page tables
        are loaded, as Zephyr's ``__resume`` does before it restores the context."""
        self.update_page_tables(self, c, new)  # type: ignore[arg-type]  # self is a Kernel
        if new.pending is SWITCHED_OUT:
            gen = new.gen
            return gen.send(None)
        # A thread that never ran (arch_switch loads its initial context), or one an interrupt
        # switched away from (it resumes where the interrupt stopped it).
        c.hw.sp, c.hw.cpl, c.running_on = new.sp, new.resume_cpl, new
        return new.pending

    def run(
        self,
        *,
        seed: int | None = None,
        max_steps: int = 5_000_000,
        steps: int | None = None,
        until: Callable[[Kernel], bool] | None = None,
        before: Callable[[tuple[int, str]], object] | None = None,
        check_deadlock: bool = True,
    ) -> int:
        """Step the CPUs until the system is quiescent: every CPU idle, nothing ready, no IPI
        pending, no sleeper left to wake (sleepers wake by jumping the clock). ``seed`` picks a
        seeded random schedule; without it CPUs take turns in round-robin order, a pending
        interrupt before a step of the same CPU.

        It stops earlier after ``steps`` steps, or as soon as ``until(kernel)`` holds; ``before``
        is called with every action just before it is performed. At quiescence a CPU still waiting is a deadlock
        (``KernelAssert``) unless ``check_deadlock`` is False. Returns the steps performed.
        This is the one default schedule: ``mmusim map --step`` and the explorer's root use it.
        """
        rng = random.Random(seed) if seed is not None else None
        turn = 0
        done = 0
        me: Kernel = self  # type: ignore[assignment]  # an Engine is always a Kernel (boot.py)
        while (steps is None or done < steps) and not (until is not None and until(me)):
            actions = self.actions()
            if not actions:
                if self.wake_sleepers():
                    continue
                if check_deadlock:
                    self.check_deadlock()
                break
            if self.steps >= max_steps:
                raise KernelAssert(f"Kernel.run: no quiescence after {max_steps} steps")
            if rng is not None:
                action = rng.choice(actions)
            else:
                action = min(actions, key=lambda a: ((a[0] - turn) % self.ncpus, a[1] != "irq"))
                turn = action[0] + 1
            if before is not None:
                before(action)
            self.do(action)
            done += 1
        return done

    def wake_sleepers(self) -> bool:
        """Nothing can run: jump the clock to the first sleeper's tick and wake it (False if
        nobody sleeps on the clock)."""
        if not self.sleepers or self.halted is not None:
            return False
        first = self.sleepers[0]
        if first.wake_tick is None:
            return False
        self.clock = first.wake_tick
        while self.sleepers and self.sleepers[0].wake_tick == self.clock:
            runqueue.wake(self, self.sleepers[0])
        return True

    def check_deadlock(self) -> None:
        """At quiescence: raise ``KernelAssert`` if a CPU still waits (a deadlock)."""
        if self.halted is not None:
            return
        waiting = []
        for c in self.cpus:
            point = c.irq_pending if c.irq is not None else c.ctx.pending
            if point is not None and point.wait is not None and point.routine != "idle":
                waiting.append(
                    f"CPU {c.id} ({c.ctx.name}) in {point.routine} waits for "
                    f"{point.wait.describe()}"
                )
        if waiting:
            raise KernelAssert("deadlock: " + "; ".join(waiting))

    def quiescent(self) -> bool:
        return not self.actions() and not self.sleepers

    def post(
        self, thread: str, op: Op, *, guard: Callable[[Kernel], bool] | None = None, cpu: int = 0
    ) -> None:
        """Post kernel call ``op`` to the mailbox of ``thread`` (whose body ends in a ``serve``
        op), and raise the mailbox interrupt on ``cpu`` so it wakes. A test harness's entry point,
        made between steps (as an ISR's ``k_msgq_put`` would be); ``guard(kernel)`` is evaluated
        when the thread takes the request, which it skips if the guard fails."""
        self.mailboxes.setdefault(thread, deque()).append(Request(op, guard))
        self.send_ipi(cpu, "mbox")

    def send_ipi(self, cpu_id: int, kind: str) -> None:
        """Raise an IPI of ``kind`` ("sched", "tlb", "mbox") on CPU ``cpu_id`` (the local APIC's
        ICR write; the other CPU takes it when its interrupts are enabled)."""
        self.cpus[cpu_id].pending_ipis.append(kind)
        self.ipis[kind] += 1
        if kind == "tlb":
            self.cpus[cpu_id].shootdowns_pending += 1

    # -- threads ------------------------------------------------------------------------------

    def add_thread(self, t: KThread) -> KThread:
        """Define a thread object (a static ``struct k_thread``)."""
        if t.name in self.threads:
            raise KernelAssert(f"Kernel.add_thread: a thread named {t.name!r} exists")
        t.serial = len(self.threads)
        self.threads[t.name] = t
        return t

    def thread_id(self, t: KThread) -> int:
        """A stable, deterministic stand-in for the address of thread object ``t``."""
        return 0x0010_8000 + 0x100 * t.serial

    def thread(self, name: str) -> KThread:
        try:
            return self.threads[name]
        except KeyError:
            raise KernelAssert(f"no thread named {name!r}") from None


__all__ = ["SWITCHED_OUT", "CleanupSlot", "Engine", "IrqExit", "PerCpu", "Region", "SwitchOut"]
