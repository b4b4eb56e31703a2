"""The scheduler: ready queue, ``do_swap``/``arch_switch``, IPIs, idle threads, sleeping.

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
from mmusim.kernel.core import (
    LOCAL,
    Condition,
    KernelAssert,
    Point,
    pages_of,
    reads,
    touches_pages,
    writes,
)
from mmusim.kernel.thread import KThread, ThreadState

if TYPE_CHECKING:
    from mmusim.kernel.kernel import Kernel, PerCpu

Routine = Generator[Any, None, None]

_NOT_RUNNABLE = (
    ThreadState.DEAD
    | ThreadState.PENDING
    | ThreadState.PRESTART
    | ThreadState.SUSPENDED
    | ThreadState.SLEEPING
)
SWITCHED_OUT = "switched out"  # KThread.pending while its generator sits at `yield SwitchOut`
CONTEXT_WORDS = 7  # callee-saved registers + return address, pushed by arch_switch


def runnable(t: KThread) -> bool:
    return not t.state & _NOT_RUNNABLE


def ready_thread(k: Kernel, t: KThread) -> None:
    """``z_ready_thread``: queue ``t`` (caller holds ``_sched_spinlock``)."""
    if t.is_idle or t.state & ThreadState.QUEUED or not runnable(t):
        return
    if any(c.current is t for c in k.cpus):
        return  # running threads are not queued (SMP)
    t.queue_seq = k.next_seq()
    t.state |= ThreadState.QUEUED
    k.ready.add(t)


def dequeue(k: Kernel, t: KThread) -> None:
    if t.state & ThreadState.QUEUED:
        k.ready.remove(t)
        t.state &= ~ThreadState.QUEUED


def next_up(k: Kernel, c: PerCpu) -> KThread:
    """The thread CPU ``c`` should run: the best ready thread, else the current one if it is still
    runnable, else this CPU's idle thread. Caller holds ``_sched_spinlock``."""
    cur = c.current
    best = k.ready[0] if k.ready else None
    if not cur.is_idle and runnable(cur) and (best is None or cur.prio <= best.prio):
        return cur
    if best is not None:
        return best  # type: ignore[no-any-return]
    return cur if (not cur.is_idle and runnable(cur)) else c.idle


def z_swap(k: Kernel, routine: str) -> Routine:
    """Give up the CPU (``z_swap`` -> ``do_swap``), entered with ``_sched_spinlock`` held; returns
    when this thread runs again (never, if it is dead)."""
    c = k.cpu
    old = c.current
    new = next_up(k, c)
    if new is old:
        dequeue(k, old)  # k_yield queued it, and it picked itself: it runs on
        yield from k.k_spin_unlock(k.sched_lock, "do_swap")
        return
    yield from _become_current(k, c, new, "do_swap")
    if runnable(old) and not old.is_idle:
        ready_thread(k, old)  # z_requeue_current
    yield from k.k_spin_unlock(k.sched_lock, "do_swap")
    yield from arch_switch(k, old, new)


def _become_current(k: Kernel, c: PerCpu, new: KThread, routine: str) -> Routine:
    """Make ``new`` this CPU's ``_current`` once its context is saved (``z_sched_switch_spin``);
    its switch handle becomes NULL, as for every active thread. Under ``_sched_spinlock``."""
    yield Point(routine, f"z_sched_switch_spin({new.name})", wait=_switch_ready(new),
                res=reads(("sh", new.name)))  # fmt: skip
    dequeue(k, new)
    new.cpu = c.id
    c.current = new
    new.switch_handle = None


def _switch_ready(t: KThread) -> Condition:
    return Condition(f"{t.name}'s switch_handle", lambda: t.switch_handle is not None)


def arch_switch(k: Kernel, old: KThread, new: KThread) -> Routine:
    """Save ``old``'s context on its own stack, publish its switch handle, run ``new``."""
    from mmusim.kernel import fault

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
            fault.kernel_bug(k, f"arch_switch: {trap} saving {old.name}'s context", trap)
        yield from fault.switch_overflow(k, old, trap)
        yield from _switch_to(k, old, new)
        return
    old.sp = c.hw.sp
    yield Point("arch_switch", f"publish {old.name} switch_handle", res=writes(("sh", old.name)))
    old.switch_handle = old.sp
    c.running_on = None
    yield from _switch_to(k, old, new)


def _switch_to(k: Kernel, old: KThread, new: KThread) -> Routine:
    from mmusim.kernel.kernel import SwitchOut

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


def resume_switched_in(k: Kernel, c: PerCpu, new: KThread) -> Any:
    """CPU ``c`` switched to ``new``: the point ``new`` waits at."""
    if new.pending is SWITCHED_OUT:
        gen = new.gen
        return gen.send(None)
    # A thread that never ran: arch_switch loads its initial context.
    c.hw.sp, c.hw.cpl, c.running_on = new.sp, 0, new
    return new.pending


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


def wake(k: Kernel, t: KThread) -> None:
    """The timer woke ``t`` (the clock jumped to its wake tick)."""
    k.sleepers.remove(t)
    t.wake_tick = None
    t.state &= ~ThreadState.SLEEPING
    ready_thread(k, t)


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
        ready_thread_behind(k, me)
    yield from z_swap(k, "k_yield")


def ready_thread_behind(k: Kernel, t: KThread) -> None:
    """Queue the running thread behind its equals (k_yield): it is current, so queue directly."""
    t.queue_seq = k.next_seq()
    t.state |= ThreadState.QUEUED
    k.ready.add(t)


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


def send_ipi(k: Kernel, cpu_id: int, kind: str) -> None:
    k.cpus[cpu_id].pending_ipis.append(kind)
    k.ipis[kind] += 1
    if kind == "tlb":
        k.cpus[cpu_id].shootdowns_pending += 1


def enter_irq(k: Kernel, c: PerCpu) -> None:
    """Deliver this CPU's pending IPIs: start the handler (x86_64 takes IRQs on the IST interrupt
    stack, so the interrupted thread's stack is not touched)."""
    kinds, c.pending_ipis = c.pending_ipis, []
    c.irq_thread = c.ctx
    c.irq = _ipi_handler(k, c, kinds)
    c.irq_pending = next(c.irq)


def _ipi_handler(k: Kernel, c: PerCpu, kinds: list[str]) -> Generator[Any, None, None]:
    from mmusim.kernel import abort
    from mmusim.kernel.kernel import IrqExit

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
                ready_thread(k, t)
        yield from k.k_spin_unlock(k.sched_lock, "mbox_isr")
    if "sched" in kinds:
        yield from k.k_spin_lock(k.sched_lock, "z_sched_ipi")
        cur = c.current
        if cur.state & ThreadState.ABORTING and not cur.dead:
            yield from abort.halt_thread(k, cur, ThreadState.DEAD)
            new = next_up(k, c)
            yield from _become_current(k, c, new, "z_sched_ipi")
        yield from k.k_spin_unlock(k.sched_lock, "z_sched_ipi")
    c.hw.cpl = saved_cpl
    yield IrqExit(new)


def exit_irq(k: Kernel, c: PerCpu, new: KThread | None) -> None:
    c.irq = None
    c.irq_pending = None
    interrupted = c.irq_thread
    c.irq_thread = None
    if new is None or new is interrupted:
        return
    assert interrupted is not None and interrupted.dead, (
        "exit_irq: switching away from a live thread"
    )
    interrupted.switch_handle = interrupted.sp  # its context was saved at interrupt entry
    interrupted.pending = None
    interrupted.gen = None  # a dead thread never runs again
    c.running_on = None
    c.ctx = new
    new.pending = resume_switched_in(k, c, new)


def check_sched(k: Kernel) -> None:
    """Scheduler sanity: ready threads are runnable and not running anywhere."""
    for t in k.ready:
        if not runnable(t) or any(c.current is t for c in k.cpus):
            raise KernelAssert(f"check_sched: {t.name} is queued but not runnable or is running")
