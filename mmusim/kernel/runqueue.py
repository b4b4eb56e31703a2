"""The ready queue and the sleepers: ``z_ready_thread``, dequeue, and the timer's wake-up.

``Engine.ready`` holds the runnable threads that run nowhere, ordered by priority (lower number
first, as Zephyr's) and then by when they were queued (FIFO among equals); ``Engine.sleepers`` holds
the threads sleeping on the tick clock, ordered by wake-up tick. Both are guarded by
``_sched_spinlock``: every caller holds it, except the engine's clock jump (``wake``), which runs
when no CPU can step -- as Zephyr's timer interrupt takes the lock itself.

On SMP a running thread is never in the ready queue (``_current`` is not queued), so making a
running thread ready is a no-op -- except ``k_yield``'s, which queues the caller behind its equals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmusim.kernel.thread import KThread, ThreadState

if TYPE_CHECKING:
    from mmusim.kernel.engine import Engine

_NOT_RUNNABLE = int(
    ThreadState.DEAD
    | ThreadState.PENDING
    | ThreadState.PRESTART
    | ThreadState.SUSPENDED
    | ThreadState.SLEEPING
)
_QUEUED = int(ThreadState.QUEUED)


def runnable(t: KThread) -> bool:
    return not int.__and__(t.state, _NOT_RUNNABLE)  # no ThreadState built (KThread.dead)


def ready_thread(k: Engine, t: KThread) -> None:
    """``z_ready_thread``: queue ``t`` (caller holds ``_sched_spinlock``)."""
    if t.is_idle or t.state & ThreadState.QUEUED or not runnable(t):
        return
    if any(c.current is t for c in k.cpus):
        return  # running threads are not queued (SMP)
    t.queue_seq = k.next_seq()
    t.state |= ThreadState.QUEUED
    k.ready.add(t)


def ready_thread_behind(k: Engine, t: KThread) -> None:
    """Queue the running thread behind its equals (k_yield): it is current, so queue directly."""
    t.queue_seq = k.next_seq()
    t.state |= ThreadState.QUEUED
    k.ready.add(t)


def dequeue(k: Engine, t: KThread) -> None:
    if int.__and__(t.state, _QUEUED):
        k.ready.remove(t)
        t.state &= ~ThreadState.QUEUED


def wake(k: Engine, t: KThread) -> None:
    """The timer woke ``t`` (the clock jumped to its wake tick)."""
    k.sleepers.remove(t)
    t.wake_tick = None
    t.state &= ~ThreadState.SLEEPING
    ready_thread(k, t)
