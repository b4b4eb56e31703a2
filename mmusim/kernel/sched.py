"""The scheduler: ``next_up``, ``do_swap``/``arch_switch``, the IPI handler, idle threads, sleep and
yield. The ready queue itself is ``mmusim.kernel.runqueue``.

``do_swap`` follows ``kernel/include/kswap.h`` (reference zephyr-mapped-stacks.md section 2.5), in
order, entered with ``_sched_spinlock`` held::

    new = next_up()                         # z_swap_next_thread
    z_sched_switch_spin(new)                # wait until new's context is saved (switch_handle set)
    _current = new; z_requeue_current(old); new->switch_handle = NULL
    k_spin_release(&_sched_spinlock)        # <- other CPUs may take the lock from here ...
    arch_switch(newsh, &old->switch_handle) # ... while old still runs on its stack: it saves its
                                            #     context there, then publishes its switch handle

Releasing the lock and ``arch_switch`` are separate steps, so another CPU can run in between -- the
window the explorer examines (reference section 6.7). What x86's ``arch_switch`` writes on the
outgoing stack is UNVERIFIED; mmusim pushes the callee-saved registers (6 words) and a return
address there, as KARCH's "simplest implementation" does.

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
from mmusim.kernel.fatal import kernel_bug, switch_overflow
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

CONTEXT_WORDS = 7  # callee-saved registers + return address, pushed by arch_switch


def next_up(k: Kernel, c: PerCpu) -> KThread:
    """The thread CPU ``c`` should run: the best ready thread, else the current one if it is still
    runnable, else this CPU's idle thread. Caller holds ``_sched_spinlock``."""
    cur = c.current
    best = k.ready[0] if k.ready else None
    if not cur.is_idle and runqueue.runnable(cur) and (best is None or cur.prio <= best.prio):
        return cur
    if best is not None:
        return best  # type: ignore[no-any-return]
    return cur if (not cur.is_idle and runqueue.runnable(cur)) else c.idle


def z_swap(k: Kernel, routine: str) -> Routine:
    """Give up the CPU (``z_swap`` -> ``do_swap``), entered with ``_sched_spinlock`` held; returns
    when this thread runs again (never, if it is dead)."""
    c = k.cpu
    old = c.current
    new = next_up(k, c)
    if new is old:
        runqueue.dequeue(k, old)  # k_yield queued it, and it picked itself: it runs on
        yield from k.k_spin_unlock(k.sched_lock, "do_swap")
        return
    yield from _become_current(k, c, new, "do_swap")
    if runqueue.runnable(old) and not old.is_idle:
        runqueue.ready_thread(k, old)  # z_requeue_current
    yield from k.k_spin_unlock(k.sched_lock, "do_swap")
    yield from arch_switch(k, old, new)


def _become_current(k: Kernel, c: PerCpu, new: KThread, routine: str) -> Routine:
    """Make ``new`` this CPU's ``_current`` once its context is saved (``z_sched_switch_spin``);
    its switch handle becomes NULL, as for every active thread. Under ``_sched_spinlock``."""
    yield Point(routine, f"z_sched_switch_spin({new.name})", wait=switch_ready(new),
                res=reads(("sh", new.name)))  # fmt: skip
    runqueue.dequeue(k, new)
    new.cpu = c.id
    c.current = new
    new.switch_handle = None


def arch_switch(k: Kernel, old: KThread, new: KThread) -> Routine:
    """Save ``old``'s context on its own stack, publish its switch handle, run ``new``."""
    c = k.cpu
    sp = c.hw.sp
    yield Point(
        "arch_switch",
        f"save {old.name} context on its stack",
        res=touches_pages(pages_of(sp - CONTEXT_WORDS * k.word, sp)),
    )
    try:
        c.hw.cpl = 0
        for _ in range(CONTEXT_WORDS):
            c.hw.push(bytes(k.word))
    except Trap as trap:  # the outgoing stack is full: a stack overflow of ``old``
        if trap.vector != 14:
            kernel_bug(k, f"arch_switch: {trap} saving {old.name}'s context", trap)
        yield from switch_overflow(k, old, trap)
        yield from _switch_to(k, old, new)
        return
    old.sp = c.hw.sp
    yield Point("arch_switch", f"publish {old.name} switch_handle", res=writes(("sh", old.name)))
    old.switch_handle = old.sp
    c.running_on = None
    yield from _switch_to(k, old, new)


def _switch_to(k: Kernel, old: KThread, new: KThread) -> Routine:
    yield SwitchOut(new)  # the engine sets old.pending = SWITCHED_OUT
    # -- ``old`` runs again, on whichever CPU switched to it.
    yield Point(
        "arch_switch",
        f"restore {old.name} context",
        res=touches_pages(pages_of(old.sp, old.sp + CONTEXT_WORDS * k.word)),
    )
    c = k.cpu
    c.running_on = old
    c.hw.sp = old.sp
    c.hw.cpl = 0
    for _ in range(CONTEXT_WORDS):
        c.hw.pop(k.word)
    c.hw.cpl = old.cpl


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
        me.state |= ThreadState.SUSPENDED
        yield from z_swap(k, "k_sleep")
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
    if "sched" in kinds:
        yield from k.k_spin_lock(k.sched_lock, "z_sched_ipi")
        cur = c.current
        if cur.state & ThreadState.ABORTING and not cur.dead:
            yield from halt_thread(k, cur, ThreadState.DEAD)
            new = next_up(k, c)
            yield from _become_current(k, c, new, "z_sched_ipi")
        yield from k.k_spin_unlock(k.sched_lock, "z_sched_ipi")
    c.hw.cpl = saved_cpl
    yield IrqExit(new)


def check_sched(k: Kernel) -> None:
    """Scheduler sanity: ready threads are runnable and not running anywhere."""
    for t in k.ready:
        if not runqueue.runnable(t) or any(c.current is t for c in k.cpus):
            raise KernelAssert(f"check_sched: {t.name} is queued but not runnable or is running")
