"""The scheduler: ``next_up``, ``z_thread_halt``, ``z_swap`` and the context switch of each
architecture, the IPI handler, idle threads, sleep and yield. The ready queue itself is
``mmusim.kernel.runqueue``.

``z_swap`` is entered with ``_sched_spinlock`` held. With ``CONFIG_USE_SWITCH`` (x86_64, the only
SMP architecture) it is ``do_swap`` of ``kernel/include/kswap.h``, in order::

    new = next_up()                         # z_swap_next_thread; halts a halting _current first
    z_sched_switch_spin(new)                # wait until new's context is saved (switch_handle set)
    _current = new; z_requeue_current(old); new->switch_handle = NULL
    k_spin_release(&_sched_spinlock)        # <- other CPUs may take the lock from here ...
    arch_switch(newsh, &old->switch_handle) # ... while old still runs on its stack

x86_64's ``arch_switch`` is ``z_x86_switch`` (``arch/x86/core/intel64/locore.S``): the ``call``
writes the return address at RSP-8; ``popq %rax`` moves it into ``thread->callee_saved.rip``;
``pushfq``/``popq`` pass RFLAGS through the same slot; RSP and the callee-saved registers go into
``struct k_thread`` (``_thread_offset_to_*``), then the switch handle is published and RSP moves to
the CPU's interrupt stack, where ``__resume`` builds the incoming thread's ``iretq`` frame. So the
only traffic on the outgoing stack is that one 8-byte slot, and resuming a thread reads nothing
from its stack. Releasing the lock and ``arch_switch`` are separate steps, so another CPU can run
in between -- the window the explorer examines (docs/explore.md).

Without ``USE_SWITCH`` (ia32, never SMP in Zephyr) ``z_swap`` releases the lock and calls
``arch_swap(key)`` (``arch/x86/core/ia32/swap.S``): the caller pushes ``key`` (EFLAGS), ``call``
pushes the return address, then EDI, ESI, EBX, EBP and a slot for the return value -- seven 4-byte
words on the outgoing stack -- and only then does ``_kernel.current`` become the incoming thread.
Resuming pops them back (``popl`` x5, ``pushl 4(%esp)``/``popfl`` through the slot below the return
address, ``ret``) and the caller drops ``key``.

A fault while saving the outgoing context goes to the #PF handler boot installed
(``Engine.page_fault_handler``, i.e. ``fault.page_fault``): on ia32 the exception frame cannot be
pushed either, so it is a double fault blamed on the outgoing thread (still ``_current``); on
x86_64 the #PF is taken on the exception stack while ``_current`` is already the incoming thread,
which is what Zephyr then blames (docs/kernel.md).

Scheduling policy (a simplification, documented in docs/kernel.md): priorities as Zephyr's
(lower number = higher priority; negative = cooperative); a thread runs until it blocks, yields or
ends, or -- if preemptible -- until a thread of strictly higher priority becomes ready at a kernel
reschedule point. Any CPU may run any thread (no CPU masks); an idle CPU takes ready work at once.
No time slicing.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from mmusim.hw import Trap
from mmusim.kernel import runqueue
from mmusim.kernel.cleanup import halt_thread
from mmusim.kernel.engine import IrqExit, PerCpu, SwitchOut
from mmusim.kernel.routines import (
    LOCAL,
    Condition,
    KernelAssert,
    Point,
    pages_of,
    reads,
    touches_pages,
    writes,
)
from mmusim.kernel.thread import KThread, ThreadState, switch_ready

if TYPE_CHECKING:
    from mmusim.kernel.boot import Kernel

Routine = Generator[Any, None, None]

IA32_SWAP_WORDS = 7  # arch_swap: key, return address, EDI, ESI, EBX, EBP, return-value slot
X86_64_SWITCH_BYTES = 8  # z_x86_switch: the return-address slot at RSP-8


def next_up(k: Kernel, c: PerCpu) -> Generator[Any, None, KThread]:
    """``next_up()`` (``kernel/sched.c``), under ``_sched_spinlock``: on SMP it first halts
    ``_current`` if another CPU marked it ABORTING or SUSPENDING (``is_halting``) -- so a thread
    being aborted from elsewhere that blocks, sleeps or yields before the IPI arrives dies here, in
    its own ``z_swap``. Then: the best ready thread, else ``_current`` if still runnable, else this
    CPU's idle thread."""
    cur = c.current
    if k.smp and cur.halting:
        aborting = cur.state & ThreadState.ABORTING
        yield from halt_thread(k, cur, ThreadState.DEAD if aborting else ThreadState.SUSPENDED)
    # DEVIATION(scheduling-simplified): priorities and FIFO among equals as Zephyr's, but no time
    # slicing, no CPU masks, no meta-IRQs, no swap_ok tie rule; see docs/kernel.md.
    best = k.ready[0] if k.ready else None
    if not cur.is_idle and runqueue.runnable(cur) and (best is None or cur.prio <= best.prio):
        return cur
    if best is not None:
        return best  # type: ignore[no-any-return]
    return cur if (not cur.is_idle and runqueue.runnable(cur)) else c.idle


def thread_active_elsewhere(k: Kernel, t: KThread) -> int | None:
    """``thread_active_elsewhere``: the CPU other than this one whose ``_current`` is ``t``."""
    for c in k.cpus:
        if c.id != k._cpu and c.current is t:
            return c.id
    return None


def z_thread_halt(k: Kernel, t: KThread, fn: str, *, terminate: bool) -> Routine:
    """``z_thread_halt`` (``kernel/sched.c``), the shared half of ``k_thread_abort`` and
    ``k_thread_suspend``, entered with ``_sched_spinlock`` held; releases it.

    ``t`` running on another CPU: flag it ABORTING/SUSPENDING, send that CPU an IPI and wait on
    ``t``'s join queue (abort) or halt queue (suspend) -- ``t`` halts itself there, in ``next_up``.
    Otherwise ``halt_thread(t)`` at once; if ``t`` is the caller it switches away for good (abort)
    or until resumed (suspend); else the lock is released -- not a reschedule point."""
    elsewhere = thread_active_elsewhere(k, t)
    if elsewhere is not None:
        t.state |= ThreadState.ABORTING if terminate else ThreadState.SUSPENDING
        yield Point(fn, f"send scheduler IPI to CPU {elsewhere}", res=writes(("ipi", elsewhere)))
        k.send_ipi(elsewhere, "sched")
        me = k.current
        me.state |= ThreadState.PENDING
        (t.join_waiters if terminate else t.halt_waiters).append(me)
        me.pended_on = t
        yield from z_swap(k, fn)  # back once t has halted over there
        return
    yield from halt_thread(k, t, ThreadState.DEAD if terminate else ThreadState.SUSPENDED)
    if t is k.current:
        yield from z_swap(k, fn)
        if terminate:
            raise AssertionError(f"{fn}: aborted _current back from dead")  # pragma: no cover
    else:
        yield from k.k_spin_unlock(k.sched_lock, fn)


def z_swap(k: Kernel, routine: str) -> Routine:
    """Give up the CPU, entered with ``_sched_spinlock`` held; returns when this thread runs
    again (never, if it is dead)."""
    c = k.cpu
    old = c.current
    new = yield from next_up(k, c)
    if new is old:
        runqueue.dequeue(k, old)  # k_yield queued it, and it picked itself: it runs on
        yield from k.k_spin_unlock(k.sched_lock, "do_swap" if k.use_switch else "z_swap")
        return
    if not k.use_switch:  # ia32: z_swap() -> k_spin_release(); arch_swap(key)
        yield from k.k_spin_unlock(k.sched_lock, "z_swap")
        yield from arch_swap(k, old, new)
        return
    yield from _become_current(k, c, new, "do_swap")
    if runqueue.runnable(old) and not old.is_idle:
        runqueue.ready_thread(k, old)  # z_requeue_current
    yield from k.k_spin_unlock(k.sched_lock, "do_swap")
    yield from z_x86_switch(k, old, new)


def _become_current(k: Kernel, c: PerCpu, new: KThread, routine: str) -> Routine:
    """Make ``new`` this CPU's ``_current`` once its context is saved (``z_sched_switch_spin``);
    its switch handle becomes NULL, as for every active thread. Under ``_sched_spinlock``."""
    yield Point(routine, f"z_sched_switch_spin({new.name})", wait=switch_ready(new),
                res=reads(("sh", new.name)))  # fmt: skip
    _set_current(k, c, new)


def _set_current(k: Kernel, c: PerCpu, new: KThread) -> None:
    runqueue.dequeue(k, new)
    new.cpu = c.id
    c.current = new
    new.switch_handle = None


def z_x86_switch(k: Kernel, old: KThread, new: KThread) -> Routine:
    """x86_64 ``arch_switch``: the one stack slot, then the switch handle, then ``new`` runs."""
    c = k.cpu
    sp = c.hw.sp
    slot = sp - X86_64_SWITCH_BYTES
    yield Point(
        "arch_switch",
        f"call z_x86_switch: return address at {slot:#x} on {old.name}'s stack",
        res=touches_pages(pages_of(slot, sp)),
    )
    c.hw.cpl = 0
    try:
        c.hw.push(bytes(X86_64_SWITCH_BYTES))  # call z_x86_switch
        c.hw.pop(X86_64_SWITCH_BYTES)  # popq %rax: the return address -> callee_saved.rip
        c.hw.push(bytes(X86_64_SWITCH_BYTES))  # pushfq
        c.hw.pop(X86_64_SWITCH_BYTES)  # popq %rax: RFLAGS -> callee_saved.rflags
    except Trap as trap:  # #PF on the exception stack (IST), with _current already `new`
        yield from k.page_fault_handler(k, old, trap, sp)
        return  # the handler halted the system: never reached
    old.sp = c.hw.sp  # callee_saved.rsp: the stack pointer before the call
    yield Point("arch_switch", f"publish {old.name} switch_handle", res=writes(("sh", old.name)))
    old.switch_handle = old.sp
    c.running_on = None  # RSP moves to the interrupt stack; __resume runs the incoming thread
    yield SwitchOut(new)  # the engine sets old.pending = SWITCHED_OUT
    # -- ``old`` runs again, on whichever CPU switched to it: __resume reloads RSP and the
    # callee-saved registers from the thread struct and irets; nothing is read from its stack.
    c = k.cpu
    c.running_on = old
    c.hw.sp = old.sp
    c.hw.cpl = old.cpl


def arch_swap(k: Kernel, old: KThread, new: KThread) -> Routine:
    """ia32 ``arch_swap(key)``: push seven words on ``old``'s stack, save ESP, make ``new``
    ``_current`` and run it; on return pop them back."""
    c = k.cpu
    sp = c.hw.sp
    w = k.word
    yield Point(
        "arch_swap",
        f"push {old.name} context on its stack",
        res=touches_pages(pages_of(sp - IA32_SWAP_WORDS * w, sp)),
    )
    c.hw.cpl = 0
    try:
        for _ in range(IA32_SWAP_WORDS):
            c.hw.push(bytes(w))
    except Trap as trap:  # the stack is full: the #PF frame cannot be pushed either -> #DF
        yield from k.page_fault_handler(k, old, trap, c.hw.sp)
        raise AssertionError(
            "arch_swap: an overflowed thread ran again"
        ) from None  # pragma: no cover
    old.sp = c.hw.sp  # callee_saved.esp
    # DEVIATION(ia32-switch-handle): ia32 (no USE_SWITCH) has no switch handles; mmusim sets one
    # once the context is saved, so k_thread_join's wait works on every board.
    old.switch_handle = old.sp  # (ia32 has no switch handles; kept for the join's wait)
    _set_current(k, c, new)  # _kernel.current = ready_q.cache
    if runqueue.runnable(old) and not old.is_idle:
        runqueue.ready_thread(k, old)  # (Zephyr UP never took it out of the run queue)
    c.running_on = None
    yield SwitchOut(new)
    # -- ``old`` runs again: pop the frame back.
    c = k.cpu
    sp = old.sp
    yield Point(
        "arch_swap",
        f"pop {old.name} context from its stack",
        res=touches_pages(pages_of(sp - w, sp + IA32_SWAP_WORDS * w)),
    )
    c.running_on = old
    c.hw.sp = sp
    c.hw.cpl = 0
    ia32_pop_swap_frame(k, c)
    c.hw.pop(w)  # the caller drops `key`
    c.hw.cpl = old.cpl


def ia32_pop_swap_frame(k: Kernel, c: PerCpu) -> None:
    """The end of ia32 ``arch_swap``: ``popl`` the return value, EBP, EBX, ESI, EDI; ``pushl
    4(%esp)``/``popfl`` (the EFLAGS key, through the word below the return address); ``ret``."""
    w = k.word
    for _ in range(5):
        c.hw.pop(w)
    key = c.hw.read(c.hw.sp + w, w)
    c.hw.push(key)
    c.hw.pop(w)
    c.hw.pop(w)  # ret


def arch_first_entry(k: Kernel, t: KThread) -> None:
    """A new thread's first instructions: on ia32 ``arch_swap`` returns through the initial frame
    (``arch_new_thread``) into ``z_thread_entry``; on x86_64 ``__resume`` irets straight to it."""
    if not k.use_switch:
        c = k.cpu
        saved, c.hw.cpl = c.hw.cpl, 0
        ia32_pop_swap_frame(k, c)
        c.hw.cpl = saved


def idle_main(k: Kernel, me: KThread) -> Routine:
    """The idle thread: wait until there is work, then reschedule."""
    while True:
        yield Point(
            "idle",
            "wait for work",
            wait=Condition("ready work", lambda: bool(k.ready)),
            res=reads(("lock", k.sched_lock.name)),
        )
        yield from k.k_spin_lock(k.sched_lock, "idle")
        yield from z_swap(k, "idle")


def k_sleep(k: Kernel, ticks: int) -> Routine:
    """``k_sleep``: ``ticks < 0`` is K_FOREVER; 0 is a yield."""
    if ticks == 0:
        yield from k_yield(k)
        return
    me = k.current
    yield from k.k_spin_lock(k.sched_lock, "k_sleep")
    if ticks < 0:  # k_sleep(K_FOREVER) is k_thread_suspend(_current) in Zephyr
        if not me.state & ThreadState.SUSPENDED:
            yield from z_thread_halt(k, me, "k_thread_suspend", terminate=False)
        else:  # pragma: no cover - a running thread is never SUSPENDED
            yield from k.k_spin_unlock(k.sched_lock, "k_thread_suspend")
        return
    me.state |= ThreadState.SLEEPING
    if ticks > 0:
        me.wake_tick = k.clock + ticks
        me.queue_seq = k.next_seq()
        k.sleepers.add(me)
    yield from z_swap(k, "k_sleep")


def k_yield(k: Kernel) -> Routine:
    me = k.current
    yield from k.k_spin_lock(k.sched_lock, "k_yield")
    if not me.is_idle:
        runqueue.ready_thread_behind(k, me)
    yield from z_swap(k, "k_yield")


def z_reschedule(k: Kernel, routine: str) -> Routine:
    """A reschedule point after making threads ready: a preemptible current thread gives way to
    a strictly higher-priority ready thread. Entered with ``_sched_spinlock`` held; releases it."""
    me = k.current
    best = k.ready[0] if k.ready else None
    if best is not None and me.prio >= 0 and best.prio < me.prio and not me.is_idle:
        yield from z_swap(k, routine)
    else:
        yield from k.k_spin_unlock(k.sched_lock, routine)


# -- interrupts ---------------------------------------------------------------------------------


def z_x86_ipi(k: Kernel, c: PerCpu, kinds: list[str]) -> Generator[Any, None, None]:
    """The IPI handler (boot installs it as ``Engine.ipi_handler``): flush the TLB for a
    shootdown, wake mailbox servers, and -- ``z_sched_ipi`` -- halt ``_current`` if another CPU
    marked it ABORTING. Yields ``IrqExit`` with the thread to switch to, if it halted one."""
    yield Point("z_x86_ipi", f"interrupt entry ({', '.join(kinds)})", res=writes(("ipi", c.id)))
    saved_cpl, c.hw.cpl = c.hw.cpl, 0
    for i in range(len(kinds)):  # an index loop: the explorer's fingerprint sees `i`
        if kinds[i] == "tlb":
            yield Point("z_x86_tlb_ipi", "flush the TLB", res=LOCAL)
            c.hw.flush_tlb()
            c.shootdowns_pending -= 1
    new: KThread | None = None
    if "mbox" in kinds:  # the harness posted requests (Kernel.post): wake their servers
        yield from k.k_spin_lock(k.sched_lock, "mbox_isr")
        for t in list(k.threads.values()):
            if t.mbox_wait and k.mailboxes.get(t.name):
                t.mbox_wait = False
                t.state &= ~ThreadState.PENDING
                runqueue.ready_thread(k, t)
        yield from k.k_spin_unlock(k.sched_lock, "mbox_isr")
    # DEVIATION(irq-exit-no-preemption): at the interrupt's exit mmusim switches threads only if
    # next_up() halted _current; Zephyr's z_get_next_switch_handle() may also preempt it.
    if "sched" in kinds:
        # z_sched_ipi; at the interrupt's exit z_get_next_switch_handle() calls next_up(), which
        # halts _current if another CPU marked it ABORTING or SUSPENDING. mmusim switches threads
        # at the exit only then (no preemption on interrupt exit otherwise).
        yield from k.k_spin_lock(k.sched_lock, "z_sched_ipi")
        cur = c.current
        if cur.halting:
            new = yield from next_up(k, c)
            if new is not cur:
                yield from _become_current(k, c, new, "z_sched_ipi")
            else:  # pragma: no cover - a halted thread is not runnable
                new = None
        yield from k.k_spin_unlock(k.sched_lock, "z_sched_ipi")
    c.hw.cpl = saved_cpl
    yield IrqExit(new)


def check_sched(k: Kernel) -> None:
    """Scheduler sanity: ready threads are runnable and not running anywhere."""
    for t in k.ready:
        if not runqueue.runnable(t) or any(c.current is t for c in k.cpus):
            raise KernelAssert(f"check_sched: {t.name} is queued but not runnable or is running")
